"""One Protocol per modality. A backend is built from its model files and options, then served.

Anything that streams is an async iterator; the non-streaming answer is the stream collected, so each
engine has one code path. Backends own their threads: a blocking engine never runs on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from backends.threads import EngineLoad
from backends.types import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationChunk,
    Prompt,
    SpeechRequest,
    SpeechSpan,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
)

__all__ = [
    "Backend",
    "ChatBackend",
    "EmbeddingBackend",
    "ReportsDrafts",
    "ReportsEndpoints",
    "ReportsHealth",
    "ReportsLoad",
    "SpeechBackend",
    "TranscriptionBackend",
    "VadBackend",
    "VadStream",
    "VisionBackend",
]


@runtime_checkable
class Backend(Protocol):
    """What every loaded model offers the registry."""

    def close(self) -> None:
        """Free the engine and stop its threads. Called once, when the model is unloaded."""


@runtime_checkable
class ReportsLoad(Protocol):
    """A backend that runs several engine calls at once says how many: operators see whether its
    requests overlap or queue (``GET /admin/models``)."""

    def engine_load(self) -> EngineLoad: ...


@runtime_checkable
class ReportsDrafts(Protocol):
    """A backend that decodes speculatively says how much of its drafts the model kept."""

    def draft_tokens(self) -> tuple[int, int]:
        """Tokens drafted and tokens of them the model kept, since the model was loaded."""
        ...


@runtime_checkable
class ReportsEndpoints(Protocol):
    """A backend that sends its work to other servers (``upstream``) shows each replica's state."""

    def endpoints(self) -> list[dict[str, object]]:
        """Each replica: its ``url``, ``state`` (up, down, open, trial), ``outstanding`` requests, and
        ``requests`` and ``failures`` so far."""
        ...

    def serving(self) -> bool:
        """Whether any replica may take a request now."""
        ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A backend whose engine can break beyond one request (its thread died, a step poisoned or wedged
    it) says so: the registry then unloads it and loads the model afresh for the next request."""

    @property
    def failure(self) -> str | None:
        """Why the engine can serve no more, in words safe to show; None while it can."""
        ...


@runtime_checkable
class ChatBackend(Backend, Protocol):
    """Text generation. ``prepare_*`` checks and tokenises; ``generate`` streams from a Prompt."""

    @property
    def context_length(self) -> int: ...

    @property
    def slots(self) -> int:
        """Sequences decoded at once: more choices than this wait for each other."""
        ...

    async def prepare_chat(self, request: ChatRequest) -> Prompt: ...

    async def prepare_completion(self, request: CompletionRequest) -> Prompt: ...

    def generate(self, prompt: Prompt) -> AsyncIterator[GenerationChunk]:
        """Stream the completion. Closing the iterator cancels the work within one token."""
        ...


@runtime_checkable
class EmbeddingBackend(Backend, Protocol):
    @property
    def dimensions(self) -> int: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...


@runtime_checkable
class TranscriptionBackend(Backend, Protocol):
    @property
    def can_translate(self) -> bool:
        """Whether the model can translate into English (English-only models cannot)."""
        ...

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionInfo | TranscriptSegment]:
        """Stream the transcript: one :class:`TranscriptionInfo` first, then segments as decoded."""
        ...


@runtime_checkable
class SpeechBackend(Backend, Protocol):
    @property
    def sample_rate(self) -> int: ...

    @property
    def voices(self) -> list[str]:
        """The voice names requests may use."""
        ...

    @property
    def default_voice(self) -> str:
        """The model's own voice (one of :attr:`voices`), for requests that name none."""
        ...

    def synthesize(self, request: SpeechRequest) -> AsyncIterator[npt.NDArray[np.float32]]:
        """Stream mono float32 audio at :attr:`sample_rate`, a sentence at a time."""
        ...


class VadStream(Protocol):
    def feed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Speech probabilities of every whole frame ``audio`` (16 kHz mono) completes."""
        ...


@runtime_checkable
class VadBackend(Backend, Protocol):
    frame_samples: int
    """Samples per scored frame."""
    thresholds: tuple[float, float]
    """Hysteresis, as the engine applies it to its own clips: speech starts at a frame scored at or above
    the first, and ends when frames score below the second."""

    async def speech(self, audio: npt.NDArray[np.float32]) -> list[SpeechSpan]:
        """Where the 16 kHz mono clip holds speech."""
        ...

    def stream(self) -> VadStream:
        """Scoring for live audio: state carried from one piece to the next. Cheap: call it on the loop."""
        ...


@runtime_checkable
class VisionBackend(Backend, Protocol):
    """Reads images for models that cannot see them: the gateway puts the text into the prompt."""

    async def read_text(self, image: bytes) -> str:
        """The text the image (a png, jpeg, webp or gif file the gateway has checked) shows, line by
        line; empty when there is none. The engine runs on a thread of its own, never on the loop."""
        ...
