"""The replica pool of upstream models: balancing, the circuit breaker, health checks, prefix affinity;
and the OpenAI dialect reading what real servers send (llama-server's and vLLM's shapes)."""

from __future__ import annotations

import time

import msgspec
import pytest

from backends.types import ChatMessage, ChatRequest, OutputFormat, SamplingParams, ToolSpec
from backends.upstream.pool import EndpointState, Pool
from compat.openai.upstream import OpenAIUpstream

A, B, C = "http://a/v1/", "http://b/v1/", "http://c/v1/"


def test_least_outstanding_and_ties_in_turn() -> None:
    pool = Pool([A, B, C])
    first = [pool.pick(set()) for _ in range(3)]
    assert {e.url for e in first if e} == {A, B, C}, "idle replicas take turns"
    busy = pool.endpoints[0]
    pool.begin(busy)
    pool.begin(pool.endpoints[1])
    picked = pool.pick(set())
    assert picked is not None and picked.url == C
    pool.begin(picked)
    pool.begin(busy)
    assert all(pool.pick(set()).url != A for _ in range(6))  # type: ignore[union-attr]


def test_a_request_never_goes_twice_to_the_same_replica() -> None:
    pool = Pool([A, B])
    tried: set[str] = set()
    for _ in range(2):
        endpoint = pool.pick(tried)
        assert endpoint is not None and endpoint.url not in tried
        tried.add(endpoint.url)
    assert pool.pick(tried) is None


def test_failures_open_the_circuit_and_a_trial_closes_it() -> None:
    pool = Pool([A, B], failure_threshold=2, cooldown=0.2)
    a = pool.endpoints[0]
    pool.failed(a, "connection refused")
    assert a.state(time.monotonic()) is EndpointState.UP  # one failure is not enough
    pool.failed(a, "connection refused")
    assert a.state(time.monotonic()) is EndpointState.OPEN
    assert all(pool.pick(set()).url == B for _ in range(4))  # type: ignore[union-attr]
    assert pool.pick({B}) is None, "an open circuit takes nothing, even when no other replica is left"
    time.sleep(0.25)
    assert a.state(time.monotonic()) is EndpointState.TRIAL
    trial = pool.pick({B})
    assert trial is a
    pool.begin(a)
    assert a.state(time.monotonic()) is EndpointState.OPEN, "one trial at a time"
    pool.failed(a, "still down")
    assert a.state(time.monotonic()) is EndpointState.OPEN, "a failed trial opens it again"
    time.sleep(0.25)
    pool.begin(a)
    pool.succeeded(a)
    pool.end(a)
    assert a.state(time.monotonic()) is EndpointState.UP
    assert a.failures == 3 and a.last_error == "still down"


def test_health_checks_steer_requests_and_close_circuits_after_the_cooldown() -> None:
    pool = Pool([A, B], failure_threshold=1, cooldown=0.2)
    a, b = pool.endpoints
    pool.checked(a, False, "health check answered 503")
    assert a.state(time.monotonic()) is EndpointState.DOWN
    assert all(pool.pick(set()) is b for _ in range(4)), "a replica failing its checks is used last"
    assert pool.pick({B}) is a, "… but still used when nothing else is left"
    pool.checked(a, True)
    assert a.state(time.monotonic()) is EndpointState.UP
    pool.failed(b, "refused")
    pool.checked(b, True)
    assert b.state(time.monotonic()) is EndpointState.OPEN, "a passing check waits out the cooldown"
    time.sleep(0.25)
    pool.checked(b, True)
    assert b.state(time.monotonic()) is EndpointState.UP
    assert pool.any_up()


def test_an_open_circuit_stays_open_while_its_checks_fail() -> None:
    pool = Pool([A, B], failure_threshold=1, cooldown=0.2)
    a, b = pool.endpoints
    pool.failed(a, "connection refused")
    pool.checked(a, False, "connection refused")
    time.sleep(0.25)
    assert a.state(time.monotonic()) is EndpointState.OPEN, "a dead replica is not in trial (nor counted up)"
    assert pool.pick({B}) is None
    pool.failed(b, "connection refused")
    assert not pool.any_up()
    pool.checked(a, True)
    assert a.state(time.monotonic()) is EndpointState.UP, "a passing check after the cooldown closes it"
    assert pool.any_up()


def test_prefix_affinity_keeps_a_prompt_on_its_replica_until_it_is_too_busy() -> None:
    pool = Pool([A, B, C], prefix_slack=2)
    home = pool.pick(set(), affinity="You are a helpful assistant. " * 20)
    assert home is not None
    assert all(pool.pick(set(), affinity="You are a helpful assistant. " * 20) is home for _ in range(5))
    homes = {pool.pick(set(), affinity=f"prompt {i}").url for i in range(30)}  # type: ignore[union-attr]
    assert len(homes) == 3, "different prefixes spread over the replicas"
    for _ in range(3):
        pool.begin(home)
    other = pool.pick(set(), affinity="You are a helpful assistant. " * 20)
    assert other is not home, "3 more in flight than the least busy is past the slack of 2"


# -- the OpenAI dialect ----------------------------------------------------------------------------

WIRE = OpenAIUpstream()


