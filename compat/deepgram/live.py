"""Deepgram's live WebSocket: the query string of ``/v1/listen`` and the messages both ways.

Every ``Results`` message carries ``metadata.model_info`` as an object: Deepgram's Python v3 SDK tears
the connection down without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from backends import audio_answers as live
from backends.types import TranscriptWord
from compat.deepgram.common import ModelInfo, flag, number, one
from compat.deepgram.formatting import FORMATTING_FLAGS, Formatting, formatting_of
from compat.deepgram.listen import (
    UNAVAILABLE_TOGGLES,
    Channel,
    ListenMetadata,
    alternative,
    screen_features,
    whisper_language,
)
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = [
    "ClientMessage",
    "LiveParams",
    "live_encoding",
    "live_message",
    "metadata_message",
    "parse_client_message",
    "parse_live_query",
    "results_message",
    "speech_started_message",
    "utterance_end_message",
]

MIN_ENDPOINTING_MS = 200
"""The shortest pause that ends speech here: the VAD scores 32 ms frames, and whisper needs whole words.
Deepgram's default (10 ms) and anything below this act as this."""

_RAW_ENCODINGS = ("linear16", "linear32", "mulaw", "alaw")
_CONTAINER_ENCODINGS = ("opus", "ogg-opus")
_ACCEPTED = frozenset({
    "model", "language", "encoding", "sample_rate", "channels", "interim_results", "endpointing",
    "utterance_end_ms", "vad_events", "punctuate", "smart_format", "keywords", "keyterm", "tag", "extra",
    *FORMATTING_FLAGS,
    # accepted without effect: no_delay tunes smart_format's wait (nothing waits here), version and tier
    # pick a model version, mip_opt_out concerns Deepgram's model improvement, callback_method tunes a
    # callback that is off, language_hint biases what whisper detects anyway
    "no_delay", "version", "tier", "mip_opt_out", "callback_method", "language_hint",
})
# Live features not available here beyond the pre-recorded ones: only ``true`` goes to the policy.
_TOGGLES = {**UNAVAILABLE_TOGGLES, "multichannel": "each channel is not transcribed on its own on live streams"}


class LiveParams(msgspec.Struct, kw_only=True):
    model: str | None
    language: str | None
    encoding: str | None
    """A headerless encoding; None (or opus) means a containerised stream."""
    sample_rate: int
    channels: int
    interim_results: bool
    endpointing_ms: int | None
    """Silence that ends speech (``speech_final``); None: endpointing off."""
    utterance_end_ms: int | None
    vad_events: bool
    punctuate: bool
    prompt: str | None
    tags: list[str]
    formatting: Formatting = msgspec.field(default_factory=Formatting)


def _hints(query: Mapping[str, Sequence[str]]) -> str | None:
    terms = [k.split(":")[0] for k in query.get("keywords", ())] + list(query.get("keyterm", ()))
    return ", ".join(t for t in terms if t) or None


def _screen(query: Mapping[str, Sequence[str]], policy: ParamPolicy) -> None:
    screen_features(query, policy, _ACCEPTED, _TOGGLES)


def live_encoding(query: Mapping[str, Sequence[str]]) -> str | None:
    """A live socket's headerless encoding (it needs ``sample_rate``), or None for a containerised stream."""
    encoding = one(query, "encoding")
    if encoding is not None and encoding not in _RAW_ENCODINGS + _CONTAINER_ENCODINGS:
        raise InvalidRequest(f"Bad Request: encoding '{encoding}' is not supported; use one of "
                             f"{', '.join(_RAW_ENCODINGS + _CONTAINER_ENCODINGS)}, or none for containers.",
                             param="encoding")
    if encoding in _CONTAINER_ENCODINGS:
        return None
    if encoding is not None and one(query, "sample_rate") is None:
        raise InvalidRequest("Bad Request: sample_rate is required with encoding.", param="sample_rate")
    return encoding


def parse_live_query(query: Mapping[str, Sequence[str]], policy: ParamPolicy) -> LiveParams:
    _screen(query, policy)
    encoding = live_encoding(query)
    endpointing: int | None
    raw_endpointing = one(query, "endpointing")
    if raw_endpointing is not None and raw_endpointing.lower() == "false":
        endpointing = None
    else:
        endpointing = max(MIN_ENDPOINTING_MS, int(number(query, "endpointing", 10, low=0, high=60000)))
    utterance_end = one(query, "utterance_end_ms")
    interim = flag(query, "interim_results")
    if utterance_end is not None and not interim:
        raise InvalidRequest("Bad Request: utterance_end_ms needs interim_results=true.", param="utterance_end_ms")
    language = one(query, "language")
    return LiveParams(
        model=one(query, "model"),
        language=None if language is None else whisper_language(language),
        encoding=encoding,
        sample_rate=int(number(query, "sample_rate", 16000, low=1000, high=192000)),
        channels=int(number(query, "channels", 1, low=1, high=32)),
        interim_results=interim,
        endpointing_ms=endpointing,
        utterance_end_ms=None if utterance_end is None else int(
            number(query, "utterance_end_ms", 1000, low=100, high=60000)),
        vad_events=flag(query, "vad_events"),
        punctuate=flag(query, "punctuate") or flag(query, "smart_format"),
        prompt=_hints(query),
        tags=list(query.get("tag", ())),
        formatting=formatting_of(query),
    )


