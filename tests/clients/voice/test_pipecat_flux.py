"""pipecat's Deepgram Flux service (``/v2/listen``) given only the gateway's address, in a small pipeline fed
two turns with a pause between them: the frames pipecat makes of Flux's turns, in the order it makes them.

The audio comes at the pace a microphone gives it: the gateway weighs a pause once it has transcribed the
speech before it, so audio much faster than real time on a busy machine can run past a pause unheard."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import TURNS, similarity
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    ErrorFrame,
    Frame,
    InterimTranscriptionFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    TranscriptionFrame,
)
from pipecat.services.deepgram.flux.stt import DeepgramFluxSTTService
from test_pipecat import _microphone, _run

pytestmark = pytest.mark.timeout(180)

_LABELS: dict[type[Frame], str] = {
    ProposedUserStartedSpeakingFrame: "start",
    InterimTranscriptionFrame: "interim",
    EagerTranscriptionFrame: "eager",
    EagerEndOfTurnCancelFrame: "cancel",
    TranscriptionFrame: "final",
    ProposedUserStoppedSpeakingFrame: "stop",
}


def _turn_frames(frames: list[Frame]) -> list[Frame]:
    """The frames that tell of the turns, in the order they came out of the service."""
    return [f for f in frames if type(f) in _LABELS]


def _turns(frames: list[Frame]) -> list[list[Frame]]:
    """The turn frames, split after each ``ProposedUserStoppedSpeakingFrame``."""
    turns: list[list[Frame]] = [[]]
    for frame in _turn_frames(frames):
        turns[-1].append(frame)
        if isinstance(frame, ProposedUserStoppedSpeakingFrame):
            turns.append([])
    return [t for t in turns if t]


def _collapsed(turn: list[Frame]) -> list[str]:
    """A turn's frame labels with each run of interim results as one."""
    labels: list[str] = []
    for frame in turn:
        label = _LABELS[type(frame)]
        if not (label == "interim" and labels and labels[-1] == "interim"):
            labels.append(label)
    return labels


def _two_turns_ended(frames: list[Frame]) -> bool:
    return sum(isinstance(f, ProposedUserStoppedSpeakingFrame) for f in frames) >= 2


def _real_time(pcm: bytes, rate: int = 16000) -> list[Frame | float]:
    """20 ms audio frames at the pace a microphone gives them."""
    return [item if isinstance(item, Frame) else 0.02 for item in _microphone(pcm, rate)]


def _flux(gateway: Any, **options: Any) -> DeepgramFluxSTTService:
    return DeepgramFluxSTTService(api_key="test", url=gateway.url.replace("http://", "ws://") + "/v2/listen",
                                  **options)


def _check_turn(turn: list[Frame], said: str) -> TranscriptionFrame:
    """One turn: interim results after its start, then one final with what was said, then its stop."""
    finals = [f for f in turn if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1, [(type(f).__name__, getattr(f, "text", "")) for f in turn]
    final = finals[0]
    assert final.finalized
    assert similarity(said, final.text) > 0.8, final.text
    assert final.result["type"] == "TurnInfo" and final.result["event"] == "EndOfTurn", final.result
    interims = [f.text for f in turn if isinstance(f, InterimTranscriptionFrame)]
    assert interims and all(interims), interims  # Flux's Updates: the turn so far, never empty in a turn
    return final


def test_flux_turns_with_its_defaults(gateway: Any, two_turns_16k: bytes) -> None:
    """Each turn: a proposed start, interim results, one final with what was said, a proposed stop."""
    stt = _flux(gateway)  # flux-general-en, linear16 at the pipeline's 16 kHz, eot_threshold 0.7 (Flux's)
    frames = asyncio.run(_run([stt], _real_time(two_turns_16k), _two_turns_ended, within=60))
    assert not [f for f in frames if isinstance(f, ErrorFrame)]
    turns = _turns(frames)
    assert [_collapsed(t) for t in turns] == [["start", "interim", "final", "stop"]] * 2, \
        [[(type(f).__name__, getattr(f, "text", "")) for f in t] for t in turns]
    finals = [_check_turn(turn, said) for turn, said in zip(turns, TURNS, strict=True)]
    assert [f.result["turn_index"] for f in finals] == [0, 1]
    assert all(f.result["trigger"] == "model" for f in finals), [f.result for f in finals]  # not the 5 s timeout


def test_flux_eager_end_of_turn(gateway: Any, two_turns_16k: bytes) -> None:
    """With ``enable_eager_end_of_turn`` (pipecat sets ``eager_eot_threshold=0.5``; ``eot_threshold`` stays
    0.7), each turn's final is announced first by an eager transcription holding the same words, after the
    interim results: in Flux's state machine an ``EndOfTurn`` in eager mode follows an ``EagerEndOfTurn``
    (with no ``TurnResumed`` between when the words are the same)."""
    stt = _flux(gateway, enable_eager_end_of_turn=True)
    frames = asyncio.run(_run([stt], _real_time(two_turns_16k), _two_turns_ended, within=60))
    turns = _turns(frames)
    assert len(turns) == 2, [[(type(f).__name__, getattr(f, "text", "")) for f in t] for t in turns]
    for turn, said in zip(turns, TURNS, strict=True):
        final = _check_turn(turn, said)
        labels = _collapsed(turn)
        assert labels[:2] == ["start", "interim"] and labels[-2:] == ["final", "stop"], labels
        assert "eager" in labels, labels
        eager_at = max(i for i, f in enumerate(turn) if isinstance(f, EagerTranscriptionFrame))
        assert not any(isinstance(f, EagerEndOfTurnCancelFrame) for f in turn[eager_at:]), labels
        eager = turn[eager_at]
        assert isinstance(eager, EagerTranscriptionFrame)
        assert eager.text == final.text  # Flux: EndOfTurn holds the words of the eager end it confirms
        assert eager.result["event"] == "EagerEndOfTurn", eager.result
        assert 0.5 <= eager.result["end_of_turn_confidence"] <= final.result["end_of_turn_confidence"]
        assert final.result["end_of_turn_confidence"] >= 0.7, final.result
