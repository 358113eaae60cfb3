"""API keys on every route of every dialect (WebSockets included), body and depth limits, CORS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import Gateway, base_config
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v2.types import ListenV2Connected
from groq import AuthenticationError as GroqAuthenticationError
from groq import Groq
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

KEY = "sk-test-secret"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = base_config(extra_server="  api_keys: [other-key]\n  cors:\n    allow_origins: [https://app.example]\n")
    gw = Gateway(tmp_path_factory.mktemp("locked"), config, env={"SYN4PSE_API_KEYS": f"{KEY},third"}).start()
    yield gw
    gw.stop()


HTTP_ROUTES = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"), ("GET", "/v1/models/gpt-4o-mini"), ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"), ("POST", "/v1/audio/speech"), ("GET", "/v1/audio/voices"),
    ("POST", "/openai/v1/chat/completions"), ("GET", "/openai/v1/models"),
    ("POST", "/openai/v1/audio/transcriptions"), ("GET", "/admin/models"), ("POST", "/admin/models/joe/load"),
    ("GET", "/metrics"),
]
DEEPGRAM_ROUTES = [("POST", "/v1/listen"), ("POST", "/v1/speak")]


@pytest.mark.parametrize(("method", "path"), HTTP_ROUTES)
def test_openai_dialect_routes_need_a_key(locked: Gateway, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + KEY}):
        r = httpx.request(method, locked.url + path, headers=headers, timeout=30)
        assert r.status_code == 401, (path, headers, r.status_code)
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    r = httpx.request(method, locked.url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code != 401


def test_ready_answers_probes_without_a_key_but_names_models_only_with_one(locked: Gateway) -> None:
    """A kubelet's probe carries no key: it gets the readiness, not which models are failing and why."""
    bare = httpx.get(f"{locked.url}/ready", timeout=30)
    assert bare.status_code in (200, 503) and set(bare.json()) == {"status"}
    keyed = httpx.get(f"{locked.url}/ready", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert keyed.status_code == bare.status_code and set(keyed.json()) == {"status", "models"}


@pytest.mark.parametrize(("method", "path"), DEEPGRAM_ROUTES)
def test_deepgram_routes_need_a_key_and_answer_in_its_shape(locked: Gateway, method: str, path: str) -> None:
    r = httpx.request(method, locked.url + path, timeout=30)
    assert r.status_code == 401
    body = r.json()
    assert body["err_code"] == "INVALID_AUTH" and body["request_id"] == r.headers["dg-request-id"]
    for scheme in ("Token", "token", "Bearer"):
        r = httpx.request(method, locked.url + path, headers={"Authorization": f"{scheme} {KEY}"}, timeout=60)
        assert r.status_code != 401


def test_health_is_open(locked: Gateway) -> None:
    assert httpx.get(f"{locked.url}/health").status_code == 200


def test_every_configured_key_works_and_sdks_authenticate(locked: Gateway) -> None:
    for key in (KEY, "other-key", "third"):
        client = openai.OpenAI(base_url=f"{locked.url}/v1", api_key=key, max_retries=0)
        assert any(m.id == "gpt-4o-mini" for m in client.models.list())
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{locked.url}/v1", api_key="nope", max_retries=0).models.list()
    assert Groq(api_key=KEY, base_url=locked.url, max_retries=0).models.list().data
    with pytest.raises(GroqAuthenticationError):
        Groq(api_key="nope", base_url=locked.url, max_retries=0).models.list()


@pytest.mark.parametrize("path", ["/v1/listen?encoding=linear16&sample_rate=16000", "/v1/speak",
                                  "/v2/listen?model=flux-general-en&encoding=linear16&sample_rate=16000"])
def test_websockets_need_a_key(locked: Gateway, path: str) -> None:
    url = locked.url.replace("http://", "ws://") + path
    with pytest.raises(InvalidStatus) as caught:
        connect(url)
    assert caught.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(url, subprotocols=["token", "wrong"])  # type: ignore[list-item]
    with connect(url, subprotocols=["token", KEY]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
    with connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        assert ws.subprotocol is None


def test_deepgram_sdk_with_the_key(locked: Gateway) -> None:
    ws = locked.url.replace("http://", "ws://")
    environment = DeepgramClientEnvironment(base=locked.url, production=ws, agent=ws, agent_rest=locked.url)
    audio = b"".join(DeepgramClient(api_key=KEY, environment=environment).speak.v1.audio.generate(
        text="Hello there.", model="aura-asteria-en"))
    assert len(audio) > 1000


def test_flux_sdk_needs_the_key(locked: Gateway) -> None:
    ws = locked.url.replace("http://", "ws://")
    environment = DeepgramClientEnvironment(base=locked.url, production=ws, agent=ws, agent_rest=locked.url)
    # The SDK's sync client turns only the legacy InvalidStatusCode into ApiError; websockets 14+ raises InvalidStatus.
    with pytest.raises((ApiError, InvalidStatus)) as caught, DeepgramClient(
            api_key="nope", environment=environment).listen.v2.connect(model="flux-general-en"):
        pass
    error = caught.value
    assert (error.status_code if isinstance(error, ApiError) else error.response.status_code) == 401
    with DeepgramClient(api_key=KEY, environment=environment).listen.v2.connect(
            model="flux-general-en", encoding="linear16", sample_rate=16000) as conn:
        connected = conn.recv()
        assert isinstance(connected, ListenV2Connected) and connected.sequence_id == 0
        conn.send_close_stream()


def test_cors_preflight_when_configured(locked: Gateway) -> None:
    r = httpx.options(f"{locked.url}/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = httpx.get(f"{locked.url}/v1/models", headers={"Origin": "https://evil.example",
                                                     "Authorization": f"Bearer {KEY}"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_cors_is_off_by_default(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_deep_json_is_refused(gateway: Gateway) -> None:
    deep = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "metadata": ' + \
        '{"a": ' * 100 + "1" + "}" * 100 + "}"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nests deeper" in r.json()["error"]["message"]
    very_deep = "[" * 200_000 + "]" * 200_000
    r = httpx.post(f"{gateway.url}/v1/embeddings", content=very_deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_oversized_headers_are_refused_and_the_server_goes_on(gateway: Gateway) -> None:
    try:
        r = httpx.get(f"{gateway.url}/v1/models", headers={"X-Big": "a" * 64 * 1024}, timeout=10)
        assert r.status_code == 431
        assert r.json()["error"]["code"] == "headers_too_large"
    except (httpx.RemoteProtocolError, httpx.ReadError):
        # The connection was closed on the oversized header: also a refusal. Whether the client sees the
        # close or a reset depends on how much of its 64 KiB head the kernel still held unread.
        pass
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_no_traceback_or_path_in_errors(gateway: Gateway, tmp_path: Path) -> None:
    for body in (b"\x00\xff", b'{"model": 1}', b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content":'
                 b' [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}'):
        r = httpx.post(f"{gateway.url}/v1/chat/completions", content=body)
        assert r.status_code == 400
        assert "Traceback" not in r.text and "/site-packages/" not in r.text and "/work/" not in r.text
