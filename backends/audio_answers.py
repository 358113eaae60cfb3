"""Neutral answers of the audio capabilities: what the serving layer hands the wire encoders.

Transcripts (whole, streamed as text, per channel), synthesised speech, and the events of a live
transcription. Beside :mod:`backends.types` because every layer reads them: the gateway's serving
layer makes them, compat encodes them in each dialect. No vendor's field names here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backends.types import TranscriptionInfo, TranscriptSegment, TranscriptWord

__all__ = [
    "AudioProgress",
    "ChannelTranscript",
    "ChannelsTranscribed",
    "EagerEndOfTurn",
    "LiveEvent",
    "LiveTranscript",
    "SpeechAudio",
    "SpeechDone",
    "SpeechEvent",
    "SpeechStarted",
    "Transcribed",
    "TranscriptDelta",
    "TranscriptDone",
    "TranscriptEvent",
    "TurnResumed",
    "UtteranceEnd",
]


# --------------------------------------------------------------------------------------------------
# Transcription of a whole file


@dataclass(frozen=True, slots=True)
class Transcribed:
    """A finished transcription: what is known of the audio, and every segment."""

    info: TranscriptionInfo
    segments: Sequence[TranscriptSegment]


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """More text of a streamed transcript (the first piece has no leading space)."""

    text: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    """The end of a streamed transcript: the whole text."""

    text: str
    info: TranscriptionInfo


TranscriptEvent = TranscriptDelta | TranscriptDone


@dataclass(frozen=True, slots=True)
class ChannelTranscript:
    """What the engine made of one audio channel."""

    info: TranscriptionInfo
    words: Sequence[TranscriptWord]


@dataclass(frozen=True, slots=True)
class ChannelsTranscribed:
    """Every channel of a file transcribed on its own (or one downmix of them)."""

    channels: Sequence[ChannelTranscript]
    duration: float
    """Seconds of audio."""
    model: str
    """The model that transcribed it (its configured name, whatever alias the client used)."""
    engine: str
    """The backend that model runs on."""


# --------------------------------------------------------------------------------------------------
# Speech


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Encoded audio, ready to send."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SpeechDone:
    """The text has been spoken."""

    seconds: float
    sentences: int


SpeechEvent = SpeechAudio | SpeechDone


# --------------------------------------------------------------------------------------------------
# Live transcription


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    timestamp: float
    """Seconds from the stream's start."""


@dataclass(frozen=True, slots=True)
class LiveTranscript:
    """A result for the open window: interim (it will change) or final (it will not)."""

    words: tuple[TranscriptWord, ...]
    start: float
    end: float
    is_final: bool
    speech_final: bool = False
    """Final because a pause ended the speech."""
    from_finalize: bool = False
    """Final because the client asked for it."""
    end_of_turn_confidence: float | None = None
    """How sure it was that the speaker's turn had ended when this result was made (turn-taking streams)."""
    timed_out: bool = False
    """Final because the silence lasted the turn's timeout, whatever the words said."""


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    last_word_end: float


@dataclass(frozen=True, slots=True)
class EagerEndOfTurn:
    """The turn has probably ended: its transcript so far, early enough to start a reply on speculation.
    A :class:`TurnResumed` follows if the speaker goes on; otherwise the final with ``speech_final``."""

    words: tuple[TranscriptWord, ...]
    start: float
    end: float
    confidence: float


@dataclass(frozen=True, slots=True)
class TurnResumed:
    """Speech went on after an :class:`EagerEndOfTurn`: the turn is not over."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class AudioProgress:
    """So much of the stream has been heard (sent at a steady pace of audio, when asked for)."""

    end: float
    end_of_turn_confidence: float
    """How sure it is, at ``end``, that the speaker's turn is over (0 while speech goes on)."""


LiveEvent = SpeechStarted | LiveTranscript | UtteranceEnd | EagerEndOfTurn | TurnResumed | AudioProgress
