"""Bridging blocking engines to the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["EngineLoad", "Heartbeat", "Occupancy", "available_cores", "iterate_in_thread", "share_cores"]

T = TypeVar("T")


def available_cores() -> int:
    """Cores this process may run on: a container's CPU set, not the host's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def share_cores(parallel: int | None, threads: int, *, most_parallel: int, cores: int | None = None) -> tuple[int, int]:
    """How many engine calls run at once, and the threads each gets.

    ``parallel`` None means one per core, at most ``most_parallel``; ``threads`` 0 shares the cores
    out among them (at least one each), so the engine never runs more threads than there are cores:
    oversubscribed engine threads spin against each other and every request gets slower.
    """
    cores = available_cores() if cores is None else cores
    chosen = parallel if parallel is not None else max(1, min(cores, most_parallel))
    return chosen, threads or max(1, cores // chosen)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """How busy a backend's engine is: calls it can run at once, calls running now, the most at once."""

    slots: int
    busy: int
    peak: int


class Occupancy:
    """Engine calls in flight on a backend's threads, and the most there have been at once.

    What a backend reports of it shows whether requests really overlapped in the engine, rather than
    queueing behind each other: the registry lists it for operators, and the tests assert on it.
    """

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._busy = 0
        self._peak = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count one engine call while the block runs (called on the worker thread)."""
        with self._lock:
            self._busy += 1
            self._peak = max(self._peak, self._busy)
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def snapshot(self) -> EngineLoad:
        with self._lock:
            return EngineLoad(slots=self._slots, busy=self._busy, peak=self._peak)


class Heartbeat:
    """When a worker thread began its current piece of work, so that another thread can tell a slow
    engine from a wedged one: a thread waiting for work is never late, one stuck in a call grows later."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    def working(self) -> None:
        """A piece of work begins now (called on the worker thread)."""
        self._since = self._clock()

    def idle(self) -> None:
        """The thread waits for work (or has stopped)."""
        self._since = None

    def busy_for(self) -> float:
        """Seconds the current piece of work has taken so far (0 while idle)."""
        since = self._since
        return 0.0 if since is None else self._clock() - since


_END = object()


async def iterate_in_thread(executor: Executor, produce: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run the blocking iterator ``produce()`` on ``executor``, yielding its items here as they come.

    Closing the async iterator (a client went away) stops the producer before its next item, so the
    worker is free for the next request after at most one more item of work.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def run() -> None:
        if stop.is_set():  # abandoned while it waited for a worker: nobody reads what it would make
            return
        try:
            items = produce()
            try:
                for item in items:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                    if stop.is_set():
                        break
            finally:
                # A generator's own clean-up (giving back an engine it holds) runs here, on this thread,
                # before the thread takes its next job.
                if isinstance(items, Generator):
                    items.close()
        except BaseException as e:  # handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, _Failure(e))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    done = loop.run_in_executor(executor, run)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        if done.done():
            done.result()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
