"""Speech: lease a voice, synthesise a sentence at a time, encode as it comes.

:meth:`Speech.speak` answers one text (OpenAI's ``/audio/speech``, Deepgram's ``POST /v1/speak``): its
first sentence is synthesised before it returns, so an engine that fails is a real status rather than
a cut-off body, and the rest streams as the engine speaks. :meth:`Speech.voice` holds a model for a
conversation (Deepgram's speak WebSocket) that speaks text after text on one lease. A request that
names no voice gets the model's own (:attr:`SpeechBackend.default_voice`). :meth:`Speech.voices` lists
what the configuration offers without loading anything.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from backends import catalog
from backends.audio import StreamEncoder
from backends.audio_answers import SpeechAudio, SpeechDone, SpeechEvent
from backends.base import SpeechBackend
from backends.errors import UnknownVoice
from backends.types import ModelType, SpeechRequest
from gateway.config import Config
from gateway.errors import InvalidRequest
from gateway.registry import SPEECH, Lease, Registry
from gateway.serving.owned import HeldSockets, Owned
from gateway.serving.streams import STARTED, Started, close_stream, started

__all__ = ["AudioOutput", "Speaking", "Speech", "Voice", "audio_of"]

log = logging.getLogger("syn4pse.speech")


@dataclass(frozen=True, slots=True)
class AudioOutput:
    """How synthesised speech goes out."""

    format: str
    """One of ``backends.audio.FORMATS``."""
    sample_rate: int
    """The rate asked for (a codec that cannot take it encodes at 48 kHz: :attr:`Speaking.sample_rate`)."""
    bit_rate: int | None = None


@dataclass(frozen=True, slots=True)
class Speaking:
    """A text being spoken: the encoded audio as it comes, and what is known of it before the first byte."""

    events: Owned[SpeechEvent]
    model: str
    """The model speaking (its configured name)."""
    content_type: str
    sample_rate: int
    """The rate the audio is encoded at."""


class Speech:
    def __init__(self, registry: Registry, config: Config) -> None:
        self._registry = registry
        self._config = config
        self._voices = HeldSockets(config.server.audio.max_speak_sessions, "speak sockets")

    async def speak(self, model: str, text: str, output: AudioOutput, *, voice: str | None = None,
                    speed: float = 1.0) -> Speaking:
        """Speak ``text``; its first sentence is made when this returns."""
        lease = await self._registry.acquire(model, SPEECH)
        try:
            backend = lease.backend
            request = SpeechRequest(text=text, voice=_voice_of(backend, voice), speed=speed)
            encoder = StreamEncoder(output.format, input_rate=backend.sample_rate, output_rate=output.sample_rate,
                                    bitrate=output.bit_rate)
            events: AsyncGenerator[SpeechEvent, None] = await started(
                _spoken(backend, request, encoder, f"{lease.name}, {output.format}"))
        except BaseException:
            lease.release()
            raise
        return Speaking(Owned(lease, events), lease.name, encoder.content_type, encoder.sample_rate)

    async def voice(self, model: str, output: AudioOutput, *, voice: str | None = None,
                    speed: float = 1.0) -> Voice:
        """A model held until :meth:`Voice.aclose`, to speak text after text.

        Held voices are counted apart from the model's turns (``server.audio.max_speak_sessions``): an open
        socket holds its model however idle, and must not take every slot a request could use.
        """
        self._voices.take()
        try:
            lease = await self._registry.acquire(model, SPEECH)
        except BaseException:
            self._voices.give_back()
            raise
        try:
            return Voice(lease, _voice_of(lease.backend, voice), output, speed, self._voices.give_back)
        except BaseException:
            lease.release()
            self._voices.give_back()
            raise

    def voices(self, model: str | None = None) -> list[tuple[str, str]]:
        """``(voice, model)`` of every speech model, or of ``model``, from the configuration alone."""
        config = self._config
        names = ([self._registry.resolve(model)] if model
                 else [name for name, m in config.models.items() if m.type == ModelType.TTS])
        found: list[tuple[str, str]] = []
        for name in names:
            model_config = config.models[name]
            if model_config.type != ModelType.TTS:
                raise InvalidRequest(f"The model '{model}' is not a speech model.", param="model")
            entry = catalog.find(model_config.backend, model_config.type)
            assert entry is not None  # checked when the config was read
            voices = entry.configured_voices(config.backend_options[name], model_config.source.file)
            found += [(voice, name) for voice in voices]
        return found


class Voice:
    """A speech model held for a conversation: text after text in one voice, until closed."""

    def __init__(self, lease: Lease[SpeechBackend], voice: str, output: AudioOutput, speed: float,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self._lease = lease
        self._on_close = on_close
        self._voice = voice
        self._output = output
        self._speed = speed

    @property
    def model(self) -> str:
        return self._lease.name

    async def speak(self, text: str) -> AsyncGenerator[SpeechEvent, None]:
        """``text`` spoken, encoded afresh (each text is a stream of its own). Closing it stops the engine
        after its current sentence."""
        backend = self._lease.backend
        encoder = StreamEncoder(self._output.format, input_rate=backend.sample_rate,
                                output_rate=self._output.sample_rate, bitrate=self._output.bit_rate)
        request = SpeechRequest(text=text, voice=self._voice, speed=self._speed)
        events = _spoken(backend, request, encoder, f"{self.model}, {self._output.format}")
        try:
            async for event in events:
                if not isinstance(event, Started):
                    yield event
        finally:
            await events.aclose()

    async def aclose(self) -> None:
        if not self._lease.released:
            self._lease.release()
            self._on_close()


async def audio_of(events: AsyncIterator[SpeechEvent]) -> AsyncIterator[bytes]:
    """Just the audio's bytes."""
    async for event in events:
        if isinstance(event, SpeechAudio):
            yield event.data


def _voice_of(backend: SpeechBackend, voice: str | None) -> str:
    if voice is None:
        return backend.default_voice
    if voice not in backend.voices:
        raise UnknownVoice(voice, backend.voices)
    return voice


async def _spoken(backend: SpeechBackend, request: SpeechRequest, encoder: StreamEncoder,
                  label: str) -> AsyncGenerator[SpeechEvent | Started, None]:
    """The audio of each sentence as it is made; :data:`STARTED` once the first one is."""
    chunks = backend.synthesize(request)
    try:
        samples = await anext(chunks, None)
        yield STARTED
        seconds, sentences = 0.0, 0
        while samples is not None:
            seconds += len(samples) / backend.sample_rate
            sentences += 1
            if data := encoder.encode(samples):
                yield SpeechAudio(data)
            samples = await anext(chunks, None)
        log.info("speech synthesis finished: %d sentences, %.2fs of audio (%s)", sentences, seconds, label)
        if tail := encoder.finish():
            yield SpeechAudio(tail)
        yield SpeechDone(seconds=seconds, sentences=sentences)
    finally:
        await close_stream(chunks)
