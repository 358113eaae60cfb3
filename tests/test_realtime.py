"""The Realtime API (``/v1/realtime``), driven by the OpenAI SDK's realtime client against the real engines.

Speech is the gateway's own (``tts-1``, pcm 24 kHz), appended in 100 ms chunks. Turn detection works on
the audio's own clock, so most tests send it faster than real time; the answers are SmolLM2's, so the
tests judge what the server did with them (events in order, audio that is audio, transcripts close to
what was said), not what the model said.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jiwer
import numpy as np
import pytest
from conftest import Gateway
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from compat.openai.realtime_items import Part
from gateway.serving.realtime import spoken_until
from gateway.serving.realtime_reply import Clauses

pytestmark = pytest.mark.timeout(300)

RATE = 24000
CHUNK = 2 * RATE // 10
QUESTION = "What is the capital of France?"
VAD = {"type": "server_vad", "silence_duration_ms": 200}


def _normal(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c == " ").split())


def _wer(said: str, heard: str) -> float:
    return float(jiwer.wer(_normal(said), _normal(heard) or "<empty>"))


_speech: dict[tuple[str, str], bytes] = {}


def speak(gateway: Gateway, text: str, fmt: str = "pcm") -> bytes:
    """``text`` in the gateway's voice: pcm 24 kHz, or G.711 (``mulaw``, ``alaw``) at 8 kHz (Deepgram's speak
    route)."""
    if (text, fmt) not in _speech:
        if fmt == "pcm":
            body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}
            audio = httpx.post(f"{gateway.url}/v1/audio/speech", json=body, timeout=120)
        else:
            audio = httpx.post(f"{gateway.url}/v1/speak?model=aura-asteria-en&encoding={fmt}&sample_rate=8000"
                               "&container=none", json={"text": text}, timeout=120)
        audio.raise_for_status()
        _speech[(text, fmt)] = audio.content
    return _speech[(text, fmt)]


@asynccontextmanager
async def realtime(gateway: Gateway, **query: str) -> AsyncIterator[AsyncRealtimeConnection]:
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    async with client.realtime.connect(model=query.pop("model", "gpt-realtime"), extra_query=query) as conn:
        yield conn


async def append(conn: AsyncRealtimeConnection, pcm: bytes, *, silence_s: float = 1.0, chunk: int = CHUNK,
                 pace: float = 0.0) -> None:
    """``pcm`` then silence, in chunks (``pace`` seconds apart)."""
    audio = pcm + bytes(int(silence_s * RATE * 2) // chunk * chunk)
    for i in range(0, len(audio), chunk):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + chunk]).decode())
        if pace:
            await asyncio.sleep(pace)


async def until(conn: AsyncRealtimeConnection, kind: str, seen: list[Any], within: float = 90) -> Any:
    """Read events into ``seen`` up to the first of type ``kind`` (returned)."""
    async with asyncio.timeout(within):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return event
    raise AssertionError(f"the socket closed before {kind}")


def types(seen: list[Any]) -> list[str]:
    return [e.type for e in seen]


def audio_of(seen: list[Any]) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta")


def test_a_spoken_turn_is_heard_answered_and_spoken(gateway: Gateway) -> None:
    pcm = speak(gateway, QUESTION)

    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            created = await until(conn, "session.created", seen)
            assert created.session.type == "realtime"
            await conn.session.update(session={"type": "realtime", "max_output_tokens": 40, "temperature": 0,
                                               "audio": {"input": {
                "transcription": {"model": "whisper-1"}, "turn_detection": VAD}}})
            updated = await until(conn, "session.updated", seen)
            assert updated.session.audio.input.turn_detection.silence_duration_ms == 200
            await append(conn, bytes(2 * RATE) + pcm, silence_s=1.0)
            await until(conn, "response.done", seen)
            return seen

    seen = asyncio.run(run())
    kinds = types(seen)
    started = next(e for e in seen if e.type == "input_audio_buffer.speech_started")
    stopped = next(e for e in seen if e.type == "input_audio_buffer.speech_stopped")
    committed = next(e for e in seen if e.type == "input_audio_buffer.committed")
    assert started.item_id == stopped.item_id == committed.item_id
    assert 300 <= started.audio_start_ms <= 1000  # the speech starts 1 s in, less the prefix padding
    assert stopped.audio_end_ms > started.audio_start_ms + 1000
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert heard.item_id == committed.item_id and _wer(QUESTION, heard.transcript) <= 0.2
    assert heard.usage.type == "duration" and heard.usage.seconds > 1
    # The response's events in the order clients rely on.
    order = ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "conversation.item.added",
             "response.created", "response.output_item.added", "response.content_part.added",
             "response.output_audio_transcript.delta", "response.output_audio.delta", "response.output_audio.done",
             "response.output_audio_transcript.done", "response.content_part.done", "response.output_item.done",
             "response.done"]
    positions = [kinds.index(kind) for kind in order]
    assert positions == sorted(positions), kinds
    done = seen[-1].response
    assert done.status in ("completed", "incomplete") and done.usage.input_tokens > 10 and done.usage.output_tokens > 0
    (item,) = done.output
    assert item.role == "assistant" and item.content[0].type == "output_audio"
    transcript = next(e for e in seen if e.type == "response.output_audio_transcript.done").transcript
    assert transcript == item.content[0].transcript and transcript.strip()
    deltas = "".join(e.delta for e in seen if e.type == "response.output_audio_transcript.delta")
    assert deltas == transcript
    audio = audio_of(seen)
    assert len(audio) % 2 == 0 and len(audio) > RATE  # over half a second of 16-bit audio at 24 kHz
    samples = np.frombuffer(audio, dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(samples ** 2)) > 300  # speech, not silence
    assert 8 < len(transcript) / (len(samples) / RATE) < 30  # as long as its transcript takes to say
    spoken = httpx.post(f"{gateway.url}/v1/audio/transcriptions", timeout=60,
                        files={"file": ("a.wav", _wav(audio), "audio/wav")}, data={"model": "whisper-1"})
    assert spoken.status_code == 200, spoken.text
    said, heard = set(_normal(transcript).split()), set(_normal(spoken.json()["text"]).split())
    assert len(said & heard) >= len(said) / 2  # the audio says the transcript


def _wav(pcm: bytes, rate: int = RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def test_a_text_turn_answers_in_text(gateway: Gateway) -> None:
    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                               "instructions": "Answer in one sentence.", "max_output_tokens": 24})
            await conn.conversation.item.create(item={"type": "message", "role": "user", "id": "item_mine",
                                                      "content": [{"type": "input_text", "text": "Say hello."}]})
            added = await until(conn, "conversation.item.added", seen)
            assert added.item.id == "item_mine" and added.item.content[0].text == "Say hello."
            await conn.response.create(response={"metadata": {"client_event_id": "abc"}})
            created = await until(conn, "response.created", seen)
            assert created.response.metadata == {"client_event_id": "abc"}
            await until(conn, "response.done", seen)
            await conn.conversation.item.retrieve(item_id="item_mine")
            retrieved = await until(conn, "conversation.item.retrieved", seen)
            assert retrieved.item.id == "item_mine"
            return seen

    seen = asyncio.run(run())
    done = next(e.response for e in seen if e.type == "response.done")
    assert done.status in ("completed", "incomplete") and done.output_modalities == ["text"]
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert text.strip() and text == next(e.text for e in seen if e.type == "response.output_text.done")
    assert done.output[0].content[0].type == "output_text" and done.output[0].content[0].text == text
    part = next(e for e in seen if e.type == "response.content_part.added").part
    assert part.type == "text"
    assert not [e for e in seen if e.type.startswith("response.output_audio")]


def test_a_function_call_round_trip(gateway: Gateway) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

    async def run() -> tuple[list[Any], list[Any]]:
        async with realtime(gateway) as conn:
            first: list[Any] = []
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [tool],
                                               "tool_choice": "required"})
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is the weather in Paris?"}]})
            await conn.response.create()
            await until(conn, "response.done", first)
            call = first[-1].response.output[0]
            await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                      "output": json.dumps({"weather": "sunny, 21 C"})})
            await conn.session.update(session={"type": "realtime", "tool_choice": "auto"})
            await conn.response.create()
            second: list[Any] = []
            await until(conn, "response.done", second)
            return first, second

    first, second = asyncio.run(run())
    call = first[-1].response.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert isinstance(json.loads(call.arguments).get("city"), str)
    added = next(e for e in first if e.type == "conversation.item.added" and e.item.type == "function_call")
    done = next(e for e in first if e.type == "response.function_call_arguments.done")
    assert added.item.call_id == done.call_id == call.call_id and done.name == "get_weather"
    assert done.arguments == call.arguments
    deltas = "".join(e.delta for e in first if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments
    answer = second[-1].response
    assert answer.status in ("completed", "incomplete") and answer.output
    # The model read the call and its output: the same prompt as the first, and them.
    assert answer.usage.input_tokens > first[-1].response.usage.input_tokens


def test_speech_during_a_response_interrupts_it(gateway: Gateway) -> None:
    """Barge-in: the response is cancelled (turn_detected), the client truncates it to what it played, and
    the new turn is answered."""
    question, interruption = speak(gateway, QUESTION), speak(gateway, "Tell me about Spain instead.")

    async def run() -> tuple[list[Any], Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={
                "type": "realtime", "instructions": "Tell a very long story.", "temperature": 0,
                "max_output_tokens": 400,
                "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": VAD}}})
            await append(conn, question)
            await until(conn, "response.output_audio.delta", seen)
            first = next(e.response.id for e in seen if e.type == "response.created")
            await append(conn, interruption, silence_s=1.5)
            done = await until(conn, "response.done", seen)
            assert done.response.id == first
            item = done.response.output[0]
            await conn.conversation.item.truncate(item_id=item.id, content_index=0, audio_end_ms=300)
            truncated = await until(conn, "conversation.item.truncated", seen)
            await conn.conversation.item.retrieve(item_id=item.id)
            retrieved = await until(conn, "conversation.item.retrieved", seen)
            second = await until(conn, "response.done", seen)
            assert truncated.audio_end_ms == 300
            return seen, (done.response, retrieved.item, second.response)

    seen, (cancelled, kept, answered) = asyncio.run(run())
    assert cancelled.status == "cancelled" and cancelled.status_details.reason == "turn_detected"
    assert cancelled.output[0].status == "incomplete"
    said = cancelled.output[0].content[0].transcript
    assert len(kept.content[0].transcript) < len(said)  # only what played in 300 ms is kept
    assert answered.status in ("completed", "incomplete") and answered.id != cancelled.id
    heard = [e.transcript for e in seen if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(heard) == 2 and _wer("Tell me about Spain instead.", heard[1]) <= 0.3


def test_response_cancel(gateway: Gateway) -> None:
    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "instructions": "Tell a very long story.",
                                               "temperature": 0, "max_output_tokens": 400})
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Tell me a story about a dragon."}]})
            await conn.response.create()
            await until(conn, "response.output_audio_transcript.delta", seen)
            await conn.response.cancel()
            await until(conn, "response.done", seen)
            await conn.response.cancel(event_id="again")
            await until(conn, "error", seen)
            await conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
            await until(conn, "session.updated", seen)
            return seen

    seen = asyncio.run(run())
    done = next(e.response for e in seen if e.type == "response.done")
    assert done.status == "cancelled" and done.status_details.reason == "client_cancelled"
    error = next(e.error for e in seen if e.type == "error")
    assert error.code == "response_cancel_not_active" and error.event_id == "again"
    assert seen[-1].session.instructions == "Be brief."  # the socket serves on


def test_transcription_session(gateway: Gateway) -> None:
    """``?intent=transcription``: what pipecat's and LiveKit's realtime STT use; only hearing events."""
    pcm = speak(gateway, QUESTION)

    async def run() -> list[Any]:
        client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            seen: list[Any] = []
            created = await until(conn, "session.created", seen)
            assert created.session.type == "transcription"
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"model": "gpt-4o-transcribe", "language": "en"}, "turn_detection": VAD}}})
            await until(conn, "session.updated", seen)
            await append(conn, pcm, pace=0.05)
            await until(conn, "conversation.item.input_audio_transcription.completed", seen)
            await conn.response.create()
            await until(conn, "error", seen)
            return seen

    seen = asyncio.run(run())
    completed = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert _wer(QUESTION, completed.transcript) <= 0.2
    deltas = [e for e in seen if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas and all(e.item_id == completed.item_id and e.content_index == 0 for e in deltas)
    assert "".join(e.delta for e in deltas).strip()
    assert not [k for k in types(seen) if k.startswith("response.")]
    assert seen[-1].error.type == "invalid_request_error"


@pytest.mark.parametrize(("encoding", "wire"), [("mulaw", "audio/pcmu"), ("alaw", "audio/pcma")])
def test_manual_commit_and_g711(gateway: Gateway, encoding: str, wire: str) -> None:
    """No turn detection: the client commits, then asks for the response; audio in and out as G.711."""
    mulaw = speak(gateway, QUESTION, encoding)

    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "max_output_tokens": 40, "audio": {
                "input": {"format": {"type": wire}, "turn_detection": None,
                          "transcription": {"model": "whisper-1"}},
                "output": {"format": {"type": wire}, "voice": "marin"}}})
            await conn.input_audio_buffer.commit(event_id="too-soon")
            await until(conn, "error", seen)
            for i in range(0, len(mulaw), 800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(mulaw[i:i + 800]).decode())
            await conn.input_audio_buffer.commit()
            await until(conn, "conversation.item.input_audio_transcription.completed", seen)
            await conn.response.create()
            await until(conn, "response.done", seen)
            return seen

    seen = asyncio.run(run())
    error = next(e.error for e in seen if e.type == "error")
    assert error.code == "input_audio_buffer_commit_empty" and error.event_id == "too-soon"
    assert "input_audio_buffer.speech_started" not in types(seen)
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert _wer(QUESTION, heard.transcript) <= 0.25
    done = seen[-1].response
    assert done.audio.output.format.type == wire
    audio = audio_of(seen)
    seconds = len(audio) / 8000  # one byte a sample at 8 kHz
    assert seconds > 0.5 and done.output[0].content[0].transcript


def _errors(gateway: Gateway, messages: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    """Each message sent raw, each answer's error; then a session.update still works."""
    url = gateway.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    errors = []
    with connect(url) as ws:
        assert json.loads(ws.recv())["type"] == "session.created"
        ws.recv()
        for message in messages:
            ws.send(message if isinstance(message, str) else json.dumps(message))
            answer = json.loads(ws.recv())
            assert answer["type"] == "error", answer
            errors.append(answer["error"])
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "ok"}}))
        assert json.loads(ws.recv())["type"] == "session.updated"
    return errors


