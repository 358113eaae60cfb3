"""The error hierarchy, as the gateway sees it (defined in :mod:`backends.errors`), and the mapping of
the web framework's own errors onto it, shared by every dialect."""

from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

from backends.errors import *  # noqa: F403
from backends.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from backends.errors import __all__ as _errors

__all__ = [*_errors, "from_http_exception"]


def from_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> GatewayError | None:
    """Litestar's 4xx (unknown route, wrong method, body too large, …) as a gateway error; None for 5xx."""
    status = exc.status_code
    if status == 404:
        return NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
    if status == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        return MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}.", allow=allow)
    if status == 413:
        return PayloadTooLarge("The request body is too large.")
    if 400 <= status < 500:
        error = InvalidRequest(str(exc.detail))
        error.status = status
        return error
    return None
