"""Deepgram /v1/speak: text to speech over REST (a streamed audio body) and WebSocket (text in, audio out).

The ``model`` (``aura-asteria-en``, ``aura-2-thalia-en``, …) is a name or alias in the registry, and
``services.deepgram.speak_model`` when the request names none. Deepgram's model names are voices, so
each speaks with the model's own voice: the one named after its file (``en_US-joe-medium``), which is
the voice no configured OpenAI-style voice name (``alloy``, ``nova``, …) claims. One model, one voice,
whatever alias reached it.

REST streams as the engine speaks, a sentence at a time, chunked (Deepgram's Python SDK v3 needs the
``transfer-encoding`` header and the ``dg-*`` ones). The first sentence is synthesised before the
response starts, so a failing engine is a real status rather than a cut-off body.

WebSocket: ``Speak`` appends to a buffer; ``Flush`` queues the buffer for synthesis, whose raw audio
goes out in binary frames as sentences finish, then ``Flushed`` (``sequence_id`` counts Flushes from
0); ``Clear`` drops the buffer, the queued Flushes and the audio still being made, then ``Cleared``
(``sequence_id`` counts Clears from 0); ``Close`` speaks what is left (buffered text counts as a last
Flush), then closes with 1000. Synthesis runs in its own task, so Clear is read while the engine is
busy. A bad query string or model is accepted, then closed with 1008 and the reason (a refused
handshake reaches browsers as a bare failure); a disconnect cancels the synthesis and frees the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from litestar import Request, WebSocket, post, websocket
from litestar.connection import ASGIConnection
from litestar.exceptions import WebSocketDisconnect
from litestar.response import Stream

from backends.audio import StreamEncoder
from backends.base import SpeechBackend
from backends.types import ModelType, SpeechRequest
from compat.deepgram.common import error_body, model_uuid, new_request_id
from compat.deepgram.speak import (
    Clear,
    Cleared,
    Close,
    Flush,
    Flushed,
    Metadata,
    ServerMessage,
    Speak,
    SpeakSettings,
    SpeakWarning,
    StreamSettings,
    auth_subprotocol,
    encode_message,
    g711_wav_header,
    parse_client_message,
    parse_speak_body,
    parse_speak_query,
    parse_stream_query,
)
from compat.errors import GatewayError, ModelUnavailable
from gateway.config import Config, ModelConfig
from gateway.registry import Lease, Registry
from gateway.routes.common import backend_as, config_of, registry_of
from gateway.routes.deepgram import query_of, request_id_of

__all__ = ["HANDLERS"]

log = logging.getLogger("syn4pse.deepgram.speak")

OPUS_MAX_BIT_RATE = 256_000
"""libopus refuses more than this for mono; Deepgram accepts up to 650000, so higher asks get this."""
FRAME_BYTES = 16_384
"""Largest binary WebSocket frame: a long sentence at 48 kHz would pass the 1 MiB clients accept."""
MAX_BUFFERED_CHARS = 100_000
"""Unflushed text one socket may hold; Speak beyond it is refused with a Warning."""
_CLOSE_REASON_BYTES = 123  # the most a WebSocket close frame carries


def _native_voice(backend: SpeechBackend, config: ModelConfig) -> str:
    """The model's own voice: the one named after its file, else the first no configured name claims."""
    voices = backend.voices
    if not voices:
        raise ModelUnavailable("The speech model has no voice.")
    own = Path(config.source.file).stem if config.source.file else None
    if own in voices:
        return own
    configured = config.options.get("voices") or {}
    return next((v for v in voices if v not in configured), voices[0])


