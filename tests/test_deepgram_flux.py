"""Deepgram Flux's conversational WebSocket (``/v2/listen``), driven by the Deepgram Python SDK v7 (and raw
``websockets`` where the SDK cannot say something) against the real engines.

The audio is the gateway's own speech: short turns with silence between them, sent in 80 ms chunks at
real time, as a microphone would (Flux's recommended chunk). Most tests share the session's gateway;
the ones that read the registry (models given back, the live transcriber's commits) run the app in
this process (``tests/inprocess.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import jiwer
import numpy as np
import pytest
from conftest import Gateway, base_config
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v2.socket_client import V2SocketClient
from deepgram.listen.v2.types import (
    ListenV2Configure,
    ListenV2ConfigureFailure,
    ListenV2ConfigureSuccess,
    ListenV2ConfigureThresholds,
    ListenV2Connected,
    ListenV2FatalError,
    ListenV2TurnInfo,
    ListenV2TurnInfoWordsItem,
    ListenV2Warning,
)
from inprocess import InProcess, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import gateway.serving.live
from backends.audio_answers import AudioProgress, LiveEvent, LiveTranscript
from backends.types import TranscriptWord
from compat.deepgram.flux import FluxTurns, Thresholds
from compat.deepgram.formatting import Formatting
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.serving.agreement import normal
from gateway.serving.live import EndOfTurn, LiveOptions, LiveTranscription
from gateway.serving.live_transcriber import LiveTranscriber
from gateway.workers import Workers

pytestmark = pytest.mark.timeout(240)

TTS_RATE = 24000
"""The gateway's ``pcm`` speech: 24 kHz s16le mono."""
CHUNK_SECONDS = 0.08
BOOKING = "Can you book me a table for two at seven tonight?"
WHAT_TIME = "What time is it?"
LONG_REQUEST = ("I would like to book a table for four people at the Italian restaurant near the station "
                "tomorrow evening, please.")
STORY = ("The morning was cold and bright, and a small boat moved slowly across the calm water. "
         "Birds were singing in the tall trees. An old fisherman sat on the shore and mended his nets.")
VAD_FRAME = 512 / 16000
"""One frame of the VAD (Silero's 32 ms)."""
FLUX_IDLE_SECONDS = 2.0
"""``server.audio.flux_idle_seconds`` of the in-process gateway."""


# -- audio ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """Headerless s16le mono audio and where each text is spoken in it."""

    pcm: bytes
    rate: int
    texts: tuple[str, ...]
    spans: tuple[tuple[float, float], ...]
    """(start, end) in seconds of each text's speech."""

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.rate


def _silence(seconds: float, rate: int = TTS_RATE) -> bytes:
    return bytes(2 * round(seconds * rate))


def _resample(pcm: bytes, rate: int) -> bytes:
    """24 kHz s16le → ``rate`` s16le (libswresample, as a client's audio stack would)."""
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = TTS_RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    out = [f.to_ndarray() for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out, axis=1).astype("<i2").tobytes()


def _compose(clips: dict[str, bytes], parts: Sequence[str | float], rate: int = TTS_RATE) -> Speech:
    """Speech of ``parts``: a text is its clip, a number that many seconds of silence."""
    pcm = b""
    texts: list[str] = []
    spans: list[tuple[float, float]] = []
    for part in parts:
        if isinstance(part, str):
            start = len(pcm) / 2 / TTS_RATE
            pcm += clips[part]
            texts.append(part)
            spans.append((start, len(pcm) / 2 / TTS_RATE))
        else:
            pcm += _silence(part)
    if rate != TTS_RATE:
        pcm = _resample(pcm, rate)
    return Speech(pcm=pcm, rate=rate, texts=tuple(texts), spans=tuple(spans))


@pytest.fixture(scope="module")
def clips(gateway: Gateway) -> dict[str, bytes]:
    """Each text spoken once by the gateway's TTS (24 kHz s16le)."""
    speech = gateway.openai().audio.speech
    return {text: speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm").content
            for text in (BOOKING, WHAT_TIME, LONG_REQUEST, STORY)}


@pytest.fixture(scope="module")
def conversation(clips: dict[str, bytes]) -> Speech:
    """Two turns, 24 kHz: a request, a pause of 1.5 s, a question, 2 s of silence."""
    return _compose(clips, [0.5, BOOKING, 1.5, WHAT_TIME, 2.0])


