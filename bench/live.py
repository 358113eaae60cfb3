"""Live-stream latency benchmark: SYN4PSE's Deepgram WebSocket ``/v1/listen``, measured from the end of speech.

The gateway speaks a 3-sentence text once (``tts-1``, pcm: 24 kHz s16le). That speech, with 0.5 s of silence
before and 3 s after, is streamed to ``/v1/listen`` as linear16 in 20 ms chunks at real time (chunk k is sent
at t0 + k * 20 ms) by a raw ``websockets`` client; a receiver thread timestamps every message. The end of
speech is the last sample above a small amplitude threshold, sent at t0 + its time in the audio. Per run:
the delay from the end of speech to the final result holding the last word, to ``speech_final``, to
``UtteranceEnd``; the first interim result's delay from the start of speech; the WER of the finals. Then
``CloseStream``, and the socket closes. 1 warm-up and ``--runs`` measured runs per ``endpointing`` setting.

    .venv/bin/python bench/live.py [--runs 5] [--endpointing 300 500]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
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
    summary,
    whisper_entry,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from compat.deepgram.live import MIN_ENDPOINTING_MS

STT_MODEL = "nova-3"  # alias of the gateway's "whisper" entry, which has its own VAD (live needs one)
TTS_MODEL = "tts-1"
TTS_VOICE = "alloy"
TEXT = ("The morning train was late again, so Maria walked to the harbor instead. Fishing boats were coming "
        "back with their nets full. An old man sold coffee from a cart near the pier.")
RATE = 24000
"""The gateway's speech output rate; pcm is s16le mono, so 2 bytes a sample."""
CHUNK_S = 0.02
CHUNK_BYTES = 2 * round(RATE * CHUNK_S)
LEAD_S = 0.5
"""Silence before the speech, as a microphone opened before anyone talks."""
TAIL_S = 3.0
"""Silence appended after the speech, before ``CloseStream``."""
SPEECH_THRESHOLD = 0.01
"""Speech is where |sample| exceeds this fraction of full scale."""
VAD_FRAME_MS = 32
"""Silero VAD scores 512-sample frames at 16 kHz; the pause before ``speech_final`` is counted in these."""
UTTERANCE_END_MS = 1000
DEFAULT_ENDPOINTING = (300, 500)
CONFIG = (CONFIG_HEAD + whisper_entry("whisper", alias=STT_MODEL, vad=True) + VAD_ENTRY
          + piper_entry(TTS_MODEL, TTS_VOICE))


@dataclass(frozen=True)
class Speech:
    """The streamed audio, and where the speech in it starts and ends (seconds into the stream)."""

    pcm: bytes
    tts_s: float
    """Length of the gateway's speech output, its own trailing silence included."""
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Run:
    """One stream. Latencies in ms after the end of speech (the first interim: after its start); None when the
    message never came."""

    last_final_ms: float | None
    speech_final_ms: float | None
    utterance_end_ms: float | None
    first_interim_ms: float | None
    early_utterance_ends: int
    """UtteranceEnd messages after the end of speech that named an earlier word's end than the last final's."""
    wer: float
    last_word_found: bool
    """Whether the last word of the text is in the final result timed as ``last_final_ms``."""
    send_lag_ms: float
    """The latest any chunk was sent after its due time."""
    transcript: str


def normalise(text: str) -> str:
    """Lower case, punctuation gone: what the WER compares."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``, both normalised."""
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))


def find_speech(tts: bytes) -> Speech:
    """Pad the gateway's speech with silence and find where the speech in it starts and ends."""
    samples = np.frombuffer(tts, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_THRESHOLD * 32768)
    if not len(loud):
        raise SystemExit("the gateway's speech is silent")
    lead = bytes(2 * round(LEAD_S * RATE))
    tail = bytes(2 * round(TAIL_S * RATE))
    pcm = lead + tts + tail
    pcm += bytes(-len(pcm) % CHUNK_BYTES)  # whole chunks only
    return Speech(pcm=pcm, tts_s=len(samples) / RATE, start_s=LEAD_S + int(loud[0]) / RATE,
                  end_s=LEAD_S + (int(loud[-1]) + 1) / RATE)