def test_chat_body_carries_every_field_the_request_set() -> None:
    request = ChatRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Paris?")),
        sampling=SamplingParams(max_tokens=50, temperature=0.2, top_p=0.9, stop=("\n\n",), seed=7, n=2,
                                logit_bias=((42, -100.0),), logprobs=3, presence_penalty=0.5),
        tools=(ToolSpec("get_weather", "Weather now", {"type": "object", "properties": {"city": {"type": "string"}}}),),
        tool_choice="get_weather", parallel_tool_calls=False,
        output=OutputFormat("json", {"type": "object"}, strict=True))
    body = msgspec.json.decode(WIRE.chat_body("m", request, request.sampling, True))
    assert body["model"] == "m" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Weather in Paris?"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"], body["n"]) == (
        50, 0.2, 0.9, ["\n\n"], 7, 2)
    assert body["logit_bias"] == {"42": -100.0}
    assert (body["logprobs"], body["top_logprobs"], body["presence_penalty"]) == (True, 3, 0.5)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "reply", "schema": {"type": "object"}, "strict": True}}


def test_stream_events_of_real_servers_are_read() -> None:
    # llama-server: content, then a finish with its timings, then usage with no choices.
    text = WIRE.read_stream_event(b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hel"}}],'
                                  b'"object":"chat.completion.chunk"}')
    assert [c.text for c in text.chunks] == ["Hel"] and text.prompt_tokens is None
    usage = WIRE.read_stream_event(b'{"choices":[],"usage":{"completion_tokens":9,"prompt_tokens":31,'
                                   b'"total_tokens":40,"prompt_tokens_details":{"cached_tokens":12}},'
                                   b'"timings":{"predicted_n":9}}')
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (31, 9, 12)
    # vLLM: a tool call in pieces.
    opened = WIRE.read_stream_event(b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
                                    b'"type":"function","function":{"name":"get_weather","arguments":""}}]}}]}')
    more = WIRE.read_stream_event(b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
                                  b'"function":{"arguments":"{\\"city\\": \\"Paris\\"}"}}]},'
                                  b'"finish_reason":"tool_calls"}]}')
    assert opened.chunks[0].calls[0].name == "get_weather" and opened.chunks[0].calls[0].id == "call_1"
    assert more.chunks[0].calls[0].name is None and more.chunks[0].calls[0].arguments == '{"city": "Paris"}'
    assert more.chunks[0].finish_reason == "tool_calls"
    broken = WIRE.read_stream_event(b'{"error":{"message":"out of memory","type":"server_error","code":500}}')
    assert broken.error is not None and broken.error.message == "out of memory" and broken.error.code is None
    assert WIRE.read_stream_event(b"not json").chunks == []


@pytest.mark.parametrize(("body", "message", "field", "code"), [
    (b'{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"ctx"}}',
     "too long", "messages", "ctx"),
    (b'{"error":{"code":400,"message":"the request exceeds the available context size","type":'
     b'"exceed_context_size_error"}}', "the request exceeds the available context size", None,
     "context_length_exceeded"),  # llama-server
    (b'{"object":"error","message":"This model\'s maximum context length is 2048 tokens. However, you requested '
     b'2100 tokens.","type":"BadRequestError","param":null,"code":400}',
     "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens.", None,
     "context_length_exceeded"),  # vLLM
    (b'{"detail":[{"loc":["body","n"],"msg":"Input should be greater than 0"}]}', "Input should be greater than 0",
     None, None),
    (b'{"error":"Input validation error: `inputs` must have less than 512 tokens","error_type":"validation"}',
     "Input validation error: `inputs` must have less than 512 tokens", None, "context_length_exceeded"),  # TGI
    (b'{"error":{"message":"unknown field","type":"invalid_request_error","code":"unknown_parameter"}}',
     "unknown field", None, "unknown_parameter"),
    (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>", None, None),
])
def test_error_bodies_of_real_servers_are_read(body: bytes, message: str, field: str | None, code: str | None) -> None:
    refusal = WIRE.read_error(body)
    assert (refusal.message, refusal.field, refusal.code) == (message, field, code)


def test_transcripts_are_read_with_language_codes_and_words_in_their_segments() -> None:
    info, segments = WIRE.read_transcription(msgspec.json.encode({
        "text": "Hello there. Bye.", "language": "english", "duration": 3.0,
        "segments": [{"id": 0, "start": 0.0, "end": 1.5, "text": " Hello there."},
                     {"id": 1, "start": 1.5, "end": 3.0, "text": " Bye."}],
        "words": [{"word": "Hello", "start": 0.1, "end": 0.5}, {"word": "there", "start": 0.6, "end": 1.2},
                  {"word": "Bye", "start": 1.8, "end": 2.2}]}), 3.0)
    assert (info.language, info.duration) == ("en", 3.0)
    assert [s.text for s in segments] == [" Hello there.", " Bye."]
    assert [[w.word for w in s.words] for s in segments] == [["Hello", "there"], ["Bye"]]
    info, segments = WIRE.read_transcription(b'{"text": "Just text."}', 2.0)
    assert [(s.start, s.end, s.text) for s in segments] == [(0.0, 2.0, "Just text.")]
