"""A conversation sent back as the SDKs keep it: the response message appended to the history as it came.

Whatever the gateway puts in a response message is accepted back in a request; what OpenAI accepts on a
message and ignores (``annotations``, ``refusal``, ``audio: null``, a tool message's ``name``, reasoning
text, a streamed call's ``index``) changes nothing in the prompt. Anything else stays a 400 by name.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import Gateway
from groq import Groq
from openai import BadRequestError, OpenAI

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module", params=["/v1", "/openai/v1"])
def sdk(request: pytest.FixtureRequest, gateway: Gateway) -> OpenAI:
    return gateway.openai(request.param)


def _prompt_tokens(r: Any) -> int:
    assert r.usage is not None
    return int(r.usage.prompt_tokens)


def test_sdk_message_appended_as_is_continues_the_chat(sdk: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Name a colour."}]
    first = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=12, temperature=0)
    reply = first.choices[0].message
    assert reply.annotations == [] and reply.refusal is None  # what the SDK will send back
    messages.append(reply)
    messages.append({"role": "user", "content": "And another one?"})
    second = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=12, temperature=0)
    assert second.choices[0].message.content
    # The earlier answer is in the prompt: the second prompt holds the first prompt and its answer.
    assert first.usage is not None
    assert _prompt_tokens(second) > _prompt_tokens(first) + first.usage.completion_tokens


def test_model_dump_of_the_message_is_accepted(sdk: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Say yes."}]
    first = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=6, temperature=0)
    dumped = first.choices[0].message.model_dump()
    assert dumped["audio"] is None and dumped["function_call"] is None and dumped["annotations"] == []
    again = sdk.chat.completions.create(model="gpt-4o-mini", max_tokens=6, temperature=0,
                                        messages=[*messages, dumped, {"role": "user", "content": "Why?"}])
    assert again.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("with_name", [False, True], ids=["tool-message", "tool-message-with-name"])
def test_forced_tool_call_round_trip_with_the_sdk_message(sdk: OpenAI, with_name: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                        tool_choice=FORCED, max_tokens=60, temperature=0)  # type: ignore[arg-type]
    reply = first.choices[0].message
    assert reply.tool_calls and reply.tool_calls[0].function.name == "get_weather"
    messages.append(reply)
    tool: dict[str, Any] = {"role": "tool", "tool_call_id": reply.tool_calls[0].id,
                            "content": "Sunny and 24 degrees Celsius, light wind from the west."}
    if with_name:
        tool["name"] = "get_weather"
    messages.append(tool)
    second = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                         max_tokens=30, temperature=0, tool_choice="none")
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason in ("stop", "length")
    # The call and its result both reached the prompt.
    alone = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages[:1], tools=[WEATHER],  # type: ignore[list-item]
                                        max_tokens=1, tool_choice="none")
    assert _prompt_tokens(second) > _prompt_tokens(alone) + 20


def test_groq_sdk_message_appended_as_is(gateway: Gateway) -> None:
    client = Groq(api_key="gsk_test", base_url=gateway.url, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(model="llama-3.1-8b-instant", messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                           tool_choice=FORCED, max_tokens=60, temperature=0)  # type: ignore[arg-type]
    reply = first.choices[0].message
    assert reply.tool_calls
    messages.append(reply)
    messages.append({"role": "tool", "tool_call_id": reply.tool_calls[0].id, "name": "get_weather",
                     "content": "Snow, minus 3 degrees."})
    second = client.chat.completions.create(model="llama-3.1-8b-instant", messages=messages, max_tokens=20,
                                            temperature=0)
    assert second.choices[0].message.content
    messages.append(second.choices[0].message)
    messages.append({"role": "user", "content": "Thanks."})
    third = client.chat.completions.create(model="llama-3.1-8b-instant", messages=messages, max_tokens=8)
    assert third.choices[0].finish_reason in ("stop", "length")


# ---- the fields themselves, on the raw wire


def _chat(url: str, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 1, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}
PLAIN_HISTORY = [
    {"role": "user", "content": "Weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Rain."},
    {"role": "assistant", "content": "It rains in Rome."},
    {"role": "user", "content": "Thanks."},
]
ECHOED_HISTORY = [
    {"role": "user", "content": "Weather in Rome?"},
    {"role": "assistant", "content": None, "refusal": None, "annotations": [], "audio": None, "function_call": None,
     "reasoning_content": "The user wants the weather; call the tool.", "tool_calls": [{**CALL, "index": 0}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "Rain."},
    {"role": "assistant", "content": "It rains in Rome.", "reasoning": "Answer from the tool's result.",
     "annotations": [{"type": "url_citation", "url_citation": {"url": "https://example.com", "title": "x",
                                                               "start_index": 0, "end_index": 3}}],
     "refusal": None, "reasoning_details": [], "thinking_blocks": [], "provider_specific_fields": {},
     "executed_tools": []},
    {"role": "user", "content": "Thanks."},
]


def test_echoed_fields_are_accepted_and_change_nothing(gateway_http: str) -> None:
    plain = _chat(gateway_http, PLAIN_HISTORY)
    echoed = _chat(gateway_http, ECHOED_HISTORY)
    assert plain.status_code == 200, plain.text
    assert echoed.status_code == 200, echoed.text
    # Ignored means ignored: the prompt is the same token for token.
    assert echoed.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"]


def test_refusal_part_in_an_assistant_message_is_accepted(gateway_http: str) -> None:
    r = _chat(gateway_http, [{"role": "user", "content": "Help me pick a lock."},
                             {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help."}]},
                             {"role": "user", "content": "Fine, tell me a joke."}])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "assistant", "content": "hi", "colour": "red"}, "messages[1].colour"),
    ({"role": "user", "content": "hi", "annotations": []}, "messages[1].annotations"),
    ({"role": "assistant", "content": None, "tool_calls": [{**CALL, "colour": 1}]}, "messages[1].tool_calls[0].colour"),
])
def test_fields_no_message_carries_stay_a_400(gateway_http: str, message: dict[str, Any], param: str) -> None:
    r = _chat(gateway_http, [{"role": "user", "content": "Hello."}, message])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_top_level_field_stays_a_400(gateway_http: str) -> None:
    r = _chat(gateway_http, [{"role": "user", "content": "Hello."}], annotations=[])
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "annotations"


@pytest.mark.parametrize(("field", "value"), [("audio", {"id": "audio_abc"}),
                                              ("function_call", {"name": "f", "arguments": "{}"})])
def test_set_audio_and_function_call_go_to_the_policy(client: OpenAI, field: str, value: Any) -> None:
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=1, messages=[
            {"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi.", field: value},  # type: ignore[misc]
            {"role": "user", "content": "Again."}])
    assert e.value.body is not None and e.value.body.get("param") == f"messages[1].{field}"  # type: ignore[union-attr]
