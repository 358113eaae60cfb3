"""openai-agents on its default model, ``OpenAIResponsesModel`` (the Responses API): a function tool forced on the
first turn, then a typed output, run and streamed; the next turn as the SDK's input list, and chained by
``previous_response_id`` (given, and ``auto_previous_response_id``); and its WebSocket transport."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    ModelSettings,
    Runner,
    RunResult,
    RunResultStreaming,
    ToolCallItem,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared
from agents.models.openai_responses import OpenAIResponsesWSModel
from openai import AsyncOpenAI, NotFoundError, OpenAI
from pydantic import BaseModel, Field
from recording import RecordingProxy, tool_output_reached_next_response

set_tracing_disabled(True)


class Forecast(BaseModel):
    city: str
    rain_chance: int = Field(ge=0, le=100)


@pytest.fixture(scope="module", autouse=True)
def default_client(base_url: str) -> Iterator[None]:
    """The SDK's own default: a model named by string runs on ``OpenAIResponsesModel`` with this client."""
    before = _openai_shared.get_default_openai_client()
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0), use_for_tracing=False)
    set_default_openai_api("responses")
    yield
    _openai_shared.set_default_openai_client(before)  # type: ignore[arg-type]


def _agent(calls: list[str], marker: str, model: Any = "gpt-4o-mini", **settings: Any) -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Look up the current weather of a city."""
        calls.append(city)
        return f"In {city}: light rain, 14 degrees, rain chance 80 percent ({marker})."

    return Agent(name="Forecaster", instructions="Use the weather tool, then report the forecast.",
                 model=model, tools=[get_weather], output_type=Forecast,
                 model_settings=ModelSettings(tool_choice="get_weather", temperature=0, max_tokens=120, **settings))


def _plain() -> Agent[Any]:
    return Agent(name="Chat", instructions="Answer briefly.", model="gpt-4o-mini",
                 model_settings=ModelSettings(temperature=0, max_tokens=40))


def _call_ids(result: RunResult | RunResultStreaming) -> list[str]:
    return [item.raw_item.call_id for item in result.new_items  # type: ignore[union-attr]
            if isinstance(item, ToolCallItem)]


def _check_tool_loop(proxy: RecordingProxy, since: int, result: RunResult | RunResultStreaming,
                     calls: list[str], marker: str) -> dict[str, Any]:
    """The tool ran, its output went back under its call's id, and the answer after it is typed."""
    assert calls and isinstance(calls[0], str)
    assert isinstance(result.final_output, Forecast) and 0 <= result.final_output.rain_chance <= 100
    paths = [path for path, _ in proxy.requests[since:]]
    assert paths and all(path == "/v1/responses" for path in paths), paths  # never chat completions
    first = proxy.response_bodies(since)[0]
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert first["max_output_tokens"] == 120 and first["temperature"] == 0
    [call_id, *_] = _call_ids(result)
    after = tool_output_reached_next_response(proxy, since, marker, call_id)
    assert after["text"]["format"]["type"] == "json_schema"
    return after


