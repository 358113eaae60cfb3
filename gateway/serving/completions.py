"""Legacy completions: one or more prompts, each with ``n`` choices, on one lease of the model.

Prompts given as token ids may be another tokenizer's (a dialect's own model names): the route hands a
:data:`TokenIds` reader that turns those into text once the model, and so its real name, is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence

from backends.answers import AnswerEnd, CompletionAnswer, CompletionEvent, TextPiece
from backends.base import ChatBackend
from backends.types import CompletionRequest, Prompt, Usage
from gateway.registry import CHAT, Lease, Registry
from gateway.serving.chat import ChoiceReader, Clock, Meter, collect
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
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def _prepare(self, lease: Lease[ChatBackend], requests: list[CompletionRequest],
                       token_ids: TokenIds | None) -> list[Prompt]:
        if token_ids is not None:
            requests = await asyncio.to_thread(token_ids, lease.requested, lease.name, requests)
        return [await lease.backend.prepare_completion(r) for r in requests]

    async def answer(self, model: str, requests: list[CompletionRequest], meter: Callable[[], Meter], *,
                     token_ids: TokenIds | None = None) -> CompletionAnswer:
        """Every prompt's choices (generated together), each with its prompt's text when echoed."""
        async with self._registry.lease(model, CHAT) as held:
            prompts = await self._prepare(held, requests, token_ids)
            readers = await asyncio.gather(*(collect(held.backend, p, Clock(), meter()) for p in prompts))
        echo = requests[0].echo
        choices = [(prompt.text if echo else "", choice) for prompt, reader in zip(prompts, readers, strict=True)
                   for choice in reader.results()]
        return CompletionAnswer(choices, _total(readers))

    async def stream(self, model: str, requests: list[CompletionRequest], meter: Callable[[], Meter], *,
                     token_ids: TokenIds | None = None) -> Owned[CompletionEvent]:
        """The choices as text pieces, prompt after prompt. A bad prompt fails here, before any event."""
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
