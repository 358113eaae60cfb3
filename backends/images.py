"""Image files as the gateway accepts them: png, jpeg, webp and gif, told apart by their bytes.

One decoder for every engine that looks at images (OCR, multimodal LLMs), so each sees the same pixels:
the first frame of an animation, turned upright by its EXIF orientation, transparency laid over white
(text drawn on a transparent background stays legible), as 8-bit RGB. The size is read from the
header before any pixel is decoded (:func:`probe`), so a small file that unpacks to a huge bitmap is
refused for the price of its header. Pillow is imported lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from backends.errors import BadImage, ImageProblem

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_TYPES", "MAX_PIECES", "decode_rgb", "probe", "sniff", "verify"]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


def sniff(data: bytes) -> str | None:
    """The image type the bytes really hold (by their signature), or None when not one of ours."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


MAX_PIECES = 65_536
"""Most segments (jpeg), chunks (png) or blocks before the first frame (gif) a file may have. Pillow
walks these one turn of a Python loop each: a file of millions of empty ones would hold a thread, and
the interpreter, for seconds. Real images have tens, or a few thousand of a png's data chunks."""


def _jpeg_pieces(data: bytes) -> int:
    """Turns of Pillow's walk to the start of the scan: a segment each, and a turn per stray byte."""
    pos, turns, end = 2, 0, len(data)
    while pos + 1 < end and turns <= MAX_PIECES:
        if data[pos] != 0xFF:
            found = data.find(b"\xff", pos)
            turns += (end if found < 0 else found) - pos
            pos = end if found < 0 else found
            continue
        marker = data[pos + 1]
        turns += 1
        if marker == 0xDA:
            break
        if marker == 0xFF:
            pos += 1
        elif marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD9:
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return turns


def _png_pieces(data: bytes) -> int:
    pos, chunks, end = 8, 0, len(data)
    while pos + 8 <= end and chunks <= MAX_PIECES:
        chunks += 1
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return chunks


def _gif_pieces(data: bytes) -> int:
    """Blocks and sub-blocks before the first frame's descriptor (its pixels are read in C)."""
    end = len(data)
    if end < 13:
        return 0
    flags = data[10]
    palette = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    pos, blocks = 13 + palette, 0
    while pos < end and data[pos] == 0x21 and blocks <= MAX_PIECES:  # an extension, before the frame
        pos += 2
        while pos < end and data[pos] and blocks <= MAX_PIECES:
            blocks += 1
            pos += 1 + data[pos]
        pos += 1
        blocks += 1
    return blocks


_PIECES = {"image/jpeg": _jpeg_pieces, "image/png": _png_pieces, "image/gif": _gif_pieces}


@contextmanager
def _opened(data: bytes, max_pixels: int | None) -> Iterator[Image.Image]:
    """The image as Pillow opens it: its header read, no pixel decoded yet, its size within ``max_pixels``.
    Every failure, here or in the ``with`` body, is a :class:`BadImage` (no ``place``)."""
    import io

    from PIL import Image, UnidentifiedImageError

    kind = sniff(data)
    if kind is None:
        raise BadImage("The image is not a png, jpeg, webp or gif file.", ImageProblem.NOT_AN_IMAGE)
    pieces = _PIECES.get(kind)
    if pieces is not None and pieces(data) > MAX_PIECES:
        raise BadImage(f"The {kind.split('/')[1]} image is made of more than {MAX_PIECES} pieces (segments,"
                       " chunks or blocks); no real image is.", ImageProblem.UNREADABLE)
    try:
        with Image.open(io.BytesIO(data), formats=[kind.split("/")[1].upper()]) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise BadImage("The image has no pixels.", ImageProblem.UNREADABLE)
            if max_pixels is not None and width * height > max_pixels:
                raise BadImage(f"The image is {width}x{height} pixels; at most {max_pixels} pixels are"
                               " accepted.", ImageProblem.TOO_LARGE)
            yield image
    except BadImage:
        raise
    except Image.DecompressionBombError:  # Pillow's own bound, above any sensible max_pixels
        limit = f"at most {max_pixels} pixels are accepted" if max_pixels else "too many to decode"
        raise BadImage(f"The image has more pixels than can be decoded; {limit}.", ImageProblem.TOO_LARGE) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage(f"The {kind.split('/')[1]} image cannot be decoded ({type(e).__name__}).",
                       ImageProblem.UNREADABLE) from None


def probe(data: bytes, *, max_pixels: int | None = None) -> tuple[int, int]:
    """The image's width and height, read from its header alone: cheap whatever the image unpacks to.
    Raises :class:`BadImage` (no ``place``) as :func:`decode_rgb` does for the header's faults."""
    with _opened(data, max_pixels) as image:
        return image.size


def verify(data: bytes, *, max_pixels: int | None = None) -> None:
    """Decode the first frame and let it go: :class:`BadImage` (no ``place``) unless it decodes, with no
    conversion (so no more memory than the bitmap itself)."""
    with _opened(data, max_pixels) as image:
        image.seek(0)
        image.load()


def decode_rgb(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """The image's first frame as upright RGB. Raises :class:`BadImage` (no ``place``) if it is not
    a decodable png, jpeg, webp or gif, or has more than ``max_pixels`` pixels (checked before decoding,
    so a small file that unpacks to a huge bitmap costs nothing)."""
    from PIL import Image, ImageOps

    with _opened(data, max_pixels) as image:
        image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
        if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
            rgba = upright.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return upright.convert("RGB")
