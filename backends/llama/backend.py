"""The async face of a llama.cpp model: a :class:`~backends.base.ChatBackend` over its one thread.

Everything the model does happens on that thread (:class:`~backends.llama.scheduler.Scheduler`);
coroutines here hand it work through its call queue and read what comes back from an asyncio queue.
What needs no model call stays off it, so it never waits between two decode steps: a chat's template
is rendered, and any prompt measured against the context, on a worker thread; only a prompt that can
fit is tokenised on the model's thread (see :mod:`backends.llama.prompts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from backends.llama.engine import Engine, find_gguf, projector_path
from backends.llama.options import Options
from backends.llama.prompts import ChatTemplate, PromptBuilder
from backends.llama.scheduler import END, Group, Retry, Scheduler
from backends.types import ChatRequest, CompletionRequest, GenerationChunk, Prompt

__all__ = ["LlamaCppBackend"]

T = TypeVar("T")


def _token_reach(engine: Engine) -> tuple[int | None, bool]:
    """The most bytes of text one token covers, and whether a special token strips the whitespace beside
    it: what the size check of :class:`PromptBuilder` needs. None for a vocabulary whose tokenizer
    normalises text (WordPiece, Unigram), where a token may stand for more text than its own."""
    lc, vocab = engine.lc, engine.vocab
    if lc.llama_vocab_type(vocab) not in (lc.LLAMA_VOCAB_TYPE_SPM, lc.LLAMA_VOCAB_TYPE_BPE, lc.LLAMA_VOCAB_TYPE_RWKV):
        return None, False
    strip = lc.LLAMA_TOKEN_ATTR_LSTRIP | lc.LLAMA_TOKEN_ATTR_RSTRIP
    strips = any(lc.llama_vocab_get_attr(vocab, t) & strip for t in range(engine.n_vocab))
    return max(len(engine.piece(t, special=True)) for t in range(engine.n_vocab)), strips


class LlamaCppBackend:
    """A :class:`backends.base.ChatBackend` over one GGUF model."""

    def __init__(self, files: Path, options: Options) -> None:
        path = find_gguf(files)
        mmproj = projector_path(files, options.mmproj) if options.mmproj else None
        ready: Future[tuple[Engine, Scheduler, PromptBuilder]] = Future()
        self._thread = threading.Thread(target=self._main, args=(path, options, mmproj, ready),
                                        name=f"llama:{path.stem}", daemon=True)
        self._thread.start()
        self._engine, self._scheduler, self._prompts = ready.result()

    @staticmethod
    def _main(path: Path, options: Options, mmproj: Path | None,
              ready: Future[tuple[Engine, Scheduler, PromptBuilder]]) -> None:
        """The engine's thread: load, then serve until closed."""
        try:
            engine = Engine(path, options, mmproj)
            try:
                template = (ChatTemplate.jinja(engine.template, bos_text=engine.bos_text, eos_text=engine.eos_text)
                            if engine.template else None)
            except BaseException:
                engine.free()
                raise
            per_token, strips = _token_reach(engine)
            prompts = PromptBuilder(engine, template, engine.projector, per_token, strips)
            scheduler = Scheduler(engine)
        except BaseException as e:
            ready.set_exception(e)
            return
        ready.set_result((engine, scheduler, prompts))
        scheduler.run()

    @property
    def context_length(self) -> int:
        return self._engine.n_ctx_seq

    @property
    def slots(self) -> int:
        return self._engine.options.parallel

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread, between two decode steps."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:
                future.set_exception(e)

        self._scheduler.calls.put(run)
        return await asyncio.wrap_future(future)

    async def prepare_chat(self, request: ChatRequest) -> Prompt:
        prompts = self._prompts
        draft = await asyncio.to_thread(prompts.draft_chat, request)
        return await self._call(lambda: prompts.finish_chat(draft))

    async def prepare_completion(self, request: CompletionRequest) -> Prompt:
        if isinstance(request.prompt, str):
            await asyncio.to_thread(self._prompts.check_size, request.prompt)
        elif len(request.prompt) >= self.context_length:
            self._prompts.check_fits(len(request.prompt), request.sampling)  # refused here, not between steps
        return await self._call(lambda: self._prompts.completion(request))

    async def generate(self, prompt: Prompt) -> AsyncIterator[GenerationChunk]:
        scheduler = self._scheduler
        group = Group(loop=asyncio.get_running_loop(), out=asyncio.Queue(), remaining=prompt.sampling.n,
                      outbox=scheduler.outbox)
        scheduler.calls.put(lambda: scheduler.enqueue(prompt, group))
        # Choices whose check holds keywords the grammar cannot: sent only once checked.
        holding = prompt.check is not None and bool(prompt.check.held_at)
        held: dict[int, list[GenerationChunk]] = {}
        try:
            while True:
                item = await group.out.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Retry):
                    held.pop(item.index, None)
                    continue
                if holding:
                    held.setdefault(item.index, []).append(item)
                    if item.finish_reason is None:
                        continue
                    for chunk in held.pop(item.index):
                        yield chunk
                    continue
                yield item
        finally:
            group.cancelled.set()
            scheduler.calls.put(lambda: None)  # wake the loop so it frees the slots now

    def close(self) -> None:
        scheduler = self._scheduler

        def stop() -> None:
            scheduler.stopping = True

        scheduler.calls.put(stop)
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=30)
