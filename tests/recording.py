"""What the framework tests see of the traffic: a pass-through to the gateway that keeps what each framework
sent, and a guard that refuses any host but 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

__all__ = ["RecordingProxy", "install_network_guard", "new_network_attempts", "no_network", "proxy",
           "tool_output_reached_next_response", "tool_result_reached_next_request"]

_LOCAL = ("127.0.0.1", "::1", "localhost")
_attempts: list[str] = []
_connect = socket.socket.connect
_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOCAL:
        _attempts.append(f"connect {address}")
        raise OSError(f"the framework tests reach no host but 127.0.0.1 (tried {address})")
    _connect(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in _LOCAL:
        _attempts.append(f"resolve {name}")
        raise socket.gaierror(socket.EAI_NONAME, f"the framework tests resolve no host but 127.0.0.1 ({name})")
    return _getaddrinfo(host, *args, **kwargs)




_reported = 0


def install_network_guard() -> None:
    """Refuse, and note, every connection to and every name lookup of a host other than 127.0.0.1."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo


_reported = 0


def new_network_attempts() -> list[str]:
    """The attempts made since the last call."""
    global _reported
    new, _reported = _attempts[_reported:], len(_attempts)
    return new


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "accept-encoding"}


class RecordingProxy:
    """An HTTP pass-through to the gateway that keeps each request's path and JSON body, in order."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, Any]] = []
        proxy = self
        client = httpx.Client(base_url=upstream, timeout=300)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    parsed: Any = json.loads(body) if body else None
                except ValueError:
                    parsed = None  # multipart uploads
                proxy.requests.append((self.path, parsed))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                with client.stream(self.command, self.path, headers=headers, content=body) as upstream_response:
                    self.send_response(upstream_response.status_code)
                    for key, value in upstream_response.headers.items():
                        if key.lower() not in _HOP and key.lower() != "content-encoding":
                            self.send_header(key, value)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in upstream_response.iter_raw():
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def chat_bodies(self, since: int = 0) -> list[dict[str, Any]]:
        """The chat-completion request bodies from request number ``since`` on."""
        return [body for path, body in self.requests[since:]
                if path.endswith("/chat/completions") and isinstance(body, dict)]

    def response_bodies(self, since: int = 0) -> list[dict[str, Any]]:
        """The ``POST /responses`` request bodies (the Responses API) from request number ``since`` on."""
        return [body for path, body in self.requests[since:]
                if path.split("?")[0].endswith("/responses") and isinstance(body, dict)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tool_result_reached_next_request(proxy: RecordingProxy, since: int, result_text: str) -> dict[str, Any]:
    """The first chat request after ``since`` whose messages carry ``result_text`` as a tool message."""
    for body in proxy.chat_bodies(since):
        for message in body.get("messages", []):
            if message.get("role") == "tool" and result_text in json.dumps(message.get("content")):
                return body
    raise AssertionError(f"no request after the call carried the tool's result {result_text!r}")


def tool_output_reached_next_response(proxy: RecordingProxy, since: int, result_text: str,
                                      call_id: str | None = None) -> dict[str, Any]:
    """The first Responses request after ``since`` whose input carries ``result_text`` as a
    ``function_call_output`` item (of the call ``call_id``, when given)."""
    for body in proxy.response_bodies(since):
        items = body.get("input")
        for item in items if isinstance(items, list) else []:
            if (isinstance(item, dict) and item.get("type") == "function_call_output"
                    and call_id in (None, item.get("call_id")) and result_text in json.dumps(item.get("output"))):
                return body
    raise AssertionError(f"no Responses request after the call carried the tool's result {result_text!r}"
                         + (f" for call {call_id!r}" if call_id else ""))


# Fixtures for a client group's conftest.py to import (``from recording import no_network, proxy``).


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail the test if anything tried to reach a host other than 127.0.0.1 since the last test checked,
    imports included (those are laid at the first test's door)."""
    yield
    assert new_network_attempts() == [], "a framework tried to reach the network"


@pytest.fixture(scope="session")
def proxy(gateway: Any) -> Iterator[RecordingProxy]:
    """One recording pass-through to the session's gateway."""
    p = RecordingProxy(gateway.url)
    yield p
    p.close()