def make_speech(base: str) -> Speech:
    """Have the gateway speak TEXT as pcm (24 kHz s16le mono)."""
    body = {"model": TTS_MODEL, "voice": TTS_VOICE, "input": TEXT, "response_format": "pcm"}
    resp = httpx.post(f"{base}/v1/audio/speech", json=body, timeout=300)
    if resp.status_code != 200:
        raise SystemExit(f"gateway answered {resp.status_code}: {resp.text[:2000]}")
    return find_speech(resp.content)


def listen_url(base: str, endpointing: int) -> str:
    """The live WebSocket's URL, with the benchmark's query."""
    return (base.replace("http://", "ws://") + f"/v1/listen?encoding=linear16&sample_rate={RATE}"
            f"&interim_results=true&endpointing={endpointing}&utterance_end_ms={UTTERANCE_END_MS}"
            f"&vad_events=true&model={STT_MODEL}")


def stream(url: str, speech: Speech) -> tuple[float, float, list[tuple[float, dict[str, Any]]]]:
    """Stream the audio at real time, then ``CloseStream``; wait for the socket to close.

    Returns t0 (``perf_counter`` when the first chunk was sent), the worst send lag (s) and every message
    received, each with its ``perf_counter`` arrival time.
    """
    messages: list[tuple[float, dict[str, Any]]] = []
    failure: list[BaseException] = []
    with connect(url, open_timeout=30, close_timeout=30) as ws:

        def receive() -> None:
            try:
                while True:
                    raw = ws.recv()
                    messages.append((time.perf_counter(), json.loads(raw)))
            except ConnectionClosed as e:
                if e.rcvd is None or e.rcvd.code != 1000:
                    failure.append(e)
            except BaseException as e:  # reported by the sender
                failure.append(e)

        receiver = threading.Thread(target=receive, name="live-bench-receiver", daemon=True)
        receiver.start()
        lag = 0.0
        t0 = time.perf_counter()
        for k, offset in enumerate(range(0, len(speech.pcm), CHUNK_BYTES)):
            due = t0 + k * CHUNK_S
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            lag = max(lag, time.perf_counter() - due)
            ws.send(speech.pcm[offset:offset + CHUNK_BYTES])
        ws.send(json.dumps({"type": "CloseStream"}))
        receiver.join(timeout=120)
        if receiver.is_alive():
            raise SystemExit("the gateway did not close the stream within 120 s of CloseStream")
    if failure:
        raise SystemExit(f"the live stream failed: {failure[0]!r}")
    return t0, lag, messages


def measure(url: str, speech: Speech) -> Run:
    """One stream, and the latencies read from its messages' arrival times."""
    t0, lag, messages = stream(url, speech)
    speech_start = t0 + speech.start_s
    speech_end = t0 + speech.end_s

    def ms(at: float, since: float = speech_end) -> float:
        return (at - since) * 1000

    results = [(at, m) for at, m in messages if m.get("type") == "Results"]
    finals = [(at, m) for at, m in results if m.get("is_final")]

    def transcript(message: dict[str, Any]) -> str:
        return str(message["channel"]["alternatives"][0]["transcript"])

    spoken = [(at, m) for at, m in finals if normalise(transcript(m))]
    last_final = spoken[-1] if spoken else None
    speech_finals = [at for at, m in results if m.get("speech_final")]
    # The UtteranceEnd that follows the last word; one naming an earlier word, sent after the end of speech,
    # came before the last final (the last word's result was still being transcribed).
    words = last_final[1]["channel"]["alternatives"][0]["words"] if last_final else []
    last_word_end = float(words[-1]["end"]) if words else 0.0
    after = [(at, float(m["last_word_end"])) for at, m in messages
             if m.get("type") == "UtteranceEnd" and at >= speech_end]
    utterance_ends = [at for at, word_end in after if word_end >= last_word_end - 0.01]
    interims = [at for at, m in results if not m.get("is_final")]
    text = " ".join(transcript(m).strip() for _, m in spoken)
    final_word = normalise(TEXT).split()[-1]
    return Run(
        last_final_ms=ms(last_final[0]) if last_final else None,
        speech_final_ms=ms(speech_finals[-1]) if speech_finals else None,
        utterance_end_ms=ms(utterance_ends[0]) if utterance_ends else None,
        first_interim_ms=ms(interims[0], speech_start) if interims else None,
        early_utterance_ends=sum(word_end < last_word_end - 0.01 for _, word_end in after),
        wer=wer(TEXT, text),
        last_word_found=last_final is not None and final_word in normalise(transcript(last_final[1])).split(),
        send_lag_ms=lag * 1000,
        transcript=text,
    )