def test_bad_events_are_error_events_and_the_socket_serves_on(gateway: Gateway) -> None:
    errors = _errors(gateway, [
        "not json",
        {"type": "input_audio_buffer.explode", "event_id": "e1"},
        {"type": "input_audio_buffer.append", "audio": "%%%not base64", "event_id": "e2"},
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00").decode()},
        {"type": "session.update", "session": {"type": "realtime", "colour": "blue"}, "event_id": "e3"},
        {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/mp3"}}}}},
        {"type": "session.update", "session": {"audio": {"output": {"voice": "nobody"}}}},
        {"type": "session.update", "session": {"type": "transcription"}},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "robot", "content": []}},
        {"type": "conversation.item.delete", "item_id": "item_nope"},
        {"type": "input_audio_buffer.append", "audio": "A" * (1024 * 1024 + 4)},
    ])
    assert errors[0]["code"] == "invalid_json"
    assert errors[1]["param"] == "type" and errors[1]["event_id"] == "e1"
    assert errors[2]["event_id"] == "e2" and "base64" in errors[2]["message"]
    assert errors[3]["param"] == "audio"
    assert errors[4]["param"] == "session.colour" and errors[4]["event_id"] == "e3"
    assert errors[5]["param"] == "session.audio.input.format.type"
    assert errors[6]["param"] == "session.audio.output.voice"
    assert errors[7]["param"] == "session.type"
    assert errors[8]["param"] == "item.role"
    assert errors[9]["code"] == "item_delete_invalid_item_id"
    assert errors[10]["code"] == "event_too_large"
    assert all(e["type"] == "invalid_request_error" and e["message"] for e in errors)


