"""LangChain's ChatOpenAI and OpenAIEmbeddings, and a LangGraph ReAct agent, as their docs use them."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from openai import OpenAI
from pydantic import BaseModel, Field
from recording import RecordingProxy, tool_result_reached_next_request


def _llm(base_url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="sk-test", temperature=0, max_tokens=80,  # type: ignore[arg-type]
                      max_retries=0, **kwargs)


def _weather_tool(calls: list[str], marker: str) -> Any:
    @tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        calls.append(city)
        return f"Overcast, 9 degrees in {city} ({marker})."
    return get_weather


def test_bind_tools_loop(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    get_weather = _weather_tool(calls, "station 4410")
    llm = _llm(base_url)
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Dublin?")]
    since = len(proxy.requests)
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
    assert isinstance(ai, AIMessage) and ai.tool_calls
    messages.append(ai)
    for call in ai.tool_calls:
        messages.append(get_weather.invoke(call))
    assert calls and isinstance(calls[0], str)
    assert isinstance(messages[-1], ToolMessage)
    final = llm.bind_tools([get_weather]).invoke(messages)
    assert isinstance(final, AIMessage)
    assert final.tool_calls or final.content
    tool_result_reached_next_request(proxy, since, "station 4410")


def test_streamed_tool_call_sent_back(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    get_weather = _weather_tool(calls, "station 2287")
    llm = _llm(base_url, streaming=True)
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Cork?")]
    since = len(proxy.requests)
    gathered: Any = None
    for chunk in llm.bind_tools([get_weather], tool_choice="get_weather").stream(messages):
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None and gathered.tool_calls
    messages.append(gathered)  # the chunks added up, as LangChain's streaming guide keeps them
    messages.extend(get_weather.invoke(call) for call in gathered.tool_calls)
    final = llm.invoke(messages)
    assert calls and isinstance(final, AIMessage) and final.content
    tool_result_reached_next_request(proxy, since, "station 2287")


class Invoice(BaseModel):
    """An invoice read from text."""

    amount_cents: int = Field(ge=1, le=10_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    paid: bool


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(proxy: RecordingProxy, base_url: str, method: str) -> None:
    structured = _llm(base_url).with_structured_output(Invoice, method=method)  # type: ignore[arg-type]
    since = len(proxy.requests)
    invoice = structured.invoke("Invoice 7: 129.50 EUR for two lamps, paid by card on delivery.")
    assert isinstance(invoice, Invoice)
    assert 1 <= invoice.amount_cents <= 10_000_000 and len(invoice.currency) == 3 and invoice.currency.isupper()
    [sent] = proxy.chat_bodies(since)
    assert ("response_format" in sent) == (method == "json_schema")
    assert ("tool_choice" in sent) == (method == "function_calling")


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_openai_embeddings_defaults(proxy: RecordingProxy, base_url: str) -> None:
    embeddings = OpenAIEmbeddings(base_url=base_url, api_key="sk-test")  # type: ignore[arg-type]
    texts = ["The cat sleeps on the warm windowsill.", "Quarterly revenue grew by four percent."]
    since = len(proxy.requests)
    vectors = embeddings.embed_documents(texts)
    query = embeddings.embed_query("A kitten naps in the sun by the window.")
    # The defaults count tokens with tiktoken and send OpenAI's token ids, not the text.
    sent = [body for path, body in proxy.requests[since:] if path.endswith("/embeddings")]
    assert sent and all(isinstance(item, list) and all(isinstance(i, int) for i in item)
                        for body in sent for item in body["input"])
    assert len(vectors) == 2 and len(vectors[0]) == len(query) > 100
    assert _cosine(query, vectors[0]) > _cosine(query, vectors[1]) + 0.2
    # The ids were read as OpenAI's: the vector is the one of the text itself.
    plain = OpenAI(base_url=base_url, api_key="sk-test").embeddings.create(model=embeddings.model, input=texts[0])
    assert _cosine(plain.data[0].embedding, vectors[0]) > 0.999


def test_langgraph_react_agent_with_forced_first_call(proxy: RecordingProxy, base_url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # create_react_agent moved to langchain.agents
        from langgraph.prebuilt import create_react_agent

    calls: list[str] = []
    get_weather = _weather_tool(calls, "station 9032")
    llm = _llm(base_url)

    def model(state: dict[str, Any], runtime: Any) -> Any:
        """LangGraph's dynamic model: the tool is forced until its result is in the conversation."""
        answered = any(isinstance(m, ToolMessage) for m in state["messages"])
        return llm.bind_tools([get_weather], tool_choice=None if answered else "get_weather")

    agent = create_react_agent(model, [get_weather], prompt="You report the weather.")
    since = len(proxy.requests)
    state = agent.invoke({"messages": [HumanMessage("What's the weather in Oslo?")]}, {"recursion_limit": 8})
    assert calls and isinstance(calls[0], str)
    tools_answered = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert tools_answered and "station 9032" in str(tools_answered[0].content)
    assert isinstance(state["messages"][-1], AIMessage)
    tool_result_reached_next_request(proxy, since, "station 9032")
