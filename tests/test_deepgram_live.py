"""Deepgram's live WebSocket, driven by the newest Deepgram Python SDK against the real engines.

The audio is the gateway's own speech of a multi-sentence text, sent in 100 ms chunks at about real
time, followed by silence, as a microphone would.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from typing import Any

import av
import jiwer
import numpy as np
import pytest
from conftest import Gateway
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from backends.types import TranscriptWord
from compat.deepgram.common import ModelInfo
from compat.deepgram.live import results_message

STORY = ("The morning was cold and bright. A small boat moved across the calm water. "
         "Birds were singing in the tall trees.")
RATE = 24000
CHUNK = RATE // 10  # 100 ms


def _wer(reference: str, hypothesis: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


@pytest.fixture(scope="module")
def speech_pcm(gateway: Gateway) -> bytes:
    """The story as 24 kHz s16le, with 0.5 s of silence before and 2.5 s after."""
    pcm = gateway.openai().audio.speech.create(model="tts-1", voice="alloy", input=STORY, response_format="pcm")
    silence = bytes(2 * RATE // 2)
    return silence + pcm.content + bytes(2 * RATE * 5 // 2)


def _client(gateway: Gateway) -> DeepgramClient:
    ws = gateway.url.replace("http://", "ws://")
    return DeepgramClient(api_key="test", environment=DeepgramClientEnvironment(
        base=gateway.url, production=ws, agent=ws, agent_rest=gateway.url))


def _send_paced(send: Any, audio: bytes, step: int, pace: float) -> None:
    for i in range(0, len(audio), step):
        send(audio[i:i + step])
        time.sleep(pace)


def _collect(conn: Any) -> list[Any]:
    messages = []
    for message in conn:
        messages.append(message)
    return messages


def test_live_stream_with_interims_endpointing_and_utterance_end(gateway: Gateway, speech_pcm: bytes) -> None:
    client = _client(gateway)
    with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=RATE, channels=1,
                                  interim_results="true", endpointing=300, utterance_end_ms=1000,
                                  vad_events="true", smart_format="true") as conn:
        def feed() -> None:
            _send_paced(conn.send_media, speech_pcm, 2 * CHUNK, 0.1)  # real time
            conn.send_close_stream()

        sender = threading.Thread(target=feed)
        sender.start()
        messages = _collect(conn)
        sender.join()

    kinds = [m.type for m in messages]
    assert "SpeechStarted" in kinds
    assert kinds[-1] == "Metadata"
    results = [m for m in messages if m.type == "Results"]
    interims = [r for r in results if not r.is_final]
    finals = [r for r in results if r.is_final]
    assert interims, "interim results arrive while speech goes on"
    assert any(r.speech_final for r in finals), "a pause ends speech with speech_final"
    assert "UtteranceEnd" in kinds
    utterance_end = next(m for m in messages if m.type == "UtteranceEnd")
    words = [w for r in finals for w in r.channel.alternatives[0].words]
    assert utterance_end.last_word_end == pytest.approx(words[-1].end, abs=0.01)
    transcript = " ".join(r.channel.alternatives[0].transcript for r in finals)
    assert _wer(STORY, transcript) < 0.15, transcript
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(w.punctuated_word for w in words)  # smart_format
    for r in results:
        assert r.metadata.model_info.name == "nova-3"
        assert r.channel_index == [0, 1]
    speech_started = next(m for m in messages if m.type == "SpeechStarted")
    assert 0.2 < speech_started.timestamp < 1.5  # the speech starts after 0.5 s of silence
    metadata = messages[-1]
    assert metadata.duration == pytest.approx(len(speech_pcm) / 2 / RATE, abs=0.1)
    info = metadata.model_info[metadata.models[0]]  # the v7 SDK keeps this map's values as dicts
    assert (info["name"] if isinstance(info, dict) else info.name) == "nova-3"


def test_finalize_flushes_and_keepalive_keeps_the_socket(gateway: Gateway, speech_pcm: bytes) -> None:
    speech_only = speech_pcm[: len(speech_pcm) // 3]  # stops in the middle of speech: nothing ends it
    with _client(gateway).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=RATE,
                                            endpointing="false") as conn:
        conn.send_media(speech_only)
        conn.send_keep_alive()
        conn.send_finalize()
        flushed = conn.recv()
        assert flushed.type == "Results"
        assert flushed.is_final and flushed.from_finalize and not flushed.speech_final
        assert flushed.channel.alternatives[0].transcript.lower().startswith("the morning")
        conn.send_close_stream()
        rest = _collect(conn)
    assert rest[-1].type == "Metadata"


def test_containerised_webm_opus_stream(gateway: Gateway, speech_pcm: bytes) -> None:
    samples = np.frombuffer(speech_pcm, dtype="<i2").astype(np.float32) / 32768
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = RATE
        for out in resampler.resample(frame):
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    webm = buffer.getvalue()
    with _client(gateway).listen.v1.connect(model="nova-3") as conn:  # no encoding: a container
        sender = threading.Thread(target=lambda: (_send_paced(conn.send_media, webm, 4000, 0.02),
                                                  conn.send_close_stream()))
        sender.start()
        messages = _collect(conn)
        sender.join()
    finals = [m for m in messages if m.type == "Results" and m.is_final]
    transcript = " ".join(r.channel.alternatives[0].transcript for r in finals)
    assert _wer(STORY, transcript) < 0.15, transcript
    assert messages[-1].type == "Metadata"


def test_subprotocol_auth_is_echoed_and_idle_socket_closes(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/listen?encoding=linear16&sample_rate=16000"
    started = time.monotonic()  # before the server's idle clock starts, so a loaded machine only adds to it
    with connect(url, subprotocols=["token", "secret-key"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=60)  # the close may come late on a loaded machine, never early
        assert time.monotonic() - started > 9  # not closed before the socket had been idle for 10 s
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011
    assert "NET-0001" in caught.value.rcvd.reason


def test_bad_parameters_close_with_a_reason(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/listen?encoding=speex&sample_rate=16000"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=10)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
    assert "speex" in caught.value.rcvd.reason
    url = gateway.url.replace("http://", "ws://") + "/v1/listen?model=no-such-model"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=10)
    assert caught.value.rcvd is not None and "no-such-model" in caught.value.rcvd.reason


def test_unknown_message_gets_an_error_and_the_stream_goes_on(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/listen?encoding=linear16&sample_rate=16000"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "Dance"}))
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "Error"
        ws.send(json.dumps({"type": "CloseStream"}))
        metadata = json.loads(ws.recv(timeout=10))
        assert metadata["type"] == "Metadata"


def test_results_carry_model_info_objects_the_v3_sdk_needs() -> None:
    """Deepgram's Python v3 SDK reads metadata.model_info.{name,version,arch} on every Results."""
    import msgspec

    message = results_message(
        words=[TranscriptWord(word=" Hello,", start=0.1, end=0.4, probability=0.9)], start=0.0, end=1.0,
        is_final=True, speech_final=True, from_finalize=False, punctuate=True, request_id="r",
        model_uuid="u", model_info=ModelInfo(name="nova-3", version="v", arch="faster_whisper"))
    data = json.loads(msgspec.json.encode(message))
    assert data["type"] == "Results"
    assert data["metadata"]["model_info"] == {"name": "nova-3", "version": "v", "arch": "faster_whisper"}
    assert data["metadata"]["request_id"] == "r" and data["metadata"]["model_uuid"] == "u"
    assert data["channel"]["alternatives"][0]["words"][0] == {
        "word": "hello", "start": 0.1, "end": 0.4, "confidence": 0.9, "punctuated_word": "Hello,"}
    assert data["channel"]["alternatives"][0]["transcript"] == "Hello,"
    assert {"channel_index", "duration", "start", "is_final", "speech_final", "from_finalize"} <= set(data)


