"""When a speaker's turn is over: how long the silence has lasted, weighed by how finished the words sound.

A pause after "What time is it?" ends a turn sooner than one after "I want to book a table for", which
the speaker is likely to go on from. The confidence that the turn has ended grows with the silence
after the last speech, at a pace set by the last word the transcript holds: quickly after a sentence's
end, slowly after a conjunction, a preposition, an article or a filler, in between otherwise. It
reaches 1 after :data:`HORIZON_MS` of silence for each kind of ending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from backends.types import TranscriptWord
from gateway.serving.agreement import normal

__all__ = ["HORIZON_MS", "EndOfTurn", "end_of_turn_confidence", "ending"]

HORIZON_MS = {"finished": 300.0, "open": 700.0, "unfinished": 1600.0}
"""Silence after which a turn is surely over, by how its last word ends it."""

_GOES_ON = frozenset({
    "and", "but", "or", "so", "because", "if", "then", "than", "that", "which", "who", "when", "while",
    "the", "a", "an", "to", "of", "for", "with", "in", "on", "at", "from", "by", "about", "like", "my",
    "your", "our", "their", "is", "are", "was", "were", "um", "uh", "er", "hmm", "mm",
})


def ending(words: Sequence[TranscriptWord]) -> str:
    """``finished`` (a sentence's end), ``unfinished`` (a word one goes on from) or ``open``."""
    if not words:
        return "open"
    last = words[-1].word.strip()
    if last.endswith((".", "?", "!")) and not last.endswith("..."):
        return "finished"
    if last.endswith((",", "-", "...")) or normal(last) in _GOES_ON:
        return "unfinished"
    return "open"


def end_of_turn_confidence(silence_ms: float, words: Sequence[TranscriptWord]) -> float:
    """How sure it is that the turn has ended, in [0, 1]."""
    return round(min(1.0, max(0.0, silence_ms) / HORIZON_MS[ending(words)]), 3)


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """When a turn ends, as a client sets it (Deepgram Flux's thresholds)."""

    threshold: float = 0.7
    """Confidence at which the turn ends; 1: never by confidence, only by the timeout or the client."""
    eager_threshold: float | None = None
    """Confidence at which an early end is announced (the transcript so far, for a speculative reply);
    None: never."""
    timeout_ms: int = 5000
    """Silence after which the turn ends whatever the words."""

    def ended_by(self, silence_ms: float, words: Sequence[TranscriptWord]) -> Literal["words", "timeout"] | None:
        """What ended the turn: its confidence (``words``), the silence ``timeout``, or nothing yet. A
        threshold of 1 leaves it to the timeout (or the client)."""
        if self.threshold < 1.0 and end_of_turn_confidence(silence_ms, words) >= self.threshold:
            return "words"
        return "timeout" if silence_ms >= self.timeout_ms else None

    def reached(self, silence_ms: float, words: Sequence[TranscriptWord]) -> bool:
        """Whether the turn is over."""
        return self.ended_by(silence_ms, words) is not None

    def eager(self, silence_ms: float, words: Sequence[TranscriptWord]) -> bool:
        return (self.eager_threshold is not None
                and end_of_turn_confidence(silence_ms, words) >= self.eager_threshold)
