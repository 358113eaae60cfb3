"""What every Deepgram route shares: errors, request ids, model identity, words, query-string booleans,
the WebSocket auth subprotocol."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from compat.errors import GatewayError, InvalidRequest

__all__ = [
    "DeepgramError",
    "ModelInfo",
    "Word",
    "auth_subprotocol",
    "error_body",
    "flag",
    "iso_now",
    "model_uuid",
    "new_request_id",
    "number",
    "one",
]

# Deepgram's err_code per status; 400s read "Bad Request" and their message starts the same way.
_ERR_CODES = {400: "Bad Request", 401: "INVALID_AUTH", 403: "INSUFFICIENT_PERMISSIONS", 404: "Not Found",
              405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
              421: "Misdirected Request", 429: "TOO_MANY_REQUESTS",
              503: "Service Unavailable"}


class DeepgramError(msgspec.Struct):
    err_code: str
    err_msg: str
    request_id: str


def error_body(error: GatewayError, request_id: str) -> DeepgramError:
    code = _ERR_CODES.get(error.status, "Internal Server Error")
    message = error.message
    if error.status == 400 and not message.startswith("Bad Request"):
        message = f"Bad Request: {message}"
    return DeepgramError(err_code=code, err_msg=message, request_id=request_id)


def auth_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept a WebSocket with: ``token``/``bearer`` exactly as the client spelled it,
    if it offered one.

    Browser clients authenticate with ``Sec-WebSocket-Protocol: token, <key>`` and abort the connection
    unless one offered protocol is echoed back as they sent it.
    """
    return next((p for p in offered if p.strip().lower() in ("token", "bearer")), None)


def new_request_id() -> str:
    return str(uuid.uuid4())


def model_uuid(canonical: str) -> str:
    """A stable uuid per served model, for ``metadata.models`` and ``dg-model-uuid``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"syn4pse:model:{canonical}"))


class Word(msgspec.Struct, omit_defaults=True):
    """A word as Deepgram's results carry it (pre-recorded and live alike)."""

    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str | None = None
    language: str | None = None


class ModelInfo(msgspec.Struct):
    name: str
    version: str
    arch: str


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The last value of a query parameter (Deepgram's SDKs send each once)."""
    values = query.get(name)
    return values[-1] if values else None


def flag(query: Mapping[str, Sequence[str]], name: str, default: bool = False) -> bool:
    value = one(query, name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", ""):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidRequest(f"Bad Request: '{name}' must be true or false, got '{value}'.", param=name)


def number(query: Mapping[str, Sequence[str]], name: str, default: float, *, low: float, high: float) -> float:
    """A numeric parameter; SDKs send ``16000`` or ``16000.0`` alike."""
    value = one(query, name)
    if value is None:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise InvalidRequest(f"Bad Request: '{name}' must be a number, got '{value}'.", param=name) from None
    if not low <= parsed <= high:
        raise InvalidRequest(f"Bad Request: '{name}' must be between {low:g} and {high:g}.", param=name)
    return parsed
