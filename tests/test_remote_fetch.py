"""Fetching client-named URLs: off by default; when on, public addresses only, bounded in size.

Traffic stays on this machine: the one server that answers is on loopback, reachable only in the
``allow_private`` configuration; every other case is refused before any connection is made.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import Gateway, base_config, file_server

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def audio_server(gateway: Gateway) -> Iterator[str]:
    wav = gateway.openai().audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE,
                                               response_format="wav").content

    with file_server({"/speech.wav": wav, "/big": b"x" * 300_000}, redirects={"/moved": "/speech.wav"}) as url:
        yield url


def _gateway(tmp_path_factory: pytest.TempPathFactory, fetch: str) -> Gateway:
    return Gateway(tmp_path_factory.mktemp("fetch"), base_config(extra_server=f"  remote_fetch: {fetch}\n")).start()


@pytest.fixture(scope="module")
def open_fetch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _gateway(tmp_path_factory, "{enabled: true, allow_private: true, max_bytes: 200000}")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def public_fetch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _gateway(tmp_path_factory, "{enabled: true}")
    yield gw
    gw.stop()


def _listen_url(gw: Gateway, url: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/listen", params={"model": "nova-3", "punctuate": "true"}, json={"url": url},
                      timeout=120)


def test_fetched_audio_is_transcribed_when_allowed(open_fetch: Gateway, audio_server: str) -> None:
    for path in ("/speech.wav", "/moved"):
        r = _listen_url(open_fetch, audio_server + path)
        assert r.status_code == 200, r.text
        assert "fox" in r.json()["results"]["channels"][0]["alternatives"][0]["transcript"].lower()
    groq = httpx.post(f"{open_fetch.url}/openai/v1/audio/transcriptions", timeout=120,
                      data={"model": "whisper-large-v3", "url": audio_server + "/speech.wav"})
    assert groq.status_code == 200 and "fox" in groq.json()["text"].lower()


def test_size_limit(open_fetch: Gateway, audio_server: str) -> None:
    r = _listen_url(open_fetch, audio_server + "/big")
    assert r.status_code == 413


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/a.wav", "http://127.0.0.1:9/a.wav", "http://localhost:9/a.wav",
    "http://10.1.2.3/a.wav", "http://192.168.0.1/a.wav", "http://169.254.169.254/latest/meta-data",
    "http://[::1]:9/a.wav", "http://0.0.0.0:9/", "gopher://x",
    "http://[::1/a.wav", "http://example.com:99999/a.wav", "http://example.com:port/", "http:/a.wav",
    "http://[::ffff:127.0.0.1]:9/a.wav", "http://[64:ff9b::a00:1]/a.wav",
])
def test_refused_urls_never_connect(public_fetch: Gateway, url: str) -> None:
    r = _listen_url(public_fetch, url)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["err_code"] == "Bad Request" and "'url' cannot be fetched" in body["err_msg"]


def test_loopback_server_is_refused_under_the_public_policy(public_fetch: Gateway, audio_server: str) -> None:
    r = _listen_url(public_fetch, audio_server + "/speech.wav")
    assert r.status_code == 400 and "non-public address" in r.json()["err_msg"]


def test_off_by_default(gateway: Gateway, audio_server: str) -> None:
    r = _listen_url(gateway, audio_server + "/speech.wav")
    assert r.status_code == 400 and "disabled" in r.json()["err_msg"]
