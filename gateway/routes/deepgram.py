"""The Deepgram dialect, mounted at the root as Deepgram's SDKs expect (some drop any path prefix).

``/v1/listen`` (REST and live WebSocket) and ``/v1/speak`` (REST and WebSocket). Errors come back in
Deepgram's shape, ``{"err_code", "err_msg", "request_id"}``, with a ``dg-request-id`` header on every
response.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response, Router
from litestar.exceptions import HTTPException

from backends.errors import DomainError
from compat.deepgram.common import error_body, new_request_id
from gateway.config import Config
from gateway.errors import DEEPGRAM_FIELDS, GatewayError, from_domain, from_http_exception
from gateway.routes.common import ClientGone

__all__ = ["deepgram_router", "query_of", "request_id_of"]

log = logging.getLogger("syn4pse.deepgram")
_encoder = msgspec.json.Encoder()


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """This request's Deepgram request id (made on first use, then kept for the whole request)."""
    rid: str | None = request.scope.get("state", {}).get("dg_request_id")
    if rid is None:
        rid = new_request_id()
        request.scope.setdefault("state", {})["dg_request_id"] = rid
    return rid


def query_of(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    """The query string as name → values (Deepgram repeats keys for lists)."""
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def render_error(request: Request[Any, Any, Any], error: GatewayError) -> Response[bytes]:
    rid = request_id_of(request)
    return Response(_encoder.encode(error_body(error, rid)), status_code=error.status,
                    media_type="application/json", headers={"dg-request-id": rid, **error.headers()})


def _on_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every error a route lets through, in Deepgram's envelope (domain errors named Deepgram's way)."""
    if isinstance(exc, ClientGone):
        return Response(b"", status_code=499)
    if isinstance(exc, GatewayError):
        return render_error(request, exc)
    if isinstance(exc, DomainError):
        return render_error(request, from_domain(exc, DEEPGRAM_FIELDS))
    if isinstance(exc, HTTPException) and (error := from_http_exception(request, exc)) is not None:
        return render_error(request, error)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(request, GatewayError("Internal Server Error: the server had an error processing your"
                                              " request."))


def deepgram_router(config: Config) -> Router:
    from gateway.routes import deepgram_listen, deepgram_live, deepgram_speak

    handlers: list[Any] = [*deepgram_listen.HANDLERS, *deepgram_live.HANDLERS, *deepgram_speak.HANDLERS]
    return Router(path="/v1", route_handlers=handlers,
                  exception_handlers={Exception: _on_exception},
                  request_max_body_size=config.server.max_audio_upload_bytes)
