"""Wire errors as gRPC status codes: the same refusal a client gets over HTTP, in gRPC's terms.

An error's message is safe to show (``compat.errors``); an unexpected one is INTERNAL with no details.
A full queue is RESOURCE_EXHAUSTED with the wait in ``retry-after`` trailing metadata.
"""

from __future__ import annotations

import math

import grpc

from compat.errors import Busy, GatewayError

__all__ = ["code_of", "details_of", "trailers_of"]

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(error: GatewayError) -> grpc.StatusCode:
    """The status for ``error``: by its HTTP status; other 4xx are INVALID_ARGUMENT, other 5xx INTERNAL."""
    code = _CODES.get(error.status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= error.status < 500 else grpc.StatusCode.INTERNAL


def details_of(error: GatewayError) -> str:
    """The message; a refused argument's is led by the tensor or parameter at fault when it does not
    already name it."""
    if error.status >= 500 and code_of(error) is grpc.StatusCode.INTERNAL:
        return "The server had an error while processing your request."
    if error.status == 400 and error.param and f"'{error.param}'" not in error.message:
        return f"{error.param}: {error.message}"
    return error.message


def trailers_of(error: GatewayError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, Busy):
        return (("retry-after", str(math.ceil(error.retry_after))),)
    return ()
