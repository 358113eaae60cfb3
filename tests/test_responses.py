"""The Responses API (``/v1/responses``) through the official OpenAI SDK, over a real socket, on the real
SmolLM2: the response object, its stream of events, structured outputs, tool round trips (stateless and
by ``previous_response_id``), the store (retrieve, input items, delete, a restart, one key's responses
hidden from another), the refusals, and Groq's ``/openai/v1`` path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import openai
import pytest
from conftest import Gateway, base_config, smollm_models
from openai import OpenAI
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ToolChoiceFunction,
)
from pydantic import BaseModel, Field

MODEL = "gpt-4o-mini"
LLM_ONLY = smollm_models("{n_ctx: 2048}")

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER: FunctionToolParam = {"type": "function", "name": "get_weather", "description": "Current weather in a city.",
                           "parameters": WEATHER_PARAMETERS, "strict": True}
TIME: FunctionToolParam = {"type": "function", "name": "get_time", "description": "Current time in a time zone.",
                        "parameters": {"type": "object", "properties": {"zone": {"type": "string",
                                                                                 "enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False},
                        "strict": True}
ASK_WEATHER = "What is the weather in Paris?"
PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _usage_adds_up(r: Response, most: int | None = None) -> None:
    assert r.usage is not None
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if most is not None:
        assert r.usage.output_tokens <= most


def _message(r: Response) -> ResponseOutputMessage:
    assert r.output and isinstance(r.output[0], ResponseOutputMessage), r.output
    return r.output[0]


def _call(r: Response) -> ResponseFunctionToolCall:
    calls = [item for item in r.output if isinstance(item, ResponseFunctionToolCall)]
    assert calls, r.output
    return calls[0]


def _store(r: Response) -> bool:
    """The ``store`` the response echoes (the SDK's model has no field for it)."""
    return bool(r.model_dump()["store"])


def _part(item: Any) -> dict[str, Any]:
    """The first content part of a listed input item, as a dict."""
    return dict(item.model_dump()["content"][0])


def _weather_call(client: OpenAI, **extra: Any) -> Response:
    r: Response = client.responses.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER], tool_choice="required",
                                          temperature=0, max_output_tokens=60, **extra)
    call = _call(r)
    assert call.name == "get_weather" and call.call_id and call.id
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)
    return r


# -- the response object ------------------------------------------------------------------------------


