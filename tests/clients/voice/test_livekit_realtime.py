"""LiveKit Agents' OpenAI Realtime plugin given only the gateway's address (``/v1/realtime``), driven directly
(``RealtimeModel.session()``, ``push_audio()``, ``generate_reply()``; ``STT(use_realtime=True).stream()``) with
no room and no job: what LiveKit makes of the server's events, as its session events and generations.

LiveKit does not wait for ``session.created``: its ``session.update`` goes first. It parses server events
without validation but asserts and indexes the fields it uses, so a missing one shows as a generation that
never comes or never ends, and an ``error`` event as the session's ``error``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
from conftest import QUESTION, SPOKEN, check_answer_speech, similarity
from livekit import rtc
from livekit.agents import llm, stt, utils
from livekit.plugins import openai
from test_livekit import _microphone

pytestmark = pytest.mark.timeout(180)

RATE = 24000
_FINAL = stt.SpeechEventType.FINAL_TRANSCRIPT


@dataclass
class _Seen:
    """What a session told: its events by name, the raw server events, and its errors."""

    transcripts: list[llm.InputTranscriptionCompleted] = field(default_factory=list)
    generations: list[llm.GenerationCreatedEvent] = field(default_factory=list)
    server: list[dict[str, Any]] = field(default_factory=list)
    errors: list[llm.RealtimeModelError] = field(default_factory=list)
    spoke: list[str] = field(default_factory=list)
    generated: asyncio.Event = field(default_factory=asyncio.Event)
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on the first ``generation_created``, and on the first ``response.done`` from the server."""

    def on_server_event(self, event: dict[str, Any]) -> None:
        self.server.append(event)
        if event["type"] == "response.done":
            self.responded.set()

    def on_generation(self, generation: llm.GenerationCreatedEvent) -> None:
        self.generations.append(generation)
        self.generated.set()


@asynccontextmanager
async def _session(gateway: Any, **options: Any) -> AsyncIterator[tuple[llm.RealtimeSession, _Seen]]:
    """A RealtimeSession of the plugin's model with its defaults (gpt-realtime, marin, gpt-4o-mini-transcribe,
    semantic VAD) but ``options``, on an HTTP session of the test's, and what it reports."""
    async with aiohttp.ClientSession() as http:
        model = openai.realtime.RealtimeModel(base_url=f"{gateway.url}/v1", api_key="sk-test", http_session=http,
                                              **options)
        session = model.session()
        seen = _Seen()
        session.on("input_audio_transcription_completed", seen.transcripts.append)
        session.on("generation_created", seen.on_generation)
        session.on("openai_server_event_received", seen.on_server_event)
        session.on("error", seen.errors.append)
        session.on("input_speech_started", lambda _: seen.spoke.append("started"))
        session.on("input_speech_stopped", lambda _: seen.spoke.append("stopped"))
        session.update_options(max_response_output_tokens=24)
        try:
            yield session, seen
        finally:
            await session.aclose()
            await model.aclose()


@dataclass
class _Reply:
    """One generation as LiveKit gives it: each message's text and audio, and its function calls."""

    text: str = ""
    audio: bytes = b""
    rates: set[tuple[int, int]] = field(default_factory=set)
    modalities: list[list[str]] = field(default_factory=list)
    calls: list[llm.FunctionCall] = field(default_factory=list)


async def _drain(generation: llm.GenerationCreatedEvent) -> _Reply:
    """Read a generation to its end (its streams close on the server's ``output_item.done``/``response.done``)."""
    reply = _Reply()
    async for message in generation.message_stream:
        async for delta in message.text_stream:
            reply.text += delta
        async for frame in message.audio_stream:
            reply.audio += bytes(frame.data)
            reply.rates.add((frame.sample_rate, frame.num_channels))
        reply.modalities.append(list(await message.modalities))
    async for call in generation.function_stream:
        reply.calls.append(call)
    return reply


async def _speak(session: llm.RealtimeSession, pcm: bytes) -> None:
    """10 ms frames of 24 kHz audio, pushed in real time (the server's VAD weighs pauses as they come)."""
    step = RATE // 100
    samples = np.frombuffer(pcm, dtype="<i2")
    for i in range(0, len(samples), step):
        chunk = samples[i:i + step]
        session.push_audio(rtc.AudioFrame(data=chunk.tobytes(), sample_rate=RATE, num_channels=1,
                                          samples_per_channel=len(chunk)))
        await asyncio.sleep(0.01)


def _check_speech(gateway: Any, reply: _Reply) -> None:
    """The reply's audio is 24 kHz mono speech of its transcript."""
    assert reply.rates == {(RATE, 1)}, reply.rates
    check_answer_speech(gateway, reply.audio, RATE, reply.text)


