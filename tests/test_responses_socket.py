"""The Responses API's WebSocket mode (``ws://.../v1/responses``), with the official ``openai`` SDK's
``client.responses.connect()`` and with the ``websockets`` library on real sockets.

Each ``response.create`` message is answered with the events a stream sends, in order; ``store: false``
responses chain on the socket that made them (and nowhere else); ``response.cancel`` stops the running
response; a bad message is an ``error`` event and the socket stays open; the handshake needs a key when
the server has keys, and one key's responses are not another's; a client that leaves mid-response gives
the model back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, cast

import openai
import pytest
import websockets
from conftest import Gateway, base_config, smollm_models
from hostile import wait_idle
from openai import AsyncOpenAI, OpenAI
from websockets.sync.client import ClientConnection, connect

MODEL = "gpt-4o-mini"
KEY, OTHER_KEY = "test-key", "other-key"
SHORT: dict[str, Any] = {"type": "response.create", "model": MODEL, "input": "Say hello.", "temperature": 0,
                         "max_output_tokens": 16}
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
ENDED = ("completed", "incomplete")
LONG: dict[str, Any] = {**SHORT, "max_output_tokens": 400,
                        "input": "Write a very long story about a dragon and a knight, with many chapters."}
"""At temperature 0 SmolLM2 tells this story past 400 tokens: seconds of generation, on any machine."""
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """SmolLM2 behind two API keys (``Gateway.openai()`` sends the first)."""
    models = smollm_models("{n_ctx: 1024, n_threads: 1, parallel: 2}")  # one thread: see test_responses_background
    config = base_config(f"  api_keys: [{KEY}, {OTHER_KEY}]\n", models)
    running = Gateway(tmp_path_factory.mktemp("responses-socket"), config).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sdk(gw: Gateway) -> OpenAI:
    return gw.openai()


def _url(gw: Gateway) -> str:
    return gw.url.replace("http://", "ws://") + "/v1/responses"


def _socket(gw: Gateway, key: str | None = KEY) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(_url(gw), additional_headers=headers, open_timeout=30, max_size=None)


def _until_end(ws: ClientConnection, timeout: float = 180.0) -> list[dict[str, Any]]:
    """The events of one answer: through its terminal event (or an ``error`` event)."""
    events: list[dict[str, Any]] = []
    while True:
        raw = ws.recv(timeout=timeout)
        assert isinstance(raw, str), "the server sends text frames"
        events.append(json.loads(raw))
        if events[-1]["type"] in TERMINAL:
            return events


def _answer(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    """Send a ``response.create``; the finished response (its terminal event's)."""
    ws.send(json.dumps({**SHORT, **fields}))
    events = _until_end(ws)
    assert events[-1]["type"] in ("response.completed", "response.incomplete"), events[-1]
    response: dict[str, Any] = events[-1]["response"]
    return response


def _error(ws: ClientConnection, message: str | bytes) -> dict[str, Any]:
    """Send ``message``; the ``error`` event it must be answered with, alone."""
    ws.send(message)
    events = _until_end(ws)
    assert [e["type"] for e in events] == ["error"], events
    error = events[0]
    assert error["status"] == 400 or error["status"] == 404, error
    assert set(error["error"]) == {"type", "code", "message", "param"}
    assert error["error"]["message"]
    return error


def _text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def _idle(gw: Gateway) -> int:
    return wait_idle(gw.url, timeout=30, key=KEY)["smollm2"]


# -- the official SDK ----------------------------------------------------------------------------------------


def test_the_sdks_websocket_client_streams_responses_and_chains_them(sdk: OpenAI) -> None:
    with sdk.responses.connect() as connection:
        connection.response.create(model=MODEL, input="Say hello.", temperature=0, max_output_tokens=16,
                                   store=False)
        events: list[Any] = []
        for event in connection:
            events.append(event)
            if event.type in TERMINAL:
                break
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"], kinds
        assert kinds[-1] in ("response.completed", "response.incomplete"), events[-1]
        assert [getattr(e, "sequence_number", None) for e in events] == list(range(len(events)))
        first = events[-1].response
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas.strip() and deltas == first.output_text
        assert first.store is False and first.usage is not None

        connection.response.create(model=MODEL, input="Say it again.", temperature=0, max_output_tokens=16,
                                   store=False, previous_response_id=first.id)
        second: Any = None
        for event in connection:
            if event.type in TERMINAL:
                assert event.type in ("response.completed", "response.incomplete"), event
                second = getattr(event, "response", None)
                break
        assert second is not None and second.previous_response_id == first.id and second.usage is not None
        assert second.usage.input_tokens > first.usage.total_tokens  # the first turn is in its prompt

        connection.send(cast(Any, {"type": "session.update"}))  # not a message this socket takes: an error
        error = connection.recv()
        assert error.type == "error"
        connection.response.create(model=MODEL, input="Bye.", temperature=0, max_output_tokens=16, store=False)
        kinds = []
        for event in connection:
            kinds.append(event.type)
            if event.type in TERMINAL:
                break
        assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    with pytest.raises(openai.NotFoundError):  # store: false — the chain lived on that socket alone
        sdk.responses.retrieve(first.id)


def test_the_async_sdk_client_makes_a_tool_call_over_the_socket(gw: Gateway) -> None:
    async def scenario() -> tuple[list[str], Any]:
        client = AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
        async with client.responses.connect() as connection:
            await connection.response.create(model=MODEL, input="What is the weather in Paris?", temperature=0,
                                             max_output_tokens=60, tools=[WEATHER], tool_choice="required")
            kinds: list[str] = []
            async for event in connection:
                kinds.append(event.type)
                if event.type in TERMINAL:
                    return kinds, getattr(event, "response", event)
        raise AssertionError("the socket closed before the response ended")

    kinds, response = asyncio.run(scenario())
    assert kinds[-1] == "response.completed", response
    assert "response.function_call_arguments.done" in kinds
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments).get("city"), str)


