"""Deepgram /v1/speak: text to speech over REST (a streamed audio body) and WebSocket (text in, audio out).

The ``model`` (``aura-asteria-en``, ``aura-2-thalia-en``, …) is a name or alias in the registry, and
``services.deepgram.speak_model`` when the request names none. Deepgram's model names are voices, so
each speaks with the model's own voice (``SpeechBackend.default_voice``: for piper, the one named after
its file, ``en_US-joe-medium``), never a configured OpenAI-style voice (``alloy``, ``nova``, …). One
model, one voice, whatever alias reached it.

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

Limits (``server.audio``): REST text over ``speak_max_chars`` is a 413; on the socket, a Flush beyond
``speak_flushes_per_minute`` in any 60 s, or while ``speak_pending_flushes`` wait to be spoken, gets a
``Warning`` (``FLUSH_LIMIT``, ``QUEUE_FULL``) and its text is dropped; a message over
``max_frame_bytes`` closes the socket (1009); with no message and nothing to speak for
``speak_idle_seconds`` it is closed (1000), and after ``max_socket_seconds`` in any case (1008).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from litestar import Request, WebSocket, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.response import Stream

from backends.audio_answers import SpeechAudio, SpeechDone
from backends.errors import DomainError
from compat.deepgram.common import model_uuid
from compat.deepgram.speak import (
    Clear,
    Cleared,
    Close,
    Flush,
    Flushed,
    Metadata,
    ServerMessage,
    Speak,
    SpeakWarning,
    encode_message,
    parse_client_message,
    parse_speak_body,
    parse_speak_query,
    parse_stream_query,
    speak_audio,
    speak_content_type,
    speak_headers,
)
from compat.errors import GatewayError
from gateway.config import AudioLimits
from gateway.ownership import own
from gateway.routes.deepgram_request import close_with, offered_subprotocol, query_of, request_id_of, wire_error
from gateway.serving import serving_of
from gateway.serving.speech import AudioOutput, Voice
from gateway.sockets import close_quietly

__all__ = ["HANDLERS"]

log = logging.getLogger("syn4pse.deepgram.speak")

FRAME_BYTES = 16_384
"""Largest binary WebSocket frame: a long sentence at 48 kHz would pass the 1 MiB clients accept."""
MAX_BUFFERED_CHARS = 100_000
"""Unflushed text one socket may hold; Speak beyond it is refused with a Warning."""


# --------------------------------------------------------------------------------------------------
# REST


@post("/speak", status_code=200)
async def speak(request: Request[Any, Any, Any]) -> Stream:
    """Synthesise the body's text and stream it back in the requested encoding and container."""
    settings = parse_speak_query(query_of(request))
    serving = serving_of(request)
    text = parse_speak_body(await request.body(), serving.config.server.audio.speak_max_chars)
    requested = settings.model or serving.config.services.deepgram.speak_model
    output = AudioOutput(settings.stream_format, settings.sample_rate, settings.bit_rate)
    spoken = await serving.speech.speak(requested, text, output, speed=settings.speed or 1.0)
    events = own(request, spoken.events)
    headers = speak_headers(settings, request_id=request_id_of(request), requested=requested,
                            canonical=spoken.model, text=text)
    return Stream(speak_audio(events, settings, spoken.sample_rate),
                  media_type=speak_content_type(settings, spoken.content_type), headers=headers)


# --------------------------------------------------------------------------------------------------
# WebSocket


@websocket("/speak")
async def speak_stream(socket: WebSocket[Any, Any, Any]) -> None:
    """Streaming text to speech: see the module docstring for the protocol."""
    request_id = request_id_of(socket)
    await socket.accept(subprotocols=offered_subprotocol(socket), headers={"dg-request-id": request_id})
    serving = serving_of(socket)
    try:
        settings = parse_stream_query(query_of(socket))
        requested = settings.model or serving.config.services.deepgram.speak_model
        voice = own(socket, await serving.speech.voice(
            requested, AudioOutput(settings.stream_format, settings.sample_rate), speed=settings.speed or 1.0))
    except (GatewayError, DomainError) as e:
        log.info("speak stream refused: %s", wire_error(e).message)
        await close_with(socket, e, enveloped=True)
        return
    session = _SpeakSession(socket, voice, serving.config.server.audio)
    try:
        await session.run(Metadata(request_id=request_id, model_name=requested, model_version=voice.model,
                                   model_uuid=model_uuid(voice.model)))
    finally:
        await voice.aclose()
        log.info("speak stream closed: %.2fs of audio sent (%s, %s)", session.seconds, voice.model, settings.encoding)


class _Gone(Exception):
    """The client went away: a send failed (uvicorn raises an OSError, Litestar WebSocketDisconnect)."""


@dataclass(frozen=True)
class _Job:
    text: str
    sequence_id: int


