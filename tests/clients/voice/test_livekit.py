"""LiveKit Agents' Deepgram and OpenAI plugins, each given only the gateway's address, driven directly
(``stt.stream()``, ``tts.synthesize()``, ``llm.chat()``) with no room and no job: the plugins get their
HTTP session from the test, as outside a job LiveKit asks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from conftest import SPOKEN, check_speech, similarity
from livekit import rtc
from livekit.agents import llm, stt, tts
from livekit.agents.llm import function_tool
from livekit.plugins import deepgram, openai
from recording import RecordingProxy, tool_result_reached_next_request

pytestmark = pytest.mark.timeout(180)


async def _microphone(stream: stt.SpeechStream, pcm: bytes, rate: int = 16000, *, pace: float = 0.0025) -> None:
    """10 ms frames, one every ``pace`` seconds (by default about four times real time), then the end of input."""
    step = rate // 100
    samples = np.frombuffer(pcm, dtype="<i2")
    for i in range(0, len(samples), step):
        chunk = samples[i:i + step]
        stream.push_frame(rtc.AudioFrame(data=chunk.tobytes(), sample_rate=rate, num_channels=1,
                                         samples_per_channel=len(chunk)))
        await asyncio.sleep(pace)
    stream.end_input()


def test_deepgram_stt_stream_with_its_defaults(gateway: Any, speech_16k: bytes) -> None:
    async def run() -> list[stt.SpeechEvent]:
        async with aiohttp.ClientSession() as session:
            # nova-3, en-US, interim results, punctuate, filler_words, no_delay, endpointing 25 ms, ...
            recognizer = deepgram.STT(api_key="test", base_url=f"{gateway.url}/v1/listen", http_session=session)
            events: list[stt.SpeechEvent] = []
            async with recognizer.stream() as stream:
                feeder = asyncio.create_task(_microphone(stream, speech_16k))
                async for event in stream:
                    events.append(event)
                await feeder
            return events

    events = asyncio.run(asyncio.wait_for(run(), 120))
    kinds = [e.type for e in events]
    assert stt.SpeechEventType.START_OF_SPEECH in kinds  # vad_events, LiveKit's default
    finals = [e.alternatives[0].text for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    transcript = " ".join(finals)
    assert similarity(SPOKEN, transcript) > 0.85, transcript
    assert transcript[0].isupper() and "." in transcript  # punctuate=True


def test_deepgram_stt_recognize_with_its_defaults(gateway: Any, speech_16k: bytes) -> None:
    """The pre-recorded path: one POST /v1/listen with LiveKit's default options."""
    async def run() -> stt.SpeechEvent:
        async with aiohttp.ClientSession() as session:
            recognizer = deepgram.STT(api_key="test", base_url=f"{gateway.url}/v1/listen", http_session=session)
            samples = len(speech_16k) // 2
            frame = rtc.AudioFrame(data=speech_16k, sample_rate=16000, num_channels=1, samples_per_channel=samples)
            return await recognizer.recognize(frame)

    event = asyncio.run(asyncio.wait_for(run(), 120))
    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    assert similarity(SPOKEN, event.alternatives[0].text) > 0.85, event.alternatives[0].text


SENTENCE = "Hello there, the small boat is ready."


async def _collect(stream: AsyncIterator[tts.SynthesizedAudio]) -> tuple[bytes, int]:
    frames = [event.frame async for event in stream]
    assert frames
    rates = {f.sample_rate for f in frames}
    assert len(rates) == 1 and all(f.num_channels == 1 for f in frames)
    return b"".join(bytes(f.data) for f in frames), rates.pop()


def test_openai_tts(gateway: Any) -> None:
    async def run() -> tuple[bytes, int]:
        voice = openai.TTS(base_url=f"{gateway.url}/v1", api_key="sk-test", voice="alloy")  # gpt-4o-mini-tts
        async with voice.synthesize(SENTENCE) as stream:
            return await _collect(stream)

    pcm, rate = asyncio.run(asyncio.wait_for(run(), 120))
    assert rate == 24000
    check_speech(gateway, pcm, rate, SENTENCE)


def test_deepgram_tts(gateway: Any) -> None:
    async def run() -> tuple[bytes, int]:
        async with aiohttp.ClientSession() as session:
            voice = deepgram.TTS(api_key="test", base_url=f"{gateway.url}/v1/speak",
                                 http_session=session)  # aura-2-andromeda-en, linear16 at 24 kHz
            async with voice.synthesize(SENTENCE) as stream:
                return await _collect(stream)

    pcm, rate = asyncio.run(asyncio.wait_for(run(), 120))
    assert rate == 24000
    check_speech(gateway, pcm, rate, SENTENCE)


def test_openai_llm_with_a_forced_tool(gateway: Any, proxy: RecordingProxy) -> None:
    ran: list[str] = []

    @function_tool
    async def get_weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: The city's name.
        """
        ran.append(city)
        return f"{city}: sunny-and-19C"

    async def run() -> str:
        model = openai.LLM(model="gpt-4o-mini", base_url=f"{proxy.url}/v1", api_key="sk-test", temperature=0)
        ctx = llm.ChatContext()
        ctx.add_message(role="user", content="What is the weather in Paris?")
        calls: list[llm.FunctionToolCall] = []
        async with model.chat(chat_ctx=ctx, tools=[get_weather],
                              tool_choice={"type": "function", "function": {"name": "get_weather"}}) as stream:
            async for chunk in stream:
                if chunk.delta is not None:
                    calls += chunk.delta.tool_calls
        assert len(calls) == 1 and calls[0].name == "get_weather", calls
        output = await get_weather(**json.loads(calls[0].arguments))
        ctx.items.append(llm.FunctionCall(call_id=calls[0].call_id, name=calls[0].name,
                                          arguments=calls[0].arguments))
        ctx.items.append(llm.FunctionCallOutput(call_id=calls[0].call_id, name=calls[0].name, output=output,
                                                is_error=False))
        text = ""
        async with model.chat(chat_ctx=ctx, tools=[get_weather], tool_choice="none",
                              extra_kwargs={"max_completion_tokens": 24}) as stream:
            async for chunk in stream:
                if chunk.delta is not None and chunk.delta.content:
                    text += chunk.delta.content
        return text

    since = len(proxy.requests)
    text = asyncio.run(asyncio.wait_for(run(), 150))
    assert len(ran) == 1
    chats = proxy.chat_bodies(since)
    assert chats[0]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    follow_up = tool_result_reached_next_request(proxy, since, "sunny-and-19C")
    assert follow_up["tool_choice"] == "none"
    assert text.strip()
