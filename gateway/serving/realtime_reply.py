"""One realtime response: the conversation → the chat model → text, function calls, and speech as it comes.

The model's words go out as they are generated (the audio's transcript, or the text); with audio on, each
clause is spoken as soon as it is complete (:class:`Clauses`) while the model goes on, so the first audio
follows the first few words rather than the whole answer. The chat model is held while it generates
and the voice while it speaks, not between responses. :meth:`Reply.cancel` stops both at once and ends
the response ``cancelled`` with what was made so far; whatever ends it, ``response.done`` goes out last.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from backends.answers import AnswerEnd, CallDelta, CallOpened, ChoiceFinished, TextDelta
from backends.audio_answers import SpeechAudio
from backends.errors import DomainError
from backends.types import ChatMessage, ChatRequest, SamplingParams
from compat.errors import GatewayError, InvalidRequest, ServerFailure
from compat.openai.realtime import OPENAI_VOICES, error_event, new_id, tool_choice_of, tools_of
from compat.openai.realtime_items import (
    Item,
    Part,
    RealtimeResponse,
    chat_messages,
    event,
    item_object,
    response_object,
)
from gateway.config import Config, RealtimeModel
from gateway.errors import as_wire
from gateway.registry import SPEECH, Registry
from gateway.serving.chat import Chat, Meter
from gateway.serving.speech import AudioOutput, Voice
from gateway.vision import resolve_chat_images

__all__ = ["Clauses", "Reply", "error_for", "wire_error"]

log = logging.getLogger("syn4pse.realtime")

Emit = Callable[[dict[str, Any]], None]

_CLAUSE_END = re.compile(r"[.!?…]+[\"')\]]*\s|[,;:—]\s")
FIRST_CLAUSE_WORDS = 4
"""The first clause ends at its first punctuation, or after this many words if it has none by then: the
voice starts after a few words, not a whole sentence (the engine speaks a clause at a time, taking longer
the longer it is)."""
_FIRST_WORDS = re.compile(rf"\s*(?:\S+\s+){{{FIRST_CLAUSE_WORDS}}}")
CLAUSE_WORDS = 8
"""Later clauses end at a comma only after this many words (fewer, longer clauses sound better)."""
DELTA_MS = 200
"""Audio per ``response.output_audio.delta``."""


class Clauses:
    """Text as it is generated → clauses to speak, each as soon as it ends."""

    def __init__(self) -> None:
        self._text = ""
        self._spoken = 0

    def add(self, text: str) -> list[str]:
        self._text += text
        out: list[str] = []
        while True:
            rest = self._text[self._spoken:]
            first = self._spoken == 0
            cut = None
            for m in _CLAUSE_END.finditer(rest):
                if first or m.group().strip()[0] in ".!?…" or len(rest[:m.end()].split()) >= CLAUSE_WORDS:
                    cut = m.end()
                    break
            if first and (words := _FIRST_WORDS.match(rest)) is not None and (cut is None or words.end() < cut):
                cut = words.end()
            if cut is None:
                return out
            clause = rest[:cut].strip()
            self._spoken += cut
            if any(c.isalnum() for c in clause):
                out.append(clause)

    def rest(self) -> str | None:
        clause = self._text[self._spoken:].strip()
        self._spoken = len(self._text)
        return clause if any(c.isalnum() for c in clause) else None


class Reply:
    """One response, run by :meth:`run` to its ``response.done``."""

    def __init__(self, response: RealtimeResponse, context: list[Item], *, model: RealtimeModel, chat: Chat,
                 registry: Registry, config: Config, meter: Meter, emit: Emit,
                 add_item: Callable[[Item], str | None], rate_limits: list[dict[str, Any]]) -> None:
        self.response = response
        self._context = context
        self._model = model
        self._chat = chat
        self._registry = registry
        self._config = config
        self._meter = meter
        self._emit = emit
        self._add_item = add_item
        self._rate_limits = rate_limits
        self._previous: dict[str, str | None] = {}
        """Each output item's previous item in the conversation."""
        self._task: asyncio.Task[None] | None = None
        self._reason: str | None = None
        self._message: Item | None = None
        self._calls: dict[int, Item] = {}
        self._audio = "audio" in response.settings.modalities
        self._speaking: asyncio.Queue[str | None] = asyncio.Queue()
        self._speaker: asyncio.Task[None] | None = None
        self._clauses = Clauses()

    @property
    def id(self) -> str:
        return self.response.id

    def cancel(self, reason: str) -> None:
        """Stop now; the response ends ``cancelled`` for ``reason`` (``turn_detected``, ``client_cancelled``)."""
        if self._task is not None and not self._task.done() and self._reason is None:
            self._reason = reason
            self._task.cancel()

    async def run(self) -> None:
        r = self.response
        self._emit(event("response.created", response=response_object(r)))
        self._emit(event("rate_limits.updated", rate_limits=self._rate_limits))
        self._task = asyncio.create_task(self._produce())
        try:
            await asyncio.wait({self._task})
        except asyncio.CancelledError:  # the session is closing: stop at once, say nothing more
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            raise
        if self._task.cancelled():
            r.status, r.details = "cancelled", {"type": "cancelled", "reason": self._reason or "client_cancelled"}
        elif (error := self._task.exception()) is not None:
            wire = wire_error(error, "make this response")
            r.status = "failed"
            r.details = {"type": "failed", "error": {"type": wire.kind, "code": wire.code, "message": wire.message}}
        elif r.status == "in_progress":
            r.status, r.details = "completed", None
        self._close_items("incomplete" if r.status != "completed" else "completed")
        self._emit(event("response.done", response=response_object(r)))

    # -- the work ---------------------------------------------------------------------------------------

    async def _produce(self) -> None:
        s = self.response.settings
        messages = [ChatMessage(role="system", content=s.instructions)] if s.instructions else []
        messages += chat_messages(self._context)
        request = ChatRequest(messages=tuple(messages),
                              sampling=SamplingParams(max_tokens=s.max_output_tokens, temperature=s.temperature),
                              tools=tools_of(s.tools), tool_choice=tool_choice_of(s.tool_choice)
                              if s.tools else "none")
        request = await resolve_chat_images(self._config, self._registry, self._model.llm, request)
        if self._audio:
            self._speaker = asyncio.create_task(self._speak())
        try:
            events = await self._chat.stream(self._model.llm, request, self._meter)
            try:
                async for item in events:
                    self._on_chat(item)
            finally:
                await events.aclose()
            if self._speaker is not None:
                self._speaking.put_nowait(self._clauses.rest())
                self._speaking.put_nowait(None)
                await self._speaker
        finally:
            if self._speaker is not None and not self._speaker.done():
                self._speaker.cancel()
                with contextlib.suppress(BaseException):
                    await self._speaker

    def _on_chat(self, item: Any) -> None:
        if isinstance(item, TextDelta) and item.index == 0 and item.text:
            message = self._open_message()
            part = message.content[0]
            fields = self._where(message)
            if self._audio:
                part.transcript = (part.transcript or "") + item.text
                self._emit(event("response.output_audio_transcript.delta", **fields, delta=item.text))
                for clause in self._clauses.add(item.text):
                    self._speaking.put_nowait(clause)
            else:
                part.text = (part.text or "") + item.text
                self._emit(event("response.output_text.delta", **fields, delta=item.text))
        elif isinstance(item, CallOpened) and item.index == 0:
            call = Item(new_id("item"), "function_call", status="in_progress", call_id=item.id, name=item.name,
                        arguments="")
            self._calls[item.call] = call
            self._add_output(call)
        elif isinstance(item, CallDelta) and item.index == 0:
            call = self._calls[item.call]
            call.arguments = (call.arguments or "") + item.fragment
            self._emit(event("response.function_call_arguments.delta", response_id=self.id, item_id=call.id,
                             output_index=self._index(call), call_id=call.call_id, delta=item.fragment))
        elif isinstance(item, ChoiceFinished) and item.index == 0:
            self.response.usage = item.usage
            if item.reason == "length":
                self.response.status = "incomplete"
                self.response.details = {"type": "incomplete", "reason": "max_output_tokens"}
            for call in self._calls.values():
                self._emit(event("response.function_call_arguments.done", response_id=self.id, item_id=call.id,
                                 output_index=self._index(call), call_id=call.call_id, name=call.name,
                                 arguments=call.arguments))
                self._finish_item(call, "completed")
        elif isinstance(item, AnswerEnd):
            self.response.usage = item.usage

    async def _speak(self) -> None:
        """Speak each clause as it comes, on one lease of the voice for the whole response."""
        s = self.response.settings
        lease = None
        try:
            while (clause := await self._speaking.get()) is not None:
                if lease is None:
                    lease = await self._registry.acquire(self._model.tts, SPEECH)
                    voice = _voice(s.voice, lease.backend.voices, lease.backend.default_voice)
                    fmt = {"linear16": "pcm", "mulaw": "mulaw", "alaw": "alaw"}[s.output_format.encoding]
                    speaker = Voice(lease, voice, AudioOutput(fmt, s.output_format.sample_rate), s.speed)
                await self._say(speaker, clause)
        finally:
            if lease is not None:
                lease.release()

    async def _say(self, speaker: Voice, clause: str) -> None:
        s = self.response.settings
        message = self._open_message()
        part = message.content[0]
        bytes_per_ms = s.output_format.sample_rate * (2 if s.output_format.encoding == "linear16" else 1) // 1000
        step = bytes_per_ms * DELTA_MS
        pending = b""
        async for spoken in speaker.speak(clause):
            if not isinstance(spoken, SpeechAudio):
                continue
            pending += spoken.data
            while len(pending) >= step:
                self._send_audio(message, part, pending[:step], bytes_per_ms)
                pending = pending[step:]
        if pending:
            self._send_audio(message, part, pending, bytes_per_ms)
        part.spoken.append((part.audio_ms, len(self._clauses_spoken(part, clause))))

    def _clauses_spoken(self, part: Part, clause: str) -> str:
        """The transcript up to and including ``clause`` (its last occurrence after what was spoken before)."""
        transcript = part.transcript or ""
        done = part.spoken[-1][1] if part.spoken else 0
        at = transcript.find(clause, done)
        return transcript[:at + len(clause)] if at >= 0 else transcript

    def _send_audio(self, message: Item, part: Part, data: bytes, bytes_per_ms: int) -> None:
        part.audio_ms += -(-len(data) // bytes_per_ms)
        self._emit(event("response.output_audio.delta", **self._where(message),
                         delta=base64.b64encode(data).decode()))

    # -- items ------------------------------------------------------------------------------------------

    def _open_message(self) -> Item:
        if self._message is None:
            kind = "output_audio" if self._audio else "output_text"
            message = Item(new_id("item"), "message", status="in_progress", role="assistant",
                           content=[Part(kind, text="" if not self._audio else None,
                                         transcript="" if self._audio else None)])
            self._message = message
            self._add_output(message, with_content=False)
            part = {"type": "audio", "transcript": ""} if self._audio else {"type": "text", "text": ""}
            self._emit(event("response.content_part.added", **{**self._where(message), "part": part}))
        return self._message

    def _add_output(self, item: Item, *, with_content: bool = True) -> None:
        self.response.output.append(item)
        shown = item_object(item if with_content else replace(item, content=[]))
        self._emit(event("response.output_item.added", response_id=self.id, output_index=self._index(item),
                         item=shown))
        if self.response.in_conversation:
            previous = self._previous[item.id] = self._add_item(item)
            self._emit(event("conversation.item.added", previous_item_id=previous, item=shown))

    def _finish_item(self, item: Item, status: str) -> None:
        if item.status != "in_progress":
            return
        item.status = "incomplete" if status != "completed" else "completed"
        shown = item_object(item)
        self._emit(event("response.output_item.done", response_id=self.id, output_index=self._index(item),
                         item=shown))
        if self.response.in_conversation:
            self._emit(event("conversation.item.done", previous_item_id=self._previous.get(item.id), item=shown))

    def _close_items(self, status: str) -> None:
        message = self._message
        if message is not None and message.status == "in_progress":
            part = message.content[0]
            fields = self._where(message)
            if self._audio:
                self._emit(event("response.output_audio.done", **fields))
                self._emit(event("response.output_audio_transcript.done", **fields, transcript=part.transcript))
                shown = {"type": "audio", "transcript": part.transcript}
            else:
                self._emit(event("response.output_text.done", **fields, text=part.text))
                shown = {"type": "text", "text": part.text}
            self._emit(event("response.content_part.done", **{**fields, "part": shown}))
            self._finish_item(message, status)
        for call in self._calls.values():
            self._finish_item(call, status)

    def _index(self, item: Item) -> int:
        return self.response.output.index(item)

    def _where(self, item: Item) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": item.id, "output_index": self._index(item), "content_index": 0}


def wire_error(error: BaseException, doing: str) -> GatewayError:
    """What the client is told of ``error``: its own words for a gateway or domain error; for anything else
    (logged here, with its trace) that the server failed to do ``doing``."""
    if isinstance(error, GatewayError | DomainError):
        return as_wire(error)
    log.error("realtime: failed to %s", doing, exc_info=error)
    return ServerFailure(f"The server failed to {doing}.", code="server_error")


def error_for(error: BaseException, doing: str, event_id: str | None = None) -> dict[str, Any]:
    """An ``error`` event for ``error`` (the client's ``event_id`` it answers, if any)."""
    wire = wire_error(error, doing)
    return error_event(wire.kind, wire.message, code=wire.code, param=wire.param, event_id=event_id)


def _voice(asked: str, voices: list[str], default: str) -> str:
    """The speech model's voice for ``asked``: its own of that name, its default for an OpenAI voice it lacks."""
    if asked in voices:
        return asked
    if asked in OPENAI_VOICES:
        return default
    raise InvalidRequest(f"The voice '{asked}' is not one of this model's: {', '.join(voices)}.",
                         param="session.audio.output.voice", code="invalid_value")

