"""The upstream client's own socket layer and event reader, against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from backends.errors import UpstreamTimeout
from backends.upstream.client import Upstream, _Events
from backends.upstream.network import _HIGH_WATER, _LOW_WATER, _Socket
from backends.upstream.options import Options
from compat.openai.upstream import OpenAIUpstream

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def test_events_are_cut_however_the_bytes_arrive() -> None:
    stream = (b'data: {"a": 1}\r\n\r\n: a comment\n\nevent: ping\n\n'
              b'data: first line\ndata:second line\n\n'
              b'data: {"b": 2}\r\rdata: [DONE]\n\n')
    whole = _Events().feed(stream)
    assert whole == [b'{"a": 1}', b"first line\nsecond line", b'{"b": 2}', b"[DONE]"]
    for size in (1, 2, 3, 7):  # the same events, the bytes cut anywhere (a CRLF split in two included)
        events, got = _Events(), []
        for at in range(0, len(stream), size):
            got += events.feed(stream[at:at + size])
        assert got == whole, size
    unfinished = _Events()
    assert unfinished.feed(b"data: no blank line after it") == []
    assert unfinished.end() == b"no blank line after it"


class _Transport:
    """What ``_Socket`` asks of its transport: here only whether reading is paused."""

    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def test_reading_pauses_while_too_much_waits_unread() -> None:
    sock, transport = _Socket(), _Transport()
    sock.connection_made(transport)  # type: ignore[arg-type]
    piece = b"x" * 32 * 1024
    while sock.buffered <= _HIGH_WATER:
        assert not transport.paused
        sock.data_received(piece)
    assert transport.paused
    while sock.buffered > _LOW_WATER:
        assert transport.paused
        sock.take(64 * 1024)
    assert not transport.paused


@contextlib.asynccontextmanager
async def _served(answer: Answer, *, close_after: float | None = None,
                  **options: float) -> AsyncIterator[tuple[Upstream, list[int]]]:
    """An upstream client (``options``) of an HTTP/1.1 server that gives each POST ``answer``, and the
    connections that server was given. ``close_after``: each connection is closed that many seconds
    after its first answer, unread requests and all (as llama-server closes a connection after a stream)."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                await answer(writer)
                if close_after is not None:
                    await asyncio.sleep(close_after)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    upstream = Upstream(Options(endpoints=[url], model="m", health_interval=0, **options), OpenAIUpstream())
    try:
        yield upstream, connections
    finally:
        upstream.close()
        await asyncio.sleep(0)
        server.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _streamed(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for event in (b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"):
        writer.write(_chunk(event))
        await writer.drain()
        await asyncio.sleep(0.01)  # the end of the body comes after [DONE], as a real server's does
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _all(pieces: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in pieces]


def test_a_streamed_answer_gives_its_connection_back_for_the_next_request() -> None:
    async def run() -> None:
        async with _served(_streamed) as (upstream, connections):
            for _ in range(3):
                assert await _all(upstream.stream("chat/completions", body=b"{}")) == [b'{"n": 1}', b'{"n": 2}']
            assert len(connections) == 1

    asyncio.run(run())


def test_an_answer_that_stalls_midway_times_out_and_counts_against_its_replica() -> None:
    async def stalls(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(_chunk(b'data: {"n": 1}\n\n'))
        await writer.drain()
        await asyncio.sleep(5)

    async def run() -> None:
        got: list[bytes] = []
        async with _served(stalls, read_timeout=0.3) as (upstream, _):
            async def read() -> None:
                async for piece in upstream.stream("chat/completions", body=b"{}"):
                    got.append(piece)

            started = time.monotonic()
            with pytest.raises(UpstreamTimeout, match=r"0\.3s"):
                await read()
            assert got == [b'{"n": 1}']
            assert time.monotonic() - started < 2
            assert upstream.endpoints()[0]["failures"] == 1

    asyncio.run(run())


def test_a_slow_reader_is_not_timed_out_while_the_upstream_keeps_up() -> None:
    async def run() -> None:
        async with _served(_streamed, read_timeout=0.2) as (upstream, _):
            got = []
            async for piece in upstream.stream("chat/completions", body=b"{}"):
                got.append(piece)
                await asyncio.sleep(0.5)  # the client's time between pieces is not the upstream's
            assert got == [b'{"n": 1}', b'{"n": 2}']

    asyncio.run(run())


def test_a_connection_closed_as_it_went_back_to_the_pool_is_not_the_replicas_failure() -> None:
    async def run() -> None:
        async with _served(_streamed, close_after=0.05) as (upstream, connections):
            for _ in range(4):  # each next request goes out on the connection the server is about to close
                assert await _all(upstream.stream("chat/completions", body=b"{}")) == [b'{"n": 1}', b'{"n": 2}']
            assert len(connections) >= 4
            assert upstream.endpoints()[0]["failures"] == 0

    asyncio.run(run())