def test_string_input_makes_a_response(client: OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Hi!", temperature=0, max_output_tokens=40)
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "completed" and r.error is None and r.incomplete_details is None
    assert r.model == MODEL and r.completed_at is not None and r.created_at <= r.completed_at
    message = _message(r)
    assert message.role == "assistant" and message.status == "completed" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    assert r.output_text.strip() and r.output_text == message.content[0].text
    _usage_adds_up(r, 40)


def test_item_input_and_instructions_reach_the_model(client: OpenAI) -> None:
    easy: list[Any] = [{"role": "user", "content": "Name a colour."}]
    typed: list[Any] = [{"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                         "text": "Name a colour."}]}]
    a = client.responses.create(model=MODEL, input=easy, temperature=0, max_output_tokens=24)
    b = client.responses.create(model=MODEL, input=typed, temperature=0, max_output_tokens=24)
    for r in (a, b):
        assert r.status in ("completed", "incomplete") and r.output_text.strip()
        _usage_adds_up(r, 24)
    assert a.usage is not None and b.usage is not None
    assert a.usage.input_tokens == b.usage.input_tokens  # the same message, said two ways

    instructions = ("You are a terse assistant for a paint shop. Always answer with one single word, the name of"
                    " a colour from the shop's catalogue, and never explain your choice to the customer. The shop"
                    " sells red, green, blue, yellow, orange, purple, black and white paint.")
    c = client.responses.create(model=MODEL, input=easy, instructions=instructions, temperature=0,
                                max_output_tokens=24)
    assert c.instructions == instructions and c.usage is not None
    assert c.usage.input_tokens > a.usage.input_tokens + 20  # the instructions were in the prompt
    # Instructions are not input items: the stored input is the one message.
    items = client.responses.input_items.list(c.id).data
    assert [item.type for item in items] == ["message"]


def test_max_output_tokens_makes_an_incomplete_response(client: OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Write a long story about a dragon and a knight.",
                                temperature=0, max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 16
    assert _message(r).status == "incomplete" and r.output_text


def test_the_response_echoes_the_request(client: OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Hello!", temperature=0, max_output_tokens=16)
    assert _store(first) is True and first.previous_response_id is None and first.metadata == {}
    assert first.tool_choice == "auto" and first.tools == []  # OpenAI echoes its default, tools or not
    r = client.responses.create(model=MODEL, previous_response_id=first.id, input="And goodbye.",
                                instructions="Be brief.", metadata={"case": "echo", "n": "2"}, temperature=0.0,
                                top_p=0.5, tools=[WEATHER], tool_choice="none", max_output_tokens=16, store=True,
                                user="someone")
    assert r.previous_response_id == first.id and r.instructions == "Be brief."
    assert r.metadata == {"case": "echo", "n": "2"} and r.temperature == 0.0 and r.top_p == 0.5
    assert r.tool_choice == "none" and _store(r) is True and r.max_output_tokens == 16 and r.user == "someone"
    assert [(t["type"], t["name"]) for t in r.model_dump()["tools"]] == [("function", "get_weather")]
    assert all(item.type == "message" for item in r.output)  # tool_choice none: no call
    named = client.responses.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER, TIME], temperature=0,
                                    tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=40,
                                    store=False)
    assert _store(named) is False
    assert isinstance(named.tool_choice, ToolChoiceFunction) and named.tool_choice.name == "get_time"
    assert _call(named).name == "get_time"


def test_the_fields_accepted_as_what_they_are_here(client: OpenAI) -> None:
    """Reasoning items and settings, caller ids, cache hints and the service tier are accepted; logprobs are
    honoured; ``parallel_tool_calls`` is echoed."""
    plain = client.responses.create(model=MODEL, input="Say hello.", temperature=0, max_output_tokens=16)
    r = client.responses.create(
        model=MODEL, temperature=0, max_output_tokens=16, reasoning={"effort": "low"}, safety_identifier="user-7",
        prompt_cache_key="greetings", service_tier="auto", parallel_tool_calls=False, user="u-7",
        include=["message.output_text.logprobs"], top_logprobs=2, truncation="auto",
        input=[{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},  # type: ignore[list-item]
               {"role": "user", "content": "Say hello."}])
    assert r.usage is not None and plain.usage is not None
    assert r.usage.input_tokens == plain.usage.input_tokens  # the reasoning item is not read
    assert r.output_text == plain.output_text
    assert r.reasoning is not None and r.reasoning.effort == "low"
    assert r.safety_identifier == "user-7" and r.prompt_cache_key == "greetings" and r.user == "u-7"
    assert r.service_tier == "default" and r.parallel_tool_calls is False and r.truncation == "auto"
    assert r.top_logprobs == 2
    part = _message(r).content[0]
    assert part.type == "output_text" and part.logprobs
    assert all(len(entry.top_logprobs) == 2 for entry in part.logprobs)
    assert "".join(entry.token for entry in part.logprobs) == part.text
    assert not _message(plain).content[0].logprobs  # type: ignore[union-attr]  # only when included


# -- streaming ------------------------------------------------------------------------------------------


TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def test_a_stream_says_every_step_in_order(client: OpenAI) -> None:
    events: list[Any] = list(client.responses.create(model=MODEL, input="Hi!", temperature=0,
                                                     max_output_tokens=60, stream=True))
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas
    assert kinds == [*TEXT_EVENTS, *["response.output_text.delta"] * len(deltas), *TEXT_END, "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, in_progress, done = events[0], events[1], events[-1]
    assert created.type == "response.created" and created.response.status == "in_progress"
    assert in_progress.type == "response.in_progress" and created.response.id == in_progress.response.id
    assert done.type == "response.completed" and done.response.id == created.response.id
    text_done = events[-4]
    assert text_done.type == "response.output_text.done"
    joined = "".join(d.delta for d in deltas)
    assert joined.strip() and joined == text_done.text == done.response.output_text
    item_ids = {getattr(e, "item_id", None) for e in events[3:-2]} | {events[2].item.id, events[-2].item.id}
    assert item_ids == {done.response.output[0].id}
    _usage_adds_up(done.response, 60)
    assert client.responses.retrieve(created.response.id).model_dump() == done.response.model_dump()  # as streamed


def test_a_cut_stream_ends_incomplete(client: OpenAI) -> None:
    events: list[Any] = list(client.responses.create(model=MODEL, input="Write a long story about a dragon.",
                                                     temperature=0, max_output_tokens=16, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert [e.type for e in events[-4:-1]] == TEXT_END


def test_the_stream_helper_gives_the_final_response(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Hi!", temperature=0, max_output_tokens=24) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas and final.status in ("completed", "incomplete")
    assert final.output_text == "".join(deltas) and final.output_text.strip()
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_a_streamed_function_call(client: OpenAI) -> None:
    events: list[Any] = list(client.responses.create(model=MODEL, input=ASK_WEATHER, tools=[WEATHER],
                                                     tool_choice="required", temperature=0, max_output_tokens=60,
                                                     stream=True))
    kinds = [e.type for e in events]
    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     *["response.function_call_arguments.delta"] * len(fragments),
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added, args_done, item_done, completed = events[2], events[-3], events[-2], events[-1]
    assert added.type == "response.output_item.added" and added.item.type == "function_call"
    assert args_done.type == "response.function_call_arguments.done"
    assert item_done.type == "response.output_item.done" and completed.type == "response.completed"
    call = _call(completed.response)
    assert item_done.item.type == "function_call"
    assert "".join(fragments) == args_done.arguments == call.arguments == item_done.item.arguments
    assert args_done.item_id == call.id == added.item.id and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)


# -- structured outputs -----------------------------------------------------------------------------------


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    capital: bool


def test_parse_gives_the_pydantic_object(client: OpenAI) -> None:
    r = client.responses.parse(model=MODEL, input="Describe the city of Paris.", text_format=City, temperature=0,
                               max_output_tokens=80)
    assert r.status == "completed"
    assert isinstance(r.output_parsed, City)
    assert City.model_validate_json(r.output_text) == r.output_parsed
    assert r.text is not None and r.text.format is not None and r.text.format.type == "json_schema"
    with client.responses.stream(model=MODEL, input="Describe the city of Rome.", text_format=City, temperature=0,
                                 max_output_tokens=80) as stream:
        streamed = stream.get_final_response()
    assert isinstance(streamed.output_parsed, City)
    assert City.model_validate_json(streamed.output_text) == streamed.output_parsed


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 16},
                   "role": {"type": "string", "enum": ["admin", "user", "guest"]},
                   "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}},
    "required": ["name", "role", "tags"],
    "additionalProperties": False,
}


def test_a_json_schema_format_holds_the_output(client: OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Make up a user of a web site.", temperature=0,
                                max_output_tokens=80,
                                text={"format": {"type": "json_schema", "name": "person", "schema": PERSON,
                                                 "strict": True}})
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.text is not None and r.text.format is not None
    echoed = r.text.format.model_dump(by_alias=True)
    assert echoed["type"] == "json_schema" and echoed["name"] == "person" and echoed["strict"] is True
    assert echoed["schema"] == PERSON


def test_a_json_object_format_gives_json(client: OpenAI) -> None:
    r = client.responses.create(model=MODEL, input='Reply with a JSON object whose key "answer" is "yes".',
                                temperature=0, max_output_tokens=60, text={"format": {"type": "json_object"}})
    assert r.status == "completed"
    assert isinstance(json.loads(r.output_text), dict)
    assert r.text is not None and r.text.format is not None and r.text.format.type == "json_object"


# -- tool round trips ----------------------------------------------------------------------------------------


SHORT_RESULT = "Sunny."
LONG_RESULT = ("Sunny, 25 degrees celsius, a light wind from the west, no rain expected before the evening, "
               "and a clear night with 14 degrees.")


def test_a_stateless_tool_round_trip(client: OpenAI) -> None:
    first = _weather_call(client, store=False)
    call = _call(first)
    conversation: list[Any] = [{"role": "user", "content": ASK_WEATHER}, *first.output]

    def answer(result: str) -> Response:
        return client.responses.create(
            model=MODEL, tools=[WEATHER], temperature=0, max_output_tokens=16, store=False,
            input=[*conversation, {"type": "function_call_output", "call_id": call.call_id, "output": result}])

    short, long = answer(SHORT_RESULT), answer(LONG_RESULT)
    for r in (short, long):
        assert r.status in ("completed", "incomplete") and r.output
        _usage_adds_up(r, 16)
    assert first.usage is not None and short.usage is not None and long.usage is not None
    assert short.usage.input_tokens > first.usage.input_tokens  # the call and its result are in the prompt
    assert long.usage.input_tokens >= short.usage.input_tokens + 20  # ... the result as it was sent


def test_a_stateful_tool_round_trip_reuses_the_prompt_cache(client: OpenAI) -> None:
    first = _weather_call(client)
    call = _call(first)
    result: Any = {"type": "function_call_output", "call_id": call.call_id, "output": LONG_RESULT}
    r = client.responses.create(model=MODEL, previous_response_id=first.id, input=[result], tools=[WEATHER],
                                temperature=0, max_output_tokens=16)
    assert r.previous_response_id == first.id and r.output
    assert first.usage is not None and r.usage is not None
    assert r.usage.input_tokens > first.usage.input_tokens + 20
    assert r.usage.input_tokens_details.cached_tokens > 0  # the first response's prompt, still in the cache
    # The same conversation sent whole is the same prompt.
    whole: list[Any] = [{"role": "user", "content": ASK_WEATHER}, *first.output, result]
    stateless = client.responses.create(model=MODEL, input=whole, tools=[WEATHER], temperature=0,
                                        max_output_tokens=16, store=False)
    assert stateless.usage is not None and stateless.usage.input_tokens == r.usage.input_tokens
    # Its input items are only what it was sent: the output of the function.
    items = client.responses.input_items.list(r.id).data
    assert [item.type for item in items] == ["function_call_output"]
    assert items[0].model_dump()["call_id"] == call.call_id


def test_a_function_output_for_no_call_is_refused(client: OpenAI) -> None:
    orphan: list[Any] = [{"role": "user", "content": ASK_WEATHER},
                         {"type": "function_call_output", "call_id": "call_nothing", "output": "Sunny."}]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, max_output_tokens=16, input=orphan)
    assert e.value.param == "input[1]" and "call_nothing" in e.value.message
    # ... also when the calls come from the previous response.
    first = _weather_call(client)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, previous_response_id=first.id, max_output_tokens=16, input=[
            {"type": "function_call_output", "call_id": _call(first).call_id + "x", "output": "Sunny."}])
    assert e.value.param == "input[0]"


# -- the store ------------------------------------------------------------------------------------------------


def test_retrieve_input_items_and_delete(client: OpenAI) -> None:
    sent: list[Any] = [{"role": "developer", "content": "Answer briefly."},
                       {"role": "user", "content": "Hi, who are you?"},
                       {"role": "assistant", "content": "I am a small model."},
                       {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                        "text": "What can you do?"}]}]
    r = client.responses.create(model=MODEL, input=sent, temperature=0, max_output_tokens=24,
                                metadata={"test": "store"})
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()

    page = client.responses.input_items.list(r.id)
    assert page.has_more is False and len(page.data) == 4
    newest_first = page.data
    assert [(i.type, i.model_dump()["role"]) for i in newest_first] == [
        ("message", "user"), ("message", "assistant"), ("message", "user"), ("message", "developer")]
    assert _part(newest_first[0])["text"] == "What can you do?"
    assert _part(newest_first[1])["type"] == "output_text"
    assert all(i.id for i in newest_first) and len({i.id for i in newest_first}) == 4
    assert page.model_extra is not None
    assert page.model_extra["first_id"] == newest_first[0].id and page.model_extra["last_id"] == newest_first[-1].id
    oldest_first = client.responses.input_items.list(r.id, order="asc").data
    assert [i.id for i in oldest_first] == [i.id for i in reversed(newest_first)]

    one = client.responses.input_items.list(r.id, order="asc", limit=1)
    assert [i.id for i in one.data] == [oldest_first[0].id] and one.has_more is True
    assert one.model_extra is not None and one.model_extra["first_id"] == one.model_extra["last_id"] == one.data[0].id
    two = client.responses.input_items.list(r.id, order="asc", limit=1, after=one.data[0].id)
    assert [i.id for i in two.data] == [oldest_first[1].id] and two.has_more is True
    last = client.responses.input_items.list(r.id, order="asc", limit=1, after=oldest_first[2].id)
    assert [i.id for i in last.data] == [oldest_first[3].id] and last.has_more is False
    # The SDK's auto-pagination walks every page by ``after``.
    assert [i.id for i in client.responses.input_items.list(r.id, order="asc", limit=1)] == [
        i.id for i in oldest_first]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.input_items.list(r.id, after="msg_nothing")
    assert e.value.param == "after"

    client.responses.delete(r.id)
    for attempt in (lambda: client.responses.retrieve(r.id), lambda: client.responses.input_items.list(r.id),
                    lambda: client.responses.delete(r.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, previous_response_id=r.id, input="More.", max_output_tokens=16)
    assert e.value.code == "previous_response_not_found"


def test_the_delete_answer(client: OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Hi.", max_output_tokens=16)
    raw = client.responses.with_raw_response.delete(r.id)
    assert raw.status_code == 200
    assert raw.http_response.json() == {"id": r.id, "object": "response.deleted", "deleted": True}


def test_an_unknown_previous_response_is_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, previous_response_id="resp_nothing", input="Hi.", max_output_tokens=16)
    assert e.value.code == "previous_response_not_found" and e.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing")


def test_an_unstored_response_is_not_kept(client: OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Hi.", temperature=0, max_output_tokens=16, store=False)
    assert _store(r) is False and r.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, previous_response_id=r.id, input="More.", max_output_tokens=16)
    assert e.value.code == "previous_response_not_found"
    streamed: list[Any] = list(client.responses.create(model=MODEL, input="Hi.", max_output_tokens=16, store=False,
                                            stream=True))
    assert streamed[-1].type in ("response.completed", "response.incomplete")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(streamed[-1].response.id)


def test_a_chain_remembers_the_conversation(client: OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="My name is Zorblax. Remember it.", temperature=0,
                                    max_output_tokens=24)
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="Thanks.", temperature=0,
                                     max_output_tokens=24)
    third = client.responses.create(model=MODEL, previous_response_id=second.id, input="Bye.", temperature=0,
                                    max_output_tokens=24)
    assert first.usage is not None and second.usage is not None and third.usage is not None
    # Each continuation's prompt holds the whole conversation so far (less the default system prompt
    # counted once).
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    assert third.usage.input_tokens_details.cached_tokens > 0
    # Each one's input items are its own input alone.
    assert [_part(i)["text"] for i in client.responses.input_items.list(third.id).data] == ["Bye."]


