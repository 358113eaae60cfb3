"""Live transcription's window: audio in as it arrives, results out as speech is found and understood.

The open window (the audio since the last final result) grows as audio arrives. A VAD scores each
32 ms frame: speech onset can be reported at once (``SpeechStarted``); a pause of ``endpointing`` ms
closes the window as a final result with ``speech_final``; a window that grows too long is finalised
without it. While speech goes on, the window is re-transcribed about once a second as an interim
result. Finals are transcribed once and never change. ``UtteranceEnd`` follows the last final word
when no new word comes for ``utterance_end_ms``. Speech starts and ends with the hysteresis the VAD
applies to its own clips (``VadBackend.thresholds``).

Transcriptions run one at a time on a worker task, in order, so receiving audio never waits on them
until :data:`MAX_JOBS` windows are waiting: then the audio waits, and so does the client. The VAD
scores on the audio threads (``work``), never on the event loop. Events go to ``emit`` as they happen;
a failure of the engine goes to ``fail``, and ends the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from backends.audio_answers import LiveEvent, LiveTranscript, SpeechStarted, UtteranceEnd
from backends.base import TranscriptionBackend, VadBackend
from backends.types import TranscriptionRequest, TranscriptSegment, TranscriptWord

__all__ = ["RATE", "LiveOptions", "LiveTranscriber"]

log = logging.getLogger("syn4pse.live")

RATE = 16000
PRE_ROLL = int(0.3 * RATE)
"""Audio kept before speech onset, so the first word is not clipped."""
MAX_WINDOW = 20 * RATE
"""A window this long is finalised even without a pause."""
INTERIM_EVERY = 1 * RATE
"""New audio between two interim results."""
MAX_JOBS = 4
"""Windows waiting to be transcribed before more audio waits for them (each holds up to 20 s)."""

Work = Callable[..., Awaitable[Any]]
"""Runs a blocking call off the event loop: ``await work(fn, *args)``."""


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What a live stream asks for: which results, when speech ends, and what the audio is."""

    interim_results: bool = False
    endpointing_ms: int | None = 200
    """Silence that ends speech (a final with ``speech_final``); None: only a long window or the client
    ends one."""
    utterance_end_ms: int | None = None
    vad_events: bool = False
    language: str | None = None
    prompt: str | None = None
    encoding: str | None = None
    """Headerless samples in this encoding (``backends.audio.ENCODINGS``); None: a container (WebM, Ogg,
    WAV, …) demuxed as its bytes come."""
    sample_rate: int = 16000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class _Job:
    audio: npt.NDArray[np.float32]
    start: int
    """Stream position (samples) of the window's first sample."""
    is_final: bool
    speech_final: bool = False
    from_finalize: bool = False
    speech: bool = True
    """Whether the VAD heard speech in it; a silent window is answered without transcribing."""


