"""LlamaIndex's OpenAILike with tools (predict_and_call and a FunctionAgent), and OpenAIEmbedding."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai_like import OpenAILike
from recording import RecordingProxy, tool_result_reached_next_request


def _llm(base_url: str) -> OpenAILike:
    return OpenAILike(model="gpt-4o-mini", api_base=base_url, api_key="sk-test", is_chat_model=True,
                      is_function_calling_model=True, context_window=1024, max_tokens=80, temperature=0,
                      max_retries=0)


def _tool(calls: list[str], marker: str) -> FunctionTool:
    def get_stock_price(ticker: str) -> str:
        """The latest price of a stock, by its ticker symbol."""
        calls.append(ticker)
        return f"{ticker} trades at 182.40 USD ({marker})."
    return FunctionTool.from_defaults(fn=get_stock_price)


def test_predict_and_call_runs_the_forced_tool(base_url: str) -> None:
    calls: list[str] = []
    response = _llm(base_url).predict_and_call([_tool(calls, "quote 3309")], user_msg="What does ACME trade at?",
                                               tool_choice="get_stock_price")
    assert calls and isinstance(calls[0], str)
    assert "quote 3309" in response.response
    assert response.sources and response.sources[0].tool_name == "get_stock_price"


def test_function_agent_with_initial_tool_choice(proxy: RecordingProxy, base_url: str) -> None:
    calls: list[str] = []
    agent = FunctionAgent(tools=[_tool(calls, "quote 7781")], llm=_llm(base_url),
                          system_prompt="You answer questions about stock prices.",
                          initial_tool_choice="get_stock_price")
    since = len(proxy.requests)

    async def run() -> Any:
        return await agent.run(user_msg="What does ACME trade at?", max_iterations=6)

    result = asyncio.run(run())
    assert calls and isinstance(calls[0], str)
    assert any(t.tool_name == "get_stock_price" and "quote 7781" in str(t.tool_output) for t in result.tool_calls)
    assert result.response.role == "assistant"
    tool_result_reached_next_request(proxy, since, "quote 7781")


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_openai_embedding(base_url: str) -> None:
    embed = OpenAIEmbedding(model="text-embedding-3-small", api_base=base_url, api_key="sk-test", max_retries=0)
    docs = embed.get_text_embedding_batch(["Bread is baked in an oven.", "The train leaves at noon."])
    query = embed.get_query_embedding("How do you bake bread?")
    assert len(docs) == 2 and len(query) == len(docs[0]) > 100
    assert _cosine(query, docs[0]) > _cosine(query, docs[1]) + 0.2
