"""Legacy completions: the four prompt shapes, echo, stop, max_tokens, streaming."""

from __future__ import annotations

import openai
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS
from openai import OpenAI


def test_string_prompt(client: OpenAI) -> None:
    r = client.completions.create(model="gpt-4o-mini", prompt="The capital of France is", max_tokens=5,
                                  temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices) == 1 and r.choices[0].text
    assert r.usage is not None and r.usage.completion_tokens <= 5


def test_default_max_tokens_is_16(client: OpenAI) -> None:
    r = client.completions.create(model="gpt-4o-mini", prompt="Once upon a time", logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert r.usage is not None and r.usage.completion_tokens == 16
    assert r.choices[0].finish_reason == "length"


def test_list_of_prompts_gives_one_choice_each(client: OpenAI) -> None:
    r = client.completions.create(model="gpt-4o-mini", prompt=["Roses are", "The sea is"], max_tokens=4,
                                  temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    single = client.completions.create(model="gpt-4o-mini", prompt="The sea is", max_tokens=4, temperature=0)
    assert r.choices[1].text == single.choices[0].text
    assert r.usage is not None and single.usage is not None
    assert r.usage.completion_tokens > single.usage.completion_tokens


def test_token_prompts(client: OpenAI) -> None:
    # SmolLM2's own ids, under its own name (ids under OpenAI names are OpenAI's: tests/test_token_ids.py).
    r = client.completions.create(model="smollm2", prompt=[504, 3458, 282], max_tokens=3, echo=True,
                                  temperature=0)
    assert r.usage is not None and r.usage.prompt_tokens == 3
    many = client.completions.create(model="smollm2", prompt=[[504, 3458], [504]], max_tokens=2)
    assert len(many.choices) == 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="smollm2", prompt=[10**8], max_tokens=2)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "prompt"


def test_echo_prepends_the_prompt(client: OpenAI) -> None:
    prompt = "The quick brown fox"
    r = client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=4, temperature=0, echo=True)
    plain = client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=4, temperature=0)
    assert r.choices[0].text == prompt + plain.choices[0].text


def test_stop_and_streaming(client: OpenAI) -> None:
    prompt = "1, 2, 3, 4,"
    full = client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=12, temperature=0,
                                     logit_bias=SMOLLM_SPECIAL_TOKENS).choices[0].text
    stop = full.strip()[-3:]  # three characters from what the model says
    cut = client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=12, temperature=0, stop=stop,
                                    logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=12, temperature=0,
                                            logit_bias=SMOLLM_SPECIAL_TOKENS, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


@pytest.mark.parametrize(("extra", "param"), [({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of"),
                                              ({"logprobs": 2, "echo": True}, "logprobs")])
def test_unimplemented_fields_are_rejected(client: OpenAI, extra: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gpt-4o-mini", prompt="x", max_tokens=2, **extra)  # type: ignore[call-overload]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param