def test_function_tool_then_output_type(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    since = len(proxy.requests)
    result = Runner.run_sync(_agent(calls, "lookup 7731"), "Will it rain in Lisbon?", max_turns=4)
    after = _check_tool_loop(proxy, since, result, calls, "lookup 7731")
    [call_id, *_] = _call_ids(result)
    # Without a chain the whole conversation is sent again: the call itself, before its output.
    assert any(item.get("type") == "function_call" and item.get("call_id") == call_id for item in after["input"])
    assert "previous_response_id" not in after
    # The last response is stored: what the agent read is what the gateway keeps under its id.
    assert result.last_response_id is not None and result.last_response_id.startswith("resp_")
    stored = OpenAI(base_url=base_url, api_key="sk-test").responses.retrieve(result.last_response_id)
    assert stored.status == "completed"
    assert Forecast.model_validate_json(stored.output_text) == result.final_output
    # The SDK's own multi-turn: the run's items, as it keeps them, sent back with the next question.
    since = len(proxy.requests)
    turn = Runner.run_sync(_plain(), [*result.to_input_list(), {"role": "user", "content": "Thanks. Bye."}])
    assert isinstance(turn.final_output, str)
    [sent] = proxy.response_bodies(since)
    assert [item.get("type") for item in sent["input"]] == [
        None, "function_call", "function_call_output", "message", None]  # easy messages have no type
    answer = sent["input"][3]
    assert answer["role"] == "assistant" and answer["id"] == stored.output[-1].id
    assert answer["content"][0]["type"] == "output_text"


def test_streamed_run(proxy: RecordingProxy) -> None:
    calls: list[str] = []
    since = len(proxy.requests)

    async def run() -> tuple[RunResultStreaming, list[str], list[str]]:
        streamed = Runner.run_streamed(_agent(calls, "lookup 6240"), "Will it rain in Porto?", max_turns=4)
        kinds, raw = [], []
        async for event in streamed.stream_events():
            kinds.append(event.type)
            if event.type == "raw_response_event":
                raw.append(event.data.type)
        return streamed, kinds, raw

    streamed, kinds, raw = asyncio.run(run())
    assert "run_item_stream_event" in kinds
    assert {"response.created", "response.function_call_arguments.delta", "response.output_text.delta",
            "response.completed"} <= set(raw)
    after = _check_tool_loop(proxy, since, streamed, calls, "lookup 6240")
    assert after["stream"] is True


def test_previous_response_id_continues_the_conversation(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    first = Runner.run_sync(_agent(calls, "lookup 1180"), "Will it rain in Madrid?", max_turns=4)
    assert isinstance(first.final_output, Forecast) and first.last_response_id
    plain, question = _plain(), "Repeat the city you just reported."
    since = len(proxy.requests)
    second = Runner.run_sync(plain, question, previous_response_id=first.last_response_id)
    assert isinstance(second.final_output, str)
    [sent] = proxy.response_bodies(since)
    # Only the new message goes: the rest of the conversation is the gateway's, by the id.
    assert sent["previous_response_id"] == first.last_response_id
    assert [item.get("role") for item in sent["input"]] == ["user"]
    assert second.last_response_id not in (None, first.last_response_id)
    # ...and the gateway read it: the prompt is the first run's conversation (call, tool output, answer) and
    # the question, well over the question alone.
    alone = OpenAI(base_url=base_url, api_key="sk-test").responses.create(
        model="gpt-4o-mini", instructions=plain.instructions, input=question, max_output_tokens=16,  # type: ignore[arg-type]
        temperature=0)
    assert alone.usage is not None
    assert second.raw_responses[-1].usage.input_tokens > alone.usage.input_tokens + 40


def test_auto_previous_response_id_chains_the_tool_loop(proxy: RecordingProxy) -> None:
    calls: list[str] = []
    since = len(proxy.requests)
    result = Runner.run_sync(_agent(calls, "lookup 3095"), "Will it rain in Faro?", max_turns=4,
                             auto_previous_response_id=True)
    bodies = proxy.response_bodies(since)
    assert len(bodies) >= 2 and "previous_response_id" not in bodies[0]
    [call_id, *_] = _call_ids(result)
    after = tool_output_reached_next_response(proxy, since, "lookup 3095", call_id)
    # Chained: the call is not sent again, only its output, after the response that made the call.
    assert after["previous_response_id"] == result.raw_responses[0].response_id
    assert [item["type"] for item in after["input"]] == ["function_call_output"]
    assert isinstance(result.final_output, Forecast) and calls


def test_websocket_transport_chains_on_the_socket(gateway: Any) -> None:
    """The SDK's WebSocket transport, straight to the gateway's socket (the recording proxy speaks HTTP only):
    ``store: false`` responses chained by ``previous_response_id``, which only the socket itself keeps."""
    calls: list[str] = []
    model = OpenAIResponsesWSModel("gpt-4o-mini", AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-test",
                                                              max_retries=0))
    agent = _agent(calls, "lookup 5150", model, store=False)

    async def run() -> RunResult:
        try:
            return await Runner.run(agent, "Will it rain in Braga?", max_turns=4, auto_previous_response_id=True)
        finally:
            await model.close()

    result = asyncio.run(run())
    assert calls and isinstance(result.final_output, Forecast) and 0 <= result.final_output.rain_chance <= 100
    first, last = result.raw_responses[0].response_id, result.last_response_id
    assert first and last and first != last  # the tool's output went to a second response, chained to the first
    for response_id in (first, last):  # neither was stored: the chain lived on the socket
        with pytest.raises(NotFoundError):
            OpenAI(base_url=gateway.url + "/v1", api_key="sk-test").responses.retrieve(response_id)
