"""Deadlines for clients that send slowly: uvicorn's h11 protocol with a head and a body timeout.

uvicorn closes an idle keep-alive connection, but a client that sends its request head a byte at a
time, or stops half-way through a body, keeps its connection (and its place under
``server.max_connections``) for as long as it likes: every byte cancels the keep-alive timer and no
other timer exists. :func:`guarded_h11` adds two:

* the head (request line and headers) must be complete ``header_timeout`` seconds after its first
  byte, or after the connection opened; else a 408 and the connection is closed;
* a body must not go ``body_timeout`` seconds without a byte (while the server is reading it); else
  the connection is closed, which the route sees as the client going away.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_h11"]

_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     b"content-length: 33\r\nconnection: close\r\n\r\nThe request head took too long.\r\n")


def guarded_h11(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """The h11 protocol class for ``uvicorn.run(http=...)``, with these deadlines."""

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket: its protocol rules
                self._cancel_head()
                self._cancel_body()
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._head_timer is None and self.conn.trailing_data[0]:
                    self._arm_head()  # the first bytes of the next request on a kept-alive connection
                return
            self._cancel_head()
            if state is h11.SEND_BODY:
                self._arm_body()
            else:
                self._cancel_body()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head()
            self._cancel_body()
            super().connection_lost(exc)

        def _arm_head(self) -> None:
            self._cancel_head()
            self._head_timer = self.loop.call_later(header_timeout, self._head_expired)

        def _cancel_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _arm_body(self) -> None:
            self._cancel_body()
            self._body_timer = self.loop.call_later(body_timeout, self._body_expired)

        def _cancel_body(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            if self.conn.our_state is h11.IDLE:
                self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

        def _body_expired(self) -> None:
            self._body_timer = None
            if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
                return
            if self.flow.read_paused:  # the server, not the client, stopped reading: wait on
                self._arm_body()
                return
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is not h11.SEND_BODY:
                self._cancel_body()

    GuardedH11Protocol.__name__ = GuardedH11Protocol.__qualname__ = "GuardedH11Protocol"
    protocol: type[Any] = GuardedH11Protocol
    return protocol
