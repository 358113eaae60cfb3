"""The HTTP front door against hostile or careless clients: header-breaking parameter names, DNS
rebinding (a foreign ``Host``), cross-site pages (WebSocket ``Origin``, no-cors POSTs), admin keys, an
open bind without keys, log injection and slow clients (trickled heads and bodies)."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
from conftest import SERVER_PYTHON, Gateway, base_config, free_port
from hostile import HealthProbe, wait_idle
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway.cli import _open_bind_refusal
from gateway.config import ServerConfig, parse_config
from gateway.guards import allowed_hosts, host_name
from gateway.observability import OneLineFormatter

ROOT = Path(__file__).resolve().parent.parent
KEY, ADMIN = "sk-user", "sk-admin"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Dropping unknown fields, short deadlines for slow clients, a small connection limit."""
    extra = ("  unsupported_params: drop\n  header_timeout: 1\n  body_timeout: 1\n  max_connections: 40\n")
    gateway = Gateway(tmp_path_factory.mktemp("hostile-http"), base_config(extra)).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    extra = (f"  api_keys: [{KEY}]\n  admin_keys: [{ADMIN}]\n"
             "  cors:\n    allow_origins: [https://app.example]\n")
    gateway = Gateway(tmp_path_factory.mktemp("hostile-keyed"), base_config(extra)).start()
    yield gateway
    gateway.stop()


def _openai_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, (response.status_code, response.text)
    error: dict[str, str] = response.json()["error"]
    return error


# -- parameter names that would break a header ---------------------------------------------------------


def test_streamed_requests_with_header_breaking_names_succeed_and_free_the_model(gw: Gateway) -> None:
    hostile = {"ключ": 1, "a\r\nx-evil: 1": 2}
    with HealthProbe(gw.url) as probe:
        for _ in range(6):
            with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json={**CHAT, "stream": True, **hostile},
                              timeout=120) as response:
                assert response.status_code == 200
                body = response.read().decode()
            assert body.rstrip().endswith("data: [DONE]")
            assert "x-evil" not in response.headers
            assert set(response.headers["x-syn4pse-dropped-params"].split(", ")) == {
                "%D0%BA%D0%BB%D1%8E%D1%87", "a%0D%0Ax-evil:%201"}
    probe.assert_served()
    assert set(wait_idle(gw.url).values()) == {0}
    # The warning naming them is one line: the name's line break is escaped, no forged line starts.
    log = gw.log()
    assert "a\\r\\nx-evil: 1" in log
    assert not any(line.startswith("x-evil") for line in log.splitlines())


