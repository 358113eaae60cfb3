"""Images in chat messages: fetched, checked, then shown to the model, read for it, or refused.

The compat layer hands over what the caller sent: decoded data URLs, and http(s) URLs not yet fetched.
Here every image becomes bytes the gateway holds and has checked (fetched under the remote-fetch
policy, within the size limits, really a png, jpeg, webp or gif by its signature, not too many pixels
by its header, then decodable) before any engine sees it. Every header is read before any image is
decoded, so a pixel bomb costs nothing. Headers and pixels are read on a few threads of their own, one
image each at a time over all requests (``server.max_image_decodes``), so concurrent image requests
cannot take every core, gigabytes of memory, or the interpreter lock from the event loop (Pillow reads
headers in Python: a file of many tiny segments takes seconds). A request's remote images are fetched
together. All of this happens before the model is asked for: no lease is held meanwhile. Then the
model's ``vision`` mode decides:

- ``native``: the image goes to the model as checked bytes (its projector tokenises it);
- ``ocr``: the model's OCR model reads the image, and the text replaces the image in the message as a
  marked part (``[Text found in image 1: …]``), so a text-only model can answer about it;
- ``reject``: a 400 naming the image's part.

Every refusal is a 400 whose ``param`` names the part (``messages[0].content[1]``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request

from backends.base import VisionBackend
from backends.errors import BadImage
from backends.images import probe, sniff, verify
from backends.types import IMAGE_MARKER, ChatMessage, ChatRequest, ImageInput, ModelType
from compat.errors import InvalidRequest, PayloadTooLarge
from gateway.config import Config, ServerConfig
from gateway.fetch import fetch_url
from gateway.registry import OCR, Registry
from gateway.workers import Workers

__all__ = ["ocr_part", "resolve_chat_images", "resolve_images"]

log = logging.getLogger("syn4pse.vision")


def ocr_part(number: int, text: str) -> str:
    """The marked text that stands in the prompt for image ``number`` (1-based) an OCR model read."""
    text = text.replace(IMAGE_MARKER, "").strip()
    if not text:
        return f"[Image {number}: no text found]"
    return f"[Text found in image {number}: {text}]"


def _too_large(where: str, limit: int) -> InvalidRequest:
    return InvalidRequest(f"'{where}' is larger than {limit} bytes.", param=where, code="image_too_large")


async def _image_bytes(image: ImageInput, server: ServerConfig) -> bytes:
    """The image's file: decoded from its data URL by the compat layer, or fetched now."""
    where, limit = image.where, server.max_image_bytes
    if image.data:
        return image.data
    scheme = image.url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):  # the compat layer refuses these already; never pass one on
        raise InvalidRequest(f"'{where}' cannot be fetched: only http and https URLs are fetched.", param=where,
                             code="remote_url_refused")
    policy = msgspec.structs.replace(server.remote_fetch, max_bytes=min(server.remote_fetch.max_bytes, limit))
    try:
        return await fetch_url(image.url, policy, param=where)  # within the policy's deadline
    except PayloadTooLarge:
        raise _too_large(where, policy.max_bytes) from None


async def _checked(image: ImageInput, server: ServerConfig) -> ImageInput:
    """The image with its bytes and real type, once its file and header are acceptable (no pixel decoded)."""
    where = image.where
    data = await _image_bytes(image, server)
    if len(data) > server.max_image_bytes:
        raise _too_large(where, server.max_image_bytes)
    kind = sniff(data)
    if kind is None:
        raise InvalidRequest(f"'{where}' is not a png, jpeg, webp or gif image.", param=where,
                             code="invalid_image_format")
    if image.mime and image.mime != kind:
        raise InvalidRequest(f"'{where}' is declared as {image.mime} but holds {kind} data.", param=where,
                             code="invalid_image_format")
    await _read(probe, data, where, server)
    return dataclasses.replace(image, data=data, mime=kind)


async def _all_checked(images: list[ImageInput], server: ServerConfig) -> list[ImageInput]:
    """Every image fetched and checked at once, so a request's remote images take one fetch deadline,
    not one each; the refusal is that of the first image refused, and ends the others' fetches."""
    tasks = [asyncio.create_task(_checked(image, server)) for image in images]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: a later image's refusal is not reported as lost


