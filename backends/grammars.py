"""GBNF grammars that hold llama.cpp's output to a JSON Schema (structured outputs, forced tool calls).

The rules come from llama-cpp-python's JSON-Schema converter. It quietly skips keywords it cannot
express (``minimum``, ``not``, most ``format`` values, ...), which would give an answer that looks
constrained but is not; so every schema is checked first, and a keyword outside what the grammar
enforces is a 400 naming the field and the keyword's place in the schema.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from backends.errors import InvalidRequest
from backends.types import ToolSpec

__all__ = ["json_grammar", "tool_arguments_grammar", "tool_call_grammar", "tool_call_prefix"]

_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$schema", "$id", "$comment",
                          "$anchor", "deprecated", "readOnly", "writeOnly", "contentMediaType",
                          "contentEncoding"})
_ENFORCED = frozenset({"type", "properties", "required", "additionalProperties", "items", "prefixItems",
                       "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
                       "definitions", "pattern", "format", "minLength", "maxLength"})
_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
_MAX_DEPTH = 32


def _refuse(param: str, where: str, why: str) -> InvalidRequest:
    place = f" at '{where}'" if where else ""
    return InvalidRequest(f"Invalid schema for '{param}'{place}: {why}", param=param,
                          code="invalid_json_schema")


def _normalise(node: Any, param: str, where: str, depth: int = 0) -> dict[str, Any]:
    """A copy of the schema in the shape the converter reads, refusing what it would not enforce."""
    if depth > _MAX_DEPTH:
        raise _refuse(param, where, f"nested deeper than {_MAX_DEPTH} levels.")
    if node is True:
        return {}
    if not isinstance(node, dict):
        raise _refuse(param, where, "a schema must be a JSON object (or true).")
    out: dict[str, Any] = {}
    for key, value in node.items():
        at = f"{where}/{key}"
        if key in _ANNOTATIONS:
            continue
        if key not in _ENFORCED:
            raise _refuse(param, at, f"the keyword '{key}' cannot be enforced by the output grammar.")
        if key == "type":
            kinds = value if isinstance(value, list) else [value]
            if not kinds or any(k not in _TYPES for k in kinds):
                raise _refuse(param, at, f"unknown type {json.dumps(value)}.")
            out[key] = value
        elif key == "format":
            if value not in _FORMATS:
                raise _refuse(param, at, f"the format '{value}' cannot be enforced by the output grammar.")
            out[key] = value
        elif key in ("properties", "$defs", "definitions"):
            if not isinstance(value, dict):
                raise _refuse(param, at, f"'{key}' must be an object.")
            out[key] = {k: _normalise(v, param, f"{at}/{k}", depth + 1) for k, v in value.items()}
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(value, list) or not value:
                raise _refuse(param, at, f"'{key}' must be a non-empty array.")
            out[key] = [_normalise(v, param, f"{at}/{i}", depth + 1) for i, v in enumerate(value)]
        elif key == "items":
            if isinstance(value, list):  # the older tuple form
                out["prefixItems"] = [_normalise(v, param, f"{at}/{i}", depth + 1) for i, v in enumerate(value)]
            else:
                out[key] = _normalise(value, param, at, depth + 1)
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else _normalise(value, param, at, depth + 1)
        elif key == "$ref":
            if not isinstance(value, str) or not value.startswith("#/"):
                raise _refuse(param, at, "only references inside the schema ('#/...') are supported.")
            out[key] = value
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _refuse(param, at, "'required' must be an array of property names.")
            out[key] = value
        elif key in ("minItems", "maxItems", "minLength", "maxLength"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _refuse(param, at, f"'{key}' must be a non-negative integer.")
            out[key] = value
        elif key == "enum":
            if not isinstance(value, list) or not value:
                raise _refuse(param, at, "'enum' must be a non-empty array.")
            out[key] = copy.deepcopy(value)
        else:  # const, pattern
            out[key] = copy.deepcopy(value)
    return out


class _Rules:
    """One converter; each schema visited into it becomes a named rule."""

    def __init__(self) -> None:
        from llama_cpp import llama_grammar

        converter: Any = llama_grammar.SchemaConverter  # untyped upstream
        self._converter: Any = converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def add(self, schema: Any, name: str, param: str) -> str:
        clean = _normalise(schema, param, "")
        try:
            resolved = self._converter.resolve_refs(clean, name)
            return str(self._converter.visit(resolved, name))
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise _refuse(param, "", f"{e}") from None

    def grammar(self, root: str | None = None) -> str:
        if root is not None:
            self._converter._add_rule("root", root)
        return str(self._converter.format_grammar())


def json_grammar(schema: dict[str, Any] | None, param: str = "response_format") -> str:
    """Any JSON object when ``schema`` is None; else JSON valid against ``schema``."""
    rules = _Rules()
    if schema is None:
        schema = {"type": "object"}
    name = rules.add(schema, "", param)
    return rules.grammar(None if name == "root" else name)


def tool_arguments_grammar(tool: ToolSpec, param: str) -> str:
    """The arguments object of one named function (the reply is nothing but the arguments)."""
    return json_grammar(tool.parameters or {"type": "object", "properties": {}}, param)


def tool_call_prefix(name: str) -> str:
    """How a forced call starts: the text before its arguments (see :func:`tool_call_grammar`)."""
    return '{"name": ' + json.dumps(name) + ', "arguments": '


def tool_call_grammar(tools: tuple[ToolSpec, ...], param: str = "tools") -> str:
    """One call to any of ``tools``: ``{"name": NAME, "arguments": ARGS}``, ARGS valid for NAME."""
    rules = _Rules()
    choices = []
    for i, tool in enumerate(tools):
        args = rules.add(tool.parameters or {"type": "object", "properties": {}}, f"tool{i}-arguments",
                         f"{param}[{i}].function.parameters")
        prefix = json.dumps(tool_call_prefix(tool.name))
        choices.append(f'{prefix} {args} "}}"')
    return rules.grammar(" | ".join(f"( {c} )" for c in choices))
