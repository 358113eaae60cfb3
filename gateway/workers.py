"""Threads of the gateway's own for the CPU-heavy work a request brings (audio decoding, image reading).

A few of them, shared by every request: a flood of uploads or frames waits its turn instead of taking
every core, holding gigabytes at once, or competing with the event loop for the interpreter; and none of
it runs on the event loop or in the default pool that everything else shares.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway import memory

__all__ = ["Workers"]

T = TypeVar("T")


HEAVY_SECONDS = 0.1
"""A job that ran this long has likely allocated enough to be worth handing back (:mod:`gateway.memory`)."""


class Workers:
    """``size`` threads named ``name-…``; :meth:`run` awaits one call on the first one free."""

    def __init__(self, size: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        job = functools.partial(_then_give_back, functools.partial(fn, *args, **kwargs))
        return await asyncio.get_running_loop().run_in_executor(self._pool, job)


def _then_give_back(job: Callable[[], T]) -> T:
    """Run ``job``; after a heavy one, what it freed (decoded frames, resampled parts, pixels) goes back to
    the system."""
    start = time.perf_counter()
    try:
        return job()
    finally:
        if time.perf_counter() - start >= HEAVY_SECONDS:
            memory.give_back()
