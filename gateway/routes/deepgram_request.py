"""What every Deepgram route reads of its request and how it answers an error.

The request id (one per request, in ``dg-request-id`` and every error body), the query string as
Deepgram's SDKs send it (keys repeated for lists), the WebSocket auth subprotocol to echo, and errors in
Deepgram's envelope ``{"err_code", "err_msg", "request_id"}`` — as a response, or as a WebSocket close.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response, WebSocket
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException

from backends.errors import DomainError
from compat.deepgram.common import auth_subprotocol, error_body, new_request_id
from gateway.errors import DEEPGRAM_FIELDS, GatewayError, ServerFailure, as_wire, from_http_exception
from gateway.routes.common import ClientGone
from gateway.sockets import close_quietly

__all__ = ["close_with", "offered_subprotocol", "on_exception", "query_of", "render_error", "request_id_of",
           "wire_error"]

log = logging.getLogger("syn4pse.deepgram")
_encoder = msgspec.json.Encoder()


def request_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """This request's Deepgram request id (made on first use, then kept for the whole request)."""
    state = connection.scope.setdefault("state", {})
    rid: str | None = state.get("dg_request_id")
    if rid is None:
        rid = state["dg_request_id"] = new_request_id()
    return rid


def query_of(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, list[str]]:
    """The query string as name → values (Deepgram repeats keys for lists)."""
    query: dict[str, list[str]] = {}
    for key, value in connection.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def offered_subprotocol(socket: WebSocket[Any, Any, Any]) -> str | None:
    """The auth subprotocol to accept the socket with, as the client offered it (browsers need the echo)."""
    return auth_subprotocol(socket.scope.get("subprotocols") or ())


def wire_error(error: GatewayError | DomainError) -> GatewayError:
    """A domain error named in Deepgram's terms (its words for unreadable audio); a wire error as it is."""
    return as_wire(error, DEEPGRAM_FIELDS)


async def close_with(socket: WebSocket[Any, Any, Any], error: GatewayError | DomainError | Exception, *,
                     prefix: str = "", enveloped: bool = False) -> None:
    """Close the socket for ``error``: 1008 when the client is at fault, 1011 when the server is.

    The reason is the error's message (after ``prefix``), or with ``enveloped`` the ``err_msg`` of
    Deepgram's error body. Anything but a gateway or domain error is logged and closed without details.
    """
    if isinstance(error, GatewayError | DomainError):
        wire = wire_error(error)
    else:
        log.error("%s: unexpected error", socket.url.path, exc_info=error)
        wire = ServerFailure("Internal Server Error: the server had an error processing your request.")
    message = error_body(wire, request_id_of(socket)).err_msg if enveloped else wire.message
    await close_quietly(socket, 1008 if wire.status < 500 else 1011, prefix + message)


def render_error(request: Request[Any, Any, Any], error: GatewayError) -> Response[bytes]:
    rid = request_id_of(request)
    return Response(_encoder.encode(error_body(error, rid)), status_code=error.status,
                    media_type="application/json", headers={"dg-request-id": rid, **error.headers()})


def on_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every error a route lets through, in Deepgram's envelope (domain errors named Deepgram's way)."""
    if isinstance(exc, ClientGone):
        return Response(b"", status_code=499)
    if isinstance(exc, GatewayError | DomainError):
        return render_error(request, wire_error(exc))
    if isinstance(exc, HTTPException) and (error := from_http_exception(request, exc)) is not None:
        return render_error(request, error)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(request, GatewayError("Internal Server Error: the server had an error processing your"
                                              " request."))