class LiveTranscriber:
    def __init__(self, stt: TranscriptionBackend, vad: VadBackend, options: LiveOptions,
                 emit: Callable[[LiveEvent], None], fail: Callable[[Exception], None], *, work: Work) -> None:
        self._stt = stt
        self._off_loop = work
        self._vad = vad.stream()
        self._on, self._off = vad.thresholds
        self._frame = vad.frame_samples
        self._options = options
        self._emit = emit
        self._fail = fail
        self._window = np.zeros(0, dtype=np.float32)
        self._window_start = 0
        self._scored = 0
        """Samples the VAD has scored (a whole number of frames)."""
        self._in_speech = False
        self._window_has_speech = False
        self._silence = 0
        self._since_interim = 0
        self._interim_pending = False
        self._last_word_end: float | None = None
        self._utterance_open = False
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue(MAX_JOBS)
        self._lock = asyncio.Lock()
        self._worker = asyncio.create_task(self._work())

    @property
    def duration(self) -> float:
        """Seconds of audio received."""
        return (self._window_start + len(self._window)) / RATE

    # -- audio in -----------------------------------------------------------------------------------

    async def add_audio(self, samples: npt.NDArray[np.float32]) -> None:
        if not len(samples):
            return
        async with self._lock:  # one piece at a time, and never across a Finalize
            await self._add(samples)

    async def _add(self, samples: npt.NDArray[np.float32]) -> None:
        self._window = np.concatenate([self._window, samples])
        self._since_interim += len(samples)
        for p in await self._off_loop(self._vad.feed, samples):
            await self._on_frame(float(p))
        if not self._window_has_speech and len(self._window) > PRE_ROLL:
            self._trim(len(self._window) - PRE_ROLL)  # nothing said yet: keep only the pre-roll
        elif len(self._window) >= MAX_WINDOW:
            await self._close_window(speech_final=False)
        elif (self._options.interim_results and self._in_speech and not self._interim_pending
              and self._since_interim >= INTERIM_EVERY and not self._jobs.full()):
            self._since_interim = 0
            self._interim_pending = True
            self._jobs.put_nowait(_Job(audio=self._window.copy(), start=self._window_start, is_final=False))
        await self._check_utterance_end()

    async def _on_frame(self, p: float) -> None:
        at = self._scored
        self._scored += self._frame
        if not self._in_speech:
            if p >= self._on:
                self._in_speech = True
                self._window_has_speech = True
                self._silence = 0
                self._utterance_open = False
                if self._options.vad_events:
                    self._emit(SpeechStarted(timestamp=at / RATE))
            return
        self._silence = self._silence + self._frame if p < self._off else 0
        endpointing = self._options.endpointing_ms
        if endpointing is not None and self._silence * 1000 >= endpointing * RATE:
            self._in_speech = False
            await self._close_window(speech_final=True, end=self._scored)

    def _trim(self, samples: int) -> None:
        self._window = self._window[samples:]
        self._window_start += samples

    async def _close_window(self, *, speech_final: bool, from_finalize: bool = False, end: int | None = None) -> None:
        """Queue the open window (up to stream position ``end``) as a final result and start a new one;
        waits while :data:`MAX_JOBS` are queued."""
        cut = len(self._window) if end is None else max(0, min(len(self._window), end - self._window_start))
        job = _Job(audio=self._window[:cut].copy(), start=self._window_start, is_final=True,
                   speech_final=speech_final, from_finalize=from_finalize, speech=self._window_has_speech)
        self._trim(cut)
        self._window_has_speech = self._in_speech
        self._since_interim = 0
        await self._enqueue(job)

    async def _enqueue(self, job: _Job | None) -> None:
        """Queue ``job``, waiting for room, unless the worker has stopped (it would never make room)."""
        put = asyncio.ensure_future(self._jobs.put(job))
        await asyncio.wait({put, self._worker}, return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    async def _check_utterance_end(self) -> None:
        limit = self._options.utterance_end_ms
        if (limit is None or not self._utterance_open or self._in_speech or self._last_word_end is None
                or self._jobs.qsize()):  # a final still being made may hold later words
            return
        if (self.duration - self._last_word_end) * 1000 >= limit:
            self._utterance_open = False
            self._emit(UtteranceEnd(last_word_end=self._last_word_end))

    # -- client requests ----------------------------------------------------------------------------

    async def finalize(self) -> None:
        """Finalise what has been heard so far (Deepgram's ``Finalize``)."""
        async with self._lock:
            if len(self._window):
                await self._close_window(speech_final=False, from_finalize=True)

    async def close(self) -> None:
        """Finalise, then wait until every result has been emitted (or the work has failed)."""
        await self.finalize()
        await self._enqueue(None)
        await asyncio.wait({self._worker})

    def abort(self) -> None:
        """Stop at once: the client went away."""
        self._worker.cancel()

    # -- transcription ------------------------------------------------------------------------------

    async def _transcribe(self, job: _Job) -> tuple[TranscriptWord, ...]:
        if not job.speech or len(job.audio) < self._frame:
            return ()
        offset = job.start / RATE
        request = TranscriptionRequest(audio=job.audio, language=self._options.language,
                                       prompt=self._options.prompt, word_timestamps=True)
        words: list[TranscriptWord] = []
        async for item in self._stt.transcribe(request):
            if isinstance(item, TranscriptSegment):
                words.extend(TranscriptWord(word=w.word, start=w.start + offset, end=w.end + offset,
                                            probability=w.probability) for w in item.words)
        return tuple(words)

    async def _work(self) -> None:
        try:
            while (job := await self._jobs.get()) is not None:
                if not job.is_final and self._jobs.qsize():
                    self._interim_pending = False
                    continue  # a newer result is queued already: this interim is stale
                words = await self._transcribe(job)
                end = (job.start + len(job.audio)) / RATE
                if not job.is_final:
                    self._interim_pending = False
                self._emit(LiveTranscript(words=words, start=job.start / RATE, end=end, is_final=job.is_final,
                                          speech_final=job.speech_final, from_finalize=job.from_finalize))
                if job.is_final and words:
                    self._last_word_end = words[-1].end
                    # Speech that began while this was transcribed owns the gap: no UtteranceEnd for it.
                    self._utterance_open = not self._in_speech
                    await self._check_utterance_end()
        except Exception as e:  # the caller reports it, and ends the stream
            log.exception("live transcription failed")
            self._fail(e)

    async def aclose(self) -> None:
        """Stop the work and wait until it has stopped."""
        self.abort()
        await asyncio.wait({self._worker})