def test_log_messages_stay_on_one_line() -> None:
    args = ("a\nb", "\x1b[2J\r\u2028")
    record = logging.LogRecord("syn4pse.test", logging.WARNING, __file__, 1, "model %s: %s", args, None)
    line = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING model a\\nb: \\x1b[2J\\r\\u2028"


# -- Host: DNS rebinding ------------------------------------------------------------------------------


def test_a_foreign_host_is_refused_in_the_routes_dialect(gw: Gateway) -> None:
    for host in ("evil.example", f"evil.example:{gw.port}", "127.0.0.1.evil.example", "localhost.:1@x"):
        error = _openai_error(httpx.get(f"{gw.url}/admin/models", headers={"Host": host}), 421)
        assert error["code"] == "host_not_allowed"
    r = httpx.post(f"{gw.url}/v1/speak", json={"text": "hi"}, headers={"Host": "evil.example"})
    assert r.status_code == 421 and r.json()["err_code"] == "Misdirected Request"
    assert r.json()["request_id"] == r.headers["dg-request-id"]
    assert httpx.get(f"{gw.url}/health", headers={"Host": "evil.example"}).status_code == 200  # probes
    for host in (f"localhost:{gw.port}", "LOCALHOST", f"127.0.0.1:{gw.port}", f"[::1]:{gw.port}"):
        assert httpx.get(f"{gw.url}/v1/models", headers={"Host": host}).status_code == 200, host
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as ws:  # a rebinding page's WebSocket
        ws.sendall(b"GET /v1/speak HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert ws.recv(4096).startswith(b"HTTP/1.1 421")


def test_host_allow_list_defaults_and_patterns() -> None:
    assert allowed_hosts(ServerConfig()) == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts(ServerConfig(host="0.0.0.0")) == ("*",)
    assert allowed_hosts(ServerConfig(host="::1")) == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts(ServerConfig(host="0.0.0.0", allowed_hosts=["API.example:443", "::1"])) == (
        "api.example", "[::1]")
    assert [host_name(h) for h in ("[::1]:80", "Example.COM.", "a:b:c", "x:80")] == [
        "[::1]", "example.com", "[a:b:c]", "x"]


def test_configured_host_names_and_subdomains(tmp_path: Path) -> None:
    from gateway.guards import _host_allowed

    allowed = allowed_hosts(ServerConfig(allowed_hosts=["api.example", ".corp.example"]))
    assert [_host_allowed(host_name(h), allowed) for h in (
        "api.example:8000", "corp.example", "a.corp.example", "evilcorp.example", "api.example.evil")] == [
        True, True, True, False, False]


# -- cross-site pages ----------------------------------------------------------------------------------


def test_a_foreign_pages_websocket_is_refused(gw: Gateway, keyed: Gateway) -> None:
    url = gw.url.replace("http://", "ws://") + "/v1/speak"
    for origin in ("https://evil.example", "null", f"http://localhost.evil.example:{gw.port}"):
        with pytest.raises(InvalidStatus) as caught:
            connect(url, origin=origin)  # type: ignore[arg-type]
        assert caught.value.response.status_code == 403, origin
    for origin in (None, "http://localhost:3000", f"http://127.0.0.1:{gw.port}", "https://[::1]"):
        with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            ws.send('{"type": "Close"}')
    keyed_url = keyed.url.replace("http://", "ws://") + "/v1/speak"
    with connect(keyed_url, origin="https://app.example", subprotocols=["token", KEY]) as ws:  # type: ignore[arg-type, list-item]
        ws.send('{"type": "Close"}')  # the CORS origin may
    with pytest.raises(InvalidStatus) as caught:
        connect(keyed_url, origin="https://evil.example", subprotocols=["token", KEY])  # type: ignore[arg-type, list-item]
    assert caught.value.response.status_code == 403


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/openai/v1/embeddings", "/v1/audio/speech",
                                  "/admin/models/joe/load", "/v1/speak"])
def test_json_routes_refuse_what_a_page_can_post_without_a_preflight(gw: Gateway, path: str) -> None:
    body = b'{"model": "gpt-4o-mini", "input": "x", "text": "x", "voice": "alloy"}'
    for headers in ({"Content-Type": "text/plain;charset=UTF-8"}, {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "multipart/form-data; boundary=x"}, {"Origin": "https://evil.example"}):
        r = httpx.post(gw.url + path, content=body, headers=headers, timeout=60)
        assert r.status_code == 415, (headers, r.text)
        code = r.json()["err_code"] if path == "/v1/speak" else r.json()["error"]["code"]
        assert code in ("unsupported_media_type", "Unsupported Media Type")


def test_json_with_a_charset_and_typeless_bodies_from_non_browsers_still_work(gw: Gateway) -> None:
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=msgspec.json.encode(CHAT), timeout=120,
                   headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{gw.url}/v1/embeddings", content=b'{"model": "text-embedding-3-small", "input": "x"}', timeout=120)
    assert r.status_code == 200, r.text  # curl -X POST without -H: no Origin, no type
    assert gw.openai().embeddings.create(model="text-embedding-3-small", input="x").data


# -- admin keys --------------------------------------------------------------------------------------


