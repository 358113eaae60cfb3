"""Conversational-latency benchmark: how soon after the user stops speaking each live API has the answer.

Two scenarios, each spoken by the gateway (``tts-1``, pcm 24 kHz s16le) and streamed at real time in
20 ms chunks by a raw ``websockets`` client whose receiver thread timestamps every message:

- **turns**: short requests (1-3 s each) separated by pauses of ``--pause`` seconds, as a user talks to an
  assistant;
- **monologue**: one ~10 s utterance of two sentences.

Per scenario, ``/v1/listen`` once per ``--endpointing`` setting, and Flux's ``/v2/listen`` (default
thresholds, and with ``eager_eot_threshold`` 0.4). The end of a turn's speech is its last sample above a
small amplitude threshold, sent at t0 + its time in the audio. Per turn: ms from the end of speech to the
``speech_final`` result, to the final result holding the turn's last word, to Flux's ``EndOfTurn`` (and
``EagerEndOfTurn``); median and max over turns x runs, with the WER of the finals (of the EndOfTurn
transcripts for Flux), next to the targets (short turns: endpointing + 150 ms; monologue: endpointing +
300 ms; Flux: 400 ms) as ratios.

    .venv/bin/python bench/turns.py [--runs 3] [--endpointing 200 300 500] [--pause 1.5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
from _common import (
    CONFIG_HEAD,
    VAD_ENTRY,
    WHISPER_NAME,
    cpu_load,
    cpu_name,
    gateway,
    piper_entry,
    ratio,
    whisper_entry,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

STT_MODEL = "nova-3"
FLUX_MODEL = "flux-general-en"
TTS_MODEL, TTS_VOICE = "tts-1", "alloy"
RATE = 24000
CHUNK_S = 0.02
CHUNK_BYTES = 2 * round(RATE * CHUNK_S)
LEAD_S, TAIL_S = 0.5, 3.0
SPEECH_THRESHOLD = 0.01
TURNS = (
    "What time is it?",
    "Can you book me a table for two at seven tonight?",
    "Turn off the lights in the kitchen.",
    "How far is the nearest train station from here?",
    "Play some quiet music.",
    "Remind me to call my sister when I get home.",
)
MONOLOGUE = ("The morning train was late again, so Maria walked to the harbor instead. Fishing boats were coming "
             "back with their nets full, and an old man sold hot coffee from a small cart near the end of the pier.")
TARGET_MS = {"turns": 150, "monologue": 300}
"""Above endpointing, the final holding the last word (median)."""
FLUX_TARGET_MS = 400
CONFIG = (CONFIG_HEAD + whisper_entry("whisper", alias=STT_MODEL, vad=True).replace(
    f"aliases: [{STT_MODEL}]", f"aliases: [{STT_MODEL}, {FLUX_MODEL}]") + VAD_ENTRY
          + piper_entry(TTS_MODEL, TTS_VOICE))


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@dataclass(frozen=True)
class Audio:
    """A scenario's stream and where each of its turns' speech ends (seconds into the stream)."""

    pcm: bytes
    texts: tuple[str, ...]
    ends: tuple[float, ...]
    clips: tuple[bytes, ...]
    """Each turn's speech alone, as the gateway spoke it."""


def speak(base: str, text: str) -> bytes:
    body = {"model": TTS_MODEL, "voice": TTS_VOICE, "input": text, "response_format": "pcm"}
    resp = httpx.post(f"{base}/v1/audio/speech", json=body, timeout=300)
    resp.raise_for_status()
    return resp.content


def compose(base: str, texts: tuple[str, ...], pause_s: float) -> Audio:
    """The turns spoken one after another, ``pause_s`` of silence between them."""
    pcm, ends, clips = bytes(2 * round(LEAD_S * RATE)), [], []
    for i, text in enumerate(texts):
        tts = speak(base, text)
        clips.append(tts)
        samples = np.frombuffer(tts, dtype="<i2")
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_THRESHOLD * 32768)
        ends.append(len(pcm) / 2 / RATE + (int(loud[-1]) + 1) / RATE)
        pcm += tts + bytes(2 * round((pause_s if i + 1 < len(texts) else TAIL_S) * RATE))
    pcm += bytes(-len(pcm) % CHUNK_BYTES)
    return Audio(pcm=pcm, texts=texts, ends=tuple(ends), clips=tuple(clips))


