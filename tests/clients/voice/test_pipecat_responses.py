"""pipecat's OpenAI Responses services against the gateway: the WebSocket one (``OpenAIResponsesLLMService``,
pipecat's default, one socket for the whole conversation, ``store: false`` turns chained by
``previous_response_id``) through :class:`~conftest.SocketRecorder`, and the HTTP one
(``OpenAIResponsesHttpLLMService``, SSE) through the recording proxy, each driven by frames through a
small pipeline as pipecat's own test helpers drive them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import SocketRecorder
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMRunFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.responses.llm import OpenAIResponsesHttpLLMService, OpenAIResponsesLLMService
from pipecat.workers.runner import WorkerRunner
from recording import RecordingProxy, tool_output_reached_next_response

pytestmark = pytest.mark.timeout(180)

Settings = OpenAIResponsesLLMService.Settings
FIRST = "What is the capital of France? Answer in one word."
SECOND = "And the capital of Germany?"


class _Tap(FrameProcessor):
    """Keeps the frames that pass it downstream, and the errors services push upstream past it; sets
    ``changed`` at each frame."""

    def __init__(self, changed: asyncio.Event) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.errors: list[ErrorFrame] = []
        self.changed = changed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame):
            self.errors.append(frame)
        elif direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        self.changed.set()
        await self.push_frame(frame, direction)

    def answers(self) -> list[str]:
        """The text of each response so far (one per ``LLMFullResponseEndFrame``)."""
        texts, current = [], ""
        for frame in self.frames:
            if isinstance(frame, LLMTextFrame):
                current += frame.text
            elif isinstance(frame, LLMFullResponseEndFrame):
                texts, current = [*texts, current], ""
        return texts


async def _converse(llm: FrameProcessor, context: LLMContext, steps: Sequence[tuple[Frame, Callable[[], bool]]],
                    within: float = 90) -> _Tap:
    """Run ``llm`` between the context's aggregators; for each step queue its frame, then wait (up to
    ``within`` seconds) until its condition holds, before the next step; then end the pipeline."""
    pair = LLMContextAggregatorPair(context)
    changed = asyncio.Event()
    # head: the errors pushed upstream; tap: what the LLM said; tail: the context's updates
    head, tap, tail = _Tap(changed), _Tap(changed), _Tap(changed)
    worker = PipelineWorker(Pipeline([head, pair.user(), llm, tap, pair.assistant(), tail]),
                            cancel_on_idle_timeout=False, params=PipelineParams())
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(*_: Any) -> None:
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), 30)
        for frame, done in steps:
            await worker.queue_frame(frame)
            with contextlib.suppress(TimeoutError):  # the test's assertions say what was missing
                await asyncio.wait_for(until(done), within)
        await worker.queue_frame(EndFrame())

    async def until(done: Callable[[], bool]) -> None:
        while not done() and not head.errors:
            changed.clear()
            await changed.wait()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    assert not head.errors, [e.error for e in head.errors]
    return tap


def _socket_llm(recorder: SocketRecorder, gateway: Any, **settings: Any) -> OpenAIResponsesLLMService:
    return OpenAIResponsesLLMService(ws_url=f"{recorder.url}/v1/responses", api_key="sk-test",
                                     base_url=f"{gateway.url}/v1",
                                     settings=Settings(model="gpt-4o-mini", temperature=0, max_completion_tokens=48,
                                                       **settings))


def test_websocket_two_turns_chained_by_previous_response_id(gateway: Any, socket_recorder: SocketRecorder) -> None:
    llm = _socket_llm(socket_recorder, gateway)
    context = LLMContext(messages=[{"role": "user", "content": FIRST}])
    since = len(socket_recorder.connections)

    def answers() -> list[str]:
        return [m["content"] for m in context.get_messages() if m["role"] == "assistant"]

    steps = [(LLMRunFrame(), lambda: len(answers()) >= 1),
             (LLMMessagesAppendFrame([{"role": "user", "content": SECOND}], run_llm=True), lambda: len(answers()) >= 2)]
    tap = asyncio.run(_converse(llm, context, steps))
    assert [a.strip() for a in tap.answers()] == [a.strip() for a in answers()]
    assert all(a.strip() for a in answers()), answers()
    assert "Paris" in answers()[0]

    connections = socket_recorder.connections[since:]
    assert len(connections) == 1, [c.path for c in connections]  # one socket for the conversation
    socket = connections[0]
    assert socket.path == "/v1/responses" and socket.authorization == "Bearer sk-test"
    first, second = socket.sent
    assert first["type"] == second["type"] == "response.create"
    assert first["store"] is False and "previous_response_id" not in first
    assert first["input"] == [{"role": "user", "content": FIRST}]
    completed = [e["response"] for e in socket.received if e["type"] == "response.completed"]
    assert len(completed) == 2
    assert second["previous_response_id"] == completed[0]["id"] == completed[1]["previous_response_id"]
    assert second["input"] == [{"role": "user", "content": SECOND}]  # only the new turn: the rest is chained


def _weather_tool() -> ToolsSchema:
    return ToolsSchema(standard_tools=[FunctionSchema(name="get_weather", description="The weather in a city.",
                                                      properties={"city": {"type": "string"}}, required=["city"])])


def _register_weather(llm: Any, calls: list[dict[str, Any]]) -> None:
    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        # pipecat's Responses services send no tool_choice of the context's: the forced choice is a setting,
        # and the answer to the result comes from the result, not another call
        await params.llm.queue_frame(LLMUpdateSettingsFrame(delta=Settings(extra={"tool_choice": "none"})))
        await params.result_callback({"city": params.arguments.get("city"), "forecast": "sunny-and-19C"})

    llm.register_function("get_weather", get_weather)


FORCED = {"tool_choice": {"type": "function", "name": "get_weather"}}


def test_websocket_tool_call_round_trip(gateway: Any, socket_recorder: SocketRecorder) -> None:
    llm = _socket_llm(socket_recorder, gateway, extra=dict(FORCED))
    calls: list[dict[str, Any]] = []
    _register_weather(llm, calls)
    context = LLMContext(messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=_weather_tool())
    since = len(socket_recorder.connections)
    tap = asyncio.run(_converse(llm, context, [(LLMRunFrame(), lambda: _assistant_after_tool(context))]))
    assert len(calls) == 1 and isinstance(calls[0].get("city"), str), calls
    assert tap.answers()[-1].strip()

    (socket,) = socket_recorder.connections[since:]
    first, second = socket.sent
    assert first["tool_choice"] == FORCED["tool_choice"]
    assert first["tools"][0]["name"] == "get_weather" and first["tools"][0]["type"] == "function"
    call = next(e["item"] for e in socket.received if e["type"] == "response.output_item.done"
                and e["item"]["type"] == "function_call")
    completed = [e["response"] for e in socket.received if e["type"] == "response.completed"]
    assert second["previous_response_id"] == completed[0]["id"]
    assert second["tool_choice"] == "none"
    # the call is the server's own output: only its result goes back
    assert [i["type"] for i in second["input"]] == ["function_call_output"]
    assert second["input"][0]["call_id"] == call["call_id"] and "sunny-and-19C" in second["input"][0]["output"]


def _assistant_after_tool(context: LLMContext) -> bool:
    """The context holds the tool's result and, after it, the assistant's answer to it."""
    messages = context.get_messages()
    roles = [m.get("role") for m in messages]
    return "tool" in roles and roles[-1] == "assistant" and not messages[-1].get("tool_calls") \
        and bool(str(messages[-1].get("content") or "").strip())


def test_http_turn(gateway: Any, proxy: RecordingProxy) -> None:
    llm = OpenAIResponsesHttpLLMService(api_key="sk-test", base_url=f"{proxy.url}/v1",
                                        settings=Settings(model="gpt-4o-mini", temperature=0,
                                                          max_completion_tokens=48,
                                                          system_instruction="You are a helpful assistant."))
    context = LLMContext(messages=[{"role": "user", "content": FIRST}])
    since = len(proxy.requests)
    tap = asyncio.run(_converse(llm, context, [(LLMRunFrame(), lambda: _answers(context) >= 1)]))
    (text,) = tap.answers()
    assert "Paris" in text
    assert context.get_messages()[-1]["content"].strip() == text.strip()
    (body,) = proxy.response_bodies(since)
    assert body["stream"] is True and body["store"] is False
    assert body["instructions"] == "You are a helpful assistant."


def _answers(context: LLMContext) -> int:
    return sum(m.get("role") == "assistant" and not m.get("tool_calls") for m in context.get_messages())


def test_http_tool_call_round_trip(gateway: Any, proxy: RecordingProxy) -> None:
    llm = OpenAIResponsesHttpLLMService(api_key="sk-test", base_url=f"{proxy.url}/v1",
                                        settings=Settings(model="gpt-4o-mini", temperature=0,
                                                          max_completion_tokens=48, extra=dict(FORCED)))
    calls: list[dict[str, Any]] = []
    _register_weather(llm, calls)
    context = LLMContext(messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=_weather_tool())
    since = len(proxy.requests)
    tap = asyncio.run(_converse(llm, context, [(LLMRunFrame(), lambda: _assistant_after_tool(context))]))
    assert len(calls) == 1 and isinstance(calls[0].get("city"), str), calls
    assert tap.answers()[-1].strip()
    first, second = proxy.response_bodies(since)
    assert first["tool_choice"] == FORCED["tool_choice"]
    follow_up = tool_output_reached_next_response(proxy, since, "sunny-and-19C")
    assert follow_up is second and "previous_response_id" not in second  # over HTTP the whole context goes again
    assert [i.get("type", "message") for i in second["input"]] == ["message", "function_call", "function_call_output"]
    assert second["tool_choice"] == "none"