# -- a restart, and keys -------------------------------------------------------------------------------------


def _keyed(gw: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_the_store_survives_a_restart(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, base_config(models=LLM_ONLY)).start()
    try:
        client = gw.openai()
        r = _weather_call(client, metadata={"kept": "yes"})
        gw.stop()
        assert not gw.alive()
        assert (tmp_path / "responses.db").exists()
        gw.start()
        client = gw.openai()
        assert client.responses.retrieve(r.id).model_dump() == r.model_dump()
        assert [i.type for i in client.responses.input_items.list(r.id).data] == ["message"]
        call = _call(r)
        after = client.responses.create(
            model=MODEL, previous_response_id=r.id, tools=[WEATHER], temperature=0, max_output_tokens=16,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": LONG_RESULT}])
        assert after.previous_response_id == r.id and after.output
        assert after.usage is not None and r.usage is not None
        assert after.usage.input_tokens > r.usage.input_tokens + 20
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = base_config(extra_server="  api_keys: [key-a, key-b]\n", models=LLM_ONLY)
    gw = Gateway(tmp_path_factory.mktemp("responses-keys"), config).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_a_response_is_its_keys_alone(keyed: Gateway) -> None:
    a, b = _keyed(keyed, "key-a"), _keyed(keyed, "key-b")
    r = a.responses.create(model=MODEL, input="Hello!", temperature=0, max_output_tokens=16)
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError) as e:
        b.responses.create(model=MODEL, previous_response_id=r.id, input="Hi.", max_output_tokens=16)
    assert e.value.code == "previous_response_not_found"
    with pytest.raises(openai.AuthenticationError):
        _keyed(keyed, "key-c").responses.retrieve(r.id)
    # key-a still has it, whole.
    assert a.responses.retrieve(r.id).model_dump() == r.model_dump()
    assert len(a.responses.input_items.list(r.id).data) == 1
    chained = a.responses.create(model=MODEL, previous_response_id=r.id, input="Hi.", max_output_tokens=16)
    assert chained.previous_response_id == r.id
    a.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(r.id)


def test_an_item_reference_stands_for_the_stored_item(client: OpenAI) -> None:
    """The Vercel AI SDK sends an earlier answer back as ``{"type": "item_reference", "id": "msg_…"}``."""
    first = client.responses.create(model=MODEL, input="Say hello.", temperature=0, max_output_tokens=16)
    answer = _message(first)
    written = [{"role": "user", "content": "Say hello."},
               {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "Again."}]
    referenced = [written[0], {"type": "item_reference", "id": answer.id}, written[2]]
    by_text = client.responses.create(model=MODEL, input=written, temperature=0, max_output_tokens=16)  # type: ignore[arg-type]
    by_reference = client.responses.create(model=MODEL, input=referenced, temperature=0,  # type: ignore[arg-type]
                                           max_output_tokens=16)
    assert by_text.usage is not None and by_reference.usage is not None
    assert by_reference.usage.input_tokens == by_text.usage.input_tokens  # the same prompt: the answer's text
    listed = [item.model_dump() for item in client.responses.input_items.list(by_reference.id, order="asc")]
    assert listed[1]["id"] == answer.id and listed[1]["content"][0]["text"] == first.output_text
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_unknown"}],
                                max_output_tokens=16)
    assert e.value.code == "item_not_found" and e.value.param == "input[0]"


