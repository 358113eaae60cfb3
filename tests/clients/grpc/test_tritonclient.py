"""Triton's client, sync and asyncio, against the gateway's Open Inference Protocol endpoint: every model
type, streamed tokens, metadata, the repository, keys, errors, a full queue and cancellation."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from conftest import ADMIN_KEY, API_KEY, SPOKEN, Gateway, similarity
from openai import OpenAI
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

BANNED = {"0": -100, "1": -100, "2": -100}
"""SmolLM2's special tokens: banned, a generation runs to max_tokens."""
PROMPT = "The capital of France is"


def text(name: str, *values: str | bytes) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object))
    return tensor


def flag(name: str, value: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value]))
    return tensor


def sampling(**values: Any) -> triton.InferInput:
    return text("sampling_parameters", json.dumps(values))


def outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name) for name in names]


def one_text(result: triton.InferResult, name: str) -> str:
    values = result.as_numpy(name)
    assert values is not None, f"no {name} in the response"
    assert values.shape == (1,)
    return bytes(values[0]).decode()


def final(result: triton.InferResult) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def refusal(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def stream(client: triton.InferenceServerClient, *requests: dict[str, Any],
           timeout: float = 120) -> list[tuple[triton.InferResult | None, InferenceServerException | None]]:
    """Send ``requests`` on one ModelStreamInfer call; every response until each request's final one."""
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        for request in requests:
            client.async_stream_infer(**request)
        answers, open_requests = [], len(requests)
        deadline = time.monotonic() + timeout
        while open_requests:
            result, error = got.get(timeout=max(0.1, deadline - time.monotonic()))
            answers.append((result, error))
            if error is not None or final(result):
                open_requests -= 1
        return answers
    finally:
        client.stop_stream()


def active(gateway: Gateway, model: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    models = httpx.get(f"{gateway.url}/admin/models", headers=headers, timeout=10).json()["data"]
    return int(next(m for m in models if m["id"] == model)["active"])


def settles(gateway: Gateway, model: str, key: str | None = None, within: float = 3.0) -> bool:
    """Whether the model's turns are all given back within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if active(gateway, model, key) == 0:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def client(grpc_url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(grpc_url)


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> OpenAI:
    return gateway.openai()


# -- health and metadata ------------------------------------------------------------------------------


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    server = client.get_server_metadata()
    assert server.name == "syn4pse" and "model_repository" in server.extensions
    assert client.is_model_ready("minilm") and client.is_model_ready("text-embedding-3-small")  # an alias too
    expected = {"smollm2": ({"text_input", "messages", "stream", "sampling_parameters", "exclude_input_in_output"},
                            {"text_output", "finish_reason", "num_input_tokens", "num_output_tokens"}),
                "minilm": ({"text"}, {"embedding"}), "whisper": ({"audio", "language"}, {"text"}),
                "joe": ({"text", "voice"}, {"audio"})}
    for model, (inputs, outs) in expected.items():
        metadata = client.get_model_metadata(model)
        assert metadata.name == model and list(metadata.versions) == ["1"]
        assert {t.name for t in metadata.inputs} == inputs
        assert {t.name for t in metadata.outputs} == outs
    embedding = client.get_model_metadata("minilm", as_json=True)["outputs"][0]
    assert embedding["datatype"] == "FP32" and embedding["shape"] == ["-1", "-1"]
    assert "StatusCode.NOT_FOUND" in refusal(lambda: client.get_model_metadata("no-such-model")).status()
    assert "StatusCode.NOT_FOUND" in refusal(lambda: client.is_model_ready("minilm", "7")).status()


# -- each model type ----------------------------------------------------------------------------------


def test_embeddings_are_the_vectors_of_the_http_route(client: triton.InferenceServerClient, http: OpenAI) -> None:
    texts = ["A cat sat on the mat.", "Stock markets fell sharply today."]
    result = client.infer("text-embedding-3-small", [text("text", *texts)])
    vectors = result.as_numpy("embedding")
    assert vectors is not None and vectors.dtype == np.float32 and vectors.shape == (2, 384)
    reference = http.embeddings.create(model="text-embedding-3-small", input=texts)
    assert np.allclose(vectors, np.array([d.embedding for d in reference.data], dtype=np.float32), atol=1e-5)


def test_a_prompt_is_answered_as_the_completions_route_answers_it(client: triton.InferenceServerClient,
                                                                  http: OpenAI) -> None:
    result = client.infer("smollm2", [text("text_input", PROMPT), sampling(max_tokens="8", temperature="0")],
                          outputs=outputs("text_output", "finish_reason", "num_input_tokens", "num_output_tokens"),
                          request_id="prompt-1")
    assert result.get_response().id == "prompt-1"
    reference = http.completions.create(model="smollm2", prompt=PROMPT, max_tokens=8, temperature=0)
    assert reference.usage is not None
    assert one_text(result, "text_output") == PROMPT + reference.choices[0].text  # the prompt leads, as vLLM's
    assert one_text(result, "finish_reason") == reference.choices[0].finish_reason == "length"
    assert result.as_numpy("num_input_tokens").tolist() == [reference.usage.prompt_tokens]
    assert result.as_numpy("num_output_tokens").tolist() == [8]
    alone = client.infer("smollm2", [text("text_input", PROMPT), flag("exclude_input_in_output", True),
                                     sampling(max_tokens=8, temperature=0)])
    assert one_text(alone, "text_output") == reference.choices[0].text
    assert alone.as_numpy("finish_reason") is None  # not asked for: text_output alone


def test_streamed_tokens_arrive_one_by_one_and_the_last_is_final(client: triton.InferenceServerClient) -> None:
    request = {"model_name": "smollm2", "request_id": "s1",
               "inputs": [text("text_input", PROMPT), flag("stream", True), sampling(max_tokens=12, temperature=0)]}
    answers = stream(client, request)
    assert all(error is None for _, error in answers)
    results = [r for r, _ in answers if r is not None]
    assert len(results) >= 6, "the tokens arrive as they are made, not as one answer"
    assert [final(r) for r in results] == [False] * (len(results) - 1) + [True]
    assert {r.get_response().id for r in results} == {"s1"}
    streamed = "".join(one_text(r, "text_output") for r in results)
    whole = client.infer("smollm2", [text("text_input", PROMPT), flag("exclude_input_in_output", True),
                                     sampling(max_tokens=12, temperature=0)])
    assert streamed == one_text(whole, "text_output")

    empty_final = stream(client, {**request, "enable_empty_final_response": True,
                                  "outputs": outputs("text_output", "finish_reason")})
    results = [r for r, _ in empty_final if r is not None]
    assert [final(r) for r in results] == [False] * (len(results) - 1) + [True]
    assert results[-1].get_response().outputs == []  # the flag on an empty response of its own
    assert one_text(results[-2], "finish_reason") == "length"
    assert "".join(one_text(r, "text_output") for r in results[:-1]) == streamed


def test_a_chat_streams_over_asyncio_as_the_chat_route_answers_it(grpc_url: str, http: OpenAI) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    reference = http.chat.completions.create(model="gpt-4o-mini", messages=messages,  # type: ignore[arg-type]
                                             max_tokens=10, temperature=0)

    async def chat() -> list[triton.InferResult]:
        client = triton_aio.InferenceServerClient(grpc_url)
        inputs = [text("messages", json.dumps(messages)), flag("stream", True), sampling(max_tokens=10, temperature=0)]

        async def requests() -> Any:
            yield {"model_name": "gpt-4o-mini", "inputs": inputs, "request_id": "chat-1"}

        results = []
        try:
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                results.append(result)
                if final(result):
                    break
        finally:
            await client.close()
        return results

    results = asyncio.run(chat())
    assert len(results) > 2 and final(results[-1])
    assert "".join(one_text(r, "text_output") for r in results) == reference.choices[0].message.content


def test_speech_spoken_over_grpc_is_heard_over_grpc(client: triton.InferenceServerClient) -> None:
    spoken = client.infer("tts-1", [text("text", SPOKEN), text("voice", "alloy")])
    audio = spoken.as_numpy("audio")
    assert audio is not None and audio.shape == (1,)
    wav = bytes(audio[0])
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) > 48_000
    heard = client.infer("whisper-1", [text("audio", wav), text("language", "en")])
    assert similarity(SPOKEN, one_text(heard, "text")) > 0.7, one_text(heard, "text")
    refused = refusal(lambda: client.infer("joe", [text("text", SPOKEN), text("voice", "no-such-voice")]))
    assert "StatusCode.INVALID_ARGUMENT" in refused.status() and "voice" in refused.message()


# -- errors ---------------------------------------------------------------------------------------------


def _float(name: str) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    return tensor


BAD = [
    pytest.param("no-such-model", [text("text_input", "x")], None, "NOT_FOUND", "no-such-model", id="unknown-model"),
    pytest.param("smollm2", [text("prompt", "x")], None, "INVALID_ARGUMENT", "'prompt'", id="unknown-input"),
    pytest.param("smollm2", [_float("text_input")], None, "INVALID_ARGUMENT", "'text_input'", id="wrong-datatype"),
    pytest.param("smollm2", [text("text_input", "a", "b")], None, "INVALID_ARGUMENT", "'text_input'",
                 id="two-prompts"),
    pytest.param("smollm2", [text("text_input", "x"), sampling(temperature=9)], None, "INVALID_ARGUMENT",
                 "'sampling_parameters.temperature'", id="bad-temperature"),
    pytest.param("smollm2", [text("text_input", "x"), sampling(top_k=4)], None, "INVALID_ARGUMENT",
                 "'sampling_parameters.top_k'", id="unknown-sampling-key"),
    pytest.param("smollm2", [text("text_input", "x"), text("sampling_parameters", "{not json")], None,
                 "INVALID_ARGUMENT", "'sampling_parameters'", id="sampling-not-json"),
    pytest.param("smollm2", [text("text_input", "x"), flag("stream", True)], None, "INVALID_ARGUMENT", "'stream'",
                 id="stream-on-unary"),
    pytest.param("smollm2", [text("messages", "[]")], None, "INVALID_ARGUMENT", "messages", id="empty-chat"),
    pytest.param("smollm2", [text("text_input", "x"), text("messages", "[]")], None, "INVALID_ARGUMENT",
                 "'text_input'", id="prompt-and-chat"),
    pytest.param("minilm", [text("text", "x")], outputs("vectors"), "INVALID_ARGUMENT", "'vectors'",
                 id="unknown-output"),
    pytest.param("whisper", [text("audio", b"not audio at all")], None, "INVALID_ARGUMENT", "audio", id="bad-audio"),
    pytest.param("vad", [text("audio", b"x")], None, "INVALID_ARGUMENT", "vad model", id="unserved-type"),
]


@pytest.mark.parametrize(("model", "inputs", "wanted", "code", "named"), BAD)
def test_a_bad_request_is_refused_by_name_and_the_server_serves_on(
        client: triton.InferenceServerClient, model: str, inputs: list[triton.InferInput],
        wanted: list[triton.InferRequestedOutput] | None, code: str, named: str) -> None:
    refused = refusal(lambda: client.infer(model, inputs, outputs=wanted))
    assert refused.status() == f"StatusCode.{code}", refused
    assert named in refused.message()
    assert "Traceback" not in refused.message() and "/site-packages/" not in refused.message()
    assert client.is_server_live()


def test_a_failed_request_on_a_stream_leaves_the_stream_serving(client: triton.InferenceServerClient) -> None:
    bad = {"model_name": "smollm2", "request_id": "bad", "inputs": [text("text_input", "x"), sampling(seed="x")]}
    good = {"model_name": "minilm", "request_id": "good", "inputs": [text("text", "hello")]}
    answers = stream(client, bad, good)
    errors = [error for _, error in answers if error is not None]
    assert len(errors) == 1 and "'sampling_parameters.seed'" in errors[0].message()
    results = [r for r, _ in answers if r is not None]
    assert len(results) == 1 and results[0].get_response().id == "good" and final(results[0])
    assert results[0].as_numpy("embedding").shape == (1, 384)


# -- the model repository -----------------------------------------------------------------------------


def test_the_repository_lists_loads_and_unloads(client: triton.InferenceServerClient, gateway: Gateway) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert {"smollm2", "minilm", "whisper", "joe", "vad"} <= set(index)
    assert settles(gateway, "joe")
    client.unload_model("joe")
    assert {m.name: m.state for m in client.get_model_repository_index().models}["joe"] != "READY"
    client.load_model("joe")
    assert {m.name: m.state for m in client.get_model_repository_index().models}["joe"] == "READY"
    assert "joe" in {m.name for m in client.get_model_repository_index(as_json=False).models if m.state == "READY"}
    assert "StatusCode.NOT_FOUND" in refusal(lambda: client.load_model("no-such-model")).status()


# -- keys, a full queue, cancellation -------------------------------------------------------------------


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_keys_guard_every_call_but_the_probes(strict: Gateway) -> None:
    client = triton.InferenceServerClient(strict.grpc_address)
    assert client.is_server_live() and client.is_server_ready()  # probes carry no key
    refused = refusal(lambda: client.get_model_metadata("smollm2"))
    assert refused.status() == "StatusCode.UNAUTHENTICATED"
    assert refusal(lambda: client.infer("smollm2", [text("text_input", "x")],
                                        headers=_bearer("sk-wrong"))).status() == "StatusCode.UNAUTHENTICATED"
    result = client.infer("smollm2", [text("text_input", "Hi"), sampling(max_tokens=2)], headers=_bearer(API_KEY))
    assert one_text(result, "text_output").startswith("Hi")
    no_admin = refusal(lambda: client.unload_model("smollm2", headers=_bearer(API_KEY)))
    assert no_admin.status() == "StatusCode.PERMISSION_DENIED"
    client.load_model("smollm2", headers=_bearer(ADMIN_KEY))
    index = client.get_model_repository_index(headers=_bearer(ADMIN_KEY))
    assert {m.name: m.state for m in index.models}["smollm2"] == "READY"


def _long_request(stream: bool) -> service_pb2.ModelInferRequest:
    """A generation that runs to 400 tokens, in the protocol's own messages."""
    request = service_pb2.ModelInferRequest(model_name="smollm2", id="long")
    for name, datatype, value in (("text_input", "BYTES", "Tell a long story."), ("stream", "BOOL", stream),
                                  ("sampling_parameters", "BYTES",
                                   json.dumps({"max_tokens": 400, "logit_bias": BANNED}))):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1])
        if datatype == "BOOL":
            tensor.contents.bool_contents.append(bool(value))
        else:
            tensor.contents.bytes_contents.append(str(value).encode())
    return request