def test_the_sdks_websocket_client_without_a_valid_key_is_refused(gw: Gateway) -> None:
    stranger = OpenAI(base_url=f"{gw.url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused, stranger.responses.connect():
        pass
    assert refused.value.response.status_code == 401


# -- events -------------------------------------------------------------------------------------------------


def test_a_response_create_is_answered_with_its_events_in_order(gw: Gateway) -> None:
    with _socket(gw) as ws:
        ws.send(json.dumps(SHORT))
        events = _until_end(ws)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"], kinds
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          events[-1]["type"]]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers) and numbers[0] == 0
    assert {e["response"]["id"] for e in events if "response" in e} == {events[0]["response"]["id"]}
    response = events[-1]["response"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas.strip() and deltas == _text(response)
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == deltas
    assert 0 < response["usage"]["output_tokens"] <= 16
    assert response["status"] in ENDED and response["model"] == MODEL


def test_messages_sent_together_are_answered_one_after_the_other(gw: Gateway) -> None:
    with _socket(gw) as ws:
        ws.send(json.dumps({**SHORT, "input": "Say one."}))
        ws.send(json.dumps({**SHORT, "input": "Say two."}))
        first, second = _until_end(ws), _until_end(ws)
    one, two = first[0]["response"]["id"], second[0]["response"]["id"]
    assert one != two
    assert all(e["response"]["id"] == one for e in first if "response" in e)
    assert second[0]["type"] == "response.created" and second[0]["sequence_number"] == 0


# -- chains ---------------------------------------------------------------------------------------------------


def test_store_false_responses_chain_on_their_socket_and_nowhere_else(gw: Gateway, sdk: OpenAI) -> None:
    with _socket(gw) as ws:
        first = _answer(ws, store=False, input="My name is Ada. Remember it.")
        second = _answer(ws, store=False, previous_response_id=first["id"], input="What is my name?")
        third = _answer(ws, store=False, previous_response_id=second["id"], input="Say it once more.")
    assert second["previous_response_id"] == first["id"] and second["store"] is False
    assert second["usage"]["input_tokens"] > first["usage"]["total_tokens"]
    assert second["usage"]["input_tokens_details"]["cached_tokens"] > 0  # the socket's turn reused its prefix
    assert third["usage"]["input_tokens"] > second["usage"]["total_tokens"]
    for response in (first, second, third):
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(response["id"])
    with _socket(gw) as other:  # another socket (same key) knows nothing of that chain
        error = _error(other, json.dumps({**SHORT, "store": False, "previous_response_id": second["id"]}))
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"


def test_stored_responses_made_on_a_socket_are_retrievable_and_continue_anywhere(gw: Gateway, sdk: OpenAI) -> None:
    with _socket(gw) as ws:
        first = _answer(ws, input="My name is Ada.")
        second = _answer(ws, previous_response_id=first["id"], input="What is my name?")
    assert first["store"] is True
    fetched = sdk.responses.retrieve(second["id"])
    assert fetched.status == second["status"] and fetched.output_text == _text(second)
    assert fetched.previous_response_id == first["id"]
    assert fetched.usage is not None and fetched.usage.input_tokens == second["usage"]["input_tokens"]
    items = sdk.responses.input_items.list(second["id"]).data
    assert [i.type for i in items] == ["message"]
    over_http = sdk.responses.create(model=MODEL, previous_response_id=second["id"], input="Thanks.",
                                     temperature=0, max_output_tokens=16)
    assert over_http.usage is not None and over_http.usage.input_tokens > second["usage"]["total_tokens"]
    with _socket(gw) as other:  # and from another socket: it is in the store
        third = _answer(other, previous_response_id=second["id"], input="Thanks.")
    assert third["usage"]["input_tokens"] > second["usage"]["total_tokens"]


def test_a_tool_call_round_trip_on_one_socket(gw: Gateway) -> None:
    with _socket(gw) as ws:
        ws.send(json.dumps({**SHORT, "max_output_tokens": 60, "store": False, "input": "What is the weather in Paris?",
                            "tools": [WEATHER], "tool_choice": "required"}))
        events = _until_end(ws)
        called = events[-1]["response"]
        assert events[-1]["type"] == "response.completed", events[-1]
        calls = [item for item in called["output"] if item["type"] == "function_call"]
        assert len(calls) >= 1 and calls[0]["name"] == "get_weather", called["output"]
        arguments = json.loads(calls[0]["arguments"])
        assert isinstance(arguments.get("city"), str)
        kinds = [e["type"] for e in events]
        assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
        streamed = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        assert streamed == calls[0]["arguments"]

        outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": '{"celsius": 21}'}
                   for c in calls]
        answered = _answer(ws, store=False, previous_response_id=called["id"], input=outputs, max_output_tokens=30)
        assert answered["previous_response_id"] == called["id"]
        assert _text(answered).strip(), answered["output"]
        alone = _answer(ws, store=False, input="What is the weather in Paris?")  # no call, no tools
        assert answered["usage"]["input_tokens"] > alone["usage"]["input_tokens"] + 10  # the call and its output

        error = _error(ws, json.dumps({**SHORT, "store": False, "input": [
            {"type": "function_call_output", "call_id": "call_nowhere", "output": "{}"}]}))
        assert "call_nowhere" in error["error"]["message"]


