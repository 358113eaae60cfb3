"""Hostile audio clients, for ``bench/hostile.py``: each attack against a gateway with default settings.

Every callable takes the gateway's base URL, runs for at most about 15 s over a few connections to
127.0.0.1, and raises ``AssertionError`` when the server did not react as it should: refuse, slow
down or close. What the attacks cost the other clients (``/health`` p99, transcription latency, time
to recover, memory) is measured by the runner beside them.

    big mulaw frames   two 4 MiB frames of 1 kHz mulaw to live /v1/listen: 1009 before any decoding
    fast live audio    80 s of 8 kHz mulaw sent at once: read at the real-time budget (60 s ahead, then 4×)
    flac bomb          2 MB of FLAC that decodes to 8 channels × 1 h: 413, decoding stopped at the cap
    idle sockets       one live socket past the cap is refused; silent ones closed after 10 s (NET-0001)
    speak flood        100 005 characters to POST /v1/speak (413); 30 Flushes at once on the socket (Warnings)
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable

import av
import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

__all__ = ["ATTACKS"]

LIVE_SESSIONS = 8
"""``server.audio.max_live_sessions`` by default."""


def _ws(url: str, path: str) -> ClientConnection:
    return connect(url.replace("http://", "ws://") + path, open_timeout=30, max_size=None)


def _close_of(ws: ClientConnection, timeout: float = 15) -> tuple[int, str]:
    """Read until the server closes the socket; its code and reason."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (1006, "")
    except TimeoutError:
        pass
    raise AssertionError(f"the server kept the socket open for {timeout:g} s")


def big_mulaw_frames(url: str) -> None:
    with _ws(url, "/v1/listen?encoding=mulaw&sample_rate=1000") as ws:
        for _ in range(2):
            try:
                ws.send(bytes(4 * 1024 * 1024))
            except ConnectionClosed:
                break
        code, reason = _close_of(ws)
    assert code == 1009, f"4 MiB frames were not refused as too big: {code} {reason}"


def fast_live_audio(url: str) -> None:
    with _ws(url, "/v1/listen?encoding=mulaw&sample_rate=8000") as ws:
        started = time.monotonic()
        for _ in range(8):
            ws.send(bytes(8000 * 10))
        ws.send(json.dumps({"type": "CloseStream"}))
        code, reason = _close_of(ws, 60)
    taken = time.monotonic() - started
    assert code == 1000, f"the stream did not end cleanly: {code} {reason}"
    assert taken > 3, f"80 s of audio were taken in {taken:.1f} s: nothing held the client to real time"


@functools.cache
def _flac_bomb(channels: int = 8, seconds: int = 3600, rate: int = 8000) -> bytes:
    """Silence in FLAC: about 2 MB that decode to ``channels`` × ``seconds`` of samples."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="7.1")
        block = av.AudioFrame.from_ndarray(np.zeros((1, channels * rate), dtype=np.int16), format="s16",
                                           layout="7.1")
        block.sample_rate = rate
        for second in range(seconds):
            block.pts = second * rate
            for packet in stream.encode(block):  # type: ignore[attr-defined]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            container.mux(packet)
    return buffer.getvalue()


def flac_bomb(url: str) -> None:
    bomb = _flac_bomb()
    openai = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("bomb.flac", bomb)},
                        data={"model": "whisper-1"}, timeout=60)
    deepgram = httpx.post(f"{url}/v1/listen?multichannel=true", content=bomb, timeout=60)
    assert openai.status_code == 413, f"OpenAI dialect: {openai.status_code} {openai.text[:200]}"
    assert deepgram.status_code == 413, f"Deepgram dialect: {deepgram.status_code} {deepgram.text[:200]}"
    assert "err_msg" in deepgram.json() and "error" in openai.json()


def idle_sockets(url: str) -> None:
    sockets = [_ws(url, "/v1/listen?encoding=linear16&sample_rate=16000") for _ in range(LIVE_SESSIONS + 1)]
    try:
        refused = []
        for ws in sockets:
            try:
                ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except ConnectionClosed as e:
                refused.append(e.rcvd.code if e.rcvd is not None else 1006)
        assert refused == [1008], f"past {LIVE_SESSIONS} live sockets, closes were {refused}"
        closes = [_close_of(ws, 15) for ws in sockets if ws.close_code is None]
        assert all(code == 1011 and "NET-0001" in reason for code, reason in closes), closes
    finally:
        for ws in sockets:
            ws.close()


def speak_flood(url: str) -> None:
    long = httpx.post(f"{url}/v1/speak", json={"text": "word " * 20_001}, timeout=30)
    assert long.status_code == 413, f"100 005 characters: {long.status_code} {long.text[:200]}"
    with _ws(url, "/v1/speak?model=aura-asteria-en") as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "Metadata"
        for _ in range(30):
            ws.send(json.dumps({"type": "Speak", "text": "Hello there."}))
            ws.send(json.dumps({"type": "Flush"}))
        warnings = flushed = 0
        deadline = time.monotonic() + 15
        while warnings + flushed < 30 and time.monotonic() < deadline:
            message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(message, str):
                kind = json.loads(message)["type"]
                warnings += kind == "Warning"
                flushed += kind == "Flushed"
        ws.send(json.dumps({"type": "Clear"}))
    assert flushed <= 20 and warnings >= 10, f"30 Flushes at once: {flushed} spoken, {warnings} warned"


ATTACKS: list[tuple[str, Callable[[str], None]]] = [
    ("big mulaw frames at a low rate", big_mulaw_frames),
    ("live audio far faster than real time", fast_live_audio),
    ("flac bomb", flac_bomb),
    ("idle live sockets", idle_sockets),
    ("speak flood", speak_flood),
]
