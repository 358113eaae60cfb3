"""What holds llama.cpp's output to a JSON Schema (structured outputs, forced tool calls).

Each constraint is a GBNF grammar (:mod:`backends.json_schema_grammar`) and a check that every reply
held by it must pass when it ends (:class:`OutputCheck`): parsed by a strict JSON parser and valid
against the schema. The grammar holds almost every keyword by itself, so the check only proves it;
the few it cannot express exactly are listed in ``OutputCheck.held``, and then a reply is held back
until checked and resampled when it fails (see :mod:`backends.llama.scheduler`).

A schema is either the reply's own (``tool`` None) or a tool's parameters (``tool`` its index); a
check over a call to any of the tools is about them all (``part`` :attr:`Part.TOOLS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from backends.errors import NoTools, Part
from backends.gbnf import RuleSet, literal
from backends.json_schema import normalise
from backends.json_schema_grammar import Converter
from backends.output_check import SchemaValidator, parse_strict
from backends.types import ToolSpec

__all__ = ["HeldOutput", "OutputCheck", "json_grammar", "tool_arguments_grammar", "tool_call_grammar",
           "tool_call_prefix"]

_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, eq=False)
class OutputCheck:
    """Whether a finished reply is what its grammar promised: strict JSON, valid for its schema."""

    tool: int | None = None
    """Whose schema it checks (for errors about it): None for the reply's own, else that tool's index."""
    part: Part = Part.SCHEMA
    """SCHEMA for one schema; TOOLS for a call to any of the tools."""
    held_at: tuple[tuple[int | None, str], ...] = ()
    """Keywords (with their places) the grammar cannot express exactly and only this check holds, each
    with the tool whose schema has it: replies then wait for the check before they are sent, and are
    resampled when they fail."""
    validator: SchemaValidator | None = None
    """For a plain JSON reply (the reply's schema, any JSON object, a named tool's arguments)."""
    calls: dict[str, SchemaValidator] = field(default_factory=dict)
    """For a wrapped call ``{"name": ..., "arguments": ...}``: each tool's validator."""

    @property
    def held(self) -> tuple[str, ...]:
        """The keywords of :attr:`held_at`, without their tools."""
        return tuple(keyword for _, keyword in self.held_at)

    def problem(self, text: str) -> str | None:
        """Why ``text`` is not a valid reply, or None."""
        try:
            value = parse_strict(text)
        except ValueError as e:
            return f"not strict JSON ({e})"
        if self.validator is not None:
            return self.validator.problem(value)
        if not isinstance(value, dict) or set(value) != {"name", "arguments"} or value["name"] not in self.calls:
            return "not a call of one of the tools"
        found = self.calls[value["name"]].problem(value["arguments"])
        return None if found is None else f"arguments of {value['name']}: {found}"


@dataclass(frozen=True, eq=False)
class HeldOutput:
    """A grammar and the check of what it produces."""

    grammar: str
    check: OutputCheck


def json_grammar(schema: dict[str, Any] | None, tool: int | None = None) -> HeldOutput:
    """Any JSON object when ``schema`` is None; else JSON valid against ``schema``, which is the
    reply's own (``tool`` None) or that tool's parameters."""
    clean = normalise({"type": "object"} if schema is None else schema, tool)
    rules = RuleSet()
    converter = Converter(rules, tool)
    root = converter.convert(clean, "value")
    held = tuple((tool, h) for h in converter.held)
    return HeldOutput(rules.text(root), OutputCheck(tool, Part.SCHEMA, held, SchemaValidator(clean)))


def tool_arguments_grammar(tool: ToolSpec, index: int) -> HeldOutput:
    """The arguments object of one named function, the ``index``-th tool (the reply is nothing but
    the arguments)."""
    return json_grammar(tool.parameters or _EMPTY_PARAMETERS, index)


def tool_call_prefix(name: str) -> str:
    """How a forced call starts: the text before its arguments (see :func:`tool_call_grammar`)."""
    return '{"name": ' + json.dumps(name) + ', "arguments": '


def tool_call_grammar(tools: tuple[ToolSpec, ...]) -> HeldOutput:
    """One call to any of ``tools``: ``{"name": NAME, "arguments": ARGS}``, ARGS valid for NAME."""
    if not tools:
        raise NoTools()
    rules = RuleSet()
    choices = []
    held: list[tuple[int | None, str]] = []
    calls: dict[str, SchemaValidator] = {}
    for i, tool in enumerate(tools):
        clean = normalise(tool.parameters or _EMPTY_PARAMETERS, i)
        converter = Converter(rules, i)
        args = converter.convert(clean, f"tool{i}-arguments")
        held.extend((i, h) for h in converter.held)
        calls[tool.name] = SchemaValidator(clean)
        choices.append(f'{literal(tool_call_prefix(tool.name))} {args} "}}"')
    grammar = rules.text(" | ".join(f"( {c} )" for c in choices))
    return HeldOutput(grammar, OutputCheck(None, Part.TOOLS, tuple(held), calls=calls))
