"""LiveKit Agents' Deepgram Flux plugin (``deepgram.STTv2``, ``/v2/listen``) given only the gateway's address,
driven directly (``stt.stream()``) with two turns and a pause between them, then the end of input.

The audio comes at the pace a microphone gives it: the gateway weighs a pause once it has transcribed the
speech before it, so audio much faster than real time on a busy machine can run past a pause unheard."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from conftest import TURNS, similarity
from livekit.agents import stt
from livekit.plugins import deepgram
from test_livekit import _microphone as _paced_microphone

pytestmark = pytest.mark.timeout(180)

_T = stt.SpeechEventType


async def _microphone(stream: stt.SpeechStream, pcm: bytes, rate: int = 16000) -> None:
    """10 ms frames in real time (Flux's turns end by the pauses it hears), then the end of input."""
    await _paced_microphone(stream, pcm, rate, pace=0.01)


async def _stream(gateway: Any, pcm: bytes, **options: Any) -> tuple[list[stt.SpeechEvent], float]:
    """Every event of one stream fed ``pcm`` and then ended, and the seconds from the end of the input to the
    stream's own end (the gateway closes the socket once it has answered ``CloseStream``)."""
    async with aiohttp.ClientSession() as session:
        recognizer = deepgram.STTv2(api_key="test", base_url=gateway.url.replace("http://", "ws://") + "/v2/listen",
                                    http_session=session, **options)
        events: list[stt.SpeechEvent] = []
        input_ended: list[float] = []
        async with recognizer.stream() as stream:
            feeder = asyncio.create_task(_microphone(stream, pcm))  # ends with end_input()
            feeder.add_done_callback(lambda _: input_ended.append(time.monotonic()))
            async for event in stream:
                events.append(event)
            stream_ended = time.monotonic()
            await feeder
    return events, stream_ended - input_ended[0]


def _run(gateway: Any, pcm: bytes, **options: Any) -> list[stt.SpeechEvent]:
    events, after_input = asyncio.run(asyncio.wait_for(_stream(gateway, pcm, **options), 90))
    assert 0 <= after_input < 10, after_input  # it ended by itself once the input had ended, without aclose()
    return [e for e in events if e.type != _T.RECOGNITION_USAGE]


def _turns(events: list[stt.SpeechEvent]) -> list[list[stt.SpeechEvent]]:
    """The events split after each END_OF_SPEECH."""
    turns: list[list[stt.SpeechEvent]] = [[]]
    for event in events:
        turns[-1].append(event)
        if event.type == _T.END_OF_SPEECH:
            turns.append([])
    return [t for t in turns if t]


def _collapsed(turn: list[stt.SpeechEvent]) -> list[str]:
    """A turn's event types with each run of interim transcripts as one."""
    kinds: list[str] = []
    for event in turn:
        if not (event.type == _T.INTERIM_TRANSCRIPT and kinds and kinds[-1] == _T.INTERIM_TRANSCRIPT.value):
            kinds.append(event.type.value)
    return kinds


def _describe(events: list[stt.SpeechEvent]) -> list[tuple[str, str]]:
    return [(e.type.value, e.alternatives[0].text if e.alternatives else "") for e in events]


def _check_turn(turn: list[stt.SpeechEvent], said: str) -> stt.SpeechData:
    """One turn's final: what was said, its words timed within the turn's audio window."""
    finals = [e for e in turn if e.type == _T.FINAL_TRANSCRIPT]
    assert len(finals) == 1, _describe(turn)
    final = finals[0].alternatives[0]
    assert similarity(said, final.text) > 0.8, final.text
    assert final.words and " ".join(str(w) for w in final.words) == final.text
    assert final.start_time <= final.words[0].start_time < final.words[-1].end_time <= final.end_time, final
    assert 0 < final.confidence <= 1
    interims = [e.alternatives[0].text for e in turn if e.type == _T.INTERIM_TRANSCRIPT]
    assert interims and all(interims), interims
    return final


def test_flux_turns_with_its_defaults(gateway: Any, two_turns_16k: bytes) -> None:
    """Each turn: START_OF_SPEECH, interim transcripts, one FINAL_TRANSCRIPT with what was said, END_OF_SPEECH;
    one connection throughout, and the stream ends by itself after ``end_input()``."""
    events = _run(gateway, two_turns_16k)  # flux-general-en, 16 kHz linear16 in 50 ms chunks, mip_opt_out=false
    turns = _turns(events)
    expected = [_T.START_OF_SPEECH.value, _T.INTERIM_TRANSCRIPT.value, _T.FINAL_TRANSCRIPT.value,
                _T.END_OF_SPEECH.value]
    assert [_collapsed(t) for t in turns] == [expected] * 2, [_describe(t) for t in turns]
    finals = [_check_turn(turn, said) for turn, said in zip(turns, TURNS, strict=True)]
    assert finals[0].words[-1].end_time + 1 < finals[1].words[0].start_time  # one stream clock, 1.5 s apart
    assert len({e.request_id for e in events if e.request_id}) == 1  # no reconnection


def test_flux_eager_end_of_turn(gateway: Any, two_turns_16k: bytes) -> None:
    """With ``eager_eot_threshold=0.5``: each turn's FINAL_TRANSCRIPT is announced by a PREFLIGHT_TRANSCRIPT of
    the same words (Flux's EagerEndOfTurn) after its interim transcripts: in Flux's state machine an
    ``EndOfTurn`` in eager mode follows an ``EagerEndOfTurn``."""
    events = _run(gateway, two_turns_16k, eager_eot_threshold=0.5)
    turns = _turns(events)
    assert len(turns) == 2, [_describe(t) for t in turns]
    for turn, said in zip(turns, TURNS, strict=True):
        final = _check_turn(turn, said)
        kinds = _collapsed(turn)
        assert kinds[:2] == [_T.START_OF_SPEECH.value, _T.INTERIM_TRANSCRIPT.value], kinds
        assert kinds[-2:] == [_T.FINAL_TRANSCRIPT.value, _T.END_OF_SPEECH.value], kinds
        preflights = [i for i, e in enumerate(turn) if e.type == _T.PREFLIGHT_TRANSCRIPT]
        assert preflights, kinds
        # Flux: EndOfTurn holds the words of the eager end it confirms
        assert turn[preflights[-1]].alternatives[0].text == final.text, _describe(turn)
