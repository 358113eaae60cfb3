"""Continuous batching on the engine's thread: sequences, slots, the prompt cache, checked replies.

Requests reach the thread through :attr:`Scheduler.calls`; what they produce goes back to each
reader's event loop through one :class:`~backends.streaming.Outbox` (one wake-up of a loop per step,
or per ``stream_interval_ms``).

Each step decodes, in one ``llama_decode``, one token for every running sequence plus a chunk of any
prompt still being read, so ``parallel`` > 1 serves several streams at once. A sequence whose reader
has gone away is dropped at the next step and its KV cells freed.

Each slot remembers which tokens its KV cells hold. A new sequence takes the free slot whose cache
shares the longest prefix with its prompt and reads only the rest; when another slot (running or not)
shares a much longer prefix, its cells are copied over first. So a long system prompt is read once,
and the ``n`` choices of one request read their prompt once.

What fails on the thread fails as little as it can. A sampler or text callback that raises fails its
own choice, and the other streams go on. A decode that fails in a way that leaves the context unknown,
or anything else escaping the loop, *breaks* the engine (:attr:`Scheduler.broken`): every sequence
fails with :class:`~backends.errors.EngineBroken`, the thread frees the engine and ends, and the
registry loads the model afresh for the next request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.errors import DomainError, EngineBroken, EngineFailure, SchemaNotSatisfied
from backends.grammars import OutputCheck
from backends.llama.drafts import PromptLookup
from backends.llama.engine import Engine
from backends.llama.groups import END, Group, Retry
from backends.llama.sampling import free_sampler, make_sampler, sample, token_logprob
from backends.streaming import Outbox, TextAssembler
from backends.threads import Heartbeat
from backends.types import FinishReason, GenerationChunk, Prompt, TokenLogprob

__all__ = ["CHECK_ATTEMPTS", "COPY_MIN_TOKENS", "RETRY_TEMPERATURE", "Scheduler"]

log = logging.getLogger("syn4pse.llama_cpp")

COPY_MIN_TOKENS = 64
"""Copy another slot's cache only when it saves reading at least this many prompt tokens."""
CHECK_ATTEMPTS = 4
"""Samples of one choice, at most, when its schema has keywords only the check after generation holds."""
RETRY_TEMPERATURE = 1.0
"""The temperature a greedy (temperature 0) choice is sampled again at, after failing its check."""
NO_ROOM = 1
"""``llama_decode``'s code for a batch the KV cache has no room for: that batch fails, the context is sound."""

@dataclass(eq=False)
class _Sequence:
    prompt: Prompt
    group: Group
    index: int = 0
    seed: int | None = None
    leader: _Sequence | None = None
    """For choices 1..n-1 of a long prompt: start once choice 0 has read it, and copy its cache."""
    slot: int = -1
    n_past: int = 0
    n_read: int = 0
    """Prompt tokens already sent to the engine."""
    generated: int = 0
    last_token: int = -1
    sampler: Any = None
    text: TextAssembler | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    done: bool = False
    reused: int = 0
    """Prompt tokens found in the slot's cache."""
    sent: bool = False
    """Whether any text has gone to the reader yet."""
    produced: list[str] = field(default_factory=list)
    """The text sent so far, for the check of a grammar-held choice."""
    attempt: int = 0
    drafts: PromptLookup | None = None
    """Where its drafts come from (None: it is not drafted for)."""
    draft: list[int] = field(default_factory=list)
    """The tokens drafted in the step being decoded."""

    @property
    def prefilled(self) -> bool:
        return self.n_read >= len(self.prompt.tokens) and self.slot >= 0