def test_an_item_reference_finds_only_the_keys_own_items(keyed: Gateway) -> None:
    a, b = _keyed(keyed, "key-a"), _keyed(keyed, "key-b")
    r = a.responses.create(model=MODEL, input="Hello!", temperature=0, max_output_tokens=16)
    reference: Any = [{"type": "item_reference", "id": _message(r).id}, {"role": "user", "content": "Go on."}]
    again = a.responses.create(model=MODEL, input=reference, max_output_tokens=16)
    assert again.status in ("completed", "incomplete")
    with pytest.raises(openai.BadRequestError) as e:
        b.responses.create(model=MODEL, input=reference, max_output_tokens=16)
    assert e.value.code == "item_not_found"
    for response_id in (r.id, again.id):  # the item is in both (the second's input): they take it with them
        a.responses.delete(response_id)
    with pytest.raises(openai.BadRequestError):
        a.responses.create(model=MODEL, input=reference, max_output_tokens=16)


def test_input_tokens_counts_what_a_response_would_read(client: OpenAI) -> None:
    """``POST /v1/responses/input_tokens`` (pydantic-ai's token counting): the prompt, nothing generated."""
    ask = {"model": MODEL, "instructions": "Answer briefly.", "input": "Name three rivers.", "tools": [WEATHER]}
    counted = client.responses.input_tokens.count(**ask)  # type: ignore[arg-type]
    made = client.responses.create(**ask, max_output_tokens=16, temperature=0)  # type: ignore[arg-type]
    assert made.usage is not None and counted.input_tokens == made.usage.input_tokens
    assert counted.object == "response.input_tokens"
    longer = client.responses.input_tokens.count(**{**ask, "input": "And lakes?"},  # type: ignore[arg-type]
                                                 previous_response_id=made.id)
    assert longer.input_tokens > counted.input_tokens  # the conversation continued is counted too
    with pytest.raises(openai.NotFoundError) as e:
        client.post("/responses/compact", body={"model": MODEL, "input": "Hi"}, cast_to=object)
    assert "compact" in e.value.message


