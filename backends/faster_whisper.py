"""Speech-to-text backend on faster-whisper (CTranslate2).

Decoding runs on worker threads of the backend's own; segments stream back as whisper finishes them,
so a streamed transcription shows text while the rest of the clip is still being decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from backends.errors import InvalidRequest, ModelUnavailable
from backends.threads import available_cores, iterate_in_thread
from backends.types import (
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
    TranscriptWord,
)

__all__ = ["FasterWhisperBackend", "Options", "load"]

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    """CTranslate2 compute type: int8, int8_float16, float16, float32, default."""
    cpu_threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    """0: one per core."""
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """Transcriptions decoded at the same time."""
    beam_size: Annotated[int, msgspec.Meta(ge=1, le=16)] = 5


def load(files: Path, options: Options) -> FasterWhisperBackend:
    return FasterWhisperBackend(files, options)


class FasterWhisperBackend:
    """A :class:`backends.base.TranscriptionBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        from faster_whisper import WhisperModel

        folder = files if files.is_dir() else files.parent
        if not (folder / "model.bin").exists():
            raise ModelUnavailable(f"no CTranslate2 whisper model (model.bin) in {folder.name}")
        try:
            self._model: Any = WhisperModel(
                str(folder), device=options.device, compute_type=options.compute_type,
                cpu_threads=options.cpu_threads or available_cores(), num_workers=options.workers,
                local_files_only=True)
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelUnavailable(f"faster-whisper could not load the model ({e})") from None
        self._options = options
        self._executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix=f"whisper:{folder.name}")

    @property
    def can_translate(self) -> bool:
        return bool(self._model.model.is_multilingual)

    def _check(self, request: TranscriptionRequest) -> None:
        if request.task == "translate" and not self.can_translate:
            raise InvalidRequest("This model is English-only and cannot translate; use a multilingual"
                                 " whisper model.", param="model")
        if request.language is not None:
            from faster_whisper.tokenizer import _LANGUAGE_CODES

            if request.language not in _LANGUAGE_CODES:
                raise InvalidRequest(f"Language '{request.language}' is not one whisper knows.",
                                     param="language")
            if not self.can_translate and request.language != "en":
                raise InvalidRequest("This model is English-only.", param="language")

    def _run(self, request: TranscriptionRequest) -> Iterator[TranscriptionInfo | TranscriptSegment]:
        temperature: Any = (FALLBACK_TEMPERATURES if not request.temperature else request.temperature)
        clips: Any = "0"
        if request.speech is not None:
            if not request.speech:  # VAD found no speech: nothing to decode
                yield TranscriptionInfo(language=request.language or "en", language_probability=0.0,
                                        duration=len(request.audio) / 16000)
                return
            clips = [t for span in request.speech for t in (span.start, span.end)]
        segments, info = self._model.transcribe(
            request.audio, task=request.task, language=request.language, initial_prompt=request.prompt,
            temperature=temperature, beam_size=self._options.beam_size,
            word_timestamps=request.word_timestamps, clip_timestamps=clips, vad_filter=False)
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
