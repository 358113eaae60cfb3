"""Chat: lease the model, prepare the prompt, generate, and read the chunks into choices.

A generation's chunks become each choice's text, tool calls and finish (:class:`ChoiceReader`); the
plain answer keeps the totals, the stream hands them on as events as they come. Both own the model's
lease from admission to the last token, and ask no more of the model than :class:`Limits` allows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from backends.answers import (
    AnswerEnd,
    CallDelta,
    CallOpened,
    ChatAnswer,
    ChatEvent,
    ChoiceFinished,
    ChoiceOpened,
    ChoiceResult,
    TextDelta,
    Timings,
)
from backends.base import ChatBackend
from backends.tool_calls import CallArguments, CallStart, ContentText, Event, ToolCallReader
from backends.types import (
    CallPiece,
    ChatRequest,
    FinishReason,
    GenerationChunk,
    Prompt,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    Usage,
)
from compat.openai.sampling import integer_too_large
from gateway.config import LlmLimits
from gateway.errors import InvalidRequest
from gateway.registry import CHAT, Lease, Registry
from gateway.serving.owned import Owned, Pending, Waiting, admit_for_stream, ready

__all__ = ["Chat", "ChoiceReader", "Clock", "Limits", "Meter", "collect"]


class Limits:
    """What one request may ask of the model serving it (``server.llm_limits``): choices, and
    completion tokens in all. Checked before any work, from the request alone; a request that sets no
    ``max_tokens`` is not refused but has each choice capped at its share (:meth:`share`)."""

    def __init__(self, config: LlmLimits | None = None) -> None:
        self.config = config or LlmLimits()

    def budget(self, backend: ChatBackend) -> int:
        return self.config.max_request_tokens or backend.slots * backend.context_length

    def check(self, backend: ChatBackend, sampling: SamplingParams, prompts: int = 1) -> None:
        n, most_n = sampling.n, self.config.max_n or backend.slots
        if n > most_n:
            why = (" (server.llm_limits.max_n)" if self.config.max_n else
                   " (the choices this model decodes at once)")
            raise integer_too_large("n", most_n, n, why)
        budget = self.budget(backend)
        if sampling.max_tokens is None:
            if n * prompts > budget:
                raise InvalidRequest(f"This request asks for {n * prompts} choices; this server generates at"
                                     f" most {budget} tokens for one request. Lower 'n'.", param="n",
                                     code="invalid_value")
            return
        each = min(sampling.max_tokens, backend.context_length)  # more than the context fails on its own
        asked = prompts * n * each
        if asked <= budget:
            return
        param = "max_tokens" if each > budget else "n" if n * each > budget else "prompt"
        shape = f"{prompts} prompts × " if prompts > 1 else ""
        raise InvalidRequest(f"This request asks for up to {asked} completion tokens ({shape}{n} choices × {each}"
                             f" tokens); this server generates at most {budget} tokens for one request. Lower"
                             " 'n', 'max_tokens' or the number of prompts.", param=param, code="invalid_value")

    def share(self, backend: ChatBackend, prompt: Prompt, prompts: int = 1) -> Prompt:
        """``prompt``, its choices capped at their share of the budget when it sets no ``max_tokens`` and
        the rest of the context would exceed it (else it runs until the context is full)."""
        sampling = prompt.sampling
        if sampling.max_tokens is not None:
            return prompt
        share = self.budget(backend) // (sampling.n * prompts)
        if share >= backend.context_length - prompt.n_tokens:
            return prompt
        return dataclasses.replace(prompt, sampling=dataclasses.replace(sampling, max_tokens=share))


class Meter(Protocol):
    """Where a generation reports its progress (the metrics)."""

    def chunk(self, completion_tokens: int) -> None: ...

    def end(self) -> None: ...


class Clock:
    """When a generation was asked for, started, produced its first token and ended."""

    def __init__(self, received: float | None = None) -> None:
        now = time.perf_counter()
        self.received = now if received is None else received
        self.started = self.first = self.ended = now

    def start(self) -> None:
        self.started = self.first = time.perf_counter()

    def token(self) -> None:
        if self.first == self.started:
            self.first = time.perf_counter()

    def end(self) -> None:
        self.ended = time.perf_counter()

    def timings(self) -> Timings:
        return Timings(queued=self.started - self.received, prompt=self.first - self.started,
                       completion=self.ended - self.first)


@dataclass(slots=True)
class _Choice:
    reader: ToolCallReader | None
    logprobs: bool
    content: list[str] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    """[id, name, arguments so far] of each tool call."""
    log: list[TokenLogprob] = field(default_factory=list)
    finish: FinishReason | None = None
    generated: int = 0
    cached: int = 0

    def result(self) -> ChoiceResult:
        return ChoiceResult(content="".join(self.content), finish_reason=self.finish,
                            tool_calls=[ToolCall(id=i, name=n, arguments=a) for i, n, a in self.calls],
                            logprobs=self.log if self.logprobs else None)


class ChoiceReader:
    """Reads a generation's chunks into the events of each choice: text, tool calls, the finish."""

    def __init__(self, prompt: Prompt) -> None:
        self.prompt = prompt
        want = prompt.sampling.logprobs is not None
        self.choices = [_Choice(ToolCallReader(prompt.tools) if prompt.tools else None, want)
                        for _ in range(prompt.sampling.n)]
        self.prompt_tokens = prompt.n_tokens
        """The prompt's tokens; an engine that tokenises elsewhere tells them in its chunks."""

    def read(self, chunk: GenerationChunk) -> list[Event | FinishReason]:
        choice = self.choices[chunk.index]
        choice.generated = chunk.completion_tokens
        choice.cached = chunk.cached_tokens
        choice.log.extend(chunk.logprobs)
        self.prompt_tokens = max(self.prompt_tokens, chunk.prompt_tokens)
        events: list[Event | FinishReason] = []
        if choice.reader is None:
            if chunk.text or chunk.logprobs:
                events.append(ContentText(chunk.text))
            events.extend(_read_calls(chunk.calls))
        else:
            events.extend(choice.reader.feed(chunk.text))
            if chunk.finish_reason is not None:
                events.extend(choice.reader.finish())
        for e in events:
            if isinstance(e, ContentText):
                choice.content.append(e.text)
            elif isinstance(e, CallStart):
                choice.calls.append([e.id, e.name, ""])
            elif isinstance(e, CallArguments):
                choice.calls[e.index][2] += e.fragment
        if chunk.finish_reason is not None:
            reason = chunk.finish_reason
            plan = self.prompt.tools
            if reason == "stop" and choice.calls and plan is not None and plan.mode != "named":
                reason = "tool_calls"  # OpenAI answers "stop" when the function was named in tool_choice
            choice.finish = reason
            events.append(reason)
        return events

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, sum(c.generated for c in self.choices), self.choices[0].cached)

    def finished(self) -> bool:
        return all(c.finish is not None for c in self.choices)

    def results(self) -> list[ChoiceResult]:
        return [c.result() for c in self.choices]


