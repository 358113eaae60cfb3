"""Neutral domain types: what a backend is asked to do and what it answers.

No vendor's field names here. The compat layer translates wire structs to these and back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "EmbeddingResult",
    "FinishReason",
    "GenerationChunk",
    "ModelType",
    "Prompt",
    "SamplingParams",
    "SpeechRequest",
    "SpeechSpan",
    "TranscriptSegment",
    "TranscriptWord",
    "TranscriptionInfo",
    "TranscriptionRequest",
    "Usage",
]


class ModelType(enum.StrEnum):
    LLM = "llm"
    STT = "stt"
    TTS = "tts"
    EMBEDDINGS = "embeddings"
    VAD = "vad"
    VISION = "vision"


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. ``max_tokens`` None means: until the context is full."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id in the model's own vocabulary, bias added to its logit)."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A raw-text (or raw-token) prompt, continued as-is: no chat template."""

    prompt: str | tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    echo: bool = False


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request the backend has already checked and tokenised, ready to generate from.

    Preparing is separate from generating so that every failure that can happen before the first
    token (template errors, a prompt longer than the context) happens before a stream starts.
    """

    tokens: tuple[int, ...]
    sampling: SamplingParams
    text: str = ""
    """The prompt's text, echoed back by legacy completions when asked."""
    stop: tuple[str, ...] = ()
    """Stop strings: the caller's plus any the chat template adds."""


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of generated text. The last chunk of a generation carries ``finish_reason``."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Texts or token-id sequences to embed, in order; ``dimensions`` truncates and re-normalises."""

    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: npt.NDArray[np.float32]
    """One unit-length row per input, in input order."""
    prompt_tokens: int


# --------------------------------------------------------------------------------------------------
# Speech to text


@dataclass(frozen=True, slots=True)
class SpeechSpan:
    """A stretch of speech found by voice activity detection, in seconds from the clip's start."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    audio: npt.NDArray[np.float32]
    """Mono float32 samples at 16 kHz."""
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    """ISO-639-1 code; None detects it."""
    prompt: str | None = None
    temperature: float | None = None
    """None (or 0) decodes greedily and raises the temperature only when decoding fails."""
    word_timestamps: bool = False
    speech: tuple[SpeechSpan, ...] | None = None
    """Only these stretches are transcribed (from a VAD); None transcribes the whole clip."""


@dataclass(frozen=True, slots=True)
class TranscriptionInfo:
    """What is known before the first segment: sent first by every transcription stream."""

    language: str
    language_probability: float
    duration: float


@dataclass(frozen=True, slots=True)
class TranscriptWord:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    id: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    seek: int = 0
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[TranscriptWord, ...] = ()


# --------------------------------------------------------------------------------------------------
# Text to speech


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    text: str
    voice: str
    """One of the backend's voice names."""
    speed: float = 1.0
