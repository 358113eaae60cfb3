"""What Deepgram's live sockets share (``/v1/listen`` and Flux's ``/v2/listen``): audio in, events out.

Client messages are read by one loop: binary frames are audio for the session, text frames go to the
dialect's :meth:`LiveSocket.command`. The session's events are sent by a task of their own, as the
dialect's messages (:meth:`LiveSocket.messages`), so receiving audio never waits on a send. The same
limits hold on both (``server.audio``): a message over ``max_frame_bytes`` closes the socket with 1009,
``max_socket_seconds`` ends any socket (1008), no message for ``idle`` seconds, with no result still
being made for the audio already sent, closes it (1011, NET-0001), and audio that cannot be read closes it
with 1008 and ``DATA-0000``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from backends.audio_answers import LiveEvent
from backends.errors import BadAudio, DomainError
from compat.errors import GatewayError
from gateway.routes.deepgram_request import close_with, offered_subprotocol, request_id_of
from gateway.serving import Serving, serving_of
from gateway.serving.live import LiveSession
from gateway.sockets import close_quietly

__all__ = ["LiveSocket", "serve_live"]

_encoder = msgspec.json.Encoder()


class LiveSocket:
    """One live socket; a dialect says what its text messages do and what each event is sent as."""

    def __init__(self, socket: WebSocket[Any, Any, Any], session: LiveSession, *, idle: float,
                 idle_reason: str = "no audio or KeepAlive received") -> None:
        self.socket = socket
        self.session = session
        self.request_id = request_id_of(socket)
        self.sha = hashlib.sha256()
        """Of the audio received."""
        self._idle = idle
        self._idle_reason = idle_reason
        self._lock = asyncio.Lock()
        self._closed = False
        self._limits = serving_of(socket).config.server.audio
        self._sender: asyncio.Task[None] | None = None

    # -- the dialect ----------------------------------------------------------------------------------

    def messages(self, event: LiveEvent) -> list[Any]:
        """What the client is sent for ``event``."""
        raise NotImplementedError

    async def command(self, text: str) -> bool:
        """Act on a client's text message; True when the stream is over."""
        raise NotImplementedError

    async def last_words(self) -> None:
        """Sent once every result is out, after the client ended the stream, before the close."""

    # -- the loop -------------------------------------------------------------------------------------

    async def serve(self) -> None:
        self._sender = asyncio.create_task(self._send_events())
        limit = self._limits.max_socket_seconds
        try:
            async with asyncio.timeout(limit):
                await self._receive()
        except TimeoutError:
            await self.close(1008, f"The socket was open for the {limit:g} seconds one socket may last.")
        finally:
            self._sender.cancel()
            await asyncio.wait({self._sender})

    async def _receive(self) -> None:
        most = self._limits.max_frame_bytes
        while not self._closed:
            try:
                message = await asyncio.wait_for(self.socket.receive(), timeout=self._idle)
            except TimeoutError:
                if self.session.owes_results:
                    continue  # idle is a client gone quiet with nothing still coming its way
                await self.close(1011, f"NET-0001: {self._idle_reason} for {self._idle:g} seconds")
                return
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(detail="client went away", code=message.get("code", 1000))
            data: bytes | None = message.get("bytes")  # type: ignore[assignment]
            text: str | None = message.get("text")  # type: ignore[assignment]
            if len(data or text or "") > most:
                await self.close(1009, f"BIG-0000: a message of {len(data or text or '')} bytes; at most {most}.")
                return
            if data is not None:
                if not data:  # the legacy end-of-stream signal
                    await self.close_stream()
                    return
                self.sha.update(data)
                await self.session.feed(data)
            elif text is not None and await self.command(text):
                return

    async def close_stream(self) -> None:
        """Every result, then the dialect's last words, then a normal close."""
        await self.session.finish()
        if self._sender is not None:
            await asyncio.wait({self._sender})
        await self.last_words()
        await self.close(1000)

    async def _send_events(self) -> None:
        """The session's events as they come; an error among them closes the socket with its reason."""
        try:
            async for event in self.session:
                async with self._lock:  # made and sent in one go: a dialect may number its messages
                    for payload in self.messages(event):
                        await self._send_now(payload)
        except BadAudio as e:
            await self._close_for(e, prefix="DATA-0000: ")
        except (WebSocketDisconnect, OSError):
            pass  # the client went away: the reader sees it too
        except Exception as e:
            await self._close_for(e)

    async def send(self, payload: Any) -> Any:
        """Send ``payload``, or what a callable ``payload`` makes, made while no other message goes out;
        returns what was sent."""
        async with self._lock:
            made = payload() if callable(payload) else payload
            await self._send_now(made)
            return made

    async def _send_now(self, payload: Any) -> None:
        if not self._closed:
            await self.socket.send_data(_encoder.encode(payload).decode(), mode="text")

    async def close(self, code: int, reason: str = "") -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await close_quietly(self.socket, code, reason)

    async def _close_for(self, error: Exception, prefix: str = "") -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                await close_with(self.socket, error, prefix=prefix)


async def serve_live(socket: WebSocket[Any, Any, Any], start: Callable[[Serving], Awaitable[LiveSocket]]) -> None:
    """Accept ``socket``, have ``start`` read its query and open its session, and serve it to the end.

    A bad query or model is a close with the reason; the session's models are given back before the
    client hears the close, however the socket ended.
    """
    await socket.accept(subprotocols=offered_subprotocol(socket))
    live: LiveSocket | None = None
    try:
        live = await start(serving_of(socket))
        await live.serve()
    except (GatewayError, DomainError) as e:
        await close_with(socket, e)
    except WebSocketDisconnect:
        pass
    finally:
        if live is not None:
            await live.session.aclose()
        await close_quietly(socket, 1000)
