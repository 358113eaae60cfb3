"""Audio concurrency benchmark: aggregate throughput of 1, 2 and 4 requests at once through SYN4PSE vs. the raw
engines one request after another; and faster-whisper's batched pipeline vs. sequential decoding on a long clip.

Throughput is seconds of audio handled per wall-clock second (transcribed, or spoken), over ``--requests``
requests at each level of concurrency. The raw engines run serially in child processes with every core
(faster-whisper ``cpu_threads`` = cores; Piper's own default session). SYN4PSE runs with its defaults
(workers and voice copies sharing the cores out), and with one worker / one voice copy on every core, the
best setting for a single request. The test audio is spoken by the gateway once at the start.

    .venv/bin/python bench/audio_concurrency.py [--requests 8] [--levels 1 2 4] [--long-repeat 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    CONFIG_HEAD,
    VOICE_FILE,
    VOICE_PACKAGE,
    WHISPER_FILE,
    WHISPER_NAME,
    WHISPER_PACKAGE,
    cpu_load,
    cpu_name,
    gateway,
    package_dir,
    ratio,
    run_worker,
)
from audio import SPEECH_TEXT, TRANSCRIBE_TEXT

BEAM_SIZE = 5
BATCH_SIZE = 8
SPEECH_RATE = 24000
"""The gateway's speech output rate; pcm is s16le mono, so 2 bytes a sample."""
TTS_VOICE = "alloy"
SHORT_TEXT = ". ".join(TRANSCRIBE_TEXT.split(". ")[:3]) + "."
"""Transcribed by the concurrent requests: three sentences, about 15 s of speech."""
SPEECH = ". ".join(SPEECH_TEXT.split(". ")[:2]) + "."
"""Spoken by the concurrent requests: two sentences."""


def _whisper(name: str, options: str) -> str:
    return (f"  {name}:\n    type: stt\n    backend: faster_whisper\n"
            f"    source: {{package: {WHISPER_PACKAGE}, file: {WHISPER_FILE}}}\n    options: {{{options}}}\n")


def _piper(name: str, options: str) -> str:
    return (f"  {name}:\n    type: tts\n    backend: piper\n"
            f"    source: {{package: {VOICE_PACKAGE}, file: {VOICE_FILE}}}\n"
            f"    options: {{voices: {{{TTS_VOICE}: {{}}}}{options}}}\n")


STT_DEFAULT = "whisper"
STT_ONE = "whisper-1-worker"
STT_BATCHED = "whisper-1-worker-batched"
TTS_DEFAULT = "joe"
TTS_ONE = "joe-1-copy"
CONFIG = (CONFIG_HEAD.replace("{log_level: warning}", "{log_level: warning, max_audio_upload_bytes: 104857600}")
          + _whisper(STT_DEFAULT, f"beam_size: {BEAM_SIZE}")
          + _whisper(STT_ONE, f"workers: 1, beam_size: {BEAM_SIZE}")
          + _whisper(STT_BATCHED, f"workers: 1, beam_size: {BEAM_SIZE}, batch_size: {BATCH_SIZE}")
          + _piper(TTS_DEFAULT, "") + _piper(TTS_ONE, ", instances: 1"))


@dataclass
class Level:
    """``requests`` requests, ``in_flight`` at a time: wall seconds, audio seconds handled, per-request seconds."""

    in_flight: int
    requests: int
    wall_s: float
    audio_s: float
    latencies: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.audio_s / self.wall_s


@dataclass
class Long:
    """One decode of the long clip: seconds and the text."""

    seconds: float
    text: str