# --------------------------------------------------------------------------------------------------
# Client → server


class ClientMessage(msgspec.Struct, kw_only=True):
    type: Literal["KeepAlive", "Finalize", "CloseStream", "Configure"]
    channel: int | None = None
    keyterms: list[str] | None = None
    features: dict[str, Any] | None = None


_client = msgspec.json.Decoder(ClientMessage)


def parse_client_message(text: str) -> ClientMessage:
    try:
        return _client.decode(text)
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"Unrecognized message: {e}", param="message") from None


# --------------------------------------------------------------------------------------------------
# Server → client


class ResultsMetadata(msgspec.Struct):
    request_id: str
    model_uuid: str
    model_info: ModelInfo


class Results(msgspec.Struct):
    channel_index: list[int]
    duration: float
    start: float
    is_final: bool
    speech_final: bool
    from_finalize: bool
    channel: Channel
    metadata: ResultsMetadata
    type: str = "Results"


def results_message(*, words: Sequence[TranscriptWord], start: float, end: float, is_final: bool,
                    speech_final: bool, from_finalize: bool, punctuate: bool, request_id: str, model_uuid: str,
                    model_info: ModelInfo, formatting: Formatting | None = None) -> Results:
    return Results(channel_index=[0, 1], duration=round(end - start, 3), start=round(start, 3), is_final=is_final,
                   speech_final=speech_final, from_finalize=from_finalize,
                   channel=Channel([alternative(words, punctuate=punctuate, formatting=formatting)]),
                   metadata=ResultsMetadata(request_id=request_id, model_uuid=model_uuid, model_info=model_info))


class SpeechStarted(msgspec.Struct):
    channel: list[int]
    timestamp: float
    type: str = "SpeechStarted"


def speech_started_message(timestamp: float) -> SpeechStarted:
    return SpeechStarted(channel=[0, 1], timestamp=round(timestamp, 3))


class UtteranceEnd(msgspec.Struct):
    channel: list[int]
    last_word_end: float
    type: str = "UtteranceEnd"


def utterance_end_message(last_word_end: float) -> UtteranceEnd:
    return UtteranceEnd(channel=[0, 1], last_word_end=round(last_word_end, 3))


def live_message(event: live.LiveEvent, params: LiveParams, *, request_id: str, model_uuid: str,
                 model_info: ModelInfo) -> Results | SpeechStarted | UtteranceEnd | None:
    """A live transcription's event as the message Deepgram sends for it (None: ``/v1/listen`` has none;
    its streams do not ask for turn-taking events)."""
    if isinstance(event, live.SpeechStarted):
        return speech_started_message(event.timestamp)
    if isinstance(event, live.UtteranceEnd):
        return utterance_end_message(event.last_word_end)
    if not isinstance(event, live.LiveTranscript):
        return None
    return results_message(words=event.words, start=event.start, end=event.end, is_final=event.is_final,
                           speech_final=event.speech_final, from_finalize=event.from_finalize,
                           punctuate=params.punctuate, request_id=request_id, model_uuid=model_uuid,
                           model_info=model_info, formatting=params.formatting)


class Metadata(ListenMetadata, kw_only=True):
    """The pre-recorded response's metadata, sent as the live stream's last message."""

    type: str  # no default: the parent omits defaults, and clients dispatch on this


def metadata_message(*, request_id: str, sha256: str, created: str, duration: float, model_uuid: str,
                     model_info: ModelInfo) -> Metadata:
    return Metadata(type="Metadata", transaction_key="deprecated", request_id=request_id, sha256=sha256,
                    created=created, duration=round(duration, 3), channels=1, models=[model_uuid],
                    model_info={model_uuid: model_info})


class ErrorMessage(msgspec.Struct):
    description: str
    message: str
    variant: str = "SchemaError"
    type: str = "Error"


def error_message(description: str, original: str) -> ErrorMessage:
    return ErrorMessage(description=description, message=original)
