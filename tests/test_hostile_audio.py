"""Hostile audio clients against a real gateway: none freezes the loop, exhausts memory or keeps a model.

Each attack runs beside :class:`hostile.HealthProbe` (``/health`` must keep answering at once), gets
its refusal in its own dialect (a WebSocket close code and reason, Deepgram's or OpenAI's error body),
and afterwards every model is given back and a normal transcription still works. The gateway runs
with small limits, so each attack is refused within seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import av
import httpx
import numpy as np
import pytest
from conftest import Gateway, base_config
from hostile import HealthProbe, wait_idle
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

LIMITS = """  audio:
    max_decoded_seconds: 600
    max_live_sessions: 2
    max_speak_sessions: 2
    speak_idle_seconds: 2
    max_socket_seconds: 6
    speak_max_chars: 2000
    speak_pending_flushes: 3
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("hostile-audio"), base_config(LIMITS)).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def speech_wav(gw: Gateway) -> bytes:
    response = httpx.post(f"{gw.url}/v1/audio/speech", timeout=120,
                          json={"model": "tts-1", "voice": "alloy", "input": "The boat moved across the water.",
                                "response_format": "wav"})
    assert response.status_code == 200
    return response.content


def _ws(gw: Gateway, path: str) -> ClientConnection:
    return connect(gw.url.replace("http://", "ws://") + path, open_timeout=60, max_size=None)


def _closed(ws: ClientConnection, timeout: float = 30) -> tuple[int, str]:
    """Read until the server closes; its code and reason."""
    return _read_to_close(ws, [], timeout)


def _send_until_closed(ws: ClientConnection, message: bytes, *, times: int) -> tuple[int | None, str]:
    """Send ``message`` up to ``times`` times, stopping once the server has closed; its code and reason.

    A server that closes while megabytes the client sent are still unread makes the kernel reset the
    connection, and the close frame may then never reach the client: that is (None, "") — closed all the
    same, and unbuffered."""
    for _ in range(times):
        try:
            ws.send(message)
        except ConnectionClosed:
            break
    try:
        while True:
            ws.recv(timeout=30)
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (None, "")


def _read_to_close(ws: ClientConnection, messages: list[Any], timeout: float) -> tuple[int, str]:
    """Every message into ``messages`` until the server closes; its close code and reason."""
    try:
        while True:
            messages.append(ws.recv(timeout=timeout))
    except ConnectionClosed as e:
        closed = e
    assert closed.rcvd is not None, "closed without a close frame"
    return closed.rcvd.code, closed.rcvd.reason


