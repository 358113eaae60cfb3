"""The playground at ``/`` in a real browser: Debian's chromium driven by Playwright, against a real gateway.

The page must load with no console error and no failed request, stream a chat, answer about an image (read
by the OCR model), hold a voice conversation over WebRTC with chromium's fake microphone playing the
gateway's own speech, and work on a gateway that asks for a key once the key is typed. A screenshot of
each state is kept under ``.ci/artifacts/playground/``.
"""

from __future__ import annotations

import io
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from conftest import STARTER_MODELS, Gateway, base_config
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright
from test_vision import render

pytestmark = pytest.mark.timeout(240)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / ".ci" / "artifacts" / "playground"
QUESTION = "What is the capital of France?"
OCR = "  ppocr: {type: vision, backend: rapidocr, source: {package: rapidocr, file: models}}\n"
MODELS = STARTER_MODELS.replace("    options: {n_ctx: 1024}\n", "    options: {n_ctx: 2048}\n    vision: ocr\n",
                                1) + OCR

if CHROMIUM is None:  # the project's test set-up installs it: without it these tests cannot show anything
    raise RuntimeError("the playground tests need Debian's chromium: bash .ci/install test installs it")


@pytest.fixture(scope="module")
def seeing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The starter models with the chat model reading images by OCR; prompts logged."""
    gw = Gateway(tmp_path_factory.mktemp("playground"), base_config(models=MODELS).replace(
        "log_level: info", "log_level: debug")).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("playground-keyed"), base_config("  api_keys: [sk-playground]\n")).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def microphone(seeing: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV for chromium's fake microphone: a second of silence, the question, then silence (it loops)."""
    spoken = httpx.post(f"{seeing.url}/v1/audio/speech", timeout=120, json={
        "model": "tts-1", "voice": "alloy", "input": QUESTION, "response_format": "wav"})
    spoken.raise_for_status()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    with av.open(io.BytesIO(spoken.content)) as container:
        pcm = b"".join(bytes(out.planes[0])[:2 * out.samples] for frame in container.decode(audio=0)
                       for out in resampler.resample(frame))
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(bytes(2 * 48000) + pcm + bytes(2 * 48000 * 6))
    return path


