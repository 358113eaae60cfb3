"""Decoding helpers every dialect shares: JSON bodies in, validation errors out with a ``param``."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from compat.errors import InvalidRequest, PayloadTooLarge, UnsupportedParameter

__all__ = ["ParamPolicy", "decode_object", "to_struct"]

T = TypeVar("T")
_json = msgspec.json.Decoder()
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether any value sits deeper than ``limit`` (the body itself is at depth 1). Level by level,
    keeping only the containers: a body of a million scalars costs one pass over them, no stack entry
    each."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth >= limit:  # the children of this level would sit past the limit
            return any(len(item) for item in level)
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend(child for child in children if isinstance(child, (dict, list)))
        level = below
        depth += 1
    return False


WALKED_AT_ONCE = 10_000
"""Bodies with fewer commas than this are walked for their depth without counting their brackets first."""


def _maybe_deep(body: bytes, commas: int, limit: int) -> bool:
    """Whether the depth walk is needed: k containers nest at most k deep, so their values sit at most
    k + 1 deep. The walk costs per item, the count per byte: a body of few items is walked at once."""
    if commas < WALKED_AT_ONCE:
        return True
    return body.count(b"{") + body.count(b"[") >= limit


def decode_object(body: bytes, max_depth: int = 64, max_items: int | None = None,
                  max_members: int | None = None) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not (including nesting past ``max_depth``).

    Decoding costs what the body's items cost, far more than its bytes, and holds the interpreter
    meanwhile (a million small array elements: about 50 ms; a million object members, each a new key to
    hash: a quarter of a second; one 15 MB string: milliseconds). So a body with ``max_items`` commas or
    more (each item after a container's first has one before it), or more than ``max_members`` colons (one
    per object member), is a 413 before it is decoded. Commas and colons inside strings count too: the
    counts are an upper bound, taken at the speed of a memory scan."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    commas = body.count(b",")
    if max_items is not None and commas >= max_items:
        raise PayloadTooLarge(f"The JSON body holds more than {max_items} items (array elements and object"
                              " members counted together); send fewer in one request.")
    if max_members is not None and len(body) > max_members and body.count(b":") > max_members:
        raise PayloadTooLarge(f"The JSON body holds more than {max_members} object members; send fewer in"
                              " one request.")
    try:
        value = _json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest("We could not parse the JSON body of your request. The body must be"
                             " valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if _maybe_deep(body, commas, max_depth) and _too_deep(value, max_depth):
        raise InvalidRequest(f"The JSON body nests deeper than {max_depth} levels.")
    return value


def _param(path: str) -> str | None:
    """msgspec's ``$.a[0].b`` → ``a[0].b``; a map's values (``[...]``) are named by the map."""
    return path.replace("[...]", "").lstrip(".") or None


def to_struct(raw: Any, type_: type[T]) -> T:
    """Validate ``raw`` into ``type_``; a failure is a 400 whose ``param`` is the offending path."""
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as e:
        match = _AT.match(str(e))
        assert match is not None  # the pattern matches any text
        param = _param(match["path"] or "")
        message = match["message"]
        if message.startswith("Object missing required field"):
            field = message.split("`")[1]
            param = f"{param}.{field}" if param else field
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                                 code="missing_required_parameter") from None
        if message.startswith("Object contains unknown field"):
            field = message.split("`")[1]
            param = f"{param}.{field}" if param else field
            raise InvalidRequest(f"Unrecognized request argument supplied: '{param}'.", param=param,
                                 code="unknown_parameter") from None
        raise InvalidRequest(f"Invalid value for '{param}': {message[0].lower()}{message[1:]}.",
                             param=param, code="invalid_value") from None


class ParamPolicy:
    """The server's answer to a real field it does not implement: reject it by name, or drop it.

    With ``drop`` the dropped names accumulate in :attr:`dropped`, for the response header and log.
    """

    def __init__(self, mode: str) -> None:
        self.drop = mode == "drop"
        self.dropped: list[str] = []

    def unsupported(self, param: str, reason: str | None = None) -> None:
        if not self.drop:
            raise UnsupportedParameter(param, reason)
        self.dropped.append(param)

    def unknown(self, param: str) -> None:
        """A field the dialect does not define at all."""
        if not self.drop:
            raise InvalidRequest(f"Unrecognized request argument supplied: '{param}'.", param=param,
                                 code="unknown_parameter")
        self.dropped.append(param)

    def screen(self, raw: dict[str, Any], known: frozenset[str]) -> None:
        """Apply the policy to the top-level fields ``raw`` has that are not in ``known``."""
        for key in [k for k in raw if k not in known]:
            self.unknown(key)
            del raw[key]