def at_level(once: Callable[[], tuple[float, str]], in_flight: int, requests: int) -> Level:
    """``requests`` calls of ``once`` (it returns audio seconds and a text), ``in_flight`` client threads."""
    counter = itertools.count()
    lock = threading.Lock()
    level = Level(in_flight, requests, 0.0, 0.0)

    def client() -> None:
        while next(counter) < requests:
            t0 = time.perf_counter()
            audio, text = once()
            with lock:
                level.latencies.append(time.perf_counter() - t0)
                level.audio_s += audio
                level.texts.append(text)

    threads = [threading.Thread(target=client) for _ in range(in_flight)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.wall_s = time.perf_counter() - t0
    if len(level.latencies) != requests:
        raise SystemExit(f"{requests - len(level.latencies)} requests failed")
    return level


# -- raw engines, serially, in child processes ----------------------------------------------------------


def raw_stt_worker(audio_file: Path, long_file: Path, requests: int) -> None:
    """Child process: the short clip ``requests`` times in a row, then the long clip sequential and batched."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from backends.audio import decode

    audio = decode(audio_file.read_bytes())
    long = decode(long_file.read_bytes())
    cores = os.cpu_count() or 1
    model = WhisperModel(str(package_dir(WHISPER_PACKAGE) / WHISPER_FILE), device="cpu", compute_type="int8",
                         cpu_threads=cores)

    def once() -> tuple[float, str]:
        segments, _ = model.transcribe(audio, beam_size=BEAM_SIZE, vad_filter=False)
        return len(audio) / 16000, "".join(s.text for s in segments).strip()

    once()  # warm-up
    serial = at_level(once, 1, requests)

    def timed(run: Callable[[], Any]) -> Long:
        t0 = time.perf_counter()
        segments, _ = run()
        text = "".join(s.text for s in segments).strip()
        return Long(time.perf_counter() - t0, text)

    sequential = timed(lambda: model.transcribe(long, beam_size=BEAM_SIZE, vad_filter=False))
    batched = timed(lambda: BatchedInferencePipeline(model).transcribe(long, beam_size=BEAM_SIZE,
                                                                      batch_size=BATCH_SIZE))
    print(json.dumps({"serial": asdict(serial), "sequential": asdict(sequential), "batched": asdict(batched)}))


def raw_tts_worker(requests: int) -> None:
    """Child process: the speech text ``requests`` times in a row with Piper's own default session."""
    from piper import PiperVoice

    onnx = str(package_dir(VOICE_PACKAGE) / VOICE_FILE)
    voice = PiperVoice.load(onnx, config_path=onnx + ".json")

    def once() -> tuple[float, str]:
        samples = sum(len(c.audio_float_array) for c in voice.synthesize(SPEECH))
        return samples / int(voice.config.sample_rate), ""

    once()
    serial = at_level(once, 1, requests)
    print(json.dumps(asdict(serial)))


# -- SYN4PSE over HTTP ----------------------------------------------------------------------------------


def check(resp: httpx.Response) -> None:
    if resp.status_code != 200:
        resp.read()
        raise SystemExit(f"gateway answered {resp.status_code}: {resp.text[:2000]}")


def http_transcribe(client: httpx.Client, wav: bytes, seconds: float, model: str) -> tuple[float, str]:
    resp = client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", wav, "audio/wav")},
                       data={"model": model, "response_format": "json"})
    check(resp)
    return seconds, str(resp.json()["text"]).strip()


def http_speak(client: httpx.Client, model: str, text: str = SPEECH) -> tuple[float, str]:
    size = 0
    with client.stream("POST", "/v1/audio/speech", json={"model": model, "voice": TTS_VOICE, "input": text,
                                                         "response_format": "pcm"}) as resp:
        check(resp)
        for chunk in resp.iter_bytes():
            size += len(chunk)
    return size / (2 * SPEECH_RATE), ""


def wav_of(client: httpx.Client, text: str) -> bytes:
    resp = client.post("/v1/audio/speech", json={"model": TTS_DEFAULT, "voice": TTS_VOICE, "input": text,
                                                 "response_format": "wav"})
    check(resp)
    return resp.content


def engine(client: httpx.Client, model: str) -> dict[str, int]:
    """The model's ``engine`` entry in the admin listing: slots, busy, peak_busy."""
    data = client.get("/admin/models").json()["data"]
    found: dict[str, int] = next(m for m in data if m["id"] == model)["engine"]
    return found


@dataclass
class GatewayResults:
    short_wav: bytes
    long_wav: bytes
    stt: dict[str, list[Level]]
    tts: dict[str, list[Level]]
    long: dict[str, Long]
    engines: dict[str, dict[str, int]]
    loads: dict[str, str]


