"""OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import msgspec

from compat.errors import GatewayError

__all__ = ["encode_error", "error_body"]


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()


def error_body(error: GatewayError) -> ErrorEnvelope:
    return ErrorEnvelope(ErrorDetail(message=error.message, type=error.kind, param=error.param,
                                     code=error.code))


def encode_error(error: GatewayError) -> bytes:
    return _encoder.encode(error_body(error))
