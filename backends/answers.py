"""Neutral answers: what the serving layer hands the wire encoders.

A generation's chunks, read into choices (text, tool calls, a finish), collected or as events; the
timings of a request. Beside :mod:`backends.types` because every layer reads them: the gateway's
serving layer makes them, compat encodes them in each dialect. No vendor's field names here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.types import FinishReason, TokenLogprob, ToolCall, Usage

__all__ = [
    "AnswerEnd",
    "CallDelta",
    "CallOpened",
    "ChatAnswer",
    "ChatEvent",
    "ChoiceFinished",
    "ChoiceOpened",
    "ChoiceResult",
    "CompletionAnswer",
    "CompletionEvent",
    "TextDelta",
    "TextPiece",
    "Timings",
    "Waiting",
]


@dataclass(frozen=True, slots=True)
class Waiting:
    """The model is still loading: a stream sends a keep-alive."""


@dataclass(frozen=True, slots=True)
class Timings:
    """Seconds, measured at the gateway: waiting for the model, reading the prompt, generating."""

    queued: float
    prompt: float
    completion: float

    @property
    def total(self) -> float:
        return self.queued + self.prompt + self.completion


@dataclass(slots=True)
class ChoiceResult:
    """One choice of a finished generation."""

    content: str
    finish_reason: FinishReason | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    choices: list[ChoiceResult]
    usage: Usage
    timings: Timings


# -- a streamed chat answer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChoiceOpened:
    """A choice begins (before any of the model's text)."""

    index: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    """The tokens this text came from, when logprobs were asked for (None: not asked for)."""


@dataclass(frozen=True, slots=True)
class CallOpened:
    """A tool call begins: its id and the function's name."""

    index: int
    call: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallDelta:
    """More of a tool call's arguments (JSON text)."""

    index: int
    call: int
    fragment: str


@dataclass(frozen=True, slots=True)
class ChoiceFinished:
    index: int
    reason: FinishReason
    last: bool
    """Whether every choice has finished now."""
    usage: Usage
    timings: Timings


@dataclass(frozen=True, slots=True)
class AnswerEnd:
    """After the last choice: the whole answer's usage."""

    usage: Usage
    timings: Timings


ChatEvent = Waiting | ChoiceOpened | TextDelta | CallOpened | CallDelta | ChoiceFinished | AnswerEnd


# -- a legacy completion ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Text of one completion choice (``index`` counts across prompts: prompt × n + choice)."""

    index: int
    text: str
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    offset: int = 0
    """Characters of the choice's text before this piece (where its logprobs' offsets start)."""


CompletionEvent = TextPiece | AnswerEnd


@dataclass(frozen=True, slots=True)
class CompletionAnswer:
    """Every choice of every prompt, in order, each with the text before it (the prompt, when echoed)."""

    choices: list[tuple[str, ChoiceResult]]
    usage: Usage
