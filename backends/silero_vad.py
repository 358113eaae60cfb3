"""Voice activity detection with the Silero model on ONNX Runtime.

The model scores 32 ms frames (512 samples at 16 kHz) for speech; :class:`VadStream` carries the
model's state from one chunk to the next, so the same code serves whole clips and live audio.
Speech stretches come from the scores with hysteresis: speech starts above ``threshold``, and ends
after ``min_silence_ms`` below ``threshold - 0.15``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.errors import LoadFailed
from backends.types import SpeechSpan

__all__ = ["FRAME", "Options", "SileroVad", "VadStream", "hysteresis", "load"]

SAMPLE_RATE = 16000
FRAME = 512
"""Samples the model scores at a time (32 ms)."""
_CONTEXT = 64


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    threshold: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.5
    min_speech_ms: Annotated[int, msgspec.Meta(ge=0)] = 250
    min_silence_ms: Annotated[int, msgspec.Meta(ge=0)] = 500
    speech_pad_ms: Annotated[int, msgspec.Meta(ge=0)] = 200


def load(files: Path, options: Options) -> SileroVad:
    return SileroVad(files, options)


class VadStream:
    """Frame-by-frame speech probabilities over audio that arrives in pieces."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Scores for every whole frame completed by ``audio`` (leftover samples wait for more)."""
        data = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        n = len(data) // FRAME
        self._pending = data[n * FRAME:]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = data[: n * FRAME].reshape(n, FRAME)
        contexts = np.concatenate([self._context[None, :], frames[:-1, -_CONTEXT:]], axis=0)
        self._context = frames[-1, -_CONTEXT:].copy()
        batch = np.concatenate([contexts, frames], axis=1)
        probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(probs, dtype=np.float32).reshape(-1)


def hysteresis(threshold: float) -> tuple[float, float]:
    """The scores at which speech starts (``threshold``) and below which it ends (0.15 lower)."""
    return threshold, max(threshold - 0.15, 0.01)


def spans(probs: npt.NDArray[np.float32], options: Options, total_samples: int) -> list[SpeechSpan]:
    """Speech stretches (seconds) from frame scores, with hysteresis, minimum lengths and padding."""
    on, off = hysteresis(options.threshold)
    min_silence = options.min_silence_ms * SAMPLE_RATE // 1000
    min_speech = options.min_speech_ms * SAMPLE_RATE // 1000
    pad = options.speech_pad_ms * SAMPLE_RATE // 1000
    found: list[tuple[int, int]] = []
    start: int | None = None
    silence_from: int | None = None
    for i, p in enumerate(probs):
        at = i * FRAME
        if start is None:
            if p >= on:
                start, silence_from = at, None
            continue
        if p >= on:
            silence_from = None
        elif p < off:
            silence_from = at if silence_from is None else silence_from
            if at + FRAME - silence_from >= min_silence:
                if silence_from - start >= min_speech:
                    found.append((start, silence_from))
                start, silence_from = None, None
    if start is not None and total_samples - start >= min_speech:
        found.append((start, total_samples))
    merged: list[tuple[int, int]] = []
    for s, e in found:
        s, e = max(0, s - pad), min(total_samples, e + pad)
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return [SpeechSpan(start=s / SAMPLE_RATE, end=e / SAMPLE_RATE) for s, e in merged]


class SileroVad:
    """A :class:`backends.base.VadBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        import onnxruntime

        path = files if files.is_file() else next(iter(sorted(files.glob("silero*.onnx"))), None)
        if path is None:
            raise LoadFailed("no Silero VAD ONNX file in the model's files")
        session_options = onnxruntime.SessionOptions()
        session_options.inter_op_num_threads = 1
        session_options.intra_op_num_threads = 1
        session_options.log_severity_level = 4
        try:
            self._session = onnxruntime.InferenceSession(str(path), sess_options=session_options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for bad files
            raise LoadFailed(f"ONNX Runtime could not load the VAD model ({type(e).__name__})") from None
        self.options = options
        self.frame_samples = FRAME
        self.thresholds = hysteresis(options.threshold)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero-vad")

    def stream(self) -> VadStream:
        return VadStream(self._session)

    def _speech(self, audio: npt.NDArray[np.float32]) -> list[SpeechSpan]:
        stream = self.stream()
        padded = np.concatenate([audio, np.zeros((-len(audio)) % FRAME, dtype=np.float32)])
        return spans(stream.feed(padded), self.options, len(audio))

    async def speech(self, audio: npt.NDArray[np.float32]) -> list[SpeechSpan]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._speech, audio)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
