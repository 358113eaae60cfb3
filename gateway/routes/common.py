"""What every route needs: the app's state, the dialect, the parameter policy, disconnect handling."""

from __future__ import annotations

import asyncio
import functools
import logging
import urllib.parse
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from compat.groq import Groq
from compat.openai.dialect import OpenAI
from compat.wire import ParamPolicy, decode_object
from gateway.config import Config, ServerConfig
from gateway.registry import Registry

__all__ = [
    "DROPPED_HEADER",
    "ClientGone",
    "config_of",
    "decode_json",
    "dialect_of",
    "dropped_headers",
    "is_groq",
    "json_response",
    "read_object",
    "registry_of",
    "unless_disconnected",
]

log = logging.getLogger("syn4pse.routes")
T = TypeVar("T")

DROPPED_HEADER = "x-syn4pse-dropped-params"

_encoder = msgspec.json.Encoder()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def is_groq(request: Request[Any, Any, Any]) -> bool:
    """Whether the request came in under Groq's ``/openai/v1`` (same routes, Groq's extras)."""
    return bool(request.route_handler.opt.get("dialect") == "groq")


def dialect_of(request: Request[Any, Any, Any]) -> OpenAI:
    """The dialect this request's answers are encoded in (Groq's extras under ``/openai/v1``)."""
    return Groq() if is_groq(request) else OpenAI()


def registry_of(request: Request[Any, Any, Any]) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def config_of(request: Request[Any, Any, Any]) -> Config:
    config: Config = request.app.state.config
    return config


INLINE_JSON_BYTES = 256 * 1024
"""Bodies up to this size are decoded on the event loop: a thread's hand-over would cost more."""


def decode_json(server: ServerConfig, body: bytes) -> dict[str, Any]:
    """A JSON object, held to the server's bounds on its depth, items and members."""
    return decode_object(body, server.max_json_depth, server.max_json_items, server.max_json_members)


async def read_object(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], ParamPolicy]:
    """The JSON body, and a fresh parameter policy for this request."""
    server = config_of(request).server
    body = await request.body()
    decode = functools.partial(decode_json, server, body)
    if len(body) <= INLINE_JSON_BYTES:
        raw = decode()
    else:  # its walk for depth runs off the loop (the decoding itself holds the GIL wherever it runs)
        raw = await asyncio.to_thread(decode)
    return raw, ParamPolicy(server.unsupported_params)


def dropped_headers(request: Request[Any, Any, Any], policy: ParamPolicy) -> dict[str, str]:
    if not policy.dropped:
        return {}
    log.warning("%s %s: dropped unsupported parameters: %s", request.method, request.url.path,
                ", ".join(policy.dropped))
    return {DROPPED_HEADER: ", ".join(header_safe(name) for name in policy.dropped)}


def header_safe(name: str) -> str:
    """A client-chosen name as header text: printable ASCII stays as it is; anything else (non-ASCII,
    control characters, the list's own comma, ``%``) is percent-encoded as UTF-8, so no name can break
    the response (a header must be Latin-1 without line breaks) or forge another list entry."""
    return urllib.parse.quote(name, safe="!#$&'()*+-./:;<=>?@[]^_`{|}~")


def json_response(payload: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), media_type="application/json", status_code=status,
                    headers=headers)


async def unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client goes away first (the body must be read already)."""
    job = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job in done:
        return job.result()
    job.cancel()
    # A cancelled gather() ends with CancelledError as its exception: take it, or asyncio logs it as an error.
    job.add_done_callback(lambda f: f.cancelled() or f.exception())
    raise ClientGone