def test_a_response_cancel_stops_the_running_response_and_the_socket_goes_on(gw: Gateway) -> None:
    with _socket(gw) as ws:
        ws.send(json.dumps({**LONG, "store": False}))
        events: list[dict[str, Any]] = []
        while sum(e["type"] == "response.output_text.delta" for e in events) < 3:
            events.append(json.loads(ws.recv(timeout=120)))
        ws.send(json.dumps({"type": "response.cancel"}))
        events += _until_end(ws)
        last = events[-1]
        assert last["type"] == "response.incomplete" and last["response"]["status"] == "cancelled", last
        cancelled = last["response"]
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert deltas and _text(cancelled) == deltas  # what was said so far is kept, closed as incomplete
        assert [item["status"] for item in cancelled["output"]] == ["incomplete"]
        assert len(deltas) < 2000  # stopped long before its 400 tokens
        assert _idle(gw) == 0  # the model is given back at once, the socket still open

        ws.send(json.dumps({"type": "response.cancel", "response_id": cancelled["id"]}))  # ended: no error
        ws.send(json.dumps({"type": "response.cancel"}))  # nothing running: nothing to say
        unknown = _error(ws, json.dumps({"type": "response.cancel", "response_id": "resp_" + "1" * 48}))
        assert unknown["error"]["param"] == "response_id"
        continued = _answer(ws, store=False, previous_response_id=cancelled["id"], input="Finish it in a line.")
        alone = _answer(ws, store=False, input="Finish it in a line.")
        assert continued["usage"]["input_tokens"] > alone["usage"]["input_tokens"] + 10  # the cancelled turn too


# -- errors ------------------------------------------------------------------------------------------------------


