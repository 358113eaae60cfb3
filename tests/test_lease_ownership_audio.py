"""Every streamed audio answer gives its model back, whatever breaks and wherever.

A real gateway runs in this process (``create_app`` served by uvicorn on 127.0.0.1, the real starter
models), so faults can be injected into it: a header that cannot be sent, an encoder that fails before
its first chunk, a client that hangs up mid-stream, a request task cancelled while the engine works.
After each, the model's ``active`` count (``GET /admin/models``) is back to 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from conftest import base_config, free_port
from litestar import Litestar
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import gateway.routes.audio
import gateway.routes.deepgram_speak
from backends.audio import StreamEncoder
from gateway.app import create_app
from gateway.config import parse_config
from gateway.sockets import CLOSE_REASON_BYTES, close_reason

T = TypeVar("T")

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
LONG = " ".join(f"This is sentence number {i} of a long story that keeps the speech engine busy." for i in range(300))
OPENAI_LONG = LONG[:LONG.index(" This is sentence number 45 ")]  # within OpenAI's 4096 characters
# One sentence long enough that making it takes a while: the request is still before its first byte.
LONG_SENTENCE = " ".join(["and the river ran on past the old mill"] * 12) + "."


@dataclass
class Served:
    app: Litestar
    url: str
    loop: asyncio.AbstractEventLoop

    def run(self, work: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
        """Run ``work()`` on the server's own event loop, beside the requests it serves."""
        async def call() -> T:
            return await work()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def active(self) -> dict[str, int]:
        data = httpx.get(f"{self.url}/admin/models", timeout=30).json()["data"]
        return {m["id"]: int(m["active"]) for m in data}

    def released(self, *models: str, seconds: float = 20) -> bool:
        """Whether every one of ``models`` is back to no active request within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            active = self.active()
            if all(active[m] == 0 for m in models):
                return True
            time.sleep(0.05)
        return False

    def wait_active(self, model: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.active()[model] == 0:
            assert time.monotonic() < deadline, f"{model} never became active"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    models = tmp_path_factory.mktemp("ownership")
    app = create_app(parse_config(base_config(), environ={"SYN4PSE_MODELS_PATH": str(models),
             "SYN4PSE_SERVER_GRPC_PORT": "off"}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the in-process gateway did not start"
        time.sleep(0.05)
    yield Served(app, f"http://127.0.0.1:{port}", loop)
    server.should_exit = True
    thread.join(timeout=30)
    loop.close()


def _wav(served: Served, text: str) -> bytes:
    r = httpx.post(f"{served.url}/v1/audio/speech", timeout=120,
                   json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"})
    r.raise_for_status()
    return r.content


@pytest.fixture(scope="module")
def speech_wav(served: Served) -> bytes:
    return _wav(served, f"{SENTENCE} {SENTENCE}")


@pytest.fixture(scope="module")
def story_wav(served: Served) -> bytes:
    """Four sentences: a streamed transcript's first words come before its last."""
    return _wav(served, " ".join([SENTENCE, "Birds were singing in the tall trees."] * 2))


