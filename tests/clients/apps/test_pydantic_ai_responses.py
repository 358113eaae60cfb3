"""pydantic-ai's OpenAIResponsesModel on the Responses API: a tool forced on the first step, then a typed
output (an output tool, or the response's JSON schema); run, run_stream, and a run chained by
``previous_response_id``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from openai import OpenAI
from pydantic import BaseModel, Field
from pydantic_ai import Agent, NativeOutput, RunContext, ToolOutput
from pydantic_ai.messages import ToolReturnPart
from pydantic_ai.models.openai import OpenAIResponsesModel, OpenAIResponsesModelSettings
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ToolOrOutput
from recording import RecordingProxy, tool_output_reached_next_response


class Review(BaseModel):
    stars: int = Field(ge=1, le=5)
    recommended: bool


def _settings(tool: str, **extra: Any) -> Any:
    """Per step, as pydantic-ai's tool-choice guide does it: ``tool`` on the first model request, then only
    the output (the tiny model would otherwise call the tool forever)."""
    def settings(ctx: RunContext[None]) -> OpenAIResponsesModelSettings:
        choice = [tool] if ctx.run_step <= 1 else ToolOrOutput(function_tools=[])
        return OpenAIResponsesModelSettings(temperature=0, max_tokens=120, tool_choice=choice, **extra)
    return settings


def _agent(base_url: str, output: str, calls: list[str], marker: str, **extra: Any) -> Agent[None, Review]:
    model = OpenAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url, api_key="sk-test"))
    output_type: Any = ToolOutput(Review) if output == "tool" else NativeOutput(Review)
    agent = Agent(model, output_type=output_type, model_settings=_settings("fetch_reviews", **extra),
                  instructions="Read the reviews with the tool, then rate the restaurant.")

    @agent.tool_plain
    def fetch_reviews(restaurant: str) -> str:
        """The latest customer reviews of a restaurant."""
        calls.append(restaurant)
        return f"Great pasta, slow service, would come back (review batch {marker})."

    return agent


def _call_id(messages: list[Any]) -> str:
    [call_id, *_] = [part.tool_call_id for m in messages for part in m.parts
                     if isinstance(part, ToolReturnPart) and part.tool_name == "fetch_reviews"]
    return call_id


def _check_first(proxy: RecordingProxy, since: int, output: str) -> None:
    paths = [path for path, _ in proxy.requests[since:]]
    assert paths and all(path == "/v1/responses" for path in paths), paths  # never chat completions
    first = proxy.response_bodies(since)[0]
    names = {tool["name"] for tool in first["tools"]}
    if output == "tool":  # the function, named among the two tools
        assert names == {"fetch_reviews", "final_result"}
        assert first["tool_choice"] == {"type": "function", "name": "fetch_reviews"}
    else:  # the only tool: any call is its call
        assert names == {"fetch_reviews"} and first["tool_choice"] == "required"


@pytest.mark.parametrize("output", ["tool", "native"])
def test_tool_then_typed_output(proxy: RecordingProxy, base_url: str, output: str) -> None:
    calls: list[str] = []
    agent = _agent(base_url, output, calls, f"{output} 8812")
    since = len(proxy.requests)
    result = agent.run_sync("How good is Trattoria Roma?")
    assert calls and isinstance(calls[0], str)
    assert isinstance(result.output, Review) and 1 <= result.output.stars <= 5
    _check_first(proxy, since, output)
    after = tool_output_reached_next_response(proxy, since, f"{output} 8812", _call_id(result.all_messages()))
    assert any(item.get("type") == "function_call" for item in after["input"])  # the call went back too
    if output == "native":
        assert after["text"]["format"]["type"] == "json_schema"
        assert after["text"]["format"]["schema"]["required"] == ["stars", "recommended"]
    else:  # the output is a call of the output tool, forced as the only choice left
        assert after["tool_choice"] == {"type": "function", "name": "final_result"}


@pytest.mark.parametrize("output", ["tool", "native"])
def test_run_stream(proxy: RecordingProxy, base_url: str, output: str) -> None:
    calls: list[str] = []
    agent = _agent(base_url, output, calls, f"{output} 5307")
    since = len(proxy.requests)

    async def run() -> tuple[list[Review], Review, list[Any]]:
        async with agent.run_stream("How good is Pasta Nova?") as streamed:
            partial = [review async for review in streamed.stream_output(debounce_by=None)]
            return partial, await streamed.get_output(), streamed.all_messages()

    partial, review, messages = asyncio.run(run())
    assert calls and isinstance(review, Review) and 1 <= review.stars <= 5
    assert partial and partial[-1] == review
    bodies = proxy.response_bodies(since)
    assert all(body["stream"] is True for body in bodies)
    _check_first(proxy, since, output)
    tool_output_reached_next_response(proxy, since, f"{output} 5307", _call_id(messages))


def test_previous_response_id_auto(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    agent = _agent(base_url, "native", calls, "chained 4471", openai_previous_response_id="auto")
    since = len(proxy.requests)
    result = agent.run_sync("How good is Osteria Blu?")
    assert calls and isinstance(result.output, Review) and 1 <= result.output.stars <= 5
    first, after = proxy.response_bodies(since)[:2]
    assert "previous_response_id" not in first
    assert after is tool_output_reached_next_response(proxy, since, "chained 4471", _call_id(result.all_messages()))
    # Chained to the response that made the call: only the call's output is sent.
    [made_call] = [m for m in result.all_messages() if getattr(m, "provider_response_id", None)][:1]
    assert after["previous_response_id"] == made_call.provider_response_id  # type: ignore[union-attr]
    assert [item["type"] for item in after["input"]] == ["function_call_output"]


def test_background_run_polled_to_its_end(proxy: RecordingProxy, base_url: str) -> None:
    model = OpenAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url, api_key="sk-test"))
    agent = Agent(model, output_type=NativeOutput(Review), instructions="Rate the restaurant from its review.",
                  model_settings=OpenAIResponsesModelSettings(temperature=0, max_tokens=60, openai_background=True))
    since = len(proxy.requests)
    result = agent.run_sync("Trattoria Roma: great pasta, slow service, would come back.")
    assert isinstance(result.output, Review) and 1 <= result.output.stars <= 5
    response_id = result.all_messages()[-1].provider_response_id  # type: ignore[union-attr]
    assert response_id is not None
    # Queued at once, then polled by id until done.
    (path, created), *polls = proxy.requests[since:]
    assert path == "/v1/responses" and created["background"] is True
    assert polls and all(p.split("?")[0] == f"/v1/responses/{response_id}" for p, _ in polls)
    stored = OpenAI(base_url=base_url, api_key="sk-test").responses.retrieve(response_id)
    assert stored.background is True and stored.status == "completed"
    assert Review.model_validate_json(stored.output_text) == result.output
