"""JSON Schema as structured outputs take it: checked, and put in the one shape the grammar reads.

A keyword the grammar cannot hold and OpenAI's structured outputs refuse too (``not``, ``if``,
``patternProperties``, a remote ``$ref``, ...) is refused here, naming the keyword's place in the
schema; :mod:`backends.json_schema_grammar` then writes rules for what is left.
"""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from typing import Any

from backends.errors import BadSchema
from backends.gbnf_numbers import to_decimal
from backends.gbnf_strings import FORMAT_RULES

__all__ = ["FORMAT_ALIASES", "NUMERIC", "dumps", "escape", "normalise", "refuse", "unescape"]

_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$schema", "$id", "$comment",
                          "$anchor", "deprecated", "readOnly", "writeOnly", "contentMediaType",
                          "contentEncoding"})
_ENFORCED = frozenset({"type", "properties", "required", "additionalProperties", "items", "prefixItems",
                       "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
                       "definitions", "pattern", "format", "minLength", "maxLength", "minimum", "maximum",
                       "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
FORMAT_ALIASES = {"uuid1": "uuid", "uuid2": "uuid", "uuid3": "uuid", "uuid4": "uuid", "uuid5": "uuid"}
"""Format names read as another format the grammar writes."""
NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
"""The numeric keywords: a schema with any of them and no ``type`` speaks of numbers."""
_MAX_DEPTH = 32


def refuse(tool: int | None, where: str, why: str) -> BadSchema:
    """The error for a schema refused at ``where`` (a JSON Pointer), in the reply's schema (``tool``
    None) or in that tool's parameters."""
    return BadSchema(why, where=where, tool=tool)


def _exact(value: Any) -> Any:
    """A JSON value with its non-integer numbers as exact decimals."""
    if isinstance(value, float):
        return to_decimal(value)
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def dumps(value: Any) -> str:
    """JSON text of a value that may hold decimals."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def normalise(schema: Any, tool: int | None = None) -> Any:
    """A checked copy of the schema: annotations dropped, numbers exact, the tuple ``items`` as
    ``prefixItems``, draft-4 boolean exclusive bounds as numbers. A keyword neither the grammar nor the
    check holds is a :class:`BadSchema` naming its place (``tool``: whose parameters, None for the
    reply's own schema)."""
    return _clean(schema, tool, "", 0)


def _clean(node: Any, tool: int | None, where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise refuse(tool, where, f"nested deeper than {_MAX_DEPTH} levels.")
    if node is True:
        return {}
    if node is False:
        raise refuse(tool, where, "a schema of false admits no value.")
    if not isinstance(node, dict):
        raise refuse(tool, where, "a schema must be a JSON object (or true).")
    out: dict[str, Any] = {}
    for key, value in node.items():
        at = f"{where}/{key}"
        if key in _ANNOTATIONS:
            continue
        if key not in _ENFORCED:
            raise refuse(tool, at, f"the keyword '{key}' is not supported in structured outputs.")
        if key == "type":
            kinds = value if isinstance(value, list) else [value]
            if not kinds or any(not isinstance(k, str) or k not in _TYPES for k in kinds):
                raise refuse(tool, at, f"unknown type {json.dumps(value)}.")
            out[key] = value
        elif key == "format":
            if not isinstance(value, str) or FORMAT_ALIASES.get(value, value) not in FORMAT_RULES:
                raise refuse(tool, at, f"the format {json.dumps(value)} is not supported; supported formats:"
                                        f" {', '.join(FORMAT_RULES)}.")
            out[key] = value
        elif key in ("properties", "$defs", "definitions"):
            if not isinstance(value, dict):
                raise refuse(tool, at, f"'{key}' must be an object.")
            out[key] = {k: _clean(v, tool, f"{at}/{escape(k)}", depth + 1) for k, v in value.items()}
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(value, list) or not value:
                raise refuse(tool, at, f"'{key}' must be a non-empty array.")
            out[key] = [_clean(v, tool, f"{at}/{i}", depth + 1) for i, v in enumerate(value)]
        elif key == "items":
            if isinstance(value, list):  # the older tuple form
                out["prefixItems"] = [_clean(v, tool, f"{at}/{i}", depth + 1) for i, v in enumerate(value)]
            elif value is False:
                out[key] = False
            else:
                out[key] = _clean(value, tool, at, depth + 1)
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else _clean(value, tool, at, depth + 1)
        elif key == "$ref":
            if not isinstance(value, str) or not (value == "#" or value.startswith("#/")):
                raise refuse(tool, at, "only references inside the schema ('#/...') are supported.")
            out[key] = value
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise refuse(tool, at, "'required' must be an array of property names.")
            out[key] = list(dict.fromkeys(value))
        elif key in ("minItems", "maxItems", "minLength", "maxLength"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise refuse(tool, at, f"'{key}' must be a non-negative integer.")
            out[key] = value
        elif key in NUMERIC:
            if key.startswith("exclusive") and isinstance(value, bool):
                out[key] = value  # draft 4: a flag on minimum / maximum, resolved below
                continue
            try:
                number = to_decimal(value)
            except TypeError:
                raise refuse(tool, at, f"'{key}' must be a number.") from None
            if key == "multipleOf" and number <= 0:
                raise refuse(tool, at, "'multipleOf' must be greater than 0.")
            out[key] = number
        elif key == "enum":
            if not isinstance(value, list) or not value:
                raise refuse(tool, at, "'enum' must be a non-empty array.")
            out[key] = _exact(copy.deepcopy(value))
        elif key == "pattern":
            if not isinstance(value, str):
                raise refuse(tool, at, "'pattern' must be a string.")
            try:
                re.compile(value)
            except re.error as e:
                raise refuse(tool, at, f"'pattern' is not a valid regular expression ({e}).") from None
            out[key] = value
        else:  # const
            out[key] = _exact(copy.deepcopy(value))
    for side in ("Minimum", "Maximum"):
        flag = out.get(f"exclusive{side}")
        if isinstance(flag, bool):
            del out[f"exclusive{side}"]
            bound = out.get(side.lower())
            if flag and bound is not None:
                out[f"exclusive{side}"] = out.pop(side.lower())
    return out


def escape(key: str) -> str:
    """A property name as one step of a JSON Pointer."""
    return key.replace("~", "~0").replace("/", "~1")


def unescape(part: str) -> str:
    """One step of a JSON Pointer as the property name it stands for."""
    return part.replace("~1", "/").replace("~0", "~")
