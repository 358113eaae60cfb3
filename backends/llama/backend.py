"""The async face of a llama.cpp model: a :class:`~backends.base.ChatBackend` over its one thread.

Everything the model does happens on that thread (:class:`~backends.llama.scheduler.Scheduler`);
coroutines here hand it work through its call queue and read what comes back from an asyncio queue.
What needs no model call stays off it, so it never waits between two decode steps: a chat's template
is rendered, and any prompt measured against the context, on a worker thread; only a prompt that can
fit is tokenised on the model's thread (see :mod:`backends.llama.prompts`).

A reader never waits on the thread blindly: every :data:`CHECK_EVERY` seconds without news it looks at
the engine, and fails with :class:`~backends.errors.EngineBroken` when the thread has died or one pass
of its loop has taken longer than ``options.step_timeout`` (a wedged engine call). :attr:`failure`
tells the registry, which then loads the model afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from backends.errors import EngineBroken, EngineFailure
from backends.llama.engine import Engine, find_gguf, projector_path
from backends.llama.groups import END, Group, Retry
from backends.llama.options import Options
from backends.llama.prompts import ChatTemplate, PromptBuilder
from backends.llama.scheduler import Scheduler
from backends.types import ChatRequest, CompletionRequest, GenerationChunk, Prompt

__all__ = ["CHECK_EVERY", "LlamaCppBackend"]

T = TypeVar("T")

CHECK_EVERY = 1.0
"""Seconds a reader waits for the engine's thread before it checks that the thread is alive and not wedged."""


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
        self._step_timeout = options.step_timeout

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

    @property
    def failure(self) -> str | None:
        """Why the engine can serve no more (None: it can): its thread died, or it is wedged in a call."""
        scheduler = self._scheduler
        if scheduler.broken is None:
            if not self._thread.is_alive() and not scheduler.stopping:
                scheduler.fail("its thread has died")
            elif self._step_timeout is not None and scheduler.heartbeat.busy_for() > self._step_timeout:
                scheduler.fail(f"one of its steps has taken more than {self._step_timeout:g} s")
        return scheduler.broken

    def _check(self) -> None:
        """Raise when the engine can no longer answer: broken, or closed."""
        reason = self.failure
        if reason is not None:
            raise EngineBroken(reason)
        if not self._thread.is_alive():
            raise EngineFailure("The model was unloaded while generating.")

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread, between two decode steps."""
        self._check()
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():  # its caller gave up waiting
                return
            try:
                future.set_result(fn())
            except Exception as e:
                future.set_exception(e)
            except BaseException as e:  # the thread is being stopped: tell the caller, then stop
                future.set_exception(EngineFailure(f"The engine stopped ({type(e).__name__})."))
                raise

        self._scheduler.calls.put(run)
        waiting = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=CHECK_EVERY)
                if done:
                    return waiting.result()
                self._check()
        finally:
            waiting.cancel()  # no-op once done; else the call is skipped if it has not started

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
        self._check()
        scheduler.calls.put(lambda: scheduler.enqueue(prompt, group))
        # Choices whose check holds keywords the grammar cannot: sent only once checked.
        holding = prompt.check is not None and bool(prompt.check.held_at)
        held: dict[int, list[GenerationChunk]] = {}
        try:
            while True:
                try:
                    async with asyncio.timeout(CHECK_EVERY):
                        item = await group.out.get()
                except TimeoutError:
                    self._check()
                    continue
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

    def draft_tokens(self) -> tuple[int, int]:
        return self._scheduler.drafted, self._scheduler.kept

    def close(self) -> None:
        scheduler = self._scheduler

        def stop() -> None:
            scheduler.stopping = True

        scheduler.calls.put(stop)
        # A wedged thread may never come back: it frees the engine itself if it does.
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=30 if scheduler.broken is None else 1)
