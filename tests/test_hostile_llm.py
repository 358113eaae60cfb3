"""One client's chat or completion cannot hold the LLM for everyone: too many prompts or choices, too many
tokens in all, oversized stop strings and logit biases are refused with a 400 naming the field, and a
prompt far larger than the context is refused by its size before it reaches the model's thread, while
another client's stream keeps flowing.

Each attack runs beside :class:`HealthProbe`, and every model's ``active`` count is back to 0 after it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS, Gateway, base_config, smollm_models
from hostile import HealthProbe, wait_idle
from openai import OpenAI

from backends.errors import ContextTooLong
from backends.llama.prompts import ChatTemplate, PromptBuilder
from backends.types import ChatMessage, ChatRequest, CompletionRequest, SamplingParams
from gateway.config import LlmLimits
from gateway.errors import InvalidRequest
from gateway.serving.chat import Limits

HELLO = [{"role": "user", "content": "Hello"}]
HUGE = "word " * (3 * 1024 * 1024)  # 15 MiB: under the JSON limit, thousands of times the context
STREAM_GAP = 2.0
"""Seconds between two chunks of a stream that would show it stalled (tokenising HUGE alone takes longer)."""
ATTACK_SECONDS = 3.0


def _refused(call: Any) -> dict[str, Any]:
    """The error body of a call that must be a 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    return body


def _idle(url: str) -> None:
    counts = wait_idle(url)
    assert not any(counts.values()), counts


# --------------------------------------------------------------------------------------------------
# The checks themselves, without a server


@dataclass
class _Model:
    slots: int = 4
    context_length: int = 1024


def test_choices_and_tokens_are_bounded_by_the_models_slots() -> None:
    limits, model = Limits(), _Model()
    limits.check(model, SamplingParams(n=4, max_tokens=10**6))  # each choice counts at most the context
    limits.check(model, SamplingParams(n=1), prompts=64)
    with pytest.raises(InvalidRequest) as many:
        limits.check(model, SamplingParams(n=5))
    assert (many.value.param, many.value.code) == ("n", "integer_above_max_value")
    with pytest.raises(InvalidRequest) as total:
        limits.check(model, SamplingParams(n=4, max_tokens=32), prompts=64)
    assert total.value.param == "prompt" and "8192" in total.value.message and "4096" in total.value.message
    small = Limits(LlmLimits(max_n=8, max_request_tokens=100))
    small.check(model, SamplingParams(n=8))
    for sampling, param in ((SamplingParams(max_tokens=101), "max_tokens"), (SamplingParams(n=8, max_tokens=13), "n"),
                            (SamplingParams(n=9), "n")):
        with pytest.raises(InvalidRequest) as caught:
            small.check(model, sampling)
        assert caught.value.param == param


@dataclass
class _Bytes:
    """A vocabulary of one token per byte, and of ``word`` tokens of five bytes: at most 5 bytes a token."""

    n_vocab: int = 300
    n_ctx_seq: int = 64
    add_bos: bool = False
    bos_token: int = 0
    bos_text: str = ""
    tokenized: int = 0

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        self.tokenized += 1
        return list(text.encode())

    def detokenize(self, tokens: tuple[int, ...]) -> str:
        self.tokenized += 1
        return bytes(tokens).decode()

    def accepts_grammar(self, grammar: str) -> bool:
        return True


def test_a_text_too_large_for_the_context_is_refused_unread() -> None:
    model = _Bytes()
    builder = PromptBuilder(model, max_token_bytes=5)
    builder.completion(CompletionRequest("x" * 63))
    with pytest.raises(ContextTooLong) as caught:
        builder.completion(CompletionRequest("x" * 321))  # 321 bytes hold at least 65 tokens of 5 bytes
    assert (caught.value.n_prompt, caught.value.limit, caught.value.at_least) == (65, 64, True)
    assert model.tokenized == 1  # refused without tokenising
    with pytest.raises(ContextTooLong):
        builder.completion(CompletionRequest("é" * 161))  # 322 bytes in 161 characters
    assert model.tokenized == 1
    with pytest.raises(ContextTooLong) as read:
        builder.completion(CompletionRequest("x" * 320))  # may fit by its size: tokenised, then refused
    assert not read.value.at_least and model.tokenized == 2
    with pytest.raises(ContextTooLong):
        builder.completion(CompletionRequest((1,) * 1_000_000))  # token ids: refused by their count, unread
    assert model.tokenized == 2
    spaces = PromptBuilder(model, max_token_bytes=5, strips_spaces=True)
    with pytest.raises(ContextTooLong) as stripped:
        spaces.completion(CompletionRequest(" " * 10_000))  # whitespace may vanish beside a special token
    assert not stripped.value.at_least