@pytest.fixture(scope="module")
def browser(microphone: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required"])
        yield launched
        launched.close()


class Watched:
    """A page, and every console error and failed request it had."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("requestfailed", self._failed)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.requests_with_key: list[str] = []
        """The URLs of realtime calls and sockets that carried the API key itself."""
        page.on("request", self._realtime)
        page.on("websocket", lambda socket: self.requests_with_key.append(socket.url))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def _realtime(self, request: Request) -> None:
        if "/v1/realtime/calls" in request.url and "sk-playground" in (request.headers.get("authorization") or ""):
            self.requests_with_key.append(f"{request.url} (Authorization: the key)")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"failed request: {request.url}")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def page(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    yield Watched(context.new_page())
    context.close()


def test_the_page_loads_offline_and_a_chat_streams(page: Watched, seeing: Gateway) -> None:
    page.page.goto(seeing.url)
    page.page.wait_for_function("() => document.querySelectorAll('[data-testid=model-select] option').length > 0")
    assert page.page.input_value("[data-testid=model-select]") == "gpt-4o-mini"
    page.page.fill("[data-testid=chat-input]", "Tell me a short story about a cat.")
    page.page.click("[data-testid=send]")
    # Streamed: words are on the page while the answer is still coming.
    page.page.wait_for_function("""() => { const m = document.querySelector('[data-testid=message-assistant]');
        return m && m.getAttribute('aria-busy') === 'true' && m.textContent.trim().length > 0; }""", timeout=60_000)
    page.page.wait_for_selector("[data-testid=message-assistant]:not([aria-busy])", timeout=60_000)
    assert page.page.inner_text("[data-testid=message-user]") == "Tell me a short story about a cat."
    assert page.page.inner_text("[data-testid=message-assistant]").strip()
    page.shot("chat")
    assert page.problems == []


def test_an_image_is_answered(page: Watched, seeing: Gateway, tmp_path: Path) -> None:
    image = tmp_path / "note.png"
    image.write_bytes(render("PARCEL 7788"))
    page.page.goto(seeing.url)
    page.page.wait_for_function("() => document.querySelectorAll('[data-testid=model-select] option').length > 0")
    page.page.set_input_files("[data-testid=attach]", str(image))
    page.page.fill("[data-testid=chat-input]", "What does the note say?")
    page.page.click("[data-testid=send]")
    page.page.wait_for_selector("[data-testid=message-assistant]:not([aria-busy])", timeout=60_000)
    assert page.page.locator("[data-testid=message-user] img").count() == 1
    assert page.page.inner_text("[data-testid=message-assistant]").strip()
    assert any("[Text found in image 1:" in line and "7788" in line for line in seeing.log().splitlines())
    page.shot("image")
    assert page.problems == []


def _audio_level(page: Page) -> float:
    """The loudness of what the page's audio element receives, over a second (WebAudio)."""
    level: Any = page.evaluate("""async () => {
        const stream = document.getElementById('voice-audio').srcObject;
        const context = new AudioContext();
        const analyser = context.createAnalyser();
        context.createMediaStreamSource(stream).connect(analyser);
        const samples = new Float32Array(analyser.fftSize);
        let loudest = 0;
        for (let i = 0; i < 40; i++) {
            await new Promise((r) => setTimeout(r, 50));
            analyser.getFloatTimeDomainData(samples);
            loudest = Math.max(loudest, Math.max(...samples.map(Math.abs)));
        }
        await context.close();
        return loudest;
    }""")
    return float(level)


def test_a_voice_turn_over_webrtc(page: Watched, seeing: Gateway) -> None:
    page.page.goto(seeing.url)
    page.page.click("#tab-voice")
    page.page.wait_for_function("() => document.querySelectorAll('#voice-model option').length > 0")
    assert page.page.input_value("#voice-model") == "gpt-realtime"
    page.page.click("[data-testid=voice-start]")
    page.page.wait_for_selector("[data-testid=transcript] .user .latency", timeout=90_000)
    user = page.page.locator("[data-testid=transcript] .user").first.inner_text()
    assert "capital of france" in user.lower(), user
    assert page.page.locator("[data-testid=transcript] .assistant").first.inner_text().strip()
    assert _audio_level(page.page) > 0.01  # the answer is heard on the call's track
    page.shot("voice")
    page.page.click("[data-testid=voice-stop]")
    assert page.page.inner_text("#voice-state") == "idle"
    assert page.problems == []


def test_a_voice_turn_over_the_websocket_with_a_camera_frame(page: Watched, seeing: Gateway) -> None:
    """The fallback where a browser has no WebRTC: pcm over the WebSocket, played by the page; and a frame
    of chromium's fake camera goes with the turn."""
    page.page.goto(seeing.url)
    page.page.click("#tab-voice")
    page.page.wait_for_function("() => document.querySelectorAll('#voice-model option').length > 0")
    page.page.select_option("#voice-transport", "websocket")
    page.page.check("#voice-camera")
    page.page.click("[data-testid=voice-start]")
    page.page.wait_for_selector("[data-testid=transcript] .user .latency", timeout=90_000)
    user = page.page.locator("[data-testid=transcript] .user:not(.frame)").first.inner_text()
    assert "capital of france" in user.lower(), user
    page.page.wait_for_selector("[data-testid=transcript] .frame img", timeout=30_000)  # the server took the frame
    played = page.page.locator("[data-testid=transcript] .assistant").first.get_attribute("data-audio-ms")
    assert played is not None and int(played) > 300  # the answer's audio, queued to play in the page
    page.shot("voice-websocket")
    page.page.click("[data-testid=voice-stop]")
    assert page.problems == []


def test_a_recording_is_transcribed_and_a_pasted_image_is_sent(page: Watched, seeing: Gateway) -> None:
    page.page.goto(seeing.url)
    page.page.click("#tab-audio")
    page.page.wait_for_function("() => document.querySelectorAll('#stt-model option').length > 0")
    page.page.click("#stt-record")  # chromium's fake microphone says the question, again and again
    page.page.wait_for_timeout(7000)
    page.page.click("#stt-record")
    page.page.wait_for_selector("#stt-timeline li", timeout=60_000)
    assert "capital of france" in page.page.inner_text("#stt-text").lower()
    page.page.click("#tab-chat")
    png = list(render("PASTED 3141"))
    page.page.evaluate("""(bytes) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], 'pasted.png', { type: 'image/png' }));
        document.querySelector('[data-testid=chat-input]').dispatchEvent(
            new ClipboardEvent('paste', { clipboardData: data, bubbles: true }));
    }""", png)
    page.page.wait_for_selector("#attachments img")
    page.page.fill("[data-testid=chat-input]", "What does it say?")
    page.page.click("[data-testid=send]")
    page.page.wait_for_selector("[data-testid=message-assistant]:not([aria-busy])", timeout=60_000)
    assert any("[Text found in image 1:" in line and "3141" in line for line in seeing.log().splitlines())
    assert page.problems == []


def test_models_load_and_unload_from_the_status_tab(page: Watched, seeing: Gateway) -> None:
    page.page.goto(seeing.url)
    page.page.click("#tab-status")
    row = page.page.locator("[data-testid=status] tbody tr", has_text="joe")
    row.get_by_role("button", name="Unload", exact=True).click()  # loaded by the tests before, or not
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .some((r) => r.cells[0].textContent === 'joe' && r.cells[2].textContent.startsWith('available'))""")
    row.get_by_role("button", name="Load", exact=True).click()
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .some((r) => r.cells[0].textContent === 'joe' && r.cells[2].textContent.startsWith('loaded'))""")
    row.get_by_role("button", name="Unload", exact=True).click()
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .some((r) => r.cells[0].textContent === 'joe' && r.cells[2].textContent.startsWith('available'))
        || !document.getElementById('error').hidden""")
    assert page.page.is_hidden("#error"), page.page.inner_text("#error")
    assert row.locator("td").nth(2).inner_text().startswith("available")
    assert page.problems == []


def test_the_page_fits_a_phone(browser: Browser, seeing: Gateway) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = Watched(context.new_page())
    phone.page.goto(seeing.url)
    phone.page.wait_for_function("() => document.querySelectorAll('[data-testid=model-select] option').length > 0")
    for tab in ("chat", "voice", "audio", "embeddings", "status"):
        phone.page.click(f"#tab-{tab}")
        assert phone.page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1"), tab
    phone.page.focus("#tab-status")
    phone.page.keyboard.press("ArrowRight")  # the tabs follow the keyboard, wrapping around
    assert phone.page.get_attribute("#tab-chat", "aria-selected") == "true"
    assert phone.page.is_visible("[data-testid=chat-input]") and phone.page.is_hidden("#status")
    phone.shot("phone")
    context.close()
    assert phone.problems == []


def test_a_keyed_gateway_works_once_the_key_is_typed(page: Watched, keyed: Gateway) -> None:
    page.page.goto(keyed.url)
    page.page.wait_for_selector("#error:not([hidden])")
    assert "API key" in page.page.inner_text("#error")  # the API's own words
    page.shot("key-missing")
    page.problems.clear()  # the 401s before the key was typed are what this checks
    page.page.fill("[data-testid=api-key]", "sk-playground")
    page.page.press("[data-testid=api-key]", "Enter")
    page.page.wait_for_function("() => document.querySelectorAll('[data-testid=model-select] option').length > 0")
    page.page.fill("[data-testid=chat-input]", "Say hello.")
    page.page.click("[data-testid=send]")
    page.page.wait_for_selector("[data-testid=message-assistant]:not([aria-busy])", timeout=60_000)
    assert page.page.inner_text("[data-testid=message-assistant]").strip()
    assert page.page.evaluate("localStorage.getItem('syn4pse.api-key')") == "sk-playground"
    page.page.click("#tab-status")
    page.page.wait_for_function("() => document.querySelectorAll('[data-testid=status] tbody tr').length > 0")
    page.shot("status")
    # A voice call on the keyed gateway: made on a client secret the key asked for, never the key itself.
    page.page.click("#tab-voice")
    page.page.wait_for_function("() => document.querySelectorAll('#voice-model option').length > 0")
    page.page.click("[data-testid=voice-start]")
    page.page.wait_for_selector("[data-testid=transcript] .user .latency", timeout=90_000)
    page.page.click("[data-testid=voice-stop]")
    assert "sk-playground" not in " ".join(page.requests_with_key)
    assert page.problems == []


def test_the_page_and_its_files_come_only_from_the_server(seeing: Gateway) -> None:
    index = httpx.get(seeing.url)
    assert index.status_code == 200 and "script-src 'self'" in index.headers["content-security-policy"]
    for path in ("/static/js/main.js", "/static/js/voice.js", "/static/style.css"):
        body = httpx.get(seeing.url + path)
        assert body.status_code == 200 and "http://" not in body.text and "https://" not in body.text.replace(
            "https?:\\/\\/", "")
    assert httpx.get(seeing.url + "/static/../gateway/app.py").status_code == 404
    assert httpx.get(seeing.url + "/static/js/../../routes/playground.py").status_code == 404


def test_audio_tools_and_embeddings(page: Watched, seeing: Gateway, microphone: Path) -> None:
    page.page.goto(seeing.url)
    page.page.click("#tab-audio")
    page.page.wait_for_function("() => document.querySelectorAll('#tts-voice option').length > 0")
    page.page.click("#tts-speak")
    page.page.wait_for_selector("#tts-download:not([hidden])", timeout=60_000)
    assert page.page.get_attribute("#tts-download", "download") == "speech.mp3"
    page.page.set_input_files("#stt-file", str(microphone))
    page.page.wait_for_selector("#stt-timeline li", timeout=60_000)
    assert "capital of france" in page.page.inner_text("#stt-text").lower()
    assert page.page.inner_text("#stt-timeline li").startswith("0:0")  # a segment with its times
    page.shot("audio")
    page.page.click("#tab-embeddings")
    page.page.click("#embed")
    page.page.wait_for_selector("#heatmap td", timeout=60_000)
    cells = [float(c) for c in page.page.locator("#heatmap td").all_inner_texts()]
    assert len(cells) == 16 and cells[0] == 1.0
    assert cells[1] > cells[2] + 0.3  # the two sentences about cats are nearer than a cat and the market
    page.shot("embeddings")
    assert page.problems == []
