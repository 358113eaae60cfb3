"""A realtime session's ears: live transcription of the input audio, holding its models only when in use.

:class:`Ears` opens a :class:`~gateway.serving.live.LiveSession` when audio arrives and closes it after
``listen_idle_seconds`` without any, so a session whose client sends nothing holds no model. While it
listens it holds the VAD; the speech-to-text model is taken by :class:`TurnLease` when a turn's first
pass needs it and given back once the turn is transcribed (:meth:`TurnLease.turn_over`), so a session
listening to silence holds no speech-to-text slot either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from backends.audio_answers import LiveEvent
from backends.base import TranscriptionBackend
from backends.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment
from gateway.registry import TRANSCRIPTION, VAD, Lease, Registry
from gateway.serving.live import Intake, LiveOptions, LiveSession
from gateway.workers import Workers

__all__ = ["Ears", "TurnLease"]

log = logging.getLogger("syn4pse.realtime")


class TurnLease:
    """A speech-to-text model taken when a pass needs it and given back between turns."""

    def __init__(self, registry: Registry, name: str) -> None:
        self._registry = registry
        self.name = name
        self._lease: Lease[TranscriptionBackend] | None = None
        self._taking: asyncio.Lock = asyncio.Lock()
        self._running = 0
        self._over = False

    @property
    def backend(self) -> TurnLease:
        return self

    @property
    def held(self) -> bool:
        return self._lease is not None

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionInfo | TranscriptSegment]:
        self._running += 1
        try:
            async with self._taking:
                if self._lease is None:
                    self._lease = await self._registry.acquire(self.name, TRANSCRIPTION)
                self._over = False
            async for item in self._lease.backend.transcribe(request):
                yield item
        finally:
            self._running -= 1
            if self._over:
                self._give_back()

    def turn_over(self) -> None:
        """The turn is transcribed: the model goes back once no pass is running."""
        self._over = True
        if not self._running:
            self._give_back()

    def _give_back(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def release(self) -> None:
        self._over = True
        self._give_back()


class Ears:
    """The input audio's live transcription, opened when audio comes and closed when it stops."""

    def __init__(self, registry: Registry, work: Workers, intake: Callable[[], Intake], *, stt: str, vad: str,
                 idle: float,
                 on_event: Callable[[LiveEvent, float], Awaitable[None]],
                 on_failure: Callable[[Exception], Awaitable[None]], in_turn: Callable[[], bool]) -> None:
        self._registry = registry
        self._work = work
        self._intake = intake
        self._stt, self._vad = stt, vad
        self._idle = idle
        self._on_event = on_event
        self._on_failure = on_failure
        self._in_turn = in_turn
        self._session: LiveSession | None = None
        self._turns: TurnLease | None = None
        self._reader: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._offset = 0.0
        """Seconds of audio heard before the open session began."""
        self._heard = 0.0
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self._session is not None

    async def feed(self, data: bytes, seconds: float, options: LiveOptions) -> None:
        if self._session is None:
            await self._open(options)
        assert self._session is not None
        self._heard += seconds
        self._restart_timer()
        await self._session.feed(data)

    async def end_turn(self) -> None:
        """End the speaker's turn now (a commit while listening)."""
        if self._session is not None:
            await self._session.end_turn()

    def turn_over(self) -> None:
        if self._turns is not None:
            self._turns.turn_over()

    async def _open(self, options: LiveOptions) -> None:
        turns = TurnLease(self._registry, self._stt)
        vad = await self._registry.acquire(self._vad, VAD)
        try:
            self._session = LiveSession(turns, vad, options, engine="", work=self._work,
                                        intake=self._intake())
        except BaseException:
            vad.release()
            raise
        self._turns = turns
        self._offset = self._heard
        self._reader = asyncio.create_task(self._read(self._session, self._offset))

    async def _read(self, session: LiveSession, offset: float) -> None:
        try:
            async for event in session:
                await self._on_event(event, offset)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._on_failure(e)

    def _restart_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._idle, self._close_idle)

    def _close_idle(self) -> None:
        if self._in_turn():  # audio sent ahead of real time is still being heard
            self._restart_timer()
            return
        log.debug("no audio for %.1fs: the speech models are given back", self._idle)
        task = asyncio.create_task(self.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop listening and give the models back (what was not yet a result is dropped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session, reader = self._session, self._reader
        self._session = self._reader = self._turns = None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if session is not None:
            await session.aclose()
