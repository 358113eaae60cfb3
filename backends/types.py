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
