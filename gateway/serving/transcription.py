"""Transcription of whole files: decode the audio, find its speech, lease the model, transcribe.

Three shapes of answer, one path: the whole transcript (OpenAI's and Groq's transcriptions and
translations), its text as it is decoded (their ``stream``), and each channel's words on its own
(Deepgram's pre-recorded ``/v1/listen``). Decoding runs once the request is admitted to the model,
on the audio threads (:class:`~gateway.workers.Workers`; never the event loop), and stops as soon
as the audio passes ``server.audio.max_decoded_seconds``; the model's VAD, when it names one, finds the
speech first (whisper invents words in silence). A request the engine refuses (a language it does not
know, translation by an English-only model) fails before any answer starts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from backends.audio import AudioTooLong, decode_channels, duration
from backends.audio_answers import (
    ChannelsTranscribed,
    ChannelTranscript,
    Transcribed,
    TranscriptDelta,
    TranscriptDone,
    TranscriptEvent,
)
from backends.base import TranscriptionBackend
from backends.errors import BadAudio
from backends.types import (
    ModelType,
    SpeechSpan,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
    TranscriptWord,
)
from gateway.config import Config
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.registry import TRANSCRIPTION, VAD, Registry
from gateway.serving.owned import Owned
from gateway.serving.streams import STARTED, Started, close_stream, started
from gateway.workers import Workers

__all__ = ["RATE", "AudioInput", "TranscriptionOptions", "Transcriptions", "speech_spans"]

log = logging.getLogger("syn4pse.transcription")

RATE = 16000
"""What whisper reads."""

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AudioInput:
    """Audio as a client sent it: a file in any container, or headerless samples in a named encoding."""

    data: bytes
    encoding: str | None = None
    """A headerless encoding (``backends.audio.ENCODINGS``); None: the container is read from the bytes."""
    sample_rate: int | None = None
    channels: int = 1


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    """ISO-639-1 code; None detects it."""
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False


class Transcriptions:
    def __init__(self, registry: Registry, config: Config, work: Workers) -> None:
        self._registry = registry
        self._max_seconds = config.server.audio.max_decoded_seconds
        self._work = work

    def check(self, model: str) -> str:
        """The model's configured name, once it is known to transcribe: before an upload is read for nothing."""
        canonical = self._registry.resolve(model)
        if self._registry.model_config(canonical).type != ModelType.STT:
            raise InvalidRequest(f"The model '{model}' is not a speech-to-text model.", param="model")
        return canonical

    async def answer(self, model: str, audio: AudioInput, options: TranscriptionOptions) -> Transcribed:
        """The whole transcript."""
        async with self._registry.lease(model, TRANSCRIPTION) as held:
            (samples,) = await self._decode(audio, split=False)
            request = await self._request(model, samples, options)
            info: TranscriptionInfo | None = None
            segments: list[TranscriptSegment] = []
            events = held.backend.transcribe(request)
            try:
                async for item in events:
                    if isinstance(item, TranscriptionInfo):
                        info = item
                    else:
                        segments.append(item)
            finally:
                await close_stream(events)
        assert info is not None  # every transcription stream opens with its info
        return Transcribed(info, segments)

    async def stream(self, model: str, audio: AudioInput, options: TranscriptionOptions) -> Owned[TranscriptEvent]:
        """The transcript's text as it is decoded. The engine has checked the request when this returns."""
        lease = await self._registry.acquire(model, TRANSCRIPTION)
        try:
            (samples,) = await self._decode(audio, split=False)
            request = await self._request(model, samples, options)
            events: AsyncGenerator[TranscriptEvent, None] = await started(_text(lease.backend, request))
        except BaseException:
            lease.release()
            raise
        return Owned(lease, events)

    async def channels(self, model: str, audio: AudioInput, options: TranscriptionOptions, *,
                       split: bool) -> ChannelsTranscribed:
        """Each channel's words (``split``), or the downmix's: one track after another on one lease (the
        model's workers are shared with every request)."""
        out: list[ChannelTranscript] = []
        async with self._registry.lease(model, TRANSCRIPTION) as held:
            tracks = await self._decode(audio, split=split)
            for track in tracks:
                out.append(await _words(held.backend, await self._request(model, track, options)))
            name = held.name
        return ChannelsTranscribed(channels=out, duration=duration(tracks[0], RATE), model=name,
                                   engine=self._registry.model_config(name).backend)

    async def _decode(self, audio: AudioInput, *, split: bool) -> list[Samples]:
        try:
            return await self._work.run(decode_channels, audio.data, encoding=audio.encoding,
                                        sample_rate=audio.sample_rate, channels=audio.channels, split=split,
                                        rate=RATE, max_seconds=self._max_seconds)
        except AudioTooLong as e:  # readable, just too much of it: the dialects' 413, in the audio's words
            log.info("audio over the limit (%d bytes): %s", len(audio.data), e.message)
            raise PayloadTooLarge(e.message) from None
        except BadAudio as e:
            log.info("unreadable audio (%d bytes): %s", len(audio.data), e.message)
            raise

    async def _request(self, model: str, samples: Samples, options: TranscriptionOptions) -> TranscriptionRequest:
        return TranscriptionRequest(audio=samples, task=options.task, language=options.language,
                                    prompt=options.prompt, temperature=options.temperature,
                                    word_timestamps=options.word_timestamps,
                                    speech=await speech_spans(self._registry, model, samples))


async def speech_spans(registry: Registry, stt_model: str, audio: Samples) -> tuple[SpeechSpan, ...] | None:
    """Where the model's VAD (if it names one) hears speech: whisper invents words in silence."""
    vad_name = registry.model_config(stt_model).vad
    if vad_name is None:
        return None
    async with registry.lease(vad_name, VAD) as held:
        return tuple(await held.backend.speech(audio))


async def _words(backend: TranscriptionBackend, request: TranscriptionRequest) -> ChannelTranscript:
    info: TranscriptionInfo | None = None
    words: list[TranscriptWord] = []
    events = backend.transcribe(request)
    try:
        async for item in events:
            if isinstance(item, TranscriptionInfo):
                info = item
            else:
                words += item.words
    finally:
        await close_stream(events)
    assert info is not None
    return ChannelTranscript(info=info, words=words)


async def _text(backend: TranscriptionBackend, request: TranscriptionRequest
                ) -> AsyncGenerator[TranscriptEvent | Started, None]:
    events = backend.transcribe(request)
    try:
        info = await anext(events)  # checks the request: a bad one fails here, with a real status
        assert isinstance(info, TranscriptionInfo)
        yield STARTED
        text = ""
        async for segment in events:
            if not isinstance(segment, TranscriptSegment):
                continue
            delta = segment.text if text else segment.text.lstrip()
            if delta:
                text += delta
                yield TranscriptDelta(delta)
        yield TranscriptDone(text, info)
    finally:
        await close_stream(events)