# Deepgram's documented live Results message (from the SDK's own fixture, as COMPAT.md §2.4 quotes it).
DOCS_RESULTS = json.loads("""{"type":"Results","channel_index":[0,1],"duration":1.73,"start":5.9,
 "is_final":true,"speech_final":true,"from_finalize":false,
 "channel":{"alternatives":[{"transcript":"Ensure domestic tranquility.","confidence":0.9897461,
   "words":[{"word":"ensure","start":6.251818,"end":6.6427274,"confidence":0.9897461,"punctuated_word":"Ensure"}]}]},
 "metadata":{"request_id":"4b21fb93-0ece-46c8-a7c8-05709d2119dc","model_uuid":"1ed36bac-f71c-4f3f-a31f-02fd6525c489",
   "model_info":{"name":"general","version":"2024-01-26.8851","arch":"base"}}}""")


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value and isinstance(value[0], dict | list) else "list"
    return type(value).__name__ if not isinstance(value, int | float) or isinstance(value, bool) else "number"


def test_results_have_the_documented_shape() -> None:
    import msgspec

    ours = json.loads(msgspec.json.encode(results_message(
        words=[TranscriptWord(word=" Ensure", start=6.25, end=6.64, probability=0.99)], start=5.9, end=7.63,
        is_final=True, speech_final=True, from_finalize=False, punctuate=True, request_id="r", model_uuid="u",
        model_info=ModelInfo(name="general", version="v", arch="base"))))
    assert _shape(ours) == _shape(DOCS_RESULTS)


