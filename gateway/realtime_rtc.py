"""The Realtime API over WebRTC (``POST /v1/realtime/calls``): a realtime session on a peer connection.

The client's microphone arrives as an Opus track (decoded by aiortc, resampled here to the session's
24 kHz pcm); the answer goes back on the server's own audio track, paced at real time, 20 ms a frame,
silence between answers. Events travel on the ``oai-events`` data channel the client opens, as JSON
text, with the WebSocket's events except the audio deltas (the audio is on the track); the server says
when its audio starts and stops playing (``output_audio_buffer.started`` / ``.stopped``). Since the
server plays the audio, it knows what was heard: speech during playback (or ``output_audio_buffer.clear``)
stops it at once and truncates the item to what played.

A WebSocket may join a call (``/v1/realtime?call_id=…``): it gets the call's events and its events act
on the call's session, so a server can run tools or change instructions beside the browser. A call ends
when the peer connection closes or fails, on ``/hangup``, or when the server stops; its session gives its
models back then.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import fractions
import logging
import time
from typing import Any

import av
import msgspec
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from backends.errors import DomainError
from compat.errors import GatewayError, InvalidRequest, NotFound
from compat.openai.realtime import new_id, parse_client_event
from compat.openai.realtime_items import event
from gateway.serving.realtime import RealtimeSession
from gateway.serving.realtime_reply import error_for

__all__ = ["Call", "Calls"]

log = logging.getLogger("syn4pse.realtime")

RATE = 24000
FRAME = RATE // 50
"""Samples in one 20 ms frame."""
_encoder = msgspec.json.Encoder()


class OutputTrack(MediaStreamTrack):
    """The server's voice: queued pcm played at real time, silence when there is none."""

    kind = "audio"

    def __init__(self, on_started: Any, on_stopped: Any) -> None:
        super().__init__()
        self._queue: collections.deque[tuple[str, str, bytes]] = collections.deque()
        """(response id, item id, one frame of pcm)."""
        self._start: float | None = None
        self._sent = 0
        self._playing: tuple[str, str] | None = None
        self._played_ms: dict[str, int] = {}
        self._on_started = on_started
        self._on_stopped = on_stopped

    def play(self, response_id: str, item_id: str, pcm: bytes) -> None:
        step = 2 * FRAME
        for i in range(0, len(pcm), step):
            frame = pcm[i:i + step]
            self._queue.append((response_id, item_id, frame + bytes(step - len(frame))))

    def clear(self) -> tuple[str, str, int] | None:
        playing = self._playing
        self._queue.clear()
        if playing is None:
            return None
        self._playing = None
        return playing[0], playing[1], self._played_ms.get(playing[1], 0)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent / RATE - time.monotonic()))
        if self._queue:
            response_id, item_id, pcm = self._queue.popleft()
            if self._playing != (response_id, item_id):
                if self._playing is None or self._playing[0] != response_id:
                    self._on_started(response_id)
                self._playing = (response_id, item_id)
            self._played_ms[item_id] = self._played_ms.get(item_id, 0) + 20
            if not self._queue:
                self._on_stopped(response_id)
                self._playing = None
        else:
            pcm = bytes(2 * FRAME)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm)
        frame.pts = self._sent
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += FRAME
        return frame


class Call:
    """One WebRTC call: the peer connection, its tracks and data channel, and the session behind them."""

    def __init__(self, session: RealtimeSession, on_end: Any) -> None:
        self.id = new_id("rtc")
        self.session = session
        self._pc = RTCPeerConnection()
        self._on_end = on_end
        self._track = OutputTrack(self._started, self._stopped)
        self._channel: Any = None
        self._opened = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended = False
        self._listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        session.playback = self._track

    def listen(self) -> asyncio.Queue[dict[str, Any] | None]:
        """The call's events for a WebSocket that joined it (``?call_id=``): a server's sideband control
        (tools, instructions) beside the browser's data channel. None when the call has ended."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._listeners.discard(queue)

    async def answer(self, offer: str) -> str:
        """The SDP answer to ``offer`` (its ICE candidates gathered)."""
        pc = self._pc
        pc.addTrack(self._track)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_channel)
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
            raise InvalidRequest(f"The SDP offer could not be answered: {str(e)[:200]}", param="sdp",
                                 code="invalid_offer") from None
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise InvalidRequest("The SDP offer has no audio.", param="sdp", code="invalid_offer")
        self._spawn(self._pump())
        return str(pc.localDescription.sdp)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- in -----------------------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._hear(track))

    async def _hear(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                pcm = b"".join(bytes(out.planes[0])[:2 * out.samples] for out in resampler.resample(frame))
                if pcm:
                    try:
                        await self.session.feed_audio(pcm)
                    except (GatewayError, DomainError) as e:
                        self.session.emit(error_for(e, "hear the call"))

    def _on_channel(self, channel: Any) -> None:
        if channel.label != "oai-events" and self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._opened.set()
        channel.on("open", self._opened.set)

    def _on_message(self, message: str | bytes) -> None:
        self._spawn(self._handle(message))

    async def _handle(self, message: str | bytes) -> None:
        event_id = None
        try:
            client_event, event_id = parse_client_event(message)
            await self.session.handle(client_event)
        except (GatewayError, DomainError) as e:
            self.session.emit(error_for(e, "answer the event", getattr(e, "event_id", event_id)))

    # -- out ----------------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """The session's events: audio to the track, the rest to the data channel once it is open."""
        outbox = self.session.outbox
        while True:
            payload = await outbox.get()
            if payload["type"] == "response.output_audio.delta":
                self._track.play(payload["response_id"], payload["item_id"], base64.b64decode(payload["delta"]))
                continue
            for listener in self._listeners:
                listener.put_nowait(payload)
            await self._opened.wait()
            if self._channel.readyState != "open":
                return
            self._channel.send(_encoder.encode(payload).decode())

    def _started(self, response_id: str) -> None:
        self.session.emit(event("output_audio_buffer.started", response_id=response_id))

    def _stopped(self, response_id: str) -> None:
        self.session.emit(event("output_audio_buffer.stopped", response_id=response_id))

    # -- the end ------------------------------------------------------------------------------------------

    async def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            await self.end()

    async def end(self) -> None:
        """Hang up: the session stops and gives its models back (once)."""
        if self._ended:
            return
        self._ended = True
        self._on_end(self)
        for listener in self._listeners:
            listener.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        await self.session.aclose()
        await self._pc.close()


class Calls:
    """The calls under way, by id."""

    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}

    async def open(self, session: RealtimeSession, offer: str) -> tuple[Call, str]:
        call = Call(session, lambda c: self._calls.pop(c.id, None))
        try:
            answer = await call.answer(offer)
        except BaseException:
            await call.end()
            raise
        self._calls[call.id] = call
        return call, answer

    def get(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise NotFound(f"No call with id '{call_id[:64]}' is under way.", param="call_id")
        return call

    async def hang_up(self, call_id: str) -> None:
        await self.get(call_id).end()

    async def close(self) -> None:
        for call in list(self._calls.values()):
            await call.end()