def test_an_image_in_a_function_output_is_refused_not_dropped(client: OpenAI) -> None:
    r = _weather_call(client)
    image = {"type": "input_image", "image_url": "data:image/png;base64," + PNG_1X1}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, previous_response_id=r.id, max_output_tokens=16, input=[  # type: ignore[arg-type]
            {"type": "function_call_output", "call_id": _call(r).call_id, "output": [image]}])
    assert e.value.param is not None and e.value.param.startswith("input[0]")


# -- refusals ------------------------------------------------------------------------------------------------


BUILT_IN: list[Any] = [
    {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "code_interpreter",
                                                                                   "container": {"type": "auto"}},
    {"type": "mcp", "server_label": "x", "server_url": "https://example.com/mcp"}, {"type": "image_generation"},
]


def _refusals(client: OpenAI) -> None:
    for tool in BUILT_IN:
        tries: list[list[Any]] = [[tool], [WEATHER, tool], [WEATHER, TIME, tool]]
        for tools in tries:
            with pytest.raises(openai.BadRequestError) as e:
                client.responses.create(model=MODEL, input="Hi.", tools=tools, max_output_tokens=16)
            assert e.value.param == f"tools[{len(tools) - 1}]", (tool, e.value.body)
            assert tool["type"] in e.value.message


