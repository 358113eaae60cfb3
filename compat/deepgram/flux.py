"""Deepgram Flux, the conversational live API (``/v2/listen``): its query, its messages, and its turns.

The server speaks first (``Connected``), then reports each turn with ``TurnInfo`` messages:
``StartOfTurn`` once the turn has words, ``Update`` every 250 ms of audio, ``EagerEndOfTurn`` and
``TurnResumed`` when an eager threshold is set, and ``EndOfTurn`` (``trigger``: ``model`` when the
end-of-turn confidence reached ``eot_threshold``, ``timeout`` after ``eot_timeout_ms`` of silence,
``manual`` for ``ForceEndTurn``). ``transcript`` and ``words`` hold the whole turn so far;
``turn_index`` counts turns from 0 and moves on after each ``EndOfTurn``; ``sequence_id`` counts every
message the server sends. The client may send ``Configure`` (thresholds, keyterms; each answered),
``ForceEndTurn`` and ``CloseStream``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from backends import audio_answers as live
from backends.types import TranscriptWord
from compat.deepgram.common import number, one
from compat.deepgram.formatting import Formatting, apply_formatting, formatting_of
from compat.deepgram.listen import UNAVAILABLE_TOGGLES, screen_features, transcript_of, words_json
from compat.deepgram.live import live_encoding
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = [
    "UPDATE_EVERY_MS",
    "CloseStream",
    "ConfigureMessage",
    "ConfigureSuccess",
    "FluxParams",
    "FluxTurns",
    "ForceEndTurn",
    "Thresholds",
    "parse_flux_message",
    "parse_flux_query",
    "updated",
]

UPDATE_EVERY_MS = 250
"""Audio between two ``Update`` messages."""
EOT_RANGE = (0.5, 1.0)
EAGER_RANGE = (0.3, 0.9)
TIMEOUT_RANGE = (500, 60000)
MOST_KEYTERMS = 100

_ACCEPTED = frozenset({
    "model", "encoding", "sample_rate", "eot_threshold", "eager_eot_threshold", "eot_timeout_ms", "keyterm",
    "tag", "numerals", "profanity_filter",
    # accepted without effect: mip_opt_out concerns Deepgram's model improvement
    "mip_opt_out",
})
_TOGGLES = {**UNAVAILABLE_TOGGLES}


class Thresholds(msgspec.Struct, kw_only=True):
    """When a turn ends; ``eager_eot_threshold`` None: no eager ends of turn."""

    eot_threshold: float = 0.7
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int = 5000

    def checked(self) -> Thresholds:
        """These thresholds, or ``InvalidRequest`` naming the one out of range (Flux's rules)."""
        _within("eot_threshold", self.eot_threshold, EOT_RANGE)
        _within("eot_timeout_ms", self.eot_timeout_ms, TIMEOUT_RANGE)
        if self.eager_eot_threshold is not None:
            _within("eager_eot_threshold", self.eager_eot_threshold, EAGER_RANGE)
            if self.eager_eot_threshold > self.eot_threshold:
                raise InvalidRequest("eager_eot_threshold must be less than or equal to eot_threshold",
                                     param="eager_eot_threshold")
        return self


def _within(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}; got {value:g}", param=name)


class FluxParams(msgspec.Struct, kw_only=True):
    model: str
    encoding: str | None
    """A headerless encoding; None means a containerised stream (opus and ogg-opus are containers)."""
    sample_rate: int
    thresholds: Thresholds
    keyterms: list[str]
    tags: list[str]
    formatting: Formatting


def parse_flux_query(query: Mapping[str, Sequence[str]], policy: ParamPolicy) -> FluxParams:
    screen_features(query, policy, _ACCEPTED, _TOGGLES)
    model = one(query, "model")
    if not model:
        raise InvalidRequest("Bad Request: model is required, e.g. model=flux-general-en.", param="model")
    encoding = live_encoding(query)
    eager = one(query, "eager_eot_threshold")
    thresholds = Thresholds(
        eot_threshold=number(query, "eot_threshold", 0.7, low=0, high=1),
        eager_eot_threshold=None if eager is None else number(query, "eager_eot_threshold", 0.5, low=0, high=1),
        eot_timeout_ms=int(number(query, "eot_timeout_ms", 5000, low=0, high=10**6)))
    keyterms = [t for t in query.get("keyterm", ()) if t.strip()]
    if len(keyterms) > MOST_KEYTERMS:
        raise InvalidRequest(f"Bad Request: at most {MOST_KEYTERMS} keyterms.", param="keyterm")
    return FluxParams(model=model, encoding=encoding,
                      sample_rate=int(number(query, "sample_rate", 16000, low=1000, high=192000)),
                      thresholds=thresholds.checked(), keyterms=keyterms, tags=list(query.get("tag", ())),
                      formatting=formatting_of(query))


# --------------------------------------------------------------------------------------------------
# Client → server


class ConfigureThresholds(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int | None = None


class ConfigureMessage(msgspec.Struct, kw_only=True, tag_field="type", tag="Configure"):
    """``Configure``: each field left out keeps its value; ``keyterms`` replaces the list."""

    thresholds: ConfigureThresholds | None = None
    keyterms: str | list[str] | None = None
    language_hints: list[str] | None = None
    numerals: bool | None = None
    profanity_filter: bool | None = None


class CloseStream(msgspec.Struct, tag_field="type", tag="CloseStream"):
    pass


class ForceEndTurn(msgspec.Struct, tag_field="type", tag="ForceEndTurn"):
    pass


ClientMessage = ConfigureMessage | CloseStream | ForceEndTurn
_client = msgspec.json.Decoder(ClientMessage)


def parse_flux_message(text: str) -> ClientMessage:
    try:
        return _client.decode(text)
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"Text message received from client did not match any of the formats we expect: "
                             f"{e}", param="message") from None


# --------------------------------------------------------------------------------------------------
# Server → client


class Connected(msgspec.Struct):
    request_id: str
    sequence_id: int
    type: str = "Connected"


class FluxWord(msgspec.Struct):
    word: str
    confidence: float
    start: float
    end: float


class TurnInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str  # no default: defaults are omitted here, and clients dispatch on this
    request_id: str
    sequence_id: int
    event: str
    turn_index: int
    audio_window_start: float
    audio_window_end: float
    transcript: str
    words: list[FluxWord]
    end_of_turn_confidence: float
    trigger: str | None = None
    """Only on ``EndOfTurn``."""


class ConfigureSuccess(msgspec.Struct):
    request_id: str
    sequence_id: int
    thresholds: dict[str, Any]
    keyterms: list[str]
    type: str = "ConfigureSuccess"


class ConfigureFailure(msgspec.Struct):
    request_id: str
    sequence_id: int
    code: str
    description: str
    type: str = "ConfigureFailure"


class FluxWarning(msgspec.Struct):
    request_id: str
    sequence_id: int
    code: str
    description: str
    type: str = "Warning"


class FatalError(msgspec.Struct):
    sequence_id: int
    code: str
    description: str
    type: str = "Error"


class FluxTurns:
    """The turns of one Flux stream: the live session's events in, Flux's messages out, numbered."""

    def __init__(self, request_id: str, formatting: Formatting, thresholds: Thresholds,
                 keyterms: Sequence[str] = ()) -> None:
        self.request_id = request_id
        self.thresholds = thresholds
        self.formatting = formatting
        self.keyterms = list(keyterms)
        self._sequence = 0
        self.turn_index = 0
        self.in_turn = False
        """A ``StartOfTurn`` was sent and no ``EndOfTurn`` since."""
        self._turn_start = 0.0
        self._before: tuple[TranscriptWord, ...] = ()
        """The turn's words in finals already made (a long turn spans several)."""
        self._latest: tuple[TranscriptWord, ...] = ()
        """The turn's words so far."""
        self._heard = 0.0
        self._eager: tuple[TranscriptWord, ...] | None = None
        """The words of an ``EagerEndOfTurn`` no ``TurnResumed`` has followed."""

    def _next(self) -> int:
        sequence = self._sequence
        self._sequence += 1
        return sequence

    def connected(self) -> Connected:
        return Connected(request_id=self.request_id, sequence_id=self._next())

    def messages(self, event: live.LiveEvent) -> list[Any]:
        if isinstance(event, live.AudioProgress | live.LiveTranscript | live.EagerEndOfTurn | live.TurnResumed):
            self._heard = max(self._heard, event.end)
        if isinstance(event, live.AudioProgress):
            return [self._turn_info("Update", self._latest if self.in_turn else (), event.end_of_turn_confidence)]
        if isinstance(event, live.LiveTranscript):
            return self._transcript(event)
        if isinstance(event, live.EagerEndOfTurn):
            out = self._start(words := (*self._before, *event.words))
            self._eager = self._update(words)
            return [*out, self._turn_info("EagerEndOfTurn", words, event.confidence)]
        if isinstance(event, live.TurnResumed) and self._eager is not None:
            self._eager = None
            return [self._turn_info("TurnResumed", self._latest, 0.0)]
        return []

    def _transcript(self, event: live.LiveTranscript) -> list[Any]:
        words = (*self._before, *event.words)
        if not event.is_final:
            return [*self._start(words), *([] if not self.in_turn or words == self._latest else
                                            [self._turn_info("Update", self._update(words), 0.0)])]
        if not event.speech_final:  # the turn goes on past this final (a long turn, or the stream's end)
            out = self._start(words)
            self._before = words if self.in_turn else ()
            # An Update for all the audio heard, even with nothing said: the stream may end here.
            return [*out, self._turn_info("Update", self._update(words) if self.in_turn else (), 0.0)]
        out = self._start(words)
        confidence = event.end_of_turn_confidence or 0.0
        if self._eager is not None and words != self._eager:  # the turn said more than its eager end held
            out.append(self._turn_info("TurnResumed", self._update(words), 0.0))
        self._eager = None
        if self.in_turn:
            trigger = "manual" if event.from_finalize else "timeout" if event.timed_out else "model"
            out.append(self._turn_info("EndOfTurn", words, confidence, trigger=trigger))
            self.turn_index += 1
        self.in_turn = False
        self._before = self._latest = ()
        self._turn_start = self._heard  # the next turn starts where this one's window ended
        return out

    def _start(self, words: tuple[TranscriptWord, ...]) -> list[Any]:
        """``StartOfTurn``, once the turn has a word (never an empty one)."""
        if self.in_turn or not words:
            return []
        self.in_turn = True
        return [self._turn_info("StartOfTurn", self._update(words), 0.0)]

    def _update(self, words: tuple[TranscriptWord, ...]) -> tuple[TranscriptWord, ...]:
        self._latest = words
        return words

    def _turn_info(self, event: str, words: Sequence[TranscriptWord], confidence: float, *,
                   trigger: str | None = None) -> TurnInfo:
        built = apply_formatting(words_json(words, True), self.formatting)
        return TurnInfo(
            type="TurnInfo", request_id=self.request_id, sequence_id=self._next(), event=event,
            turn_index=self.turn_index,
            audio_window_start=round(self._turn_start, 3), audio_window_end=round(self._heard, 3),
            transcript=transcript_of(built),
            words=[FluxWord(word=w.punctuated_word or w.word, confidence=round(w.confidence, 4),
                            start=w.start, end=w.end) for w in built],
            end_of_turn_confidence=round(confidence, 4), trigger=trigger)

    def configure(self, message: ConfigureMessage) -> ConfigureSuccess | ConfigureFailure:
        """Apply a ``Configure`` whole or not at all; its answer: the values now in force, or why not."""
        keyterms = self.keyterms if message.keyterms is None else (
            [message.keyterms] if isinstance(message.keyterms, str) else list(message.keyterms))
        try:
            thresholds = updated(self.thresholds, message.thresholds)
            if len(keyterms) > MOST_KEYTERMS:
                raise InvalidRequest(f"at most {MOST_KEYTERMS} keyterms", param="keyterms")
            if message.language_hints:
                raise InvalidRequest("language_hints needs flux-general-multi", param="language_hints")
        except InvalidRequest as e:
            code = "INVALID_THRESHOLD" if (e.param or "").startswith(("eot", "eager")) else "INVALID_PARAMETER"
            return ConfigureFailure(request_id=self.request_id, sequence_id=self._next(), code=code,
                                    description=e.message)
        self.thresholds, self.keyterms = thresholds, keyterms
        f = self.formatting
        self.formatting = msgspec.structs.replace(
            f, numerals=f.numerals if message.numerals is None else message.numerals,
            profanity_filter=f.profanity_filter if message.profanity_filter is None else message.profanity_filter)
        values: dict[str, Any] = {"eot_threshold": thresholds.eot_threshold,
                                  "eot_timeout_ms": thresholds.eot_timeout_ms}
        if thresholds.eager_eot_threshold is not None:
            values["eager_eot_threshold"] = thresholds.eager_eot_threshold
        return ConfigureSuccess(request_id=self.request_id, sequence_id=self._next(), thresholds=values,
                                keyterms=list(keyterms))

    def warning(self, code: str, description: str) -> FluxWarning:
        return FluxWarning(request_id=self.request_id, sequence_id=self._next(), code=code, description=description)

    def fatal(self, code: str, description: str) -> FatalError:
        return FatalError(sequence_id=self._next(), code=code, description=description)


def updated(thresholds: Thresholds, change: ConfigureThresholds | None) -> Thresholds:
    """``thresholds`` with a ``Configure``'s changes, checked (``InvalidRequest`` names a bad one)."""
    if change is None:
        return thresholds
    return Thresholds(
        eot_threshold=thresholds.eot_threshold if change.eot_threshold is None else change.eot_threshold,
        eager_eot_threshold=(thresholds.eager_eot_threshold if change.eager_eot_threshold is None
                             else change.eager_eot_threshold),
        eot_timeout_ms=thresholds.eot_timeout_ms if change.eot_timeout_ms is None else change.eot_timeout_ms,
    ).checked()