def _transcribes(gw: Gateway, wav: bytes) -> None:
    response = httpx.post(f"{gw.url}/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                          data={"model": "whisper-1"}, timeout=120)
    assert response.status_code == 200, response.text
    assert "boat" in response.json()["text"].lower()


def _idle(gw: Gateway) -> None:
    counts = wait_idle(gw.url)
    assert not any(counts.values()), counts


def test_big_frames_at_a_low_rate_are_refused_without_stalling(gw: Gateway, speech_wav: bytes) -> None:
    """Two 4 MiB frames of 1 kHz mulaw are 2¼ hours of audio to resample 16×: refused unread."""
    with HealthProbe(gw.url) as probe, _ws(gw, "/v1/listen?encoding=mulaw&sample_rate=1000") as ws:
        code, reason = _send_until_closed(ws, bytes(4 * 1024 * 1024), times=2)
        _transcribes(gw, speech_wav)
    probe.assert_served()
    assert code in (1009, None), (code, reason)
    assert code is None or "bytes" in reason
    _idle(gw)


def test_a_message_past_what_a_socket_reads_is_closed_unbuffered(gw: Gateway, speech_wav: bytes) -> None:
    """Past four of the largest frames, the WebSocket layer closes the socket (1009) before the message is
    read whole: no 16 MiB buffers per socket."""
    with HealthProbe(gw.url) as probe, _ws(gw, "/v1/listen?encoding=linear16&sample_rate=16000") as ws:
        code, reason = _send_until_closed(ws, bytes(8 * 1024 * 1024), times=4)
        _transcribes(gw, speech_wav)
    probe.assert_served()
    assert code in (1009, None), (code, reason)
    assert code is None or str(4 * 1024 * 1024) in reason, reason  # the WebSocket layer's limit, not the route's
    _idle(gw)


def test_audio_far_ahead_of_real_time_is_refused_or_slowed(gw: Gateway, speech_wav: bytes) -> None:
    """A frame holding more audio than the burst is refused; a fast stream is slowed to a few × real time."""
    with HealthProbe(gw.url) as probe:
        with _ws(gw, "/v1/listen?encoding=mulaw&sample_rate=8000") as ws:
            ws.send(bytes(8000 * 120))  # 2 minutes of audio in one message, under the frame limit
            code, reason = _closed(ws)
        assert code == 1008 and "real time" in reason, (code, reason)
        with _ws(gw, "/v1/listen?encoding=mulaw&sample_rate=8000") as ws:
            started = time.monotonic()
            for _ in range(8):  # 80 s of audio, sent at once: 60 s may be ahead, the rest waits
                ws.send(bytes(8000 * 10))
            ws.send(json.dumps({"type": "CloseStream"}))
            messages: list[Any] = []
            code, reason = _read_to_close(ws, messages, 60)
            taken = time.monotonic() - started
        assert code == 1000 and json.loads(messages[-1])["type"] == "Metadata", (code, reason)
        assert taken > 3, f"80 s of audio were taken in {taken:.1f} s"
        _transcribes(gw, speech_wav)
    probe.assert_served()
    _idle(gw)


def _flac_bomb(channels: int, seconds: int, rate: int = 8000) -> bytes:
    """Silence in FLAC: a few KB that decode to ``channels`` × ``seconds`` of samples."""
    buffer = io.BytesIO()
    layout = {8: "7.1", 2: "stereo", 1: "mono"}[channels]
    with av.open(buffer, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout=layout)
        block = av.AudioFrame.from_ndarray(np.zeros((1, channels * rate), dtype=np.int16), format="s16",
                                           layout=layout)
        block.sample_rate = rate
        for second in range(seconds):
            block.pts = second * rate
            for packet in stream.encode(block):  # type: ignore[attr-defined]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            container.mux(packet)
    return buffer.getvalue()


def test_a_flac_bomb_is_refused_in_each_dialect(gw: Gateway, speech_wav: bytes) -> None:
    """8 channels × 2 minutes is 16 minutes of audio: past the 10 allowed though each channel is short."""
    bomb = _flac_bomb(8, 120)
    assert len(bomb) < 200_000
    with HealthProbe(gw.url) as probe:
        openai = httpx.post(f"{gw.url}/v1/audio/transcriptions", files={"file": ("a.flac", bomb)},
                            data={"model": "whisper-1"}, timeout=120)
        deepgram = httpx.post(f"{gw.url}/v1/listen?multichannel=true", content=bomb, timeout=120)
        _transcribes(gw, speech_wav)
    probe.assert_served()
    assert openai.status_code == 413, openai.text
    error = openai.json()["error"]
    assert "600 seconds" in error["message"] and error["type"] == "invalid_request_error"
    assert deepgram.status_code == 413, deepgram.text
    assert "600" in deepgram.json()["err_msg"] and deepgram.json()["err_code"]
    _idle(gw)


@pytest.fixture(scope="module")
def hour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that decodes up to an hour of audio: enough for a bomb's samples to weigh hundreds of MB."""
    gateway = Gateway(tmp_path_factory.mktemp("hostile-hour"),
                      base_config("  audio:\n    max_decoded_seconds: 3600\n")).start()
    yield gateway
    gateway.stop()


def _rss_mib(gw: Gateway) -> float:
    assert gw.process is not None
    with open(f"/proc/{gw.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_the_memory_a_refused_bomb_took_goes_back_to_the_system(hour: Gateway, speech_wav: bytes) -> None:
    """8 channels × 10 minutes: an hour of samples decoded (230 MB at 16 kHz, in thousands of frames),
    then refused. The process must not keep them: not in the error's traceback, not in malloc's arenas."""
    _transcribes(hour, speech_wav)  # whisper and its VAD loaded: the baseline
    bomb = _flac_bomb(8, 600)
    before = _rss_mib(hour)
    for _ in range(2):
        r = httpx.post(f"{hour.url}/v1/listen?multichannel=true", content=bomb, timeout=120)
        assert r.status_code == 413, r.text
    grown = _rss_mib(hour) - before
    assert grown < 100, f"RSS grew by {grown:.0f} MiB and stayed"
    _transcribes(hour, speech_wav)


def test_idle_and_endless_sockets_are_closed_and_capped(gw: Gateway, speech_wav: bytes) -> None:
    with HealthProbe(gw.url) as probe:
        speak = _ws(gw, "/v1/speak?model=aura-asteria-en")
        assert json.loads(speak.recv(timeout=60))["type"] == "Metadata"
        listeners = [_ws(gw, "/v1/listen?encoding=linear16&sample_rate=16000") for _ in range(3)]
        refused = [closed for ws in listeners if (closed := _maybe_closed(ws)) is not None]
        assert len(refused) == 1 and refused[0][0] == 1008 and "live" in refused[0][1], refused
        _transcribes(gw, speech_wav)  # the live sockets leave the model's other slots free
        started = time.monotonic()
        keep = [ws for ws in listeners if _maybe_closed(ws, 0) is None]
        while time.monotonic() - started < 10 and any(_alive(ws) for ws in keep):
            for ws in keep:
                with contextlib.suppress(ConnectionClosed):  # it may close between the check and the send
                    if _alive(ws):
                        ws.send(json.dumps({"type": "KeepAlive"}))
            time.sleep(0.5)
        endless = [_closed(ws, 5) for ws in keep]
        idle = _closed(speak, 10)
    probe.assert_served()
    assert all(code == 1008 and "seconds" in reason for code, reason in endless), endless
    assert time.monotonic() - started < 10, "KeepAlive kept the sockets beyond max_socket_seconds"
    assert idle[0] == 1000, idle
    _idle(gw)


def _maybe_closed(ws: ClientConnection, wait: float = 2.0) -> tuple[int, str] | None:
    try:
        ws.recv(timeout=wait)
    except TimeoutError:
        return None
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd is not None else (1006, "")
    return None


def _alive(ws: ClientConnection) -> bool:
    return ws.close_code is None


def test_speak_floods_are_bounded(gw: Gateway, speech_wav: bytes) -> None:
    with HealthProbe(gw.url) as probe:
        long = httpx.post(f"{gw.url}/v1/speak", json={"text": "word " * 500}, timeout=60)
        with _ws(gw, "/v1/speak?model=aura-asteria-en") as ws:
            assert json.loads(ws.recv(timeout=60))["type"] == "Metadata"
            for _ in range(30):
                ws.send(json.dumps({"type": "Speak", "text": "Hello there, this is a flood."}))
                ws.send(json.dumps({"type": "Flush"}))
            warnings: list[Any] = []
            flushed: list[Any] = []
            while len(warnings) + len(flushed) < 30:
                message = ws.recv(timeout=60)
                if isinstance(message, str):
                    parsed = json.loads(message)
                    (warnings if parsed["type"] == "Warning" else flushed).append(parsed)
            ws.send(json.dumps({"type": "Close"}))
        _transcribes(gw, speech_wav)
    probe.assert_served()
    assert long.status_code == 413, long.text
    assert "2000" in long.json()["err_msg"]
    assert len(flushed) <= 20 and {w["code"] for w in warnings} <= {"FLUSH_LIMIT", "QUEUE_FULL"}, warnings
    assert len(warnings) >= 10
    _idle(gw)
