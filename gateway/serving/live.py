"""Live transcription: a session that takes audio bytes as they arrive and gives events as they happen.

A session holds two models for its whole life, the speech-to-text model and a VAD (the STT model's
own, or the first one configured), and owns both leases: :meth:`LiveSession.aclose` releases them
whoever calls it and however the stream ended (hand the session to ``gateway.ownership.own``). Audio
comes headerless in a named encoding, decoded as each whole frame arrives, or in a container demuxed
on a thread as its bytes come (:mod:`backends.audio_stream`). Iterating the session gives its events;
an unreadable stream (``BadAudio``) or a failed engine ends them with that error.

What one client may cost is bounded: sessions are counted apart from the models' turns
(``server.audio.max_live_sessions``), decoding and VAD scoring run on the audio threads
(:class:`~gateway.workers.Workers`), and :class:`Intake` holds the audio to a burst ahead of real time
and a few × real time beyond it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from backends.audio import frame_bytes
from backends.audio_answers import LiveEvent
from backends.audio_stream import OUT_RATE, ContainerStreamDecoder, RawStreamDecoder, StreamDecoder
from backends.base import VadBackend
from backends.errors import BadAudio
from backends.types import ModelType
from gateway.config import AudioLimits, Config
from gateway.errors import InvalidRequest
from gateway.registry import TRANSCRIPTION, VAD, Lease, Registry
from gateway.serving.live_transcriber import LiveOptions, LiveTranscriber, Transcribes
from gateway.serving.owned import HeldSockets
from gateway.serving.turns import EndOfTurn
from gateway.workers import Workers

__all__ = ["EndOfTurn", "HeldTranscriber", "Intake", "LiveOptions", "LiveSession", "LiveTranscription"]

Samples = npt.NDArray[np.float32]
_END = object()


class Intake:
    """How far ahead of real time a live client's audio may run: a bucket of ``burst`` seconds of audio,
    refilled at ``rate`` × real time. Taken from the event loop and from a demuxer thread alike."""

    def __init__(self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, seconds: float) -> float:
        """Count ``seconds`` of audio in; how long the client should wait before sending more."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - seconds
            self._at = now
            return max(0.0, -self._tokens / self.rate)

    def due(self) -> float:
        """How long until the audio taken so far is due."""
        return self.take(0.0)

    def too_fast(self) -> str:
        return (f"audio is arriving faster than {self.rate:g}× real time, more than {self.burst:g} seconds"
                f" ahead")


class LiveTranscription:
    def __init__(self, registry: Registry, config: Config, work: Workers) -> None:
        self._registry = registry
        self._config = config
        self._work = work
        self._sessions = HeldSockets(config.server.audio.max_live_sessions, "live transcription sockets")

    async def open(self, model: str, options: LiveOptions) -> LiveSession:
        """A session on ``model`` and its VAD, both loaded; a 429 when ``max_live_sessions`` are open."""
        self._sessions.take()
        try:
            return await self._open_session(model, options, self._config.server.audio)
        except BaseException:
            self._sessions.give_back()
            raise

    async def _open_session(self, model: str, options: LiveOptions, limits: AudioLimits) -> LiveSession:
        stt = await self._registry.acquire(model, TRANSCRIPTION)
        try:
            vad = await self._registry.acquire(self._vad_for(stt.name), VAD)
        except BaseException:
            stt.release()
            raise
        try:
            return LiveSession(stt, vad, options, engine=self._config.models[stt.name].backend, work=self._work,
                               intake=Intake(limits.live_burst_seconds, limits.live_rate),
                               on_close=self._sessions.give_back)
        except BaseException:
            stt.release()
            vad.release()
            raise

    def _vad_for(self, stt: str) -> str:
        own = self._registry.model_config(stt).vad
        if own is not None:
            return own
        for name, model in self._config.models.items():
            if model.type == ModelType.VAD:
                return name
        raise InvalidRequest("Live transcription needs a vad model in syn4pse.yaml.", param="model")


class HeldTranscriber(Protocol):
    """The speech-to-text model a session transcribes with: a lease, or one taken for each turn."""

    @property
    def name(self) -> str: ...

    @property
    def backend(self) -> Transcribes: ...

    def release(self) -> None: ...