def whole_utterance_wer(base: str, audio: Audio) -> float:
    """The baseline: each turn transcribed at once, by ``POST /v1/listen`` (the model's beam, 30 s window)."""
    heard = []
    for clip in audio.clips:
        resp = httpx.post(f"{base}/v1/listen?model={STT_MODEL}&encoding=linear16&sample_rate={RATE}&punctuate=true",
                          content=clip, timeout=300)
        resp.raise_for_status()
        heard.append(resp.json()["results"]["channels"][0]["alternatives"][0]["transcript"])
    return float(jiwer.wer(normalise(" ".join(audio.texts)), normalise(" ".join(heard)) or "<empty>"))


def stream(url: str, audio: Audio) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    """Send the audio at real time, then ``CloseStream``; every message with its arrival time."""
    messages: list[tuple[float, dict[str, Any]]] = []
    with connect(url, open_timeout=30, close_timeout=30, max_size=None) as ws:
        def receive() -> None:
            try:
                for raw in ws:
                    messages.append((time.perf_counter(), json.loads(raw)))
            except ConnectionClosed:
                pass

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        t0 = time.perf_counter()
        for k, offset in enumerate(range(0, len(audio.pcm), CHUNK_BYTES)):
            wait = t0 + k * CHUNK_S - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            ws.send(audio.pcm[offset:offset + CHUNK_BYTES])
        ws.send(json.dumps({"type": "CloseStream"}))
        receiver.join(timeout=120)
    return t0, messages


