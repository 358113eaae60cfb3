"""LiveKit Agents' OpenAI Responses plugin (``openai.responses.LLM``) against the gateway, driven directly
(``llm.chat()``) with no room and no job: over its default WebSocket (one pooled socket, each turn after
the first chained by ``previous_response_id``) through :class:`~conftest.SocketRecorder`, and over HTTP
(SSE, ``use_websocket=False``) through the recording proxy. LiveKit sends no ``store``: the gateway stores
each response, and what it kept of a chained turn's input shows what the plugin sent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import SocketRecorder
from livekit.agents import llm, utils
from livekit.agents.llm import function_tool
from livekit.plugins import openai
from recording import RecordingProxy, tool_output_reached_next_response

pytestmark = pytest.mark.timeout(180)

FIRST = "What is the capital of France? Answer in one word."
SECOND = "And the capital of Germany?"
FORCED: Any = {"type": "function", "function": {"name": "get_weather"}}


def _socket_llm(recorder: SocketRecorder) -> openai.responses.LLM:
    # The plugin connects to base_url itself (http -> ws), with the model in the query, as for a gateway.
    return openai.responses.LLM(model="gpt-4o-mini", base_url=f"{recorder.url}/v1/responses", api_key="sk-test",
                                temperature=0, max_output_tokens=48)


def _http_llm(proxy: RecordingProxy) -> openai.responses.LLM:
    return openai.responses.LLM(model="gpt-4o-mini", base_url=f"{proxy.url}/v1", api_key="sk-test",
                                use_websocket=False, temperature=0, max_output_tokens=48)


async def _say(model: openai.responses.LLM, ctx: llm.ChatContext, **options: Any) -> tuple[str, list[Any]]:
    """One turn: its text (added to ``ctx`` as the assistant's) and the tool calls it made."""
    text, calls = "", []
    async with model.chat(chat_ctx=ctx, **options) as stream:
        async for chunk in stream:
            if chunk.delta is not None:
                text += chunk.delta.content or ""
                calls += chunk.delta.tool_calls
    if text:
        ctx.add_message(role="assistant", content=text)
    return text, calls


async def _two_turns(model: openai.responses.LLM) -> list[str]:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content=FIRST)
    first, _ = await _say(model, ctx)
    ctx.add_message(role="user", content=SECOND)
    second, _ = await _say(model, ctx)
    await model.aclose()
    return [first, second]


def _input_items(gateway: Any, response_id: str) -> list[dict[str, Any]]:
    """What the gateway stored as a response's own input (not the conversation it continues)."""
    page = gateway.openai().responses.input_items.list(response_id, order="asc")
    return [item.model_dump(exclude_none=True) for item in page.data]


def _texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["role"], "".join(p.get("text", "") for p in i["content"])) for i in items if i["type"] == "message"]


def test_websocket_two_turns_chained_by_previous_response_id(gateway: Any, socket_recorder: SocketRecorder) -> None:
    since = len(socket_recorder.connections)

    async def run() -> list[str]:
        async with utils.http_context.open():
            return await _two_turns(_socket_llm(socket_recorder))

    first, second = asyncio.run(asyncio.wait_for(run(), 150))
    assert "Paris" in first and second.strip()
    connections = socket_recorder.connections[since:]
    assert len(connections) == 1, [c.path for c in connections]  # the pooled socket, reused for the second turn
    (socket,) = connections
    assert socket.path == "/v1/responses?model=gpt-4o-mini" and socket.authorization == "Bearer sk-test"
    created = [m for m in socket.sent if m["type"] == "response.create"]
    assert len(created) == 2 and "previous_response_id" not in created[0]
    ids = [e["response"]["id"] for e in socket.received if e["type"] == "response.completed"]
    assert len(ids) == 2 and created[1]["previous_response_id"] == ids[0]
    # only what followed the first response went again: the answer LiveKit added to its context, and the turn
    assert _texts(_input_items(gateway, ids[1])) == [("assistant", first), ("user", SECOND)]
    assert _texts(_input_items(gateway, ids[0])) == [("user", FIRST)]


@function_tool
async def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return f"{city}: sunny-and-19C"


async def _tool_round_trip(model: openai.responses.LLM) -> tuple[list[llm.FunctionToolCall], str]:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="What is the weather in Paris?")
    _, calls = await _say(model, ctx, tools=[get_weather], tool_choice=FORCED)
    for call in calls:
        output = await get_weather(**json.loads(call.arguments))
        ctx.items.append(llm.FunctionCall(call_id=call.call_id, name=call.name, arguments=call.arguments))
        ctx.items.append(llm.FunctionCallOutput(call_id=call.call_id, name=call.name, output=output, is_error=False))
    text, _ = await _say(model, ctx, tools=[get_weather], tool_choice="none")
    await model.aclose()
    return calls, text


def test_websocket_tool_call_round_trip(gateway: Any, socket_recorder: SocketRecorder) -> None:
    since = len(socket_recorder.connections)

    async def run() -> tuple[list[llm.FunctionToolCall], str]:
        async with utils.http_context.open():
            return await _tool_round_trip(_socket_llm(socket_recorder))

    calls, text = asyncio.run(asyncio.wait_for(run(), 150))
    assert len(calls) == 1 and calls[0].name == "get_weather", calls
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert text.strip()
    (socket,) = socket_recorder.connections[since:]
    first, second = socket.sent
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert second["tool_choice"] == "none"
    ids = [e["response"]["id"] for e in socket.received if e["type"] == "response.completed"]
    assert second["previous_response_id"] == ids[0]
    outputs = [i for i in second["input"] if i["type"] == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [calls[0].call_id] and "sunny-and-19C" in outputs[0]["output"]
    kept = _input_items(gateway, ids[1])
    assert [i["type"] for i in kept] == [i["type"] for i in second["input"]]


def test_http_two_turns_chained_by_previous_response_id(gateway: Any, proxy: RecordingProxy) -> None:
    since = len(proxy.requests)
    first, second = asyncio.run(asyncio.wait_for(_two_turns(_http_llm(proxy)), 150))
    assert "Paris" in first and second.strip()
    bodies = proxy.response_bodies(since)
    assert len(bodies) == 2 and all(b["stream"] is True for b in bodies)
    assert "previous_response_id" not in bodies[0]
    assert bodies[1]["previous_response_id"]
    assert _texts(_input_items(gateway, bodies[1]["previous_response_id"])) == [("user", FIRST)]
    assert [(m["role"], m["content"]) for m in bodies[1]["input"]] == [("assistant", first), ("user", SECOND)]


def test_http_tool_call_round_trip(gateway: Any, proxy: RecordingProxy) -> None:
    since = len(proxy.requests)
    calls, text = asyncio.run(asyncio.wait_for(_tool_round_trip(_http_llm(proxy)), 150))
    assert len(calls) == 1 and calls[0].name == "get_weather", calls
    assert text.strip()
    first, second = proxy.response_bodies(since)
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    follow_up = tool_output_reached_next_response(proxy, since, "sunny-and-19C", calls[0].call_id)
    assert follow_up is second and second["tool_choice"] == "none" and second["previous_response_id"]