async def _close_iterator(chunks: AsyncIterator[Any]) -> None:
    """Close a synthesis stream now, so the engine stops after its current sentence, not at GC."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


# --------------------------------------------------------------------------------------------------
# REST


def _encoder_bit_rate(settings: SpeakSettings) -> int | None:
    if settings.bit_rate is not None and settings.encoding == "opus":
        return min(settings.bit_rate, OPUS_MAX_BIT_RATE)
    return settings.bit_rate


@post("/speak", status_code=200)
async def speak(request: Request[Any, Any, Any]) -> Stream:
    """Synthesise the body's text and stream it back in the requested encoding and container."""
    settings = parse_speak_query(query_of(request))
    text = parse_speak_body(await request.body())
    requested = settings.model or config_of(request).services.deepgram.speak_model
    registry = registry_of(request)
    lease = await registry.acquire(requested, ModelType.TTS)
    try:
        backend: SpeechBackend = backend_as(lease, SpeechBackend)
        voice = _native_voice(backend, registry.model_config(lease.name))
        encoder = StreamEncoder(settings.stream_format, input_rate=backend.sample_rate,
                                output_rate=settings.sample_rate, bitrate=_encoder_bit_rate(settings))
        chunks = backend.synthesize(SpeechRequest(text=text, voice=voice, speed=settings.speed or 1.0))
        try:
            first = await anext(chunks, None)
        except BaseException:
            await _close_iterator(chunks)
            raise
    except BaseException:
        lease.release()
        raise

    async def audio() -> AsyncIterator[bytes]:
        seconds, sentences = 0.0, 0
        try:
            if settings.g711_wav:
                yield g711_wav_header(settings.encoding, encoder.sample_rate)
            samples = first
            while samples is not None:
                seconds += len(samples) / backend.sample_rate
                sentences += 1
                if data := encoder.encode(samples):
                    yield data
                samples = await anext(chunks, None)
            if tail := encoder.finish():
                yield tail
            log.info("speech synthesis finished: %d sentences, %.2fs of audio (%s, %s)", sentences, seconds,
                     lease.name, settings.encoding)
        finally:
            await _close_iterator(chunks)
            lease.release()

    headers = {"dg-request-id": request_id_of(request), "dg-model-name": requested,
               "dg-model-uuid": model_uuid(lease.name), "dg-char-count": str(len(text))}
    if settings.speed is not None:
        headers["dg-speed-used"] = f"{settings.speed:g}"
    content_type = "audio/wav" if settings.container == "wav" else encoder.content_type
    return Stream(audio(), media_type=content_type, headers=headers)


# --------------------------------------------------------------------------------------------------
# WebSocket