def test_chat_contents_too_large_for_the_context_are_refused_before_the_template_renders_them() -> None:
    renders: list[int] = []

    def render(turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        renders.append(len(turns))
        return "".join(f"<{t['role']}>{t['content'].strip()}" for t in turns)

    builder = PromptBuilder(_Bytes(), ChatTemplate(render, knows_tools=False), max_token_bytes=5)
    fits = ChatRequest(messages=(ChatMessage("user", "x" * 150), ChatMessage("user", "y" * 150)))
    builder.draft_chat(fits)
    assert renders == [2]
    over = ChatRequest(messages=(ChatMessage("user", "x" * 200), ChatMessage("user", "y" * 121)))
    with pytest.raises(ContextTooLong) as caught:
        builder.draft_chat(over)  # 321 characters hold at least 65 tokens of at most 5 bytes
    assert (caught.value.n_prompt, caught.value.limit, caught.value.at_least) == (65, 64, True)
    assert renders == [2]  # refused without rendering
    padded = ChatRequest(messages=(ChatMessage("user", " " * 10_000 + "x" * 300 + " " * 10_000),))
    builder.draft_chat(padded)  # a template may trim a content's ends: only its inside is counted
    assert renders == [2, 1]


# --------------------------------------------------------------------------------------------------
# Against the gateway, default limits: 4 slots of 1024 tokens

# One decode thread: on a busy test machine, more threads than free cores pause a stream by themselves.
PLAIN = smollm_models("{n_ctx: 1024, parallel: 4, n_threads: 1}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("plain"), base_config(models=PLAIN)).start()
    yield gw
    gw.stop()



def test_too_many_prompts_are_refused_by_their_count(plain: Gateway) -> None:
    client = plain.openai()
    with HealthProbe(plain.url) as probe:
        over = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt=["hi"] * 65, max_tokens=1))
        huge = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt=["hi"] * 200_000, n=128,
                                                          max_tokens=1))
    probe.assert_served()
    for body, most in ((over, 64), (huge, 2048)):
        assert (body["param"], body["code"]) == ("prompt", "array_above_max_length")
        assert f"maximum length {most}" in body["message"]
    r = client.completions.create(model="gpt-4o-mini", prompt=["hi"] * 64, max_tokens=1)
    assert len(r.choices) == 64
    _idle(plain.url)


def test_choices_past_the_slots_and_tokens_past_the_budget_are_refused(plain: Gateway) -> None:
    client = plain.openai()
    with HealthProbe(plain.url) as probe:
        chat = _refused(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=5))
        legacy = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt="hi", n=128))
        openai_max = _refused(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=129))
        total = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt=["hi"] * 64, n=4,
                                                           max_tokens=32))
    probe.assert_served()
    for body in (chat, legacy, openai_max):
        assert (body["param"], body["code"]) == ("n", "integer_above_max_value")
    assert "<= 4" in chat["message"] and "<= 128" in openai_max["message"]
    assert (total["param"], total["code"]) == ("prompt", "invalid_value")
    assert "8192" in total["message"]
    r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=4, max_tokens=2)
    assert len(r.choices) == 4
    _idle(plain.url)


def _encoded(body: dict[str, Any]) -> bytes:
    """A body encoded before the probe starts: encoding a million members holds this process's GIL,
    and the probe would time the test's own pause instead of the gateway's."""
    return json.dumps(body).encode()


def _post_raw(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", content=body,
                      headers={"content-type": "application/json"}, timeout=60)


def test_stop_strings_and_logit_bias_are_held_to_openais_limits(plain: Gateway) -> None:
    client = plain.openai()
    bias = {str(t): 1 for t in range(301)}
    # 45 000 entries, sent raw: refused by their count, before they are converted into a request.
    many = _encoded({"model": "gpt-4o-mini", "messages": HELLO, "logit_bias": {str(t): 1 for t in range(45_000)}})
    # 150 000: more object members than a body may hold (server.max_json_members), refused before decoding.
    members = _encoded({"model": "gpt-4o-mini", "messages": HELLO,
                        "logit_bias": {str(t): 1 for t in range(150_000)}})
    # A million: more items than a body may hold (server.max_json_items), refused before decoding.
    million = _encoded({"model": "gpt-4o-mini", "messages": HELLO,
                        "logit_bias": {str(t): 1 for t in range(1_000_000)}})
    with HealthProbe(plain.url) as probe:
        stops = _refused(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                                stop=["a", "b", "c", "d", "e"]))
        long_stop = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt="hi",
                                                               stop=["ok", "x" * 257]))
        biases = _refused(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                                                 logit_bias=bias))
        strong = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt="hi", logit_bias={"5": 101}))
        raw = _post_raw(plain.url, many)
        keys = _post_raw(plain.url, members)
        huge = _post_raw(plain.url, million)
    probe.assert_served()
    assert (stops["param"], stops["code"]) == ("stop", "array_above_max_length")
    assert (long_stop["param"], long_stop["code"]) == ("stop[1]", "string_above_max_length")
    assert (biases["param"], biases["code"]) == ("logit_bias", "object_above_max_properties")
    assert strong["param"] == "logit_bias"
    assert raw.status_code == 400
    assert (raw.json()["error"]["param"], raw.json()["error"]["code"]) == ("logit_bias", "object_above_max_properties")
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"
    assert "300000 items" in huge.json()["error"]["message"]
    assert keys.status_code == 413
    assert "50000 object members" in keys.json()["error"]["message"]
    ok = client.completions.create(model="gpt-4o-mini", prompt="hi", max_tokens=1, stop=["x" * 256] * 4,
                                   logit_bias={str(t): 1 for t in range(300)})
    assert len(ok.choices) == 1
    _idle(plain.url)