def _common_prefix(a: list[int], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    """The loop of the engine's thread: runs queued calls, admits sequences, steps them all."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.options = engine.options
        parallel = engine.options.parallel
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        """Work for this thread (a request to prepare or enqueue, a wake-up, the stop), run between steps."""
        self.waiting: list[_Sequence] = []
        self.running: list[_Sequence] = []
        self.free_slots = list(range(parallel))
        self.cached: list[list[int]] = [[] for _ in range(parallel)]
        """The tokens whose KV cells each slot holds, in position order."""
        self.stopping = False
        self.broken: str | None = None
        """Why the engine can serve no more (None: it can). Set once, by this thread or by a reader that
        found it dead or wedged (:meth:`fail`); the loop then ends."""
        self.heartbeat = Heartbeat()
        """How long the loop's current pass has taken: a reader's measure of a wedged engine."""
        self.outbox = Outbox(engine.options.stream_interval_ms / 1000)
        self.drafted = 0
        self.kept = 0
        """Tokens drafted and kept since the engine loaded (read from other threads: plain counters)."""

    def fail(self, reason: str) -> None:
        """The engine is broken (the first reason given stays): the loop stops at its next pass."""
        if self.broken is None:
            self.broken = reason
            log.error("the engine is broken: %s", reason)

    def run(self) -> None:
        """Serve until :attr:`stopping` or :attr:`broken`; then fail what is left and free the engine."""
        try:
            self._serve()
        except BaseException as e:  # the loop itself failed: nothing it held can be trusted
            log.exception("the engine's loop failed")
            self.fail(f"its thread stopped on {type(e).__name__}")
        finally:
            self.heartbeat.idle()
            try:
                self._fail_all()
            finally:
                self.engine.free()

    def _serve(self) -> None:
        while not self.stopping and self.broken is None:
            block = not self.running and not self.waiting
            if block:
                self.heartbeat.idle()
            try:
                call = self.calls.get(block=block)
                self.heartbeat.working()
                self._run_call(call)
                while True:
                    self._run_call(self.calls.get_nowait())
            except queue.Empty:
                pass
            self.heartbeat.working()
            if self.stopping or self.broken is not None:
                break
            self._admit()
            if self.running:
                self._step()
            self.outbox.flush()

    @staticmethod
    def _run_call(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:  # a call reports its own errors to its caller; this one did not
            log.exception("a call on the engine's thread failed")

    def _fail_all(self) -> None:
        """Every sequence left fails: the model is being unloaded, or its engine broke."""
        error = EngineBroken(self.broken) if self.broken is not None else None
        for seq in [*self.running, *self.waiting]:
            seq.group.emit(error or EngineFailure("The model was unloaded while generating."))
            if seq.sampler is not None:
                with contextlib.suppress(Exception):
                    free_sampler(self.engine, seq.sampler)
                seq.sampler = None
            with contextlib.suppress(Exception):
                self._finish(seq)
        self.running.clear()
        self.waiting.clear()
        self.outbox.flush()

    def enqueue(self, prompt: Prompt, group: Group) -> None:
        """Queue the ``n`` choices of ``prompt``; choice i samples with ``seed + i``."""
        n = prompt.sampling.n
        seed = prompt.sampling.seed
        leader = _Sequence(prompt=prompt, group=group, index=0, seed=seed)
        self.waiting.append(leader)
        share = len(prompt.tokens) > COPY_MIN_TOKENS
        for i in range(1, n):
            self.waiting.append(_Sequence(prompt=prompt, group=group, index=i,
                                          seed=None if seed is None else seed + i,
                                          leader=leader if share else None))

    def _finish(self, seq: _Sequence) -> None:
        """A choice is over (done, failed or cancelled): the request ends with its last choice."""
        if seq.done:
            return
        seq.done = True
        seq.group.remaining -= 1
        if seq.group.remaining == 0:
            if seq.prompt.media is not None:
                seq.prompt.media.free()
            seq.group.emit(END)

    def _admit(self) -> None:
        i = 0
        while i < len(self.waiting) and self.free_slots:
            seq = self.waiting[i]
            if seq.group.cancelled.is_set():
                del self.waiting[i]
                self._finish(seq)
                continue
            if seq.leader is not None and not seq.leader.done and not seq.leader.prefilled:
                i += 1  # its prompt is being read by choice 0; others may go first
                continue
            del self.waiting[i]
            try:
                self._start(seq)
            except Exception as e:  # a sampler that cannot be built, an image refused: that request alone fails
                if seq.sampler is not None:
                    free_sampler(self.engine, seq.sampler)
                    seq.sampler = None
                if not isinstance(e, DomainError):
                    log.error("choice %d could not start", seq.index, exc_info=e)
                    e = EngineFailure("The engine could not start the reply.")
                seq.group.emit(e)
                self._finish(seq)

    def _start_media(self, seq: _Sequence) -> None:
        """A prompt with images: read at once (mtmd decodes it), then sampled from its last logits."""
        engine = self.engine
        slot = min(self.free_slots, key=lambda s: len(self.cached[s]))
        self.free_slots.remove(slot)
        engine.forget(slot)
        self.cached[slot] = [-1]  # holds image embeddings: no token prefix can match it
        seq.slot = slot
        try:
            seq.n_past = seq.prompt.media.evaluate(engine.ctx, slot, 0, self.options.n_batch)
            seq.sampler = make_sampler(engine, seq.prompt.sampling, seq.prompt.grammar, seq.seed)
        except BaseException:
            engine.forget(slot)
            self.cached[slot] = []
            self.free_slots.append(slot)
            raise
        del self.cached[slot][1:]
        self.cached[slot].extend([-1] * (seq.n_past - 1))
        seq.text = TextAssembler(seq.prompt.stop)
        self.running.append(seq)
        self._sample(seq, -1)

    def _start(self, seq: _Sequence) -> None:
        if seq.prompt.media is not None:
            self._start_media(seq)
            return
        engine = self.engine
        # The sampler first: if it cannot be built, no slot has been taken.
        seq.sampler = make_sampler(engine, seq.prompt.sampling, seq.prompt.grammar, seq.seed)
        tokens = seq.prompt.tokens
        limit = len(tokens) - 1  # at least one prompt token is read, for the logits of the first pick
        common = [min(_common_prefix(cells, tokens), limit) for cells in self.cached]
        slot = max(self.free_slots, key=common.__getitem__)
        donor = max(range(self.options.parallel), key=common.__getitem__)
        own, shared = common[slot], common[donor]
        self.free_slots.remove(slot)
        if donor != slot and shared - own >= COPY_MIN_TOKENS:
            engine.forget(slot)
            engine.copy_cells(donor, slot)
            self.cached[slot] = self.cached[donor][:shared]
            reuse = shared
        else:
            reuse = own
        if not engine.forget(slot, reuse):
            engine.forget(slot)
            reuse = 0
        del self.cached[slot][reuse:]
        seq.slot = slot
        seq.n_past = seq.n_read = seq.reused = reuse
        seq.text = TextAssembler(seq.prompt.stop)
        if self.options.speculative is not False:
            seq.drafts = PromptLookup(tokens, self.options.draft_max)
        self.running.append(seq)

    def _release(self, seq: _Sequence) -> None:
        """Free the slot; its KV cells stay, as a cache for the next prompt sharing their prefix."""
        self.running.remove(seq)
        # Cells not matching the record (or no cache wanted): drop them.
        if seq.n_past != len(self.cached[seq.slot]) or not self.options.cache_prompt:
            self.engine.forget(seq.slot)
            self.cached[seq.slot] = []
        free_sampler(self.engine, seq.sampler)
        seq.sampler = None
        self.free_slots.append(seq.slot)
        self._finish(seq)

    def _step(self) -> None:
        for seq in [s for s in self.running if s.group.cancelled.is_set()]:
            self._release(seq)
        if not self.running:
            return
        batch = self.engine.batch
        n = 0
        budget = self.options.n_batch
        outputs: dict[int, tuple[_Sequence, list[int]]] = {}

        def add(seq: _Sequence, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = seq.n_past
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.slot
            batch.logits[n] = logits
            seq.n_past += 1
            self.cached[seq.slot].append(token)
            if logits:
                outputs.setdefault(id(seq), (seq, []))[1].append(n)
            n += 1

        decoding = [seq for seq in self.running if seq.n_read == len(seq.prompt.tokens)]
        reading = len(decoding) < len(self.running)
        # Decoding sequences first: one token each keeps every stream moving, then its draft, if any,
        # while no more than ``draft_streams`` decode; none while a prompt is being read, which the rest
        # of the batch is for.
        room = 0 if reading or len(decoding) > self.options.draft_streams else budget - len(decoding)
        for seq in decoding:
            if budget <= 0:
                break
            add(seq, seq.last_token, True)
            budget -= 1
            seq.draft = [] if room <= 0 or seq.drafts is None else self._draft(seq, room)
            for token in seq.draft:
                add(seq, token, True)
            budget -= len(seq.draft)
            room -= len(seq.draft)
        # Then prompt chunks, within what is left of the batch.
        for seq in self.running:
            remaining = len(seq.prompt.tokens) - seq.n_read
            if remaining <= 0 or budget <= 0:
                continue
            take = min(remaining, budget)
            for i in range(take):
                idx = seq.n_read + i
                add(seq, seq.prompt.tokens[idx], idx == len(seq.prompt.tokens) - 1)
            seq.n_read += take
            budget -= take

        try:
            rc = self.engine.decode(n)
        except Exception as e:
            log.exception("llama.cpp's decode raised")
            self.fail(f"its decode step raised {type(e).__name__}")
            return
        if rc == NO_ROOM:
            for seq in list(self.running):
                self._fail(seq, EngineFailure("llama.cpp found no room in its cache for the batch."))
            return
        if rc != 0:  # the context is in an unknown state: nothing more can be read from it
            self.fail(f"llama.cpp failed to decode, returning {rc}")
            return
        for seq, indices in outputs.values():
            try:
                if len(indices) == 1:
                    self._sample(seq, indices[0])
                else:
                    self._verify(seq, indices)
            except Exception:
                log.exception("choice %d failed after %d tokens", seq.index, seq.generated)
                self._fail(seq, EngineFailure("The engine failed while sampling the reply."))

    def _draft(self, seq: _Sequence, budget: int) -> list[int]:
        """The tokens to check after ``seq``'s next one: no more than the batch, its context or its
        ``max_tokens`` has room for."""
        assert seq.drafts is not None
        left = (seq.prompt.sampling.max_tokens or self.engine.n_ctx_seq) - seq.generated - 1
        return seq.drafts.draft(min(budget, left, self.engine.n_ctx_seq - seq.n_past - 1))

    def _verify(self, seq: _Sequence, indices: list[int]) -> None:
        """Sample ``seq``'s next token, then one more for each drafted token the model picked itself;
        the first pick that differs from the draft (or ends the reply) is the last. Every pick is the
        sampler's own, made in order from the logits its context gives, so the reply is the one decoding
        token by token would make; the cells of the drafted tokens not kept are dropped."""
        draft, engine = seq.draft, self.engine
        first = seq.n_past - len(indices)  # where the step's first token (the last one sampled) went
        picks: list[tuple[int, int]] = []
        for j, index in enumerate(indices):
            token = sample(engine, seq.sampler, index)
            picks.append((token, index))
            if j == len(draft) or token != draft[j] or engine.is_end(token):
                break
        kept = len(picks) - 1
        assert seq.drafts is not None
        seq.drafts.verified(len(draft), kept)
        self.drafted += len(draft)
        self.kept += kept
        valid = first + len(picks)  # the step's first token and the drafted tokens kept
        if valid < seq.n_past:
            engine.forget(seq.slot, valid)
            del self.cached[seq.slot][valid:]
            seq.n_past = valid
        seq.draft = []
        for token, index in picks:
            self._emit(seq, token, index)
            if seq.done or seq not in self.running:
                break

    def _fail(self, seq: _Sequence, error: EngineFailure) -> None:
        """One sequence fails, the others go on: its reader gets ``error``, its slot is freed."""
        seq.group.emit(error)
        if seq in self.running:
            seq.n_past = -1  # its cells may not match the record: drop them
            self._release(seq)
        else:
            self._finish(seq)

    def _sample(self, seq: _Sequence, index: int) -> None:
        self._emit(seq, sample(self.engine, seq.sampler, index), index)

    def _emit(self, seq: _Sequence, token: int, index: int) -> None:
        """``token`` was picked from the batch's ``index``-th logits: send its text, end the choice if it
        ends here."""
        engine = self.engine
        sampling = seq.prompt.sampling
        if seq.drafts is not None:
            seq.drafts.push(token)
        seq.generated += 1
        seq.last_token = token
        assert seq.text is not None
        finish: FinishReason | None = None
        text = ""
        end = engine.is_end(token)
        if sampling.logprobs is not None and not end:
            seq.logprobs.append(token_logprob(engine, index, token, sampling.logprobs))
        if end:
            finish = "stop"
            text = seq.text.flush()
        else:
            text, stopped = seq.text.push(engine.piece(token))
            if stopped:
                finish = "stop"
            elif seq.generated >= (sampling.max_tokens or engine.n_ctx_seq) or seq.n_past >= engine.n_ctx_seq:
                finish = "length"
                text += seq.text.flush()
        if finish and seq.prompt.check is not None and self._failed_check(seq, text, finish):
            return
        if text or finish:
            if seq.prompt.check is not None:
                seq.produced.append(text)
            logprobs = tuple(seq.logprobs)
            seq.logprobs.clear()
            seq.group.emit(GenerationChunk(text=text, finish_reason=finish, prompt_tokens=seq.prompt.n_tokens,
                                           completion_tokens=seq.generated, index=seq.index,
                                           logprobs=logprobs, cached_tokens=seq.reused),
                           urgent=finish is not None or not seq.sent)
            seq.sent = True
        if finish:
            self._release(seq)

    def _failed_check(self, seq: _Sequence, text: str, finish: FinishReason) -> bool:
        """Check a grammar-held choice as it ends; True when it failed (and was resampled or failed).

        A reply cut short by ``max_tokens`` or the context ends with finish "length" unchecked, as the
        client asked. When the schema has keywords only the check holds, the reader holds the choice's
        text back (see :meth:`backends.llama.backend.LlamaCppBackend.generate`), so a failed sample is
        dropped and the choice sampled again with another seed, up to :data:`CHECK_ATTEMPTS` in all.
        """
        check: OutputCheck = seq.prompt.check
        if finish != "stop":
            return False
        problem = check.problem("".join(seq.produced) + text)
        if problem is None:
            return False
        group = seq.group
        if check.held_at and seq.attempt + 1 < CHECK_ATTEMPTS:
            log.info("choice %d failed its schema check (%s); sampling it again", seq.index, problem)
            group.emit(Retry(seq.index))
            group.remaining += 1
            seed = None if seq.seed is None else (seq.seed + 7919 * (seq.attempt + 1)) & 0xFFFFFFFF
            prompt = seq.prompt
            if prompt.sampling.temperature <= 0:  # greedy would only repeat the sample
                prompt = dataclasses.replace(prompt, sampling=dataclasses.replace(prompt.sampling,
                                                                                  temperature=RETRY_TEMPERATURE))
            self.waiting.insert(0, _Sequence(prompt=prompt, group=group, index=seq.index, seed=seed,
                                             attempt=seq.attempt + 1))
        elif check.held_at:
            group.emit(SchemaNotSatisfied(CHECK_ATTEMPTS, problem, check.held_at, tool=check.tool, part=check.part))
        else:
            log.error("a grammar-held reply failed its schema check (%s): %r", problem,
                      "".join(seq.produced) + text)
            group.emit(EngineFailure("The reply failed its schema check."))
        self._release(seq)
        return True
