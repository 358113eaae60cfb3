"""Bridging blocking engines to the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["available_cores", "iterate_in_thread"]

T = TypeVar("T")


def available_cores() -> int:
    """Cores this process may run on: a container's CPU set, not the host's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
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
        try:
            for item in produce():
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if stop.is_set():
                    break
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
