"""Deepgram's live transcription WebSocket: ``/v1/listen``.

Auth may come as a ``token``/``bearer`` subprotocol; the one the client offered is echoed in the
handshake, or browsers abort. Client messages: audio (binary), ``KeepAlive``, ``Finalize``,
``CloseStream`` (flush, final results, one ``Metadata``, close 1000). With neither audio nor
``KeepAlive`` for ``server.audio.listen_idle_seconds`` (10 s) the socket is closed as Deepgram does
(1011, NET-0001). A bad query string or model is accepted, then closed with 1008 and the reason; audio
that cannot be read closes it with 1008 and ``DATA-0000``. What a client may cost (``server.audio``):
a message over ``max_frame_bytes`` closes it with 1009, audio far ahead of real time is slowed down
(one message too long to pace is 1008), ``max_socket_seconds`` ends any socket (1008), and past
``max_live_sessions`` open sockets a new one is closed with 1008.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from backends.errors import BadAudio, DomainError
from compat.deepgram.common import iso_now, model_uuid
from compat.deepgram.listen import model_info
from compat.deepgram.live import (
    LiveParams,
    error_message,
    live_message,
    metadata_message,
    parse_client_message,
    parse_live_query,
)
from compat.errors import GatewayError, InvalidRequest
from compat.wire import ParamPolicy
from gateway.ownership import own
from gateway.routes.deepgram_request import close_with, offered_subprotocol, query_of, request_id_of
from gateway.serving import serving_of
from gateway.serving.live import LiveOptions, LiveSession
from gateway.sockets import close_quietly

__all__ = ["HANDLERS"]

_encoder = msgspec.json.Encoder()


@websocket("/listen")
async def listen_live(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept(subprotocols=offered_subprotocol(socket))
    serving = serving_of(socket)
    session: LiveSession | None = None
    try:
        params = parse_live_query(query_of(socket), ParamPolicy(serving.config.server.unsupported_params))
        requested = params.model or serving.config.services.deepgram.listen_model
        session = own(socket, await serving.live.open(requested, _options(params)))
        await _LiveSocket(socket, session, params, requested).serve()
    except (GatewayError, DomainError) as e:
        await close_with(socket, e)
    except WebSocketDisconnect:
        pass
    finally:
        if session is not None:
            await session.aclose()  # the models are free before the client hears the close
        await close_quietly(socket, 1000)


def _options(params: LiveParams) -> LiveOptions:
    return LiveOptions(interim_results=params.interim_results, endpointing_ms=params.endpointing_ms,
                       utterance_end_ms=params.utterance_end_ms, vad_events=params.vad_events,
                       language=params.language, prompt=params.prompt, encoding=params.encoding,
                       sample_rate=params.sample_rate, channels=params.channels)


class _LiveSocket:
    """One live socket: client messages in, the session's events out as Deepgram's messages.

    Events are sent by a task of their own, so receiving audio never waits on a send.
    """

    def __init__(self, socket: WebSocket[Any, Any, Any], session: LiveSession, params: LiveParams,
                 requested: str) -> None:
        self._socket = socket
        self._session = session
        self._params = params
        self._request_id = request_id_of(socket)
        self._uuid = model_uuid(session.model)
        self._info = model_info(requested, session.model, session.engine)
        self._sha = hashlib.sha256()
        self._lock = asyncio.Lock()
        self._closed = False
        self._limits = serving_of(socket).config.server.audio

    async def serve(self) -> None:
        sender = asyncio.create_task(self._send_events())
        limit = self._limits.max_socket_seconds
        try:
            async with asyncio.timeout(limit):
                await self._receive(sender)
        except TimeoutError:
            await self._close(1008, f"The socket was open for the {limit:g} seconds one socket may last.")
        finally:
            sender.cancel()
            await asyncio.wait({sender})

    async def _receive(self, sender: asyncio.Task[None]) -> None:
        idle, most = self._limits.listen_idle_seconds, self._limits.max_frame_bytes
        while not self._closed:
            try:
                message = await asyncio.wait_for(self._socket.receive(), timeout=idle)
            except TimeoutError:
                await self._close(1011, f"NET-0001: no audio or KeepAlive received for {idle:g} seconds")
                return
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(detail="client went away", code=message.get("code", 1000))
            data: bytes | None = message.get("bytes")  # type: ignore[assignment]
            text: str | None = message.get("text")  # type: ignore[assignment]
            if len(data or text or "") > most:
                await self._close(1009, f"BIG-0000: a message of {len(data or text or '')} bytes; at most {most}.")
                return
            if data is not None:
                if not data:  # the legacy end-of-stream signal
                    await self._close_stream(sender)
                    return
                self._sha.update(data)
                await self._session.feed(data)
            elif text is not None and await self._command(text, sender):
                return

    async def _command(self, text: str, sender: asyncio.Task[None]) -> bool:
        """Act on a client's text message; True when the stream is over."""
        try:
            command = parse_client_message(text)
        except InvalidRequest as e:
            await self._send(error_message(e.message, text))
            return False
        if command.type == "Finalize":
            await self._session.finalize()
        elif command.type == "CloseStream":
            await self._close_stream(sender)
            return True
        elif command.type == "Configure":
            await self._send(error_message("Configure is not supported by this server.", text))
        return False

    async def _close_stream(self, sender: asyncio.Task[None]) -> None:
        """Every result, then ``Metadata``, then a normal close."""
        await self._session.finish()
        await asyncio.wait({sender})
        await self._send(metadata_message(
            request_id=self._request_id, sha256=self._sha.hexdigest(), created=iso_now(),
            duration=self._session.duration, model_uuid=self._uuid, model_info=self._info))
        await self._close(1000)

    async def _send_events(self) -> None:
        """The session's events as they come; an error among them closes the socket with its reason."""
        try:
            async for event in self._session:
                await self._send(live_message(event, self._params, request_id=self._request_id,
                                              model_uuid=self._uuid, model_info=self._info))
        except BadAudio as e:
            await self._close_for(e, prefix="DATA-0000: ")
        except (WebSocketDisconnect, OSError):
            pass  # the client went away: the reader sees it too
        except Exception as e:
            await self._close_for(e)

    async def _send(self, payload: Any) -> None:
        async with self._lock:
            if not self._closed:
                await self._socket.send_data(_encoder.encode(payload).decode(), mode="text")

    async def _close(self, code: int, reason: str = "") -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await close_quietly(self._socket, code, reason)

    async def _close_for(self, error: Exception, prefix: str = "") -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await close_with(self._socket, error, prefix=prefix)


HANDLERS: list[Any] = [listen_live]
