"""Request limits enforced before any handler runs: the size of the request head."""

from __future__ import annotations

from compat.errors import GatewayError
from compat.openai.errors import encode_error
from gateway.auth import ASGIApp, Receive, Scope, Send

__all__ = ["HeaderLimitMiddleware"]


class HeadersTooLarge(GatewayError):
    status = 431
    kind = "invalid_request_error"
    default_code = "headers_too_large"


class HeaderLimitMiddleware:
    """Refuse requests whose headers add up to more than ``max_bytes`` (431), WebSockets included."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
            if size > self._max:
                body = encode_error(HeadersTooLarge(f"The request headers are {size} bytes; at most {self._max}."))
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009, "reason": "headers too large"})
                    return
                await send({"type": "http.response.start", "status": 431, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)
