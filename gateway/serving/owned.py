"""Streams that own the model lease they run on.

A streamed answer outlives its route handler: the handler returns a response whose body is produced
later, by the web server. So the lease cannot be released by the handler, and a generator's ``finally``
is not enough either: a body that is never iterated (the response failed while its headers were built,
the client left first, the task was cancelled) never runs it. :class:`Owned` closes over both: the
events end, raise, or are closed (``aclose``), and the lease is released — and the request that opened
the stream closes it at its end whatever happened (:mod:`gateway.ownership`), so no path leaves a slot
taken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Generic, TypeVar

from backends.answers import Waiting
from backends.base import Backend
from gateway.errors import Busy
from gateway.registry import Kind, Lease, Registry

__all__ = ["KEEPALIVE_EVERY", "STREAM_LOAD_WAIT", "HeldSockets", "Owned", "Pending", "Waiting", "admit_for_stream",
           "ready", "release"]

E = TypeVar("E")
K = TypeVar("K", bound=Backend)

STREAM_LOAD_WAIT = 2.0
"""Seconds a streaming request waits for its model before its stream opens (with keep-alives)."""
KEEPALIVE_EVERY = 5.0
"""Seconds between two :class:`Waiting` events while the model loads."""

Pending = Lease[K] | asyncio.Task[Lease[K]]
"""A lease, or the load that will hand it over."""


async def admit_for_stream(registry: Registry, name: str, kind: Kind[K]) -> Pending[K]:
    """The lease, if the model is ready soon; else the pending load, for the stream to await.

    Admission (the model's bounded queue) always completes first, so a full queue is a real 429, never a
    stream that ends in an error. A model that is loaded (or loads within :data:`STREAM_LOAD_WAIT`) fails
    with a real status too; one still loading after that opens the stream, kept alive meanwhile.
    """
    admission = await registry.admit(name, kind)
    task = asyncio.ensure_future(admission.load())
    try:
        done, _ = await asyncio.wait({task}, timeout=STREAM_LOAD_WAIT)
    except BaseException:  # cancelled while the model loads: the lease it brings goes straight back
        release(task)
        raise
    if done:
        return task.result()
    return task


async def ready(pending: Pending[K]) -> AsyncIterator[Waiting | Lease[K]]:
    """:class:`Waiting` every few seconds until the load is done, then the lease."""
    if isinstance(pending, Lease):
        yield pending
        return
    while True:
        done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_EVERY)
        if done:
            yield pending.result()
            return
        yield Waiting()


def release(pending: Pending[Any] | None) -> None:
    """Release a lease now, or as soon as a still-pending load completes."""
    if pending is None:
        return
    if isinstance(pending, Lease):
        pending.release()
        return

    def release_loaded(task: asyncio.Task[Lease[Any]]) -> None:
        if not task.cancelled() and task.exception() is None:
            task.result().release()

    if pending.done():
        release_loaded(pending)
    else:
        pending.add_done_callback(release_loaded)


class Owned(Generic[E]):
    """Events that own the lease they run on: their end, their error, or :meth:`aclose` releases it.

    Iterate it once. ``aclose`` may come from anyone at any time (the request's end does it) and is
    idempotent; closing stops the work (closing a generation cancels it within one token).
    """

    def __init__(self, pending: Pending[Any] | None, events: AsyncGenerator[E, None],
                 inner: Owned[Any] | None = None) -> None:
        self._pending = pending
        self._events = events
        self._inner = inner
        """A stream these events read (and own): closed with them."""
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Owned[E]:
        return self

    async def __anext__(self) -> E:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._events.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(RuntimeError):  # still running in a task being torn down: it ends with it
                await self._events.aclose()
        finally:
            try:
                if self._inner is not None:
                    await self._inner.aclose()
            finally:
                release(self._pending)


class HeldSockets:
    """Sockets that hold a model for their whole life, counted apart from the model's turns: an open
    socket holds its model however idle, and must not take every slot a request could use. :meth:`take`
    one (a 429 past ``limit``), :meth:`give_back` it once, when the socket's hold ends."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self._what = what
        self._held = 0

    def take(self) -> None:
        if self._held >= self.limit:
            raise Busy(f"{self.limit} {self._what} are open already, the most this server holds at once.")
        self._held += 1

    def give_back(self) -> None:
        self._held -= 1

    @property
    def held(self) -> int:
        return self._held
