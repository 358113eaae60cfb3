"""Server-Sent Events: ``data: <json>\\n\\n`` frames, OpenAI's ``[DONE]``, keep-alives and in-band errors.

Everything that can fail before the first byte fails before a stream starts, with a real status. What
fails later (the engine, a model whose load outlasted the wait) is sent as an error frame, the shape the
OpenAI SDK raises ``APIError`` for.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from litestar.response import Stream

from backends.errors import DomainError
from compat.errors import GatewayError, ServerFailure
from compat.openai.errors import error_body
from gateway.errors import as_wire

__all__ = ["DONE", "KEEPALIVE", "event", "guarded", "sse_events", "sse_response", "typed_events"]

log = logging.getLogger("syn4pse.sse")
_encoder = msgspec.json.Encoder()

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(payload: Any, name: str | None = None) -> bytes:
    """One SSE frame holding ``payload`` as JSON (a struct, dict or list)."""
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + _encoder.encode(payload) + b"\n\n"


async def sse_events(payloads: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """OpenAI's stream: a frame per payload (None: a keep-alive), then ``[DONE]``."""
    async for payload in payloads:
        yield KEEPALIVE if payload is None else event(payload)
    yield DONE


async def typed_events(payloads: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The Responses API's stream: each event framed under its ``type`` (None: a keep-alive), no ``[DONE]``."""
    async for payload in payloads:
        yield KEEPALIVE if payload is None else event(payload, payload["type"])


async def guarded(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass frames through; an error after the stream started becomes an in-band error frame."""
    try:
        async for frame in frames:
            yield frame
    except (GatewayError, DomainError) as e:
        log.warning("stream ended by %s: %s", type(e).__name__, e.message)
        yield event(error_body(as_wire(e)))
    except Exception:
        log.exception("stream failed")
        yield event(error_body(ServerFailure("The engine failed while generating.")))


def sse_response(frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> Stream:
    return Stream(guarded(frames), media_type="text/event-stream", headers={**HEADERS, **(headers or {})})