def test_a_full_queue_is_resource_exhausted_and_a_cancel_frees_the_engine(strict: Gateway) -> None:
    """concurrency 1, queue 0: while one stream generates, another request is refused with the wait; the
    stream cancelled, the engine is free within a moment and the next request is served."""
    address, metadata = strict.grpc_address, tuple(_bearer(API_KEY).items())
    client = triton.InferenceServerClient(address)

    async def scenario() -> tuple[grpc.StatusCode, dict[str, str], int, grpc.StatusCode]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            call = stub.ModelStreamInfer(iter([_long_request(True)]), metadata=metadata)
            first = await call.read()
            assert first.error_message == "" and not first.infer_response.parameters["triton_final_response"].bool_param
            try:
                await stub.ModelInfer(_long_request(False), metadata=metadata)
            except grpc.aio.AioRpcError as e:
                code, trailers = e.code(), dict(e.trailing_metadata() or ())
            else:
                raise AssertionError("a second request was served past a queue of 0")
            busy = active(strict, "smollm2", ADMIN_KEY)
            try:  # a model serving a request is not unloaded under it
                await stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="smollm2"),
                                                 metadata=tuple(_bearer(ADMIN_KEY).items()))
            except grpc.aio.AioRpcError as e:
                in_use = e.code()
            else:
                raise AssertionError("a model was unloaded while it served a stream")
            call.cancel()
        return code, trailers, busy, in_use

    code, trailers, busy, in_use = asyncio.run(scenario())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert in_use == grpc.StatusCode.FAILED_PRECONDITION
    assert int(trailers["retry-after"]) >= 1
    assert busy == 1
    assert settles(strict, "smollm2", ADMIN_KEY, within=2.0), "the cancelled stream still holds the engine"
    result = client.infer("smollm2", [text("text_input", "Hi"), sampling(max_tokens=2)], headers=_bearer(API_KEY))
    assert one_text(result, "text_output").startswith("Hi")


