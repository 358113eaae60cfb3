"""The Responses API's answers: the ``response`` object, its output items, and its stream of events.

One builder (:class:`ResponseBuilder`) reads a chat answer's events into output items — a ``message``
with its ``output_text``, a ``function_call`` per tool call — and says each step as the event OpenAI
streams for it, numbered by ``sequence_number``. A plain answer is the same events, read and not sent,
so a stored, streamed and returned response are one shape. Objects are plain dicts: they are stored as
JSON and sent as they are.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from backends.answers import (
    AnswerEnd,
    CallDelta,
    CallOpened,
    ChatAnswer,
    ChatEvent,
    ChoiceFinished,
    TextDelta,
    Waiting,
)
from backends.types import FinishReason, TokenLogprob, Usage
from compat.errors import GatewayError
from compat.openai.chat import logprobs_body
from compat.openai.responses_input import ParsedResponse, new_item_id

__all__ = ["ResponseBuilder", "failed", "new_response_id", "usage_object"]

Event = dict[str, Any]


def new_response_id() -> str:
    return new_item_id("resp")


def usage_object(usage: Usage) -> dict[str, Any]:
    # cache_write_tokens is required in OpenAI's schema (LiveKit's plugin fails without it); nothing is
    # written to a cache on request here, as OpenAI counts those writes
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


def _logprobs(entries: tuple[TokenLogprob, ...] | None) -> list[dict[str, Any]]:
    """The tokens' log-probabilities in chat's shape, which an ``output_text``'s ``logprobs`` share."""
    content: list[dict[str, Any]] = msgspec.to_builtins(logprobs_body(entries or ()).content)
    return content


def _tool_object(parsed: ParsedResponse) -> list[dict[str, Any]]:
    return [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters,
             "strict": t.strict} for t in parsed.tools]


def _format_object(parsed: ParsedResponse) -> dict[str, Any]:
    sent = parsed.echo.text.format if parsed.echo.text is not None else None
    if sent is None or sent.type == "text":
        return {"type": "text"}
    if sent.type == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "name": sent.name, "schema": parsed.output.json_schema,
            "description": sent.description, "strict": bool(sent.strict)}


def head_object(response_id: str, parsed: ParsedResponse, status: str) -> dict[str, Any]:
    """The response object before its output: what it was asked, as OpenAI echoes it."""
    r = parsed.echo
    reasoning = r.reasoning
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
        "background": parsed.background, "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": r.instructions, "max_output_tokens": r.max_output_tokens, "max_tool_calls": r.max_tool_calls,
        "model": r.model, "output": [], "parallel_tool_calls": parsed.parallel_tool_calls,
        "previous_response_id": r.previous_response_id, "prompt_cache_key": r.prompt_cache_key,
        "reasoning": {"effort": reasoning.effort if reasoning else None,
                      "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None},
        "safety_identifier": r.safety_identifier, "service_tier": "default", "store": parsed.store,
        "temperature": parsed.sampling.temperature,
        "text": {"format": _format_object(parsed), "verbosity": (r.text.verbosity if r.text else None) or "medium"},
        "tool_choice": r.tool_choice if r.tool_choice is not None else "auto",  # OpenAI's default, tools or not
        "tools": _tool_object(parsed), "top_logprobs": r.top_logprobs or 0, "top_p": parsed.sampling.top_p,
        "truncation": parsed.truncation, "usage": None, "user": r.user, "metadata": r.metadata or {},
    }


def failed(response: dict[str, Any], error: GatewayError) -> dict[str, Any]:
    """``response`` ended by ``error``: its status and error set, its output kept as far as it came."""
    return {**response, "status": "failed", "error": {"code": error.code or "server_error", "message": error.message}}


