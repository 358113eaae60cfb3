"""pipecat's Deepgram and OpenAI services, each given only the gateway's address, driven by frames
through a small pipeline (no transport, no room), as pipecat's own test helpers drive them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import SPOKEN, check_speech, similarity
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMRunFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.deepgram.tts import DeepgramTTSService
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.workers.runner import WorkerRunner
from recording import RecordingProxy, tool_result_reached_next_request

pytestmark = pytest.mark.timeout(180)


class _Tap(FrameProcessor):
    """Keeps the frames that pass it and wakes the test when it has seen enough."""

    def __init__(self, done: Callable[[list[Frame]], bool]) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.done = done
        self.finished = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        if self.done(self.frames):
            self.finished.set()
        await self.push_frame(frame, direction)


class _Errors(FrameProcessor):
    """Keeps the errors services push upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[ErrorFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame):
            self.errors.append(frame)
        await self.push_frame(frame, direction)


async def _run(processors: Sequence[FrameProcessor], frames: Sequence[Frame | float],
               done: Callable[[list[Frame]], bool] | _Tap, *, sample_rate: int = 16000,
               within: float = 120) -> list[Frame]:
    """Run ``processors`` as a pipeline, queue ``frames`` (a float: a pause of that many seconds), and end
    the pipeline once ``done`` holds for the frames that came out of it (or that passed the tap given)."""
    errors = _Errors()
    sink = done if isinstance(done, _Tap) else _Tap(done)
    chain = [errors, *processors] + ([] if sink in processors else [sink])
    worker = PipelineWorker(Pipeline(chain), cancel_on_idle_timeout=False,
                            params=PipelineParams(audio_in_sample_rate=sample_rate, audio_out_sample_rate=24000))
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(*_: Any) -> None:
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), 30)
        for item in frames:
            if isinstance(item, float):
                await asyncio.sleep(item)
            else:
                await worker.queue_frame(item)
        with contextlib.suppress(TimeoutError):  # the test's assertions say what was missing
            await asyncio.wait_for(sink.finished.wait(), within)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    assert not errors.errors, [e.error for e in errors.errors]
    return sink.frames


def _microphone(pcm: bytes, rate: int = 16000) -> list[Frame | float]:
    """20 ms audio frames at about four times real time, as an input transport would push them."""
    step = rate // 50 * 2
    frames: list[Frame | float] = []
    for i in range(0, len(pcm), step):
        frames += [InputAudioRawFrame(audio=pcm[i:i + step], sample_rate=rate, num_channels=1), 0.005]
    return frames


def test_deepgram_stt_with_its_defaults(gateway: Any, speech_16k: bytes) -> None:
    stt = DeepgramSTTService(api_key="test", base_url=gateway.url)  # every other option as pipecat sets it

    def heard_all(frames: list[Frame]) -> bool:
        return similarity(SPOKEN, " ".join(f.text for f in frames if isinstance(f, TranscriptionFrame))) > 0.85

    frames = asyncio.run(_run([stt], _microphone(speech_16k), heard_all, within=60))
    finals = [f for f in frames if isinstance(f, TranscriptionFrame)]
    transcript = " ".join(f.text for f in finals)
    assert similarity(SPOKEN, transcript) > 0.85, transcript
    assert any(c in transcript for c in ".,") and transcript[0].isupper()  # punctuate=true, pipecat's default


def test_openai_llm_chat_turn(gateway: Any) -> None:
    llm = OpenAILLMService(api_key="sk-test", base_url=f"{gateway.url}/v1",
                           settings=OpenAILLMService.Settings(model="gpt-4o-mini", max_tokens=24, temperature=0,
                                                              system_instruction="You are a helpful assistant."))
    context = LLMContext(messages=[{"role": "user", "content": "Say hello to Ada."}])
    pair = LLMContextAggregatorPair(context)
    tap = _Tap(lambda fs: any(isinstance(f, LLMFullResponseEndFrame) for f in fs))
    asyncio.run(_run([pair.user(), llm, tap, pair.assistant()], [LLMRunFrame()], tap))
    text = "".join(f.text for f in tap.frames if isinstance(f, LLMTextFrame))
    assert text.strip()
    assert context.get_messages()[-1]["role"] == "assistant"
    assert context.get_messages()[-1]["content"].strip() == text.strip()


def test_openai_llm_forced_tool_call_and_its_result(gateway: Any, proxy: RecordingProxy) -> None:
    llm = OpenAILLMService(api_key="sk-test", base_url=f"{proxy.url}/v1",
                           settings=OpenAILLMService.Settings(model="gpt-4o-mini", max_tokens=32, temperature=0))
    calls: list[dict[str, Any]] = []

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        params.context.set_tool_choice("none")  # the answer comes from the result, not another call
        await params.result_callback({"city": params.arguments.get("city"), "forecast": "sunny-and-19C"})

    llm.register_function("get_weather", get_weather)
    weather = FunctionSchema(name="get_weather", description="The weather in a city.",
                             properties={"city": {"type": "string"}}, required=["city"])
    context = LLMContext(messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                         tools=ToolsSchema(standard_tools=[weather]),
                         tool_choice={"type": "function", "function": {"name": "get_weather"}})
    pair = LLMContextAggregatorPair(context)
    since = len(proxy.requests)
    tap = _Tap(lambda fs: sum(isinstance(f, LLMFullResponseEndFrame) for f in fs) >= 2)
    asyncio.run(_run([pair.user(), llm, tap, pair.assistant()], [LLMRunFrame()], tap))
    assert len(calls) == 1 and isinstance(calls[0].get("city"), str)
    chats = proxy.chat_bodies(since)
    assert chats[0]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    follow_up = tool_result_reached_next_request(proxy, since, "sunny-and-19C")
    assert any(m.get("tool_calls") for m in follow_up["messages"] if m["role"] == "assistant")
    assert context.get_messages()[-1]["role"] == "assistant"


def _audio_of(frames: list[Frame]) -> tuple[bytes, int]:
    audio = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
    assert audio, [type(f).__name__ for f in frames]
    rates = {f.sample_rate for f in audio}
    assert len(rates) == 1 and all(f.num_channels == 1 for f in audio)
    return b"".join(f.audio for f in audio), rates.pop()


SENTENCE = "Hello there, the small boat is ready."


def test_openai_tts(gateway: Any) -> None:
    tts = OpenAITTSService(api_key="sk-test", base_url=f"{gateway.url}/v1")  # gpt-4o-mini-tts, alloy
    frames = asyncio.run(_run([tts], [TTSSpeakFrame(SENTENCE)],
                              lambda fs: any(isinstance(f, TTSStoppedFrame) for f in fs)))
    pcm, rate = _audio_of(frames)
    assert rate == 24000
    check_speech(gateway, pcm, rate, SENTENCE)


def test_deepgram_tts(gateway: Any) -> None:
    tts = DeepgramTTSService(api_key="test", base_url=gateway.url.replace("http://", "ws://"))  # aura-2-helena-en
    frames = asyncio.run(_run([tts], [TTSSpeakFrame(SENTENCE)],
                              lambda fs: any(isinstance(f, TTSStoppedFrame) for f in fs)))
    pcm, rate = _audio_of(frames)
    check_speech(gateway, pcm, rate, SENTENCE)
