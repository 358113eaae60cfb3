"""Speech to text by an upstream server: the clip goes as a 16 kHz WAV file, the transcript comes back
with segment (and, when asked, word) timestamps. Stretches a VAD left out are silenced, so the upstream
hears only the speech, at the times it was spoken. A request's ``beam_size`` and ``quick`` (the live
transcriber's fast passes) are choices of a local decoder: the OpenAI transcription API has no fields for
them, so the upstream decodes as it is configured."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from backends.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment
from backends.upstream.client import UpstreamModel
from backends.upstream.options import Options

__all__ = ["Options", "UpstreamTranscription", "load", "wav_file"]

RATE = 16000


class UpstreamTranscription(UpstreamModel):
    @property
    def can_translate(self) -> bool:
        return self.options.can_translate

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionInfo | TranscriptSegment]:
        audio = _only_speech(request)
        form = self.wire.transcription_form(self.options.model, request, wav_file(audio, RATE))
        path = self.wire.translation_path if request.task == "translate" else self.wire.transcription_path
        body = await self.upstream.send(path, form=form)
        info, segments = self.wire.read_transcription(body, len(audio) / RATE)
        yield info
        for segment in segments:
            yield segment


def _only_speech(request: TranscriptionRequest) -> npt.NDArray[np.float32]:
    if request.speech is None:
        return request.audio
    kept = np.zeros_like(request.audio)
    for span in request.speech:
        start, end = int(span.start * RATE), int(span.end * RATE)
        kept[start:end] = request.audio[start:end]
    return kept


def wav_file(samples: npt.NDArray[np.float32], rate: int) -> bytes:
    """Float samples as a 16-bit mono WAV file."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def load(files: Path | None, options: Options) -> UpstreamTranscription:
    return UpstreamTranscription(options)
