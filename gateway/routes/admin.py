"""Operator routes: the models with their state, and loading, unloading and pulling them by hand.

Same auth as every other route. Errors come in OpenAI's envelope.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.params import FromPath

from compat.errors import GatewayError
from gateway.routes.common import json_response, registry_of

__all__ = ["admin_router"]


class InUse(GatewayError):
    status = 409
    kind = "invalid_request_error"
    default_code = "model_in_use"


@get("/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    return json_response({"object": "list", "data": registry_of(request).describe()})


def _one(request: Request[Any, Any, Any], name: str) -> dict[str, Any]:
    registry = registry_of(request)
    canonical = registry.resolve(name)
    return next(m for m in registry.describe() if m["id"] == canonical)


@post("/models/{name:str}/load", status_code=200)
async def load_model(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    await registry_of(request).load(name)
    return json_response(_one(request, name))


@post("/models/{name:str}/unload", status_code=200)
async def unload_model(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    if not await registry_of(request).unload(name):
        raise InUse(f"The model '{name}' is serving requests; it unloads when they are done.", param="name")
    return json_response(_one(request, name))


@post("/models/{name:str}/pull", status_code=202)
async def pull_model(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    """Start the download; the listing shows its progress (202), or there is nothing to fetch (200)."""
    task = registry_of(request).pull(name)
    return json_response(_one(request, name), status=202 if task is not None and not task.done() else 200)


def admin_router() -> Router:
    return Router(path="/admin", route_handlers=[list_models, load_model, unload_model, pull_model])
