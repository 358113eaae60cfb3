"""Embeddings through the OpenAI SDK against the real all-MiniLM-L6-v2."""

from __future__ import annotations

import math

import openai
import pytest
from openai import OpenAI


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_related_sentences_are_closer(client: OpenAI) -> None:
    r = client.embeddings.create(model="text-embedding-3-small", input=[
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The stock market fell sharply today.",
    ])
    assert [d.index for d in r.data] == [0, 1, 2]
    a, b, c = (d.embedding for d in r.data)
    assert len(a) == 384
    assert _cos(a, b) > _cos(a, c) + 0.2
    assert _cos(a, b) > _cos(b, c) + 0.2
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 10


def test_base64_default_decodes_to_the_float_vectors(client: OpenAI) -> None:
    texts = ["hello world", "local inference"]
    b64 = client.embeddings.create(model="text-embedding-ada-002", input=texts)  # the SDK asks for base64
    floats = client.embeddings.create(model="text-embedding-ada-002", input=texts, encoding_format="float")
    for x, y in zip(b64.data, floats.data, strict=True):
        assert len(x.embedding) == len(y.embedding) == 384
        assert max(abs(p - q) for p, q in zip(x.embedding, y.embedding, strict=True)) < 1e-6


def test_raw_base64_is_little_endian_float32(gateway_http: str) -> None:
    import base64
    import struct

    import httpx

    url = str(gateway_http)
    r = httpx.post(f"{url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi",
                                                 "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    values = struct.unpack("<384f", raw)
    assert math.isclose(sum(v * v for v in values), 1.0, rel_tol=1e-4)


def test_dimensions_truncates_and_renormalises(client: OpenAI) -> None:
    full = client.embeddings.create(model="text-embedding-3-small", input="truncate me",
                                    encoding_format="float").data[0].embedding
    short = client.embeddings.create(model="text-embedding-3-small", input="truncate me", dimensions=64,
                                     encoding_format="float").data[0].embedding
    assert len(short) == 64
    assert math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-4)
    assert _cos(short, full[:64]) > 0.9999


def test_dimensions_larger_than_the_model_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=1000)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "dimensions"


def test_token_arrays_embed_like_their_text(client: OpenAI) -> None:
    # all-MiniLM's own vocabulary, under its own name: 7592 = "hello", 2088 = "world" (ids under the
    # OpenAI names are OpenAI's: tests/test_token_ids.py).
    by_text = client.embeddings.create(model="minilm", input="hello world",
                                       encoding_format="float").data[0].embedding
    one = client.embeddings.create(model="minilm", input=[7592, 2088], encoding_format="float")
    many = client.embeddings.create(model="minilm", input=[[7592, 2088], [7592]], encoding_format="float")
    assert _cos(one.data[0].embedding, by_text) > 0.9999
    assert len(many.data) == 2
    assert _cos(many.data[0].embedding, by_text) > 0.9999


@pytest.mark.parametrize("bad", [[], "", [""], [[]], [1, "a"], [10**9]])
def test_bad_inputs_are_400_naming_input(client: OpenAI, bad: object) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input=bad)  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input"


def test_input_longer_than_the_model_reads_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="word " * 600)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input"


def test_chat_model_is_not_an_embeddings_model(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="gpt-4o-mini", input="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"
