"""Pure translation tests: OpenAI's documented JSON in, domain types out, OpenAI's shapes back."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from backends.types import ChatMessage, EmbeddingResult, Usage
from compat.errors import InvalidRequest, PayloadTooLarge, UnsupportedParameter
from compat.openai.chat import ChatStream, ChoiceResult, chat_completion, parse_chat_request
from compat.openai.completions import parse_completion_request
from compat.openai.embeddings import embedding_response, parse_embeddings_request
from compat.openai.errors import encode_error
from compat.wire import ParamPolicy, decode_object

# The request example of OpenAI's chat API reference.
DOCS_CHAT_REQUEST = b"""{
  "model": "gpt-4o",
  "messages": [
    {"role": "developer", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"}
  ],
  "stream": true,
  "stream_options": {"include_usage": true},
  "temperature": 0.7,
  "stop": "END",
  "max_completion_tokens": 50,
  "seed": 7,
  "presence_penalty": 0.5,
  "frequency_penalty": -0.5,
  "logit_bias": {"50256": -100},
  "user": "user-1234"
}"""

# Keys of OpenAI's documented chat.completion object and chunk.
DOCS_COMPLETION_KEYS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"}
DOCS_CHOICE_KEYS = {"index", "message", "logprobs", "finish_reason"}
DOCS_USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
                   "completion_tokens_details"}


def _reject() -> ParamPolicy:
    return ParamPolicy("reject")


def test_documented_chat_request_translates() -> None:
    parsed = parse_chat_request(decode_object(DOCS_CHAT_REQUEST), _reject())
    assert parsed.model == "gpt-4o"
    assert parsed.stream and parsed.include_usage
    assert parsed.user == "user-1234"
    assert parsed.request.messages == (ChatMessage("system", "You are a helpful assistant."),
                                       ChatMessage("user", "Hello!"))
    s = parsed.request.sampling
    assert (s.temperature, s.stop, s.max_tokens, s.seed) == (0.7, ("END",), 50, 7)
    assert (s.presence_penalty, s.frequency_penalty, s.logit_bias) == (0.5, -0.5, ((50256, -100.0),))
    assert s.top_p == 1.0


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    raw = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9,
           "max_completion_tokens": 3}
    assert parse_chat_request(raw, _reject()).request.sampling.max_tokens == 3


def test_null_means_absent() -> None:
    raw = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": None, "n": None,
           "tools": None, "stop": None, "response_format": {"type": "text"}, "n_": None}
    del raw["n_"]
    parsed = parse_chat_request(raw, _reject())
    assert parsed.request.sampling.temperature == 1.0


def test_drop_policy_strips_and_records() -> None:
    policy = ParamPolicy("drop")
    raw = {"model": "m", "store": True, "reasoning_effort": "low", "extra_thing": 1,
           "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                     {"type": "file", "file": {"file_id": "f"}}]},
                        {"role": "function", "content": "r", "name": "f"}]}
    parsed = parse_chat_request(raw, policy)
    assert policy.dropped == ["extra_thing", "reasoning_effort", "store", "messages[0].content[1]", "messages[1]"]
    assert parsed.request.messages == (ChatMessage("user", "a"),)


def test_reject_policy_names_the_field() -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
                           _reject())
    assert caught.value.param == "tool_choice"


@pytest.mark.parametrize(("raw", "param"), [
    ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": "s"}, "seed"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"a": 1}}, "logit_bias"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 101}}, "logit_bias"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["", "a"]}, "stop"),
])
def test_bad_values_name_their_path(raw: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(raw, _reject())
    assert caught.value.param == param


def test_completion_shape_matches_the_docs() -> None:
    body = json.loads(msgspec.json.encode(chat_completion("gpt-4o", [ChoiceResult("Hi there!", "stop")], Usage(9, 3))))
    assert set(body) == DOCS_COMPLETION_KEYS
    assert body["object"] == "chat.completion"
    assert set(body["choices"][0]) == DOCS_CHOICE_KEYS
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hi there!", "refusal": None,
                                             "annotations": []}
    assert set(body["usage"]) == DOCS_USAGE_KEYS
    assert body["usage"]["total_tokens"] == 12
    assert body["id"].startswith("chatcmpl-")


def test_stream_chunks_match_the_docs() -> None:
    stream = ChatStream("gpt-4o", include_usage=True)
    first, middle, last, usage = (json.loads(msgspec.json.encode(c)) for c in
                                  (stream.first(), stream.content("Hel"), stream.finish("length"),
                                   stream.usage(Usage(4, 2))))
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert middle["choices"][0]["delta"] == {"content": "Hel"}
    assert middle["usage"] is None  # an explicit null on every chunk but the last, with include_usage
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
    assert len({first["id"], middle["id"], last["id"], usage["id"]}) == 1
    without = json.loads(msgspec.json.encode(ChatStream("m", include_usage=False).content("x")))
    assert "usage" not in without


def test_legacy_prompt_shapes() -> None:
    def prompts(value: object) -> list[object]:
        raw = {"model": "m", "prompt": value}
        return [r.prompt for r in parse_completion_request(raw, _reject()).requests]

    assert prompts("a") == ["a"]
    assert prompts(["a", "b"]) == ["a", "b"]
    assert prompts([1, 2]) == [(1, 2)]
    assert prompts([[1], [2, 3]]) == [(1,), (2, 3)]
    for bad in ([], [1, "a"], [[1], []], [True]):
        with pytest.raises(InvalidRequest):
            prompts(bad)
    assert parse_completion_request({"model": "m", "prompt": "x"}, _reject()).requests[0].sampling.max_tokens == 16


def test_embeddings_request_and_base64_response() -> None:
    parsed = parse_embeddings_request({"model": "m", "input": ["a", "b"], "encoding_format": "base64",
                                       "dimensions": 2}, _reject())
    assert parsed.request.inputs == ("a", "b") and parsed.request.dimensions == 2 and parsed.base64
    vectors = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    body = json.loads(msgspec.json.encode(embedding_response("m", EmbeddingResult(vectors, 5), as_base64=True)))
    assert body["object"] == "list" and body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    decoded = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
    assert decoded.tolist() == [1.0, 0.0]
    floats = json.loads(msgspec.json.encode(embedding_response("m", EmbeddingResult(vectors, 5), as_base64=False)))
    assert floats["data"][0] == {"index": 0, "embedding": pytest.approx([0.6, 0.8]), "object": "embedding"}


def test_error_envelope() -> None:
    body = json.loads(encode_error(UnsupportedParameter("n")))
    assert body == {"error": {"message": body["error"]["message"], "type": "invalid_request_error",
                              "param": "n", "code": "unsupported_parameter"}}


def test_importing_the_gateway_loads_no_engine() -> None:
    code = ("import sys, gateway.app, gateway.cli; "
            "print([m for m in ('torch', 'llama_cpp', 'sentence_transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_body_of_too_many_items_is_refused_before_it_is_decoded() -> None:
    """Counted by commas: 1000 items (999 commas) pass a limit of 1000, 1001 items do not."""
    def body(items: int) -> bytes:
        return b'{"input": [' + b",".join([b"1"] * items) + b"]}"

    assert len(decode_object(body(1000), max_items=1000)["input"]) == 1000
    with pytest.raises(PayloadTooLarge, match="more than 1000 items"):
        decode_object(body(1001), max_items=1000)
    assert len(decode_object(body(1001))["input"]) == 1001  # no limit given


def test_a_body_of_too_many_members_is_refused_before_it_is_decoded() -> None:
    """Counted by colons: 1000 members (999 in the map, one for its field) pass a limit of 1001."""
    def body(members: int) -> bytes:
        return b'{"logit_bias": {' + b",".join(b'"%d": 1' % i for i in range(members)) + b"}}"

    assert len(decode_object(body(1000), max_members=1001)["logit_bias"]) == 1000
    with pytest.raises(PayloadTooLarge, match="more than 1001 object members"):
        decode_object(body(1001), max_members=1001)


def test_depth_is_checked_whatever_the_number_of_items() -> None:
    """A body of many items skips the walk only when its brackets are too few to nest past the limit."""
    wide = b'{"input": [' + b",".join([b"1"] * 20_000) + b"]}"
    assert len(decode_object(wide, max_depth=3)["input"]) == 20_000
    deep_and_wide = b'{"input": [' + b",".join([b"1"] * 20_000) + b'], "x": [[[[1]]]]}'
    with pytest.raises(InvalidRequest, match="nests deeper than 3"):
        decode_object(deep_and_wide, max_depth=3)
    with pytest.raises(InvalidRequest, match="nests deeper than 3"):
        decode_object(b'{"x": [[[1]]]}', max_depth=3)