def test_built_in_tools_are_refused(client: OpenAI) -> None:
    _refusals(client)


def test_other_refusals(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi.", max_output_tokens=16, extra_body={"frobnicate": 1})
    assert e.value.code == "unknown_parameter" and e.value.param == "frobnicate"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi.", background=True, store=False)
    assert e.value.param == "background"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi.", max_output_tokens=5)
    assert e.value.param == "max_output_tokens"
    with pytest.raises(openai.NotFoundError) as nf:
        client.responses.create(model="no-such-model", input="Hi.", max_output_tokens=16)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi.", tool_choice="required", max_output_tokens=16)
    assert e.value.param == "tool_choice"
    bad_part: list[Any] = [{"type": "message", "role": "user", "content": [{"type": "input_txt", "text": "Hi."}]}]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input=bad_part, max_output_tokens=16)
    assert e.value.param is not None and e.value.param.startswith("input[0]")
    # The server still answers.
    r = client.responses.create(model=MODEL, input="Hi!", temperature=0, max_output_tokens=16)
    assert r.output_text.strip()


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = base_config(extra_server="  unsupported_params: drop\n", models=LLM_ONLY)
    gw = Gateway(tmp_path_factory.mktemp("responses-drop"), config).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_built_in_tools_are_refused_when_dropping(dropping: Gateway) -> None:
    client = dropping.openai()
    _refusals(client)
    raw = client.responses.with_raw_response.create(model=MODEL, input="Hi!", temperature=0,
                                                    max_output_tokens=16, extra_body={"frobnicate": 1})
    assert raw.parse().output_text.strip()
    assert "frobnicate" in raw.headers["x-syn4pse-dropped-params"]


# -- Groq's path ---------------------------------------------------------------------------------------------


def test_groq_path(gateway: Gateway) -> None:
    groq = gateway.openai(prefix="/openai/v1")
    r = groq.responses.create(model="llama-3.1-8b-instant", input="Hi!", temperature=0, max_output_tokens=16)
    assert r.id.startswith("resp_") and r.model == "llama-3.1-8b-instant" and r.output_text.strip()
    assert groq.responses.retrieve(r.id).output_text == r.output_text
    events: list[Any] = list(groq.responses.create(model="llama-3.1-8b-instant", input="Hi!", temperature=0,
                                                   max_output_tokens=16, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    chained = groq.responses.create(model="llama-3.1-8b-instant", previous_response_id=r.id, input="Again.",
                                    max_output_tokens=16)
    assert chained.previous_response_id == r.id
