"""Deepgram's Python SDK v3 (3.11) given only the gateway's address: its live client on /v1/listen with the
options a v3 voice app sets, and its pre-recorded client on the same path."""

from __future__ import annotations

import io
import re
import threading
import time
import wave
from typing import Any

import pytest
from conftest import SPOKEN, similarity
from deepgram import (
    DeepgramClient,
    DeepgramClientOptions,
    LiveOptions,
    LiveResultResponse,
    LiveTranscriptionEvents,
    PrerecordedOptions,
    SpeechStartedResponse,
    UtteranceEndResponse,
)

pytestmark = pytest.mark.timeout(180)


def _client(gateway: Any) -> DeepgramClient:
    return DeepgramClient("test", DeepgramClientOptions(url=gateway.url))  # http://127.0.0.1:PORT


class _Heard:
    """What the live client's handlers were given, in order, from its listening thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = threading.Condition()

    def keep(self, kind: str, value: Any) -> None:
        with self.changed:
            self.events.append((kind, value))
            self.changed.notify_all()

    def of(self, kind: str) -> list[Any]:
        with self.changed:
            return [v for k, v in self.events if k == kind]

    def finals(self) -> list[LiveResultResponse]:
        return [r for r in self.of("result") if r.is_final]

    def transcript(self) -> str:
        return " ".join(t for r in self.finals() if (t := r.channel.alternatives[0].transcript))

    def wait(self, condition: Any, within: float) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, within)


@pytest.fixture(scope="module")
def live(gateway: Any, speech_16k: bytes) -> tuple[_Heard, float]:
    """One live stream of :data:`SPOKEN` with the options a v3 voice app sets, fed in real time until its last
    UtteranceEnd (audio much faster than real time on a busy machine can outrun the gateway's interim
    passes): what the handlers heard, and how long ``finish()`` took."""
    connection = _client(gateway).listen.websocket.v("1")
    heard = _Heard()

    def on_message(_client: Any, result: LiveResultResponse, **_: Any) -> None:
        heard.keep("result", result)

    def on_utterance_end(_client: Any, utterance_end: UtteranceEndResponse, **_: Any) -> None:
        heard.keep("utterance_end", utterance_end)

    def on_speech_started(_client: Any, speech_started: SpeechStartedResponse, **_: Any) -> None:
        heard.keep("speech_started", speech_started)

    def on_other(kind: str) -> Any:
        return lambda _client, *args, **kwargs: heard.keep(kind, (args, kwargs))

    connection.on(LiveTranscriptionEvents.Transcript, on_message)
    connection.on(LiveTranscriptionEvents.UtteranceEnd, on_utterance_end)
    connection.on(LiveTranscriptionEvents.SpeechStarted, on_speech_started)
    for kind, event in (("error", LiveTranscriptionEvents.Error), ("unhandled", LiveTranscriptionEvents.Unhandled),
                        ("warning", LiveTranscriptionEvents.Warning), ("close", LiveTranscriptionEvents.Close)):
        connection.on(event, on_other(kind))

    options = LiveOptions(model="nova-3", encoding="linear16", sample_rate=16000, channels=1, interim_results=True,
                          endpointing=300, utterance_end_ms=1000, vad_events=True, smart_format=True)
    assert connection.start(options) is True
    step = 16000 // 50 * 2
    for i in range(0, len(speech_16k), step):  # 20 ms chunks in real time, as a microphone gives them
        assert connection.send(speech_16k[i:i + step]) is True
        time.sleep(0.02)

    def all_heard() -> bool:
        ends = [i for i, (k, _) in enumerate(heard.events) if k == "utterance_end"]
        finals = [i for i, (k, v) in enumerate(heard.events) if k == "result" and v.is_final]
        return bool(ends and finals and ends[-1] > finals[-1] and similarity(SPOKEN, heard.transcript()) > 0.8)

    heard.wait(all_heard, 60)
    started = time.monotonic()
    assert connection.finish() is True
    finishing = time.monotonic() - started
    assert not connection.is_connected()
    return heard, finishing


def test_live_results_speech_started_and_utterance_end(live: tuple[_Heard, float]) -> None:
    """Interim then final results (one with speech_final), SpeechStarted before the first words, UtteranceEnd
    after the last final word, the words of what was said; then ``finish()`` closes cleanly."""
    heard, finishing = live
    assert finishing < 5, finishing  # CloseStream, the SDK's 0.5 s wait, the close
    assert not heard.of("error") and not heard.of("unhandled") and not heard.of("warning"), heard.events
    results: list[LiveResultResponse] = heard.of("result")
    transcript = heard.transcript()
    assert similarity(SPOKEN, transcript) > 0.8, transcript
    interims = [i for i, r in enumerate(results) if not r.is_final and r.channel.alternatives[0].transcript]
    finals = [i for i, r in enumerate(results) if r.is_final and r.channel.alternatives[0].transcript]
    assert interims and finals and interims[0] < finals[0], [(r.is_final, r.speech_final) for r in results]
    assert any(r.speech_final for r in heard.finals()), [(r.is_final, r.speech_final) for r in results]
    words = [w for r in heard.finals() for w in r.channel.alternatives[0].words]
    assert words and all(w.start < w.end for w in words)
    assert all(r.metadata.request_id and r.metadata.model_info.name for r in results)

    speech_started: list[SpeechStartedResponse] = heard.of("speech_started")
    assert speech_started and speech_started[0].timestamp < words[0].end, (speech_started, words[0])  # the onset
    first_started = next(i for i, (k, _) in enumerate(heard.events) if k == "speech_started")
    first_words = next(i for i, (k, v) in enumerate(heard.events)
                       if k == "result" and v.channel.alternatives[0].transcript)
    assert first_started < first_words
    utterance_end: UtteranceEndResponse = heard.of("utterance_end")[-1]
    assert utterance_end.last_word_end == pytest.approx(words[-1].end, abs=0.05), (utterance_end, words[-1])
    assert heard.events[-1][0] == "close"


def test_live_smart_format_sentence_case(live: tuple[_Heard, float]) -> None:
    """``smart_format=True`` (which punctuates): the final transcript begins with a capital, and so does each
    sentence after a full stop."""
    heard, _ = live
    transcript = heard.transcript()
    sentences = re.split(r"(?<=[.?!])\s+", transcript)
    assert all(s[:1].isupper() for s in sentences), transcript


def test_prerecorded_transcribe_file(gateway: Any, speech_16k: bytes) -> None:
    """``listen.rest.v("1").transcribe_file`` with a WAV buffer: the words of what was said, smart-formatted,
    with the audio's duration and a request id."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(speech_16k)
    response = _client(gateway).listen.rest.v("1").transcribe_file(
        {"buffer": buffer.getvalue()}, PrerecordedOptions(model="nova-3", smart_format=True), timeout=120)
    alternative = response.results.channels[0].alternatives[0]
    assert similarity(SPOKEN, alternative.transcript) > 0.85, alternative.transcript
    assert alternative.transcript[0].isupper() and "." in alternative.transcript  # smart_format
    assert alternative.words and all(w.start < w.end <= response.metadata.duration for w in alternative.words)
    assert response.metadata.duration == pytest.approx(len(speech_16k) / 2 / 16000, abs=0.05)
    assert response.metadata.request_id and response.metadata.channels == 1