def _speech(text: str = SENTENCE, **extra: object) -> dict[str, object]:
    return {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm", **extra}


async def _fails_before_its_first_chunk(*_: object) -> AsyncIterator[Any]:
    raise RuntimeError("injected: the encoder fails before its first chunk")
    yield  # an async generator


# -- an exception while the response's headers are built ------------------------------------------


def _unsendable_header(*_: object, **__: object) -> dict[str, str]:
    return {"x-injected": "\u2603"}  # a header must be Latin-1: sending the response start fails


@pytest.mark.parametrize("sse", [False, True], ids=["audio", "sse"])
def test_speech_whose_headers_fail_gives_the_voice_back(served: Served, monkeypatch: pytest.MonkeyPatch,
                                                        sse: bool) -> None:
    monkeypatch.setattr(gateway.routes.audio, "dropped_headers", _unsendable_header)
    body = _speech(**({"stream_format": "sse"} if sse else {}))
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.post(f"{served.url}/v1/audio/speech", json=body, timeout=120)
        assert r.status_code == 500
    assert served.released("joe")
    monkeypatch.undo()
    assert httpx.post(f"{served.url}/v1/audio/speech", json=body, timeout=120).status_code == 200


def test_transcription_stream_whose_headers_fail_gives_the_model_back(
        served: Served, speech_wav: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.routes.audio, "dropped_headers", _unsendable_header)
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.post(f"{served.url}/v1/audio/transcriptions", timeout=120, files={"file": ("a.wav", speech_wav)},
                       data={"model": "whisper-1", "stream": "true"})
        assert r.status_code == 500
    assert served.released("whisper", "vad")


def test_deepgram_speak_whose_headers_fail_gives_the_voice_back(served: Served,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.routes.deepgram_speak, "speak_headers", _unsendable_header)
    with contextlib.suppress(httpx.HTTPError):
        r = httpx.post(f"{served.url}/v1/speak", params={"model": "aura-asteria-en"}, json={"text": SENTENCE},
                       timeout=120)
        assert r.status_code == 500
    assert served.released("joe")


# -- a failure before the first chunk ----------------------------------------------------------------


@pytest.mark.parametrize(("module", "name", "path", "body"), [
    (gateway.routes.audio, "audio_of", "/v1/audio/speech", _speech()),
    (gateway.routes.audio, "speech_events", "/v1/audio/speech", _speech(stream_format="sse")),
    (gateway.routes.deepgram_speak, "speak_audio", "/v1/speak?model=aura-asteria-en", {"text": SENTENCE}),
], ids=["speech", "speech-sse", "deepgram-speak"])
def test_speech_whose_encoder_fails_first_gives_the_voice_back(served: Served, monkeypatch: pytest.MonkeyPatch,
                                                               module: object, name: str, path: str,
                                                               body: dict[str, object]) -> None:
    monkeypatch.setattr(module, name, _fails_before_its_first_chunk)
    with contextlib.suppress(httpx.HTTPError), httpx.stream("POST", f"{served.url}{path}", json=body,
                                                            timeout=120) as r:
        r.read()
    assert served.released("joe")


def test_transcription_stream_whose_encoder_fails_first_gives_the_model_back(
        served: Served, speech_wav: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.routes.audio, "transcript_events", _fails_before_its_first_chunk)
    with contextlib.suppress(httpx.HTTPError), httpx.stream(
            "POST", f"{served.url}/v1/audio/transcriptions", timeout=120, files={"file": ("a.wav", speech_wav)},
            data={"model": "whisper-1", "stream": "true"}) as r:
        r.read()
    assert served.released("whisper", "vad")


def test_speech_whose_audio_encoder_breaks_at_the_first_sentence_gives_the_voice_back(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: StreamEncoder, samples: object) -> bytes:
        raise RuntimeError("injected: the codec fails")

    monkeypatch.setattr(StreamEncoder, "encode", broken)
    with contextlib.suppress(httpx.HTTPError), httpx.stream(
            "POST", f"{served.url}/v1/audio/speech", json=_speech(), timeout=120) as r:
        assert r.status_code == 200  # the failure comes after the first sentence was made
        r.read()
    assert served.released("joe")


# -- a client that hangs up mid-stream ---------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("path", "body"), [
    ("/v1/audio/speech", _speech(OPENAI_LONG)),
    ("/v1/audio/speech", _speech(OPENAI_LONG, stream_format="sse")),
    ("/v1/speak?model=aura-asteria-en&encoding=linear16&container=none", {"text": LONG}),
], ids=["speech", "speech-sse", "deepgram-speak"])
def test_speech_abandoned_mid_stream_gives_the_voice_back(served: Served, path: str,
                                                          body: dict[str, object]) -> None:
    with httpx.stream("POST", f"{served.url}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        assert next(chunks)
        assert served.active()["joe"] == 1  # held while it streams
    assert served.released("joe", seconds=60)


@pytest.mark.timeout(180)
def test_transcription_stream_abandoned_mid_stream_gives_the_model_back(served: Served, story_wav: bytes) -> None:
    with httpx.stream("POST", f"{served.url}/v1/audio/transcriptions", timeout=120,
                      files={"file": ("a.wav", story_wav)}, data={"model": "whisper-1", "stream": "true"}) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        assert next(chunks)  # then the client leaves (the engine may have finished: the stream has not)
    assert served.released("whisper", "vad", seconds=60)


@pytest.mark.timeout(180)
def test_live_socket_dropped_mid_stream_gives_both_models_back(served: Served, speech_wav: bytes) -> None:
    url = served.url.replace("http://", "ws://") + "/v1/listen?model=nova-3&encoding=linear16&sample_rate=24000"
    pcm = speech_wav[44:]
    with connect(url) as ws:
        for start in range(0, len(pcm), 4800):
            ws.send(pcm[start:start + 4800])
        served.wait_active("whisper")
        assert served.active()["vad"] == 1
    assert served.released("whisper", "vad")


@pytest.mark.timeout(180)
def test_speak_socket_dropped_mid_synthesis_gives_the_voice_back(served: Served) -> None:
    url = served.url.replace("http://", "ws://") + "/v1/speak?model=aura-asteria-en"
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=60))["type"] == "Metadata"
        ws.send(json.dumps({"type": "Speak", "text": LONG}))
        ws.send(json.dumps({"type": "Flush"}))
        assert isinstance(ws.recv(timeout=60), bytes)
        assert served.active()["joe"] == 1
    assert served.released("joe", seconds=60)


