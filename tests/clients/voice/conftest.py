"""The voice-agent frameworks against a real gateway, with no network and no room.

pipecat's services and LiveKit Agents' plugins get only the gateway's address on 127.0.0.1 (through
:class:`RecordingProxy` for chat and HTTP responses, and :class:`SocketRecorder` for the Responses
WebSocket, so a test can show what the framework sent after a tool ran or a turn was chained). Their
telemetry is switched off before they are imported, and :func:`no_network` fails a test that tries to
reach any host but 127.0.0.1: nothing may fetch a model or report usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the gateway fixture and helpers

from recording import RecordingProxy, install_network_guard, no_network, proxy  # noqa: F401 (fixtures)

os.environ.update({
    "OPENAI_API_KEY": "sk-test",
    "DEEPGRAM_API_KEY": "test",
    "OTEL_SDK_DISABLED": "true",
    "PIPECAT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
})
for _name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
    os.environ.pop(_name, None)

install_network_guard()


from spoken import SPOKEN, similarity, speech_16k  # noqa: E402, F401 (fixture)

TURNS = ("The morning was cold and bright.", "We walked down to the river after lunch.")
"""Two turns a speaker takes, with a pause between them (:func:`two_turns_16k`)."""


@pytest.fixture(scope="session")
def two_turns_16k(gateway: Any) -> bytes:
    """:data:`TURNS` in the gateway's own voice, 16 kHz s16le: a second of silence, the first turn, 1.5 s
    of silence, the second turn, and 2 s of silence after it (what a Flux stream hears of two turns)."""
    def speak(text: str) -> bytes:
        response = httpx.post(f"{gateway.url}/v1/speak",
                              params={"model": "aura-2-thalia-en", "encoding": "linear16", "sample_rate": "16000",
                                      "container": "none"},
                              json={"text": text}, headers={"Authorization": "Token test"}, timeout=120)
        assert response.status_code == 200, response.text
        return response.content

    first, second = (speak(text) for text in TURNS)
    return bytes(2 * 16000) + first + bytes(3 * 16000) + second + bytes(2 * 2 * 16000)


QUESTION = "What is the capital of France?"
"""What a speaker asks the realtime services (:func:`question_24k`)."""


@pytest.fixture(scope="session")
def question_24k(gateway: Any) -> bytes:
    """:data:`QUESTION` in the gateway's own voice (``tts-1``, pcm: 24 kHz s16le, the Realtime API's rate), with
    a second of silence before it and 1.5 s after it, as a microphone would hear it."""
    body = {"model": "tts-1", "voice": "alloy", "input": QUESTION, "response_format": "pcm"}
    response = httpx.post(f"{gateway.url}/v1/audio/speech", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return bytes(2 * 24000) + response.content + bytes(3 * 24000)


def transcribe_pcm(gateway: Any, pcm: bytes, rate: int) -> str:
    """What the gateway's speech-to-text hears in 16-bit mono PCM."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    result = gateway.openai().audio.transcriptions.create(model="whisper-1", file=("speech.wav", buffer.getvalue()))
    return str(result.text)


def check_speech(gateway: Any, pcm: bytes, rate: int, text: str) -> None:
    """16-bit mono PCM a framework produced is speech of a sensible length that transcribes back to ``text``."""
    samples = np.frombuffer(pcm, dtype="<i2")
    seconds = len(samples) / rate
    assert 1.0 < seconds < 8.0, seconds
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300  # speech, not silence
    heard = transcribe_pcm(gateway, pcm, rate)
    assert similarity(text, heard) > 0.8, heard


def check_answer_speech(gateway: Any, pcm: bytes, rate: int, transcript: str) -> None:
    """16-bit mono PCM a realtime model answered with is speech, as long as its transcript takes to say (the
    gateway's voice says 8 to 30 characters a second), and the gateway's speech-to-text hears words in it.
    Not what the words are: the answers are SmolLM2's, often half French, which an English voice mangles."""
    samples = np.frombuffer(pcm, dtype="<i2")
    seconds = len(samples) / rate
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300  # speech, not silence
    assert transcript.strip() and 8 < len(transcript.strip()) / seconds < 30, (seconds, transcript)
    assert len(transcribe_pcm(gateway, pcm, rate).split()) >= 2


class SocketRecorder:
    """A WebSocket pass-through to the gateway (for the Responses API's socket) that keeps, per connection,
    the path it asked for and every JSON message each side sent, in order. A refused upgrade is passed
    back to the client with the gateway's status."""

    def __init__(self, upstream: str) -> None:
        self.connections: list[SocketRecorder.Connection] = []
        self._upstream = upstream.replace("http://", "ws://")
        self._links: dict[ServerConnection, tuple[ClientConnection, SocketRecorder.Connection]] = {}
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    class Connection:
        def __init__(self, path: str, authorization: str | None) -> None:
            self.path = path
            self.authorization = authorization
            self.sent: list[dict[str, Any]] = []  # by the client
            self.received: list[dict[str, Any]] = []  # by the client, from the gateway

    async def _start(self) -> Any:
        return await serve(self._relay, "127.0.0.1", 0, process_request=self._open, compression=None)

    async def _open(self, client: ServerConnection, request: Request) -> Response | None:
        auth = request.headers.get("Authorization")
        try:
            upstream = await connect(self._upstream + request.path, proxy=None, compression=None,
                                     additional_headers={"Authorization": auth} if auth else None)
        except InvalidStatus as e:
            return client.respond(e.response.status_code, e.response.body.decode(errors="replace"))
        record = SocketRecorder.Connection(request.path, auth)
        self.connections.append(record)
        self._links[client] = upstream, record
        return None

    async def _relay(self, client: ServerConnection) -> None:
        upstream, record = self._links.pop(client)

        async def pump(source: Any, sink: Any, kept: list[dict[str, Any]]) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in source:
                    with contextlib.suppress(ValueError):
                        kept.append(json.loads(message))
                    await sink.send(message)
            await sink.close()

        await asyncio.gather(pump(client, upstream, record.sent), pump(upstream, client, record.received))

    def close(self) -> None:
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="session")
def socket_recorder(gateway: Any) -> Iterator[SocketRecorder]:
    """One recording WebSocket pass-through to the session's gateway."""
    recorder = SocketRecorder(gateway.url)
    yield recorder
    recorder.close()
