"""Token-id inputs: OpenAI's ids under OpenAI model names, the local model's ids under its own name.

The ids are made the way clients make them, with tiktoken (fed offline from a primed cache, as the
framework tests feed their clients), and sent through the official SDK to a real gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest
import tiktoken
from openai import OpenAI
from tiktoken_cache import prime_tiktoken_cache

from compat.errors import InvalidRequest
from compat.openai import vocab

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "Café, naïve, Zürich: 日本語のテキスト 🙂",
         "def add(x, y):\n    return x + y\n"]


@pytest.fixture(scope="module")
def encodings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tiktoken.Encoding]:
    """tiktoken's own cl100k_base and o200k_base, loaded from a primed cache (nothing downloaded)."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    prime_tiktoken_cache(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {name: tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")}


def _vectors(client: OpenAI, model: str, inputs: str | list[str] | list[int] | list[list[int]]) -> np.ndarray:
    r = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    return np.array([d.embedding for d in r.data])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


# --------------------------------------------------------------------------------------------------
# The cache primer the framework tests use


def _offline_tiktoken(cache: Path) -> subprocess.CompletedProcess[str]:
    """Run tiktoken in a fresh process with ``cache`` as its cache; any download attempt fails at once."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "tiktoken_cache_dir")}
    env |= {"TIKTOKEN_CACHE_DIR": str(cache), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    code = ("import json, tiktoken; print(json.dumps([tiktoken.get_encoding('cl100k_base').encode('hello world'),"
            " tiktoken.encoding_for_model('gpt-4o-mini').encode('hello world')]))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_a_primed_cache_runs_tiktoken_offline(tmp_path: Path) -> None:
    empty = _offline_tiktoken(tmp_path / "empty")
    assert empty.returncode != 0  # without the files tiktoken would have to download them
    prime_tiktoken_cache(tmp_path / "primed")
    primed = _offline_tiktoken(tmp_path / "primed")
    assert primed.returncode == 0, primed.stderr
    assert json.loads(primed.stdout) == [[15339, 1917], [24912, 2375]]


def test_the_gateways_vocabularies_are_tiktokens(encodings: dict[str, tiktoken.Encoding]) -> None:
    text = "\n".join([*TEXTS, "  <|endoftext|> 12345678 don't WE'LL", "\t\r\n"])
    for name, real in encodings.items():
        ours = vocab.vocabulary(name)
        assert ours.top == real.max_token_value
        assert ours.tokens == [real.decode_single_token_bytes(i) for i in range(len(ours.tokens))]
        assert ours.special == {real.encode_single_token(t): t.encode() for t in real.special_tokens_set}
        ids = real.encode(text, allowed_special="all")
        assert ours.decode(ids) == real.decode(ids) == text
        cut = real.encode("🙂")[:1]  # part of a character
        assert ours.decode(cut) == real.decode(cut)


@pytest.mark.parametrize(("model", "encoding"), [
    ("text-embedding-3-small", "cl100k_base"), ("text-embedding-3-large", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("gpt-4o-2024-08-06", "o200k_base"),
    ("gpt-4.1", "o200k_base"), ("gpt-4.1-nano", "o200k_base"), ("o1", "o200k_base"), ("o3-mini", "o200k_base"),
    ("o4-mini", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-3.5-turbo-0125", "cl100k_base"), ("davinci-002", "cl100k_base"), ("babbage-002", "cl100k_base"),
    ("llama-3.1-8b-instant", None), ("minilm", None), ("whisper-1", None),
])
def test_model_names_read_tiktokens_table(model: str, encoding: str | None) -> None:
    assert vocab.encoding_name_for_model(model) == encoding
    assert vocab.openai_encoding(model, "local-model", [(1, 2)]) == encoding


def test_only_ids_under_an_openai_alias_are_openais() -> None:
    assert vocab.openai_encoding("minilm", "minilm", [(1, 2)]) is None  # the local model's own name
    assert vocab.openai_encoding("text-embedding-3-small", "minilm", ["text"]) is None  # no ids to read
    assert vocab.openai_encoding("text-embedding-3-small", "minilm", ["text", (1, 2)]) == "cl100k_base"
    with pytest.raises(InvalidRequest) as caught:  # davinci reads r50k_base, which the server does not have
        vocab.ids_as_text([(1, 2)], model="davinci", encoding_name="r50k_base", field="prompt")
    assert caught.value.param == "prompt"


# --------------------------------------------------------------------------------------------------
# Embeddings


def test_cl100k_ids_embed_like_their_text(client: OpenAI, encodings: dict[str, tiktoken.Encoding]) -> None:
    cl100k = encodings["cl100k_base"]
    by_text = _vectors(client, "text-embedding-3-small", TEXTS)
    by_ids = _vectors(client, "text-embedding-3-small", [cl100k.encode(t) for t in TEXTS])
    assert _cosines(by_ids, by_text).min() >= 0.9999
    one = _vectors(client, "text-embedding-ada-002", cl100k.encode(TEXTS[1]))
    assert _cosines(one, by_text[1:2])[0] >= 0.9999


def test_the_local_name_reads_the_local_vocabulary(client: OpenAI, encodings: dict[str, tiktoken.Encoding]) -> None:
    ids = [7592, 2088]  # "hello world" in all-MiniLM's own vocabulary
    hello = _vectors(client, "minilm", "hello world")
    assert _cosines(_vectors(client, "minilm", ids), hello)[0] >= 0.9999
    # The same ids under the OpenAI name are cl100k_base's, which spell something else.
    as_openai = _vectors(client, "text-embedding-3-small", ids)
    assert _cosines(as_openai, _vectors(client, "minilm", encodings["cl100k_base"].decode(ids)))[0] >= 0.9999
    assert _cosines(as_openai, hello)[0] < 0.9


@pytest.mark.parametrize("bad", [100300, 100261, -1])  # past the end, a gap between the special tokens, negative
def test_an_id_outside_cl100k_is_400_naming_the_input(client: OpenAI, bad: int) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input=[[15339, 1917], [15339, bad]])
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "input"
    assert "input[1]" in body["message"] and str(bad) in body["message"]


# --------------------------------------------------------------------------------------------------
# Legacy completions


def test_o200k_prompt_completes_like_its_text(client: OpenAI, encodings: dict[str, tiktoken.Encoding]) -> None:
    prompts = ["Once upon a time, in a quiet village by the sea,", "The capital of France is"]
    ids = [encodings["o200k_base"].encode(p) for p in prompts]
    by_text = client.completions.create(model="gpt-4o-mini", prompt=prompts, max_tokens=8, temperature=0)
    by_ids = client.completions.create(model="gpt-4o-mini", prompt=ids, max_tokens=8, temperature=0)
    assert [c.text for c in by_ids.choices] == [c.text for c in by_text.choices]
    assert all(c.text for c in by_ids.choices)
    assert by_ids.usage is not None and by_text.usage is not None
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens
    one = client.completions.create(model="gpt-4o-mini", prompt=ids[0], max_tokens=8, temperature=0, echo=True)
    assert one.choices[0].text == prompts[0] + by_text.choices[0].text


def test_the_local_name_reads_smollms_vocabulary(client: OpenAI, encodings: dict[str, tiktoken.Encoding]) -> None:
    ids = [504, 3458, 282]
    local = client.completions.create(model="smollm2", prompt=ids, max_tokens=1, temperature=0, echo=True)
    assert local.usage is not None and local.usage.prompt_tokens == 3
    alias = client.completions.create(model="gpt-4o-mini", prompt=ids, max_tokens=1, temperature=0, echo=True)
    spelled = encodings["o200k_base"].decode(ids)
    assert alias.choices[0].text.startswith(spelled)
    assert not local.choices[0].text.startswith(spelled)


def test_an_id_outside_o200k_is_400_naming_the_prompt(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gpt-4o-mini", prompt=[[24912, 2375], [200019]], max_tokens=2)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "prompt"
    assert "prompt[1]" in body["message"] and "200019" in body["message"]