@dataclass
class Row:
    """One setting's latencies (ms after the end of a turn's speech, every turn of every run) and WERs."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    wers: list[float] = field(default_factory=list)

    def add(self, name: str, value: float | None) -> None:
        if value is None:
            self.missing[name] = self.missing.get(name, 0) + 1
        else:
            self.latencies.setdefault(name, []).append(value)


def _words(message: dict[str, Any]) -> list[dict[str, Any]]:
    return list(message["channel"]["alternatives"][0]["words"])


def measure_listen(base: str, audio: Audio, endpointing: int, row: Row) -> None:
    url = (base.replace("http://", "ws://") + f"/v1/listen?encoding=linear16&sample_rate={RATE}"
           f"&interim_results=true&endpointing={endpointing}&model={STT_MODEL}&punctuate=true")
    t0, messages = stream(url, audio)
    finals = [(at, m) for at, m in messages if m.get("type") == "Results" and m.get("is_final")]
    for text, end in zip(audio.texts, audio.ends, strict=True):
        due = t0 + end
        speech_final = next((at for at, m in finals if m.get("speech_final") and at >= due - 0.2), None)
        last_word = normalise(text).split()[-1]
        holding = next((at for at, m in finals if at >= due - 0.2 and any(
            normalise(w["word"]) == last_word and abs(float(w["end"]) - end) < 1.0 for w in _words(m))), None)
        row.add("speech_final", None if speech_final is None else (speech_final - due) * 1000)
        row.add("last-word final", None if holding is None else (holding - due) * 1000)
    heard = " ".join(m["channel"]["alternatives"][0]["transcript"] for _, m in finals)
    row.wers.append(float(jiwer.wer(normalise(" ".join(audio.texts)), normalise(heard) or "<empty>")))


def measure_flux(base: str, audio: Audio, query: str, row: Row) -> None:
    url = (base.replace("http://", "ws://") + f"/v2/listen?model={FLUX_MODEL}&encoding=linear16"
           f"&sample_rate={RATE}{query}")
    t0, messages = stream(url, audio)
    turns = [(at, m) for at, m in messages if m.get("type") == "TurnInfo"]
    ends = [(at, m) for at, m in turns if m["event"] == "EndOfTurn"]
    for end in audio.ends:
        due = t0 + end
        eot = next((at for at, m in ends if at >= due - 0.2), None)
        eager = next((at for at, m in turns if m["event"] == "EagerEndOfTurn" and at >= due - 0.2
                      and (eot is None or at <= eot)), None)
        row.add("EndOfTurn", None if eot is None else (eot - due) * 1000)
        if "eager" in query:
            row.add("EagerEndOfTurn", None if eager is None else (eager - due) * 1000)
    heard = " ".join(m["transcript"] for _, m in ends)
    row.wers.append(float(jiwer.wer(normalise(" ".join(audio.texts)), normalise(heard) or "<empty>")))


def run_all(args: argparse.Namespace) -> dict[str, dict[str, Row]]:
    table: dict[str, dict[str, Row]] = {}
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, gateway(Path(tmp), CONFIG) as base:
        print("speaking the scenarios with the gateway...", file=sys.stderr, flush=True)
        scenarios = {"turns": compose(base, TURNS, args.pause), "monologue": compose(base, (MONOLOGUE,), 0)}
        settings: list[tuple[str, Any]] = [(f"listen endpointing={e}", e) for e in args.endpointing]
        settings += [("flux", ""), ("flux eager=0.4", "&eager_eot_threshold=0.4")]
        for name, audio in scenarios.items():
            table[name] = {}
            table[name]["each turn at once (REST)"] = Row(wers=[whole_utterance_wer(base, audio)])
            for label, value in settings:
                row = table[name][label] = Row()
                for i in range(args.runs + 1):  # the first is a warm-up
                    target = row if i else Row()
                    if isinstance(value, int):
                        measure_listen(base, audio, value, target)
                    else:
                        measure_flux(base, audio, value, target)
                print(f"  {name} / {label}: done", file=sys.stderr, flush=True)
    return table


def report(table: dict[str, dict[str, Row]], args: argparse.Namespace) -> None:
    print()
    print(f"cores: {os.cpu_count()}   cpu: {cpu_name()}   load avg before: {args.load_before}   after: {cpu_load()}")
    print(f"stt: faster-whisper {WHISPER_NAME} with Silero VAD; {args.runs} runs (+1 warm-up) per row; audio "
          f"{TTS_MODEL}/{TTS_VOICE} at {RATE} Hz in {CHUNK_S * 1000:.0f} ms chunks at real time")
    print(f"turns: {len(TURNS)} requests of 1-3 s, {args.pause} s apart; monologue: {len(MONOLOGUE.split())} "
          "words in 2 sentences")
    print()
    print("ms after the end of a turn's speech: median / max over turns x runs; target ratio = median / target")
    print(f"{'scenario':<11}{'setting':<25}{'speech_final':>16}{'last-word final':>18}{'EndOfTurn':>14}"
          f"{'EagerEndOfTurn':>17}{'WER %':>8}{'target':>9}{'ratio':>8}")
    for scenario, rows in table.items():
        for label, row in rows.items():
            cells = []
            for name in ("speech_final", "last-word final", "EndOfTurn", "EagerEndOfTurn"):
                values = row.latencies.get(name)
                miss = row.missing.get(name, 0)
                text = f"{statistics.median(values):.0f} / {max(values):.0f}" if values else "-"
                cells.append(text + (f" ({miss} none)" if miss else ""))
            if not row.latencies:  # the baseline: a WER only
                print(f"{scenario:<11}{label:<25}{'':>65}{statistics.mean(row.wers) * 100:>8.1f}")
                continue
            if label.startswith("listen"):
                endpointing = int(label.split("=")[1])
                target = endpointing + TARGET_MS[scenario]
                measured = row.latencies.get("last-word final")
            else:
                target, measured = FLUX_TARGET_MS, row.latencies.get("EndOfTurn")
            median = statistics.median(measured) if measured else float("nan")
            print(f"{scenario:<11}{label:<25}{cells[0]:>16}{cells[1]:>18}{cells[2]:>14}{cells[3]:>17}"
                  f"{statistics.mean(row.wers) * 100:>8.1f}{target:>9}{ratio(median, target):>8}")
    print()
    print("target: /v1/listen's final holding the last word within endpointing + 150 ms (short turns) or + 300 ms "
          f"(monologue); Flux's EndOfTurn within {FLUX_TARGET_MS} ms. ratio <= 1.00 meets it.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--endpointing", type=int, nargs="+", default=[200, 300, 500])
    p.add_argument("--pause", type=float, default=1.5, help="seconds of silence between turns (default 1.5)")
    args = p.parse_args(argv)
    args.load_before = cpu_load()
    report(run_all(args), args)


if __name__ == "__main__":
    main()
