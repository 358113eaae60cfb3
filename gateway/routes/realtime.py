"""The Realtime API: the WebSocket ``/v1/realtime?model=…`` (``&intent=transcription`` for hearing only,
``?call_id=…`` to join a WebRTC call), WebRTC calls (``POST /v1/realtime/calls``, :mod:`gateway.realtime_rtc`)
and client secrets (``POST /v1/realtime/client_secrets``, :mod:`gateway.realtime_secrets`).

Browsers authenticate with the ``openai-insecure-api-key.<key>`` subprotocol beside ``realtime``, which
is echoed. Client events are read by one loop and handled in order; the session's events are sent by a
task of their own, so a slow reader never holds up listening. A bad event is answered with an ``error``
event naming it (its ``event_id`` too) and the socket stays open; a wrong model or a full server is an
``error`` event and a close (1008). A message over ``server.audio.max_frame_bytes`` is refused the same
way, and ``server.audio.max_socket_seconds`` ends any socket; a client that leaves thousands of events
unread is closed (1008) rather than buffered for. Whatever ends the socket, the session
stops its work and gives its models back before the close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import msgspec
from litestar import Request, Response, Router, WebSocket, post, websocket
from litestar.connection import ASGIConnection
from litestar.datastructures import UploadFile
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from backends.errors import DomainError
from compat.errors import GatewayError, InvalidRequest
from compat.openai.realtime import error_event, parse_client_event, parse_client_secret_request
from gateway.auth import owner_of, presented_keys
from gateway.errors import as_wire
from gateway.observability import meter_generation, set_request_model
from gateway.realtime_rtc import Calls
from gateway.realtime_secrets import ClientSecrets, Secret
from gateway.routes.common import config_of, decode_json, json_response, read_object
from gateway.serving import serving_of
from gateway.serving.realtime import RealtimeSession
from gateway.serving.realtime_reply import error_for
from gateway.sockets import close_quietly

__all__ = ["realtime_router"]

_encoder = msgspec.json.Encoder()
_SUBPROTOCOL = "realtime"


@websocket("/realtime")
async def realtime_socket(socket: WebSocket[Any, Any, Any]) -> None:
    offered = [p.strip() for p in socket.scope.get("subprotocols") or ()]
    await socket.accept(subprotocols=_SUBPROTOCOL if _SUBPROTOCOL in offered else None)
    session: RealtimeSession | None = None
    try:
        if socket.query_params.get("call_id"):
            await _join(socket, socket.query_params["call_id"])
            return
        session = _open(socket)
        await _configure(socket, session, None)
        session.start()
        await _serve(socket, session, session.outbox)
    except (GatewayError, DomainError) as e:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.send_text(_encoder.encode(error_for(e, "open the session")).decode())
        await close_quietly(socket, 1008, as_wire(e).message)
    except WebSocketDisconnect:
        pass
    finally:
        if session is not None:
            await session.aclose()
        await close_quietly(socket, 1000)


async def _join(socket: WebSocket[Any, Any, Any], call_id: str) -> None:
    """A WebSocket beside a WebRTC call: the call's events, and events for its session (the call owns it)."""
    calls: Calls = socket.app.state.calls
    call = calls.get(call_id)
    events = call.listen()
    try:
        await _serve(socket, call.session, events)
    finally:
        call.unlisten(events)


def _open(connection: ASGIConnection[Any, Any, Any, Any], model: str | None = None,
          intent: str | None = None) -> RealtimeSession:
    """The session asked for: ``model``, and ``intent=transcription`` for one that only hears (from the
    query, the call's settings, or the client secret's)."""
    query = connection.query_params
    intent = intent or query.get("intent")
    if intent not in (None, "", "transcription", "conversation", "realtime"):
        raise InvalidRequest(f"Invalid 'intent': '{str(intent)[:32]}'; expected 'transcription'.", param="intent",
                             code="invalid_value")
    secret = _secret(connection)
    if secret is not None and secret.session is not None:
        model = model or secret.session.get("model")
        intent = intent or ("transcription" if secret.session.get("type") == "transcription" else None)
    session = serving_of(connection).realtime.open(model or query.get("model") or None,
                                                   transcription=intent == "transcription",
                                                   meter=lambda: meter_generation(connection))
    set_request_model(connection, session.llm)
    return session


def _secret(connection: ASGIConnection[Any, Any, Any, Any]) -> Secret | None:
    secrets: ClientSecrets = connection.app.state.client_secrets
    return secrets.find(presented_keys(cast(Any, connection.scope)))


