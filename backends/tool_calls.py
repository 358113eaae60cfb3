"""Tool calls in and out of a model's text.

Going in: models whose chat template knows tools get them through the template; the others get a
system prompt that lists the functions and asks for ``<tool_call>{...}</tool_call>`` (the widespread
Hermes/Qwen syntax), and earlier calls in the history are written back the same way.

Coming out, :class:`ToolCallReader` turns generated text into content and tool-call events as it
streams. A forced call (``required`` or a named function) is JSON a grammar holds to, so its arguments
can be streamed as they are generated. With ``auto`` the model's own syntax is recognised:
``<tool_call>`` blocks, or a reply that is nothing but a JSON call (``{"name": ..., "arguments"|"parameters":
...}``, a list of them, optionally after ``[TOOL_CALLS]`` or ``<|python_tag|>``).
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

from backends.grammars import tool_call_prefix
from backends.types import ToolCall, ToolPlan, ToolSpec

__all__ = ["CallArguments", "CallStart", "ContentText", "ToolCallReader", "history_calls_text", "new_call_id",
           "tools_system_prompt"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_JSON_LEADS = ("[TOOL_CALLS]", "<|python_tag|>")
_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def tools_system_prompt(tools: tuple[ToolSpec, ...], choice: str, parallel: bool) -> str:
    """Tells a model without a tool-aware template which functions exist and how to call them."""
    lines = ["You can call functions to help answer. The functions, as JSON Schema:"]
    for tool in tools:
        lines.append(json.dumps({"name": tool.name, "description": tool.description or "",
                                 "parameters": tool.parameters or {"type": "object", "properties": {}}},
                                ensure_ascii=False))
    lines.append(f'To call a function, reply with {OPEN}{{"name": <function name>, "arguments": <arguments'
                 f' object>}}{CLOSE}' + (", one block per call." if parallel else ". Call at most one function."))
    if choice == "auto":
        lines.append("Otherwise answer normally.")
    return "\n".join(lines)


def history_calls_text(calls: tuple[ToolCall, ...]) -> str:
    """Earlier calls of an assistant message, written the way the model is asked to write them."""
    parts = []
    for call in calls:
        try:
            arguments: Any = json.loads(call.arguments)
        except ValueError:
            arguments = call.arguments
        parts.append(OPEN + json.dumps({"name": call.name, "arguments": arguments}, ensure_ascii=False) + CLOSE)
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class ContentText:
    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArguments:
    index: int
    fragment: str


Event = ContentText | CallStart | CallArguments


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def _as_calls(payload: Any, names: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """(name, arguments JSON) of each call in a parsed JSON reply, or None if it is not made of calls."""
    items = payload if isinstance(payload, list) else [payload]
    calls: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in names:
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append((str(item["name"]), json.dumps(arguments, ensure_ascii=False)))
    return calls or None


class ToolCallReader:
    """Reads one choice's generated text into :data:`Event` s, as it arrives."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.calls = 0
        self._pending = ""
        self._mode = "start"  # start | content | block | json | arguments
        self._whole = plan.mode == "auto"

    def _call(self, name: str, arguments: str) -> list[Event]:
        if self.calls and not self.plan.parallel:
            return []
        index = self.calls
        self.calls += 1
        return [CallStart(index, new_call_id(), name), CallArguments(index, arguments)]

    def feed(self, text: str) -> list[Event]:
        self._pending += text
        if self.plan.mode == "named":
            return self._feed_forced(prefix="")
        if self.plan.mode == "required":
            return self._feed_forced(prefix=None)
        return self._feed_auto()

    # -- forced: the grammar fixed the shape, so arguments stream as they come ----------------------

    def _feed_forced(self, prefix: str | None) -> list[Event]:
        events: list[Event] = []
        if self._mode == "start":
            name = self.plan.names[0] if prefix is not None else None
            if name is None:
                for candidate in self.plan.names:
                    head = tool_call_prefix(candidate)
                    if self._pending.startswith(head):
                        name, prefix = candidate, head
                        break
                if name is None:
                    return events
            assert prefix is not None
            self._pending = self._pending[len(prefix):]
            self._mode = "arguments"
            index = self.calls
            self.calls += 1
            events.append(CallStart(index, new_call_id(), name))
        # Hold back trailing whitespace, and for a wrapped call the closing brace that is not an argument.
        keep = len(self._pending) - len(self._pending.rstrip())
        if self.plan.mode == "required" and len(self._pending) > keep:
            keep += 1
        ready = self._pending[: len(self._pending) - keep]
        if ready:
            events.append(CallArguments(self.calls - 1, ready))
            self._pending = self._pending[len(ready):]
        return events

    # -- auto: the model's own syntax ---------------------------------------------------------------

    def _feed_auto(self) -> list[Event]:
        events: list[Event] = []
        while True:
            if self._mode == "start":
                stripped = self._pending.lstrip()
                if not stripped:
                    return events
                if stripped[0] in "{[" or any(stripped.startswith(lead) for lead in _JSON_LEADS):
                    self._mode = "json"  # a reply that may be nothing but calls: decided at the end
                    return events
                if any(lead.startswith(stripped) for lead in _JSON_LEADS):
                    return events
                self._mode = "content"
            if self._mode == "json":
                return events
            if self._mode == "content":
                at = self._pending.find(OPEN)
                if at == -1:
                    keep = _held_prefix(self._pending, OPEN)
                    ready = self._pending[: len(self._pending) - keep]
                    if ready:
                        events.append(ContentText(ready))
                    self._pending = self._pending[len(ready):]
                    return events
                if at:
                    events.append(ContentText(self._pending[:at]))
                self._pending = self._pending[at + len(OPEN):]
                self._mode = "block"
            if self._mode == "block":
                end = self._pending.find(CLOSE)
                if end == -1:
                    return events
                body, self._pending = self._pending[:end], self._pending[end + len(CLOSE):]
                events.extend(self._block(body))
                self._mode = "content"
                self._pending = self._pending.lstrip() if self.calls else self._pending

    def _block(self, body: str) -> list[Event]:
        try:
            calls = _as_calls(json.loads(body), self.plan.names)
        except ValueError:
            calls = None
        if calls is None:  # not a call we can honour: the text stays the model's answer
            return [ContentText(OPEN + body + CLOSE)]
        events: list[Event] = []
        for name, arguments in calls:
            events.extend(self._call(name, arguments))
        return events

    def finish(self) -> list[Event]:
        """The events still held back, at the end of the choice."""
        pending, self._pending = self._pending, ""
        if self.plan.mode != "auto":
            if self._mode == "start":  # cut short before the call began
                return [ContentText(pending)] if pending else []
            body = pending.rstrip()
            if self.plan.mode == "required" and body.endswith("}"):
                body = body[:-1]
            return [CallArguments(self.calls - 1, body)] if body else []
        if self._mode == "json":
            text = pending.strip()
            for lead in _JSON_LEADS:
                text = text.removeprefix(lead).lstrip()
            try:
                calls = _as_calls(json.loads(text), self.plan.names)
            except ValueError:
                calls = None
            if calls is None:
                return [ContentText(pending)]
            events: list[Event] = []
            for name, arguments in calls:
                events.extend(self._call(name, arguments))
            return events
        if self._mode == "block":
            return self._block(pending.removesuffix(CLOSE))
        return [ContentText(pending)] if pending else []