def _read_calls(pieces: tuple[CallPiece, ...]) -> list[Event]:
    """The events of tool calls an engine read itself: a call opens with its first piece."""
    events: list[Event] = []
    for piece in pieces:
        if piece.name is not None:
            events.append(CallStart(piece.index, piece.id or f"call_{piece.index}", piece.name))
        if piece.arguments:
            events.append(CallArguments(piece.index, piece.arguments))
    return events


async def collect(backend: ChatBackend, prompt: Prompt, clock: Clock, meter: Meter) -> ChoiceReader:
    """A generation, collected: every choice's totals."""
    reader = ChoiceReader(prompt)
    clock.start()
    try:
        async for chunk in backend.generate(prompt):
            clock.token()
            meter.chunk(chunk.completion_tokens)
            reader.read(chunk)
    finally:
        meter.end()
    clock.end()
    return reader


class Chat:
    def __init__(self, registry: Registry, limits: Limits | None = None) -> None:
        self._registry = registry
        self._limits = limits or Limits()

    async def _prepare(self, backend: ChatBackend, request: ChatRequest) -> Prompt:
        self._limits.check(backend, request.sampling)
        return self._limits.share(backend, await backend.prepare_chat(request))

    async def answer(self, model: str, request: ChatRequest, meter: Meter, *,
                     received: float | None = None) -> ChatAnswer:
        """The whole answer, once generated."""
        clock = Clock(received)
        async with self._registry.lease(model, CHAT) as held:
            prompt = await self._prepare(held.backend, request)
            reader = await collect(held.backend, prompt, clock, meter)
        return ChatAnswer(reader.results(), reader.usage(), clock.timings())

    async def count(self, model: str, request: ChatRequest) -> int:
        """The prompt tokens ``request`` makes on ``model`` (its template rendered, its text tokenised);
        nothing is generated."""
        async with self._registry.lease(model, CHAT) as held:
            prompt = await held.backend.prepare_chat(request)
        if prompt.request is not None:  # handed on whole: the upstream alone templates and tokenises it
            raise InvalidRequest(f"The model '{model}' is served by an upstream server, which counts its own"
                                 " tokens; they cannot be counted here before a request is sent.", param="model",
                                 code="model_not_supported")
        return prompt.n_tokens

    async def stream(self, model: str, request: ChatRequest, meter: Meter, *,
                     received: float | None = None) -> Owned[ChatEvent]:
        """The answer as events. A bad request fails here, before any event, when the model is loaded
        (or loads within a moment); a model still loading after that sends :class:`Waiting` meanwhile."""
        pending = await admit_for_stream(self._registry, model, CHAT)
        prompt: Prompt | None = None
        if isinstance(pending, Lease):
            try:
                prompt = await self._prepare(pending.backend, request)
            except BaseException:
                pending.release()
                raise
        return Owned(pending, self._events(pending, prompt, request, meter, Clock(received)))

    async def _events(self, pending: Pending[ChatBackend], prompt: Prompt | None, request: ChatRequest,
                      meter: Meter, clock: Clock) -> AsyncGenerator[ChatEvent, None]:
        try:
            async for item in ready(pending):
                if isinstance(item, Waiting):
                    yield item
                    continue
                backend = item.backend
                if prompt is None:
                    prompt = await self._prepare(backend, request)
                async for event in _generation(backend, prompt, clock, meter):
                    yield event
        finally:
            meter.end()


async def _generation(backend: ChatBackend, prompt: Prompt, clock: Clock, meter: Meter) -> AsyncIterator[ChatEvent]:
    reader = ChoiceReader(prompt)
    for index in range(prompt.sampling.n):
        yield ChoiceOpened(index)
    want_logprobs = reader.choices[0].logprobs
    clock.start()
    async for chunk in backend.generate(prompt):
        clock.token()
        meter.chunk(chunk.completion_tokens)
        logprobs: tuple[TokenLogprob, ...] | None = chunk.logprobs if want_logprobs else None
        index = chunk.index
        for item in reader.read(chunk):
            if isinstance(item, ContentText):
                yield TextDelta(index, item.text, logprobs)
                logprobs = None if logprobs is None else ()
            elif isinstance(item, CallStart):
                yield CallOpened(index, item.index, item.id, item.name)
            elif isinstance(item, CallArguments):
                yield CallDelta(index, item.index, item.fragment)
            else:
                clock.end()
                yield ChoiceFinished(index, item, reader.finished(), reader.usage(), clock.timings())
    yield AnswerEnd(reader.usage(), clock.timings())
