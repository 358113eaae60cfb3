"""Neutral domain types: what a backend is asked to do and what it answers.

No vendor's field names here. The compat layer translates wire structs to these and back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "IMAGE_MARKER",
    "CallPiece",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "EmbeddingResult",
    "FinishReason",
    "GenerationChunk",
    "ImageInput",
    "ModelType",
    "OutputFormat",
    "Prompt",
    "SamplingParams",
    "SpeechRequest",
    "SpeechSpan",
    "TokenLogprob",
    "ToolCall",
    "ToolPlan",
    "ToolSpec",
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


FinishReason = Literal["stop", "length", "tool_calls"]

IMAGE_MARKER = "\ufffc"
"""Stands for an image inside :attr:`ChatMessage.content`; the compat layer strips it from caller text."""


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
    n: int = 1
    """Independent choices generated from the one prompt (choice i samples with ``seed + i``)."""
    logprobs: int | None = None
    """None: no log-probabilities; k >= 0: each token's, plus the k likeliest alternatives."""


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image in a chat message. ``data`` is empty until the gateway has fetched and checked it."""

    where: str
    """The part's place in the request, in the words of the request's own format: every error about it
    names it so."""
    url: str
    """``data:`` or ``http(s):`` as sent (data URLs cut short), for errors and logs."""
    data: bytes = b""
    """The image file (png, jpeg, webp or gif), once the gateway holds it."""
    mime: str = ""
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """JSON text, as the model wrote it (a grammar keeps it valid when the call was forced)."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    """Text; each image of :attr:`images` stands at an :data:`IMAGE_MARKER`, in order."""
    name: str | None = None
    images: tuple[ImageInput, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; ``parameters`` is its JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What the reply must be. ``json_schema`` None with kind "json" means: any JSON object."""

    kind: Literal["text", "json"] = "text"
    json_schema: dict[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    """"none", "auto", "required", or the name of the one function the model must call."""
    parallel_tool_calls: bool = True
    output: OutputFormat = field(default_factory=OutputFormat)


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
    grammar: str | None = None
    """A GBNF grammar every choice must follow (tools forced, JSON output)."""
    check: Any = None
    """What a choice the grammar held must pass when it ends (a ``backends.grammars.OutputCheck``)."""
    tools: ToolPlan | None = None
    """How to read tool calls out of the reply; None: the reply is text."""
    media: Any = None
    """An engine's own handle on images already tokenised with the text (``tokens`` is then empty)."""
    media_tokens: int = 0
    request: ChatRequest | CompletionRequest | None = None
    """The request itself, for an engine that is handed it whole (an upstream server templates and
    tokenises it there; ``tokens`` is then empty)."""

    @property
    def n_tokens(self) -> int:
        """Prompt tokens as billed: text tokens plus image tokens."""
        return len(self.tokens) + self.media_tokens


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How tool calls are written in the reply: ``forced`` calls are JSON a grammar holds to."""

    mode: Literal["auto", "required", "named"]
    names: tuple[str, ...]
    """The functions the model may call; for "named", the one it must."""
    parallel: bool = True
    """Whether a reply may hold more than one call (later ones are dropped when not)."""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()
    """The likeliest tokens at this position, most likely first."""


@dataclass(frozen=True, slots=True)
class CallPiece:
    """Part of a tool call an engine has already read out of its reply (an upstream server does): the
    first piece of call ``index`` carries its ``id`` and ``name``, later ones more ``arguments``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of generated text. The last chunk of a choice carries ``finish_reason``."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """Tokens generated so far by this choice."""
    index: int = 0
    """Which choice (0 .. n-1) the text belongs to."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """One entry per token generated since the previous chunk of this choice, when asked for."""
    cached_tokens: int = 0
    """Prompt tokens this choice found in the engine's cache (not read again)."""
    calls: tuple[CallPiece, ...] = ()
    """Tool calls the engine read itself; a :attr:`Prompt.tools` plan reads them out of ``text`` instead."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens taken from the engine's cache instead of being read again."""

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
    beam_size: int | None = None
    """Beams of the search at temperature 0 (1: greedy); None: the model's configured ``beam_size``."""
    word_timestamps: bool = False
    quick: bool = False
    """A short clip heard fast, as live transcription's passes need it: the encoder hears only the clip
    (not the 30 s window whisper is given whatever the clip's length), decoding stays at temperature 0
    (no fallback) and stops at as many tokens as such a clip can hold. An engine without these choices
    ignores it."""
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
