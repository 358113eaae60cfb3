"""Attacks on the HTTP front door, for the hostile-client runner (``bench/hostile.py``).

Each callable of :data:`ATTACKS` takes the base URL of a gateway started with the default server
settings and no API keys, attacks it for a few seconds over a bounded number of 127.0.0.1 connections,
and raises ``AssertionError`` if the server reacted wrongly:

* ``slowloris``: 200 connections trickle a request head a byte a second; each must be answered 408
  and closed by ``server.header_timeout`` (10 s), not held;
* ``bad-host``: a DNS-rebinding page's requests (``Host: evil.example``) to the admin and API routes
  get 421, and its WebSocket (foreign ``Origin``) a 403;
* ``no-cors-post``: what a page can POST cross-site without a preflight (``text/plain``, a form, a
  typeless body with an ``Origin``) gets 415 from every JSON route;
* ``header-injection``: line breaks and non-ASCII text in field names, paths, model names and request
  ids never reach a response header (no forged header, no 500).

Run alone: ``.venv/bin/python bench/hostile_http.py URL``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

__all__ = ["ATTACKS"]

HEADER_TIMEOUT_S = 10.0
"""``server.header_timeout``'s default."""


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def slowloris(url: str, connections: int = 200) -> None:
    host, port = _address(url)
    head = f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode()
    sockets = []
    try:
        for _ in range(connections):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(head)
            sockets.append(s)
        answers: dict[socket.socket, bytes] = {}
        open_ = list(sockets)
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 4
        next_byte = time.monotonic()
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(open_, [], [], 0.1)
            for s in readable:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                answers[s] = answers.get(s, b"") + data
                if not data:
                    open_.remove(s)
            if time.monotonic() >= next_byte:
                next_byte += 1.0
                for s in open_:
                    with contextlib.suppress(OSError):
                        s.send(b"a")
        assert not open_, f"{len(open_)} of {connections} trickling connections still open after {deadline} s"
        wrong = [a[:40] for a in answers.values() if not a.startswith(b"HTTP/1.1 408")]
        assert not wrong, f"trickled heads not answered 408: {wrong[:3]}"
    finally:
        for s in sockets:
            s.close()


def bad_host(url: str, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10, headers={"Host": "evil.example"}) as http:
        while time.monotonic() < deadline:
            for method, path in (("GET", "/admin/models"), ("POST", "/admin/models/joe/load"), ("GET", "/v1/models"),
                                 ("GET", "/metrics")):
                r = http.request(method, path)
                assert r.status_code == 421, (method, path, r.status_code)
            r = http.post("/v1/speak", json={"text": "hi"})
            assert r.status_code == 421 and r.json()["err_code"] == "Misdirected Request", r.text
    ws = url.replace("http://", "ws://") + "/v1/speak"
    status = None
    try:
        connect(ws, origin=Origin("https://evil.example"), open_timeout=10).close()
    except InvalidStatus as refused:
        status = refused.response.status_code
    assert status == 403, f"a WebSocket from a foreign origin got {status or 'accepted'}, not 403"


def no_cors_post(url: str, seconds: float = 3.0) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "input": "x", "text": "x"}'
    kinds = ({"Content-Type": "text/plain;charset=UTF-8"}, {"Content-Type": "application/x-www-form-urlencoded"},
             {"Content-Type": "multipart/form-data; boundary=b"}, {"Origin": "https://evil.example"})
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < deadline:
            for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/audio/speech", "/admin/models/joe/load",
                         "/v1/speak"):
                for headers in kinds:
                    r = http.post(path, content=body, headers={"Origin": "https://evil.example", **headers})
                    assert r.status_code == 415, (path, headers, r.status_code)


def header_injection(url: str, seconds: float = 3.0) -> None:
    names = ("a\r\nx-evil: 1", "ключ", "b\nx-evil:1")
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            answers = [
                http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "max_tokens": 1,
                                                        "messages": [{"role": "user", "content": "hi"}],
                                                        **dict.fromkeys(names, 1)}),
                http.get("/v1/models/x%0D%0Ax-evil:%201"),
                http.post("/v1/speak?model=x%0D%0Ax-evil:%201%C3%A9", json={"text": "hi"}),
                http.get("/v1/models", headers={b"X-Request-Id": b"id\xe9\xff"}),
            ]
            for r in answers:
                assert r.status_code < 500, (r.request.url, r.status_code, r.text[:200])
                assert "x-evil" not in r.headers, (r.request.url, dict(r.headers))
            assert answers[-1].headers["x-request-id"] != "id\xe9\xff"  # not echoed: a fresh id


ATTACKS: list[tuple[str, Callable[[str], None]]] = [
    ("slowloris", slowloris),
    ("bad-host", bad_host),
    ("no-cors-post", no_cors_post),
    ("header-injection", header_injection),
]


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    for name, attack in ATTACKS:
        started = time.monotonic()
        attack(base)
        print(f"{name}: refused as expected ({time.monotonic() - started:.1f} s)")
