"""Whatever a request opened is closed when the request ends, however it ends.

Routes hand each stream they return to :func:`own`; :class:`OwnershipMiddleware`, outside every route,
closes the request's streams after the response is sent, or failed, or was cancelled. A stream that
already finished closes again for nothing (``aclose`` is idempotent).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, TypeVar

from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["OwnershipMiddleware", "own"]

log = logging.getLogger("syn4pse.ownership")
_KEY = "syn4pse.owned"


class Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Closable)


def own(connection: ASGIConnection[Any, Any, Any, Any], stream: C) -> C:
    """Make ``stream`` the request's: it is closed when the request ends, at the latest."""
    connection.scope.setdefault("state", {}).setdefault(_KEY, []).append(stream)
    return stream


class OwnershipMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            state: dict[str, Any] = scope.setdefault("state", {})
            for stream in reversed(state.pop(_KEY, [])):
                try:
                    await stream.aclose()
                except Exception:
                    log.exception("closing a request's stream failed")
