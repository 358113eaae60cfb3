"""Hostile LLM requests, for ``bench/hostile.py``: each attack asks the chat model for far more than one
request may take, and raises unless the gateway refuses it as it should (a 400 naming the field).

Every attack takes the gateway's base URL (the starter models, default server settings, no API keys),
keeps to one connection on 127.0.0.1 and to about ``SECONDS`` of sending, repeating its request so the
runner's well-behaved client is measured while it lasts.

    ATTACKS: list of (name, attack); ``.venv/bin/python bench/hostile_llm.py URL`` runs them once each.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["ATTACKS"]

SECONDS = 10.0
"""How long each attack keeps sending."""
MODEL = "gpt-4o-mini"
HUGE_TEXT = "word " * (3 * 1024 * 1024)  # 15 MiB: under the default JSON limit, far past any context


def _repeat(url: str, path: str, body: bytes, param: str | tuple[str | None, ...], code: str,
            status: int = 400) -> None:
    """Send ``body`` again and again for :data:`SECONDS`; every answer must be the error expected."""
    params = (param,) if isinstance(param, str) else param
    sent = 0
    deadline = time.monotonic() + SECONDS
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
        while time.monotonic() < deadline:
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            sent += 1
            if r.status_code != status:
                raise AssertionError(f"{path}: expected a {status}, got {r.status_code}: {r.text[:300]}")
            error = r.json().get("error", {})
            if error.get("param") not in params or error.get("code") != code:
                raise AssertionError(f"{path}: expected param {params} and code {code}, got {error}")
    if sent == 0:
        raise AssertionError(f"{path}: nothing was sent")


def _body(fields: dict[str, Any]) -> bytes:
    return json.dumps({"model": MODEL, **fields}).encode()


def many_prompts_times_n(url: str) -> None:
    """200 000 prompts × 128 choices: 25.6 million sequences if all were run."""
    _repeat(url, "/v1/completions", _body({"prompt": ["hi"] * 200_000, "n": 128}), "prompt",
            "array_above_max_length")


def prompts_times_tokens(url: str) -> None:
    """64 prompts (the limit) × 4 choices × 1000 tokens: past what the model's slots hold at once."""
    _repeat(url, "/v1/completions", _body({"prompt": ["hi"] * 64, "n": 4, "max_tokens": 1000}), "prompt",
            "invalid_value")


def huge_n_without_max_tokens(url: str) -> None:
    """128 choices, each until the context is full."""
    _repeat(url, "/v1/chat/completions", _body({"messages": [{"role": "user", "content": "Hi"}], "n": 128}), "n",
            "integer_above_max_value")


def huge_prompt(url: str) -> None:
    """A 15 MiB chat message, then a 15 MiB completion prompt, in turn."""
    chat = _body({"messages": [{"role": "user", "content": HUGE_TEXT}]})
    legacy = _body({"prompt": HUGE_TEXT, "stream": True})
    deadline = time.monotonic() + SECONDS
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
        while time.monotonic() < deadline:
            for path, body in (("/v1/chat/completions", chat), ("/v1/completions", legacy)):
                r = http.post(path, content=body, headers={"content-type": "application/json"})
                error = r.json().get("error", {}) if r.status_code == 400 else {}
                if error.get("code") != "context_length_exceeded":
                    raise AssertionError(f"{path}: expected context_length_exceeded, got {r.status_code}:"
                                         f" {r.text[:300]}")


def many_members(url: str) -> None:
    """250 000 biased tokens: more object members than a body may hold, refused before decoding."""
    bias = {str(t): 1 for t in range(250_000)}
    _repeat(url, "/v1/chat/completions", _body({"messages": [{"role": "user", "content": "Hi"}], "logit_bias": bias}),
            (None,), "payload_too_large", status=413)


def huge_logit_bias(url: str) -> None:
    """A million biased tokens (OpenAI takes 300): too many items to decode at all."""
    bias = {str(t): 1 for t in range(1_000_000)}
    _repeat(url, "/v1/chat/completions", _body({"messages": [{"role": "user", "content": "Hi"}], "logit_bias": bias}),
            (None,), "payload_too_large", status=413)


def large_logit_bias(url: str) -> None:
    """49 000 biased tokens: decoded (under ``server.max_json_members``), then refused by their count."""
    bias = {str(t): 1 for t in range(49_000)}
    _repeat(url, "/v1/chat/completions", _body({"messages": [{"role": "user", "content": "Hi"}], "logit_bias": bias}),
            "logit_bias", "object_above_max_properties")


def long_stop_strings(url: str) -> None:
    """Four stop strings of a megabyte each: every token would be matched against each prefix of each."""
    _repeat(url, "/v1/chat/completions",
            _body({"messages": [{"role": "user", "content": "Hi"}], "stop": ["x" * 1_000_000] * 4}),
            ("stop[0]",), "string_above_max_length")


ATTACKS: list[tuple[str, Callable[[str], None]]] = [
    ("llm: 200k prompts x n=128", many_prompts_times_n),
    ("llm: 64 prompts x n=4 x 1000 tokens", prompts_times_tokens),
    ("llm: n=128 without max_tokens", huge_n_without_max_tokens),
    ("llm: 15 MiB prompt", huge_prompt),
    ("llm: 1M-entry logit_bias", huge_logit_bias),
    ("llm: 250k-entry logit_bias", many_members),
    ("llm: 49k-entry logit_bias", large_logit_bias),
    ("llm: 4 stop strings of 1 MB", long_stop_strings),
]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/hostile_llm.py http://127.0.0.1:8000")
    for name, attack in ATTACKS:
        start = time.perf_counter()
        attack(sys.argv[1].rstrip("/"))
        print(f"{name}: refused as expected ({time.perf_counter() - start:.1f} s)")
