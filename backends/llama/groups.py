"""What a request's reader receives from the engine's thread, and the group of choices it reads.

The scheduler (:mod:`backends.llama.scheduler`) posts each choice's :class:`~backends.types.GenerationChunk`,
a :class:`Retry` when a grammar-held choice is sampled again, an error, and :data:`END` after the last
choice, through the group's outbox to the reader's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from backends.streaming import Outbox

__all__ = ["END", "Group", "Retry"]

END = object()
"""The last item a request's reader receives: every choice is over."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Choice ``index`` failed its check and is being sampled again: drop what it sent so far."""

    index: int


@dataclass(eq=False)
class Group:
    """The ``n`` choices of one request: one reader, one cancel switch."""

    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    remaining: int
    outbox: Outbox
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Any, urgent: bool = True) -> None:
        """Queue ``item`` for the reader; it is delivered when the scheduler flushes its outbox."""
        self.outbox.post(self.loop, self.out, item, urgent)