@dataclass
class _Stream:
    """A chat streamed on a thread of its own, until told to stop: when each chunk came."""

    client: OpenAI
    times: list[float] = field(default_factory=list)
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with self.client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell me a long story."}],
                    max_tokens=900, temperature=0, logit_bias=SMOLLM_SPECIAL_TOKENS, stream=True) as chunks:
                for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        self.times.append(time.perf_counter())
                    if self.stop.is_set():
                        return
        except BaseException as e:  # reported by the test
            self.error = e

    def longest_pause(self, start: float, end: float) -> float:
        """The longest wait between two chunks, of those waits that overlap ``start``..``end``."""
        times = self.times
        pauses = [b - a for a, b in itertools.pairwise(times) if b >= start and a <= end]
        return max(pauses, default=float("inf"))


@pytest.fixture
def streaming(plain: Gateway) -> Iterator[_Stream]:
    stream = _Stream(plain.openai())
    thread = threading.Thread(target=stream.run, name="stream", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not stream.times and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.times, f"the stream never started: {stream.error}"
    yield stream
    stream.stop.set()
    thread.join(timeout=120)
    assert stream.error is None, stream.error


def test_a_huge_prompt_is_refused_by_its_size_while_a_stream_flows(plain: Gateway, streaming: _Stream) -> None:
    chat_body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": HUGE}]}).encode()
    legacy_body = json.dumps({"model": "gpt-4o-mini", "prompt": HUGE, "stream": True}).encode()
    answers = []
    with HealthProbe(plain.url) as probe, httpx.Client(timeout=60) as http:
        started = time.perf_counter()
        while time.perf_counter() - started < ATTACK_SECONDS:
            for path, body in (("/v1/chat/completions", chat_body), ("/v1/completions", legacy_body)):
                sent = time.perf_counter()
                r = http.post(f"{plain.url}{path}", content=body, headers={"content-type": "application/json"})
                answers.append((r, time.perf_counter() - sent))
        ended = time.perf_counter()
        time.sleep(STREAM_GAP)  # a pause that began during the attack shows in the chunks after it
    probe.assert_served()
    for r, took in answers:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "context_length_exceeded" and "at least" in error["message"]
        assert error["param"] in ("messages", "prompt")
        assert took < STREAM_GAP, f"a refused huge prompt took {took:.1f} s"
    assert streaming.times[-1] > ended, "the stream ended before the attack did: nothing was measured"
    pause = streaming.longest_pause(started, ended)
    assert pause < STREAM_GAP, f"the stream stalled {pause:.2f} s while huge prompts came in"


# --------------------------------------------------------------------------------------------------
# Configured limits: more choices than slots, a small token budget


LIMITED = smollm_models("{n_ctx: 1024, parallel: 2, n_threads: 1}")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    extra = "  llm_limits: {max_n: 6, max_request_tokens: 48, max_prompts: 8}\n"
    gw = Gateway(tmp_path_factory.mktemp("limited"), base_config(extra, models=LIMITED)).start()
    yield gw
    gw.stop()


def test_configured_limits_cap_a_request_without_max_tokens(limited: Gateway) -> None:
    client = limited.openai()
    with HealthProbe(limited.url) as probe:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=6, temperature=1.0, seed=3,
                                           logit_bias=SMOLLM_SPECIAL_TOKENS)
        many = _refused(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=7))
        asked = _refused(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=6,
                                                                max_completion_tokens=9))
        prompts = _refused(lambda: client.completions.create(model="gpt-4o-mini", prompt=["hi"] * 9, max_tokens=1))
    probe.assert_served()
    assert len(r.choices) == 6 and all(c.finish_reason == "length" for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 48  # 8 each: the budget's share
    assert (many["param"], many["code"]) == ("n", "integer_above_max_value") and "<= 6" in many["message"]
    assert (asked["param"], asked["code"]) == ("n", "invalid_value") and "54" in asked["message"]
    assert (prompts["param"], prompts["code"]) == ("prompt", "array_above_max_length")
    legacy = client.completions.create(model="gpt-4o-mini", prompt=["a", "b", "c", "d", "e", "f"], max_tokens=8,
                                       logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert [c.index for c in legacy.choices] == list(range(6))  # in rounds of the 2 slots, in order
    _idle(limited.url)
