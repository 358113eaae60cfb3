"""The errors a client sees: an HTTP status, OpenAI's ``type``, the ``param`` at fault and a ``code``.

Compat raises them for a malformed field, the gateway for an unknown route or a full queue; backends
never do (they raise the domain errors of :mod:`backends.errors`, which ``gateway.errors`` translates
into these in one place). Each dialect renders them in its own envelope.

    GatewayError                      500  anything unexpected, rendered without details
    ├── InvalidRequest                400  a field is malformed or out of range (param names it)
    │   └── UnsupportedParameter      400  a real field this server does not implement
    ├── AuthenticationFailed          401
    ├── NotFound                      404  an unknown route or resource
    │   └── ModelNotFound             404  an unknown model name (never a silent fallback)
    ├── MethodNotAllowed              405
    ├── PayloadTooLarge               413
    ├── Busy                          429  the model's queue is full (retry_after seconds)
    ├── ModelUnavailable              503  the model could not be fetched or loaded
    ├── ServerFailure                 500  the engine failed while working on a request
    └── BadGateway                    502  no upstream endpoint answered (x-should-retry: true)
        └── GatewayTimeout            504  ... in time
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BadGateway",
    "Busy",
    "GatewayError",
    "GatewayTimeout",
    "HostNotAllowed",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "ModelUnavailable",
    "NotFound",
    "NotJson",
    "OriginNotAllowed",
    "PayloadTooLarge",
    "ServerFailure",
    "UnsupportedParameter",
]


class GatewayError(Exception):
    """Base of every error a client may see. ``message`` is safe to show: no paths, no traces."""

    status: int = 500
    kind: str = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def headers(self) -> dict[str, str]:
        """Extra response headers this error calls for."""
        return {}


class InvalidRequest(GatewayError):
    status = 400
    kind = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    default_code = "unsupported_parameter"

    def __init__(self, param: str, reason: str | None = None) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"Unsupported parameter: '{param}' is not supported by this server{detail}.",
                         param=param)


class AuthenticationFailed(GatewayError):
    status = 401
    kind = "invalid_request_error"  # what OpenAI sends for a bad key
    default_code = "invalid_api_key"


class HostNotAllowed(GatewayError):
    """The request's ``Host`` is not a name this server answers to (DNS rebinding)."""

    status = 421
    kind = "invalid_request_error"
    default_code = "host_not_allowed"


class OriginNotAllowed(GatewayError):
    """A browser page of a foreign origin opened a WebSocket."""

    status = 403
    kind = "invalid_request_error"
    default_code = "origin_not_allowed"


class NotJson(GatewayError):
    """A JSON route got a body of another media type."""

    status = 415
    kind = "invalid_request_error"
    default_code = "unsupported_media_type"


class NotFound(GatewayError):
    status = 404
    kind = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"

    def __init__(self, name: str, param: str = "model") -> None:
        super().__init__(f"The model '{name}' does not exist or is not served here.", param=param)
        self.name = name


class MethodNotAllowed(GatewayError):
    status = 405
    kind = "invalid_request_error"
    default_code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow} if self.allow else {}


class PayloadTooLarge(GatewayError):
    status = 413
    kind = "invalid_request_error"
    default_code = "payload_too_large"


class Busy(GatewayError):
    status = 429
    kind = "rate_limit_error"
    default_code = "server_busy"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class ModelUnavailable(GatewayError):
    """The model exists in the config but cannot serve: download or load failed.

    Retrying the same request at once will fail the same way, so clients are told not to retry.
    """

    status = 503
    kind = "server_error"
    default_code = "model_unavailable"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


class ServerFailure(GatewayError):
    status = 500
    kind = "server_error"
    default_code = "engine_failure"


class BadGateway(GatewayError):
    """The engine behind an ``upstream`` model failed (5xx, a broken connection): another try may reach a
    replica that works, so clients are told to retry."""

    status = 502
    kind = "server_error"
    default_code = "upstream_error"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "true"}


class GatewayTimeout(BadGateway):
    status = 504
    default_code = "upstream_timeout"