def test_a_spoken_question_is_heard_and_answered(gateway: Any, question_24k: bytes) -> None:
    """Audio pushed in real time: the server's VAD turns it into a user turn LiveKit hears transcribed
    (``input_audio_transcription_completed``, final), then a generation it did not ask for, whose message
    carries the answer's audio and its transcript as text."""
    async def run() -> tuple[_Seen, _Reply, llm.ChatContext]:
        async with _session(gateway) as (session, seen):
            await _speak(session, question_24k)
            await asyncio.wait_for(seen.generated.wait(), 30)
            reply = await asyncio.wait_for(_drain(seen.generations[0]), 60)
            await asyncio.wait_for(seen.responded.wait(), 10)
            return seen, reply, session.chat_ctx.copy()

    seen, reply, chat = asyncio.run(run())
    assert not seen.errors, [e.error for e in seen.errors]
    assert not [e for e in seen.server if e["type"] == "error"], seen.server
    assert seen.spoke[:2] == ["started", "stopped"], seen.spoke
    finals = [t for t in seen.transcripts if t.is_final]
    assert len(finals) == 1 and similarity(QUESTION, finals[0].transcript) > 0.8, finals
    assert len(seen.generations) == 1 and not seen.generations[0].user_initiated
    assert reply.modalities == [["audio", "text"]] and not reply.calls
    assert reply.text.strip()
    _check_speech(gateway, reply)
    # LiveKit's mirror of the conversation: the user's turn with its transcript, then the answer's.
    messages = [m for m in chat.items if m.type == "message"]
    assert [m.role for m in messages] == ["user", "assistant"], messages
    assert messages[0].text_content == finals[0].transcript and messages[1].text_content == reply.text


def test_generate_reply_with_instructions(gateway: Any) -> None:
    """``update_chat_ctx()`` returns once the server has added each item (``conversation.item.added`` for the
    client's id); ``generate_reply(instructions=...)`` returns once ``response.created`` echoes its
    ``metadata.client_event_id``, as a generation LiveKit asked for (``user_initiated``)."""
    async def run() -> tuple[_Seen, llm.GenerationCreatedEvent, _Reply, llm.ChatContext]:
        async with _session(gateway, turn_detection=None) as (session, seen):
            chat = llm.ChatContext()
            chat.add_message(role="user", content="Say hello to Ada.")
            await asyncio.wait_for(session.update_chat_ctx(chat), 10)
            created = await asyncio.wait_for(session.generate_reply(instructions="Greet the user briefly."), 15)
            reply = await asyncio.wait_for(_drain(created), 60)
            await asyncio.wait_for(seen.responded.wait(), 10)
            return seen, created, reply, session.chat_ctx.copy()

    seen, created, reply, chat = asyncio.run(run())
    assert not seen.errors, [e.error for e in seen.errors]
    assert created.user_initiated and created.response_id
    (response,) = [e["response"] for e in seen.server if e["type"] == "response.created"]
    assert response["id"] == created.response_id and response["metadata"]["client_event_id"].startswith(
        "response_create_")
    assert reply.text.strip() and not reply.calls
    _check_speech(gateway, reply)
    messages = [m for m in chat.items if m.type == "message"]
    assert [m.role for m in messages] == ["user", "assistant"] and messages[0].text_content == "Say hello to Ada."


def test_realtime_stt_stream(gateway: Any, speech_16k: bytes) -> None:
    """``openai.STT(use_realtime=True)``: ``?intent=transcription&model=gpt-4o-mini-transcribe`` with LiveKit's
    server VAD; the speech's start and end, and a FINAL_TRANSCRIPT with what was said."""
    async def run() -> list[stt.SpeechEvent]:
        async with utils.http_context.open():
            recognizer = openai.STT(use_realtime=True, base_url=f"{gateway.url}/v1", api_key="sk-test")
            events: list[stt.SpeechEvent] = []

            def heard() -> str:
                return " ".join(e.alternatives[0].text for e in events if e.type == _FINAL)

            async with recognizer.stream() as stream:
                feeder = asyncio.create_task(_microphone(stream, speech_16k, pace=0.01))
                async for event in stream:
                    events.append(event)
                    if similarity(SPOKEN, heard()) > 0.8:
                        break
                await feeder
            await recognizer.aclose()
            return events

    events = asyncio.run(asyncio.wait_for(run(), 60))
    kinds = [e.type for e in events]
    finals = [e for e in events if e.type == _FINAL]
    transcript = " ".join(e.alternatives[0].text for e in finals)
    assert similarity(SPOKEN, transcript) > 0.8, transcript
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH, kinds  # from the server's speech_started
    assert stt.SpeechEventType.END_OF_SPEECH in kinds[:kinds.index(_FINAL)], kinds
    interims = [e.alternatives[0].text for e in events[:kinds.index(_FINAL)]
                if e.type == stt.SpeechEventType.INTERIM_TRANSCRIPT]
    assert interims and all(interims), kinds  # the server's transcription deltas, before the final
    assert all(e.request_id.startswith("item_") and e.alternatives[0].language == "en" for e in finals)
