"""What a realtime session holds, read from the registry of a gateway served in this process: its models
only while it uses them (none while idle, none once the socket is gone), and sessions counted apart."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import Gateway, base_config
from inprocess import InProcess, serve
from test_realtime import QUESTION, RATE, speak
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.timeout(240)

PARTS = ("smollm2", "whisper", "vad", "joe")


@pytest.fixture(scope="module")
def gateway_here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    config = base_config("  realtime: {max_sessions: 2, listen_idle_seconds: 0.5}\n")
    with serve(config, tmp_path_factory.mktemp("models")) as gw:
        yield gw


@contextmanager
def _open(gw: InProcess) -> Iterator[ClientConnection]:
    with connect(gw.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime") as ws:
        assert json.loads(ws.recv())["type"] == "session.created"
        ws.recv()  # conversation.created
        yield ws


def _until(ws: ClientConnection, kind: str) -> dict[str, object]:
    while True:
        event = json.loads(ws.recv(timeout=90))
        if event["type"] == kind:
            return event


def _say(ws: ClientConnection, pcm: bytes) -> None:
    audio = pcm + bytes(2 * RATE)
    for i in range(0, len(audio), 4800):
        ws.send(json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(audio[i:i + 4800]).decode()}))


def _held(gw: InProcess) -> dict[str, int]:
    return {part: gw.active(part) for part in PARTS}


def test_an_idle_session_holds_no_model(gateway_here: InProcess, gateway: Gateway) -> None:
    pcm = speak(gateway, QUESTION)
    with _open(gateway_here) as ws:
        vad = {"type": "server_vad", "silence_duration_ms": 200}
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 16,
                                                                  "audio": {"input": {"turn_detection": vad}}}}))
        _until(ws, "session.updated")
        assert _held(gateway_here) == dict.fromkeys(PARTS, 0)
        _say(ws, pcm)
        assert _until(ws, "response.done")["response"]["status"] in ("completed", "incomplete")  # type: ignore[index]
        time.sleep(1.0)  # past listen_idle_seconds with no audio
        assert {part: gateway_here.settle(part, 5) for part in PARTS} == dict.fromkeys(PARTS, 0)
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "still here"}}))
        assert _until(ws, "session.updated")["session"]["instructions"] == "still here"  # type: ignore[index]


def test_a_disconnect_during_a_response_gives_every_model_back(gateway_here: InProcess) -> None:
    with _open(gateway_here) as ws:
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 400,
                                                                  "instructions": "Tell a very long story.",
                                                                  "temperature": 0}}))
        ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "Tell me a long story about a dragon."}]}}))
        ws.send(json.dumps({"type": "response.create"}))
        _until(ws, "response.output_audio.delta")
        assert gateway_here.active("smollm2") + gateway_here.active("joe") >= 1
    assert {part: gateway_here.settle(part, 5) for part in PARTS} == dict.fromkeys(PARTS, 0)


def test_sessions_are_counted_apart(gateway_here: InProcess) -> None:
    with _open(gateway_here), _open(gateway_here):
        with connect(gateway_here.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime") as third:
            error = json.loads(third.recv())
            with pytest.raises(ConnectionClosed) as closed:
                third.recv()
        assert error["type"] == "error" and "2 realtime sessions" in error["error"]["message"]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    deadline = time.monotonic() + 10
    while True:  # a place is free again once the server has seen the closes
        try:
            with _open(gateway_here):
                return
        except (AssertionError, ConnectionClosed):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