class _SpeakSession:
    """One socket's text buffer and the synthesis of its flushes, in order, on a worker task."""

    def __init__(self, socket: WebSocket[Any, Any, Any], voice: Voice, limits: AudioLimits) -> None:
        self._socket = socket
        self._voice = voice
        self._limits = limits
        self._flushed_at: deque[float] = deque()
        """When the Flushes of the last 60 s came."""
        self._unspoken = 0
        """Flushes queued or being spoken."""
        self._buffer: list[str] = []
        self._buffered = 0
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._flushes = 0
        self._clears = 0
        self._closed = False
        self.seconds = 0.0
        """Audio spoken so far, for the log."""

    async def run(self, metadata: Metadata) -> None:
        """Serve the socket until the client closes it, sends Close, or synthesis fails."""
        limit = self._limits.max_socket_seconds
        try:
            await self._send(metadata)
            self._start_worker()
            async with asyncio.timeout(limit):
                await self._read()
        except TimeoutError:
            await self._close(1008, f"The socket was open for the {limit:g} seconds one socket may last.")
        except (WebSocketDisconnect, _Gone):
            return
        finally:
            await self._stop_worker()

    async def _read(self) -> None:
        while not self._closed:
            event = await self._next_message()
            if event is None:
                await self._close(1000, f"No message for {self._limits.speak_idle_seconds:g} seconds.")
                return
            if event["type"] != "websocket.receive":
                return
            size = len(event.get("text") or event.get("bytes") or "")
            if size > self._limits.max_frame_bytes:
                await self._close(1009, f"BIG-0000: a message of {size} bytes; at most {self._limits.max_frame_bytes}.")
                return
            data = event.get("text")
            if data is None:
                await self._send(SpeakWarning(description="Binary frames are not accepted; send JSON text "
                                                          "messages.", code="INVALID_MESSAGE"))
                continue
            if await self._handle(parse_client_message(data)):
                return

    async def _next_message(self) -> Any:
        """The client's next message, or None once it has been idle too long with nothing left to speak."""
        while True:
            try:
                return await asyncio.wait_for(self._socket.receive(), timeout=self._limits.speak_idle_seconds)
            except TimeoutError:
                if not self._unspoken:
                    return None

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
            if warning := self._flush_refused():
                self._buffer.clear()
                self._buffered = 0
                await self._send(warning)
            else:
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

    def _flush_refused(self) -> SpeakWarning | None:
        """Why this Flush is not spoken: too many in the last minute, or too many still waiting."""
        now = time.monotonic()
        while self._flushed_at and now - self._flushed_at[0] >= 60:
            self._flushed_at.popleft()
        per_minute, pending = self._limits.speak_flushes_per_minute, self._limits.speak_pending_flushes
        if len(self._flushed_at) >= per_minute:
            return SpeakWarning(description=f"More than {per_minute} Flush messages in 60 seconds; this one and"
                                            " its text were dropped.", code="FLUSH_LIMIT")
        if self._jobs.qsize() >= pending:
            return SpeakWarning(description=f"{pending} Flushes are still waiting to be spoken; this one and its"
                                            " text were dropped.", code="QUEUE_FULL")
        self._flushed_at.append(now)
        return None

    def _flush(self) -> None:
        self._jobs.put_nowait(_Job("".join(self._buffer), self._flushes))
        self._unspoken += 1
        self._flushes += 1
        self._buffer.clear()
        self._buffered = 0

    async def _clear(self) -> None:
        self._buffer.clear()
        self._buffered = 0
        await self._stop_worker()  # no audio of the cleared text is sent after this point
        self._jobs = asyncio.Queue()
        self._unspoken = 0
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
                    self._unspoken = max(0, self._unspoken - 1)
        except _Gone:
            pass  # the reader sees the disconnect too, and ends the session
        except (GatewayError, DomainError) as e:
            error = wire_error(e)
            log.warning("speak stream: synthesis failed: %s", error.message)
            await self._close(1011, error.message)
        except Exception:
            log.exception("speak stream: synthesis failed")
            await self._close(1011, "Internal Server Error: the server had an error processing your request.")

    async def _speak(self, text: str) -> None:
        events = self._voice.speak(text)
        try:
            async for event in events:
                if isinstance(event, SpeechAudio):
                    await self._send_audio(event.data)
                elif isinstance(event, SpeechDone):
                    self.seconds += event.seconds
        finally:
            await events.aclose()

    async def _send_audio(self, data: bytes) -> None:
        for start in range(0, len(data), FRAME_BYTES):
            if self._closed:
                return
            try:
                await self._socket.send_bytes(data[start:start + FRAME_BYTES])
            except (WebSocketDisconnect, OSError) as e:
                raise _Gone from e

    async def _send(self, message: ServerMessage) -> None:
        if not self._closed:
            try:
                await self._socket.send_text(encode_message(message))
            except (WebSocketDisconnect, OSError) as e:
                raise _Gone from e

    async def _close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            await close_quietly(self._socket, code, reason)


HANDLERS: list[Any] = [speak, speak_stream]
