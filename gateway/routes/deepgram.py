"""The Deepgram dialect, mounted at the root as Deepgram's SDKs expect (some drop any path prefix).

``/v1/listen`` (REST and live WebSocket), ``/v1/speak`` (REST and WebSocket) and Flux's conversational
``/v2/listen`` (WebSocket). Errors come back in
Deepgram's shape, ``{"err_code", "err_msg", "request_id"}``, with a ``dg-request-id`` header on every
response (:mod:`gateway.routes.deepgram_request`).
"""

from __future__ import annotations

from typing import Any

from litestar import Router

from gateway.config import Config
from gateway.routes import deepgram_flux, deepgram_listen, deepgram_live, deepgram_speak
from gateway.routes.deepgram_request import on_exception

__all__ = ["deepgram_router", "flux_router"]


def deepgram_router(config: Config) -> Router:
    handlers: list[Any] = [*deepgram_listen.HANDLERS, *deepgram_live.HANDLERS, *deepgram_speak.HANDLERS]
    return Router(path="/v1", route_handlers=handlers, exception_handlers={Exception: on_exception},
                  request_max_body_size=config.server.max_audio_upload_bytes)


def flux_router(config: Config) -> Router:
    return Router(path="/v2", route_handlers=deepgram_flux.HANDLERS, exception_handlers={Exception: on_exception})
