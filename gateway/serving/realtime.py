"""The Realtime API's sessions: voice in, voice out, over one socket (events: :mod:`compat.openai.realtime`).

A session hears its input audio with the live transcription of :mod:`gateway.serving.realtime_listen`
(the VAD finds speech, passes transcribe it as it goes, so a turn's words are ready as its pause ends),
answers with a :class:`~gateway.serving.realtime_reply.Reply` (the chat model's words, spoken a clause
at a time), and keeps the conversation's items. Turn detection decides when a turn ends:

- ``server_vad``: a pause of ``silence_duration_ms`` (speech starts at the VAD probability ``threshold``);
- ``semantic_vad``: the end-of-turn confidence of :mod:`gateway.serving.turns` (the pause weighed by how
  finished the words sound), waiting longer at a lower ``eagerness``;
- none: the client commits the buffer, which is then transcribed whole.

Speech while a response runs cancels it (``interrupt_response``: barge-in); the client then truncates the
assistant's item to what it played. A transcription session (``?intent=transcription``) only hears.
Models are held only while used (listening, generating, speaking), so an idle session holds none;
sessions are counted apart (``server.realtime.max_sessions``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from backends.audio import frame_bytes
from backends.audio_answers import LiveEvent, LiveTranscript, SpeechStarted
from backends.errors import DomainError
from backends.types import ModelType, TranscriptWord
from compat.errors import GatewayError, InvalidRequest, ModelNotFound
from compat.openai.realtime import (
    OPENAI_VOICES,
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    OutputAudioBufferClear,
    ResponseCancel,
    ResponseCreate,
    SemanticVad,
    ServerVad,
    SessionUpdate,
    Settings,
    apply_patch,
    decode_audio,
    new_id,
    parse_patch,
    response_settings,
    session_object,
)
from compat.openai.realtime_items import Item, Part, RealtimeResponse, event, item_object, parse_item
from gateway.config import Config, RealtimeModel
from gateway.registry import Registry
from gateway.serving.chat import Chat, Meter
from gateway.serving.live import EndOfTurn, Intake, LiveOptions
from gateway.serving.owned import HeldSockets
from gateway.serving.realtime_listen import Ears
from gateway.serving.realtime_reply import Reply, error_for
from gateway.serving.speech import Speech
from gateway.serving.transcription import AudioInput, TranscriptionOptions, Transcriptions
from gateway.workers import Workers

__all__ = ["Playback", "Realtime", "RealtimeSession", "spoken_until"]

log = logging.getLogger("syn4pse.realtime")

EAGERNESS = {"low": (0.85, 8000), "medium": (0.7, 4000), "auto": (0.7, 4000), "high": (0.5, 2000)}
"""semantic_vad's eagerness → (end-of-turn confidence that ends the turn, longest wait in ms)."""
MIN_COMMIT_MS = 100
MAX_WAITING_EVENTS = 2048
"""Events waiting for a client that does not read them; past it the session is stalled (its transport
closes it) instead of holding ever more in memory."""


def _text(words: list[TranscriptWord]) -> str:
    return " ".join(w.word.strip() for w in words if w.word.strip())


