"""The Realtime API's WebSocket: ``/v1/realtime?model=…`` (``&intent=transcription`` for hearing only).

Browsers authenticate with the ``openai-insecure-api-key.<key>`` subprotocol beside ``realtime``, which
is echoed. Client events are read by one loop and handled in order; the session's events are sent by a
task of their own, so a slow reader never holds up listening. A bad event is answered with an ``error``
event naming it (its ``event_id`` too) and the socket stays open; a wrong model or a full server is an
``error`` event and a close (1008). A message over ``server.audio.max_frame_bytes`` is refused the same
way, and ``server.audio.max_socket_seconds`` ends any socket. Whatever ends the socket, the session
stops its work and gives its models back before the close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from litestar import Router, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from backends.errors import DomainError
from compat.errors import GatewayError, InvalidRequest
from compat.openai.realtime import error_event, parse_client_event
from gateway.errors import as_wire
from gateway.observability import meter_generation, set_request_model
from gateway.serving import serving_of
from gateway.serving.realtime import RealtimeSession
from gateway.sockets import close_quietly

__all__ = ["realtime_router"]

_encoder = msgspec.json.Encoder()
_SUBPROTOCOL = "realtime"


def _error(error: GatewayError | DomainError, event_id: str | None = None) -> dict[str, Any]:
    wire = as_wire(error)
    return error_event(wire.kind, wire.message, code=wire.code, param=wire.param, event_id=event_id)


@websocket("/realtime")
async def realtime_socket(socket: WebSocket[Any, Any, Any]) -> None:
    offered = [p.strip() for p in socket.scope.get("subprotocols") or ()]
    await socket.accept(subprotocols=_SUBPROTOCOL if _SUBPROTOCOL in offered else None)
    session: RealtimeSession | None = None
    try:
        session = _open(socket)
        session.start()
        await _serve(socket, session)
    except (GatewayError, DomainError) as e:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.send_text(_encoder.encode(_error(e)).decode())
        await close_quietly(socket, 1008, as_wire(e).message)
    except WebSocketDisconnect:
        pass
    finally:
        if session is not None:
            await session.aclose()
        await close_quietly(socket, 1000)


def _open(socket: WebSocket[Any, Any, Any]) -> RealtimeSession:
    """The session the query asks for: ``model``, and ``intent=transcription`` for one that only hears."""
    query = socket.query_params
    if query.get("call_id"):
        raise InvalidRequest("Joining a WebRTC call by 'call_id' is not available on this server.",
                             param="call_id", code="invalid_value")
    intent = query.get("intent")
    if intent not in (None, "", "transcription", "conversation"):
        raise InvalidRequest(f"Invalid 'intent': '{str(intent)[:32]}'; expected 'transcription'.", param="intent",
                             code="invalid_value")
    session = serving_of(socket).realtime.open(query.get("model") or None, transcription=intent == "transcription",
                                               meter=lambda: meter_generation(socket))
    set_request_model(socket, session.llm)
    return session


async def _serve(socket: WebSocket[Any, Any, Any], session: RealtimeSession) -> None:
    sender = asyncio.create_task(_send(socket, session))
    limit = serving_of(socket).config.server.audio.max_socket_seconds
    try:
        async with asyncio.timeout(limit):
            await _receive(socket, session)
    except TimeoutError:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.send_text(_encoder.encode(error_event(
                "invalid_request_error", f"The session reached the {limit:g} seconds one session may last.",
                code="session_expired")).decode())
        await close_quietly(socket, 1008, "session expired")
    finally:
        sender.cancel()
        await asyncio.wait({sender})


async def _receive(socket: WebSocket[Any, Any, Any], session: RealtimeSession) -> None:
    most = serving_of(socket).config.server.audio.max_frame_bytes
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text: str | None = message.get("text")  # type: ignore[assignment]
        data: str | bytes = text if text is not None else message.get("bytes") or b""  # type: ignore[assignment]
        if len(data) > most:
            session.emit(error_event("invalid_request_error", f"An event of {len(data)} bytes; this server takes"
                                     f" events of at most {most} bytes. Send audio in smaller appends.",
                                     code="event_too_large"))
            continue
        event_id = None
        try:
            event, event_id = parse_client_event(data)
            await session.handle(event)
        except (GatewayError, DomainError) as e:
            event_id = getattr(e, "event_id", event_id)
            session.emit(_error(e, event_id))


async def _send(socket: WebSocket[Any, Any, Any], session: RealtimeSession) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        while True:
            payload = await session.outbox.get()
            await socket.send_text(_encoder.encode(payload).decode())


def realtime_router(path: str = "/v1", dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[realtime_socket], opt={"dialect": dialect})
