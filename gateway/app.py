"""``create_app(config)``: the Litestar application, its state and its error rendering.

No module-level globals: everything lives on ``app.state`` for the lifetime of the app, so a test
builds an app from a config instead of patching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from backends.errors import GatewayError
from compat.openai.errors import encode_error
from gateway.config import Config
from gateway.errors import from_http_exception
from gateway.registry import Registry
from gateway.routes.audio import audio_router
from gateway.routes.common import ClientGone
from gateway.routes.deepgram import deepgram_router
from gateway.routes.openai import openai_router

__all__ = ["create_app"]

log = logging.getLogger("syn4pse.app")

MAX_JSON_BODY = 16 * 1024 * 1024


def _render(error: GatewayError) -> Response[bytes]:
    return Response(encode_error(error), status_code=error.status, media_type="application/json",
                    headers=error.headers())


def _on_gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return _render(exc)


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, body too large) in OpenAI's envelope."""
    error = from_http_exception(request, exc)
    return _render(error) if error is not None else _on_exception(request, exc)


def _on_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, ClientGone):
        return Response(b"", status_code=499)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatewayError("The server had an error while processing your request.")
    return Response(encode_error(error), status_code=HTTP_500_INTERNAL_SERVER_ERROR,
                    media_type="application/json")


@get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app(config: Config) -> Litestar:
    registry = Registry(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.config = config
        app.state.registry = registry
        app.state.started_at = time.time()
        try:
            yield
        finally:
            await registry.close()

    handlers: list[Any] = [health]
    if config.services.openai.enabled:
        handlers.append(openai_router("/v1"))
        handlers.append(audio_router("/v1", config.server.max_audio_upload_bytes))
    if config.services.groq.enabled:
        handlers.append(openai_router("/openai/v1", dialect="groq"))
        handlers.append(audio_router("/openai/v1", config.server.max_audio_upload_bytes, dialect="groq"))
    if config.services.deepgram.enabled:
        handlers.append(deepgram_router(config))
    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        exception_handlers={
            GatewayError: _on_gateway_error,
            HTTPException: _on_http_exception,
            Exception: _on_exception,
        },
        request_max_body_size=MAX_JSON_BODY,
        openapi_config=None,
        debug=False,
    )
