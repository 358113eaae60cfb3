"""openai-agents on the Chat Completions API: a function tool forced on the first turn, then a typed output."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel, Field
from recording import RecordingProxy, tool_result_reached_next_request

set_tracing_disabled(True)


class Forecast(BaseModel):
    city: str
    rain_chance: int = Field(ge=0, le=100)


def _agent(base_url: str, calls: list[dict[str, Any]], marker: str) -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Look up the current weather of a city."""
        calls.append({"city": city})
        return f"In {city}: light rain, 14 degrees, rain chance 80 percent ({marker})."

    model = OpenAIChatCompletionsModel(model="gpt-4o-mini",
                                       openai_client=AsyncOpenAI(base_url=base_url, api_key="sk-test"))
    return Agent(name="Forecaster", instructions="Use the weather tool, then report the forecast.", model=model,
                 tools=[get_weather], output_type=Forecast,
                 model_settings=ModelSettings(tool_choice="get_weather", temperature=0, max_tokens=120))


def test_function_tool_then_output_type(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[dict[str, Any]] = []
    agent = _agent(base_url, calls, "lookup 5521")
    since = len(proxy.requests)
    result = Runner.run_sync(agent, "Will it rain in Lisbon?", max_turns=4)
    assert len(calls) >= 1 and isinstance(calls[0]["city"], str)
    assert isinstance(result.final_output, Forecast)
    assert 0 <= result.final_output.rain_chance <= 100
    after = tool_result_reached_next_request(proxy, since, "lookup 5521")
    assert after["response_format"]["type"] == "json_schema"


def test_streamed_run(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[dict[str, Any]] = []
    agent = _agent(base_url, calls, "lookup 6104")
    since = len(proxy.requests)

    async def run() -> tuple[Any, list[str]]:
        streamed = Runner.run_streamed(agent, "Will it rain in Porto?", max_turns=4)
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed.final_output, kinds

    output, kinds = asyncio.run(run())
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert calls and isinstance(output, Forecast) and 0 <= output.rain_chance <= 100
    after = tool_result_reached_next_request(proxy, since, "lookup 6104")
    assert after["stream"] is True
