"""Hostile image clients and image sources, for ``bench/hostile.py``: each attack against a running gateway.

Every callable takes the gateway's base URL, runs for at most about 15 s over a few connections to
127.0.0.1, and raises ``AssertionError`` when the server did not refuse as it should: a 400 in OpenAI's
envelope whose ``param`` names the image's part. The chats go to the first ``llm`` model the gateway
lists; one whose ``vision`` is ``reject`` refuses every image at once (that answer is accepted too).
What the attacks cost the other clients is measured by the runner beside them.

    pixel bombs          small pngs claiming 400 million pixels, 4 clients for 5 s: refused from the header
    heavy, bomb last     15 images of 49 MP then a pixel bomb: refused before any image is decoded
    heavy, corrupt last  2 clients, 6 images of 49 MP then a corrupt one: decoded 2 at a time, then refused
    segment flood        2 clients, a 10 MB jpeg of 2.5 million empty segments each (seconds of Python
                         for Pillow's header walk): refused from a count of them
    fetch: gzip bomb     an image URL whose body unpacks to 256 MiB (gzip inside gzip)
    fetch: trickle       an image URL whose server sends a byte every 2 s: refused at the fetch deadline
    fetch: malformed     bad IPv6 literal, port 99999, no host, unknown scheme

The fetch attacks serve their URLs from 127.0.0.1: with the default settings (fetching off) they check
the refusal only; a gateway run with ``remote_fetch: {enabled: true, allow_private: true}`` meets the
bomb and the trickle themselves, as ``bench/hostile.py`` runs it (``SERVER_SETTINGS``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

__all__ = ["ATTACKS", "SERVER_SETTINGS"]

SERVER_SETTINGS = {"remote_fetch": {"enabled": True, "allow_private": True}}
"""What the runner starts its gateway with, so that the fetch attacks reach their hostile sources."""

FETCH_TIMEOUT = 10.0
"""``server.remote_fetch.timeout`` by default."""


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, *, cut: bool = False) -> bytes:
    """A white RGB png of ``width`` × ``height``; ``cut``: its pixel data stops halfway through a few rows
    (a small file whose header is sound: a pixel bomb when the header claims enough, else corrupt)."""
    row = b"\0" + b"\xff" * (3 * width)
    if cut:
        few = zlib.compress(row * min(height, 10), 9)
        pixels = few[:len(few) // 2]
    else:
        packer = zlib.compressobj(9)
        pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


@functools.cache
def _heavy() -> bytes:
    return _png(7000, 7000)  # 49 MP, just under server.max_image_pixels; about 150 KB


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@functools.cache
def _llm(url: str) -> str:
    models = httpx.get(f"{url}/admin/models", timeout=30).json()["data"]
    return next(m["id"] for m in models if m["type"] == "llm")


def _refused(url: str, images: list[str], part: int, why: str, timeout: float = 60) -> float:
    """Send one chat with ``images``; it must be a 400 naming the image at ``part`` (1-based) for ``why``
    (or the first image, for a model that takes none). The seconds it took."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is it?"}]
    content += [{"type": "image_url", "image_url": {"url": image}} for image in images]
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", timeout=timeout,
                   json={"model": _llm(url), "max_tokens": 1, "messages": [{"role": "user", "content": content}]})
    took = time.perf_counter() - start
    assert r.status_code == 400, f"{r.status_code}: {r.text[:300]}"
    error = r.json()["error"]
    if "does not accept images" in error["message"]:
        assert error["param"] == "messages[0].content[1]", error
        return took
    where = f"messages[0].content[{part}]"
    assert error["param"] == where and where in error["message"], error
    assert any(w in error["message"] for w in why.split("|")), error
    return took


def pixel_bombs(url: str) -> None:
    bomb = _data_url(_png(20_000, 20_000, cut=True))

    def client() -> int:
        sent, until = 0, time.monotonic() + 5
        while time.monotonic() < until:
            _refused(url, [bomb], 1, "more pixels than can be decoded")
            sent += 1
        return sent

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(lambda _: client(), range(4))) > 0


def heavy_bomb_last(url: str) -> None:
    images = [_data_url(_heavy())] * 15 + [_data_url(_png(20_000, 20_000, cut=True))]
    took = _refused(url, images, 16, "more pixels than can be decoded")
    assert took < 5, f"a request refused for its last image took {took:.1f} s (were the others decoded?)"


def heavy_corrupt_last(url: str) -> None:
    images = [_data_url(_heavy())] * 6 + [_data_url(_png(2000, 2000, cut=True))]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: _refused(url, images, 7, "cannot be decoded"), range(2)))


def segment_flood(url: str) -> None:
    flood = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + b"\xff\xe0\x00\x02" * 2_500_000).decode()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: _refused(url, [flood], 1, "pieces"), range(2)))


# --------------------------------------------------------------------------------------------------
# Hostile image sources on 127.0.0.1


class _Source(http.server.BaseHTTPRequestHandler):
    bomb = b""

    def do_GET(self) -> None:
        if self.path == "/trickle.png":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for byte in _png(8, 8) * 10:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(2)
            return
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip, gzip")
        self.send_header("Content-Length", str(len(self.bomb)))
        self.end_headers()
        self.wfile.write(self.bomb)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def _source() -> Iterator[str]:
    if not _Source.bomb:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        inner = b"".join([packer.compress(bytes(1 << 20)) for _ in range(256)] + [packer.flush()])
        _Source.bomb = zlib.compress(inner, 9, wbits=16 + zlib.MAX_WBITS)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Source)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_FETCH_REFUSED = "disabled|non-public address"


def fetch_gzip_bomb(url: str) -> None:
    with _source() as base:
        for _ in range(3):
            _refused(url, [base + "/bomb.png"], 1, f"larger than|{_FETCH_REFUSED}")


def fetch_trickle(url: str) -> None:
    with _source() as base:
        took = _refused(url, [base + "/trickle.png"], 1, f"took longer than|{_FETCH_REFUSED}")
    assert took < FETCH_TIMEOUT + 3, f"a trickling image source held the request {took:.1f} s"


def fetch_malformed(url: str) -> None:
    for bad in ("http://[::1/a.png", "http://127.0.0.1:99999/a.png", "http:/a.png", "https://user@/a.png"):
        _refused(url, [bad], 1, f"cannot be fetched|{_FETCH_REFUSED}")
    _refused(url, ["gopher://127.0.0.1/a.png"], 1, "only data URLs and http(s) URLs are accepted")


ATTACKS: list[tuple[str, Callable[[str], None]]] = [
    ("pixel bombs", pixel_bombs),
    ("heavy, bomb last", heavy_bomb_last),
    ("heavy, corrupt last", heavy_corrupt_last),
    ("segment flood", segment_flood),
    ("fetch: gzip bomb", fetch_gzip_bomb),
    ("fetch: trickle", fetch_trickle),
    ("fetch: malformed", fetch_malformed),
]