def measure_gateway(args: argparse.Namespace) -> GatewayResults:
    """Speak the test audio, then every concurrency level of every model, then the long clip."""
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, gateway(Path(tmp), CONFIG) as base, \
            httpx.Client(base_url=base, timeout=httpx.Timeout(900)) as client:
        print("generating the test speech with the gateway...", file=sys.stderr, flush=True)
        short = wav_of(client, SHORT_TEXT)
        long = wav_of(client, " ".join([TRANSCRIBE_TEXT] * args.long_repeat))
        short_s = (len(short) - 44) / 2 / SPEECH_RATE
        loads = {"start": cpu_load()}
        stt: dict[str, list[Level]] = {}
        tts: dict[str, list[Level]] = {}
        for model in (STT_ONE, STT_DEFAULT):
            http_transcribe(client, short, short_s, model)  # load and warm up
            stt[model] = []
            for n in args.levels:
                print(f"transcription: {model}, {n} at once...", file=sys.stderr, flush=True)
                stt[model].append(at_level(lambda m=model: http_transcribe(client, short, short_s, m),
                                           n, args.requests))
        loads["after transcription"] = cpu_load()
        for model in (TTS_ONE, TTS_DEFAULT):
            http_speak(client, model)
            tts[model] = []
            for n in args.levels:
                print(f"speech: {model}, {n} at once...", file=sys.stderr, flush=True)
                tts[model].append(at_level(lambda m=model: http_speak(client, m), n, args.requests))
        loads["after speech"] = cpu_load()
        engines = {m: engine(client, m) for m in (STT_ONE, STT_DEFAULT, TTS_ONE, TTS_DEFAULT)}
        long_runs: dict[str, Long] = {}
        for model in (STT_ONE, STT_BATCHED):
            http_transcribe(client, short, short_s, model)
            print(f"long clip: {model}...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            _, text = http_transcribe(client, long, 0.0, model)
            long_runs[model] = Long(time.perf_counter() - t0, text)
        loads["after long clip"] = cpu_load()
    return GatewayResults(short, long, stt, tts, long_runs, engines, loads)


def measure_raw(http: GatewayResults, requests: int) -> tuple[Level, Level, dict[str, Long], str]:
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp:
        short_file, long_file = Path(tmp) / "short.wav", Path(tmp) / "long.wav"
        short_file.write_bytes(http.short_wav)
        long_file.write_bytes(http.long_wav)
        print("raw faster-whisper, serially...", file=sys.stderr, flush=True)
        stt = run_worker(__file__, ["--raw-worker", "stt", "--audio-file", str(short_file), "--long-file",
                                    str(long_file), "--requests", str(requests)], "raw faster-whisper")
    print("raw piper, serially...", file=sys.stderr, flush=True)
    tts = run_worker(__file__, ["--raw-worker", "tts", "--requests", str(requests)], "raw piper")
    long = {"sequential": Long(**stt["sequential"]), "batched": Long(**stt["batched"])}
    return Level(**stt["serial"]), Level(**tts), long, cpu_load()


# -- report ---------------------------------------------------------------------------------------------


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1]
                                                                + ordered[len(ordered) // 2]) / 2


def table(title: str, raw: Level, rows: dict[str, list[Level]], labels: dict[str, str]) -> None:
    print(title)
    print(f"{'':44}{'at once':>8}{'requests':>10}{'wall s':>9}{'audio s/s':>11}{'vs raw':>8}{'vs 1 at once':>14}"
          f"{'latency p50 s':>15}")
    print(f"{'raw engine, one after another':44}{1:>8}{raw.requests:>10}{raw.wall_s:>9.2f}{raw.throughput:>11.2f}"
          f"{'1.00x':>8}{'':>14}{median(raw.latencies):>15.2f}")
    for model, levels in rows.items():
        first = levels[0].throughput
        for i, level in enumerate(levels):
            name = labels[model] if i == 0 else ""
            print(f"{name:44}{level.in_flight:>8}{level.requests:>10}{level.wall_s:>9.2f}{level.throughput:>11.2f}"
                  f"{ratio(level.throughput, raw.throughput):>8}{ratio(level.throughput, first):>14}"
                  f"{median(level.latencies):>15.2f}")
    print()


def report(raw_stt: Level, raw_tts: Level, raw_long: dict[str, Long], load_after_raw: str, http: GatewayResults,
           args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print(f"cores: {cores}   cpu: {cpu_name()}")
    print("load average (1 min): " + ", ".join(f"{k} {v}" for k, v in
                                              {"before": args.load_before, **http.loads,
                                               "after raw engines": load_after_raw}.items()))
    print(f"stt: faster-whisper {WHISPER_NAME}, cpu int8, beam_size {BEAM_SIZE}, no VAD; tts: piper "
          f"{Path(VOICE_FILE).stem}, pcm out at {SPEECH_RATE} Hz")
    print()
    short_s = (len(http.short_wav) - 44) / 2 / SPEECH_RATE
    stt_labels = {STT_ONE: f"SYN4PSE, 1 worker x {cores} threads",
                  STT_DEFAULT: f"SYN4PSE, default ({http.engines[STT_DEFAULT]['slots']} workers)"}
    table(f"transcription of a {short_s:.1f} s clip (raw: cpu_threads {cores})", raw_stt, http.stt, stt_labels)
    tts_labels = {TTS_ONE: f"SYN4PSE, 1 voice copy x {cores} threads",
                  TTS_DEFAULT: f"SYN4PSE, default ({http.engines[TTS_DEFAULT]['slots']} voice copies)"}
    table(f"speech of {SPEECH.count('. ') + 1} sentences (raw: PiperVoice.load's own session)", raw_tts, http.tts,
          tts_labels)
    print("engine calls at once, most seen (GET /admin/models): "
          + ", ".join(f"{m} {e['peak_busy']}/{e['slots']}" for m, e in http.engines.items()))
    same = {t for levels in http.stt.values() for level in levels for t in level.texts} | set(raw_stt.texts)
    print(f"same transcript on every request, raw and SYN4PSE, at every level: {'yes' if len(same) == 1 else 'NO'}")
    print()

    long_s = (len(http.long_wav) - 44) / 2 / SPEECH_RATE
    reference = " ".join([TRANSCRIBE_TEXT] * args.long_repeat)
    print(f"long clip: {long_s:.1f} s, one request; batched: batch_size {BATCH_SIZE}")
    print(f"{'':52}{'seconds':>9}{'RTF':>8}{'vs sequential':>15}{'WER':>8}")
    rows = [("raw faster-whisper, sequential", raw_long["sequential"], raw_long["sequential"]),
            ("raw BatchedInferencePipeline (its own VAD)", raw_long["batched"], raw_long["sequential"]),
            (f"SYN4PSE, 1 worker x {cores} threads, sequential", http.long[STT_ONE], http.long[STT_ONE]),
            (f"SYN4PSE, 1 worker x {cores} threads, batch_size {BATCH_SIZE}", http.long[STT_BATCHED],
             http.long[STT_ONE])]
    for name, run, base in rows:
        print(f"{name:52}{run.seconds:>9.2f}{run.seconds / long_s:>8.3f}{ratio(base.seconds, run.seconds):>15}"
              f"{wer(reference, run.text):>8.3f}")
    print("(vs sequential: how many times faster)", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=8, help="requests at each level (default 8)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4], help="requests at once (default 1 2 4)")
    p.add_argument("--long-repeat", type=int, default=4,
                   help="the ~30 s text spoken this many times makes the long clip (default 4)")
    p.add_argument("--raw-worker", choices=["stt", "tts"], help=argparse.SUPPRESS)
    p.add_argument("--audio-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--long-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.requests < 1 or min(args.levels) < 1 or args.long_repeat < 2:
        p.error("--requests and --levels must be >= 1, --long-repeat >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure SYN4PSE (which also speaks the test audio), then the raw engines, and print the comparison."""
    args = parse_args(argv)
    if args.raw_worker == "stt":
        raw_stt_worker(args.audio_file, args.long_file, args.requests)
        return
    if args.raw_worker == "tts":
        raw_tts_worker(args.requests)
        return
    args.load_before = cpu_load()
    http = measure_gateway(args)
    raw_stt, raw_tts, raw_long, load_after_raw = measure_raw(http, args.requests)
    report(raw_stt, raw_tts, raw_long, load_after_raw, http, args)


if __name__ == "__main__":
    main()
