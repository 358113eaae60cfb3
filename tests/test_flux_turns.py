"""Flux's turns from live-transcription events, without a model: what each event becomes on the wire."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from backends.audio_answers import AudioProgress, EagerEndOfTurn, LiveTranscript, SpeechStarted, TurnResumed
from backends.types import TranscriptWord
from compat.deepgram.flux import FluxTurns, Thresholds, parse_flux_message, parse_flux_query, updated
from compat.deepgram.formatting import Formatting
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy


def _words(text: str, start: float) -> tuple[TranscriptWord, ...]:
    return tuple(TranscriptWord(word=f" {w}", start=start + i * 0.3, end=start + i * 0.3 + 0.25, probability=0.9)
                 for i, w in enumerate(text.split()))


def _wire(messages: list[Any]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(msgspec.json.encode(m)) for m in messages]


def _turns(eager: float | None = None) -> FluxTurns:
    return FluxTurns("rid", Formatting(), Thresholds(eot_threshold=0.7, eager_eot_threshold=eager))


def test_a_turn_starts_with_words_updates_and_ends_with_its_trigger() -> None:
    turns = _turns()
    out = _wire([turns.connected()])
    out += _wire(turns.messages(SpeechStarted(timestamp=0.5)))  # no words yet: no StartOfTurn
    out += _wire(turns.messages(AudioProgress(end=0.75, end_of_turn_confidence=0.0)))
    out += _wire(turns.messages(LiveTranscript(words=_words("what time", 0.5), start=0.0, end=1.1, is_final=False)))
    out += _wire(turns.messages(LiveTranscript(words=_words("what time is", 0.5), start=0.0, end=1.4,
                                               is_final=False)))
    out += _wire(turns.messages(AudioProgress(end=1.5, end_of_turn_confidence=0.3)))
    out += _wire(turns.messages(LiveTranscript(words=_words("What time is it?", 0.5), start=0.0, end=1.9,
                                               is_final=True, speech_final=True, end_of_turn_confidence=0.8)))
    out += _wire(turns.messages(AudioProgress(end=2.0, end_of_turn_confidence=0.0)))
    assert [m["sequence_id"] for m in out] == list(range(len(out)))
    assert out[0] == {"type": "Connected", "request_id": "rid", "sequence_id": 0}
    assert all(m["type"] == "TurnInfo" for m in out[1:])
    assert [m["event"] for m in out[1:]] == ["Update", "StartOfTurn", "Update", "Update", "EndOfTurn", "Update"]
    first_update, start, update, progress, end, after = out[1:]
    assert first_update["transcript"] == "" and first_update["words"] == []  # between turns: nothing said
    assert start["transcript"] == "what time" and start["turn_index"] == 0
    assert update["transcript"] == "what time is"
    assert progress["end_of_turn_confidence"] == 0.3 and progress["transcript"] == "what time is"
    assert end["transcript"] == "What time is it?" and end["trigger"] == "model"
    assert end["end_of_turn_confidence"] == 0.8 and end["audio_window_end"] == 1.9
    assert [w["word"] for w in end["words"]] == ["What", "time", "is", "it?"]
    assert set(end["words"][0]) == {"word", "confidence", "start", "end"}
    assert all("trigger" not in m for m in out[1:] if m["event"] != "EndOfTurn")
    assert after["turn_index"] == 1 and after["audio_window_start"] == 1.9 and after["transcript"] == ""


def test_an_end_of_turn_that_says_more_than_its_eager_end_is_resumed_first() -> None:
    turns = _turns(eager=0.4)
    said = _words("book a table", 0.5)
    out = _wire(turns.messages(LiveTranscript(words=said, start=0.0, end=1.4, is_final=False)))
    out += _wire(turns.messages(EagerEndOfTurn(words=said, start=0.0, end=1.6, confidence=0.5)))
    out += _wire(turns.messages(TurnResumed(start=0.0, end=1.7)))
    out += _wire(turns.messages(EagerEndOfTurn(words=_words("book a table for two", 0.5), start=0.0, end=2.3,
                                               confidence=0.5)))
    out += _wire(turns.messages(LiveTranscript(words=_words("book a table for two.", 0.5), start=0.0, end=2.5,
                                               is_final=True, speech_final=True, end_of_turn_confidence=0.75)))
    events = [m["event"] for m in out]
    assert events == ["StartOfTurn", "EagerEndOfTurn", "TurnResumed", "EagerEndOfTurn", "TurnResumed", "EndOfTurn"]
    assert out[-1]["transcript"] == "book a table for two."


def test_long_turns_span_finals_and_a_forced_end_is_manual() -> None:
    turns = _turns()
    first = _words("I want to", 0.5)
    out = _wire(turns.messages(LiveTranscript(words=first, start=0.0, end=20.0, is_final=True)))  # a full window
    out += _wire(turns.messages(LiveTranscript(words=_words("go home", 20.1), start=20.0, end=21.0, is_final=True,
                                               speech_final=True, from_finalize=True, end_of_turn_confidence=0.2)))
    assert [m["event"] for m in out] == ["StartOfTurn", "Update", "EndOfTurn"]  # the final goes on in the turn
    assert out[1]["transcript"] == "I want to" and out[1]["audio_window_end"] == 20.0
    assert out[-1]["transcript"] == "I want to go home" and out[-1]["trigger"] == "manual"
    # Silence that timed out: confidence under the threshold.
    out = _wire(turns.messages(LiveTranscript(words=_words("and", 30.0), start=21.0, end=36.0, is_final=True,
                                              speech_final=True, end_of_turn_confidence=1.0, timed_out=True)))
    assert [m["event"] for m in out] == ["StartOfTurn", "EndOfTurn"] and out[-1]["trigger"] == "timeout"
    assert out[-1]["turn_index"] == 1
    # A final with no words (noise the VAD took for speech) starts no turn.
    assert turns.messages(LiveTranscript(words=(), start=36.0, end=37.0, is_final=True, speech_final=True)) == []
    # The stream's last final, with nothing said: an Update still reports all the audio heard.
    last = _wire(turns.messages(LiveTranscript(words=(), start=37.0, end=39.5, is_final=True)))
    assert [(m["event"], m["transcript"], m["audio_window_end"]) for m in last] == [("Update", "", 39.5)]


def test_flux_query_and_configure_rules() -> None:
    policy = ParamPolicy("reject")
    params = parse_flux_query({"model": ["flux-general-en"], "encoding": ["linear16"], "sample_rate": ["16000"],
                               "eager_eot_threshold": ["0.5"], "keyterm": ["Maria", "harbor"],
                               "mip_opt_out": ["false"]}, policy)
    assert params.thresholds == Thresholds(eot_threshold=0.7, eager_eot_threshold=0.5, eot_timeout_ms=5000)
    assert params.keyterms == ["Maria", "harbor"] and params.encoding == "linear16"
    for query, param in [({}, "model"), ({"eot_threshold": ["0.2"]}, "eot_threshold"),
                         ({"eager_eot_threshold": ["0.8"], "eot_threshold": ["0.6"]}, "eager_eot_threshold"),
                         ({"eot_timeout_ms": ["100"]}, "eot_timeout_ms"), ({"encoding": ["bogus"]}, "encoding"),
                         ({"bogus": ["1"]}, "bogus")]:
        with pytest.raises(InvalidRequest) as caught:
            parse_flux_query({"model": ["flux-general-en"], **query} if param != "model" else query, policy)
        assert caught.value.param == param
    configure = parse_flux_message('{"type":"Configure","thresholds":{"eot_threshold":0.8},"keyterms":["x"]}')
    assert updated(params.thresholds, configure.thresholds).eot_threshold == 0.8  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest):
        parse_flux_message('{"type":"KeepAlive"}')  # not a Flux message
    assert type(parse_flux_message('{"type":"ForceEndTurn"}')).__name__ == "ForceEndTurn"
