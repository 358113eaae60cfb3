"""The Realtime API over WebRTC (``POST /v1/realtime/calls``) with an aiortc peer, and its client secrets.

The peer is what a browser is: its microphone an audio track that plays the gateway's own speech at real
time (then silence), its events on the ``oai-events`` data channel, the answer heard on the track it is
sent. Client secrets are tested on a gateway that asks for a key.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Iterator
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from conftest import Gateway, base_config
from openai import AsyncOpenAI
from test_realtime import QUESTION, RATE, _wer, speak
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.timeout(180)

VAD = {"type": "server_vad", "silence_duration_ms": 200}


class Microphone(MediaStreamTrack):
    """Speech at real time, 20 ms a frame, then silence; :meth:`say` queues more."""

    kind = "audio"

    def __init__(self, pcm: bytes) -> None:
        super().__init__()
        self._pcm = pcm
        self._sent = 0
        self._start: float | None = None

    def say(self, pcm: bytes) -> None:
        self._pcm = self._pcm[:2 * self._sent].ljust(2 * self._sent, b"\0") + pcm

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent / RATE - time.monotonic()))
        n = RATE // 50
        chunk = self._pcm[2 * self._sent:2 * (self._sent + n)]
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(chunk + bytes(2 * n - len(chunk)))
        frame.pts, frame.sample_rate, frame.time_base = self._sent, RATE, fractions.Fraction(1, RATE)
        self._sent += n
        return frame


class Peer:
    """A browser's side of a call: the microphone, the data channel's events, the audio heard."""

    def __init__(self, pcm: bytes) -> None:
        self.pc = RTCPeerConnection()
        self.mic = Microphone(pcm)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.heard: list[tuple[float, float]] = []
        """(arrival, loudness) of each frame of the server's audio."""
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", lambda m: self.events.append((time.monotonic(), json.loads(m))))
        self.pc.on("track", self._on_track)
        self.pc.addTrack(self.mic)
        self._readers: list[asyncio.Task[None]] = []

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def read() -> None:
            try:
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.AudioFrame)
                    self.heard.append((time.monotonic(), float(np.abs(frame.to_ndarray()).mean())))
            except MediaStreamError:
                pass
        self._readers.append(asyncio.ensure_future(read()))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answered(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def send(self, payload: dict[str, Any]) -> None:
        self.channel.send(json.dumps(payload))

    async def until(self, kind: str, after: int = 0, within: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for _, e in self.events[after:]:
                if e["type"] == kind:
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} in {within:g} s; the events: {self.kinds()}")

    def kinds(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    async def close(self) -> None:
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()


def test_a_call_hears_answers_and_speaks_on_its_tracks(gateway: Gateway) -> None:
    pcm = bytes(2 * RATE) + speak(gateway, QUESTION)

    async def run() -> Peer:
        peer = Peer(pcm)
        client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        answer = await client.realtime.calls.create(sdp=await peer.offer(), session={  # the multipart form
            "type": "realtime", "model": "gpt-realtime", "max_output_tokens": 30,
            "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": VAD}}})
        await peer.answered(answer.content.decode())
        await peer.until("response.done")
        await peer.until("output_audio_buffer.stopped", within=30)
        await peer.close()
        return peer

    peer = asyncio.run(run())
    kinds = peer.kinds()
    assert kinds[0] == "session.created"
    created = peer.events[0][1]["session"]
    assert created["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200  # the call's session
    heard = next(e for _, e in peer.events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert _wer(QUESTION, heard["transcript"]) <= 0.2
    assert "response.output_audio.delta" not in kinds  # the audio is on the track
    assert kinds.index("output_audio_buffer.started") < kinds.index("output_audio_buffer.stopped")
    done = next(e for _, e in peer.events if e["type"] == "response.done")["response"]
    assert done["status"] in ("completed", "incomplete") and done["output"][0]["content"][0]["transcript"]
    started = next(at for at, e in peer.events if e["type"] == "output_audio_buffer.started")
    loud = [at for at, level in peer.heard if level > 300 and at >= started - 0.5]
    assert len(loud) * 0.02 > 0.5  # over half a second of the answer, heard on the track


def test_speech_during_playback_stops_it_and_truncates_to_what_played(gateway: Gateway) -> None:
    interruption = speak(gateway, "Tell me about Spain instead.")

    async def run() -> Peer:
        peer = Peer(b"")
        http = httpx.AsyncClient(base_url=gateway.url, timeout=30)
        resp = await http.post("/v1/realtime/calls?model=gpt-realtime", content=await peer.offer(),
                               headers={"content-type": "application/sdp"})
        assert resp.status_code == 201 and resp.headers["content-type"].startswith("application/sdp")
        assert resp.headers["location"].startswith("/v1/realtime/calls/rtc_")
        await peer.answered(resp.text)
        await peer.until("session.created")
        peer.send({"type": "session.update", "session": {
            "type": "realtime", "max_output_tokens": 300, "instructions": "Tell a very long story.", "temperature": 0,
            "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": VAD}}}})
        peer.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me a long story about a dragon."}]}})
        peer.send({"type": "response.create"})
        await peer.until("output_audio_buffer.started", within=60)
        await asyncio.sleep(0.5)  # the answer plays a while
        peer.mic.say(interruption)
        await peer.until("output_audio_buffer.cleared", within=30)
        await peer.until("input_audio_buffer.committed", after=len(peer.events) - 1, within=30)
        hang_up = await http.post(f"{resp.headers['location']}/hangup")
        assert hang_up.status_code == 200
        again = await http.post(f"{resp.headers['location']}/hangup")
        assert again.status_code == 404 and again.json()["error"]["type"] == "invalid_request_error"
        await peer.close()
        await http.aclose()
        return peer

    peer = asyncio.run(run())
    truncated = next(e for _, e in peer.events if e["type"] == "conversation.item.truncated")
    assert 400 <= truncated["audio_end_ms"] <= 3000  # about what played before the speech was heard
    first_item = next(e["item"]["id"] for _, e in peer.events if e["type"] == "response.output_item.added")
    assert truncated["item_id"] == first_item
    kinds = peer.kinds()
    assert kinds.index("input_audio_buffer.speech_started", kinds.index("output_audio_buffer.started")) < \
        kinds.index("output_audio_buffer.cleared")