def test_admin_routes_take_admin_keys_only(keyed: Gateway) -> None:
    error = _openai_error(httpx.get(f"{keyed.url}/admin/models", headers={"Authorization": f"Bearer {KEY}"}), 403)
    assert error["code"] == "admin_key_required"
    assert httpx.get(f"{keyed.url}/admin/models").status_code == 401
    assert httpx.get(f"{keyed.url}/admin/models", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert set(wait_idle(keyed.url, key=ADMIN).values()) == {0}
    for key in (KEY, ADMIN):
        client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=key, max_retries=0)
        assert client.models.list().data


# -- binding beyond loopback ----------------------------------------------------------------------------


def test_an_open_bind_without_keys_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "syn4pse.yaml"
    config.write_text('version: "1"\n')
    done = subprocess.run([SERVER_PYTHON, "-m", "gateway", "serve", "--config", str(config), "--host", "0.0.0.0",
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 with no API keys" in done.stderr and "SYN4PSE_API_KEYS" in done.stderr


def test_open_bind_rules(caplog: pytest.LogCaptureFixture) -> None:
    assert _open_bind_refusal(ServerConfig(host="::")) is not None
    assert _open_bind_refusal(ServerConfig(host="192.168.1.5")) is not None
    assert _open_bind_refusal(ServerConfig(host="0.0.0.0", api_keys=["k"])) is None
    assert _open_bind_refusal(ServerConfig(host="127.0.0.2")) is None
    with caplog.at_level(logging.WARNING, logger="syn4pse.cli"):
        assert _open_bind_refusal(ServerConfig(host="0.0.0.0", allow_open_bind=True)) is None
    assert "no API keys" in caplog.text
    config = parse_config('version: "1"\n', environ={"SYN4PSE_ALLOW_OPEN_BIND": "1", "SYN4PSE_ADMIN_KEYS": "a, b"})
    assert config.server.allow_open_bind and config.server.admin_keys == ["a", "b"]


# -- slow clients --------------------------------------------------------------------------------------


def _closed_within(sockets: list[socket.socket], seconds: float, trickle: bool) -> dict[int, bytes]:
    """What each socket received before the server closed it, trickling a header byte each 0.1 s."""
    received: dict[int, bytes] = {}
    deadline = time.monotonic() + seconds
    open_ = list(sockets)
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.1)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            received[s.fileno()] = received.get(s.fileno(), b"") + data
            if not data:
                open_.remove(s)
        if trickle:
            for s in open_:
                with contextlib.suppress(OSError):
                    s.send(b"a")
    assert not open_, f"{len(open_)} of {len(sockets)} slow connections were still open after {seconds} s"
    return received


def _dial(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    return s


def test_trickled_heads_are_cut_off_and_others_are_served(gw: Gateway) -> None:
    with HealthProbe(gw.url) as probe:
        slow = [_dial(gw.port, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") for _ in range(20)]
        received = _closed_within(slow, 10, trickle=True)
    probe.assert_served()
    assert all(data.startswith(b"HTTP/1.1 408") for data in received.values()), set(received.values())
    for s in slow:
        s.close()


def test_a_stalled_body_is_cut_off_and_frees_everything(gw: Gateway) -> None:
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n").encode()
    with HealthProbe(gw.url) as probe:
        slow = [_dial(gw.port, head + b'{"model": "text-embedding-3-small", "input": "') for _ in range(5)]
        _closed_within(slow, 10, trickle=False)
    probe.assert_served()
    assert set(wait_idle(gw.url).values()) == {0}
    for s in slow:
        s.close()


def test_idle_connections_past_the_limit_are_freed_by_the_head_deadline(gw: Gateway) -> None:
    idle = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(45)]  # max_connections: 40
    try:
        assert httpx.get(f"{gw.url}/health").status_code == 503
        _closed_within(idle, 10, trickle=False)
        assert httpx.get(f"{gw.url}/health").status_code == 200
    finally:
        for s in idle:
            s.close()

