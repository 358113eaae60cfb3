"""Routes, models and errors: every bad input gets its 4xx in OpenAI's envelope."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import Gateway, base_config
from openai import OpenAI


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"] and "/site-packages/" not in error["message"]
    return error  # type: ignore[no-any-return]


def test_health(gateway_http: str) -> None:
    assert httpx.get(f"{gateway_http}/health").json() == {"status": "ok"}


def test_models_list_shows_names_and_aliases(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smollm2", "gpt-4o-mini", "gpt-4o", "minilm", "text-embedding-3-small",
            "text-embedding-ada-002"} <= ids
    assert all(m.object == "model" for m in client.models.list())


def test_model_retrieve(client: OpenAI) -> None:
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "model_not_found"


def test_unknown_model_is_404_naming_it(client: OpenAI) -> None:
    for call in (
        lambda: client.chat.completions.create(model="gpt-5-ultra", messages=[{"role": "user", "content": "x"}]),
        lambda: client.chat.completions.create(model="gpt-5-ultra", messages=[{"role": "user", "content": "x"}],
                                               stream=True),
        lambda: client.embeddings.create(model="gpt-5-ultra", input="x"),
        lambda: client.completions.create(model="gpt-5-ultra", prompt="x"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["param"] == "model" and body["code"] == "model_not_found"
        assert "gpt-5-ultra" in str(body["message"])


def test_unknown_route_and_wrong_method(gateway_http: str) -> None:
    error = _error(httpx.get(f"{gateway_http}/v1/nothing-here"), 404)
    assert error["type"] == "invalid_request_error"
    _error(httpx.get(f"{gateway_http}/v1/chat/completions"), 405)
    _error(httpx.delete(f"{gateway_http}/v1/embeddings"), 405)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": []}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}]}', "messages[0].content"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x", "mood": 1}]}',
         "messages[0].mood"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
         "temperature"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "top_p": "high"}', "top_p"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
         "max_tokens"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}',
         "stop"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "presence_penalty": -3}',
         "presence_penalty"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "frobnicate": true}',
         "frobnicate"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream_options": '
         b'{"include_usage": true}}', "stream_options"),
    ],
)
def test_bad_chat_requests_are_400_with_param(gateway_http: str, body: bytes, param: str | None) -> None:
    r = httpx.post(f"{gateway_http}/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"})
    error = _error(r, 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_tool_message_answering_no_call_is_rejected_by_path(gateway_http: str) -> None:
    r = httpx.post(f"{gateway_http}/v1/chat/completions", json={
        "model": "gpt-4o-mini", "max_tokens": 2,
        "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42", "tool_call_id": "c1"}]})
    assert _error(r, 400)["param"] == "messages[1]"
    call = {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    r = httpx.post(f"{gateway_http}/v1/chat/completions", json={
        "model": "gpt-4o-mini", "max_tokens": 2,
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
                     {"role": "tool", "content": "42", "tool_call_id": "c1"}]})
    assert _error(r, 400)["param"] == "messages[2]"


def test_server_keeps_serving_after_bad_input(client: OpenAI, gateway_http: str) -> None:
    for _ in range(3):
        httpx.post(f"{gateway_http}/v1/chat/completions", content=b"\xff\xfe garbage")
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2)
    assert r.choices[0].message.content is not None


# -- the drop policy ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = base_config(extra_server="  unsupported_params: drop\n")
    gw = Gateway(tmp_path_factory.mktemp("dropping"), config).start()
    yield gw
    gw.stop()


def test_drop_policy_answers_and_reports_what_it_dropped(dropping: Gateway) -> None:
    raw = dropping.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3,
        store=True, reasoning_effort="low", extra_body={"frobnicate": 1})
    completion = raw.parse()
    assert len(completion.choices) == 1
    dropped = {p.strip() for p in raw.headers["x-syn4pse-dropped-params"].split(",")}
    assert dropped == {"store", "reasoning_effort", "frobnicate"}
    assert "dropped unsupported parameters" in dropping.log()


@pytest.mark.parametrize("stream", [False, True])
def test_dropped_names_of_any_text_stay_one_header(dropping: Gateway, stream: bool) -> None:
    """Names a client chooses (non-ASCII, a line break, a comma) are percent-encoded in the header; more
    such requests than the model has slots all succeed, so none of them kept a slot."""
    hostile = {"ключ": 1, "a\nx-evil: 1": 2, "b,c": 3, "100%": 4}
    for _ in range(6):
        response = httpx.post(f"{dropping.url}/v1/chat/completions", timeout=120, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "stream": stream, **hostile})
        assert response.status_code == 200, response.text
        assert "x-evil" not in response.headers
        dropped = {p.strip() for p in response.headers["x-syn4pse-dropped-params"].split(",")}
        assert dropped == {"%D0%BA%D0%BB%D1%8E%D1%87", "a%0Ax-evil:%201", "b%2Cc", "100%25"}
    assert dropping.alive()


def test_drop_policy_still_validates_values(dropping: Gateway) -> None:
    with pytest.raises(openai.BadRequestError):
        dropping.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                                  temperature=9)


def test_no_header_when_nothing_was_dropped(dropping: Gateway) -> None:
    raw = dropping.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert "x-syn4pse-dropped-params" not in raw.headers


def test_oversized_body_is_413(gateway_http: str) -> None:
    body = b'{"model": "gpt-4o-mini", "input": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    error = _error(httpx.post(f"{gateway_http}/v1/embeddings", content=body,
                              headers={"content-type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"