def test_bad_messages_are_error_events_and_the_socket_stays_open(gw: Gateway) -> None:
    with _socket(gw) as ws:
        assert _error(ws, "{not json")["status"] == 400
        assert _error(ws, "[1, 2]")["status"] == 400
        wrong = _error(ws, json.dumps({"type": "session.update"}))
        assert wrong["error"]["param"] == "type" and wrong["error"]["code"] == "invalid_value"
        assert wrong["error"]["type"] == "invalid_request_error"
        unknown = _error(ws, json.dumps({**SHORT, "previous_response_id": "resp_" + "0" * 48}))
        assert unknown["error"]["code"] == "previous_response_not_found"
        background = _error(ws, json.dumps({**SHORT, "background": True}))
        assert background["error"]["param"] == "background"
        assert _error(ws, json.dumps({**SHORT, "stream": False}))["error"]["param"] == "stream"
        built_in = _error(ws, json.dumps({**SHORT, "tools": [{"type": "web_search"}]}))
        assert built_in["error"]["code"] == "unsupported_tool"
        assert _error(ws, json.dumps({**SHORT, "model": "no-such-model"}))["status"] == 404
        assert _error(ws, json.dumps({**SHORT, "max_output_tokens": 100_000}))["error"]["code"] \
            == "context_length_exceeded"
        unknown_field = _error(ws, json.dumps({**SHORT, "frobnicate": 1}))
        assert unknown_field["error"]["param"] == "frobnicate"
        assert _error(ws, json.dumps({**SHORT, "input": None}))["status"] == 400
        response = _answer(ws)  # after all that, the same socket still answers
        assert response["status"] in ENDED and _text(response).strip()
        ws.send(json.dumps(SHORT).encode())  # a binary frame carrying the message works too
        assert _until_end(ws)[-1]["type"] in ("response.completed", "response.incomplete")


# -- keys and leases -----------------------------------------------------------------------------------------


def test_the_handshake_needs_a_key(gw: Gateway) -> None:
    for key in (None, "not-a-key"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            _socket(gw, key).close()
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"{}")["error"]["type"] == "invalid_request_error"
    # the subprotocol browsers send the key in
    with connect(_url(gw), subprotocols=[f"openai-insecure-api-key.{KEY}"],  # type: ignore[list-item]
                 open_timeout=30) as ws:
        assert _answer(ws)["status"] in ENDED


def test_another_keys_responses_are_not_found_on_a_socket(gw: Gateway, sdk: OpenAI) -> None:
    with _socket(gw) as mine:
        stored = _answer(mine, input="My secret is 42.")
    with _socket(gw, OTHER_KEY) as theirs:
        error = _error(theirs, json.dumps({**SHORT, "previous_response_id": stored["id"]}))
        assert error["error"]["code"] == "previous_response_not_found"
        assert _answer(theirs)["status"] in ENDED
    other = OpenAI(base_url=f"{gw.url}/v1", api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(stored["id"])
    assert sdk.responses.retrieve(stored["id"]).id == stored["id"]


def test_another_key_cannot_follow_cancel_or_delete_a_background_response(gw: Gateway, sdk: OpenAI) -> None:
    running = sdk.responses.create(model=MODEL, input=LONG["input"], temperature=0, max_output_tokens=400,
                                   background=True)
    other = OpenAI(base_url=f"{gw.url}/v1", api_key=OTHER_KEY, max_retries=0)
    try:
        for call in (other.responses.retrieve, other.responses.cancel, other.responses.delete,
                     lambda response_id: list(other.responses.retrieve(response_id, stream=True))):
            with pytest.raises(openai.NotFoundError):
                call(running.id)
        assert sdk.responses.retrieve(running.id).status in ("queued", "in_progress")  # untouched
    finally:
        assert sdk.responses.cancel(running.id).status == "cancelled"
    assert _idle(gw) == 0


def test_a_socket_closed_mid_response_gives_the_model_back(gw: Gateway) -> None:
    for _ in range(3):  # more times than the model has slots
        with _socket(gw) as ws:
            ws.send(json.dumps(LONG))
            deltas = 0
            while deltas < 3:
                deltas += json.loads(ws.recv(timeout=120))["type"] == "response.output_text.delta"
        assert _idle(gw) == 0
    with _socket(gw) as ws:  # and while it stays open, a socket holds no slot between its responses
        _answer(ws)
        deadline = time.monotonic() + 30
        while _idle(gw) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _idle(gw) == 0
        assert _answer(ws)["status"] in ENDED