def test_a_wrong_model_is_an_error_and_a_close(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-4o-mini"
    with connect(url) as ws:
        answer = json.loads(ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert answer["type"] == "error" and answer["error"]["code"] == "model_not_found"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_the_realtime_subprotocol_is_echoed(gateway: Gateway) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    with connect(url, subprotocols=["realtime", "openai-insecure-api-key.unused"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        assert json.loads(ws.recv())["type"] == "session.created"



def test_semantic_vad_ends_the_turn_by_what_was_said(gateway: Gateway) -> None:
    pcm = speak(gateway, QUESTION)

    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                               "max_output_tokens": 16, "audio": {"input": {
                                                   "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}})
            await append(conn, pcm, silence_s=2.5)
            await until(conn, "response.done", seen)
            return seen

    seen = asyncio.run(run())
    stopped = next(e for e in seen if e.type == "input_audio_buffer.speech_stopped")
    started = next(e for e in seen if e.type == "input_audio_buffer.speech_started")
    assert stopped.item_id == started.item_id and stopped.audio_end_ms > started.audio_start_ms
    # No transcription was asked for: the client is not sent one, but the model heard the words.
    assert "conversation.item.input_audio_transcription.completed" not in types(seen)
    user = next(e.item for e in seen if e.type == "conversation.item.added" and e.item.role == "user")
    assert user.content[0].type == "input_audio" and user.content[0].transcript is None
    assert seen[-1].response.usage.input_tokens > 15


def test_idle_timeout_prompts_a_response(gateway: Gateway) -> None:
    """server_vad's ``idle_timeout_ms``: no speech for that long after a response, and the model goes on."""
    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                               "max_output_tokens": 12, "audio": {"input": {"turn_detection": {
                                                   "type": "server_vad", "idle_timeout_ms": 5000}}}})
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Hello there."}]})
            await conn.response.create()
            await until(conn, "response.done", seen)
            await append(conn, b"", silence_s=0.5)
            timed_out = await until(conn, "input_audio_buffer.timeout_triggered", seen, within=15)
            await until(conn, "response.done", seen)
            assert timed_out.audio_end_ms >= timed_out.audio_start_ms
            return seen

    seen = asyncio.run(run())
    kinds = types(seen)
    after = kinds[kinds.index("input_audio_buffer.timeout_triggered"):]
    assert after.index("input_audio_buffer.committed") < after.index("response.created") < after.index("response.done")
    assert kinds.count("response.done") == 2


def _clauses(text: str, step: int = 3) -> list[str]:
    cutter = Clauses()
    out = [clause for i in range(0, len(text), step) for clause in cutter.add(text[i:i + step])]
    return [*out, *filter(None, [cutter.rest()])]


def test_the_first_clause_is_a_few_words_and_the_rest_are_clauses() -> None:
    """The voice starts after a few words; later clauses end at sentence ends, or commas in long ones."""
    assert _clauses("France is indeed the capital of Europe. It has a long history.") == [
        "France is indeed the", "capital of Europe.", "It has a long history."]
    assert _clauses("Sure. Here you go, my friend.") == ["Sure.", "Here you go, my friend."]
    assert _clauses("Well, when you get home tonight, after a long day of work, call her.") == [
        "Well,", "when you get home tonight, after a long day of work,", "call her."]
    assert _clauses("...") == []


def test_truncation_keeps_the_words_of_the_audio_that_played() -> None:
    part = Part("output_audio", transcript="One two three. Four five six seven.", audio_ms=3000,
                spoken=[(1000, 14), (3000, 35)])
    assert spoken_until(part, 3000) == part.transcript
    assert spoken_until(part, 1000) == "One two three."
    assert spoken_until(part, 2000) == "One two three. Four five"  # half of the second clause's audio
    assert spoken_until(part, 0) == ""


def test_a_bare_socket_becomes_what_its_first_update_says(gateway: Gateway) -> None:
    """``/v1/realtime`` with neither model nor intent: a ``transcription`` session.update makes it one; on a
    socket opened for a model the type cannot change."""
    base = gateway.url.replace("http://", "ws://") + "/v1/realtime"
    update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "whisper-1"}}}}}
    with connect(base) as ws:
        assert json.loads(ws.recv())["session"]["type"] == "realtime"
        ws.recv()  # conversation.created
        ws.send(json.dumps(update))
        updated = json.loads(ws.recv())
    assert updated["type"] == "session.updated" and updated["session"]["type"] == "transcription"
    assert updated["session"]["object"] == "realtime.transcription_session"
    with connect(base + "?model=gpt-realtime") as ws:
        ws.recv()
        ws.recv()
        ws.send(json.dumps(update))
        refused = json.loads(ws.recv())
    assert refused["type"] == "error" and refused["error"]["param"] == "session.type"


