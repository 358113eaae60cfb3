"""pydantic-ai's OpenAIChatModel: a tool forced on the first step, then a typed output with bounded fields."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field
from pydantic_ai import Agent, NativeOutput, RunContext, ToolOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings, ToolOrOutput
from recording import RecordingProxy, tool_result_reached_next_request


class Review(BaseModel):
    stars: int = Field(ge=1, le=5)
    recommended: bool


def _tool_then_output(tool: str) -> Any:
    """Per step, as pydantic-ai's tool-choice guide does it: ``tool`` on the first model request, then only
    the output (the tiny model would otherwise call the tool forever)."""
    def settings(ctx: RunContext[None]) -> ModelSettings:
        choice = [tool] if ctx.run_step <= 1 else ToolOrOutput(function_tools=[])
        return ModelSettings(temperature=0, max_tokens=120, tool_choice=choice)
    return settings


@pytest.mark.parametrize("output", ["tool", "native"])
def test_tool_then_bounded_output(proxy: RecordingProxy, base_url: str, output: str) -> None:
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url, api_key="sk-test"))
    output_type: Any = ToolOutput(Review) if output == "tool" else NativeOutput(Review)
    agent = Agent(model, output_type=output_type, model_settings=_tool_then_output("fetch_reviews"),
                  instructions="Read the reviews with the tool, then rate the restaurant.")
    calls: list[str] = []

    @agent.tool_plain
    def fetch_reviews(restaurant: str) -> str:
        """The latest customer reviews of a restaurant."""
        calls.append(restaurant)
        return "Great pasta, slow service, would come back (review batch 8812)."

    since = len(proxy.requests)
    result = agent.run_sync("How good is Trattoria Roma?")
    assert calls and isinstance(calls[0], str)
    assert isinstance(result.output, Review)
    assert 1 <= result.output.stars <= 5
    tool_result_reached_next_request(proxy, since, "review batch 8812")