async def _configure(connection: ASGIConnection[Any, Any, Any, Any], session: RealtimeSession,
                     given: dict[str, Any] | None) -> None:
    """The settings a client secret was issued with, then those the call was made with."""
    secret = _secret(connection)
    for raw in (secret.session if secret is not None else None, given):
        if raw:
            await session.configure({k: v for k, v in raw.items() if k != "model"})


async def _serve(socket: WebSocket[Any, Any, Any], session: RealtimeSession,
                 events: asyncio.Queue[dict[str, Any]] | asyncio.Queue[dict[str, Any] | None]) -> None:
    sender = asyncio.create_task(_send(socket, events))
    limit = serving_of(socket).config.server.audio.max_socket_seconds
    try:
        async with asyncio.timeout(limit):
            await _receive_unless_stalled(socket, session)
    except TimeoutError:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await socket.send_text(_encoder.encode(error_event(
                "invalid_request_error", f"The session reached the {limit:g} seconds one session may last.",
                code="session_expired")).decode())
        await close_quietly(socket, 1008, "session expired")
    finally:
        sender.cancel()
        await asyncio.wait({sender})


async def _receive_unless_stalled(socket: WebSocket[Any, Any, Any], session: RealtimeSession) -> None:
    """Read the client's events until it goes, or leaves so many of the session's unread that it is closed."""
    receiver = asyncio.create_task(_receive(socket, session))
    stalled = asyncio.create_task(session.stalled.wait())
    try:
        await asyncio.wait({receiver, stalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (receiver, stalled):
            task.cancel()
        ended = await asyncio.gather(receiver, stalled, return_exceptions=True)
    if session.stalled.is_set():
        await close_quietly(socket, 1008, "the client left too many events unread")
    elif isinstance(ended[0], Exception):
        raise ended[0]


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
            session.emit(error_for(e, "answer the event", event_id))


async def _send(socket: WebSocket[Any, Any, Any],
                events: asyncio.Queue[dict[str, Any]] | asyncio.Queue[dict[str, Any] | None]) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        while (payload := await events.get()) is not None:
            await socket.send_text(_encoder.encode(payload).decode())
        await close_quietly(socket, 1000, "the call has ended")


# -- WebRTC and client secrets ----------------------------------------------------------------------------


@post("/realtime/calls", status_code=201)
async def create_call(request: Request[Any, Any, Any]) -> Response[bytes]:
    """An SDP offer (``application/sdp``, or a multipart form of ``sdp`` and ``session``) → the answer."""
    offer, given = await _offer(request)
    session = _open(request, model=(given or {}).get("model"),
                    intent="transcription" if (given or {}).get("type") == "transcription" else None)
    try:
        await _configure(request, session, given)
        calls: Calls = request.app.state.calls
        call, answer = await calls.open(session, offer)
    except BaseException:
        await session.aclose()
        raise
    session.start()
    return Response(answer.encode(), status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call.id}"})


async def _offer(request: Request[Any, Any, Any]) -> tuple[str, dict[str, Any] | None]:
    media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form()
        sdp, raw = form.get("sdp"), form.get("session")
        sdp = (await sdp.read()).decode(errors="replace") if isinstance(sdp, UploadFile) else sdp
        raw = (await raw.read()).decode(errors="replace") if isinstance(raw, UploadFile) else raw
        session = decode_json(config_of(request).server, raw.encode()) if raw else None
    else:
        sdp, session = (await request.body()).decode(errors="replace"), None
    if not isinstance(sdp, str) or not sdp.strip().startswith("v="):
        raise InvalidRequest("The body must be an SDP offer (application/sdp), or a multipart form with its 'sdp'.",
                             param="sdp", code="invalid_offer")
    return sdp, session


@post("/realtime/calls/{call_id:str}/hangup", status_code=200)
async def hang_up(request: Request[Any, Any, Any], call_id: FromPath[str]) -> Response[bytes]:
    calls: Calls = request.app.state.calls
    await calls.hang_up(call_id)
    return Response(b"", status_code=200)


@post("/realtime/client_secrets", status_code=200)
async def create_client_secret(request: Request[Any, Any, Any]) -> Response[bytes]:
    """A short-lived key for a browser: it opens realtime sessions with these settings, and nothing else."""
    raw, _ = await read_object(request)
    body = parse_client_secret_request(raw)
    shown = serving_of(request).realtime.settings_for(body.session)  # refused now, not when a browser uses it
    secrets: ClientSecrets = request.app.state.client_secrets
    secret = secrets.issue(body.session, body.seconds, owner_of(request.scope))
    return json_response({"value": secret.value, "expires_at": secret.expires_at, "session": shown})


def realtime_router(path: str = "/v1", dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[realtime_socket, create_call, hang_up, create_client_secret],
                  opt={"dialect": dialect})