class LiveSession:
    """One live stream: :meth:`feed` audio, iterate the events, :meth:`finish` or :meth:`aclose`."""

    def __init__(self, stt: HeldTranscriber, vad: Lease[VadBackend], options: LiveOptions, *,
                 engine: str, work: Workers, intake: Intake, on_close: Callable[[], None] = lambda: None) -> None:
        self.model = stt.name
        """The model transcribing (its configured name)."""
        self.engine = engine
        """The backend it runs on."""
        self._leases: tuple[HeldTranscriber | Lease[VadBackend], ...] = (stt, vad)
        self._work = work
        self._intake = intake
        self._on_close = on_close
        self._raw_frame = (frame_bytes(options.encoding, options.channels) * options.sample_rate
                           if options.encoding is not None else 0)
        """Bytes in one second of headerless audio (0: a container)."""
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False
        self._decoder_open = True
        self._pump: asyncio.Queue[Samples | BadAudio | None] | None = None
        self._decoder: StreamDecoder
        if options.encoding is not None:
            self._decoder = RawStreamDecoder(options.encoding, options.sample_rate, options.channels)
        else:
            loop = asyncio.get_running_loop()
            pump: asyncio.Queue[Samples | BadAudio | None] = asyncio.Queue()

            def handoff(item: Samples | BadAudio) -> None:
                loop.call_soon_threadsafe(pump.put_nowait, item)

            def decoded(samples: Samples) -> None:  # on the demuxer's thread: a bomb stops it here
                if intake.take(len(samples) / OUT_RATE) > intake.burst / intake.rate:
                    raise BadAudio(f"The stream decodes to more audio than it may: {intake.too_fast()}.")
                handoff(samples)

            self._pump = pump
            self._decoder = ContainerStreamDecoder(decoded, handoff)
        self._transcriber = LiveTranscriber(stt.backend, vad.backend, options, self._events.put_nowait,
                                            self._events.put_nowait, work=work.run)
        self._forwarder = asyncio.create_task(self._forward()) if self._pump is not None else None

    @property
    def duration(self) -> float:
        """Seconds of audio received."""
        return self._transcriber.duration

    @property
    def owes_results(self) -> bool:
        """Audio heard whose results are still being made. (Results made but unsent do not count: a client
        that stops reading is not kept open by them.)"""
        return self._transcriber.owes_results

    async def feed(self, data: bytes) -> None:
        """More of the stream's bytes; returns once they are due (a client far ahead of real time waits).

        Headerless audio is counted before it is decoded, a container's as its demuxer decodes it. One
        message holding more than the burst is refused (``InvalidRequest``).
        """
        if self._raw_frame:
            seconds = len(data) / self._raw_frame
            if seconds > self._intake.burst:
                raise InvalidRequest(f"One message holds {seconds:.0f} seconds of audio: {self._intake.too_fast()}.")
            await asyncio.sleep(self._intake.take(seconds))
            samples = await self._work.run(self._decoder.feed, data)
            await self._transcriber.add_audio(samples)
        else:
            await asyncio.sleep(self._intake.due())
            self._decoder.feed(data)

    async def finalize(self) -> None:
        """Finalise what has been heard so far."""
        await self._transcriber.finalize()

    async def end_turn(self) -> None:
        """End the speaker's turn now: a final with ``speech_final``."""
        await self._transcriber.end_turn()

    def configure(self, *, end_of_turn: EndOfTurn | None = None, prompt: str | None = None) -> None:
        """New end-of-turn thresholds, or words to listen for (an empty prompt: none)."""
        self._transcriber.configure(end_of_turn=end_of_turn, prompt=prompt)

    async def finish(self) -> None:
        """The stream is over: decode its last bytes, finalise, and end the events once every result is out."""
        tail = await self._close_decoder()
        if self._forwarder is not None and self._pump is not None:
            self._pump.put_nowait(None)
            await asyncio.wait({self._forwarder})
        await self._transcriber.add_audio(tail)
        await self._transcriber.close()
        self._events.put_nowait(_END)

    def __aiter__(self) -> LiveSession:
        return self

    async def __anext__(self) -> LiveEvent:
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)  # ended for good
            raise StopAsyncIteration
        if isinstance(item, Exception):
            self._events.put_nowait(_END)
            raise item
        event: LiveEvent = item
        return event

    async def aclose(self) -> None:
        """Stop the work and give both models back (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._transcriber.aclose()
            if self._forwarder is not None:
                self._forwarder.cancel()
            await self._close_decoder()
        finally:
            for lease in self._leases:
                lease.release()
            self._on_close()

    async def _close_decoder(self) -> Samples:
        if not self._decoder_open:
            return np.zeros(0, dtype=np.float32)
        self._decoder_open = False
        if self._raw_frame:
            return await self._work.run(self._decoder.close)
        return await asyncio.to_thread(self._decoder.close)  # a wait for the demuxer thread, not work

    async def _forward(self) -> None:
        """Samples decoded on the demuxer thread → the transcriber; a decoding failure ends the events."""
        assert self._pump is not None
        while (item := await self._pump.get()) is not None:
            if isinstance(item, BadAudio):
                self._events.put_nowait(item)
                return
            await self._transcriber.add_audio(item)
