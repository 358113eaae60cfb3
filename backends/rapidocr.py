"""Vision backend: reads the printed text in an image with the PP-OCR models on ONNX Runtime.

The models are the ones the ``rapidocr`` wheel ships (text detection, orientation, recognition); they
are named by path, so the library never downloads anything, and the image reaches it as decoded
pixels, never as a path or URL. One worker thread runs the engine: OCR is CPU-bound and ONNX Runtime
already spreads one image over the cores, so images are read one after the other, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from backends.errors import EngineFailure, LoadFailed
from backends.images import decode_rgb
from backends.threads import available_cores

__all__ = ["Options", "RapidOcrBackend", "load"]


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    detector: str | None = None
    """The text detection model's file in the model's folder; None finds the one ``*det*.onnx``."""
    recognizer: str | None = None
    """The recognition model's file; None finds the one ``*rec*.onnx``."""
    classifier: str | None = None
    """The orientation model's file; None finds the one ``*cls*.onnx`` (none: upside-down text is read
    as it stands)."""
    text_score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    """Recognised lines less certain than this are left out."""
    max_side: Annotated[int, msgspec.Meta(ge=64)] = 2000
    """Larger images are scaled down to this many pixels on their longer side before detection."""
    n_threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_pixels: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Images with more pixels are refused; None leaves the gateway's own limit as the only one."""


def load(files: Path, options: Options) -> RapidOcrBackend:
    return RapidOcrBackend(files, options)


_OPTION = {"det": "detector", "rec": "recognizer", "cls": "classifier"}


def _model_file(folder: Path, named: str | None, kind: str, required: bool = True) -> Path | None:
    if named is not None:
        path = folder / named
        if not path.is_file():
            raise LoadFailed(f"the OCR model file '{named}' (options.{_OPTION[kind]}) is not in the model's"
                                   " files")
        return path
    found = sorted(folder.glob(f"*{kind}*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found and not required:
        return None
    raise LoadFailed(f"expected one *{kind}*.onnx file among the model's files, found {len(found)}"
                           f" (name it in options.{_OPTION[kind]})")


def _lines(boxes: Any, texts: tuple[str, ...]) -> list[str]:
    """Texts of boxes on the same line joined left to right, lines top to bottom."""
    items = []
    for box, text in zip(boxes, texts, strict=True):
        ys = [float(p[1]) for p in box]
        xs = [float(p[0]) for p in box]
        items.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text.strip()))
    items.sort(key=lambda item: item[0])
    rows: list[list[tuple[float, float, float, str]]] = []
    for item in items:
        row = rows[-1] if rows else None
        if row is not None and abs(item[0] - row[0][0]) <= max(item[1], row[0][1]) / 2:
            row.append(item)
        else:
            rows.append([item])
    return [" ".join(t for *_, t in sorted(row, key=lambda item: item[2]) if t) for row in rows]


class RapidOcrBackend:
    """A :class:`backends.base.VisionBackend`: the text an image shows, line by line."""

    def __init__(self, files: Path, options: Options) -> None:
        folder = files if files.is_dir() else files.parent
        det = _model_file(folder, options.detector, "det")
        rec = _model_file(folder, options.recognizer, "rec")
        cls = _model_file(folder, options.classifier, "cls", required=False)
        self._max_pixels = options.max_pixels
        threads = options.n_threads or available_cores()
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Global.text_score": options.text_score,
            "Global.max_side_len": options.max_side,
            "Global.use_cls": cls is not None,
            "Det.model_path": str(det),
            "Rec.model_path": str(rec),
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        if cls is not None:
            params["Cls.model_path"] = str(cls)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rapidocr")
        try:
            self._engine = self._executor.submit(self._build, params).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    @staticmethod
    def _build(params: dict[str, Any]) -> Any:
        from rapidocr import RapidOCR

        engine = RapidOCR(params=params)
        engine(np.full((64, 64, 3), 255, dtype=np.uint8))  # loads the detector now, not at the first request
        return engine

    def _read(self, image: bytes) -> str:
        rgb = decode_rgb(image, max_pixels=self._max_pixels)
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        try:
            result = self._engine(bgr)
        except Exception as e:
            raise EngineFailure(f"The OCR engine failed on the image ({type(e).__name__}).") from None
        texts = getattr(result, "txts", None)
        boxes = getattr(result, "boxes", None)
        if not texts or boxes is None:
            return ""
        return "\n".join(line for line in _lines(boxes, tuple(texts)) if line)

    async def read_text(self, image: bytes) -> str:
        """The text found in the image file (png, jpeg, webp or gif); empty when there is none."""
        try:
            future = self._executor.submit(self._read, image)
        except RuntimeError:  # the executor is shut down: the model is being unloaded
            raise EngineFailure("The OCR model was unloaded.") from None
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._executor.shutdown(wait=True, cancel_futures=True)
