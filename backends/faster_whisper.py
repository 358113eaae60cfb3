"""Speech-to-text backend on faster-whisper (CTranslate2).

Decoding runs on worker threads of the backend's own; segments stream back as whisper finishes them,
so a streamed transcription shows text while the rest of the clip is still being decoded.

Several requests decode at once: the model is loaded with ``workers`` CTranslate2 workers (they share
the weights) and the backend keeps one thread per worker, so each in-flight request has a worker of
its own. ``cpu_threads`` per worker is chosen so that workers × threads stay within the cores.

With ``batch_size`` set, a clip longer than one 30-second window is cut into windows (at the VAD's
speech stretches when the model has a VAD, else at the quietest moments) and decoded by
faster-whisper's batched pipeline, ``batch_size`` windows at a time: the windows no longer wait for
each other's text, so the encoder and decoder run on many at once. Each window comes back as one
segment (word timestamps, when asked for, are as precise as ever).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from backends.errors import CannotTranslate, LoadFailed, UnsupportedLanguage
from backends.threads import EngineLoad, Occupancy, available_cores, iterate_in_thread, share_cores
from backends.types import (
    SpeechSpan,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
    TranscriptWord,
)

__all__ = ["FasterWhisperBackend", "Options", "load", "windows"]

log = logging.getLogger("syn4pse.faster_whisper")

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
RATE = 16000
WINDOW = 30.0
"""Seconds whisper hears at once: the longest window the batched pipeline decodes."""
LONGEST_GAP = 2.0
"""Seconds of silence between two speech stretches that may still share a window. A longer pause starts
a new window, so a window is never mostly the silence the VAD was there to skip."""
_QUIET_FRAME = 800
"""Samples (50 ms) over which loudness is measured when a long stretch of speech must be cut."""
FIT_MARGIN_FRAMES = 100
"""Feature frames (10 ms each) of padding a fitted encoder hears after the clip's end."""
FIT_LEAST_FRAMES = 1000
"""The shortest input a fitted encoder is given (10 s): given much less, whisper hears worse and loops."""
QUICK_TOKENS = (24, 12)
"""A quick transcription's most tokens: this many, plus this many a second of audio."""
_fitting = threading.local()
"""Set on a decoding thread while its request is a quick one (``TranscriptionRequest.quick``)."""
MOST_DEFAULT_WORKERS = 4
"""Workers when ``workers`` is not set: one per core up to this. A small whisper gains little from more
than a few threads per stream, and much from decoding several streams at once."""


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    """CTranslate2 compute type: int8, int8_float16, float16, float32, default."""
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    """Transcriptions decoded at the same time, each on a CTranslate2 worker of its own (on a CPU the
    workers share the weights; each needs its own working memory). None: one per core, at most 4, on a
    CPU; one on a GPU, where each worker holds its own copy of the weights."""
    cpu_threads: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    """Threads of each worker. 0: the cores shared out among the workers (at least one each)."""
    beam_size: Annotated[int, msgspec.Meta(ge=1, le=16)] = 5
    batch_size: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    """0: off. Otherwise a clip that needs more than one 30 s window is decoded by faster-whisper's
    batched pipeline, this many windows at a time. Each window is decoded on its own (no previous-text
    conditioning; the prompt goes with every window) and without the temperature fallback; a request
    with a temperature above 0 is decoded sequentially, so that its sampling is honoured."""


def load(files: Path, options: Options) -> FasterWhisperBackend:
    return FasterWhisperBackend(files, options)


