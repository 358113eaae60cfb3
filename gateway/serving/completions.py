"""Legacy completions: one or more prompts, each with ``n`` choices, on one lease of the model.

Prompts given as token ids may be another tokenizer's (a dialect's own model names): the route hands a
:data:`TokenIds` reader that turns those into text once the model, and so its real name, is known.

A request's prompts are counted and its tokens in all bounded (:class:`~gateway.serving.chat.Limits`)
before any is prepared, and its prompts go to the model a round of its slots at a time: the model's
queue never holds more of one request's choices than the model decodes at once, so another client's
request, queued meanwhile, is served between two rounds rather than after all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence

from backends.answers import AnswerEnd, CompletionAnswer, CompletionEvent, TextPiece
from backends.base import ChatBackend
from backends.types import CompletionRequest, Prompt, Usage
from compat.openai.sampling import array_too_long
from gateway.registry import CHAT, Lease, Registry
from gateway.serving.chat import ChoiceReader, Clock, Limits, Meter, collect
from gateway.serving.owned import Owned

__all__ = ["Completions", "TokenIds"]

TokenIds = Callable[[str, str, list[CompletionRequest]], list[CompletionRequest]]
"""(the name the client used, the model's name, the requests) → the requests, with token-id prompts
that are not the model's own read into text. Runs on a worker thread."""


def _total(readers: Sequence[ChoiceReader]) -> Usage:
    usages = [r.usage() for r in readers]
    return Usage(sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages),
                 sum(u.cached_tokens for u in usages))


class Completions:
    def __init__(self, registry: Registry, limits: Limits | None = None) -> None:
        self._registry = registry
        self._limits = limits or Limits()

    def _count(self, requests: list[CompletionRequest]) -> None:
        """Refuse more prompts than allowed, before waiting for a turn at the model."""
        most = self._limits.config.max_prompts
        if len(requests) > most:
            raise array_too_long("prompt", most, len(requests))

    async def _prepare(self, lease: Lease[ChatBackend], requests: list[CompletionRequest],
                       token_ids: TokenIds | None) -> list[Prompt]:
        self._limits.check(lease.backend, requests[0].sampling, len(requests))
        if token_ids is not None:
            requests = await asyncio.to_thread(token_ids, lease.requested, lease.name, requests)
        backend, count = lease.backend, len(requests)
        return [self._limits.share(backend, await backend.prepare_completion(r), count) for r in requests]

    async def answer(self, model: str, requests: list[CompletionRequest], meter: Callable[[], Meter], *,
                     token_ids: TokenIds | None = None) -> CompletionAnswer:
        """Every prompt's choices (a round of the model's slots at a time), each with its prompt's text
        when echoed."""
        self._count(requests)
        async with self._registry.lease(model, CHAT) as held:
            backend = held.backend
            prompts = await self._prepare(held, requests, token_ids)
            turns = asyncio.Semaphore(max(1, backend.slots // prompts[0].sampling.n))

            async def collected(prompt: Prompt) -> ChoiceReader:
                async with turns:
                    return await collect(backend, prompt, Clock(), meter())

            tasks = [asyncio.ensure_future(collected(p)) for p in prompts]
            try:
                readers = await asyncio.gather(*tasks)
            except BaseException:  # one failed: the others stop too, before the lease is given back
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        echo = requests[0].echo
        choices = [(prompt.text if echo else "", choice) for prompt, reader in zip(prompts, readers, strict=True)
                   for choice in reader.results()]
        return CompletionAnswer(choices, _total(readers))

    async def stream(self, model: str, requests: list[CompletionRequest], meter: Callable[[], Meter], *,
                     token_ids: TokenIds | None = None) -> Owned[CompletionEvent]:
        """The choices as text pieces, prompt after prompt. A bad prompt fails here, before any event."""
        self._count(requests)
        lease = await self._registry.acquire(model, CHAT)
        try:
            prompts = await self._prepare(lease, requests, token_ids)
        except BaseException:
            lease.release()
            raise
        return Owned(lease, _pieces(lease.backend, prompts, requests[0].echo, meter))


async def _pieces(backend: ChatBackend, prompts: list[Prompt], echo: bool,
                  meter: Callable[[], Meter]) -> AsyncGenerator[CompletionEvent, None]:
    readers: list[ChoiceReader] = []
    for i, prompt in enumerate(prompts):
        n = prompt.sampling.n
        offsets = [len(prompt.text) if echo else 0] * n
        if echo:
            for j in range(n):
                yield TextPiece(i * n + j, prompt.text)
        reader = ChoiceReader(prompt)
        readers.append(reader)
        metered = meter()
        try:
            async for chunk in backend.generate(prompt):
                metered.chunk(chunk.completion_tokens)
                reader.read(chunk)
                if chunk.text or chunk.finish_reason or chunk.logprobs:
                    logprobs = chunk.logprobs if prompt.sampling.logprobs is not None else None
                    yield TextPiece(i * n + chunk.index, chunk.text, chunk.finish_reason, logprobs,
                                    offsets[chunk.index])
                    offsets[chunk.index] += sum(len(e.token) for e in chunk.logprobs)
        finally:
            metered.end()
    yield AnswerEnd(_total(readers), Clock().timings())