# -- a request task cancelled ------------------------------------------------------------------------


def _http_scope(path: str, body: bytes) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}


async def _cancelled(served: Served, scope: dict[str, Any], incoming: list[dict[str, Any]],
                     cancel_when: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """Call the app for ``scope`` and cancel its task once ``cancel_when(messages sent so far)`` holds."""
    sent: list[dict[str, Any]] = []
    changed = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # the client stays, and says nothing more
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        changed.set()

    task = asyncio.ensure_future(served.app(scope, receive, send))  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while not cancel_when(sent):
        assert not task.done() and time.monotonic() < deadline, sent
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return sent


def _holds(served: Served, model: str) -> Callable[[list[dict[str, Any]]], bool]:
    registry = served.app.state.registry

    def check(_: list[dict[str, Any]]) -> bool:
        return any(m["id"] == model and m["active"] for m in registry.describe())

    return check


@pytest.mark.timeout(180)
def test_speech_cancelled_before_its_first_byte_gives_the_voice_back(served: Served) -> None:
    assert httpx.post(f"{served.url}/v1/audio/speech", json=_speech(), timeout=120).status_code == 200  # loaded
    body = json.dumps(_speech(LONG_SENTENCE)).encode()
    sent = served.run(lambda: _cancelled(served, _http_scope("/v1/audio/speech", body),
                                         [{"type": "http.request", "body": body}], _holds(served, "joe")))
    assert not sent  # cancelled while the first sentence was being made
    assert served.released("joe")


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("path", "payload"), [
    ("/v1/audio/speech", _speech(OPENAI_LONG)),
    ("/v1/speak", {"text": LONG}),
], ids=["speech", "deepgram-speak"])
def test_speech_cancelled_mid_stream_gives_the_voice_back(served: Served, path: str,
                                                          payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()

    def streaming(sent: list[dict[str, Any]]) -> bool:
        return any(m["type"] == "http.response.body" and m.get("body") for m in sent)

    sent = served.run(lambda: _cancelled(served, _http_scope(path, body), [{"type": "http.request", "body": body}],
                                         streaming))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert served.released("joe", seconds=60)


@pytest.mark.timeout(180)
def test_live_socket_cancelled_mid_stream_gives_both_models_back(served: Served, speech_wav: bytes) -> None:
    pcm = speech_wav[44:]
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
             "path": "/v1/listen", "raw_path": b"/v1/listen", "query_string": b"encoding=linear16&sample_rate=24000",
             "root_path": "", "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "subprotocols": [], "state": {}}
    incoming = [{"type": "websocket.connect"}, *({"type": "websocket.receive", "bytes": pcm[i:i + 4800]}
                                                 for i in range(0, len(pcm), 4800))]
    holds = _holds(served, "whisper")

    def transcribing(sent: list[dict[str, Any]]) -> bool:
        return any(m["type"] == "websocket.accept" for m in sent) and not incoming and holds(sent)

    served.run(lambda: _cancelled(served, scope, incoming, transcribing))
    assert served.released("whisper", "vad")


# -- the close reason --------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["é" * 100, "€" * 50, "a" + "😀" * 40, "short, plain and ASCII"])
def test_close_reason_fits_its_frame_on_a_character_boundary(message: str) -> None:
    reason = close_reason(message)
    assert len(reason.encode()) <= CLOSE_REASON_BYTES
    assert message.startswith(reason)
    if len(message.encode()) <= CLOSE_REASON_BYTES:
        assert reason == message
    else:
        assert len(reason.encode()) > CLOSE_REASON_BYTES - 4  # cut at the last whole character, no sooner


@pytest.mark.parametrize("path", ["/v1/listen?model=", "/v1/speak?model="])
def test_a_long_multibyte_reason_still_closes_cleanly(served: Served, path: str) -> None:
    name = "modèle-inconnu-" + "é" * 80
    with connect(served.url.replace("http://", "ws://") + path + urllib.parse.quote(name)) as ws, \
            pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=30)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008  # not 1006: the close frame fit
    assert "modèle-inconnu-" in caught.value.rcvd.reason
    assert len(caught.value.rcvd.reason.encode()) <= CLOSE_REASON_BYTES