@pytest.fixture(scope="module")
def conversation_16k(clips: dict[str, bytes]) -> Speech:
    """The same two turns at 16 kHz, Flux's recommended rate."""
    return _compose(clips, [0.5, BOOKING, 1.5, WHAT_TIME, 2.0], rate=16000)


@pytest.fixture(scope="module")
def question(clips: dict[str, bytes]) -> Speech:
    return _compose(clips, [0.5, WHAT_TIME, 2.0])


@pytest.fixture(scope="module")
def long_request(clips: dict[str, bytes]) -> Speech:
    """One long sentence (over 5 s), then 2 s of silence."""
    return _compose(clips, [0.5, LONG_REQUEST, 2.0])


# -- talking to the gateway ------------------------------------------------------------------------


def _wer(reference: str, hypothesis: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def _client(gateway_url: str, key: str = "test") -> DeepgramClient:
    ws = gateway_url.replace("http://", "ws://")
    return DeepgramClient(api_key=key, environment=DeepgramClientEnvironment(
        base=gateway_url, production=ws, agent=ws, agent_rest=gateway_url))


def _ws_url(gateway_url: str, query: str) -> str:
    return gateway_url.replace("http://", "ws://") + "/v2/listen?" + query


Hook = Callable[[float], None]
"""Called by the feeder before each chunk with the seconds of audio sent so far."""


class Feeder(threading.Thread):
    """Sends ``speech`` in 80 ms chunks at real time from a thread of its own, then ``then()``; an error
    is raised again by :meth:`finish`."""

    def __init__(self, send: Callable[[bytes], None], speech: Speech, *, before: Hook | None = None,
                 then: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True)
        self._send = send
        self._speech = speech
        self._before = before
        self._then = then
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            step = 2 * round(self._speech.rate * CHUNK_SECONDS)
            pcm = self._speech.pcm
            started = time.monotonic()
            for n, at in enumerate(range(0, len(pcm), step)):
                if self._before is not None:
                    self._before(at / 2 / self._speech.rate)
                self._send(pcm[at:at + step])
                time.sleep(max(0.0, started + (n + 1) * CHUNK_SECONDS - time.monotonic()))
        except BaseException as e:
            self.error = e
        finally:
            if self._then is not None:  # end the stream even when a hook failed, so the reader sees its end
                try:
                    self._then()
                except BaseException as e:
                    self.error = self.error or e

    def finish(self) -> None:
        self.join(timeout=60)
        assert not self.is_alive(), "the feeder is stuck"
        if self.error is not None:
            raise self.error


SdkHook = Callable[[V2SocketClient, float], None]
"""Called by the feeder before each chunk with the SDK's socket and the seconds of audio sent so far."""


def _flux(url: str, speech: Speech, *, before: SdkHook | None = None,
          on_message: Callable[[Any], None] | None = None, **params: Any) -> list[Any]:
    """Stream ``speech`` to the gateway at ``url`` with the Deepgram SDK, then ``CloseStream``; every message
    until the socket closes, as the SDK parsed it."""
    messages: list[Any] = []
    with _client(url).listen.v2.connect(model="flux-general-en", encoding="linear16", sample_rate=speech.rate,
                                        **params) as conn:
        hook = None if before is None else (lambda at: before(conn, at))
        feeder = Feeder(conn.send_media, speech, before=hook, then=conn.send_close_stream)
        feeder.start()
        for message in conn:
            messages.append(message)
            if on_message is not None:
                on_message(message)
        feeder.finish()
    return messages


def _raw(url: str, speech: Speech, *, then: Callable[[ClientConnection], None]) -> tuple[list[dict[str, Any]],
                                                                                       ConnectionClosed]:
    """Stream ``speech`` over a plain socket, then ``then(ws)``; every message and the close."""
    messages: list[dict[str, Any]] = []
    with connect(url) as ws:
        feeder = Feeder(ws.send, speech, then=lambda: then(ws))
        feeder.start()
        while True:
            try:
                messages.append(json.loads(ws.recv(timeout=60)))
            except ConnectionClosed as closed:
                feeder.finish()
                return messages, closed


# -- what every stream must be ---------------------------------------------------------------------


def _check_sequence(messages: Sequence[Any]) -> str:
    """``Connected`` first with sequence 0, every message numbered one past the last, one request id."""
    assert messages, "no message at all"
    assert all(m is not None and not isinstance(m, dict | bytes) for m in messages), messages  # the SDK parsed them
    first = messages[0]
    assert isinstance(first, ListenV2Connected), first
    assert first.sequence_id == 0
    uuid.UUID(first.request_id)
    assert [m.sequence_id for m in messages] == list(range(len(messages)))
    assert all(m.request_id == first.request_id for m in messages[1:] if not isinstance(m, ListenV2FatalError))
    return first.request_id


def _infos(messages: Sequence[Any]) -> list[ListenV2TurnInfo]:
    return [m for m in messages if isinstance(m, ListenV2TurnInfo)]


def _events(infos: Sequence[ListenV2TurnInfo], *names: str) -> list[ListenV2TurnInfo]:
    return [m for m in infos if m.event in names]


def _check_words(info: ListenV2TurnInfo) -> None:
    assert info.words and info.transcript, info
    starts = []
    for w in info.words:
        assert isinstance(w, ListenV2TurnInfoWordsItem)
        assert w.word and w.word.strip() == w.word
        assert 0.0 <= w.confidence <= 1.0
        assert w.start is not None and w.end is not None and w.start <= w.end, w
        assert info.audio_window_start <= w.start <= info.audio_window_end, (w, info.audio_window_start,
                                                                              info.audio_window_end)
        assert w.end <= info.audio_window_end + 0.01, (w, info.audio_window_end)
        starts.append(w.start)
    assert starts == sorted(starts), starts
    assert info.transcript == " ".join(w.word for w in info.words)


def _check_turns(infos: Sequence[ListenV2TurnInfo], spoken: Sequence[str], *,
                 eot_threshold: float) -> list[ListenV2TurnInfo]:
    """One turn per text, in Flux's order of events, each ended by the model; the ``EndOfTurn`` of each."""
    ends = _events(infos, "EndOfTurn")
    assert [e.turn_index for e in ends] == list(range(len(spoken))), [(m.event, m.transcript) for m in infos]
    indexes = [m.turn_index for m in infos]
    assert indexes == sorted(indexes), "turn_index only moves on"
    ends_at = [m.audio_window_end for m in infos]
    assert ends_at == sorted(ends_at), "audio_window_end never goes back"
    for m in infos:
        assert m.event in ("Update", "StartOfTurn", "EagerEndOfTurn", "TurnResumed", "EndOfTurn"), m.event
        assert ("trigger" in m.model_fields_set) == (m.event == "EndOfTurn"), m  # present on EndOfTurn only
        assert 0.0 <= m.end_of_turn_confidence <= 1.0
    for index, text in enumerate(spoken):
        turn = [m for m in infos if m.turn_index == index]
        opened = next(k for k, m in enumerate(turn) if m.event != "Update" or m.transcript or m.words)
        assert turn[opened].event == "StartOfTurn", [(m.event, m.transcript) for m in turn]
        assert all(m.transcript == "" and m.words == [] for m in turn[:opened]), "Updates between turns are empty"
        assert len(_events(turn, "StartOfTurn")) == 1
        _check_words(turn[opened])
        end = turn[-1]  # the turn's last message: what follows belongs to the next turn
        assert end.event == "EndOfTurn", [(m.event, m.transcript) for m in turn]
        assert all(m.transcript for m in turn[opened:]), "a turn's messages hold its words so far"
        assert end.trigger == "model", end
        assert end.end_of_turn_confidence >= eot_threshold, end
        assert _wer(text, end.transcript) < 0.25, (text, end.transcript)
        _check_words(end)
        window_starts = {m.audio_window_start for m in turn}
        assert len(window_starts) == 1, window_starts
        if index == 0:
            assert window_starts == {0.0}
        else:
            # The turn starts where the last one ended, up to one VAD frame: the exact equality is
            # test_a_turn_starts_where_the_last_one_ended (a known bug).
            previous_end = ends[index - 1].audio_window_end
            assert previous_end - VAD_FRAME - 0.002 <= turn[0].audio_window_start <= previous_end, (
                turn[0].audio_window_start, previous_end)
    after = [m for m in infos if m.turn_index == len(spoken)]
    assert all(m.event == "Update" and m.transcript == "" and m.words == [] for m in after)
    return ends


def _check_eager(infos: Sequence[ListenV2TurnInfo], *, eager: float, eot: float, every_end: bool) -> None:
    """Flux's states: ``EagerEndOfTurn`` then ``TurnResumed`` or the ``EndOfTurn`` (which holds the eager words
    unless a ``TurnResumed`` came between); with ``every_end``, no ``EndOfTurn`` without an eager one before."""
    for index in sorted({m.turn_index for m in infos}):
        turn = [m for m in infos if m.turn_index == index]
        state = "ongoing"
        last_eager: ListenV2TurnInfo | None = None
        for m in turn:
            if m.event == "EagerEndOfTurn":
                assert state == "ongoing", "two EagerEndOfTurns with no TurnResumed between"
                # Below eot_threshold, unless the words came only after the confidence had passed it: the
                # eager end then comes just before the end, with the confidence it was sent at.
                assert m.end_of_turn_confidence >= eager, m
                assert m.end_of_turn_confidence < eot or turn[turn.index(m) + 1].event == "EndOfTurn", m
                _check_words(m)
                state, last_eager = "awaiting", m
            elif m.event == "TurnResumed":
                assert state == "awaiting", "a TurnResumed with no EagerEndOfTurn before it"
                state = "resumed"
            elif m.event == "EndOfTurn":
                if every_end:
                    assert last_eager is not None, f"turn {index}: an EndOfTurn with no EagerEndOfTurn before it"
                if state == "awaiting":
                    assert last_eager is not None and m.transcript == last_eager.transcript, (last_eager, m)


# -- one stream, every rule ------------------------------------------------------------------------


def test_two_turns_with_the_sdk(gateway: Gateway, conversation_16k: Speech) -> None:
    messages = _flux(gateway.url, conversation_16k, eot_threshold=0.75)
    _check_sequence(messages)
    infos = _infos(messages)
    assert len(infos) == len(messages) - 1, "nothing but Connected and TurnInfo"
    ends = _check_turns(infos, conversation_16k.texts, eot_threshold=0.75)
    assert not _events(infos, "EagerEndOfTurn", "TurnResumed"), "no eager events without eager_eot_threshold"
    # An Update every 250 ms of audio, give or take what a busy engine lets out.
    updates = _events(infos, "Update")
    assert len(updates) >= 0.6 * conversation_16k.duration / 0.25, len(updates)
    assert infos[-1].audio_window_end > conversation_16k.duration - 0.3
    # Each turn ends after its speech, and soon: well before the next one starts.
    for end, (_, spoken_end), next_start in zip(ends, conversation_16k.spans,
                                                [s for s, _ in conversation_16k.spans[1:]] + [99.0], strict=True):
        assert spoken_end < end.audio_window_end < min(spoken_end + 1.2, next_start)


def test_eager_events_keep_flux_order(gateway: Gateway, conversation: Speech) -> None:
    messages = _flux(gateway.url, conversation, eager_eot_threshold=0.4)
    _check_sequence(messages)
    infos = _infos(messages)
    _check_turns(infos, conversation.texts, eot_threshold=0.7)
    _check_eager(infos, eager=0.4, eot=0.7, every_end=False)


def test_a_slow_engine_still_sends_the_eager_end_first(inproc: InProcess, question: Speech,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy machine each pass takes longer; live on two cores most turns already end so (the check
    is in the live test above, with ``every_end`` left off)."""
    transcribe = LiveTranscriber._transcribe

    async def slow(self: LiveTranscriber, audio: Any, start: int, prompt: str | None) -> Any:
        words = await transcribe(self, audio, start, prompt)
        await asyncio.sleep(0.8)
        return words

    monkeypatch.setattr(LiveTranscriber, "_transcribe", slow)
    messages = _flux(inproc.url, question, eager_eot_threshold=0.4)
    infos = _infos(messages)
    assert [e.turn_index for e in _events(infos, "EndOfTurn")] == [0]
    _check_eager(infos, eager=0.4, eot=0.7, every_end=True)


# -- Configure -------------------------------------------------------------------------------------


def test_configure_answers_each_change_and_keeps_the_stream(gateway: Gateway, question: Speech) -> None:
    sent: list[dict[str, Any] | ListenV2Configure] = [
        ListenV2Configure(thresholds=ListenV2ConfigureThresholds(eot_threshold=0.8, eager_eot_threshold=0.5),
                          keyterms=["SYN4PSE", "Flux"]),
        {"type": "Configure", "thresholds": {"eager_eot_threshold": 0.9}},  # above eot_threshold
        {"type": "Configure", "thresholds": {"eot_threshold": 0.3}},  # out of range
        {"type": "Configure", "thresholds": {"eot_timeout_ms": 100}},
        {"type": "Configure", "language_hints": ["en"]},  # flux-general-multi only
        {"type": "Configure", "keyterms": "booking"},  # one term, thresholds left as they are
    ]
    pending = list(sent)

    def before(conn: V2SocketClient, _: float) -> None:  # one Configure before each of the first chunks
        if pending:
            conn.send_configure(pending.pop(0))

    messages = _flux(gateway.url, question, before=before)
    _check_sequence(messages)
    answers = [m for m in messages if isinstance(m, ListenV2ConfigureSuccess | ListenV2ConfigureFailure)]
    assert [type(a).__name__ for a in answers] == [
        "ListenV2ConfigureSuccess", "ListenV2ConfigureFailure", "ListenV2ConfigureFailure",
        "ListenV2ConfigureFailure", "ListenV2ConfigureFailure", "ListenV2ConfigureSuccess"]
    first, too_eager, too_low, too_short, hints, last = answers
    assert isinstance(first, ListenV2ConfigureSuccess) and isinstance(last, ListenV2ConfigureSuccess)
    expected = {"eot_threshold": 0.8, "eager_eot_threshold": 0.5, "eot_timeout_ms": 5000}
    assert first.thresholds.dict() == expected
    assert first.keyterms == ["SYN4PSE", "Flux"]
    for failure, param in ((too_eager, "eager_eot_threshold"), (too_low, "eot_threshold"),
                           (too_short, "eot_timeout_ms")):
        assert isinstance(failure, ListenV2ConfigureFailure)
        assert failure.code == "INVALID_THRESHOLD", failure
        assert failure.description is not None and param in failure.description, failure
    assert isinstance(hints, ListenV2ConfigureFailure) and hints.code == "INVALID_PARAMETER"
    assert last.thresholds.dict() == expected, "a refused Configure changed nothing"
    assert last.keyterms == ["booking"]
    # The stream went on, with the new thresholds: the turn ends at 0.8.
    _check_turns(_infos(messages), question.texts, eot_threshold=0.8)


# -- ForceEndTurn ----------------------------------------------------------------------------------


def test_force_end_turn_ends_the_turn_mid_sentence(gateway: Gateway, long_request: Speech) -> None:
    started = threading.Event()
    all_ended = threading.Event()
    forced_at: list[float] = []
    speech_start, speech_end = long_request.spans[0]

    def on_message(m: Any) -> None:
        if isinstance(m, ListenV2TurnInfo) and m.event == "StartOfTurn":
            started.set()
        if isinstance(m, ListenV2TurnInfo) and m.event == "EndOfTurn" and m.audio_window_end > speech_end:
            all_ended.set()

    def before(conn: V2SocketClient, at: float) -> None:
        if at == 0:  # before any speech: no turn under way
            conn.send_force_end_turn()
        elif not forced_at and started.is_set() and at >= speech_start + 2.0:
            forced_at.append(at)
            conn.send_force_end_turn()
        elif at >= long_request.duration - CHUNK_SECONDS:  # the last chunk: once the sentence's turns are over
            assert all_ended.wait(10), "the rest of the sentence never ended its turn"
            conn.send_force_end_turn()

    messages = _flux(gateway.url, long_request, before=before, on_message=on_message)
    _check_sequence(messages)
    assert forced_at and forced_at[0] < speech_end - 1.5, "ForceEndTurn went while the speaker was speaking"
    warnings = [m for m in messages if isinstance(m, ListenV2Warning)]
    assert [w.code for w in warnings] == ["FORCE_END_TURN_NO_ACTIVE_TURN"] * 2
    infos = _infos(messages)
    assert messages.index(warnings[0]) < messages.index(_events(infos, "StartOfTurn")[0])
    ends = _events(infos, "EndOfTurn")
    # The rest of the sentence is a turn of its own (or more, when a pause in it sounds final).
    assert [e.turn_index for e in ends] == list(range(len(ends))) and len(ends) >= 2, ends
    assert [e.trigger for e in ends] == ["manual"] + ["model"] * (len(ends) - 1), ends
    forced = ends[0]
    assert forced.audio_window_end == pytest.approx(forced_at[0], abs=0.05), "the turn ends where it was forced"
    assert _wer(" ".join(LONG_REQUEST.split()[:4]), " ".join(forced.transcript.split()[:4])) == 0, forced.transcript
    assert all(w.end is not None and w.end <= forced_at[0] + 0.01 for w in forced.words)
    _check_words(forced)
    assert ends[1].audio_window_start == forced.audio_window_end
    assert _wer(LONG_REQUEST, " ".join(e.transcript for e in ends)) < 0.3
    # The last ForceEndTurn, after the turns, ended nothing.
    assert all(m.turn_index == len(ends) for m in infos[infos.index(ends[-1]) + 1:])


# -- the end of a stream ---------------------------------------------------------------------------


def test_close_stream_mid_turn_sends_the_turn_so_far_and_closes(gateway: Gateway, long_request: Speech) -> None:
    half = len(long_request.pcm) // 2 // 2 * 2
    cut = Speech(pcm=long_request.pcm[:half], rate=long_request.rate, texts=(), spans=())  # mid-sentence
    messages, closed = _raw(_ws_url(gateway.url, "model=flux-general-en&encoding=linear16&sample_rate=24000"),
                            cut, then=lambda ws: ws.send(json.dumps({"type": "CloseStream"})))
    assert closed.rcvd is not None and closed.rcvd.code == 1000, closed
    assert messages[0]["type"] == "Connected"
    assert all(m["type"] == "TurnInfo" for m in messages[1:])
    assert "EndOfTurn" not in [m["event"] for m in messages[1:]], "CloseStream does not end the turn"
    last = messages[-1]
    assert last["event"] == "Update" and last["turn_index"] == 0
    heard = " ".join(LONG_REQUEST.split()[:8])  # the cut falls some words after these
    assert _wer(heard, " ".join(last["transcript"].split()[:8])) < 0.2, last["transcript"]


def test_close_stream_reports_all_the_audio_received(gateway: Gateway, question: Speech) -> None:
    # 0.5 s + the question + 2 s of silence; end the stream 0.2 s past a 250 ms Update.
    audio = question.pcm + _silence(0.2 + (-question.duration) % 0.25)
    speech = Speech(pcm=audio, rate=question.rate, texts=question.texts, spans=question.spans)
    messages, closed = _raw(_ws_url(gateway.url, "model=flux-general-en&encoding=linear16&sample_rate=24000"),
                            speech, then=lambda ws: ws.send(json.dumps({"type": "CloseStream"})))
    assert closed.rcvd is not None and closed.rcvd.code == 1000
    assert [m["event"] for m in messages if m["type"] == "TurnInfo"].count("EndOfTurn") == 1
    assert messages[-1]["audio_window_end"] == pytest.approx(speech.duration, abs=0.01)


@pytest.mark.parametrize("text", ['{"type":"Nope"}', "not json", '{"type":"KeepAlive"}', '{"type":"Finalize"}'])
def test_an_unparsable_message_is_a_fatal_error(gateway: Gateway, text: str) -> None:
    with connect(_ws_url(gateway.url, "model=flux-general-en&encoding=linear16&sample_rate=16000")) as ws:
        connected = json.loads(ws.recv(timeout=30))
        assert connected["type"] == "Connected" and connected["sequence_id"] == 0
        ws.send(text)
        error = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=30)
    assert error["type"] == "Error" and error["code"] == "UNPARSABLE_CLIENT_MESSAGE", error
    assert error["sequence_id"] == 1 and error["description"]
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008, caught.value


BASE = "model=flux-general-en&encoding=linear16&sample_rate=16000"


@pytest.mark.parametrize(("query", "named"), [
    ("encoding=linear16&sample_rate=16000", "model"),
    ("model=no-such-model&encoding=linear16&sample_rate=16000", "no-such-model"),
    ("model=flux-general-en&encoding=bogus&sample_rate=16000", "bogus"),
    ("model=flux-general-en&encoding=linear16", "sample_rate"),
    (f"{BASE}&eot_threshold=0.2", "eot_threshold"),
    (f"{BASE}&eot_threshold=0.6&eager_eot_threshold=0.8", "eager_eot_threshold"),
    (f"{BASE}&eager_eot_threshold=0.1", "eager_eot_threshold"),
    (f"{BASE}&eot_timeout_ms=100", "eot_timeout_ms"),
    (f"{BASE}&frobnicate=1", "'frobnicate'"),
    (f"{BASE}&language_hint=en", "language_hint"),
])
def test_bad_query_closes_with_a_reason(gateway: Gateway, query: str, named: str) -> None:
    with connect(_ws_url(gateway.url, query)) as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=30)  # no Connected: the close comes first
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008, caught.value
    assert named in caught.value.rcvd.reason, caught.value.rcvd.reason


def test_eot_threshold_one_leaves_the_end_to_the_client(gateway: Gateway, question: Speech) -> None:
    def before(conn: V2SocketClient, at: float) -> None:
        if at >= question.duration - CHUNK_SECONDS:  # 2 s after the question: the client ends the turn
            conn.send_force_end_turn()

    messages = _flux(gateway.url, question, before=before, eot_threshold=1.0, eot_timeout_ms=60000)
    ends = _events(_infos(messages), "EndOfTurn")
    assert [e.trigger for e in ends] == ["manual"], [(e.trigger, e.end_of_turn_confidence) for e in ends]


def test_eot_timeout_ends_a_turn_the_words_never_end(gateway: Gateway, question: Speech) -> None:
    """With the model's end of turn off (eot_threshold 1), ``eot_timeout_ms`` of silence ends the turn."""
    messages = _flux(gateway.url, question, eot_threshold=1.0, eot_timeout_ms=800)
    ends = _events(_infos(messages), "EndOfTurn")
    assert [e.trigger for e in ends] == ["timeout"], [(e.trigger, e.end_of_turn_confidence) for e in ends]
    assert _wer(WHAT_TIME, ends[0].transcript) < 0.25, ends[0].transcript
    speech_end = question.spans[0][1]
    # 800 ms of silence as the VAD hears it, which may begin a little before the last loud sample.
    assert ends[0].audio_window_end >= speech_end + 0.5, (ends[0].audio_window_end, speech_end)


def test_a_turn_starts_where_the_last_one_ended() -> None:
    """What the live transcriber sends when a tail pass ends the turn between two VAD frames (seen live:
    EndOfTurn audio_window_end 3.519, the next Update's audio_window_start 3.488)."""
    turns = FluxTurns("r", Formatting(), Thresholds())
    words = (TranscriptWord(word=" Hello.", start=0.5, end=0.9, probability=0.9),)
    turns.messages(LiveTranscript(words=words, start=0.0, end=3.2, is_final=False))
    turns.messages(AudioProgress(end=3.519, end_of_turn_confidence=0.96))
    (end,) = [m for m in turns.messages(LiveTranscript(words=words, start=0.0, end=3.488, is_final=True,
                                                       speech_final=True, end_of_turn_confidence=0.96))
              if m.event == "EndOfTurn"]
    (update,) = turns.messages(AudioProgress(end=3.759, end_of_turn_confidence=0.0))
    assert update.audio_window_start == end.audio_window_end


# -- in-process: the registry ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    config = base_config(extra_server=f"  audio:\n    flux_idle_seconds: {FLUX_IDLE_SECONDS}\n")
    with serve(config, tmp_path_factory.mktemp("flux-models")) as served:
        yield served


def _drain(ws: ClientConnection) -> list[dict[str, Any]]:
    """The messages already here."""
    out: list[dict[str, Any]] = []
    while True:
        try:
            out.append(json.loads(ws.recv(timeout=0)))
        except TimeoutError:
            return out


@pytest.mark.parametrize("how", ["close frame", "dropped connection"])
def test_a_client_gone_mid_turn_gives_both_models_back(inproc: InProcess, long_request: Speech, how: str) -> None:
    url = _ws_url(inproc.url, "model=flux-general-en&encoding=linear16&sample_rate=24000")
    step = 2 * round(long_request.rate * CHUNK_SECONDS)
    seen: list[dict[str, Any]] = []
    with connect(url) as ws:
        started = time.monotonic()
        for n, at in enumerate(range(0, len(long_request.pcm), step)):
            ws.send(long_request.pcm[at:at + step])
            seen.extend(_drain(ws))
            if any(m.get("event") == "StartOfTurn" for m in seen) and at / 2 / long_request.rate > 2.0:
                break
            time.sleep(max(0.0, started + (n + 1) * CHUNK_SECONDS - time.monotonic()))
        else:
            pytest.fail("no StartOfTurn while the speaker spoke")
        assert (inproc.active("whisper"), inproc.active("vad")) == (1, 1), "the session holds both models"
        if how == "dropped connection":
            ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just ends
            ws.socket.close()
    assert inproc.settle("whisper") == 0
    assert inproc.settle("vad") == 0


def test_an_idle_socket_is_closed(inproc: InProcess) -> None:
    with connect(_ws_url(inproc.url, BASE)) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "Connected"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=30)
        assert time.monotonic() - started > FLUX_IDLE_SECONDS - 0.2
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011
    assert "NET-0001" in caught.value.rcvd.reason
    assert inproc.settle("whisper") == 0 and inproc.settle("vad") == 0


def test_a_quiet_client_still_gets_the_results_it_is_owed(inproc: InProcess, question: Speech,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle clock is for a client gone quiet with nothing coming its way: on an engine slower than the
    idle limit, the turn's words and its EndOfTurn still come after the last audio, then the idle close."""
    transcribe = LiveTranscriber._transcribe

    async def slow(self: LiveTranscriber, audio: Any, start: int, prompt: str | None) -> Any:
        words = await transcribe(self, audio, start, prompt)
        await asyncio.sleep(FLUX_IDLE_SECONDS * 3)
        return words

    monkeypatch.setattr(LiveTranscriber, "_transcribe", slow)
    url = _ws_url(inproc.url, "model=flux-general-en&encoding=linear16&sample_rate=24000")
    messages, closed = _raw(url, question, then=lambda ws: None)
    ended = [m for m in messages if m.get("event") == "EndOfTurn"]
    assert len(ended) == 1, messages
    said = [normal(w) for w in ended[0]["transcript"].split()]
    assert said == [normal(w) for w in WHAT_TIME.split()], ended[0]
    assert closed.rcvd is not None and closed.rcvd.code == 1011 and "NET-0001" in closed.rcvd.reason


# -- in-process: the live transcriber's commits ----------------------------------------------------


@dataclass(frozen=True)
class Commit:
    window: int
    """The window the words were committed in (the n-th final closes window n)."""
    heard: float
    """Seconds of audio received when they were."""
    words: tuple[TranscriptWord, ...]


@dataclass
class Recorded:
    commits: list[Commit] = field(default_factory=list)
    events: list[LiveEvent] = field(default_factory=list)


def test_finals_hold_exactly_the_words_committed_while_speaking(clips: dict[str, bytes], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    speech = _compose(clips, [0.5, STORY, 2.0])
    assert speech.spans[0][1] - speech.spans[0][0] > 7.5, "a long utterance"
    recorded = Recorded()

    class Recording(LiveTranscriber):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, on_commit=self._record, **kwargs)

        def _record(self, words: tuple[TranscriptWord, ...]) -> None:
            recorded.commits.append(Commit(self._window_id, self.duration, words))

    monkeypatch.setattr(gateway.serving.live, "LiveTranscriber", Recording)
    config = parse_config(base_config(), environ={"SYN4PSE_MODELS_PATH": str(tmp_path)})
    options = LiveOptions(interim_results=True, endpointing_ms=None, language="en", encoding="linear16",
                          sample_rate=speech.rate, end_of_turn=EndOfTurn(), progress_ms=250)

    async def stream() -> None:
        registry = Registry(config)
        work = Workers(2, "test-audio")
        try:
            session = await LiveTranscription(registry, config, work).open("flux-general-en", options)
            try:
                async def collect() -> None:
                    async for event in session:
                        recorded.events.append(event)

                collector = asyncio.create_task(collect())
                step = 2 * round(speech.rate * CHUNK_SECONDS)
                started = time.monotonic()
                for n, at in enumerate(range(0, len(speech.pcm), step)):
                    await session.feed(speech.pcm[at:at + step])
                    await asyncio.sleep(max(0.0, started + (n + 1) * CHUNK_SECONDS - time.monotonic()))
                await session.finish()
                await asyncio.wait_for(collector, 60)
            finally:
                await session.aclose()
        finally:
            await registry.close()

    asyncio.run(stream())

    finals = [e for e in recorded.events if isinstance(e, LiveTranscript) and e.is_final]
    assert finals and recorded.commits
    assert max(c.window for c in recorded.commits) < len(finals)
    for n, final in enumerate(finals):
        committed = [w for c in recorded.commits if c.window == n for w in c.words]
        # The same words at the same times; only their writing (case, punctuation) may have been refined
        # by a later pass that heard them with the words after them.
        def said(words: Sequence[TranscriptWord]) -> list[tuple[str, float, float]]:
            return [(normal(w.word), w.start, w.end) for w in words]

        assert said(final.words[:len(committed)]) == said(committed), (n, committed, final.words)
    speech_end = speech.spans[0][1]
    early = [w for c in recorded.commits if c.heard < speech_end - 1.0 for w in c.words]
    spoken = [w for f in finals for w in f.words]
    assert len(early) >= len(spoken) // 2, (len(early), len(spoken))  # most words settled while speaking
    starts = [w.start for w in spoken]
    assert starts == sorted(starts)
    transcript = "".join(w.word for w in spoken)
    assert _wer(STORY, transcript) < 0.2, transcript
