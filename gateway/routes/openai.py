"""The OpenAI dialect: chat, legacy completions, embeddings and models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.params import FromPath
from litestar.response import Stream

from backends.base import ChatBackend, EmbeddingBackend
from backends.tool_calls import CallArguments, CallStart, ContentText, Event, ToolCallReader
from backends.types import FinishReason, GenerationChunk, ModelType, Prompt, TokenLogprob, ToolCall, Usage
from compat.groq import GroqTimings, new_groq_id, screen_groq_fields, usage_with_timings, with_x_groq
from compat.openai.chat import ChatStream, ChoiceResult, chat_completion, parse_chat_request
from compat.openai.completions import (
    CompletionChoice,
    CompletionChunkBuilder,
    completion_logprobs,
    parse_completion_request,
    prompts_as_text,
    text_completion,
)
from compat.openai.embeddings import embedding_response, inputs_as_text, parse_embeddings_request
from compat.openai.models import ModelCard, ModelList
from compat.openai.vocab import openai_encoding
from gateway.errors import Fields
from gateway.observability import GenerationMeter, meter_generation, set_request_model
from gateway.registry import Lease
from gateway.routes.common import (
    acquire_for_stream,
    backend_as,
    dropped_headers,
    json_response,
    read_object,
    registry_of,
    release_when_done,
    unless_disconnected,
    wait_with_keepalive,
)
from gateway.sse import DONE, KEEPALIVE, event, sse_response
from gateway.vision import resolve_images

__all__ = ["openai_router"]


def _chat(lease: Lease) -> ChatBackend:
    backend: ChatBackend = backend_as(lease, ChatBackend)
    return backend


class _Clock:
    """When a generation was asked for, started, produced its first token and ended (Groq's timings)."""

    def __init__(self) -> None:
        self.received = self.started = self.first = self.ended = time.perf_counter()

    def start(self) -> None:
        self.started = self.first = time.perf_counter()

    def token(self) -> None:
        if self.first == self.started:
            self.first = time.perf_counter()

    def end(self) -> None:
        self.ended = time.perf_counter()

    def timings(self) -> GroqTimings:
        return GroqTimings(queue_time=self.started - self.received, prompt_time=self.first - self.started,
                           completion_time=self.ended - self.first)


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


class _Choices:
    """Reads a generation's chunks into the events of each choice: text, tool calls, the finish.

    Both answers use it: the stream sends the events as they come, the plain answer keeps the totals.
    """

    def __init__(self, prompt: Prompt) -> None:
        self.prompt = prompt
        want = prompt.sampling.logprobs is not None
        self.choices = [_Choice(ToolCallReader(prompt.tools) if prompt.tools else None, want)
                        for _ in range(prompt.sampling.n)]

    def read(self, chunk: GenerationChunk) -> list[Event | FinishReason]:
        choice = self.choices[chunk.index]
        choice.generated = chunk.completion_tokens
        choice.cached = chunk.cached_tokens
        choice.log.extend(chunk.logprobs)
        events: list[Event | FinishReason] = []
        if choice.reader is None:
            if chunk.text or chunk.logprobs:
                events.append(ContentText(chunk.text))
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
        return Usage(self.prompt.n_tokens, sum(c.generated for c in self.choices), self.choices[0].cached)

    def finished(self) -> bool:
        return all(c.finish is not None for c in self.choices)


async def _collect(backend: ChatBackend, prompt: Prompt, clock: _Clock, meter: GenerationMeter) -> _Choices:
    """The non-streaming answer: the stream, collected."""
    choices = _Choices(prompt)
    clock.start()
    try:
        async for chunk in backend.generate(prompt):
            clock.token()
            meter.chunk(chunk.completion_tokens)
            choices.read(chunk)
    finally:
        meter.end()
    clock.end()
    return choices


def is_groq(request: Request[Any, Any, Any]) -> bool:
    """Whether the request came in under Groq's ``/openai/v1`` (same routes, Groq's extras)."""
    return bool(request.route_handler.opt.get("dialect") == "groq")


# --------------------------------------------------------------------------------------------------
# Chat


@post("/chat/completions", status_code=200, opt={"fields": Fields(input="messages")})
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    clock = _Clock()
    raw, policy = await read_object(request)
    groq_id = new_groq_id() if is_groq(request) else None
    if groq_id:
        screen_groq_fields(raw, policy)
    parsed = parse_chat_request(raw, policy)
    set_request_model(request, parsed.model)
    parsed.request = await resolve_images(request, parsed.model, parsed.request)
    headers = dropped_headers(request, policy)
    registry = registry_of(request)

    if not parsed.stream:
        async with registry.lease(parsed.model, ModelType.LLM) as held:
            backend = _chat(held)
            ready = await backend.prepare_chat(parsed.request)
            done = await unless_disconnected(request, _collect(backend, ready, clock, meter_generation(request)))
        usage = done.usage()
        completion = chat_completion(parsed.model, [c.result() for c in done.choices], usage)
        if groq_id:
            return json_response(with_x_groq(completion, groq_id, top_level_usage=True,
                                             usage=usage_with_timings(usage, clock.timings())), headers)
        return json_response(completion, headers)

    pending = await acquire_for_stream(registry, parsed.model, ModelType.LLM)
    prompt: Prompt | None = None
    if isinstance(pending, Lease):
        try:
            prompt = await _chat(pending).prepare_chat(parsed.request)
        except BaseException:
            pending.release()
            raise
    builder = ChatStream(parsed.model, parsed.include_usage)
    meter = meter_generation(request)

    async def frames() -> AsyncIterator[bytes]:
        try:
            lease = pending
            if not isinstance(lease, Lease):
                async for beat in wait_with_keepalive(lease, KEEPALIVE):
                    yield beat
                lease = lease.result()
            backend = _chat(lease)
            ready = prompt if prompt is not None else await backend.prepare_chat(parsed.request)
            choices = _Choices(ready)
            for index in range(ready.sampling.n):
                first = builder.first(index)
                yield event(with_x_groq(first, groq_id) if groq_id and index == 0 else first)
            clock.start()
            async for chunk in backend.generate(ready):
                clock.token()
                meter.chunk(chunk.completion_tokens)
                logprobs: tuple[TokenLogprob, ...] | None = chunk.logprobs if choices.choices[0].logprobs else None
                for item in choices.read(chunk):
                    index = chunk.index
                    if isinstance(item, ContentText):
                        yield event(builder.content(item.text, index, logprobs))
                        logprobs = None if logprobs is None else ()
                    elif isinstance(item, CallStart):
                        yield event(builder.tool_call(index, item.index, id=item.id, name=item.name))
                    elif isinstance(item, CallArguments):
                        yield event(builder.tool_call(index, item.index, arguments=item.fragment))
                    else:
                        clock.end()
                        last = builder.finish(item, index)
                        if groq_id and choices.finished():  # Groq puts the usage on the chunk that finishes
                            yield event(with_x_groq(last, groq_id,
                                                    usage=usage_with_timings(choices.usage(), clock.timings())))
                        else:
                            yield event(last)
            if builder.include_usage:
                yield event(builder.usage(choices.usage()))
            yield DONE
        finally:
            release_when_done(pending)
            meter.end()

    return sse_response(frames(), headers)


# --------------------------------------------------------------------------------------------------
# Legacy completions


@post("/completions", status_code=200, opt={"fields": Fields(input="prompt")})
async def completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    raw, policy = await read_object(request)
    parsed = parse_completion_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    registry = registry_of(request)

    lease = await registry.acquire(parsed.model, ModelType.LLM)
    try:
        backend = _chat(lease)
        requests = parsed.requests
        encoding = openai_encoding(lease.requested, lease.name, [r.prompt for r in requests])
        if encoding is not None:  # token ids under an OpenAI model name are OpenAI's
            requests = await asyncio.to_thread(prompts_as_text, requests, model=lease.requested, encoding_name=encoding)
        prompts = [await backend.prepare_completion(r) for r in requests]
    except BaseException:
        lease.release()
        raise
    echo = parsed.requests[0].echo
    n = parsed.requests[0].sampling.n

    if not parsed.stream:
        try:
            results = await unless_disconnected(request, asyncio.gather(
                *(_collect(backend, p, _Clock(), meter_generation(request)) for p in prompts)))
        finally:
            lease.release()
        choices = []
        for i, (prompt, done) in enumerate(zip(prompts, results, strict=True)):
            head = prompt.text if echo else ""
            for j, c in enumerate(done.choices):
                logprobs = completion_logprobs(c.log, len(head)) if c.logprobs else None
                choices.append(CompletionChoice(text=head + "".join(c.content), index=i * n + j,
                                                finish_reason=c.finish, logprobs=logprobs))
        usage = Usage(sum(d.usage().prompt_tokens for d in results), sum(d.usage().completion_tokens for d in results),
                      sum(d.usage().cached_tokens for d in results))
        return json_response(text_completion(parsed.model, choices, usage), headers)

    builder = CompletionChunkBuilder(parsed.model, parsed.include_usage)
    meter = meter_generation(request)

    async def frames() -> AsyncIterator[bytes]:
        try:
            prompt_tokens = completion_tokens = cached_tokens = 0
            for i, prompt in enumerate(prompts):
                offsets = [len(prompt.text) if echo else 0] * n
                if echo:
                    for j in range(n):
                        yield event(builder.chunk(i * n + j, prompt.text))
                done = _Choices(prompt)
                async for chunk in backend.generate(prompt):
                    meter.chunk(chunk.completion_tokens)
                    done.read(chunk)
                    if chunk.text or chunk.finish_reason or chunk.logprobs:
                        logprobs = None
                        if prompt.sampling.logprobs is not None:
                            logprobs = completion_logprobs(chunk.logprobs, offsets[chunk.index])
                            offsets[chunk.index] += sum(len(e.token) for e in chunk.logprobs)
                        yield event(builder.chunk(i * n + chunk.index, chunk.text, chunk.finish_reason, logprobs))
                meter.end()
                prompt_tokens += done.usage().prompt_tokens
                completion_tokens += done.usage().completion_tokens
                cached_tokens += done.usage().cached_tokens
            if builder.include_usage:
                yield event(builder.usage(Usage(prompt_tokens, completion_tokens, cached_tokens)))
            yield DONE
        finally:
            lease.release()
            meter.end()

    return sse_response(frames(), headers)


# --------------------------------------------------------------------------------------------------
# Embeddings


@post("/embeddings", status_code=200, opt={"fields": Fields(input="input")})
async def embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    raw, policy = await read_object(request)
    parsed = parse_embeddings_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    async with registry_of(request).lease(parsed.model, ModelType.EMBEDDINGS) as held:
        embedder: EmbeddingBackend = backend_as(held, EmbeddingBackend)
        inputs = parsed.request
        encoding = openai_encoding(held.requested, held.name, inputs.inputs)
        if encoding is not None:  # token ids under an OpenAI model name are OpenAI's
            inputs = await asyncio.to_thread(inputs_as_text, inputs, model=held.requested, encoding_name=encoding)
        result = await unless_disconnected(request, embedder.embed(inputs))
    return json_response(embedding_response(parsed.model, result, parsed.base64), headers)


# --------------------------------------------------------------------------------------------------
# Models


def _card(name: str, created: int) -> ModelCard:
    return ModelCard(id=name, created=created)


@get("/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    created = int(request.app.state.started_at)
    names = registry_of(request).names()
    return json_response(ModelList(data=[_card(name, created) for name in names]))


@get("/models/{model_id:path}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[bytes]:
    name = model_id.lstrip("/")
    registry_of(request).resolve(name)
    return json_response(_card(name, int(request.app.state.started_at)))


def openai_router(path: str = "/v1", dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[chat_completions, completions, embeddings, list_models,
                                             retrieve_model], opt={"dialect": dialect})

