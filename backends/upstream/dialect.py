"""How an upstream's API is written: the requests sent and the answers read, in domain types.

The wire itself belongs to ``compat`` (the layer that knows field names); it registers an implementation
of :class:`Dialect` for each API it can speak (``compat/openai/upstream.py`` for ``openai``), and an
upstream model finds it here by its ``options.api``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from backends.errors import LoadFailed
from backends.types import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationChunk,
    SamplingParams,
    SpeechRequest,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
)

__all__ = ["Dialect", "Form", "Refusal", "StreamRead", "dialect", "register"]


@dataclass(frozen=True, slots=True)
class Form:
    """A multipart body: plain fields (a name may repeat) and one file."""

    fields: list[tuple[str, str]]
    file_field: str
    file_name: str
    file: bytes
    file_type: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error answer, read: the upstream's own words, and the field and code it named."""

    message: str
    field: str | None = None
    code: str | None = None


@dataclass(slots=True)
class StreamRead:
    """What one event of a streamed generation held."""

    chunks: list[GenerationChunk] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    error: Refusal | None = None
    """The upstream broke off with an error in the stream."""


class Dialect(Protocol):
    chat_path: str
    completion_path: str
    embeddings_path: str
    transcription_path: str
    translation_path: str
    speech_path: str
    health_path: str

    def chat_body(self, model: str, request: ChatRequest, sampling: SamplingParams, stream: bool) -> bytes: ...

    def completion_body(self, model: str, request: CompletionRequest, sampling: SamplingParams,
                        stream: bool) -> bytes: ...

    def read_stream_event(self, data: bytes) -> StreamRead:
        """One event of a streamed chat or completion (its text, tool calls, finish, usage)."""
        ...

    def read_generation(self, body: bytes) -> StreamRead:
        """A whole chat or completion answer, as the events it would have streamed."""
        ...

    def embeddings_body(self, model: str, request: EmbeddingRequest) -> bytes: ...

    def read_embeddings(self, body: bytes) -> tuple[npt.NDArray[np.float32], int]:
        """The vectors (one row per input, in order) and the prompt tokens."""
        ...

    def transcription_form(self, model: str, request: TranscriptionRequest, wav: bytes) -> Form: ...

    def read_transcription(self, body: bytes, duration: float) -> tuple[TranscriptionInfo, list[TranscriptSegment]]: ...

    def speech_body(self, model: str, request: SpeechRequest) -> bytes:
        """A request for raw 16-bit mono audio at the model's ``sample_rate``."""
        ...

    def read_error(self, body: bytes) -> Refusal: ...


_DIALECTS: dict[str, Dialect] = {}


def register(api: str, implementation: Dialect) -> None:
    _DIALECTS[api] = implementation


def dialect(api: str) -> Dialect:
    try:
        return _DIALECTS[api]
    except KeyError:
        raise LoadFailed(f"no dialect for the upstream API '{api}' is registered") from None
