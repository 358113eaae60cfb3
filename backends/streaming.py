"""Streaming helpers for engines that generate text on a thread of their own.

:class:`TextAssembler` turns an engine's byte pieces into text that is safe to send, holding back
whatever might still become a stop string. :class:`Outbox` carries what an engine thread produced to
the event loops of its readers in one wake-up per flush rather than one per token, optionally merging
a choice's successive chunks. Neither knows anything of a particular engine.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from backends.types import GenerationChunk

__all__ = ["Delivery", "Outbox", "TextAssembler", "deliver", "merge_chunks"]

Delivery: TypeAlias = list[tuple[asyncio.Queue[Any], Any]]
"""Items bound for readers' queues, in the order they were posted."""


class TextAssembler:
    """Token pieces (bytes) in, UTF-8 text out, stopping at the first stop string.

    A piece may end inside a multi-byte character or inside what could become a stop string: that
    tail is held until the next piece tells which it is, so no stop string ever reaches a reader.
    """

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add a piece; returns (text safe to emit, whether a stop string was reached)."""
        text = self._held + self._decoder.decode(piece)
        first = -1
        for s in self._stop:
            at = text.find(s)
            if at != -1 and (first == -1 or at < first):
                first = at
        if first != -1:
            self._held = ""
            return text[:first], True
        keep = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Everything still held, once the text ends without a stop string."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text


class Outbox:
    """What an engine thread produced, handed to each reader's event loop in one wake-up.

    Waking a loop costs a write to its self-pipe and a pass of the loop; with eight streams a decode
    step would wake it eight times, each time competing for the cores the next step needs. With an
    interval, text is held up to that long (never an urgent item: a stream's first text, its end or an
    error) and each choice's held chunks go out merged into one (:func:`merge_chunks`).

    ``clock`` measures the interval (seconds); tests pass their own to step time by hand.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._pending: dict[asyncio.AbstractEventLoop, Delivery] = {}
        self._urgent = False
        self._last = clock() - interval_s  # the first flush is never held

    def post(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[Any], item: Any, urgent: bool) -> None:
        """Queue ``item`` for ``out`` (read on ``loop``); it goes out at the next flush that sends."""
        self._pending.setdefault(loop, []).append((out, item))
        self._urgent = self._urgent or urgent

    def flush(self) -> None:
        """Send what is queued, unless nothing is urgent and the interval has not passed yet."""
        if not self._pending:
            return
        now = self._clock()
        if not self._urgent and now - self._last < self._interval:
            return
        self._last, self._urgent = now, False
        pending, self._pending = self._pending, {}
        for loop, items in pending.items():
            with contextlib.suppress(RuntimeError):  # a loop closed under us has no reader left
                loop.call_soon_threadsafe(deliver, merge_chunks(items) if self._interval else items)


def merge_chunks(items: Delivery) -> Delivery:
    """Join each choice's successive chunks into one, keeping the order of everything else.

    A reader's non-chunk item (an error, the end) closes its open chunks: what follows it is not
    merged into what came before.
    """
    out: Delivery = []
    open_at: dict[tuple[int, int], int] = {}  # (reader, choice) -> where its chunk being extended sits
    for queue_, item in items:
        if not isinstance(item, GenerationChunk):
            for key in [k for k in open_at if k[0] == id(queue_)]:
                del open_at[key]
            out.append((queue_, item))
            continue
        key = (id(queue_), item.index)
        at = open_at.get(key)
        if at is None:
            open_at[key] = len(out)
            out.append((queue_, item))
            continue
        held: GenerationChunk = out[at][1]
        out[at] = (queue_, dataclasses.replace(item, text=held.text + item.text,
                                               logprobs=held.logprobs + item.logprobs))
    return out


def deliver(items: Delivery) -> None:
    """Put each item into its reader's queue (on the readers' event loop)."""
    for out, item in items:
        out.put_nowait(item)
