"""The sockets under the upstream client: asyncio protocols in place of httpcore's anyio streams.

A streamed answer is read in many small pieces, one server-sent event per token, and every read
through anyio enters a cancel scope and a ``fail_after`` deadline. In front of a fast engine that is
most of what the gateway spends per token. Here a read takes what the protocol has buffered, and only
waits, with one timer for its deadline, when there is nothing yet. Reading from the socket stops while
more than ``_HIGH_WATER`` bytes wait unread, so a slow client slows the upstream (back-pressure)
instead of filling memory.

:func:`transport` gives an ``httpx`` transport whose connection pool opens its connections here; it
keeps httpx's TLS set-up and limits.
"""

# ruff: noqa: ASYNC109 -- httpcore's stream and backend methods take their deadlines as ``timeout``
from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import typing
from collections.abc import Iterable

import httpcore
import httpx
from httpcore._utils import is_socket_readable

__all__ = ["AsyncioBackend", "transport"]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_KEEPALIVE_S = 4.0
"""Idle connections are closed after this long: before the 5 s after which uvicorn (vLLM, SGLang, another
SYN4PSE), llama-server and Node close theirs, so a request never goes out on a connection being closed."""

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Socket(asyncio.Protocol):
    """One connection's transport, what it has received, and who waits for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.ended = False
        self.error: Exception | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self._readable)

    def eof_received(self) -> bool:
        self.ended = True
        _wake(self._readable)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        _wake(self._readable)
        _wake(self._writable)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self._writable)

    # -- what the stream awaits ----------------------------------------------------------------------

    async def readable(self, seconds: float | None) -> None:
        self._readable = asyncio.get_running_loop().create_future()
        try:
            await _within(self._readable, seconds)
        finally:
            self._readable = None

    async def writable(self, seconds: float | None) -> None:
        self._writable = asyncio.get_running_loop().create_future()
        try:
            await _within(self._writable, seconds)
        finally:
            self._writable = None

    def take(self, max_bytes: int) -> bytes:
        data = self.received.popleft()
        if len(data) > max_bytes:
            self.received.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self.buffered -= len(data)
        if self.reading_paused and self.buffered <= _LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _within(waiter: asyncio.Future[None], seconds: float | None) -> None:
    """Wait for ``waiter``; TimeoutError after ``seconds`` (None: no limit)."""
    if seconds is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(seconds, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, sock: _Socket) -> None:
        self._sock = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock
        if not sock.received:
            if sock.ended:
                return _at_end(sock)
            try:
                await sock.readable(timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout("no data from the upstream in time") from None
            if not sock.received:
                return _at_end(sock)
        return sock.take(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        sock = self._sock
        if not buffer:
            return
        if sock.transport is None or sock.ended or sock.transport.is_closing():
            raise httpcore.WriteError("the connection to the upstream is closed")
        sock.transport.write(buffer)
        if sock.writing_paused:
            try:
                await sock.writable(timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout("the upstream took no data in time") from None
            if sock.error is not None:
                raise httpcore.WriteError(str(sock.error))

    async def aclose(self) -> None:
        if self._sock.transport is not None:
            self._sock.transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        sock = self._sock
        if sock.transport is None:
            raise httpcore.ConnectError("the connection to the upstream is closed")
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(sock.transport, sock, ssl_context, server_hostname=server_hostname,
                                       ssl_handshake_timeout=timeout)
        except TimeoutError:
            sock.transport.close()
            raise httpcore.ConnectTimeout("the TLS handshake with the upstream took too long") from None
        except (OSError, ssl.SSLError) as e:
            sock.transport.close()
            raise httpcore.ConnectError(str(e)) from e
        if tls is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        sock.transport = tls
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        sock = self._sock
        transport = sock.transport
        if transport is None:
            return True if info == "is_readable" else None
        if info == "is_readable":
            # An idle keep-alive connection with data or an end is not reused. The socket is asked too, as
            # a close may have arrived that the event loop has not handed to the protocol yet.
            return bool(sock.received) or sock.ended or is_socket_readable(transport.get_extra_info("socket"))
        name = _EXTRA_INFO.get(info)
        return transport.get_extra_info(name) if name is not None else None


_EXTRA_INFO = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
"""httpcore's names for what it asks of a connection → asyncio's names for them."""


def _at_end(sock: _Socket) -> bytes:
    if sock.error is not None:
        raise httpcore.ReadError(str(sock.error))
    return b""


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[SocketOption] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await _connect(loop.create_connection(_Socket, host, port, local_addr=local), timeout, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[SocketOption] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connect(loop.create_unix_connection(_Socket, path), timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(opening: typing.Awaitable[tuple[asyncio.BaseTransport, _Socket]], timeout: float | None,
                   socket_options: Iterable[SocketOption] | None) -> AsyncioStream:
    try:
        async with asyncio.timeout(timeout):
            transport, sock = await opening
    except TimeoutError:
        raise httpcore.ConnectTimeout("no connection to the upstream in time") from None
    except OSError as e:
        raise httpcore.ConnectError(str(e)) from e
    raw = transport.get_extra_info("socket")
    for option in socket_options or ():
        with contextlib.suppress(OSError):
            raw.setsockopt(*option)
    return AsyncioStream(sock)


def transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """An httpx transport (HTTP/1.1, httpx's default TLS) whose connections are :class:`AsyncioStream`;
    ``limits`` bound the connections, and idle ones live ``_KEEPALIVE_S``."""
    tls = httpx.create_ssl_context()  # one context (and one read of the CA bundle) for both pools
    made = httpx.AsyncHTTPTransport(verify=tls, limits=limits)
    made._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls, max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=_KEEPALIVE_S,
        network_backend=AsyncioBackend())
    return made
