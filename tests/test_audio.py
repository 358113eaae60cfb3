"""Speech and transcription through the official OpenAI SDK, on the real piper voice and whisper model.

The gateway's own speech is fed back into its transcription: what comes back must match the text
that was spoken.
"""

from __future__ import annotations

import io
import json
import re
import struct
import wave
from collections.abc import Iterator

import av
import httpx
import jiwer
import numpy as np
import openai
import pytest
from conftest import Gateway, base_config
from openai import OpenAI

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
STORY = ("The morning was cold and bright. A small boat moved across the calm water. "
         "Birds were singing in the tall trees. The old man smiled and waved at his friends. "
         "Then the sun came out and the wind was still.")


def _wer(reference: str, hypothesis: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray()[0] for f in container.decode(stream)]  # the first (only) channel
        rate = stream.rate or stream.codec_context.sample_rate
    return np.concatenate(frames), int(rate)


@pytest.fixture(scope="module")
def spoken_wav(client: OpenAI) -> bytes:
    return client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav").content


# -- speech ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_speech_in_every_container_decodes_to_plausible_audio(client: OpenAI, fmt: str) -> None:
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format=fmt)
    samples, rate = _decode(response.content)
    seconds = len(samples) / rate
    assert 2.0 < seconds < 8.0, seconds  # thirteen words
    assert float(np.abs(samples.astype(np.float64)).max()) > 0  # not silence


def test_pcm_is_raw_24khz_s16le(client: OpenAI, spoken_wav: bytes) -> None:
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm").content
    assert not pcm.startswith(b"RIFF")
    assert len(pcm) % 2 == 0
    channels, rate = struct.unpack_from("<HI", spoken_wav, 22)
    bits = struct.unpack_from("<H", spoken_wav, 34)[0]
    assert spoken_wav[:4] == b"RIFF" and spoken_wav[8:12] == b"WAVE"
    assert (rate, channels, bits) == (24000, 1, 16)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert 2.0 < len(samples) / 24000 < 8.0
    # The same speech as the wav, give or take piper's random phoneme durations.
    assert abs(len(pcm) - (len(spoken_wav) - 44)) < 0.15 * (len(spoken_wav) - 44)


def test_speed_changes_duration(client: OpenAI) -> None:
    normal = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm").content
    fast = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm",
                                      speed=2.0).content
    assert 0.35 < len(fast) / len(normal) < 0.75  # pauses between phrases are not sped up


def test_voice_object_form_and_voice_speed(client: OpenAI) -> None:
    alloy = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm").content
    nova = client.audio.speech.create(model="tts-1", voice={"id": "nova"}, input=SENTENCE,  # type: ignore[arg-type]
                                      response_format="pcm").content
    assert len(nova) < len(alloy)  # nova is configured 1.2x faster


def test_streamed_speech_arrives_before_synthesis_finishes(client: OpenAI, gateway: Gateway) -> None:
    text = " ".join([STORY] * 3)
    marker = "speech synthesis finished"
    before = gateway.log().count(marker)
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text,
                                                            response_format="pcm") as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first
        finished_at_first_byte = gateway.log().count(marker) - before
        rest = b"".join(chunks)
    assert finished_at_first_byte == 0  # the first bytes came while later sentences were still being made
    assert gateway.log().count(marker) - before == 1
    assert len(first) < len(first) + len(rest)


def test_speech_sse_events(gateway: Gateway) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": STORY, "response_format": "pcm",
            "stream_format": "sse"}
    events = []
    with httpx.stream("POST", f"{gateway.url}/v1/audio/speech", json=body, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    types = [e["type"] for e in events]
    assert types[-1] == "speech.audio.done"
    assert set(types[:-1]) == {"speech.audio.delta"} and len(types) > 2
    import base64

    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(audio) / 48000 > 5  # five sentences of 24 kHz s16le
    assert events[-1]["usage"]["input_tokens"] == len(STORY)


def test_voices_are_listed(gateway: Gateway) -> None:
    data = httpx.get(f"{gateway.url}/v1/audio/voices").json()["data"]
    assert {(v["id"], v["model"]) for v in data} >= {("alloy", "joe"), ("nova", "joe"), ("en_US-joe-medium", "joe")}


@pytest.mark.parametrize(("extra", "param"), [
    ({"voice": "shimmer"}, "voice"),
    ({"speed": 5.0}, "speed"),
    ({"speed": 0.1}, "speed"),
    ({"response_format": "ogg"}, "response_format"),
    ({"input": ""}, "input"),
    ({"input": "x" * 5000}, "input"),
    ({"instructions": "Speak like a pirate."}, "instructions"),
    ({"model": "gpt-4o-mini"}, "model"),
])
def test_bad_speech_requests(client: OpenAI, extra: dict[str, object], param: str) -> None:
    args: dict[str, object] = {"model": "tts-1", "voice": "alloy", "input": "Hello.", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**args)  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param


# -- transcription -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_speech_round_trips_through_transcription(client: OpenAI, spoken_wav: bytes, fmt: str) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", spoken_wav),
                                                response_format=fmt)  # type: ignore[call-overload]
    if fmt == "json":
        text = result.text
    elif fmt == "verbose_json":
        text = result.text
        assert result.language == "english"
        assert result.segments and 2.0 < result.duration < 8.0
    elif fmt in ("srt", "vtt"):
        cues = re.findall(r"(\d\d:\d\d:\d\d[,.]\d{3}) --> (\d\d:\d\d:\d\d[,.]\d{3})\n(.+)", result)
        assert cues, result
        assert result.startswith("WEBVTT") == (fmt == "vtt")
        text = " ".join(c[2] for c in cues)
    else:
        text = result
    assert _wer(SENTENCE, text) < 0.10, text