class Realtime:
    """Opens sessions on the realtime models of the configuration."""

    def __init__(self, registry: Registry, config: Config, chat: Chat, speech: Speech,
                 transcriptions: Transcriptions, work: Workers) -> None:
        self.registry = registry
        self.config = config
        self.chat = chat
        self.speech = speech
        self.transcriptions = transcriptions
        self.work = work
        self._names = {alias: name for name, m in config.realtime.items() for alias in (name, *m.aliases)}
        self._sessions = HeldSockets(config.server.realtime.max_sessions, "realtime sessions")

    def model_of(self, name: str | None) -> str:
        """The realtime model ``name`` reaches (the first one when None)."""
        if name is None:
            if not self.config.realtime:
                raise InvalidRequest("This server has no realtime model (type: realtime in syn4pse.yaml).",
                                     param="model", code="model_not_found")
            return next(iter(self.config.realtime))
        found = self._names.get(name)
        if found is None:
            raise ModelNotFound(name)
        return found

    def transcriber_of(self, name: str | None, default: str, param: str = "model") -> str:
        """The speech-to-text model a transcription names: a realtime model's, or an stt model."""
        if name is None:
            return default
        if name in self._names:
            return self.config.realtime[self._names[name]].stt
        canonical = self.registry.resolve(name) if name in self.registry.names() else None
        if canonical is None or self.registry.model_config(canonical).type != ModelType.STT:
            raise InvalidRequest(f"The model '{name}' is not a speech-to-text model of this server.", param=param,
                                 code="invalid_model")
        return canonical

    def settings_for(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        """The session ``raw`` describes (a client secret's), as a session shows it; refused if it is wrong."""
        raw = raw or {}
        transcription = raw.get("type") == "transcription"
        model = raw.get("model") if isinstance(raw.get("model"), str) else None
        name = None if transcription else self.model_of(model)
        settings = Settings(kind="transcription" if transcription else "realtime", model=model or name or "",
                            turn_detection=ServerVad())
        settings = apply_patch(settings, parse_patch({k: v for k, v in raw.items() if k != "model"}))
        return session_object(settings)

    def rate_limits(self) -> list[dict[str, Any]]:
        """What ``rate_limits.updated`` says: the sessions this server holds, and how many more it would open."""
        held = self._sessions.held
        return [{"name": "requests", "limit": self._sessions.limit, "remaining": max(0, self._sessions.limit - held),
                 "reset_seconds": 0.0}]

    def voices(self, model: str) -> list[str]:
        return [voice for voice, _ in self.speech.voices(model)]

    def open(self, model: str | None, *, transcription: bool, meter: Callable[[], Meter]) -> RealtimeSession:
        """A session; refused (``Busy``) when ``max_sessions`` are open."""
        if transcription:
            default = self.config.realtime[self.model_of(None)] if self.config.realtime else None
            if default is None:
                raise InvalidRequest("This server has no realtime model (type: realtime in syn4pse.yaml).")
            stt = self.transcriber_of(model, default.stt)
            parts = RealtimeModel(type="realtime", llm=default.llm, stt=stt, tts=default.tts,
                                  vad=self.registry.model_config(stt).vad or default.vad)
            settings = Settings(kind="transcription", model=model or stt, turn_detection=ServerVad())
        else:
            name = self.model_of(model)
            parts = self.config.realtime[name]
            settings = Settings(kind="realtime", model=model or name)
        self._sessions.take()
        session = RealtimeSession(self, settings, parts, meter=meter, on_close=self._sessions.give_back)
        session.typed = model is not None or transcription
        return session


class Playback(Protocol):
    """Where the session's audio is played, when the server plays it (a WebRTC call's track)."""

    def clear(self) -> tuple[str, str, int] | None:
        """Stop playing and drop what was not played: (response id, item id, ms of that item played), or
        None when nothing was playing."""


@dataclass(slots=True)
class _Turn:
    """The speech of the turn being heard."""

    item_id: str
    start_ms: int
    words: list[TranscriptWord] = field(default_factory=list)
    shown: str = ""
    """Of its transcript, what went out as deltas."""


class RealtimeSession:
    """One conversation: :meth:`handle` each client event; the server's events come out of :attr:`outbox`."""

    def __init__(self, realtime: Realtime, settings: Settings, model: RealtimeModel, *, meter: Callable[[], Meter],
                 on_close: Callable[[], None]) -> None:
        self._rt = realtime
        self.settings = settings
        self._model = model
        self._meter = meter
        self._on_close = on_close
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stalled = asyncio.Event()
        """Set when :data:`MAX_WAITING_EVENTS` wait unread: the transport then ends the session."""
        self.items: list[Item] = []
        self._limits = realtime.config.server.realtime
        self._buffer: list[bytes] = []
        self._buffer_ms = 0.0
        self._heard_ms = 0.0
        self._turn: _Turn | None = None
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._ears = self._new_ears()
        self.typed = True
        """Whether the session's type was chosen when it was opened: else its first ``session.update`` may
        make it a transcription session (a bare ``/v1/realtime``)."""
        self.playback: Playback | None = None
        """Set by a transport that plays the audio itself: speech and ``output_audio_buffer.clear`` stop it,
        and the item is truncated to what played."""

    def _new_ears(self) -> Ears:
        assert self._model.vad is not None  # settled when the configuration was read
        audio = self._rt.config.server.audio
        return Ears(self._rt.registry, self._rt.work, lambda: Intake(audio.live_burst_seconds, audio.live_rate),
                    stt=self._model.stt, vad=self._model.vad,
                    idle=self._limits.listen_idle_seconds, on_event=self._on_heard, on_failure=self._on_failure,
                    in_turn=lambda: self._turn is not None)

    @property
    def llm(self) -> str:
        """The chat model answering (its metrics carry its name)."""
        return self._model.llm

    def emit(self, payload: dict[str, Any]) -> None:
        if self._closed or self.stalled.is_set():
            return
        if self.outbox.qsize() >= MAX_WAITING_EVENTS:
            log.warning("a realtime client left %d events unread: its session is closed", MAX_WAITING_EVENTS)
            self.stalled.set()
            return
        self.outbox.put_nowait(payload)

    def start(self) -> None:
        self.emit(event("session.created", session=session_object(self.settings)))
        if self.settings.kind == "realtime":
            self.emit(event("conversation.created", conversation={
                "id": "conv_" + self.settings.id.removeprefix("sess_"), "object": "realtime.conversation"}))

    async def handle(self, ev: ClientEvent) -> None:
        """Act on one client event; a refusal raises (the caller answers it with an ``error`` event)."""
        if isinstance(ev, InputAudioBufferAppend):
            await self._append(decode_audio(ev.audio))
        elif isinstance(ev, SessionUpdate):
            await self._update(ev.session)
        elif isinstance(ev, InputAudioBufferCommit):
            await self._commit()
        elif isinstance(ev, InputAudioBufferClear):
            await self._clear()
        elif isinstance(ev, ConversationItemCreate):
            await self._create_item(ev.item, ev.previous_item_id)
        elif isinstance(ev, ConversationItemRetrieve):
            self.emit(event("conversation.item.retrieved", item=item_object(self._item(ev.item_id, "retrieve"))))
        elif isinstance(ev, ConversationItemTruncate):
            self._truncate(ev.item_id, ev.content_index, ev.audio_end_ms)
        elif isinstance(ev, ConversationItemDelete):
            self.items.remove(self._item(ev.item_id, "delete"))
            self.emit(event("conversation.item.deleted", item_id=ev.item_id))
        elif isinstance(ev, ResponseCreate):
            self._respond(ev.response)
        elif isinstance(ev, ResponseCancel):
            self._cancel(ev.response_id)
        elif isinstance(ev, OutputAudioBufferClear):
            reply = self._reply
            if reply is not None:
                reply.cancel("client_cancelled")
            if not self._stop_playing() and self.playback is None:
                self.emit(event("output_audio_buffer.cleared", response_id=reply.id if reply else None))

    async def feed_audio(self, data: bytes) -> None:
        """Input audio from a transport of its own (in the session's input format)."""
        await self._append(data)

    def _stop_playing(self) -> bool:
        """Stop the transport's playback, truncating the item it was playing to what played."""
        stopped = self.playback.clear() if self.playback is not None else None
        if stopped is None:
            return False
        response_id, item_id, played_ms = stopped
        item = next((i for i in self.items if i.id == item_id), None)
        if item is not None and item.content and item.content[0].type == "output_audio":
            part = item.content[0]
            if played_ms < part.audio_ms:
                part.transcript = spoken_until(part, played_ms)
                part.audio_ms = played_ms
                self.emit(event("conversation.item.truncated", item_id=item_id, content_index=0,
                                audio_end_ms=played_ms))
        self.emit(event("output_audio_buffer.cleared", response_id=response_id))
        return True

    # -- the session ------------------------------------------------------------------------------------

    async def configure(self, raw: dict[str, Any]) -> None:
        """Settings given before the session starts (a call's or a client secret's ``session``)."""
        await self._update(raw, announce=False)

    async def _update(self, raw: dict[str, Any], *, announce: bool = True) -> None:
        patch = parse_patch(raw)
        if not self.typed and patch.type == "transcription" and not self.items and self._reply is None:
            self.settings = Settings(kind="transcription", model=self._model.stt, id=self.settings.id,
                                     created=self.settings.created)
        self.typed = True
        new = apply_patch(self.settings, patch)
        s = self.settings
        if isinstance(patch.model, str) and new.kind == "realtime" and self._rt.model_of(patch.model) != \
                self._rt.model_of(s.model):
            raise InvalidRequest("The session's model cannot change; open a session on that model instead.",
                                 param="session.model", code="invalid_value")
        if new.voice != s.voice and new.voice not in OPENAI_VOICES and new.voice not in self._rt.voices(
                self._model.tts):
            raise InvalidRequest(f"The voice '{new.voice}' is not one of this server's: "
                                 f"{', '.join(self._rt.voices(self._model.tts))}.",
                                 param="session.audio.output.voice", code="invalid_value")
        if (self.playback is not None and new.input_format.type != "audio/pcm") or (
                self.playback is not None and new.output_format.type != "audio/pcm"):
            raise InvalidRequest("On a WebRTC call the audio travels as Opus on the call's tracks: its format"
                                 " cannot be set.", param="session.audio", code="invalid_value")
        stt = self._model.stt
        if new.transcription is not None and new.transcription.model is not None:
            stt = self._rt.transcriber_of(new.transcription.model, stt, "session.audio.input.transcription.model")
        hearing = (new.input_format, new.turn_detection, new.transcription)
        if hearing != (s.input_format, s.turn_detection, s.transcription) or stt != self._model.stt:
            await self._ears.close()  # the next audio is heard the new way
            self._turn = None
            self._model = RealtimeModel(type="realtime", llm=self._model.llm, stt=stt, tts=self._model.tts,
                                        vad=self._model.vad)
            self._ears = self._new_ears()
        self.settings = new
        if announce:
            self.emit(event("session.updated", session=session_object(new)))

    # -- input audio ------------------------------------------------------------------------------------

    def _bytes_per_ms(self) -> float:
        fmt = self.settings.input_format
        return frame_bytes(fmt.encoding, 1) * fmt.sample_rate / 1000

    async def _append(self, data: bytes) -> None:
        fmt = self.settings.input_format
        if len(data) % frame_bytes(fmt.encoding, 1):
            raise InvalidRequest(f"The audio of an append must be whole {fmt.type} samples (2 bytes each).",
                                 param="audio", code="invalid_value")
        if not data:
            return
        ms = len(data) / self._bytes_per_ms()
        self._heard_ms += ms
        if self.settings.turn_detection is None:
            if (self._buffer_ms + ms) / 1000 > self._limits.max_buffer_seconds:
                raise InvalidRequest(f"The input audio buffer holds at most {self._limits.max_buffer_seconds:g}"
                                     " seconds; commit or clear it.", param="audio",
                                     code="input_audio_buffer_full")
            self._buffer.append(data)
            self._buffer_ms += ms
            return
        await self._ears.feed(data, ms / 1000, self._live_options())

    def _live_options(self) -> LiveOptions:
        s = self.settings
        turns = s.turn_detection
        deltas = s.transcription is not None
        language = s.transcription.language if s.transcription else None
        prompt = s.transcription.prompt if s.transcription else None
        heard = LiveOptions(interim_results=deltas, vad_events=True, language=language, prompt=prompt or None,
                            encoding=s.input_format.encoding, sample_rate=s.input_format.sample_rate)
        if isinstance(turns, SemanticVad):
            threshold, wait = EAGERNESS[turns.eagerness]
            return replace(heard, endpointing_ms=None, end_of_turn=EndOfTurn(threshold=threshold, timeout_ms=wait))
        assert isinstance(turns, ServerVad)
        return replace(heard, endpointing_ms=max(turns.silence_duration_ms, 10), vad_threshold=turns.threshold)

    async def _on_heard(self, heard: LiveEvent, offset: float) -> None:
        turns = self.settings.turn_detection
        if isinstance(heard, SpeechStarted):
            self._stop_idle()
            padding = turns.prefix_padding_ms if isinstance(turns, ServerVad) else 300
            at = max(0, int((offset + heard.timestamp) * 1000) - padding)
            if self._turn is None:
                self._turn = _Turn(new_id("item"), at)
                self.emit(event("input_audio_buffer.speech_started", audio_start_ms=at, item_id=self._turn.item_id))
            if turns is not None and turns.interrupt_response:
                if self._reply is not None:
                    self._reply.cancel("turn_detected")
                self._stop_playing()
            return
        if not isinstance(heard, LiveTranscript):
            return
        turn = self._turn
        if turn is None:
            if not heard.words:
                return
            turn = self._turn = _Turn(new_id("item"), int((offset + heard.start) * 1000))
            self.emit(event("input_audio_buffer.speech_started", audio_start_ms=turn.start_ms, item_id=turn.item_id))
        text = _text([*turn.words, *heard.words])
        if heard.is_final:
            turn.words.extend(heard.words)
        if self.settings.transcription is not None and text.startswith(turn.shown) and len(text) > len(turn.shown):
            delta = text[len(turn.shown):]
            turn.shown = text
            self.emit(event("conversation.item.input_audio_transcription.delta", item_id=turn.item_id,
                            content_index=0, delta=delta))
        if heard.is_final and (heard.speech_final or heard.from_finalize):
            self._turn = None
            self._ears.turn_over()
            end_ms = int((offset + heard.end) * 1000)
            self.emit(event("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=turn.item_id))
            self._commit_item(turn.item_id, _text(turn.words), (end_ms - turn.start_ms) / 1000, turn.shown)
            if turns is not None and turns.create_response and self.settings.kind == "realtime" and turn.words:
                await self._respond_when_free()

    async def _respond_when_free(self) -> None:
        """A response to the turn just heard, once the one it interrupted (or follows) has ended."""
        if self._reply_task is not None and not self._reply_task.done():
            await asyncio.wait({self._reply_task})
        try:
            self._respond(None)
        except (GatewayError, DomainError) as e:
            self.emit(error_for(e, "answer the turn"))

    async def _on_failure(self, error: Exception) -> None:
        self.emit(error_for(error, "transcribe the audio"))
        self._turn = None
        await self._ears.close()

    def _commit_item(self, item_id: str, transcript: str, seconds: float, shown: str = "") -> None:
        """A heard turn becomes the conversation's user item (transcribed, when the session asks; the
        transcript's deltas end with what ``shown`` did not hold)."""
        transcribing = self.settings.transcription is not None
        part = Part("input_audio", heard=transcript)
        item = Item(item_id, "message", role="user", content=[part])
        previous = self._add_item(item) if self.settings.kind == "realtime" else (
            self.items[-1].id if self.items else None)
        self.emit(event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id))
        if self.settings.kind == "realtime":
            self.emit(event("conversation.item.added", previous_item_id=previous, item=item_object(item)))
        if transcribing or self.settings.kind == "transcription":
            part.transcript = transcript
            if transcript.startswith(shown) and len(transcript) > len(shown):
                self.emit(event("conversation.item.input_audio_transcription.delta", item_id=item_id,
                                content_index=0, delta=transcript[len(shown):]))
            self.emit(event("conversation.item.input_audio_transcription.completed", item_id=item_id,
                            content_index=0, transcript=transcript,
                            usage={"type": "duration", "seconds": round(max(seconds, 0.0), 3)}))
        if self.settings.kind == "realtime":
            self.emit(event("conversation.item.done", previous_item_id=previous, item=item_object(item)))
        else:
            self.items.append(item)
            del self.items[:-self._limits.max_items]

    async def _commit(self) -> None:
        if self.settings.turn_detection is not None:
            if self._turn is None or not self._ears.listening:
                raise InvalidRequest("Error committing input audio buffer: no speech has been heard since the"
                                     " last commit.", code="input_audio_buffer_commit_empty")
            await self._ears.end_turn()
            return
        if self._buffer_ms < MIN_COMMIT_MS:
            raise InvalidRequest(f"Error committing input audio buffer: buffer too small. Expected at least"
                                 f" {MIN_COMMIT_MS}ms of audio, but buffer only has {self._buffer_ms:.2f}ms of audio.",
                                 code="input_audio_buffer_commit_empty")
        data, seconds = b"".join(self._buffer), self._buffer_ms / 1000
        self._buffer, self._buffer_ms = [], 0.0
        transcript = await self._transcribe(data)
        self._commit_item(new_id("item"), transcript, seconds)

    async def _transcribe(self, data: bytes, fmt: Any = None) -> str:
        s = self.settings
        fmt = fmt or s.input_format
        options = TranscriptionOptions(language=s.transcription.language if s.transcription else None,
                                       prompt=s.transcription.prompt if s.transcription else None)
        done = await self._rt.transcriptions.answer(self._model.stt, AudioInput(
            data, encoding=fmt.encoding, sample_rate=fmt.sample_rate), options)
        return " ".join(segment.text.strip() for segment in done.segments if segment.text.strip())

    async def _clear(self) -> None:
        self._buffer, self._buffer_ms = [], 0.0
        self._turn = None
        await self._ears.close()
        self.emit(event("input_audio_buffer.cleared"))

    # -- the conversation -------------------------------------------------------------------------------

    def _add_item(self, item: Item, after: str | None = None) -> str | None:
        """Put ``item`` in the conversation (after ``after``: an item's id, ``root``, or None for the end);
        returns the id of the item before it."""
        if after is None:
            index = len(self.items)
        elif after == "root":
            index = 0
        else:
            index = self.items.index(self._item(after, "create", param="previous_item_id")) + 1
        self.items.insert(index, item)
        if len(self.items) > self._limits.max_items:
            del self.items[0]
            index -= 1
        return self.items[index - 1].id if index > 0 else None

    def _item(self, item_id: str, verb: str, param: str = "item_id") -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise InvalidRequest(f"Item with item_id not found: {item_id[:64]}", param=param,
                             code=f"item_{verb}_invalid_item_id" if param == "item_id" else "invalid_value")

    async def _create_item(self, raw: dict[str, Any], previous_item_id: str | None) -> None:
        item = parse_item(raw)
        if any(i.id == item.id for i in self.items):
            raise InvalidRequest(f"Item with id '{item.id}' already exists.", param="item.id",
                                 code="item_create_duplicate_item_id")
        if self.settings.kind != "realtime":
            raise InvalidRequest("A transcription session has no conversation to add items to.", param="item")
        for part in item.content:
            if part.audio is not None and part.transcript is None:
                part.heard = await self._transcribe(part.audio)
                if self.settings.transcription is not None:
                    part.transcript = part.heard
            part.audio = None
        previous = self._add_item(item, previous_item_id)
        self.emit(event("conversation.item.added", previous_item_id=previous, item=item_object(item)))
        self.emit(event("conversation.item.done", previous_item_id=previous, item=item_object(item)))

    def _truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        item = self._item(item_id, "truncate")
        if item.type != "message" or item.role != "assistant":
            raise InvalidRequest("Only assistant messages can be truncated.", param="item_id",
                                 code="invalid_value")
        if not 0 <= content_index < len(item.content) or item.content[content_index].type != "output_audio":
            raise InvalidRequest(f"Invalid 'content_index': {content_index}; the item has no audio part there.",
                                 param="content_index", code="invalid_value")
        part = item.content[content_index]
        if self._reply is not None and item in self._reply.response.output:
            self._reply.cancel("client_cancelled")
        if not 0 <= audio_end_ms <= part.audio_ms:
            raise InvalidRequest(f"Audio content of {part.audio_ms}ms is already shorter than {audio_end_ms}ms",
                                 param="audio_end_ms", code="invalid_value")
        part.transcript = spoken_until(part, audio_end_ms)
        part.audio_ms = audio_end_ms
        self.emit(event("conversation.item.truncated", item_id=item_id, content_index=content_index,
                        audio_end_ms=audio_end_ms))

    # -- responses --------------------------------------------------------------------------------------

    def _respond(self, raw: dict[str, Any] | None) -> None:
        if self.settings.kind != "realtime":
            raise InvalidRequest("A transcription session makes no responses.", param="type")
        if self._reply is not None:
            raise InvalidRequest(f"Conversation already has an active response in progress: {self._reply.id}."
                                 " Wait until the response is finished before creating a new one.",
                                 code="conversation_already_has_active_response")
        settings, params = response_settings(self.settings, raw)
        if settings.voice not in OPENAI_VOICES and settings.voice not in self._rt.voices(self._model.tts):
            raise InvalidRequest(f"The voice '{settings.voice}' is not one of this server's.",
                                 param="response.audio.output.voice", code="invalid_value")
        in_conversation = params.conversation == "auto"
        if isinstance(params.input, list):
            context = [self._reference(raw_item, f"response.input[{i}]") for i, raw_item in enumerate(params.input)]
        else:
            context = list(self.items)
        self._stop_idle()
        response = RealtimeResponse(settings, metadata=params.metadata, in_conversation=in_conversation)
        self._reply = reply = Reply(response, context, model=self._model, chat=self._rt.chat,
                                    registry=self._rt.registry, config=self._rt.config, meter=self._meter(),
                                    emit=self.emit, add_item=self._add_item, rate_limits=self._rt.rate_limits())
        self._reply_task = asyncio.create_task(self._run(reply))

    def _reference(self, raw: dict[str, Any], param: str) -> Item:
        if raw.get("type") == "item_reference":
            return self._item(str(raw.get("id")), "retrieve", param=f"{param}.id")
        return parse_item(raw, param)

    async def _run(self, reply: Reply) -> None:
        try:
            await reply.run()
        finally:
            if self._reply is reply:
                self._reply = None
            self._start_idle(reply)

    def _cancel(self, response_id: str | None) -> None:
        reply = self._reply
        if reply is None or (response_id is not None and response_id != reply.id):
            raise InvalidRequest("Cancellation failed: no active response found.", param="response_id",
                                 code="response_cancel_not_active")
        reply.cancel("client_cancelled")

    # -- idle timeout -----------------------------------------------------------------------------------

    def _start_idle(self, reply: Reply) -> None:
        """server_vad's ``idle_timeout_ms``: counted from when the response's audio has played."""
        turns = self.settings.turn_detection
        if self._closed or not isinstance(turns, ServerVad) or turns.idle_timeout_ms is None:
            return
        played = sum(p.audio_ms for i in reply.response.output for p in i.content) / 1000
        self._stop_idle()
        start = int(self._heard_ms)
        self._idle = asyncio.get_running_loop().call_later(played + turns.idle_timeout_ms / 1000,
                                                           self._timed_out, start)

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _timed_out(self, start_ms: int) -> None:
        self._idle = None
        if self._turn is not None or self._reply is not None or self._closed:
            return
        item_id = new_id("item")
        self.emit(event("input_audio_buffer.timeout_triggered", audio_start_ms=start_ms,
                        audio_end_ms=int(self._heard_ms), item_id=item_id))
        self._commit_item(item_id, "", (self._heard_ms - start_ms) / 1000)
        task = asyncio.create_task(self._respond_when_free())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Stop everything and give every model back (once)."""
        if self._closed:
            return
        self._closed = True
        self._stop_idle()
        try:
            if self._reply_task is not None and not self._reply_task.done():
                self._reply_task.cancel()
                await asyncio.wait({self._reply_task})
            await self._ears.close()
        finally:
            self._on_close()


def spoken_until(part: Part, audio_end_ms: int) -> str:
    """The transcript of an audio part up to ``audio_end_ms``: whole clauses before it, and of the clause it
    falls in as many words as the share of its audio that played."""
    transcript = part.transcript or ""
    before_ms, before_chars = 0, 0
    for end_ms, chars in part.spoken:
        if audio_end_ms >= end_ms:
            before_ms, before_chars = end_ms, chars
            continue
        share = (audio_end_ms - before_ms) / max(1, end_ms - before_ms)
        cut = before_chars + int((chars - before_chars) * share)
        space = transcript.rfind(" ", before_chars, cut + 1)
        return transcript[:space if space > before_chars else before_chars].rstrip()
    return transcript if audio_end_ms >= part.audio_ms else transcript[:before_chars].rstrip()
