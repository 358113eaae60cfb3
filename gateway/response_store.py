"""The Responses API's store: stored responses, bounded by age, count and bytes, in SQLite.

A stored response is kept as the JSON the API answered with, the input items it was asked with, and
the conversation a continuation (``previous_response_id``) starts from; the store reads none of it but
its status. It belongs to the key that created it: another key finds nothing. SQLite on one thread of
its own keeps every call off the event loop and a restart loses nothing; ``path=None`` keeps it in
memory, for a server that must leave nothing on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gateway.config import ResponsesStore

__all__ = ["ResponseStore", "StoredResponse"]

log = logging.getLogger("syn4pse.responses")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    input BLOB NOT NULL,
    history BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_created ON responses (created);
CREATE TABLE IF NOT EXISTS items (
    id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    item BLOB NOT NULL,
    PRIMARY KEY (id, response_id)
);
CREATE INDEX IF NOT EXISTS items_by_response ON items (response_id);
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner: str
    status: str
    body: bytes
    """The response object, as answered."""
    input: bytes
    """Its input items, as listed by ``GET /v1/responses/{id}/input_items``."""
    history: bytes
    """The conversation up to and including its output: where a continuation starts."""
    items: tuple[tuple[str, bytes], ...] = ()
    """Its input and output items by id, for ``item_reference`` inputs (not read back by :meth:`get`)."""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.input) + len(self.history) + sum(len(item) for _, item in self.items)


class ResponseStore:
    """Stored responses. Every call runs on the store's own thread; :meth:`close` it at the end."""

    def __init__(self, config: ResponsesStore, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="response-store")
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            where = ":memory:"
            if self.config.path is not None:
                path = Path(self.config.path).expanduser()
                path.parent.mkdir(parents=True, exist_ok=True)
                where = str(path)
            db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
            if where != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: work(self._open()))

    async def put(self, stored: StoredResponse) -> None:
        """Keep ``stored`` (replacing an earlier version of it), then drop what is past the limits."""
        now = self._clock()

        def put(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.execute(
                    "INSERT INTO responses (id, owner, status, created, expires, size, body, input, history)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                    " size = excluded.size, body = excluded.body, input = excluded.input,"
                    " history = excluded.history",
                    (stored.id, stored.owner, stored.status, now, now + self.config.ttl, stored.size,
                     stored.body, stored.input, stored.history))
                db.executemany("INSERT OR REPLACE INTO items (id, response_id, item) VALUES (?, ?, ?)",
                               [(item_id, stored.id, item) for item_id, item in stored.items])
                self._evict(db, now)

        await self._run(put)

    def _evict(self, db: sqlite3.Connection, now: float) -> None:
        for (gone,) in db.execute("SELECT id FROM responses WHERE expires <= ?", (now,)).fetchall():
            self._drop(db, gone)
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM responses").fetchone()
        if count <= self.config.max_responses and size <= self.config.max_bytes:
            return
        dropped = 0
        for response_id, row_size in db.execute("SELECT id, size FROM responses ORDER BY created").fetchall():
            if count <= self.config.max_responses and size <= self.config.max_bytes:
                break
            self._drop(db, response_id)
            count, size, dropped = count - 1, size - row_size, dropped + 1
        log.info("response store: dropped the %d oldest responses (server.responses limits)", dropped)

    @staticmethod
    def _drop(db: sqlite3.Connection, response_id: str) -> bool:
        db.execute("DELETE FROM items WHERE response_id = ?", (response_id,))
        return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    async def item(self, item_id: str, owner: str) -> bytes | None:
        """An item of one of ``owner``'s live stored responses, by its id (the latest, if several hold it)."""
        now = self._clock()

        def find(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT i.item FROM items i JOIN responses r ON r.id = i.response_id WHERE i.id = ?"
                             " AND r.owner = ? AND r.expires > ? ORDER BY r.created DESC LIMIT 1",
                             (item_id, owner, now)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(find)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """The response, if it is stored, not expired, and ``owner``'s."""
        now = self._clock()

        def get(db: sqlite3.Connection) -> StoredResponse | None:
            row = db.execute("SELECT status, body, input, history FROM responses WHERE id = ? AND owner = ?"
                             " AND expires > ?", (response_id, owner, now)).fetchone()
            if row is None:
                return None
            return StoredResponse(response_id, owner, row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]))

        return await self._run(get)

    async def delete(self, response_id: str, owner: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with db:
                db.execute("BEGIN")
                found = db.execute("SELECT 1 FROM responses WHERE id = ? AND owner = ? AND expires > ?",
                                   (response_id, owner, self._clock())).fetchone()
                return found is not None and self._drop(db, response_id)

        return await self._run(delete)

    async def with_status(self, statuses: tuple[str, ...]) -> list[StoredResponse]:
        """Every live stored response in one of ``statuses`` (whatever its owner)."""
        marks = ", ".join("?" * len(statuses))

        def find(db: sqlite3.Connection) -> list[StoredResponse]:
            rows = db.execute(f"SELECT id, owner, status, body, input, history FROM responses WHERE status IN"
                              f" ({marks}) AND expires > ?", (*statuses, self._clock())).fetchall()
            return [StoredResponse(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), bytes(r[5])) for r in rows]

        return await self._run(find)

    async def close(self) -> None:
        def close(db: sqlite3.Connection) -> None:
            db.close()

        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._run(close)
            self._db = None
        self._thread.shutdown(wait=False)