# The query strings pipecat's DeepgramSTTService and LiveKit's deepgram.STT open the socket with by default
# (their connect-option builders), as they send them.
PIPECAT_QUERY = ("detect_entities=false&diarize=false&dictation=false&interim_results=true&numerals=false"
                 "&punctuate=true&smart_format=false&model=nova-3-general&language=en&encoding=linear16"
                 f"&channels=1&multichannel=false&sample_rate={RATE}")
LIVEKIT_QUERY = ("model=nova-3&punctuate=true&smart_format=false&no_delay=true&interim_results=true"
                 f"&encoding=linear16&vad_events=true&sample_rate={RATE}&channels=1&endpointing=25"
                 "&filler_words=true&profanity_filter=false&numerals=false&mip_opt_out=false&language=en-US"
                 "&tag=voice-app")


def _stream_raw(gateway: Gateway, query: str, audio: bytes) -> list[dict[str, Any]]:
    """Audio at ten times real time, then CloseStream; every message until the socket closes."""
    url = gateway.url.replace("http://", "ws://") + "/v1/listen?" + query
    messages: list[dict[str, Any]] = []
    with connect(url, additional_headers={"Authorization": "Token test"}) as ws:
        def feed() -> None:
            _send_paced(ws.send, audio, 2 * CHUNK, 0.01)
            ws.send(json.dumps({"type": "CloseStream"}))

        sender = threading.Thread(target=feed)
        sender.start()
        closed: ConnectionClosed | None = None
        while closed is None:
            try:
                messages.append(json.loads(ws.recv(timeout=60)))
            except ConnectionClosed as e:
                closed = e
        sender.join()
    assert closed.rcvd is not None and closed.rcvd.code == 1000, closed.rcvd
    return messages


@pytest.mark.parametrize("query", [PIPECAT_QUERY, LIVEKIT_QUERY], ids=["pipecat", "livekit"])
def test_framework_default_queries_stream(gateway: Gateway, speech_pcm: bytes, query: str) -> None:
    messages = _stream_raw(gateway, query, speech_pcm)
    assert messages[-1]["type"] == "Metadata"
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    transcript = " ".join(r["channel"]["alternatives"][0]["transcript"] for r in finals)
    assert _wer(STORY, transcript) < 0.15, transcript
    model = "nova-3-general" if "nova-3-general" in query else "nova-3"
    assert all(r["metadata"]["model_info"]["name"] == model for r in finals)
    assert all(w.get("punctuated_word") for r in finals for w in r["channel"]["alternatives"][0]["words"])


DICTATED = "Hello comma how are you question mark I have twenty five apples. This is bullshit."


def test_formatting_flags_are_honoured_live(gateway: Gateway) -> None:
    pcm = gateway.openai().audio.speech.create(model="tts-1", voice="alloy", input=DICTATED, response_format="pcm")
    audio = bytes(RATE) + pcm.content + bytes(2 * RATE * 2)
    with _client(gateway).listen.v1.connect(model="nova-2-general", encoding="linear16", sample_rate=RATE,
                                            punctuate="true", dictation="true", numerals="true",
                                            profanity_filter="true", detect_entities="false",
                                            mip_opt_out="true", tag="voice-app") as conn:
        sender = threading.Thread(target=lambda: (_send_paced(conn.send_media, audio, 2 * CHUNK, 0.01),
                                                  conn.send_close_stream()))
        sender.start()
        messages = _collect(conn)
        sender.join()
    finals = [m for m in messages if m.type == "Results" and m.is_final]
    transcript = " ".join(r.channel.alternatives[0].transcript for r in finals)
    assert transcript.startswith("Hello, how are you?"), transcript
    assert "comma" not in transcript.lower() and "question" not in transcript.lower(), transcript
    assert "25" in transcript and "b*******" in transcript and "bullshit" not in transcript.lower(), transcript
    assert messages[-1].type == "Metadata"


@pytest.mark.parametrize(("query", "param"), [
    ("diarize=true", "diarize"), ("multichannel=true&channels=2", "multichannel"), ("redact=pci", "redact"),
    ("search=boat", "search"), ("replace=boat:ship", "replace"), ("alternatives=3", "alternatives"),
    ("frobnicate=1", "frobnicate"),
])
def test_features_with_real_effect_are_still_refused_live(gateway: Gateway, query: str, param: str) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/listen?encoding=linear16&sample_rate=16000&" + query
    with connect(url) as ws, pytest.raises(ConnectionClosed) as caught:
        ws.recv(timeout=10)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008
    assert f"'{param}'" in caught.value.rcvd.reason, caught.value.rcvd.reason