def _until_closed(ws: ClientConnection) -> list[str]:
    """The event types a socket gets until it is closed (a timeout fails the test)."""
    kinds = []
    try:
        while True:
            kinds.append(json.loads(ws.recv(timeout=30))["type"])
    except ConnectionClosed:
        return kinds


def test_a_websocket_joins_a_call_by_its_id(gateway: Gateway) -> None:
    """A server's sideband control beside the browser: the call's events, and events for its session."""
    async def run() -> tuple[Peer, list[str]]:
        peer = Peer(b"")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            made = await http.post("/v1/realtime/calls", content=await peer.offer(),
                                   headers={"content-type": "application/sdp"})
            await peer.answered(made.text)
            await peer.until("session.created")
            call_id = made.headers["location"].rsplit("/", 1)[1]
            url = gateway.url.replace("http://", "ws://") + f"/v1/realtime?call_id={call_id}"
            with connect(url) as ws:
                ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                          "instructions": "From the side."}}))
                seen = [json.loads(ws.recv(timeout=30))["type"]]
                await peer.until("session.updated")
                assert (await http.post(f"/v1/realtime/calls/{call_id}/hangup")).status_code == 200
                seen += _until_closed(ws)
        await peer.close()
        return peer, seen

    peer, seen = asyncio.run(run())
    assert seen[0] == "session.updated"
    assert next(e for _, e in peer.events if e["type"] == "session.updated")["session"]["instructions"] == \
        "From the side."
    url = gateway.url.replace("http://", "ws://") + "/v1/realtime?call_id=rtc_gone"
    with connect(url) as ws:
        assert json.loads(ws.recv())["error"]["param"] == "call_id"


def test_a_bad_offer_is_a_400(gateway: Gateway) -> None:
    resp = httpx.post(f"{gateway.url}/v1/realtime/calls", content=b"hello", headers={"content-type": "application/sdp"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "sdp"
    resp = httpx.post(f"{gateway.url}/v1/realtime/calls", content=b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
                      headers={"content-type": "application/sdp"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_offer"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("keyed"), base_config("  api_keys: [sk-real]\n")).start()
    yield gw
    gw.stop()


def test_a_client_secret_opens_realtime_sessions_with_its_settings_and_nothing_else(keyed: Gateway) -> None:
    made = httpx.post(f"{keyed.url}/v1/realtime/client_secrets", headers={"authorization": "Bearer sk-real"},
                      json={"expires_after": {"anchor": "created_at", "seconds": 600}, "session": {
                          "type": "realtime", "model": "gpt-realtime", "instructions": "From the secret."}})
    assert made.status_code == 200, made.text
    body = made.json()
    secret = body["value"]
    assert secret.startswith("ek_") and body["expires_at"] > time.time() + 500
    assert body["session"]["instructions"] == "From the secret." and body["session"]["type"] == "realtime"
    url = keyed.url.replace("http://", "ws://") + "/v1/realtime"
    with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as ws:  # type: ignore[list-item]
        session = json.loads(ws.recv())["session"]
    assert session["instructions"] == "From the secret." and session["model"] == "gpt-realtime"
    assert httpx.get(f"{keyed.url}/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=["realtime", "openai-insecure-api-key.ek_made_up"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 401
    bad = httpx.post(f"{keyed.url}/v1/realtime/client_secrets", headers={"authorization": "Bearer sk-real"},
                     json={"expires_after": {"seconds": 5}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expires_after.seconds"
    wrong = httpx.post(f"{keyed.url}/v1/realtime/client_secrets", headers={"authorization": "Bearer sk-real"},
                       json={"session": {"type": "realtime", "audio": {"output": {"speed": 9}}}})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "session.audio.output.speed"
    assert httpx.post(f"{keyed.url}/v1/realtime/client_secrets", json={}).status_code == 401