def fmt_ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f}"


def measure_all(runs: int, endpointings: list[int]) -> tuple[Speech, dict[int, list[Run]]]:
    """Start the gateway, have it speak the test audio, then stream it: per setting, 1 warm-up and ``runs``."""
    results: dict[int, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, gateway(Path(tmp), CONFIG) as base:
        print("generating the test speech with the gateway...", file=sys.stderr, flush=True)
        speech = make_speech(base)
        for endpointing in endpointings:
            url = listen_url(base, endpointing)
            print(f"endpointing={endpointing}: 1 warm-up + {runs} runs, "
                  f"{len(speech.pcm) / 2 / RATE:.1f} s each...", file=sys.stderr, flush=True)
            measure(url, speech)
            results[endpointing] = []
            for i in range(runs):
                run = measure(url, speech)
                results[endpointing].append(run)
                print(f"  endpointing={endpointing} run {i + 1}/{runs}: last final {fmt_ms(run.last_final_ms)} ms"
                      f"{'' if run.last_word_found else ' (without the last word)'}, speech_final "
                      f"{fmt_ms(run.speech_final_ms)} ms, UtteranceEnd {fmt_ms(run.utterance_end_ms)} ms"
                      f"{f' (+{run.early_utterance_ends} early)' if run.early_utterance_ends else ''}, "
                      f"first interim {fmt_ms(run.first_interim_ms)} ms after speech start, "
                      f"WER {run.wer * 100:.1f}%, send lag {run.send_lag_ms:.1f} ms", flush=True)
    return speech, results


def column(runs: list[Run], field: str, width: int, range_width: int) -> tuple[str, int]:
    """A latency column's cells over the runs that had the message, and how many did not."""
    values = [v for v in (getattr(r, field) for r in runs) if v is not None]
    if not values:
        return f"{'none':>{width}}{'':>{range_width}}", len(runs)
    return cells(summary(values), width, range_width, 0), len(runs) - len(values)


def report(speech: Speech, results: dict[int, list[Run]], args: argparse.Namespace) -> None:
    """Print the setup and the table."""
    print()
    print(f"cores: {os.cpu_count()}   cpu: {cpu_name()}   load avg before: {args.load_before}   "
          f"after: {cpu_load()}")
    print(f"runs: {args.runs} (+1 warm-up) per endpointing setting")
    print(f"stt: faster-whisper {WHISPER_NAME} ({WHISPER_PACKAGE}/{WHISPER_FILE}) as {STT_MODEL}, "
          f"Silero VAD v6 ({VAD_FRAME_MS} ms frames)")
    print(f"audio: {TTS_MODEL} voice {TTS_VOICE} speaking {len(TEXT.split())} words in 3 sentences, {RATE} Hz "
          f"s16le: {LEAD_S} s silence + {speech.tts_s:.2f} s of TTS output (speech {speech.start_s - LEAD_S:.2f}"
          f" - {speech.end_s - LEAD_S:.2f} s, |x| > {SPEECH_THRESHOLD:g} of full scale) + {TAIL_S} s silence")
    print(f"sent as linear16 in {CHUNK_S * 1000:.0f} ms chunks at real time; query: interim_results=true "
          f"utterance_end_ms={UTTERANCE_END_MS} vad_events=true model={STT_MODEL}")
    all_runs = [r for runs in results.values() for r in runs]
    print(f"send lag (a chunk's send after its due time), worst: {max(r.send_lag_ms for r in all_runs):.1f} ms")
    print()
    print("ms after the end of speech (first interim: after its start), median [min - max]")
    fields = [("last final", "last_final_ms"), ("speech_final", "speech_final_ms"),
              ("UtteranceEnd", "utterance_end_ms"), ("first interim", "first_interim_ms")]
    label, width, range_width = 14, 14, 16
    head = "".join(f"{name:>{width}}{'[min - max]':>{range_width}}" for name, _ in fields)
    print(f"{'endpointing':<{label}}{'floor':>7}{head}{'WER %':>8}{'[min - max]':>15}")
    missing: list[str] = []
    for endpointing, runs in results.items():
        floor = math.ceil(max(endpointing, MIN_ENDPOINTING_MS) / VAD_FRAME_MS) * VAD_FRAME_MS
        row = f"{f'{endpointing} ms':<{label}}{floor:>7}"
        for name, field in fields:
            text, absent = column(runs, field, width, range_width)
            row += text
            if absent:
                missing.append(f"endpointing {endpointing}: no {name} in {absent} of {len(runs)} runs")
        row += cells(summary([r.wer * 100 for r in runs]), 8, 15, 1)
        print(row)
        early = sum(r.early_utterance_ends > 0 for r in runs)
        if early:
            missing.append(f"endpointing {endpointing}: in {early} of {len(runs)} runs an UtteranceEnd naming an "
                           "earlier utterance's last word came after the end of speech, before the last final "
                           "(not timed above)")
        without = sum(not r.last_word_found for r in runs)
        if without:
            missing.append(f"endpointing {endpointing}: the last final lacked the text's last word in {without} "
                           f"of {len(runs)} runs")
    print()
    print(f"floor: the pause the VAD must hear before speech_final: endpointing (at least {MIN_ENDPOINTING_MS}) "
          f"rounded up to whole {VAD_FRAME_MS} ms VAD frames; the frame holding the end of speech and the "
          f"{CHUNK_S * 1000:.0f} ms chunking add up to {VAD_FRAME_MS} + {CHUNK_S * 1000:.0f} ms more. Above that: "
          "the VAD's score falling below its off threshold, and the final window's transcription.")
    print("last final: the is_final result holding the last word; UtteranceEnd needs "
          f"{UTTERANCE_END_MS} ms of audio after the last word's end (whisper's timestamp).")
    for line in missing:
        print(f"note: {line}")
    first = next(iter(results.values()))[0]
    print(f"transcript (first run): {first.transcript!r}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="measured runs per setting, after 1 warm-up (default 5)")
    p.add_argument("--endpointing", type=int, nargs="+", default=list(DEFAULT_ENDPOINTING),
                   help="endpointing settings (ms) to measure, one table row each (default 300 500)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if any(e < 10 for e in args.endpointing):
        p.error("--endpointing must be >= 10 (ms)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure the live stream through the gateway and print the table."""
    args = parse_args(argv)
    for path in (package_dir(WHISPER_PACKAGE) / WHISPER_FILE / "model.bin", package_dir(VOICE_PACKAGE) / VOICE_FILE):
        if not path.is_file():
            raise SystemExit(f"model file not found: {path}")
    args.load_before = cpu_load()
    speech, results = measure_all(args.runs, list(dict.fromkeys(args.endpointing)))
    report(speech, results, args)


if __name__ == "__main__":
    main()
