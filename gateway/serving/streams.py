"""Streams whose work starts before they are handed over, so that a bad request fails with a real status.

Some engines check a request only once its stream runs: the transcription's opening info, the first
sentence synthesised. A serving generator does that work first and then yields :data:`STARTED`;
:func:`started` runs it that far and hands the generator back, suspended past its start. Closing it
from then on (an :class:`~gateway.serving.owned.Owned` does, whoever ends the request) runs its
``finally`` and closes the engine's stream; a generator never started would skip its ``finally`` and
leave the engine working for nobody.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar, cast

__all__ = ["STARTED", "Started", "close_stream", "started"]

E = TypeVar("E")


class Started:
    """The marker a serving generator yields once its work has begun."""


STARTED = Started()


async def started(events: AsyncGenerator[E | Started, None]) -> AsyncGenerator[E, None]:
    """Run ``events`` up to :data:`STARTED` (its errors raise here) and hand it back, started."""
    first = await anext(events)
    if first is not STARTED:
        await events.aclose()
        raise RuntimeError("a started stream must yield STARTED first")
    return cast("AsyncGenerator[E, None]", events)


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Close an engine's stream now (the engine stops after its current step), not when it is collected."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
