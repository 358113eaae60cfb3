"""Chat completions through the official OpenAI SDK against the real starter LLM."""

from __future__ import annotations

import openai
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS
from openai import OpenAI

HELLO = [{"role": "user", "content": "Say hello to me."}]


def test_plain_chat_answers(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=24, temperature=0)
    choice = r.choices[0]
    assert r.object == "chat.completion"
    assert r.model == "gpt-4o-mini"
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_system_and_developer_roles_reach_the_template(client: OpenAI) -> None:
    base = client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=1)
    with_system = client.chat.completions.create(
        model="gpt-4o", max_tokens=1,
        messages=[{"role": "developer", "content": "You answer in one short sentence about the weather."}, *HELLO])
    assert with_system.usage is not None and base.usage is not None
    assert with_system.usage.prompt_tokens != base.usage.prompt_tokens


def test_streamed_chat_with_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    # The stream and the plain answer are the same generation at temperature 0.
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=20, temperature=0)
    assert plain.choices[0].message.content == text
    assert plain.usage is not None and plain.usage.completion_tokens == last.usage.completion_tokens


def test_stream_without_usage_has_no_usage_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5,
                                                 stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_max_completion_tokens_holds(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=7, logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert r.usage is not None and r.usage.completion_tokens == 7
    assert r.choices[0].finish_reason == "length"


def test_stop_sequence_holds(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Describe the sea in a few sentences."}]
    free = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=40, temperature=0,
                                          logit_bias=SMOLLM_SPECIAL_TOKENS)
    text = free.choices[0].message.content or ""
    words = text.split()
    assert len(words) > 5, text
    stop = " " + words[4]  # a stop string from the middle of what the model says
    expected = text[: text.index(stop)]
    for stops in (stop, [stop, "never-appears"]):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=40,
                                           temperature=0, stop=stops, logit_bias=SMOLLM_SPECIAL_TOKENS)
        assert r.choices[0].message.content == expected
        assert r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=40,
                                              temperature=0, stop=stop, stream=True,
                                              logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_seed_makes_sampling_reproducible(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        r = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Invent a name for a cat."}],
            max_tokens=16, temperature=1.2, top_p=0.95, seed=seed, logit_bias=SMOLLM_SPECIAL_TOKENS)
        return r.choices[0].message.content or ""

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(s) != first for s in (1, 2, 3))


def test_penalties_change_the_output(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Repeat the word cat many times."}]
    common = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 30, "temperature": 0,
              "logit_bias": SMOLLM_SPECIAL_TOKENS}
    plain = client.chat.completions.create(**common).choices[0].message.content  # type: ignore[call-overload]
    penalised = client.chat.completions.create(  # type: ignore[call-overload]
        **common, frequency_penalty=2.0, presence_penalty=2.0).choices[0].message.content
    assert plain != penalised


def test_logit_bias_forces_a_token(client: OpenAI) -> None:
    outputs = set()
    for token in ("314", "1024"):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=4, temperature=0,
                                           logit_bias={token: 100})
        text = r.choices[0].message.content or ""
        piece = text[: len(text) // 4]
        assert piece and text == piece * 4, text
        outputs.add(text)
    assert len(outputs) == 2


def test_logit_bias_outside_the_vocabulary_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, logit_bias={"99999999": 5})
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "logit_bias"


def test_user_and_cache_hints_are_accepted(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=2, user="u-1",
                                       safety_identifier="s-1", prompt_cache_key="k", service_tier="auto")
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("field", "extra"),
    [
        ("tool_choice", {"tool_choice": "required"}),  # no tools to choose from
        ("messages", {"response_format": {"type": "json_object"}}),  # OpenAI wants the word JSON in them
        ("top_logprobs", {"top_logprobs": 3}),  # without logprobs
        ("store", {"store": True}),
        ("reasoning_effort", {"reasoning_effort": "low"}),
    ],
)
def test_invalid_or_unimplemented_fields_are_named(client: OpenAI, field: str, extra: dict[str, object]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=2, **extra)  # type: ignore[call-overload]
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == field
    assert error["type"] == "invalid_request_error"
    assert field in error["message"]


def test_image_part_is_rejected_by_path(client: OpenAI) -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "messages[0].content[1]"


def test_text_parts_are_joined(client: OpenAI) -> None:
    content = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]
    r = client.chat.completions.create(model="gpt-4o-mini", max_tokens=4,
                                       messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
    assert r.usage is not None and r.usage.prompt_tokens > 5


def test_prompt_longer_than_context_is_400_before_streaming(client: OpenAI) -> None:
    long = "word " * 3000
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": long}],
                                           stream=stream)
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "context_length_exceeded"
        assert caught.value.body["param"] == "messages"


def test_max_tokens_past_the_context_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5000)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "context_length_exceeded"
