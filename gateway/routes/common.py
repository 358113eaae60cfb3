"""What every route needs: the app's state, the parameter policy, leases, disconnect handling."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
from litestar import Request, Response

from backends.base import VadBackend
from backends.types import ModelType, SpeechSpan
from compat.wire import ParamPolicy, decode_object
from gateway.config import Config
from gateway.registry import Lease, Registry

__all__ = [
    "DROPPED_HEADER",
    "ClientGone",
    "acquire_for_stream",
    "backend_as",
    "config_of",
    "dropped_headers",
    "json_response",
    "read_object",
    "registry_of",
    "release_when_done",
    "speech_spans",
    "unless_disconnected",
    "wait_with_keepalive",
]

log = logging.getLogger("syn4pse.routes")
T = TypeVar("T")

DROPPED_HEADER = "x-syn4pse-dropped-params"
STREAM_LOAD_WAIT = 2.0
"""Seconds a streaming request waits for its model before the stream opens with keep-alives."""
KEEPALIVE_EVERY = 5.0

_encoder = msgspec.json.Encoder()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def backend_as(lease: Lease, protocol: type[Any]) -> Any:
    """The leased backend, checked to serve ``protocol`` (the registry already checked the model type)."""
    backend = lease.backend
    assert isinstance(backend, protocol)
    return backend


def registry_of(request: Request[Any, Any, Any]) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def config_of(request: Request[Any, Any, Any]) -> Config:
    config: Config = request.app.state.config
    return config


async def read_object(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], ParamPolicy]:
    """The JSON body, and a fresh parameter policy for this request."""
    server = config_of(request).server
    raw = decode_object(await request.body(), server.max_json_depth)
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


async def acquire_for_stream(registry: Registry, name: str, model_type: ModelType) -> Lease | asyncio.Task[Lease]:
    """The lease, if the model is ready soon; else the pending load, for the stream to await.

    Admission (the model's bounded queue) always completes first, so a full queue is a real 429,
    never a stream that ends in an error. A model that is loaded (or loads within
    :data:`STREAM_LOAD_WAIT`) fails with a real status code too; one still downloading or loading
    after that opens the stream and keeps it alive meanwhile.
    """
    admission = await registry.admit(name, model_type)
    task = asyncio.ensure_future(admission.load())
    done, _ = await asyncio.wait({task}, timeout=STREAM_LOAD_WAIT)
    if done:
        return task.result()
    return task


async def wait_with_keepalive(task: asyncio.Task[Lease], keepalive: bytes) -> AsyncIterator[bytes]:
    """Yield ``keepalive`` every few seconds until the pending lease is ready."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_EVERY)
        if done:
            return
        yield keepalive


def release_when_done(pending: Lease | asyncio.Task[Lease] | None) -> None:
    """Release a lease now, or as soon as a still-pending acquisition completes."""
    if pending is None:
        return
    if isinstance(pending, Lease):
        pending.release()
        return

    def release(task: asyncio.Task[Lease]) -> None:
        if not task.cancelled() and task.exception() is None:
            task.result().release()

    if pending.done():
        release(pending)
    else:
        pending.add_done_callback(release)


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


async def speech_spans(registry: Registry, stt_model: str,
                       audio: npt.NDArray[np.float32]) -> tuple[SpeechSpan, ...] | None:
    """Where the model's VAD (if it names one) hears speech: whisper invents words in silence."""
    vad_name = registry.model_config(stt_model).vad
    if vad_name is None:
        return None
    async with registry.lease(vad_name, ModelType.VAD) as held:
        vad: VadBackend = backend_as(held, VadBackend)
        return tuple(await vad.speech(audio))
