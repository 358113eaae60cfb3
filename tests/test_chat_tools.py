"""Tools, structured outputs, n > 1 and log-probabilities, through the official OpenAI SDK."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS
from openai import OpenAI

from backends.tool_calls import CallArguments, CallStart, ContentText, ToolCallReader
from backends.types import ToolPlan

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                       "required": ["zone"], "additionalProperties": False},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}  # type: ignore[index]


def _validate_call(name: str, arguments: str) -> dict[str, Any]:
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return dict(parsed)


def test_named_tool_call_is_valid_json_for_its_schema(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER, TIME],  # type: ignore[list-item]
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                       max_tokens=120, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI answers when tool_choice names the function
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"
    _validate_call("get_weather", calls[0].function.arguments)


def test_required_tool_call_streams_name_first_then_arguments(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER, TIME],  # type: ignore[list-item]
                                            tool_choice="required", max_tokens=120, temperature=0, stream=True)
    deltas = []
    finish = None
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.tool_calls:
                deltas.extend(c.delta.tool_calls)
            finish = c.finish_reason or finish
    assert finish == "tool_calls"
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.id.startswith("call_") and first.type == "function"
    assert first.function is not None and first.function.name in SCHEMAS
    assert len(rest) >= 2, "the arguments should arrive in fragments as they are generated"
    assert all(d.index == 0 and d.id is None and d.function is not None and d.function.name is None for d in rest)
    arguments = "".join((d.function.arguments or "") for d in deltas if d.function)
    _validate_call(first.function.name, arguments)


def test_required_tool_call_without_streaming(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER, TIME],  # type: ignore[list-item]
                                       tool_choice="required", max_tokens=120, temperature=0.7, seed=3)
    assert r.choices[0].finish_reason == "tool_calls"
    calls = r.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    _validate_call(calls[0].function.name, calls[0].function.arguments)


def test_tool_round_trip_call_result_answer(client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER],  # type: ignore[list-item]
                                           tool_choice="required", max_tokens=120, temperature=0)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    result = json.dumps({"forecast": ["sunny", "rain", "cloudy"], "temperature": 21})
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": call.id, "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
               {"role": "tool", "tool_call_id": call.id, "content": result}]
    second = client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=[WEATHER],  # type: ignore[arg-type]
                                            tool_choice="none", max_tokens=30, temperature=0)
    answer = second.choices[0]
    assert answer.message.tool_calls is None
    assert isinstance(answer.message.content, str) and answer.message.content.strip()
    assert answer.finish_reason in ("stop", "length")
    alone = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER],  # type: ignore[list-item]
                                           tool_choice="none", max_tokens=1)
    assert second.usage is not None and alone.usage is not None
    # The call and its result are in the prompt now: it grew by at least their own tokens.
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + len(result + call.function.arguments) // 4


def test_tool_choice_must_name_a_known_function(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER],  # type: ignore[list-item]
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "tool_choice"


def test_tool_schema_keyword_openai_refuses_is_400(client: OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer", "minimum": 3, "not": {"const": 4}}}}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[tool],  # type: ignore[list-item]
                                       tool_choice="required")
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "tools[0].function.parameters"
    assert "'not'" in body["message"] and "/properties/x/not" in body["message"]


# --------------------------------------------------------------------------------------------------
# Tool syntax in free replies (tool_choice auto)


def _read(plan: ToolPlan, pieces: list[str]) -> list[Any]:
    reader = ToolCallReader(plan)
    events: list[Any] = []
    for piece in pieces:
        events.extend(reader.feed(piece))
    return events + reader.finish()


@pytest.mark.parametrize("pieces", [
    ['Let me check. <tool', '_call>{"name": "get_time", "arguments": {"zone": "UTC"}}</tool_call>'],
    ['{"name": "get_time", "parameters"', ': {"zone": "UTC"}}'],
    ['[TOOL_CALLS][{"name": "get_time", "arguments": {"zone": "UTC"}}]'],
])
def test_auto_reads_the_model_tool_syntax(pieces: list[str]) -> None:
    events = _read(ToolPlan("auto", ("get_time",)), pieces)
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [s.name for s in starts] == ["get_time"]
    arguments = "".join(e.fragment for e in events if isinstance(e, CallArguments))
    assert json.loads(arguments) == {"zone": "UTC"}


def test_auto_leaves_plain_text_and_unknown_functions_as_content() -> None:
    plan = ToolPlan("auto", ("get_time",))
    text = ["The answer is < 3 ", "and {braces} stay."]
    assert "".join(e.text for e in _read(plan, text) if isinstance(e, ContentText)) == "".join(text)
    unknown = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    events = _read(plan, [unknown])
    assert not any(isinstance(e, CallStart) for e in events)
    assert "".join(e.text for e in events if isinstance(e, ContentText)) == unknown


def test_parallel_tool_calls_false_keeps_one_call() -> None:
    two = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>'
    assert len([e for e in _read(ToolPlan("auto", ("a", "b"), parallel=True), [two]) if isinstance(e, CallStart)]) == 2
    one = [e for e in _read(ToolPlan("auto", ("a", "b"), parallel=False), [two]) if isinstance(e, CallStart)]
    assert [e.name for e in one] == ["a"]


def test_auto_tool_choice_answers_through_the_gateway(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=[WEATHER],  # type: ignore[list-item]
                                       max_tokens=60, temperature=0)
    choice = r.choices[0]
    if choice.message.tool_calls:  # the model chose to call: then the call is well-formed
        assert choice.finish_reason == "tool_calls"
        json.loads(choice.message.tool_calls[0].function.arguments)
    else:
        assert choice.message.content and choice.finish_reason in ("stop", "length")


# --------------------------------------------------------------------------------------------------
# Structured outputs

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "address"],
    "additionalProperties": False,
}
SHOPPING = {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 4,
                             "items": {"type": "object",
                                       "properties": {"fruit": {"enum": ["apple", "pear", "plum"]},
                                                      "count": {"type": "integer"}},
                                       "required": ["fruit", "count"], "additionalProperties": False}}},
    "required": ["items"],
    "additionalProperties": False,
}
MOOD = {
    "type": "object",
    "properties": {"mood": {"type": "string", "enum": ["happy", "sad", "neutral"]},
                   "confident": {"type": "boolean"},
                   "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
                   "when": {"type": "string", "format": "date"}},
    "required": ["mood", "confident", "tags", "when"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(("name", "schema"), [("person", PERSON), ("shopping", SHOPPING), ("mood", MOOD)])
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_validates(client: OpenAI, name: str, schema: dict[str, Any], stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    messages = [{"role": "user", "content": f"Describe a {name} as JSON."}]
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages,  # type: ignore[call-overload]
                                                     response_format=fmt, max_tokens=300, temperature=0.5,
                                                     seed=11, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, response_format=fmt,  # type: ignore[call-overload]
                                           max_tokens=300, temperature=0.5, seed=11)
        text, finish = r.choices[0].message.content, [r.choices[0].finish_reason]
    assert finish == ["stop"]
    jsonschema.validate(json.loads(text), schema)


def test_json_object_output_is_an_object(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", response_format={"type": "json_object"},
                                       messages=[{"role": "user",
                                                  "content": "Give me a JSON object with a cat's name and age."}],
                                       max_tokens=200, temperature=0.3, seed=5)
    text = r.choices[0].message.content
    assert text is not None and isinstance(json.loads(text), dict)


@pytest.mark.parametrize(("schema", "keyword"), [
    ({"type": "object", "not": {"required": ["a"]}}, "/not"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "/if"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "/patternProperties"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "/dependentRequired"),
    ({"type": "string", "format": "uri-reference"}, "uri-reference"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "/properties/a/$ref"),
])
def test_schema_keyword_openai_refuses_is_400(client: OpenAI, schema: dict[str, Any], keyword: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       response_format={"type": "json_schema",  # type: ignore[typeddict-item]
                                                        "json_schema": {"name": "s", "schema": schema}})
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "response_format"
    assert keyword in body["message"]


# --------------------------------------------------------------------------------------------------
# n > 1 and log-probabilities


def test_n_returns_independent_choices_and_sums_usage(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell a story."}],
                                       n=3, max_tokens=8, temperature=1.0, seed=7, logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" and c.message.content for c in r.choices)
    assert len({c.message.content for c in r.choices}) > 1  # sampled independently
    assert r.usage is not None and r.usage.completion_tokens == 3 * 8
    single = client.chat.completions.create(model="gpt-4o-mini", max_tokens=8, logit_bias=SMOLLM_SPECIAL_TOKENS,
                                            messages=[{"role": "user", "content": "Tell a story."}])
    assert single.usage is not None and r.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt, once


def test_n_streams_every_choice(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell a story."}], n=3, max_tokens=6,
        temperature=1.0, seed=7, logit_bias=SMOLLM_SPECIAL_TOKENS, stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: "", 2: ""}
    finishes = {}
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert finishes == {0: "length", 1: "length", 2: "length"}
    assert all(texts.values())
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 18


def _check_entries(entries: list[Any], top: int, greedy: bool) -> None:
    assert entries
    for e in entries:
        assert e.logprob <= 0.0
        assert len(e.top_logprobs) == top
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0.0 for v in values)
        assert e.bytes is not None and bytes(e.bytes).decode(errors="replace") == e.token
        if greedy:
            assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)


def test_logprobs_are_log_probabilities(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Count to five."}],
                                       max_tokens=10, temperature=0, logprobs=True, top_logprobs=4,
                                       logit_bias=SMOLLM_SPECIAL_TOKENS)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None
    assert len(lp.content) == 10
    _check_entries(lp.content, 4, greedy=True)
    assert "".join(e.token for e in lp.content) == r.choices[0].message.content


def test_logprobs_stream_with_the_text(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Count to five."}], max_tokens=10, temperature=0.8,
        seed=2, logprobs=True, top_logprobs=2, logit_bias=SMOLLM_SPECIAL_TOKENS, stream=True))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
               for e in c.choices[0].logprobs.content]
    assert len(entries) == 10
    _check_entries(entries, 2, greedy=False)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(e.token for e in entries) == text


def test_no_logprobs_unless_asked(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert r.choices[0].logprobs is None


def test_legacy_completion_logprobs(client: OpenAI) -> None:
    r = client.completions.create(model="gpt-4o-mini", prompt="One, two, three,", max_tokens=6, temperature=0,
                                  logprobs=3, logit_bias=SMOLLM_SPECIAL_TOKENS)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert lp.top_logprobs is not None and lp.text_offset is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(v <= 0.0 for v in lp.token_logprobs)
    assert all(len(top) == 3 and max(top.values()) == pytest.approx(v) for top, v in zip(lp.top_logprobs,
                                                                                        lp.token_logprobs, strict=True))
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])


def test_legacy_completion_n(client: OpenAI) -> None:
    r = client.completions.create(model="gpt-4o-mini", prompt=["Once upon", "A long time"], n=2, max_tokens=4,
                                  temperature=1.0, seed=1, logit_bias=SMOLLM_SPECIAL_TOKENS)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage is not None and r.usage.completion_tokens == 16