def _until_closed(ws: Any) -> Any:
    """The close frame the server sent, once every event before it is read."""
    try:
        while True:
            ws.recv(timeout=60)
    except ConnectionClosed as e:
        return e.rcvd


def test_a_client_that_reads_nothing_is_closed_not_buffered_for(gateway: Gateway) -> None:
    """Tens of thousands of events answered with errors it never reads (more than the sockets' buffers
    hold): the session is closed (1008)."""
    url = gateway.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"
    with connect(url, max_size=None) as ws:
        bad = json.dumps({"type": "no.such.event"})
        for _ in range(60_000):
            try:
                ws.send(bad)
            except ConnectionClosed:
                break
        closed = _until_closed(ws)
    assert closed is not None and closed.code == 1008 and "unread" in closed.reason
    with connect(url) as ws:  # the server serves on
        assert json.loads(ws.recv())["type"] == "session.created"


def test_clear_delete_and_the_output_buffer(gateway: Gateway) -> None:
    """input_audio_buffer.clear, conversation.item.delete, output_audio_buffer.clear with nothing playing,
    and the rate limits a response starts with."""
    async def run() -> list[Any]:
        async with realtime(gateway) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                               "max_output_tokens": 8, "audio": {"input": {"turn_detection": None}}})
            await append(conn, bytes(4800), silence_s=0)
            await conn.input_audio_buffer.clear()
            await until(conn, "input_audio_buffer.cleared", seen)
            await conn.input_audio_buffer.commit()  # the cleared buffer holds nothing to commit
            await until(conn, "error", seen)
            for item_id in ("item_gone", "item_kept"):
                await conn.conversation.item.create(item={"type": "message", "role": "user", "id": item_id,
                                                          "content": [{"type": "input_text", "text": "Hello."}]})
                await until(conn, "conversation.item.done", seen)
            await conn.conversation.item.delete(item_id="item_gone")
            await until(conn, "conversation.item.deleted", seen)
            await conn.conversation.item.retrieve(item_id="item_gone", event_id="where")
            await until(conn, "error", seen)
            await conn.response.create()
            await until(conn, "response.done", seen)
            await conn.output_audio_buffer.clear()
            await until(conn, "output_audio_buffer.cleared", seen)
            return seen

    seen = asyncio.run(run())
    errors = [e.error for e in seen if e.type == "error"]
    assert errors[0].code == "input_audio_buffer_commit_empty"
    assert errors[1].code == "item_retrieve_invalid_item_id" and errors[1].event_id == "where"
    assert next(e for e in seen if e.type == "conversation.item.deleted").item_id == "item_gone"
    limits = next(e for e in seen if e.type == "rate_limits.updated").rate_limits
    assert limits[0].name == "requests" and limits[0].limit is not None and limits[0].remaining < limits[0].limit
    done = next(e.response for e in seen if e.type == "response.done")
    assert done.usage.input_tokens > 0
