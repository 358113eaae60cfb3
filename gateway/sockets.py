"""What every WebSocket route shares: a close reason that fits its frame, and a close that cannot fail.

A close frame carries at most 125 bytes: the 2-byte code and a reason of up to 123 bytes of UTF-8. A
longer reason makes the server's close itself fail, so the client sees an abnormal closure and none of
the words; reasons are cut to fit, on a character boundary.
"""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

__all__ = ["CLOSE_REASON_BYTES", "close_quietly", "close_reason"]

CLOSE_REASON_BYTES = 123


def close_reason(message: str) -> str:
    """``message`` cut to :data:`CLOSE_REASON_BYTES` bytes of UTF-8, never inside a character."""
    return message.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")


async def close_quietly(socket: WebSocket[Any, Any, Any], code: int, reason: str = "") -> None:
    """Close with ``code`` and ``reason``; a client already gone (or a socket already closed) is no error."""
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await socket.close(code=code, reason=close_reason(reason))
