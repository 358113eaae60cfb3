"""Speculative decoding by prompt lookup (backends/llama/drafts.py, the scheduler's ``_verify``): drafts
from the sequence's own tokens, kept only where the model picks the same token, so the reply is the
model's own.

llama.cpp's sums depend on the shape of a batch in their last bits, with or without drafts (two streams
decoded together differ from one alone the same way), so a greedy reply with drafts is compared with one
without up to a near-tie: where they first differ, the two tokens must be all but equally likely."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest
from conftest import Gateway, base_config, smollm_models
from openai import OpenAI

from backends.llama.drafts import PromptLookup

PASSAGE = ("SYN4PSE is a local inference gateway. One Python process runs the models itself and serves them "
           "behind the wire formats clients already speak. An app built on the official SDKs switches to it by "
           "changing only its base URL. Models are declared in one file, fetched on demand, loaded on first use "
           "and unloaded when idle.")
QUOTE = [{"role": "user", "content": f"Copy this passage exactly, word for word:\n\n{PASSAGE}"}]


def test_a_draft_is_what_followed_the_latest_ngram() -> None:
    lookup = PromptLookup([5, 6, 7, 8, 9, 5, 6, 7], most=8)
    assert lookup.draft(8)[:2] == [8, 9]  # "5 6 7" was followed by "8 9 5 6 7"
    lookup.push(8)
    assert lookup.draft(2) == [9, 5]
    assert PromptLookup([1, 2, 3, 4], most=8).draft(8) == []  # nothing seen twice: no draft


def test_the_draft_length_follows_what_the_model_kept() -> None:
    lookup = PromptLookup(list(range(10)) * 3, most=8)
    first = len(lookup.draft(8))
    lookup.verified(first, first)
    assert len(lookup.draft(8)) == min(8, first + 2)  # kept whole: longer
    lookup.verified(5, 1)
    assert len(lookup.draft(8)) == 2  # kept one: what was kept, and one more
    lookup.verified(2, 0)
    assert lookup.draft(8) == []  # kept nothing: a pause
    assert lookup.drafted == first + 7 and lookup.kept == first + 1


def _smollm(tmp_path_factory: pytest.TempPathFactory, options: str) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("drafts"), base_config(models=smollm_models(options)))
    gw.grpc_port = None
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """SmolLM2 decoding one token per step (``speculative: false``)."""
    yield from _smollm(tmp_path_factory, "{n_ctx: 1024, speculative: false, cache_prompt: false}")


@pytest.fixture(scope="module")
def drafting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """SmolLM2 with prompt-lookup drafts on (the default)."""
    yield from _smollm(tmp_path_factory, "{n_ctx: 1024, cache_prompt: false}")


def _greedy(gateway: Gateway) -> list[tuple[str, float, dict[str, float]]]:
    """Each token of a greedy quoting reply: its text, its log-probability and the five likeliest."""
    client: OpenAI = gateway.openai()
    reply = client.chat.completions.create(model="smollm2", messages=QUOTE, max_tokens=96, temperature=0,  # type: ignore[arg-type]
                                           logprobs=True, top_logprobs=5,
                                           logit_bias={"0": -100, "1": -100, "2": -100})
    content = reply.choices[0].logprobs.content if reply.choices[0].logprobs else None
    assert content is not None and len(content) == 96
    # The banned end tokens (text "") keep their raw log-probabilities: left out of the alternatives.
    return [(t.token, t.logprob, {a.token: a.logprob for a in t.top_logprobs if a.token}) for t in content]


def _drafts(gateway: Gateway) -> dict[str, int]:
    models = httpx.get(f"{gateway.url}/admin/models", timeout=10).json()["data"]
    drafts: dict[str, int] = next(m for m in models if m["id"] == "smollm2")["drafts"]
    return drafts


def test_a_drafted_reply_is_the_models_own(plain: Gateway, drafting: Gateway) -> None:
    without = _greedy(plain)
    assert _drafts(plain) == {"drafted": 0, "accepted": 0}
    drafted = _greedy(drafting)
    made = _drafts(drafting)
    assert made["accepted"] > 24, made  # the quote was drafted, and most of the drafts kept
    assert made["accepted"] >= 0.5 * made["drafted"], made
    for token, logprob, top in drafted:  # every token is the greedy pick of the logits it came from
        assert logprob >= max(top.values()) - 1e-6, (token, logprob, top)
    same = next((i for i, (a, b) in enumerate(zip(without, drafted, strict=True)) if a[0] != b[0]), None)
    if same is not None:  # batch shapes differ in the last bits: only at a near-tie may the picks part
        token, logprob, top = drafted[same]
        other = without[same][0]
        assert other in top and math.isclose(top[other], logprob, abs_tol=0.05), (same, token, other, top)


def test_drafts_stay_within_max_tokens_and_the_context(plain: Gateway, drafting: Gateway) -> None:
    client: OpenAI = drafting.openai()
    for most in (1, 2, 3, 7):
        reply = client.chat.completions.create(model="smollm2", messages=QUOTE, max_tokens=most, temperature=0,  # type: ignore[arg-type]
                                               logit_bias={"0": -100, "1": -100, "2": -100})
        assert reply.usage is not None and reply.usage.completion_tokens == most
        assert reply.choices[0].finish_reason == "length"
    long = [{"role": "user", "content": "Copy this, again and again:\n\n" + " ".join([PASSAGE] * 4)}]
    ends = []
    for gateway in (plain, drafting):  # no max_tokens: up to the slot's context, with drafts or without
        reply = gateway.openai().chat.completions.create(model="smollm2", messages=long, temperature=0,  # type: ignore[arg-type]
                                                         logit_bias={"0": -100, "1": -100, "2": -100})
        assert reply.choices[0].finish_reason == "length" and reply.usage is not None
        ends.append(reply.usage.prompt_tokens + reply.usage.completion_tokens)
    assert ends[0] == ends[1] == 1025  # the slot's 1024 cells, and the last token, which needs none


def test_a_sampled_reply_is_the_same_with_drafts_and_without(plain: Gateway, drafting: Gateway) -> None:
    """Every pick is the sampler's own, in order, so a seeded reply is the one made without drafts (the
    prompt cache is off on both: a prompt read in other pieces differs in the last bits)."""
    kwargs = {"model": "smollm2", "messages": QUOTE, "max_tokens": 64, "temperature": 0.7, "seed": 11}
    before = _drafts(drafting)["accepted"]
    without = plain.openai().chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    pieces = drafting.openai().chat.completions.create(**kwargs, stream=True)  # type: ignore[call-overload]
    streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert _drafts(drafting)["accepted"] > before  # drafts were kept on the way
    assert streamed == without and without


def test_drafts_are_counted_in_the_metrics(drafting: Gateway) -> None:
    _greedy(drafting)
    text = httpx.get(f"{drafting.url}/metrics", timeout=10).text
    drafted = next(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith('syn4pse_draft_tokens_total{model="smollm2"}'))
    accepted = next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith('syn4pse_draft_tokens_accepted_total{model="smollm2"}'))
    assert drafted >= accepted > 0
