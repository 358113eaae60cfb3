"""Content parts of chat messages: text, and images by data URL or http(s) URL.

The compat layer only reads what the caller sent: it decodes data URLs and refuses URL schemes no
server should follow. Fetching http(s) images, checking the bytes and deciding what the model does with
them is the gateway's work (``gateway/vision.py``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import msgspec

from backends.types import IMAGE_MARKER, ImageInput
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = ["ContentPart", "ImagePart", "RefusalPart", "TextPart", "image_input", "split_content"]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


class _Part(msgspec.Struct, forbid_unknown_fields=True, tag_field="type"):
    pass


class TextPart(_Part, tag="text"):
    text: str


class ImageURL(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part, tag="image_url"):
    image_url: ImageURL


class InputAudioPart(_Part, tag="input_audio"):
    input_audio: dict[str, Any]


class FilePart(_Part, tag="file"):
    file: dict[str, Any]


class RefusalPart(_Part, tag="refusal"):
    refusal: str


ContentPart = TextPart | ImagePart | InputAudioPart | FilePart | RefusalPart


def _shown(url: str) -> str:
    return url if len(url) <= 64 else url[:61] + "..."


def _image(part: ImagePart, where: str) -> ImageInput:
    return image_input(part.image_url.url, part.image_url.detail, where)


def image_input(url: str, detail: str | None, where: str) -> ImageInput:
    """An image part's URL: a data URL decoded (and checked to be base64 of an image type), or an http(s)
    URL to fetch."""
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        return ImageInput(where=where, url=url, detail=detail)
    if scheme != "data":
        raise InvalidRequest(f"Invalid image URL in '{where}': only data URLs and http(s) URLs are accepted"
                             f" (got '{_shown(url)}').", param=where, code="invalid_image_url")
    header, sep, payload = url[5:].partition(",")
    mime, *params = header.split(";")
    mime = mime.strip().lower()
    if mime == "image/jpg":
        mime = "image/jpeg"
    if not sep or "base64" not in (p.strip().lower() for p in params):
        raise InvalidRequest(f"Invalid image data URL in '{where}': expected 'data:<type>;base64,<data>'.",
                             param=where, code="invalid_image_url")
    if mime not in IMAGE_TYPES:
        raise InvalidRequest(f"Unsupported image type '{mime or '(none)'}' in '{where}': send png, jpeg, webp"
                             " or gif.", param=where, code="invalid_image_format")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)  # line-wrapped base64 is common
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"The image data URL in '{where}' is not valid base64.", param=where,
                             code="invalid_image_url") from None
    if not data:
        raise InvalidRequest(f"The image in '{where}' is empty.", param=where, code="invalid_image_url")
    return ImageInput(where=where, url=_shown(url), data=data, mime=mime, detail=detail)


def split_content(content: str | list[ContentPart] | None, where: str,
                  policy: ParamPolicy) -> tuple[str, tuple[ImageInput, ...]]:
    """A message's text, with :data:`IMAGE_MARKER` where each image stood, and the images in order."""
    if content is None:
        return "", ()
    if isinstance(content, str):
        return content.replace(IMAGE_MARKER, ""), ()
    texts: list[str] = []
    images: list[ImageInput] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if isinstance(part, TextPart):
            texts.append(part.text.replace(IMAGE_MARKER, ""))
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal.replace(IMAGE_MARKER, ""))
        elif isinstance(part, ImagePart):
            images.append(_image(part, at))
            texts.append(IMAGE_MARKER)
        else:
            kind = "audio" if isinstance(part, InputAudioPart) else "file"
            policy.unsupported(at, f"{kind} content parts are not supported")
    return "\n".join(texts), tuple(images)
