"""LangChain's ChatOpenAI on the Responses API (``use_responses_api=True``): invoke, stream, a tool round trip
(the ToolMessage back as a ``function_call_output``), structured output, ``use_previous_response_id``, and
a LangGraph ReAct agent on it."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from recording import RecordingProxy, tool_output_reached_next_response
from test_langchain import Invoice  # the same invoice, read over the Responses API


def _llm(base_url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="sk-test", temperature=0, max_tokens=40,  # type: ignore[arg-type]
                      max_retries=0, use_responses_api=True, **kwargs)


def _weather_tool(calls: list[str], marker: str) -> Any:
    @tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        calls.append(city)
        return f"Overcast, 9 degrees in {city} ({marker})."
    return get_weather


def _only_responses(proxy: RecordingProxy, since: int) -> list[dict[str, Any]]:
    paths = [path for path, _ in proxy.requests[since:]]
    assert paths and all(path == "/v1/responses" for path in paths), paths  # never chat completions
    return proxy.response_bodies(since)


def test_invoke(proxy: RecordingProxy, base_url: str) -> None:
    since = len(proxy.requests)
    ai = _llm(base_url).invoke([HumanMessage("Name a colour.")])
    assert isinstance(ai, AIMessage) and ai.text.strip()
    assert ai.response_metadata["id"].startswith("resp_") and ai.response_metadata["status"] == "completed"
    assert ai.usage_metadata is not None and ai.usage_metadata["output_tokens"] > 0
    [sent] = _only_responses(proxy, since)
    assert sent["max_output_tokens"] == 40 and sent["temperature"] == 0 and "stop" not in sent
    # What LangChain read is what the gateway stored under the response's id.
    stored = OpenAI(base_url=base_url, api_key="sk-test").responses.retrieve(ai.response_metadata["id"])
    assert stored.output_text == ai.text


def test_stream(proxy: RecordingProxy, base_url: str) -> None:
    since = len(proxy.requests)
    chunks = list(_llm(base_url).stream("Count from one to five."))
    assert len([c for c in chunks if c.text]) > 1  # the text came in pieces
    gathered: Any = chunks[0]
    for chunk in chunks[1:]:
        gathered = gathered + chunk
    assert isinstance(gathered, AIMessageChunk) and gathered.text.strip()
    assert gathered.response_metadata["id"].startswith("resp_")
    assert gathered.usage_metadata is not None and gathered.usage_metadata["output_tokens"] > 0
    [sent] = _only_responses(proxy, since)
    assert sent["stream"] is True


@pytest.mark.parametrize("streaming", [False, True])
def test_bind_tools_round_trip(proxy: RecordingProxy, base_url: str, streaming: bool) -> None:
    calls: list[str] = []
    marker = f"station {4410 + streaming}"
    get_weather = _weather_tool(calls, marker)
    llm = _llm(base_url, streaming=streaming)
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Dublin?")]
    since = len(proxy.requests)
    forced = llm.bind_tools([get_weather], tool_choice="get_weather")
    if streaming:
        ai: Any = None
        for chunk in forced.stream(messages):
            ai = chunk if ai is None else ai + chunk  # the chunks added up, as LangChain's streaming guide does
    else:
        ai = forced.invoke(messages)
    assert isinstance(ai, AIMessage) and ai.tool_calls
    messages.append(ai)
    messages.extend(get_weather.invoke(call) for call in ai.tool_calls)
    assert calls and isinstance(calls[0], str) and isinstance(messages[-1], ToolMessage)
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert isinstance(final, AIMessage) and final.text.strip() and not final.tool_calls
    first, *_ = _only_responses(proxy, since)
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert [tool["name"] for tool in first["tools"]] == ["get_weather"]
    call_id = ai.tool_calls[0]["id"]
    after = tool_output_reached_next_response(proxy, since, marker, call_id)
    [call] = [item for item in after["input"] if item.get("type") == "function_call"]
    assert call["call_id"] == call_id and call["name"] == "get_weather"
    assert after["tool_choice"] == "none"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(proxy: RecordingProxy, base_url: str, method: str) -> None:
    structured = _llm(base_url).with_structured_output(Invoice, method=method)  # type: ignore[arg-type]
    since = len(proxy.requests)
    invoice = structured.invoke("Invoice 7: 129.50 EUR for two lamps, paid by card on delivery.")
    assert isinstance(invoice, Invoice)
    assert 1 <= invoice.amount_cents <= 10_000_000 and len(invoice.currency) == 3 and invoice.currency.isupper()
    [sent] = _only_responses(proxy, since)
    if method == "json_schema":
        assert sent["text"]["format"]["type"] == "json_schema" and sent["text"]["format"]["strict"] is True
        assert "tools" not in sent
    else:
        assert sent["tool_choice"] == {"type": "function", "name": "Invoice"} and "text" not in sent


def test_use_previous_response_id(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    get_weather = _weather_tool(calls, "station 7718")
    llm = _llm(base_url, use_previous_response_id=True)
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Galway?")]
    since = len(proxy.requests)
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
    assert isinstance(ai, AIMessage) and ai.tool_calls
    messages.append(ai)
    messages.extend(get_weather.invoke(call) for call in ai.tool_calls)
    final = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert isinstance(final, AIMessage) and final.text.strip()
    first, after = _only_responses(proxy, since)
    assert "previous_response_id" not in first
    # Only what follows the last response goes, chained to it: the tool's output, under the call's id.
    assert after["previous_response_id"] == ai.response_metadata["id"]
    assert after is tool_output_reached_next_response(proxy, since, "station 7718", ai.tool_calls[0]["id"])
    assert [item["type"] for item in after["input"]] == ["function_call_output"]
    # A third turn chains to the second response.
    messages += [final, HumanMessage("Thanks. And tomorrow?")]
    third = llm.invoke(messages)
    assert isinstance(third, AIMessage) and third.response_metadata["id"] not in (
        ai.response_metadata["id"], final.response_metadata["id"])
    last = proxy.response_bodies(since)[-1]
    assert last["previous_response_id"] == final.response_metadata["id"]
    assert [item.get("role") for item in last["input"]] == ["user"]


def test_langgraph_react_agent(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    get_weather = _weather_tool(calls, "station 9140")
    llm = _llm(base_url)

    def model(state: dict[str, Any], runtime: Any) -> Any:
        """LangGraph's dynamic model: the tool is forced until its result is in the conversation."""
        answered = any(isinstance(m, ToolMessage) for m in state["messages"])
        return llm.bind_tools([get_weather], tool_choice="none" if answered else "get_weather")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # create_react_agent moved to langchain.agents
        from langgraph.prebuilt import create_react_agent

        agent = create_react_agent(model, [get_weather], prompt="You report the weather.")
    since = len(proxy.requests)
    state = agent.invoke({"messages": [HumanMessage("What's the weather in Oslo?")]}, {"recursion_limit": 8})
    assert calls and isinstance(calls[0], str)
    tools_answered = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert tools_answered and "station 9140" in str(tools_answered[0].content)
    assert isinstance(state["messages"][-1], AIMessage) and state["messages"][-1].text.strip()
    _only_responses(proxy, since)
    tool_output_reached_next_response(proxy, since, "station 9140", tools_answered[0].tool_call_id)