def test_a_deadline_ends_the_call_and_frees_the_engine(strict: Gateway) -> None:
    client = triton.InferenceServerClient(strict.grpc_address)
    long = [text("text_input", "Tell a long story."), sampling(max_tokens=400, logit_bias=BANNED)]
    refused = refusal(lambda: client.infer("smollm2", long, headers=_bearer(API_KEY), client_timeout=0.5))
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert settles(strict, "smollm2", ADMIN_KEY, within=2.0), "the expired call still holds the engine"


def test_requests_on_one_stream_are_answered_side_by_side(client: triton.InferenceServerClient) -> None:
    """A long streamed generation does not hold back the requests sent after it on the same stream."""
    long = {"model_name": "smollm2", "request_id": "long", "inputs": [
        text("text_input", "Tell a long story."), flag("stream", True), sampling(max_tokens=200, logit_bias=BANNED)]}
    embed = {"model_name": "minilm", "request_id": "embed", "inputs": [text("text", "hello")]}
    whole = {"model_name": "smollm2", "request_id": "whole",
             "inputs": [text("text_input", PROMPT), sampling(max_tokens=4, temperature=0)]}
    answers = stream(client, long, embed, whole)
    assert all(error is None for _, error in answers)
    finals = [r.get_response().id for r, _ in answers if r is not None and final(r)]
    assert finals[-1] == "long" and set(finals) == {"long", "embed", "whole"}
    ids = [r.get_response().id for r, _ in answers if r is not None]
    assert ids.count("whole") == 1 and ids.count("embed") == 1  # unstreamed: one final answer each
    whole_answer = next(r for r, _ in answers if r is not None and r.get_response().id == "whole")
    assert one_text(whole_answer, "text_output").startswith(PROMPT)
