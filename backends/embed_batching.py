"""Dynamic batching for embedding engines: concurrent requests share forward passes.

An embedding model costs far less per input in a batch than one input at a time (one matrix product
instead of many small ones), but HTTP clients send a few inputs each. :class:`EmbedBatcher` gathers
the inputs of every request waiting for one model into batches of at most ``max_batch_size``, runs
each batch on one worker thread of its own (never on the event loop), and hands each caller its own
rows, in order. A request larger than a batch is cut across several.

When to run: a batch starts as soon as it is full, or when its oldest input has waited ``wait``
seconds. Under load the worker is busy while inputs queue up, so the next batch starts at once with
what queued meanwhile; the wait only delays a request that arrives to an idle engine, and only by a
few ms. It is skipped when the last batch served a single request and one request waits: a lone
client gains nothing from waiting (the wait would be all of its extra latency), and as soon as
batches serve several requests again, the wait applies again.

Fairness: a batch takes from every waiting request in arrival order, each an equal share first, then
fills what is left in arrival order. A small request that arrives behind a large one rides in the next
batch instead of waiting for the whole large one.

A caller that goes away (its task cancelled) gives up the inputs not yet started; a batch that fails
fails the requests with inputs in it and no others.

Below the batcher, what every batched backend does with a request (token-id inputs read as text, the
length check, ``dimensions``, preparing off the loop when large), so the backends differ only in their engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from backends.errors import BadDimensions, EngineFailure, InputTooLong, UnknownToken
from backends.types import EmbeddingRequest, EmbeddingResult

__all__ = ["INLINE_CHARS", "EmbedBatcher", "Encode", "check_lengths", "embed_request", "input_texts", "prepare",
           "request_size", "shaped"]

log = logging.getLogger("syn4pse.embeddings")

T = TypeVar("T")
R = TypeVar("R")
Encode = Callable[[Sequence[T]], npt.NDArray[np.float32]]
"""The engine: a batch of inputs → one float32 row per input, in order. Called on the worker thread."""


class _Job(Generic[T]):
    """One caller's inputs: taken into batches front to back, rows written back as batches finish."""

    __slots__ = ("arrived", "cancelled", "done", "future", "items", "loop", "rows", "taken")

    def __init__(self, items: Sequence[T], loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[npt.NDArray[np.float32]]) -> None:
        self.items = items
        self.loop = loop
        self.future = future
        self.arrived = time.monotonic()
        self.taken = 0
        """Inputs handed to a batch so far."""
        self.done = 0
        """Inputs whose rows are written."""
        self.rows: npt.NDArray[np.float32] | None = None
        self.cancelled = False

    @property
    def left(self) -> int:
        return len(self.items) - self.taken


_Outcome = tuple[asyncio.Future[npt.NDArray[np.float32]], npt.NDArray[np.float32] | BaseException]