def test_verbose_json_word_and_segment_timings(client: OpenAI, spoken_wav: bytes) -> None:
    r = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", spoken_wav),
                                           response_format="verbose_json",
                                           timestamp_granularities=["word", "segment"])
    assert r.words and r.segments
    assert _wer(SENTENCE, " ".join(w.word for w in r.words)) < 0.10
    starts = [w.start for w in r.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= r.duration + 0.01 for w in r.words)
    assert all(0 <= s.start < s.end <= r.duration + 0.01 for s in r.segments)
    words_only = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", spoken_wav),
                                                    response_format="verbose_json", timestamp_granularities=["word"])
    assert words_only.words and not words_only.segments


def test_every_container_transcribes(client: OpenAI) -> None:
    for fmt in ("mp3", "opus", "flac", "aac"):
        audio = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format=fmt).content
        text = client.audio.transcriptions.create(model="whisper-1", file=(f"speech.{fmt}", audio)).text
        assert _wer(SENTENCE, text) < 0.10, (fmt, text)


def test_streaming_transcription_deltas_make_the_done_text(gateway: Gateway) -> None:
    client = gateway.openai()
    story = client.audio.speech.create(model="tts-1", voice="alloy", input=STORY, response_format="wav").content
    deltas: list[str] = []
    done = None
    for e in client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("s.wav", story), stream=True):
        if e.type == "transcript.text.delta":
            deltas.append(e.delta)
        elif e.type == "transcript.text.done":
            done = e.text
    assert done is not None and len(deltas) >= 1
    assert "".join(deltas) == done
    assert _wer(STORY, done) < 0.10, done


def test_prompt_and_language_are_accepted(client: OpenAI, spoken_wav: bytes) -> None:
    r = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", spoken_wav), language="en",
                                           prompt="A fox and a dog.", temperature=0.0)
    assert _wer(SENTENCE, r.text) < 0.10


def test_vad_skips_silence(client: OpenAI, spoken_wav: bytes) -> None:
    speech = np.frombuffer(spoken_wav[44:], dtype="<i2")
    padded = np.concatenate([np.zeros(24000 * 3, dtype="<i2"), speech])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(padded.tobytes())
    r = client.audio.transcriptions.create(model="whisper-1", file=("late.wav", buffer.getvalue()),
                                           response_format="verbose_json", timestamp_granularities=["word"])
    assert r.words and r.words[0].start > 2.5
    assert _wer(SENTENCE, r.text) < 0.10
    silence = io.BytesIO()
    with wave.open(silence, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 2, dtype="<i2").tobytes())
    assert client.audio.transcriptions.create(model="whisper-1", file=("s.wav", silence.getvalue())).text == ""


def test_english_only_model_cannot_translate(client: OpenAI, spoken_wav: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(model="whisper-1", file=("speech.wav", spoken_wav))
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"
    assert "translate" in str(caught.value.body["message"])


@pytest.mark.parametrize(("upload", "param"), [
    (b"", "file"),
    (b"this is plainly not audio at all, just some text", "file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "file"),
])
def test_bad_uploads_are_400_naming_file(client: OpenAI, upload: bytes, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", upload))
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param


def test_truncated_upload_is_400(client: OpenAI, spoken_wav: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", spoken_wav[:60]))
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "file"


def test_oversized_upload_is_413(gateway: Gateway) -> None:
    files = {"file": ("big.wav", b"\0" * (1024 * 1024 + 1000))}
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files, timeout=60)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("data", "param"), [
    ({"model": "whisper-1", "response_format": "json", "timestamp_granularities[]": "word"},
     "timestamp_granularities"),
    ({"model": "whisper-1", "response_format": "yaml"}, "response_format"),
    ({"model": "whisper-1", "temperature": "hot"}, "temperature"),
    ({"model": "whisper-1", "include[]": "logprobs"}, "include"),
    ({"model": "whisper-1", "colour": "blue"}, "colour"),
    ({"response_format": "json"}, "model"),
    ({"model": "text-embedding-3-small"}, "model"),
])
def test_bad_transcription_fields(gateway: Gateway, spoken_wav: bytes, data: dict[str, str], param: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data=data, files={"file": ("s.wav", spoken_wav)},
                   timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_missing_file_and_unknown_model(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data={"model": "whisper-1"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data={"model": "nope"},
                   files={"file": ("s.wav", b"RIFF")}, timeout=60)
    assert r.status_code == 404


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("audio-drop"), base_config(extra_server="  unsupported_params: drop\n"))
    yield gw.start()
    gw.stop()


def test_instructions_dropped_under_drop_policy(dropping: Gateway) -> None:
    raw = dropping.openai().audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input="Hello there.", instructions="Whisper it.", response_format="wav")
    assert raw.headers["x-syn4pse-dropped-params"] == "instructions"
    samples, _ = _decode(raw.content)
    assert len(samples) > 0