def _query(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in connection.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def _reason(message: str) -> str:
    """``message`` cut to fit a close frame, on a character boundary."""
    return message.encode()[:_CLOSE_REASON_BYTES].decode(errors="ignore")


class _Gone(Exception):
    """The client went away: a send failed (uvicorn raises an OSError, Litestar WebSocketDisconnect)."""


@dataclass(frozen=True)
class _Job:
    text: str
    sequence_id: int


class _SpeakSession:
    """One socket's text buffer and the synthesis of its flushes, in order, on a worker task."""

    def __init__(self, socket: WebSocket[Any, Any, Any], backend: SpeechBackend, voice: str,
                 settings: StreamSettings) -> None:
        self._socket = socket
        self._backend = backend
        self._voice = voice
        self._settings = settings
        self._buffer: list[str] = []
        self._buffered = 0
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._flushes = 0
        self._clears = 0
        self._closed = False
        self.seconds = 0.0
        """Audio sent so far, for the log."""

    async def run(self, metadata: Metadata) -> None:
        """Serve the socket until the client closes it, sends Close, or synthesis fails."""
        try:
            await self._send(metadata)
            self._start_worker()
            while not self._closed:
                event = await self._socket.receive()
                if event["type"] != "websocket.receive":
                    return
                data = event.get("text")
                if data is None:
                    await self._send(SpeakWarning(description="Binary frames are not accepted; send JSON text "
                                                              "messages.", code="INVALID_MESSAGE"))
                    continue
                if await self._handle(parse_client_message(data)):
                    return
        except (WebSocketDisconnect, _Gone):
            return
        finally:
            await self._stop_worker()

    async def _handle(self, message: Speak | Flush | Clear | Close | SpeakWarning) -> bool:
        """Act on one client message; True when the session is over."""
        if isinstance(message, SpeakWarning):
            await self._send(message)
        elif isinstance(message, Speak):
            if self._buffered + len(message.text) > MAX_BUFFERED_CHARS:
                await self._send(SpeakWarning(description=f"More than {MAX_BUFFERED_CHARS} characters are waiting "
                                                          "for a Flush; this text was dropped.", code="BUFFER_FULL"))
            else:
                self._buffer.append(message.text)
                self._buffered += len(message.text)
        elif isinstance(message, Flush):
            self._flush()
        elif isinstance(message, Clear):
            await self._clear()
        else:
            if self._buffered:
                self._flush()
            await self._drain()
            await self._close(1000, "")
            return True
        return False

    def _flush(self) -> None:
        self._jobs.put_nowait(_Job("".join(self._buffer), self._flushes))
        self._flushes += 1
        self._buffer.clear()
        self._buffered = 0

    async def _clear(self) -> None:
        self._buffer.clear()
        self._buffered = 0
        await self._stop_worker()  # no audio of the cleared text is sent after this point
        self._jobs = asyncio.Queue()
        self._start_worker()
        await self._send(Cleared(sequence_id=self._clears))
        self._clears += 1

    async def _drain(self) -> None:
        """Wait until every queued Flush has been spoken (or the worker has stopped)."""
        if self._worker is None or self._worker.done():
            return
        joined = asyncio.ensure_future(self._jobs.join())
        try:
            await asyncio.wait({joined, self._worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()

    def _start_worker(self) -> None:
        self._worker = asyncio.create_task(self._work())

    async def _stop_worker(self) -> None:
        """Cancel the synthesis under way and wait until it has stopped sending."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait({self._worker})
            self._worker = None

    async def _work(self) -> None:
        try:
            while True:
                job = await self._jobs.get()
                try:
                    if job.text.strip():
                        await self._speak(job.text)
                    await self._send(Flushed(sequence_id=job.sequence_id))
                finally:
                    self._jobs.task_done()
        except _Gone:
            pass  # the reader sees the disconnect too, and ends the session
        except GatewayError as e:
            log.warning("speak stream: synthesis failed: %s", e.message)
            await self._close(1011, e.message)
        except Exception:
            log.exception("speak stream: synthesis failed")
            await self._close(1011, "Internal Server Error: the server had an error processing your request.")

    async def _speak(self, text: str) -> None:
        encoder = StreamEncoder(self._settings.stream_format, input_rate=self._backend.sample_rate,
                                output_rate=self._settings.sample_rate)
        chunks = self._backend.synthesize(SpeechRequest(text=text, voice=self._voice,
                                                        speed=self._settings.speed or 1.0))
        try:
            async for samples in chunks:
                await self._send_audio(encoder.encode(samples), samples)
            await self._send_audio(encoder.finish())
        finally:
            await _close_iterator(chunks)

    async def _send_audio(self, data: bytes, samples: npt.NDArray[np.float32] | None = None) -> None:
        for start in range(0, len(data), FRAME_BYTES):
            if self._closed:
                return
            try:
                await self._socket.send_bytes(data[start:start + FRAME_BYTES])
            except (WebSocketDisconnect, OSError) as e:
                raise _Gone from e
        if samples is not None:
            self.seconds += len(samples) / self._backend.sample_rate

    async def _send(self, message: ServerMessage) -> None:
        if not self._closed:
            try:
                await self._socket.send_text(encode_message(message))
            except (WebSocketDisconnect, OSError) as e:
                raise _Gone from e

    async def _close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await self._socket.close(code=code, reason=_reason(reason))


def _state(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[Config, Registry]:
    config: Config = connection.app.state.config
    registry: Registry = connection.app.state.registry
    return config, registry


@websocket("/speak")
async def speak_stream(socket: WebSocket[Any, Any, Any]) -> None:
    """Streaming text to speech: see the module docstring for the protocol."""
    request_id = new_request_id()
    offered: Sequence[str] = socket.scope.get("subprotocols") or ()
    await socket.accept(subprotocols=auth_subprotocol(offered), headers={"dg-request-id": request_id})
    config, registry = _state(socket)
    lease: Lease | None = None
    try:
        settings = parse_stream_query(_query(socket))
        requested = settings.model or config.services.deepgram.speak_model
        lease = await registry.acquire(requested, ModelType.TTS)
        backend: SpeechBackend = backend_as(lease, SpeechBackend)
        voice = _native_voice(backend, registry.model_config(lease.name))
    except GatewayError as e:
        if lease is not None:
            lease.release()
        log.info("speak stream refused: %s", e.message)
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.close(code=1008 if e.status < 500 else 1011,
                               reason=_reason(error_body(e, request_id).err_msg))
        return
    except BaseException:
        if lease is not None:
            lease.release()
        raise

    session = _SpeakSession(socket, backend, voice, settings)
    try:
        await session.run(Metadata(request_id=request_id, model_name=requested, model_version=lease.name,
                                   model_uuid=model_uuid(lease.name)))
    finally:
        lease.release()
        log.info("speak stream closed: %.2fs of audio sent (%s, %s)", session.seconds, lease.name, settings.encoding)


HANDLERS: list[Any] = [speak, speak_stream]
