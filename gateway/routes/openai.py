"""The OpenAI dialect: chat, legacy completions, embeddings and models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.params import FromPath
from litestar.response import Stream

from backends.base import ChatBackend, EmbeddingBackend
from backends.types import FinishReason, GenerationChunk, ModelType, Prompt, Usage
from compat.groq import GroqTimings, new_groq_id, screen_groq_fields, usage_with_timings, with_x_groq
from compat.openai.chat import ChatStream, chat_completion, parse_chat_request
from compat.openai.completions import CompletionChunkBuilder, parse_completion_request, text_completion
from compat.openai.embeddings import embedding_response, parse_embeddings_request
from compat.openai.models import ModelCard, ModelList
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


async def _collect(backend: ChatBackend, prompt: Prompt, clock: _Clock,
                   meter: GenerationMeter) -> tuple[str, FinishReason | None, Usage]:
    """The non-streaming answer: the stream, collected."""
    parts: list[str] = []
    last = GenerationChunk(text="", prompt_tokens=len(prompt.tokens))
    clock.start()
    try:
        async for chunk in backend.generate(prompt):
            clock.token()
            meter.chunk(chunk.completion_tokens)
            parts.append(chunk.text)
            last = chunk
    finally:
        meter.end()
    clock.end()
    return "".join(parts), last.finish_reason, Usage(len(prompt.tokens), last.completion_tokens)


def is_groq(request: Request[Any, Any, Any]) -> bool:
    """Whether the request came in under Groq's ``/openai/v1`` (same routes, Groq's extras)."""
    return bool(request.route_handler.opt.get("dialect") == "groq")


# --------------------------------------------------------------------------------------------------
# Chat


@post("/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    clock = _Clock()
    raw, policy = await read_object(request)
    groq_id = new_groq_id() if is_groq(request) else None
    if groq_id:
        screen_groq_fields(raw, policy)
    parsed = parse_chat_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    registry = registry_of(request)

    if not parsed.stream:
        async with registry.lease(parsed.model, ModelType.LLM) as held:
            backend = _chat(held)
            ready = await backend.prepare_chat(parsed.request)
            text, finish, usage = await unless_disconnected(request, _collect(backend, ready, clock,
                                                                              meter_generation(request)))
        completion = chat_completion(parsed.model, text, finish, usage)
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
            first = builder.first()
            yield event(with_x_groq(first, groq_id) if groq_id else first)
            completion_tokens = 0
            clock.start()
            async for chunk in backend.generate(ready):
                clock.token()
                meter.chunk(chunk.completion_tokens)
                completion_tokens = chunk.completion_tokens
                if chunk.text:
                    yield event(builder.content(chunk.text))
                if chunk.finish_reason is not None:
                    clock.end()
                    last = builder.finish(chunk.finish_reason)
                    if groq_id:  # Groq puts the usage on the chunk that finishes
                        usage = usage_with_timings(Usage(len(ready.tokens), completion_tokens), clock.timings())
                        yield event(with_x_groq(last, groq_id, usage=usage))
                    else:
                        yield event(last)
            if builder.include_usage:
                yield event(builder.usage(Usage(len(ready.tokens), completion_tokens)))
            yield DONE
        finally:
            release_when_done(pending)
            meter.end()

    return sse_response(frames(), headers)


# --------------------------------------------------------------------------------------------------
# Legacy completions


@post("/completions", status_code=200)
async def completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    raw, policy = await read_object(request)
    parsed = parse_completion_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    registry = registry_of(request)

    lease = await registry.acquire(parsed.model, ModelType.LLM)
    try:
        backend = _chat(lease)
        prompts = [await backend.prepare_completion(r) for r in parsed.requests]
    except BaseException:
        lease.release()
        raise
    echo = parsed.requests[0].echo

    if not parsed.stream:
        try:
            results = await unless_disconnected(request, asyncio.gather(
                *(_collect(backend, p, _Clock(), meter_generation(request)) for p in prompts)))
        finally:
            lease.release()
        choices = [((p.text if echo else "") + text, finish) for p, (text, finish, _) in zip(prompts, results,
                                                                                           strict=True)]
        usage = Usage(sum(u.prompt_tokens for *_, u in results), sum(u.completion_tokens for *_, u in results))
        return json_response(text_completion(parsed.model, choices, usage), headers)

    builder = CompletionChunkBuilder(parsed.model, parsed.include_usage)
    meter = meter_generation(request)

    async def frames() -> AsyncIterator[bytes]:
        try:
            prompt_tokens = completion_tokens = 0
            for index, prompt in enumerate(prompts):
                if echo:
                    yield event(builder.chunk(index, prompt.text))
                generated = 0
                async for chunk in backend.generate(prompt):
                    meter.chunk(chunk.completion_tokens)
                    generated = chunk.completion_tokens
                    if chunk.text or chunk.finish_reason:
                        yield event(builder.chunk(index, chunk.text, chunk.finish_reason))
                meter.end()
                prompt_tokens += len(prompt.tokens)
                completion_tokens += generated
            if builder.include_usage:
                yield event(builder.usage(Usage(prompt_tokens, completion_tokens)))
            yield DONE
        finally:
            lease.release()
            meter.end()

    return sse_response(frames(), headers)


# --------------------------------------------------------------------------------------------------
# Embeddings


@post("/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    raw, policy = await read_object(request)
    parsed = parse_embeddings_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    async with registry_of(request).lease(parsed.model, ModelType.EMBEDDINGS) as held:
        embedder: EmbeddingBackend = backend_as(held, EmbeddingBackend)
        result = await unless_disconnected(request, embedder.embed(parsed.request))
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