def _settle(outcomes: list[_Outcome]) -> None:
    """On the callers' loop: resolve their futures, except those whose callers already gave up."""
    for future, result in outcomes:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class EmbedBatcher(Generic[T]):
    """Batches the inputs of concurrent :meth:`embed` calls through one engine on one worker thread."""

    def __init__(self, encode: Encode[T], *, max_batch_size: int, wait: float, name: str) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if wait < 0:
            raise ValueError("wait must not be negative")
        self._encode = encode
        self._max = max_batch_size
        self._wait = wait
        self._jobs: deque[_Job[T]] = deque()
        self._queued = 0
        """Inputs waiting in ``_jobs`` (not yet taken into a batch)."""
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._sizes: Counter[int] = Counter()
        self._last_callers = 0
        """Requests with inputs in the last batch: whether anyone else is likely to come within the wait."""
        self._thread = threading.Thread(target=self._work, name=f"embed:{name}", daemon=True)
        self._thread.start()

    @property
    def max_batch_size(self) -> int:
        return self._max

    def batch_sizes(self) -> dict[int, int]:
        """How many batches have run of each size (inputs per batch), since the batcher started."""
        with self._cond:
            return dict(self._sizes)

    async def embed(self, items: Sequence[T]) -> npt.NDArray[np.float32]:
        """The engine's rows for ``items``, in order, computed in batches with other callers' inputs."""
        if not items:
            raise ValueError("nothing to embed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[npt.NDArray[np.float32]] = loop.create_future()
        job = _Job(items, loop, future)
        with self._cond:
            if self._closed:
                raise EngineFailure("The embedding model is unloading; retry the request.")
            was_idle = self._queued == 0
            self._jobs.append(job)
            self._queued += len(items)
            # Wake the worker only when it has something new to decide: a first input to wait on, or
            # a full batch. Between the two it sleeps until its deadline.
            if was_idle or self._queued >= self._max:
                self._cond.notify()
        try:
            return await future
        except asyncio.CancelledError:
            job.cancelled = True  # the worker drops the inputs not started yet
            raise

    def close(self) -> None:
        """Stop the worker after the batch it is running; callers still waiting get an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the worker thread ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[tuple[_Job[T], int, int]] | None:
        """Wait (lock held) for a batch to be due; take it. None when closed."""
        while True:
            while not self._closed and self._queued == 0:
                self._cond.wait()
            if self._closed:
                self._fail_queued()
                return None
            self._drop_cancelled()
            if self._queued == 0:
                continue
            alone = len(self._jobs) == 1 and self._last_callers <= 1
            deadline = self._jobs[0].arrived + (0 if alone else self._wait)
            while not self._closed and self._queued < self._max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                continue
            self._drop_cancelled()
            if self._queued:
                return self._take()

    def _drop_cancelled(self) -> None:
        kept = deque(job for job in self._jobs if not job.cancelled)
        if len(kept) != len(self._jobs):
            for job in self._jobs:
                if job.cancelled:
                    self._queued -= job.left
                    job.taken = len(job.items)
            self._jobs = kept

    def _take(self) -> list[tuple[_Job[T], int, int]]:
        """Up to ``max_batch_size`` inputs: an equal share of each waiting job first, then in arrival order."""
        room = self._max
        share = max(1, room // len(self._jobs))
        grants: dict[int, int] = {}
        for i, job in enumerate(self._jobs):
            n = min(job.left, share, room)
            grants[i] = n
            room -= n
            if room == 0:
                break
        for i, job in enumerate(self._jobs):
            if room == 0:
                break
            n = min(job.left - grants.get(i, 0), room)
            grants[i] = grants.get(i, 0) + n
            room -= n
        batch: list[tuple[_Job[T], int, int]] = []
        for i, n in sorted(grants.items()):
            if n:
                job = self._jobs[i]
                batch.append((job, job.taken, job.taken + n))
                job.taken += n
                self._queued -= n
        self._jobs = deque(job for job in self._jobs if job.left)
        self._sizes[self._max - room] += 1
        self._last_callers = len(batch)
        return batch

    def _fail_queued(self) -> None:
        for job in self._jobs:
            self._queued -= job.left
            job.taken = len(job.items)
        self._hand_back([(job, EngineFailure("The embedding model was unloaded before this request ran."))
                         for job in self._jobs])
        self._jobs.clear()

    def _run(self, batch: list[tuple[_Job[T], int, int]]) -> None:
        inputs: list[T] = []
        for job, start, stop in batch:
            inputs.extend(job.items[start:stop])
        try:
            vectors = self._encode(inputs)
            if vectors.ndim != 2 or vectors.shape[0] != len(inputs):
                raise RuntimeError(f"the engine returned {vectors.shape} for {len(inputs)} inputs")
        except Exception:
            log.exception("embedding batch of %d inputs failed", len(inputs))
            with self._cond:
                for job, _, _ in batch:
                    if job.taken < len(job.items):  # its later inputs are still queued: drop them
                        self._queued -= job.left
                        job.taken = len(job.items)
                        job.cancelled = True
            self._hand_back([(job, EngineFailure("The embedding engine failed on this request."))
                             for job, _, _ in batch])
            return
        row = 0
        finished: list[tuple[_Job[T], npt.NDArray[np.float32] | BaseException]] = []
        for job, start, stop in batch:
            if job.rows is None:
                job.rows = np.empty((len(job.items), vectors.shape[1]), dtype=np.float32)
            job.rows[start:stop] = vectors[row: row + stop - start]
            row += stop - start
            job.done += stop - start
            if job.done == len(job.items):
                finished.append((job, job.rows))
        self._hand_back(finished)

    @staticmethod
    def _hand_back(results: list[tuple[_Job[T], npt.NDArray[np.float32] | BaseException]]) -> None:
        """Wake each callers' loop once for all of its callers (one wake-up per batch, not per request)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for job, result in results:
            by_loop.setdefault(job.loop, []).append((job.future, result))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, outcomes)


INLINE_CHARS = 8192
"""Requests with at most this much text are checked and tokenised on the event loop (tens of µs);
longer ones on a thread, so a 2048-input request never stalls other clients."""


async def prepare(work: Callable[[], R], size: int) -> R:
    """Run a request's preparation (checks, tokenising): inline if ``size`` is small, else on a thread."""
    if size <= INLINE_CHARS:
        return work()
    return await asyncio.to_thread(work)


def request_size(inputs: Sequence[str | Sequence[int]]) -> int:
    """A rough measure of the work of preparing ``inputs``: characters of text, token ids."""
    return sum(len(item) for item in inputs)


def shaped(vectors: npt.NDArray[np.float32], dimensions: int | None, normalize: bool) -> npt.NDArray[np.float32]:
    """The rows as the API returns them: cut to ``dimensions``, then scaled to unit length if asked."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# What every batched embeddings backend does with a request


def input_texts(inputs: Sequence[str | Sequence[int]], vocab: int, decode: Callable[[list[int]], str]) -> list[str]:
    """Each input as text: token-id inputs are checked against the vocabulary and read as the text they spell."""
    texts: list[str] = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            texts.append(item)
            continue
        bad = [t for t in item if not 0 <= t < vocab]
        if bad:
            raise UnknownToken(bad[0], vocab, item=i)
        texts.append(decode(list(item)))
    return texts


def check_lengths(counts: Iterable[int], limit: int) -> None:
    """An input longer than the model reads is a 400 naming it (never silently truncated)."""
    for i, n in enumerate(counts):
        if n > limit:
            raise InputTooLong(i, n, limit)


async def embed_request(request: EmbeddingRequest, *, dimensions: int, normalize: bool, batcher: EmbedBatcher[T],
                        work: Callable[[], tuple[Sequence[T], int]]) -> EmbeddingResult:
    """Check ``dimensions``, prepare the inputs (``work``: the batch items and their token count), embed them
    in shared batches and shape the rows as the API returns them."""
    if request.dimensions is not None and request.dimensions > dimensions:
        raise BadDimensions(request.dimensions, dimensions)
    items, tokens = await prepare(work, request_size(request.inputs))
    vectors = await batcher.embed(items)
    return EmbeddingResult(vectors=shaped(vectors, request.dimensions, normalize), prompt_tokens=tokens)
