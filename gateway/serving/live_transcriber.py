"""Live transcription's window: audio in as it arrives, results out as speech is found and understood.

The open window (the audio since the last final result) grows as audio arrives. A VAD scores each
32 ms frame; speech starts and ends with the hysteresis the VAD applies to its own clips
(``VadBackend.thresholds``). Speech onset is reported (``SpeechStarted``).

**Incremental.** While speech goes on, a pass transcribes the window's unsettled audio every
:data:`PASS_EVERY` of new audio; the words two consecutive passes agree on are committed
(:mod:`gateway.serving.agreement`) and never transcribed again. As soon as the VAD hears silence, a
*tail* pass transcribes what is left after the last committed word; if the silence lasts until the
speech ends, the final result is the committed words and the tail's, so it is ready almost as the pause
that ends the speech is over instead of a whole utterance's transcription later. A final never changes
a committed word (a later pass may only write it better: case, punctuation). Interim results are the
committed words and the latest pass's others; results are in sentence case.

**Ends of speech.** A pause of ``endpointing`` ms closes the window as a final with ``speech_final``;
with ``end_of_turn`` set instead, the pause ends the turn when the end-of-turn confidence
(:mod:`gateway.serving.turns`: the silence, weighed by how finished the words sound) reaches its
threshold, announcing an eager end of turn at the lower one (and ``TurnResumed`` when speech goes on).
The decision follows the audio, not the engine's speed: a pause the speaker went on from before its
words were back is weighed when they are, and if it ended the turn the window is cut there.
A window that grows too long is finalised without ``speech_final``. ``UtteranceEnd`` follows the last
final word when no new word comes for ``utterance_end_ms``.

Passes run as tasks on the engine (which decodes several at once), results go out in order through one
emitter, and receiving audio waits only when :data:`MAX_OUT` results are waiting to go out. The VAD
scores on the audio threads (``work``), never on the event loop. A failure of the engine goes to
``fail``, and ends the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from backends.audio_answers import (
    AudioProgress,
    EagerEndOfTurn,
    LiveEvent,
    LiveTranscript,
    SpeechStarted,
    TurnResumed,
    UtteranceEnd,
)
from backends.base import VadBackend
from backends.types import TranscriptionInfo, TranscriptionRequest, TranscriptSegment, TranscriptWord
from gateway.serving.agreement import Agreement, sentence_case
from gateway.serving.turns import EndOfTurn, end_of_turn_confidence

__all__ = ["RATE", "LiveOptions", "LiveTranscriber", "Transcribes"]

log = logging.getLogger("syn4pse.live")

RATE = 16000
PRE_ROLL = int(0.3 * RATE)
"""Audio kept before speech onset, so the first word is not clipped."""
MAX_WINDOW = 20 * RATE
"""A window this long is finalised even without a pause."""
PASS_EVERY = int(0.6 * RATE)
"""New audio between two passes while speech goes on."""
FIRST_PASS = int(0.5 * RATE)
"""Speech before the first pass of an utterance: a pass on less comes back with words never said."""
CONTEXT = int(3 * RATE)
"""Audio before the boundary a pass hears again, so that the first unsettled word is not clipped."""
TAIL_AFTER_FRAMES = 1
"""Silent VAD frames after speech before the tail pass starts."""
PASS_BEAM = 1
"""Beams of the passes (greedy: measured by bench/live.py as accurate as the model's beam on them)."""
BEYOND_END = 0.05
"""A word a pass places this close to its audio's end, or past it, was not heard: it is dropped."""
MAX_PASSES = 2
"""Passes of one stream decoding at once: a tail never waits behind more than one other pass."""
MAX_OUT = 8
"""Results waiting to go out before more audio waits for them."""

Work = Callable[..., Awaitable[Any]]
"""Runs a blocking call off the event loop: ``await work(fn, *args)``."""
Words = tuple[TranscriptWord, ...]


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What a live stream asks for: which results, when speech ends, and what the audio is."""

    interim_results: bool = False
    endpointing_ms: int | None = 200
    """Silence that ends speech (a final with ``speech_final``); None: only a long window or the client
    ends one (unless ``end_of_turn`` is set)."""
    utterance_end_ms: int | None = None
    vad_events: bool = False
    language: str | None = None
    prompt: str | None = None
    encoding: str | None = None
    """Headerless samples in this encoding (``backends.audio.ENCODINGS``); None: a container (WebM, Ogg,
    WAV, …) demuxed as its bytes come."""
    sample_rate: int = 16000
    channels: int = 1
    end_of_turn: EndOfTurn | None = None
    """Turn-taking: a pause ends the speech when the end-of-turn confidence reaches its threshold (in
    place of ``endpointing_ms``), with an eager end of turn before it."""
    progress_ms: int | None = None
    """An ``AudioProgress`` event after each this much audio; None: none."""
    vad_threshold: float | None = None
    """Speech starts at this VAD probability and ends 0.15 below it; None: the VAD's own hysteresis."""


@dataclass(slots=True)
class _Pass:
    """One transcription of window ``window``'s audio up to ``end`` (a stream position, in samples)."""

    task: asyncio.Task[Words]
    window: int
    end: int

    def words(self) -> Words | None:
        """Its words when it is done and did not fail."""
        if not self.task.done() or self.task.cancelled() or self.task.exception() is not None:
            return None
        return self.task.result()


@dataclass(frozen=True, slots=True)
class _Pause:
    """A pause the speaker went on from before its tail pass was back."""

    start: int
    silence: int
    tail: _Pass


@dataclass(frozen=True, slots=True)
class _Final:
    agreement: Agreement
    """The window's, as it was when the window closed."""
    tail: _Pass | None
    start: int
    end: int
    speech_final: bool
    from_finalize: bool
    confidence: float | None
    timed_out: bool


@dataclass(frozen=True, slots=True)
class _Interim:
    window_pass: _Pass
    closed: asyncio.Future[None]
    """Done when its window is final: then the final holds all it heard, and it is not sent."""


_Out = LiveEvent | _Final | _Interim | None


class Transcribes(Protocol):
    """What a live stream needs of its speech-to-text model."""

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionInfo | TranscriptSegment]: ...


