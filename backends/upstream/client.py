"""Requests to an upstream's replicas, with failover until the first byte of the answer.

A request goes to the replica the :class:`~backends.upstream.pool.Pool` picks. Until the upstream has
sent the first piece of its answer nothing has reached the client, so a refused or broken connection,
a timeout, a 5xx or a 429 sends it to the next replica; once a piece is out, a failure ends the answer
(the gateway tells the client in-band). An upstream 4xx is the request's fault and is not retried
elsewhere. Closing a stream closes its connection, which is how the upstream learns that the client
left and frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from backends.errors import LoadFailed, UpstreamFailed, UpstreamRefused, UpstreamTimeout
from backends.upstream import network
from backends.upstream.dialect import Dialect, Form, dialect
from backends.upstream.options import Options
from backends.upstream.pool import Endpoint, Pool

__all__ = ["Upstream", "UpstreamModel"]

log = logging.getLogger(__name__)

_RETRIED = {429, 500, 502, 503, 504}
Reader = Callable[[httpx.Response], AsyncIterator[bytes]]


class _TryElsewhere(Exception):
    def __init__(self, why: str, *, timed_out: bool = False, refusal: UpstreamRefused | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.timed_out = timed_out
        self.refusal = refusal
        """A 429: told as such if every replica is as busy."""


class Upstream:
    """The replicas of one upstream model: an HTTP client, their pool, and their health checks."""

    def __init__(self, options: Options, wire: Dialect) -> None:
        self.options = options
        self.wire = wire
        self.pool = Pool(options.endpoints, failure_threshold=options.failure_threshold, cooldown=options.cooldown,
                         prefix_slack=options.prefix_slack)
        self._headers = {"accept": "application/json, text/event-stream"}
        if options.api_key_env:
            key = os.environ.get(options.api_key_env)
            if not key:
                raise LoadFailed(f"the environment variable {options.api_key_env} (options.api_key_env) is not set")
            self._headers["authorization"] = f"Bearer {key}"
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health: asyncio.Task[None] | None = None

    # -- the client and its health loop, made on the event loop when first used -----------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            o = self.options
            timeout = httpx.Timeout(o.first_byte_timeout, connect=o.connect_timeout)
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=o.parallel * 2)
            self._client = httpx.AsyncClient(timeout=timeout, headers=self._headers,
                                             transport=network.transport(limits))
            self._loop = asyncio.get_running_loop()
            if o.health_interval > 0:
                self._health = asyncio.create_task(self._check_forever(), name="upstream health checks")
        return self._client

    async def _check_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._check(e) for e in self.pool.endpoints))
            await asyncio.sleep(self.options.health_interval)

    async def _check(self, endpoint: Endpoint) -> None:
        try:
            response = await self._http().get(endpoint.url + self.wire.health_path,
                                              timeout=self.options.connect_timeout)
        except httpx.HTTPError as e:
            self.pool.checked(endpoint, False, _describe(e))
            return
        ok = response.status_code < 400
        self.pool.checked(endpoint, ok, None if ok else f"health check answered {response.status_code}")

    def close(self) -> None:
        """Stop the health checks and close the connections (from any thread)."""
        loop, client, health = self._loop, self._client, self._health
        if loop is None or client is None or loop.is_closed():
            return

        async def shut() -> None:
            if health is not None:
                health.cancel()
                with contextlib.suppress(BaseException):
                    await health
            await client.aclose()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(shut())
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=5)

    # -- requests -----------------------------------------------------------------------------------

    async def send(self, path: str, *, body: bytes | None = None, form: Form | None = None,
                   affinity: str | None = None) -> bytes:
        """The whole answer of the first replica that gives one."""
        async for whole in self._pieces(path, body, form, affinity, _whole):
            return whole
        raise UpstreamFailed("the upstream sent an empty answer")  # _whole always yields once

    def stream(self, path: str, *, body: bytes, affinity: str | None = None,
               events: bool = True) -> AsyncIterator[bytes]:
        """The answer in pieces as they come: each server-sent event's data (``events``), else raw bytes."""
        return self._pieces(path, body, None, affinity, _sse_data if events else _raw)

    async def _pieces(self, path: str, body: bytes | None, form: Form | None, affinity: str | None,
                      read: Reader) -> AsyncIterator[bytes]:
        client = self._http()
        tried: set[str] = set()
        last: _TryElsewhere | None = None
        while (endpoint := self.pool.pick(tried, affinity)) is not None:
            tried.add(endpoint.url)
            self.pool.begin(endpoint)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    try:
                        response = await _opened(stack, client, endpoint.url + path, body, form)
                        pieces = read(response)
                        stack.push_async_callback(_aclose, pieces)
                        first = await self._first(response, pieces)
                    except UpstreamRefused:
                        self.pool.succeeded(endpoint)  # it answered: the request is at fault, not the replica
                        raise
                    except _TryElsewhere as e:
                        if e.refusal is None:  # a busy replica is not a failing one
                            self.pool.failed(endpoint, e.why)
                        log.warning("upstream %s: %s; trying another replica", endpoint.url, e.why)
                        last = e
                        continue
                    except httpx.HTTPError as e:
                        last = _TryElsewhere(_describe(e), timed_out=isinstance(e, httpx.TimeoutException))
                        self.pool.failed(endpoint, last.why)
                        log.warning("upstream %s: %s; trying another replica", endpoint.url, last.why)
                        continue
                    if first is None:
                        self.pool.succeeded(endpoint)
                        return
                    yield first
                    async for piece in self._rest(endpoint, pieces):
                        yield piece
                    self.pool.succeeded(endpoint)
                    return
            finally:
                self.pool.end(endpoint)
        raise _exhausted(last, len(tried), len(self.pool.endpoints))

    async def _first(self, response: httpx.Response, pieces: AsyncIterator[bytes]) -> bytes | None:
        status = response.status_code
        if status >= 400:
            body = await response.aread()
            refusal = self.wire.read_error(body)
            if status in _RETRIED:
                busy = (UpstreamRefused(status, refusal.message, refusal.field, refusal.code, _retry_after(response))
                        if status == 429 else None)
                raise _TryElsewhere(f"answered {status}: {refusal.message}", refusal=busy)
            raise UpstreamRefused(status, refusal.message, refusal.field, refusal.code,
                                  _retry_after(response))
        try:
            return await anext(pieces, None)
        except httpx.TimeoutException:
            raise _TryElsewhere("no answer in time", timed_out=True) from None

    async def _rest(self, endpoint: Endpoint, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        stall = _Stall(self.options.read_timeout)
        try:
            while True:
                try:
                    piece = await stall.wait(anext(pieces, None))
                except (asyncio.CancelledError, httpx.TimeoutException) as e:
                    if isinstance(e, asyncio.CancelledError) and not stall.expired():
                        raise  # not the stall timer's: the reader is being cancelled
                    self.pool.failed(endpoint, "stalled mid-answer")
                    raise UpstreamTimeout(
                        f"the upstream stopped answering for {self.options.read_timeout:g}s") from None
                except httpx.HTTPError as e:
                    self.pool.failed(endpoint, _describe(e))
                    raise UpstreamFailed(f"the upstream broke off its answer ({_describe(e)})") from None
                if piece is None:
                    return
                yield piece
        finally:
            stall.close()

    # -- what /admin/models, /ready and /metrics show --------------------------------------------------

    def endpoints(self) -> list[dict[str, object]]:
        return self.pool.describe()

    def any_up(self) -> bool:
        return self.pool.any_up()


class _Stall:
    """The read timeout mid-answer: the reading task is cancelled once it has waited ``seconds`` for one
    piece. One timer serves the whole answer, where a deadline per piece would cost one per token; the
    time the client takes between pieces does not count."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._since = 0.0
        self._waiting: asyncio.Task[Any] | None = None
        self._fired = False
        self._timer = self._loop.call_later(seconds, self._check)

    async def wait(self, next_piece: Awaitable[bytes | None]) -> bytes | None:
        self._since, self._waiting = self._loop.time(), asyncio.current_task()
        try:
            return await next_piece
        finally:
            self._waiting = None

    def _check(self) -> None:
        waiting = self._waiting
        if waiting is None:
            self._timer = self._loop.call_later(self.seconds, self._check)
        elif (due := self._since + self.seconds) > self._loop.time():
            self._timer = self._loop.call_at(due, self._check)
        else:
            self._fired = True
            waiting.cancel()

    def expired(self) -> bool:
        """Whether this timer's cancel is the only one pending (then it is taken back)."""
        task = asyncio.current_task()
        if not self._fired or task is None:
            return False
        self._fired = False
        return task.uncancel() == 0

    def close(self) -> None:
        self._timer.cancel()


async def _opened(stack: contextlib.AsyncExitStack, client: httpx.AsyncClient, url: str, body: bytes | None,
                  form: Form | None) -> httpx.Response:
    """The answer's head. A kept-alive connection that the upstream closed just as it went back to the pool
    (llama-server closes each one after a stream) fails before any answer; the request then goes once
    more to the same replica, on another connection, and the replica is not blamed for it."""
    try:
        return await stack.enter_async_context(client.stream("POST", url, **_content(body, form)))
    except httpx.RemoteProtocolError as e:
        log.debug("upstream %s closed a kept-alive connection (%s); sending again", url, e)
        return await stack.enter_async_context(client.stream("POST", url, **_content(body, form)))


def _content(body: bytes | None, form: Form | None) -> dict[str, Any]:
    if form is not None:
        return {"data": _multidict(form.fields),
                "files": {form.file_field: (form.file_name, form.file, form.file_type)}}
    return {"content": body or b"", "headers": {"content-type": "application/json"}}


def _multidict(fields: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for key, value in fields:
        if key in out:
            held = out[key]
            out[key] = [*held, value] if isinstance(held, list) else [held, value]
        else:
            out[key] = value
    return out


async def _whole(response: httpx.Response) -> AsyncIterator[bytes]:
    yield await response.aread()


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    async for data in response.aiter_bytes():
        if data:
            yield data


async def _sse_data(response: httpx.Response) -> AsyncIterator[bytes]:
    """Each event's data, read straight from the body's bytes. After ``[DONE]`` the body is read to its
    end, so the connection goes back to the pool instead of being closed."""
    events = _Events()
    body = response.aiter_bytes()
    async for data in body:
        for payload in events.feed(data):
            if payload.strip() == b"[DONE]":
                with contextlib.suppress(httpx.HTTPError, TimeoutError):
                    async with asyncio.timeout(_DRAIN_S):
                        async for _ in body:
                            pass
                return
            yield payload
    last = events.end()
    if last is not None and last.strip() != b"[DONE]":
        yield last


_DRAIN_S = 0.1
"""How long the end of a body after ``[DONE]`` may take before its connection is closed instead. Servers
send it with ``[DONE]`` or just after; the answer's last chunk waits for it, so the wait is short."""


class _Events:
    """Server-sent events cut from a byte stream: lines end in LF, CRLF or CR; a blank line ends an event."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> list[bytes]:
        text = self._held + data
        if text.endswith(b"\r"):  # maybe the first half of a CRLF
            text, tail = text[:-1], b"\r"
        else:
            tail = b""
        *blocks, rest = _lf(text).split(b"\n\n")
        self._held = rest + tail
        return [payload for block in blocks if (payload := _data(block)) is not None]

    def end(self) -> bytes | None:
        held, self._held = _lf(self._held), b""
        return _data(held)


def _lf(text: bytes) -> bytes:
    """Every line end (CRLF or CR) made LF."""
    return text.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in text else text


def _data(block: bytes) -> bytes | None:
    """An event's data lines joined (None: the event has none, such as a comment or a bare ``event:``)."""
    if block.startswith(b"data:") and b"\n" not in block:  # the usual event: one data line
        return block[6:] if block[5:6] == b" " else block[5:]
    lines = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


async def _aclose(pieces: AsyncIterator[bytes]) -> None:
    close = getattr(pieces, "aclose", None)
    if close is not None:
        await close()


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _describe(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(error, httpx.ConnectError):
        return "connection refused or unreachable"
    return f"connection failed ({type(error).__name__})"


def _exhausted(last: _TryElsewhere | None, tried: int, total: int) -> UpstreamFailed | UpstreamRefused:
    if last is not None and last.refusal is not None:
        return last.refusal
    if last is None:
        return UpstreamFailed(f"every replica of the upstream ({total}) is failing; none is tried until its"
                              " cooldown ends")
    where = "its only replica" if total == 1 else f"{tried} of its {total} replicas"
    kind = UpstreamTimeout if last.timed_out else UpstreamFailed
    return kind(f"The upstream could not answer: {where} failed (last: {last.why}).")


class UpstreamModel:
    """What every upstream backend shares: its replicas, their state, and closing them."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.wire = dialect(options.api)
        self.upstream = Upstream(options, self.wire)

    def close(self) -> None:
        self.upstream.close()

    def endpoints(self) -> list[dict[str, object]]:
        return self.upstream.endpoints()

    def serving(self) -> bool:
        return self.upstream.any_up()