@functools.cache
def _readers(size: int) -> Workers:
    """The threads that read images, shared by every request: ``size`` of them, so at most ``size``
    bitmaps are held at once (the memory a decode leaves to its thread is reused by the next) and at
    most ``size`` threads compete with the event loop for the interpreter."""
    return Workers(size, "image-decode")


async def _read(check: Callable[..., object], data: bytes, where: str, server: ServerConfig) -> None:
    """``check`` (the header's probe, or the full decode) on one of the image threads, a refusal naming
    the image's place."""
    try:
        await _readers(server.max_image_decodes).run(check, data, max_pixels=server.max_image_pixels)
    except BadImage as e:
        e.place = where
        raise


def _with_parts(message: ChatMessage, parts: list[str]) -> ChatMessage:
    """The message with each image's marker replaced by its text part, and no images left."""
    pieces = message.content.split(IMAGE_MARKER)
    if len(pieces) != len(parts) + 1:  # the compat layer writes one marker per image
        raise InvalidRequest("The message's images and their places do not match.", param="messages")
    content = pieces[0] + "".join(part + piece for part, piece in zip(parts, pieces[1:], strict=True))
    return dataclasses.replace(message, content=content, images=())


async def _read_texts(registry: Registry, ocr_model: str, images: list[ImageInput]) -> list[str]:
    lease = await registry.acquire(ocr_model, OCR, param=images[0].where)
    try:
        backend = lease.backend
        assert isinstance(backend, VisionBackend)
        texts = []
        for image in images:
            try:
                texts.append(await backend.read_text(image.data))
            except BadImage as e:
                e.place = image.where
                raise
        return texts
    finally:
        lease.release()


async def resolve_chat_images(config: Config, registry: Registry, model: str, chat: ChatRequest) -> ChatRequest:
    """The chat with every image checked and handled as the model's ``vision`` mode says."""
    if not any(m.images for m in chat.messages):
        return chat
    settings = registry.model_config(model)  # an unknown name: the 404 naming it, before any fetch
    if settings.type != ModelType.LLM:
        return chat  # the route refuses the model itself, with the message every route uses
    images = [image for m in chat.messages for image in m.images]
    if settings.vision == "reject" or settings.vision is None:
        first = images[0].where
        raise InvalidRequest(f"'{first}': the model '{model}' does not accept images.", param=first,
                             code="image_not_supported")
    server = config.server
    if len(images) > server.max_images:
        extra = images[server.max_images].where
        raise InvalidRequest(f"'{extra}': at most {server.max_images} images are accepted in one request.",
                             param=extra, code="too_many_images")
    checked = await _all_checked(images, server)  # every header before any decoding
    for image in checked:
        await _read(verify, image.data, image.where, server)  # refused unless its pixels decode

    if settings.vision == "native":
        it = iter(checked)
        messages = tuple(dataclasses.replace(m, images=tuple(next(it) for _ in m.images)) if m.images else m
                         for m in chat.messages)
        return dataclasses.replace(chat, messages=messages)

    assert settings.ocr_model is not None  # settled when the config was read
    texts = await _read_texts(registry, settings.ocr_model, checked)
    log.debug("model %s: OCR read %d images: %r", model, len(texts), texts)
    parts = [ocr_part(n, text) for n, text in enumerate(texts, start=1)]
    out: list[ChatMessage] = []
    used = 0
    for m in chat.messages:
        if m.images:
            out.append(_with_parts(m, parts[used:used + len(m.images)]))
            used += len(m.images)
        else:
            out.append(m)
    return dataclasses.replace(chat, messages=tuple(out))


async def resolve_images(request: Request[Any, Any, Any], model: str, chat: ChatRequest) -> ChatRequest:
    """For the chat route, before ``prepare_chat``: see :func:`resolve_chat_images`."""
    if not any(m.images for m in chat.messages):
        return chat
    config: Config = request.app.state.config
    registry: Registry = request.app.state.registry
    return await resolve_chat_images(config, registry, model, chat)