class LiveTranscriber:
    def __init__(self, stt: Transcribes, vad: VadBackend, options: LiveOptions,
                 emit: Callable[[LiveEvent], None], fail: Callable[[Exception], None], *, work: Work,
                 on_commit: Callable[[Words], None] = lambda words: None) -> None:
        self._stt = stt
        self._off_loop = work
        self._vad = vad.stream()
        self._on, self._off = vad.thresholds
        if options.vad_threshold is not None:
            self._on, self._off = options.vad_threshold, max(0.01, options.vad_threshold - 0.15)
        self._frame = vad.frame_samples
        self._options = options
        self._emit = emit
        self._fail = fail
        self._on_commit = on_commit
        self._window = np.zeros(0, dtype=np.float32)
        self._window_start = 0
        self._window_id = 0
        self._agreement = Agreement()
        self._scored = 0
        """Samples the VAD has scored (a whole number of frames)."""
        self._in_speech = False
        self._window_has_speech = False
        self._silence = 0
        self._since_pass = 0
        self._tail: _Pass | None = None
        """The pass launched in the present silence: it heard all of the window's speech."""
        self._offered_end = 0
        self._undecided: _Pause | None = None
        """A pause that may have ended the turn, waiting for its words."""
        self._eager_sent = False
        self._last_word_end: float | None = None
        self._utterance_open = False
        self._finals_waiting = 0
        self._progress_at = 0
        """Stream position (samples) of the next ``AudioProgress``."""
        self._passes: set[asyncio.Task[Words]] = set()
        """This stream's passes under way."""
        self._window_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running: set[asyncio.Task[Any]] = set()
        """Passes and turn checks under way: cancelled when the stream stops."""
        self._out: asyncio.Queue[_Out] = asyncio.Queue(MAX_OUT)
        self._lock = asyncio.Lock()
        self._emitter = asyncio.create_task(self._send())

    @property
    def duration(self) -> float:
        """Seconds of audio received."""
        return (self._window_start + len(self._window)) / RATE

    @property
    def owes_results(self) -> bool:
        """Passes under way or results not yet out: the stream is not idle, whatever the client sends."""
        return bool(self._running or self._finals_waiting or not self._out.empty())

    @property
    def _end(self) -> int:
        return self._window_start + len(self._window)

    # -- audio in -----------------------------------------------------------------------------------

    async def add_audio(self, samples: npt.NDArray[np.float32]) -> None:
        if not len(samples):
            return
        async with self._lock:  # one piece at a time, and never across a Finalize
            await self._add(samples)

    async def _add(self, samples: npt.NDArray[np.float32]) -> None:
        self._window = np.concatenate([self._window, samples])
        self._since_pass += len(samples)
        for p in await self._off_loop(self._vad.feed, samples):
            await self._on_frame(float(p))
        if not self._window_has_speech and len(self._window) > PRE_ROLL:
            self._trim(len(self._window) - PRE_ROLL)  # nothing said yet: keep only the pre-roll
            self._agreement.reset(self._window_start / RATE)
        elif len(self._window) >= MAX_WINDOW:
            await self._close_window(speech_final=False)
        elif self._in_speech and not self._silence and self._since_pass >= PASS_EVERY and not self._passes:
            self._since_pass = 0
            window_pass = self._launch()
            if self._options.interim_results and not self._out.full():
                self._out.put_nowait(_Interim(window_pass, self._window_closed))
        self._report_progress()
        await self._check_utterance_end()

    def _report_progress(self) -> None:
        every = self._options.progress_ms
        if every is None or self._end < self._progress_at:
            return
        step = every * RATE // 1000
        self._progress_at = (self._end // step + 1) * step
        confidence = 0.0
        if self._in_speech and self._silence:
            confidence = end_of_turn_confidence(self._silence * 1000 / RATE, self._agreement.said)
        if not self._out.full():
            self._out.put_nowait(AudioProgress(end=self._end / RATE, end_of_turn_confidence=confidence))

    async def _on_frame(self, p: float) -> None:
        at = self._scored
        self._scored += self._frame
        if not self._in_speech:
            if p >= self._on:
                self._in_speech = True
                self._window_has_speech = True
                self._silence = 0
                self._since_pass = min(self._since_pass, PASS_EVERY - FIRST_PASS)
                self._utterance_open = False
                if self._options.vad_events or self._options.end_of_turn is not None:
                    await self._put(SpeechStarted(timestamp=at / RATE))
            return
        if p >= self._off:
            if self._silence and self._eager_sent:
                await self._put(TurnResumed(start=self._window_start / RATE, end=at / RATE))
            if (self._silence and self._tail is not None and self._undecided is None
                    and self._tail.words() is None and self._options.end_of_turn is not None):
                # The words of this pause are not back yet: whether it ended the turn is decided when they are.
                self._undecided = _Pause(start=at - self._silence, silence=self._silence, tail=self._tail)
            self._silence = 0
            self._tail = None
            self._eager_sent = False
            return
        self._silence += self._frame
        self._start_tail_when_due()
        await self._consider_end()

    def _start_tail_when_due(self) -> None:
        """The tail of the present silence, once it is due and the stream has a pass to spare."""
        if (self._in_speech and self._tail is None and self._silence >= TAIL_AFTER_FRAMES * self._frame
                and len(self._passes) < MAX_PASSES):
            self._tail = self._launch()
            if self._options.end_of_turn is not None:
                self._tail.task.add_done_callback(lambda _: self._track(self._check_turn()))

    async def _check_turn(self) -> None:
        """A tail pass is back: the turn may end (or be announced) now rather than at the next frame, or a
        pause the speaker has gone on from may have ended it, as the audio goes (at any pace of sending)."""
        async with self._lock:
            pause, turn = self._undecided, self._options.end_of_turn
            if pause is not None and turn is not None and (tail := pause.tail.words()) is not None:
                self._undecided = None
                words = self._agreement.ending(tail)
                silence_ms = pause.silence * 1000 / RATE
                if (cause := turn.ended_by(silence_ms, words)) is not None:
                    confidence = end_of_turn_confidence(silence_ms, words)
                    if turn.eager_threshold is not None:
                        await self._announce(words, pause.start + pause.silence, confidence)
                    await self._close_window(speech_final=True, end=pause.start + pause.silence,
                                             confidence=confidence, timed_out=cause == "timeout", tail=pause.tail)
            if self._in_speech and self._silence:
                await self._consider_end()

    async def _consider_end(self) -> None:
        silence_ms = self._silence * 1000 / RATE
        turn = self._options.end_of_turn
        if turn is None:
            endpointing = self._options.endpointing_ms
            if endpointing is not None and silence_ms >= endpointing:
                await self._end_of_speech(None)
            return
        tail = self._tail.words() if self._tail is not None else None
        if tail is None:
            if silence_ms >= turn.timeout_ms:
                await self._end_of_speech(end_of_turn_confidence(silence_ms, self._agreement.committed),
                                          timed_out=True)
            return
        words = self._agreement.ending(tail)
        confidence = end_of_turn_confidence(silence_ms, words)
        cause = turn.ended_by(silence_ms, words)
        reached = cause is not None
        # An eager end always comes before the end it announces, even when the words came too late to send
        # it any sooner.
        announce = turn.eager(silence_ms, words) or (reached and turn.eager_threshold is not None)
        if announce and not self._eager_sent:
            await self._announce(words, self._scored, confidence)
        if reached:
            await self._end_of_speech(confidence, timed_out=cause == "timeout")

    async def _announce(self, words: list[TranscriptWord], end: int, confidence: float) -> None:
        """An eager end of the turn, its words as the final will hold them, heard up to ``end``."""
        self._eager_sent = True
        await self._put(EagerEndOfTurn(words=sentence_case(words), start=self._window_start / RATE, end=end / RATE,
                                       confidence=confidence))

    async def _end_of_speech(self, confidence: float | None, *, timed_out: bool = False) -> None:
        self._in_speech = False
        await self._close_window(speech_final=True, end=self._scored, confidence=confidence, timed_out=timed_out)

    def _trim(self, samples: int) -> None:
        self._window = self._window[samples:]
        self._window_start += samples

    async def _close_window(self, *, speech_final: bool, from_finalize: bool = False, end: int | None = None,
                            confidence: float | None = None, timed_out: bool = False,
                            tail: _Pass | None = None) -> None:
        """Send the open window (up to stream position ``end``) out as a final result and start a new
        one; waits while :data:`MAX_OUT` results are waiting."""
        cut = len(self._window) if end is None else max(0, min(len(self._window), end - self._window_start))
        if tail is None and self._window_has_speech and cut >= self._frame:
            # the tail of this silence heard all the speech
            tail = self._tail if self._tail is not None else self._launch(end=self._window_start + cut)
        final = _Final(agreement=self._agreement, tail=tail,
                       start=self._window_start, end=self._window_start + cut, speech_final=speech_final,
                       from_finalize=from_finalize, confidence=confidence, timed_out=timed_out)
        self._trim(cut)
        self._window_id += 1
        self._agreement = Agreement(self._window_start / RATE)
        self._offered_end = self._window_start
        self._tail = self._undecided = None
        if speech_final:
            self._eager_sent = False  # the turn it announced is over
        self._window_closed.set_result(None)
        self._window_closed = asyncio.get_running_loop().create_future()
        self._window_has_speech = self._in_speech
        self._since_pass = 0
        self._finals_waiting += 1
        await self._put(final)

    async def _put(self, item: _Out) -> None:
        """Queue ``item`` to go out, waiting for room, unless the emitter has stopped (it would never make room)."""
        put = asyncio.ensure_future(self._out.put(item))
        await asyncio.wait({put, self._emitter}, return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    def _utterance_end(self) -> UtteranceEnd | None:
        """``UtteranceEnd``, once, when no word has come for ``utterance_end_ms`` after the last final one."""
        limit = self._options.utterance_end_ms
        if (limit is None or not self._utterance_open or self._in_speech or self._last_word_end is None
                or self._finals_waiting):  # a final still being made may hold later words
            return None
        if (self.duration - self._last_word_end) * 1000 < limit:
            return None
        self._utterance_open = False
        return UtteranceEnd(last_word_end=self._last_word_end)

    async def _check_utterance_end(self) -> None:
        if (event := self._utterance_end()) is not None:
            await self._put(event)

    # -- client requests ----------------------------------------------------------------------------

    async def finalize(self) -> None:
        """Finalise what has been heard so far (Deepgram's ``Finalize``)."""
        async with self._lock:
            if len(self._window):
                await self._close_window(speech_final=False, from_finalize=True)

    async def end_turn(self) -> None:
        """End the speaker's turn now (Flux's ``ForceEndTurn``): a final with ``speech_final``."""
        async with self._lock:
            if self._window_has_speech:
                self._in_speech = False
                await self._close_window(speech_final=True, from_finalize=True)

    def configure(self, *, end_of_turn: EndOfTurn | None = None, prompt: str | None = None) -> None:
        """New thresholds for the turns and words to listen for, from the next audio on."""
        self._options = replace(self._options, end_of_turn=end_of_turn or self._options.end_of_turn,
                                prompt=prompt if prompt is not None else self._options.prompt)

    async def close(self) -> None:
        """Finalise, then wait until every result has been emitted (or the work has failed)."""
        await self.finalize()
        await self._put(None)
        await asyncio.wait({self._emitter})
        for task in self._running:  # passes of windows already final
            task.cancel()

    def abort(self) -> None:
        """Stop at once: the client went away."""
        self._emitter.cancel()
        for task in self._running:
            task.cancel()

    def _track(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    # -- transcription ------------------------------------------------------------------------------

    def _launch(self, end: int | None = None) -> _Pass:
        """A pass over the window's unsettled audio up to ``end``, from a gap between two committed words
        at least :data:`CONTEXT` before the boundary.

        The committed words are not its prompt: measured, a prompt of them makes a short pass come back
        empty now and then (more so when it stops mid-sentence), where the context audio does not."""
        end = self._end if end is None else end
        committed = self._agreement.committed
        before = [w for w in committed if w.end * RATE <= self._agreement.boundary * RATE - CONTEXT]
        start = self._window_start
        if before:
            after = committed[len(before)] if len(before) < len(committed) else None
            gap = before[-1].end if after is None else (before[-1].end + after.start) / 2
            start = max(self._window_start, min(int(gap * RATE), end - self._frame))
        audio = self._window[start - self._window_start:end - self._window_start].copy()
        task = self._track(self._transcribe(audio, start, self._options.prompt or None))
        self._passes.add(task)
        task.add_done_callback(self._passes.discard)
        window_pass = _Pass(task, self._window_id, end)
        task.add_done_callback(lambda _: self._settle(window_pass))
        return window_pass

    def _settle(self, window_pass: _Pass) -> None:
        """A pass is back: offer its words to the agreement (in the order the passes heard the audio), and
        start a tail that had to wait for it."""
        words = window_pass.words()
        if words is not None and window_pass.window == self._window_id and window_pass.end > self._offered_end:
            self._offered_end = window_pass.end
            settled = self._agreement.offer(words)
            if settled:
                self._on_commit(tuple(settled))
        self._start_tail_when_due()

    async def _transcribe(self, audio: npt.NDArray[np.float32], start: int, prompt: str | None) -> Words:
        if len(audio) < self._frame:
            return ()
        offset = start / RATE
        request = TranscriptionRequest(audio=audio, language=self._options.language, prompt=prompt,
                                       word_timestamps=True, beam_size=PASS_BEAM, quick=True)
        words: list[TranscriptWord] = []
        heard = len(audio) / RATE - BEYOND_END
        async for item in self._stt.transcribe(request):
            if isinstance(item, TranscriptSegment):
                words.extend(TranscriptWord(word=w.word, start=w.start + offset, end=w.end + offset,
                                            probability=w.probability) for w in item.words if w.start < heard)
        return tuple(words)

    # -- results out --------------------------------------------------------------------------------

    async def _send(self) -> None:
        try:
            while (item := await self._out.get()) is not None:
                if isinstance(item, _Final):
                    await self._send_final(item)
                elif isinstance(item, _Interim):
                    await self._send_interim(item)
                else:
                    self._emit(item)
        except Exception as e:  # the caller reports it, and ends the stream
            log.exception("live transcription failed")
            self._fail(e)

    async def _send_interim(self, item: _Interim) -> None:
        either: set[asyncio.Future[Any]] = {item.window_pass.task, item.closed}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if item.closed.done():
            return  # its window is final: the final holds all it heard
        words = sentence_case(self._agreement.hypothesis(item.window_pass.task.result()))
        self._emit(LiveTranscript(words=words, start=self._window_start / RATE,
                                  end=item.window_pass.end / RATE, is_final=False))

    async def _send_final(self, item: _Final) -> None:
        tail = await item.tail.task if item.tail is not None else ()
        words = sentence_case(item.agreement.ending(tail))
        self._finals_waiting -= 1
        self._emit(LiveTranscript(words=words, start=item.start / RATE, end=item.end / RATE, is_final=True,
                                  speech_final=item.speech_final, from_finalize=item.from_finalize,
                                  end_of_turn_confidence=item.confidence, timed_out=item.timed_out))
        if words:
            self._last_word_end = words[-1].end
            # Speech that began while this was transcribed owns the gap: no UtteranceEnd for it.
            self._utterance_open = not self._in_speech
            if (event := self._utterance_end()) is not None:
                self._emit(event)

    async def aclose(self) -> None:
        """Stop the work and wait until it has stopped."""
        self.abort()
        await asyncio.wait({self._emitter})
