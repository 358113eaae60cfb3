"""The Responses store on its own: a response is its owner's, expires after ``ttl``, and the oldest go
first past ``max_responses`` or ``max_bytes``; an SQLite file keeps them across a reopen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import ResponsesStore
from gateway.response_store import ResponseStore, StoredResponse

T = TypeVar("T")


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(work())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stored(response_id: str, owner: str = "a", size: int = 10, status: str = "completed") -> StoredResponse:
    return StoredResponse(response_id, owner, status, b"{" + b" " * size + b"}", b"[]", b"[]")


def test_a_response_is_its_owners_alone() -> None:
    async def work() -> tuple[Any, ...]:
        store = ResponseStore(ResponsesStore(path=None))
        await store.put(_stored("resp_1", owner="a"))
        found = (await store.get("resp_1", "a"), await store.get("resp_1", "b"), await store.delete("resp_1", "b"),
                 await store.get("resp_1", "a") is not None, await store.delete("resp_1", "a"),
                 await store.get("resp_1", "a"))
        await store.close()
        return found

    mine, theirs, their_delete, still_there, my_delete, gone = _run(work)
    assert mine is not None and mine.body.startswith(b"{")
    assert theirs is None and their_delete is False and still_there
    assert my_delete is True and gone is None


def test_responses_expire_after_their_ttl() -> None:
    clock = Clock()

    async def work() -> tuple[bool, bool]:
        store = ResponseStore(ResponsesStore(path=None, ttl=60), clock=clock)
        await store.put(_stored("resp_1"))
        clock.now += 59
        before = await store.get("resp_1", "a") is not None
        clock.now += 2
        after = await store.get("resp_1", "a") is not None
        await store.close()
        return before, after

    assert _run(work) == (True, False)


def test_the_oldest_go_first_past_the_count_or_the_bytes() -> None:
    clock = Clock()

    async def work() -> tuple[list[bool], list[bool]]:
        by_count = ResponseStore(ResponsesStore(path=None, max_responses=3), clock=clock)
        for i in range(5):
            clock.now += 1
            await by_count.put(_stored(f"resp_{i}"))
        counted = [await by_count.get(f"resp_{i}", "a") is not None for i in range(5)]
        await by_count.close()
        by_bytes = ResponseStore(ResponsesStore(path=None, max_bytes=1024 * 1024), clock=clock)
        for i in range(4):
            clock.now += 1
            await by_bytes.put(_stored(f"resp_{i}", size=400 * 1024))
        sized = [await by_bytes.get(f"resp_{i}", "a") is not None for i in range(4)]
        await by_bytes.close()
        return counted, sized

    counted, sized = _run(work)
    assert counted == [False, False, True, True, True]
    assert sized == [False, False, True, True]  # two of 400 KiB fit in 1 MiB, not three


def test_a_file_keeps_them_across_a_reopen_and_an_update_replaces_one(tmp_path: Path) -> None:
    config = ResponsesStore(path=str(tmp_path / "deep" / "responses.db"))

    async def work() -> tuple[Any, list[str]]:
        first = ResponseStore(config)
        await first.put(_stored("resp_1", status="queued"))
        await first.put(_stored("resp_1", status="completed"))
        await first.put(_stored("resp_2", status="in_progress"))
        await first.close()
        second = ResponseStore(config)
        found = await second.get("resp_1", "a")
        unfinished = [s.id for s in await second.with_status(("queued", "in_progress"))]
        await second.close()
        return found, unfinished

    found, unfinished = _run(work)
    assert found is not None and found.status == "completed"
    assert unfinished == ["resp_2"]