def fit_features(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Whisper's 30 s of features cut to the clip they hold, and a margin of silence after it.

    faster-whisper pads the features with zeros, which is not silence (a log-mel of silence is the
    clip's floor, its lowest value): whisper heard past a short clip's end into zeros goes on with words
    that were never said, so the margin is given the floor instead."""
    heard = np.flatnonzero(np.abs(features).max(axis=tuple(range(features.ndim - 1))) > 0)
    if not len(heard):
        return features[..., :FIT_LEAST_FRAMES]
    end = int(heard[-1]) + 1
    fitted = features[..., :min(max(FIT_LEAST_FRAMES, end + FIT_MARGIN_FRAMES), features.shape[-1])].copy()
    fitted[..., end:] = features[..., :end].min()
    return fitted


def _fitted_model_class() -> Any:
    """faster-whisper's model, with an encoder that hears only the clip when the request asks for it.

    Whisper's encoder is given 30 s whatever the clip, and on a CPU that costs most of a short clip's
    transcription; CTranslate2 encodes shorter inputs as well, many times faster.
    """
    from faster_whisper import WhisperModel

    class FittedWhisper(WhisperModel):  # type: ignore[misc]
        def encode(self, features: Any) -> Any:
            if getattr(_fitting, "on", False):
                features = fit_features(features)
            return super().encode(features)

    return FittedWhisper


def _has_cuda() -> bool:
    import ctranslate2  # type: ignore[import-untyped]

    return bool(ctranslate2.get_cuda_device_count())


def _quietest(audio: npt.NDArray[np.float32], low: float, high: float) -> float:
    """The middle of the quietest 50 ms between ``low`` and ``high`` seconds: where a cut splits no word."""
    part = audio[int(low * RATE):int(high * RATE)]
    frames = len(part) // _QUIET_FRAME
    if frames == 0:
        return high
    energy = np.square(part[:frames * _QUIET_FRAME].reshape(frames, _QUIET_FRAME), dtype=np.float64).mean(axis=1)
    return low + (int(np.argmin(energy)) + 0.5) * _QUIET_FRAME / RATE


def windows(audio: npt.NDArray[np.float32], speech: tuple[SpeechSpan, ...] | None) -> list[tuple[float, float]]:
    """What is to be transcribed, as windows of at most 30 s (start, end in seconds) for the batched pipeline.

    The VAD's speech stretches (or the whole clip, without a VAD) are packed in order into windows;
    a stretch longer than a window is cut at its quietest moment in the last third of the window (the
    last cut of a stretch near its middle instead, so that no piece is a scrap of a second or two).
    """
    duration = len(audio) / RATE
    stretches = [(s.start, min(s.end, duration)) for s in speech] if speech is not None else [(0.0, duration)]
    pieces: list[tuple[float, float]] = []
    for start, end in stretches:
        while (length := end - start) > WINDOW:
            if length > 2 * WINDOW:
                low, high = WINDOW * 2 / 3, WINDOW
            else:  # the last cut: near the middle, so that neither piece is a scrap without context
                low, high = max(length - WINDOW, length / 2 - WINDOW / 6), min(WINDOW, length / 2 + WINDOW / 6)
            cut = _quietest(audio, start + low, start + high)
            pieces.append((start, cut))
            start = cut
        if end > start:
            pieces.append((start, end))
    out: list[tuple[float, float]] = []
    for start, end in pieces:
        if out and end - out[-1][0] <= WINDOW and start - out[-1][1] <= LONGEST_GAP:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


class FasterWhisperBackend:
    """A :class:`backends.base.TranscriptionBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        folder = files if files.is_dir() else files.parent
        if not (folder / "model.bin").exists():
            raise LoadFailed(f"no CTranslate2 whisper model (model.bin) in {folder.name}")
        on_cpu = options.device == "cpu" or (options.device == "auto" and not _has_cuda())
        # On a GPU each worker holds a copy of the weights in GPU memory: one unless asked for more.
        workers, threads = share_cores(options.workers if on_cpu or options.workers else 1, options.cpu_threads,
                                       most_parallel=MOST_DEFAULT_WORKERS)
        if on_cpu and workers * threads > available_cores():
            log.warning("model %s: %d workers x %d threads is more than the %d cores: requests will slow each"
                        " other down", folder.name, workers, threads, available_cores())
        try:
            self._model: Any = _fitted_model_class()(
                str(folder), device=options.device, compute_type=options.compute_type,
                cpu_threads=threads, num_workers=workers, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as e:
            raise LoadFailed(f"faster-whisper could not load the model ({e})") from None
        self._options = options
        self._occupancy = Occupancy(workers)
        # One thread per worker: a request holds its thread, and so a worker, for its whole decode.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"whisper:{folder.name}")
        log.info("model %s: %d workers x %d threads%s", folder.name, workers, threads,
                 f", batches of {options.batch_size} windows" if options.batch_size else "")

    @property
    def can_translate(self) -> bool:
        return bool(self._model.model.is_multilingual)

    def engine_load(self) -> EngineLoad:
        return self._occupancy.snapshot()

    def _check(self, request: TranscriptionRequest) -> None:
        if request.task == "translate" and not self.can_translate:
            raise CannotTranslate()
        if request.language is not None:
            from faster_whisper.tokenizer import _LANGUAGE_CODES

            if request.language not in _LANGUAGE_CODES:
                raise UnsupportedLanguage(request.language)
            if not self.can_translate and request.language != "en":
                raise UnsupportedLanguage(request.language, english_only=True)

    def _decode(self, request: TranscriptionRequest) -> tuple[Any, Any]:
        """faster-whisper's (segments, info): batched for a long clip when configured, else sequential."""
        if self._options.batch_size and not request.temperature and not request.quick:
            chunks = windows(request.audio, request.speech)
            if len(chunks) > 1:
                from faster_whisper import BatchedInferencePipeline

                log.info("batched transcription: %d windows, %d at a time", len(chunks), self._options.batch_size)
                # A pipeline per call: it keeps per-transcription state, and calls run on several threads.
                # Without timestamp tokens: text after a window's last timestamp pair would be lost, as
                # nothing decodes that window again. A window is then one segment; words keep their times.
                segments, info = BatchedInferencePipeline(self._model).transcribe(
                    request.audio, task=request.task, language=request.language, initial_prompt=request.prompt,
                    temperature=0.0, beam_size=request.beam_size or self._options.beam_size,
                    word_timestamps=request.word_timestamps,
                    clip_timestamps=[{"start": s, "end": e} for s, e in chunks], vad_filter=False,
                    without_timestamps=True, batch_size=self._options.batch_size)
                return segments, info
        temperature: Any = (FALLBACK_TEMPERATURES if not request.temperature else request.temperature)
        limits: dict[str, Any] = {}
        if request.quick:
            temperature = request.temperature or 0.0
            limits["max_new_tokens"] = QUICK_TOKENS[0] + int(QUICK_TOKENS[1] * len(request.audio) / RATE)
            limits["no_speech_threshold"] = None  # a VAD heard speech: a fitted encoder's doubt is no reason to drop it
        clips: Any = "0"
        if request.speech is not None:
            clips = [t for span in request.speech for t in (span.start, span.end)]
        segments, info = self._model.transcribe(
            request.audio, task=request.task, language=request.language, initial_prompt=request.prompt,
            temperature=temperature, beam_size=request.beam_size or self._options.beam_size,
            word_timestamps=request.word_timestamps, clip_timestamps=clips, vad_filter=False, **limits)
        return segments, info

    def _run(self, request: TranscriptionRequest) -> Iterator[TranscriptionInfo | TranscriptSegment]:
        if request.speech is not None and not request.speech:  # VAD found no speech: nothing to decode
            yield TranscriptionInfo(language=request.language or "en", language_probability=0.0,
                                    duration=len(request.audio) / RATE)
            return
        with self._occupancy.hold():
            _fitting.on = request.quick
            segments, info = self._decode(request)
            yield TranscriptionInfo(language=info.language, language_probability=float(info.language_probability),
                                    duration=float(info.duration))
            for s in segments:
                words = tuple(TranscriptWord(word=w.word, start=float(w.start), end=float(w.end),
                                             probability=float(w.probability)) for w in (s.words or ()))
                yield TranscriptSegment(
                    id=int(s.id), start=float(s.start), end=float(s.end), text=s.text, tokens=tuple(s.tokens),
                    seek=int(s.seek), temperature=float(s.temperature or 0.0), avg_logprob=float(s.avg_logprob),
                    compression_ratio=float(s.compression_ratio), no_speech_prob=float(s.no_speech_prob),
                    words=words)

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionInfo | TranscriptSegment]:
        self._check(request)
        async for item in iterate_in_thread(self._executor, lambda: self._run(request)):
            yield item

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._model = None