class ResponseBuilder:
    """Reads one answer's chat events into the response's output items and the events that say them."""

    def __init__(self, response_id: str, parsed: ParsedResponse, status: str = "in_progress") -> None:
        self.response = head_object(response_id, parsed, status)
        self.sequence = 0
        self._tools = bool(parsed.tools)
        self._message: dict[str, Any] | None = None
        self._text: list[str] = []
        self._log: list[dict[str, Any]] = []
        self._call: dict[str, Any] | None = None
        self._blank = ""  # whitespace before a tool call is not a message: held until text follows
        self._finish: FinishReason | None = None

    @property
    def output(self) -> list[dict[str, Any]]:
        return self.response["output"]  # type: ignore[no-any-return]

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return event

    def start(self) -> list[Event]:
        """``response.created`` (``queued``, for a background response), then ``response.in_progress``."""
        created = self._event("response.created", response=self.snapshot())
        self.response["status"] = "in_progress"
        return [created, self._event("response.in_progress", response=self.snapshot())]

    def snapshot(self) -> dict[str, Any]:
        """The response as it stands: events carry copies, later steps do not change them."""
        return {**self.response, "output": list(self.output)}

    def feed(self, event: ChatEvent) -> list[Event | None]:
        """The events ``event`` makes (None: a keep-alive, the model still loading)."""
        if isinstance(event, Waiting):
            return [None]
        if isinstance(event, TextDelta):
            return self._text_delta(event.text, event.logprobs)
        if isinstance(event, CallOpened):
            return [*self._close_message(), *self._close_call(), *self._open_call(event.id, event.name)]
        if isinstance(event, CallDelta):
            assert self._call is not None
            self._call["arguments"] += event.fragment
            return [self._event("response.function_call_arguments.delta", item_id=self._call["id"],
                                output_index=len(self.output), delta=event.fragment)]
        if isinstance(event, ChoiceFinished):
            self._finish = event.reason
            events: list[Event | None] = [*self._close_message(), *self._close_call()]
            if not self.output:  # an empty answer is still an (empty) message
                events += [*self._open_message(), *self._close_message()]
            return events
        if isinstance(event, AnswerEnd):
            return [self.finish(event.usage)]
        return []

    def _text_delta(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event | None]:
        events: list[Event | None] = [*self._close_call()]
        if self._message is None:
            if self._tools and not text.strip() and not logprobs:
                self._blank += text
                return events
            events += self._open_message()
            text, self._blank = self._blank + text, ""
        assert self._message is not None
        self._text.append(text)
        entries = _logprobs(logprobs)
        self._log.extend(entries)
        events.append(self._event("response.output_text.delta", item_id=self._message["id"],
                                  output_index=len(self.output), content_index=0, delta=text, logprobs=entries))
        return events

    def _open_message(self) -> list[Event]:
        self._message = {"id": new_item_id("msg"), "type": "message", "status": "in_progress", "content": [],
                         "role": "assistant"}
        self._text, self._log = [], []
        index = len(self.output)
        return [self._event("response.output_item.added", output_index=index, item=dict(self._message)),
                self._event("response.content_part.added", item_id=self._message["id"], output_index=index,
                            content_index=0, part={"type": "output_text", "annotations": [], "logprobs": [],
                                                   "text": ""})]

    def _status(self) -> str:
        return "incomplete" if self._finish == "length" else "completed"

    def _close_message(self) -> list[Event]:
        message, self._message = self._message, None
        if message is None:
            return []
        text = "".join(self._text)
        part = {"type": "output_text", "annotations": [], "logprobs": self._log, "text": text}
        message.update(content=[part], status=self._status())
        index = len(self.output)
        self.output.append(message)
        return [self._event("response.output_text.done", item_id=message["id"], output_index=index, content_index=0,
                            text=text, logprobs=self._log),
                self._event("response.content_part.done", item_id=message["id"], output_index=index,
                            content_index=0, part=part),
                self._event("response.output_item.done", output_index=index, item=message)]

    def _open_call(self, call_id: str, name: str) -> list[Event]:
        self._blank = ""
        self._call = {"id": new_item_id("fc"), "type": "function_call", "status": "in_progress", "arguments": "",
                      "call_id": call_id, "name": name}
        return [self._event("response.output_item.added", output_index=len(self.output), item=dict(self._call))]

    def _close_call(self) -> list[Event]:
        call, self._call = self._call, None
        if call is None:
            return []
        call["status"] = self._status()
        index = len(self.output)
        self.output.append(call)
        return [self._event("response.function_call_arguments.done", item_id=call["id"], output_index=index,
                            arguments=call["arguments"], name=call["name"]),
                self._event("response.output_item.done", output_index=index, item=call)]

    def finish(self, usage: Usage) -> Event:
        """The terminal event: ``response.completed``, or ``response.incomplete`` when the answer was cut
        at ``max_output_tokens``; it carries the whole response."""
        incomplete = self._finish == "length"
        self.response.update(status="incomplete" if incomplete else "completed", usage=usage_object(usage),
                             completed_at=int(time.time()),
                             incomplete_details={"reason": "max_output_tokens"} if incomplete else None)
        return self._event("response.incomplete" if incomplete else "response.completed", response=self.snapshot())

    def fail(self, error: GatewayError) -> list[Event]:
        """An ``error`` event, then ``response.failed``: what a failure after the stream began says."""
        self.response = failed(self.response, error)
        return [self._event("error", code=error.code or error.kind, message=error.message, param=error.param),
                self._event("response.failed", response=self.snapshot())]

    def cancel(self) -> list[Event]:
        """The response stopped before it finished (``/cancel``, a socket's ``response.cancel``): its open
        items closed as ``incomplete``, then ``response.incomplete`` with the status ``cancelled``, the
        terminal event clients wait for whatever the end."""
        self._finish = "length"  # the items' status: incomplete
        events = [*self._close_message(), *self._close_call()]
        self.response.update(status="cancelled", completed_at=int(time.time()))
        return [*events, self._event("response.incomplete", response=self.snapshot())]

    def answer(self, answer: ChatAnswer) -> dict[str, Any]:
        """A whole answer read into the response, as :meth:`feed` would have read its stream."""
        choice = answer.choices[0]
        if choice.content:
            self.feed(TextDelta(0, choice.content, tuple(choice.logprobs) if choice.logprobs is not None else None))
        for i, call in enumerate(choice.tool_calls):
            self.feed(CallOpened(0, i, call.id, call.name))
            self.feed(CallDelta(0, i, call.arguments))
        self.feed(ChoiceFinished(0, choice.finish_reason or "stop", True, answer.usage, answer.timings))
        self.finish(answer.usage)
        return self.response
