"""``create_app(config)``: the Litestar application, its state and its error rendering.

No module-level globals: everything lives on ``app.state`` for the lifetime of the app, so a test
builds an app from a config instead of patching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from compat.openai.errors import encode_error
from gateway.auth import AuthMiddleware, presented_keys
from gateway.config import Config, CorsConfig
from gateway.errors import GatewayError, to_gateway_error
from gateway.guards import HostGuard, JsonBodyMiddleware
from gateway.limits import HeaderLimitMiddleware
from gateway.observability import Metrics, instrument
from gateway.openapi import openapi_json
from gateway.ownership import OwnershipMiddleware
from gateway.realtime_rtc import Calls
from gateway.realtime_secrets import ClientSecrets
from gateway.registry import Registry
from gateway.routes.admin import admin_router
from gateway.routes.audio import audio_router
from gateway.routes.common import DROPPED_HEADER, ClientGone
from gateway.routes.deepgram import deepgram_router, flux_router
from gateway.routes.openai import openai_router
from gateway.routes.playground import playground_router
from gateway.routes.realtime import realtime_router
from gateway.routes.responses import responses_router
from gateway.serving import Serving

__all__ = ["create_app"]

log = logging.getLogger("syn4pse.app")


def _render(error: GatewayError) -> Response[bytes]:
    return Response(encode_error(error), status_code=error.status, media_type="application/json",
                    headers=error.headers())


def _on_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every error a route lets through, in OpenAI's envelope: wire errors as they are, domain errors and
    Litestar's own (unknown route, wrong method, body too large) translated, anything else a bare 500."""
    if isinstance(exc, ClientGone):
        return Response(b"", status_code=499)
    error = to_gateway_error(request, exc)
    if error is not None:
        return _render(error)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = GatewayError("The server had an error while processing your request.")
    return Response(encode_error(error), status_code=HTTP_500_INTERNAL_SERVER_ERROR,
                    media_type="application/json")


@get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    """The process is up (no auth: for liveness probes)."""
    return {"status": "ok"}


@get("/ready", include_in_schema=False)
async def ready(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Ready to serve: every ``preload`` model is loaded, no model's local files are missing, and every
    loaded upstream model has a replica that takes requests. Open to probes, which carry no key: which
    models are not ready, and why, is told only to a caller with one (or on a server without keys)."""
    registry: Registry = request.app.state.registry
    config: Config = request.app.state.config
    problems = registry.unready()
    keys = {*config.server.api_keys, *config.server.admin_keys}
    told = not keys or any(k in keys for k in presented_keys(request.scope))  # type: ignore[arg-type]
    body: dict[str, Any] = {"status": "ready" if not problems else "not ready"}
    if told:
        body["models"] = problems
    return Response(msgspec.json.encode(body), status_code=200 if not problems else 503,
                    media_type="application/json")


def create_app(config: Config) -> Litestar:
    metrics = Metrics()  # before the registry: it reports loads and queues to it
    registry = Registry(config, observer=metrics)
    client_secrets = ClientSecrets()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.config = config
        app.state.registry = registry
        app.state.serving = serving = Serving(registry, config)
        app.state.started_at = time.time()
        app.state.client_secrets = client_secrets
        app.state.calls = calls = Calls()
        await registry.start()
        await serving.responses.start()
        grpc_server = None
        try:
            if config.server.grpc_port is not None:
                from gateway.oip.server import GrpcServer  # grpcio loads only when the endpoint is on

                grpc_server = GrpcServer(config, registry, serving, metrics)
                await grpc_server.start()
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await calls.close()
            await serving.responses.close()
            await registry.close()

    handlers: list[Any] = [health, ready, admin_router(), openapi_json, playground_router()]
    if config.services.openai.enabled:
        handlers.append(openai_router("/v1"))
        handlers.append(responses_router("/v1"))
        handlers.append(realtime_router("/v1"))
        handlers.append(audio_router("/v1", config.server.max_audio_upload_bytes))
    if config.services.groq.enabled:
        handlers.append(openai_router("/openai/v1", dialect="groq"))
        handlers.append(responses_router("/openai/v1", dialect="groq"))
        handlers.append(audio_router("/openai/v1", config.server.max_audio_upload_bytes, dialect="groq"))
    if config.services.deepgram.enabled:
        handlers.extend([deepgram_router(config), flux_router(config)])
    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        exception_handlers={Exception: _on_exception},
        request_max_body_size=config.server.max_json_bytes,
        middleware=[OwnershipMiddleware,
                    DefineMiddleware(cast(Any, HeaderLimitMiddleware), max_bytes=config.server.max_header_bytes),
                    DefineMiddleware(cast(Any, AuthMiddleware), keys=config.server.api_keys,
                                     admin_keys=config.server.admin_keys, client_secrets=client_secrets),
                    DefineMiddleware(cast(Any, JsonBodyMiddleware))],
        cors_config=_cors(config.server.cors),
        openapi_config=None,
        logging_config=None,  # the CLI configures logging from syn4pse.yaml (level, format)
        debug=False,
    )
    app.asgi_handler = cast(Any, HostGuard(cast(Any, app.asgi_handler), config.server))  # Host, WS Origin
    instrument(app, metrics)  # metrics, GET /metrics, request ids, access log: gateway/observability.py
    return app


def _cors(cors: CorsConfig | None) -> CORSConfig | None:
    if cors is None:
        return None
    return CORSConfig(allow_origins=cors.allow_origins, allow_methods=cors.allow_methods,  # type: ignore[arg-type]
                      allow_headers=cors.allow_headers, allow_credentials=cors.allow_credentials,
                      max_age=cors.max_age, expose_headers=["x-request-id", DROPPED_HEADER, "dg-request-id"])
