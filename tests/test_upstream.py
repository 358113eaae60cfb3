"""``backend: upstream`` against real engines on 127.0.0.1: llama.cpp's llama-server as replicas of a chat
model, and a second SYN4PSE (the session's starter gateway) as the upstream of speech, embeddings and a
chat model with tools. The clients are the real ones (the OpenAI SDK, the Deepgram SDK); fakes appear
only to inject the faults real servers do not make on demand (a 500, a hang, a 429).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import httpx
import numpy as np
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS, Gateway, base_config, http_server
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from llama_server import LlamaServer
from openai import APIStatusError, OpenAI
from spoken import SPOKEN, similarity
from test_realtime import QUESTION, RATE, VAD, append, audio_of, realtime, speak, until
from test_responses_background import _notes

from backends.upstream.transcription import wav_file
from gateway.config import ConfigError, parse_config
from gateway.registry import Registry


def _fleet(name: str, urls: list[str], extra: str = "") -> str:
    endpoints = ", ".join(f'"{u}/v1"' for u in urls)
    return (f"  {name}:\n    type: llm\n    backend: upstream\n"
            f"    options: {{endpoints: [{endpoints}], model: smollm2, slots_per_endpoint: 1, health_interval: 0.5,"
            f" cooldown: 1, failure_threshold: 1, connect_timeout: 2{extra}}}\n")


def _front_config(replicas: list[LlamaServer], starter: Gateway) -> str:
    up = f'["{starter.url}/v1"]'
    return base_config(models="\nmodels:\n" + _fleet("fleet", [r.url for r in replicas]) + f"""
    aliases: [gpt-4o-mini]
  assistant:
    type: llm
    backend: upstream
    options: {{endpoints: {up}, model: smollm2, context_length: 1024}}
  embed:
    type: embeddings
    backend: upstream
    aliases: [text-embedding-3-small]
    options: {{endpoints: {up}, model: minilm}}
  hear:
    type: stt
    backend: upstream
    aliases: [whisper-1, nova-3]
    vad: vad
    options: {{endpoints: {up}, model: whisper}}
  speak:
    type: tts
    backend: upstream
    aliases: [tts-1, aura-asteria-en]
    options: {{endpoints: {up}, model: joe, voices: [alloy, nova]}}
  vad:
    type: vad
    backend: silero_vad
    source: {{package: faster_whisper, file: assets/silero_vad_v6.onnx}}
  voice:
    type: realtime
    llm: assistant
    stt: hear
    tts: speak
    aliases: [gpt-realtime]
""")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LlamaServer]]:
    workdir = tmp_path_factory.mktemp("llama-servers")
    servers = [LlamaServer(workdir).start(), LlamaServer(workdir).start()]
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, replicas: list[LlamaServer], gateway: Gateway) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("front"), _front_config(replicas, gateway)).start()
    yield gw
    gw.stop()


def _endpoints(gw: Gateway, model: str) -> list[dict[str, Any]]:
    models = httpx.get(f"{gw.url}/admin/models", timeout=10).json()["data"]
    found: list[dict[str, Any]] = next(m for m in models if m["id"] == model)["endpoints"]
    return found


def _chat(client: OpenAI, model: str = "fleet", **extra: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a color."}],
                                          max_tokens=12, **extra)


# -- replicas -------------------------------------------------------------------------------------


def test_streams_spread_over_both_replicas(front: Gateway, replicas: list[LlamaServer]) -> None:
    client = front.openai()
    before = [r.served() for r in replicas]

    def stream(_: int) -> tuple[str, Any]:
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=16,
            stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks[-1].usage

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(stream, range(8)))
    for text, usage in answers:
        assert text.strip()
        assert usage.completion_tokens > 0 and usage.prompt_tokens > 5, usage
    gained = [r.served() - b for r, b in zip(replicas, before, strict=True)]
    assert all(g > 0 for g in gained), f"each replica generated tokens: {gained}"
    endpoints = _endpoints(front, "fleet")
    assert all(e["requests"] >= 2 and e["state"] == "up" and e["outstanding"] == 0 for e in endpoints), endpoints


def test_a_disconnect_frees_the_upstream_slot(front: Gateway, replicas: list[LlamaServer]) -> None:
    body = {"model": "fleet", "stream": True, "max_tokens": 3000, "logit_bias": SMOLLM_SPECIAL_TOKENS,
            "messages": [{"role": "user", "content": "Tell me a very long story."}]}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{front.url}/v1/chat/completions",
                                                       json=body) as response:
        assert response.status_code == 200
        frames, generating = 0, False
        for line in response.iter_lines():
            frames += line.startswith("data: ")
            if frames == 5:
                generating = any(r.busy() for r in replicas)
                break  # closing the lines closes the response: the client is gone
        assert generating, "a replica was generating the abandoned answer"
    deadline = time.monotonic() + 5  # the rest of 3000 tokens takes far longer on one thread
    while any(r.busy() for r in replicas):
        assert time.monotonic() < deadline, "the upstream kept generating for a client that left"
        time.sleep(0.1)
    assert all(e["outstanding"] == 0 for e in _endpoints(front, "fleet"))


def test_an_upstream_400_stays_a_400(front: Gateway) -> None:
    long_prompt = "Repeat these words. " * 1500  # past the 4096 tokens of each llama-server's one slot
    for prefix in ("/v1", "/openai/v1"):
        with pytest.raises(APIStatusError) as caught:
            front.openai(prefix).chat.completions.create(
                model="fleet", messages=[{"role": "user", "content": long_prompt}], max_tokens=5)
        error = caught.value
        assert error.status_code == 400, error
        body = error.response.json()["error"]
        assert body["type"] == "invalid_request_error"
        assert "context" in body["message"].lower(), body
        assert error.response.headers.get("x-should-retry") != "true"
    assert _chat(front.openai()).choices[0].message.content, "the server goes on serving"


def test_killing_a_replica_keeps_every_request_succeeding(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("failover")
    first, second = LlamaServer(workdir).start(), LlamaServer(workdir).start()
    gw = Gateway(workdir, base_config(models="\nmodels:\n" + _fleet("fleet", [first.url, second.url]))).start()
    try:
        client = gw.openai()
        assert _chat(client).choices[0].message.content
        second.kill()
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: _chat(client), range(9)))
        assert all(a.choices[0].message.content for a in answers)
        states = {e["url"]: e for e in _endpoints(gw, "fleet")}
        dead = states[f"{second.url}/v1/"]
        assert dead["state"] in ("open", "down", "trial") and dead["failures"] >= 1, dead
        assert "connection" in dead["last_error"], dead
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert f'syn4pse_upstream_up{{endpoint="{second.url}/v1/",model="fleet"}} 0.0' in metrics
        assert f'syn4pse_upstream_up{{endpoint="{first.url}/v1/",model="fleet"}} 1.0' in metrics
        assert httpx.get(f"{gw.url}/ready").status_code == 200, "one replica up is enough"

        first.kill()
        with pytest.raises(APIStatusError) as caught:
            _chat(client)
        assert caught.value.status_code in (502, 503), caught.value
        assert caught.value.response.headers.get("x-should-retry") == "true"
        deadline = time.monotonic() + 5
        while httpx.get(f"{gw.url}/ready").status_code != 503:
            assert time.monotonic() < deadline, "/ready says not ready once no replica is up"
            time.sleep(0.2)
        assert "no upstream endpoint" in httpx.get(f"{gw.url}/ready").json()["models"]["fleet"]

        LlamaServer(workdir, port=second.port).start()  # it comes back
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _chat(client).choices[0].message.content
                break
            except APIStatusError:
                assert time.monotonic() < deadline, "a replica that is back gets requests again"
                time.sleep(0.3)
        assert httpx.get(f"{gw.url}/ready").status_code == 200
    finally:
        gw.stop()
        first.kill()
        subprocess.run(["pkill", "-f", f"--port {second.port}"], check=False)


def test_prefix_routing_keeps_a_shared_prompt_on_one_replica(tmp_path_factory: pytest.TempPathFactory,
                                                             replicas: list[LlamaServer]) -> None:
    config = base_config(models="\nmodels:\n" + _fleet("fleet", [r.url for r in replicas],
                                                       ", routing: prefix, prefix_chars: 200"))
    gw = Gateway(tmp_path_factory.mktemp("prefix"), config).start()
    try:
        system = "You are a careful assistant who answers about ships and the sea. " * 4
        client = gw.openai()
        for question in ("What is a mast?", "What is a keel?", "What is a hull?", "What is a sail?"):
            client.chat.completions.create(model="fleet", max_tokens=4, messages=[
                {"role": "system", "content": system}, {"role": "user", "content": question}])
        counts = sorted(e["requests"] for e in _endpoints(gw, "fleet"))
        assert counts == [0, 4], counts
    finally:
        gw.stop()


# -- faults of the upstream ------------------------------------------------------------------------


@contextlib.contextmanager
def _faulty(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """An upstream that answers every POST with ``answer`` (and its health checks with 200)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:
            self.last_body = self.rfile.read(int(self.headers.get("content-length", 0)))
            answer(self)

        def log_message(self, *_: object) -> None:
            pass

    with http_server(Handler) as url:
        yield url


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Callable[[Any], None]:
    def answer(handler: Any) -> None:
        handler.send_response(status)
        for key, value in {"content-type": "application/json", "content-length": str(len(body)),
                           **(headers or {})}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def _hang(handler: Any) -> None:
    time.sleep(3)


def test_upstream_5xx_timeouts_and_429s_in_the_clients_dialect(tmp_path_factory: pytest.TempPathFactory,
                                                                replicas: list[LlamaServer]) -> None:
    broken = _reply(500, b'{"error":{"message":"CUDA out of memory","type":"server_error"}}')
    busy = _reply(429, b'{"error":{"message":"too many requests","type":"rate_limit_error"}}', {"retry-after": "7"})
    with _faulty(broken) as failing, _faulty(_hang) as hanging, _faulty(busy) as limited:
        models = ("\nmodels:\n" + _fleet("failing", [failing])
                  + _fleet("hanging", [hanging], ", first_byte_timeout: 0.5")
                  + _fleet("limited", [limited]) + _fleet("mixed", [failing, replicas[0].url])
                  + f'  deaf:\n    type: stt\n    backend: upstream\n    options: {{endpoints: ["{failing}/v1"],'
                  ' model: whisper}\n')
        gw = Gateway(tmp_path_factory.mktemp("faults"), base_config(models=models)).start()
        try:
            client = gw.openai()
            for model, status, code in (("failing", 502, "upstream_error"), ("hanging", 504, "upstream_timeout")):
                with pytest.raises(APIStatusError) as caught:
                    _chat(client, model)
                assert caught.value.status_code == status
                assert caught.value.response.headers["x-should-retry"] == "true"
                assert caught.value.response.json()["error"]["code"] == code
            with pytest.raises(APIStatusError) as caught:
                _chat(client, "limited")
            assert caught.value.status_code == 429
            assert caught.value.response.headers["retry-after"] == "7"
            assert "too many requests" in caught.value.response.json()["error"]["message"]
            # Deepgram's dialect, for a model served upstream: its own envelope, the same status.
            silence = wav_file(np.zeros(16000, np.float32), 16000)
            listen = httpx.post(f"{gw.url}/v1/listen", params={"model": "deaf"}, content=silence,
                                headers={"content-type": "audio/wav", "authorization": "Token x"}, timeout=30)
            assert listen.status_code == 502, listen.text
            assert listen.headers["x-should-retry"] == "true"
            assert set(listen.json()) >= {"err_code", "err_msg", "request_id"}
            for _ in range(4):  # a failing replica next to a working one: every request still succeeds
                assert _chat(client, "mixed").choices[0].message.content
            failing_state = next(e for e in _endpoints(gw, "mixed") if e["url"].startswith(failing))
            assert failing_state["failures"] >= 1 and "CUDA out of memory" in failing_state["last_error"]
            assert gw.alive()
        finally:
            gw.stop()


class _Careless:
    """An upstream that ignores ``response_format`` and strict tools: it streams the next of ``replies``
    (text, or a tool call as ``(name, arguments)``) to each chat request, and keeps the bodies it got."""

    def __init__(self, replies: list[str | tuple[str, str]]) -> None:
        self.replies = replies
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, handler: Any) -> None:
        self.bodies.append(json.loads(handler.last_body))
        reply = self.replies[min(len(self.bodies), len(self.replies)) - 1]
        if isinstance(reply, str):
            deltas, finish = [{"role": "assistant", "content": reply}], "stop"
        else:
            deltas, finish = [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                    "function": {"name": reply[0], "arguments": ""}}]},
                              {"tool_calls": [{"index": 0, "function": {"arguments": reply[1]}}]}], "tool_calls"
        events = [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                   "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        events.append({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                       "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


CITY = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}}
WEATHER = [{"type": "function", "function": {"name": "get_weather", "strict": True, "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}}]


def test_checked_structured_outputs_ask_a_careless_upstream_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    careless = _Careless(['{"city": 5}', 'Sure! {"city": "Paris"}', '{"city": "Paris"}'])
    hopeless = _Careless(['{"town": "Paris"}'])
    tool_user = _Careless([("get_weather", '{"city": true}'), ("get_weather", '{"city": "Oslo"}')])
    trusting = _Careless(['{"city": 5}'])
    with _faulty(careless) as a, _faulty(hopeless) as b, _faulty(tool_user) as c, _faulty(trusting) as d:
        checked = ", structured_outputs: checked"
        models = ("\nmodels:\n" + _fleet("careless", [a], checked)
                  + _fleet("hopeless", [b], checked + ", check_attempts: 2")
                  + _fleet("tool-user", [c], checked) + _fleet("trusting", [d]))
        gw = Gateway(tmp_path_factory.mktemp("checked"), base_config(models=models)).start()
        try:
            client = gw.openai()
            ask = [{"role": "user", "content": "Which city?"}]
            pieces = [chunk.choices[0].delta.content for chunk in client.chat.completions.create(
                model="careless", messages=ask, response_format=CITY, stream=True) if chunk.choices]
            assert "".join(p for p in pieces if p) == '{"city": "Paris"}', pieces  # nothing of the failed answers
            assert len(careless.bodies) == 3
            assert all(body["response_format"]["json_schema"]["schema"] == CITY["json_schema"]["schema"]
                       for body in careless.bodies), "the schema still goes to the upstream"

            with pytest.raises(APIStatusError) as caught:
                client.chat.completions.create(model="hopeless", messages=ask, response_format=CITY)
            assert caught.value.status_code == 400
            error = caught.value.response.json()["error"]
            assert error["code"] == "schema_not_satisfied" and error["param"] == "response_format", error
            assert "in 2 samples" in error["message"] and "city" in error["message"], error
            assert len(hopeless.bodies) == 2

            call = client.chat.completions.create(model="tool-user", messages=ask, tools=WEATHER,
                                                  ).choices[0].message.tool_calls[0]
            assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
            assert len(tool_user.bodies) == 2

            trusted = client.chat.completions.create(model="trusting", messages=ask, response_format=CITY)
            assert trusted.choices[0].message.content == '{"city": 5}', "by default the upstream is trusted"
            assert len(trusting.bodies) == 1
            assert gw.alive()
        finally:
            gw.stop()


# -- every API over upstream models ---------------------------------------------------------------


def test_tools_structured_outputs_and_responses_over_an_upstream(front: Gateway) -> None:
    client = front.openai()
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                               "parameters": {"type": "object", "required": ["city"],
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="assistant", messages=messages, tools=tools, max_tokens=60,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    second = client.chat.completions.create(model="assistant", messages=messages, tools=tools, max_tokens=30)
    assert second.choices[0].message.content or second.choices[0].message.tool_calls

    streamed = list(client.chat.completions.create(
        model="assistant", messages=messages[:1], tools=tools, max_tokens=60, stream=True, tool_choice="required"))
    pieces = [tc for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert pieces and pieces[0].function.name == "get_weather" and pieces[0].id
    assert json.loads("".join(p.function.arguments or "" for p in pieces))
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    schema = {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["color"], "additionalProperties": False}
    shaped = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Pick a color."}], max_tokens=30,
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}})
    assert json.loads(shaped.choices[0].message.content)["color"] in ("red", "green", "blue")

    counted = httpx.post(f"{front.url}/v1/responses/input_tokens", json={"model": "assistant", "input": "Hi"})
    assert counted.status_code == 400 and counted.json()["error"]["param"] == "model", counted.text
    response = client.responses.create(model="assistant", input="Say hello.", max_output_tokens=16)
    assert response.output_text.strip()
    assert response.status == "completed" or response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.input_tokens > 0


def test_truncation_auto_over_an_upstream_that_refuses_a_long_prompt(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("truncation")
    small = LlamaServer(workdir, ctx=512).start()
    gw = Gateway(workdir, base_config(models="\nmodels:\n" + _fleet("small", [small.url], ", context_length: 512")))
    gw.start()
    try:
        client = gw.openai()
        asked: dict[str, Any] = {"model": "small", "temperature": 0, "max_output_tokens": 16}
        first = client.responses.create(**asked, input=_notes("apples"))
        second = client.responses.create(**asked, input=_notes("boats"), previous_response_id=first.id)
        chained = {**asked, "input": _notes("clouds"), "previous_response_id": second.id}
        with pytest.raises(APIStatusError) as refused:  # three turns do not fit 512 tokens
            client.responses.create(**chained)
        assert refused.value.status_code == 400
        assert refused.value.response.json()["error"]["code"] == "context_length_exceeded"
        truncated = client.responses.create(**chained, truncation="auto")
        assert truncated.status in ("completed", "incomplete") and truncated.output_text.strip(), truncated
        assert truncated.usage is not None and 256 < truncated.usage.input_tokens < 512, truncated.usage
        with client.responses.create(**chained, truncation="auto", stream=True) as stream:  # streamed: the same
            events = list(stream)
        assert events[0].type == "response.created" and events[-1].type in ("response.completed",
                                                                              "response.incomplete"), events[-1]
        assert events[-1].response.usage.input_tokens == truncated.usage.input_tokens
        with pytest.raises(APIStatusError) as too_long:  # the newest turn alone is too long: still a 400
            client.responses.create(**asked, input=" ".join(_notes(t) for t in ("eggs", "figs", "goats")),
                                    truncation="auto")
        assert too_long.value.response.json()["error"]["code"] == "context_length_exceeded"
        assert gw.alive()
    finally:
        gw.stop()
        small.kill()


def test_embeddings_over_an_upstream(front: Gateway) -> None:
    client = front.openai()
    texts = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Stock markets fell sharply today."]
    vectors = [np.array(d.embedding) for d in client.embeddings.create(model="text-embedding-3-small",
                                                                       input=texts).data]
    assert len(vectors[0]) == 384
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    short = client.embeddings.create(model="embed", input=texts[:1], dimensions=64).data[0].embedding
    assert len(short) == 64 and abs(np.linalg.norm(short) - 1) < 1e-4
    with pytest.raises(APIStatusError) as caught:
        client.embeddings.create(model="embed", input=texts[:1], dimensions=1000)
    assert caught.value.status_code == 400 and caught.value.response.json()["error"]["param"] == "dimensions"


def _pcm_16k(wav: bytes) -> bytes:
    with av.open(io.BytesIO(wav)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)


def test_speech_and_transcription_over_upstreams(front: Gateway) -> None:
    client = front.openai()
    wav = client.audio.speech.create(model="tts-1", voice="nova", input=SPOKEN, response_format="wav").content
    with av.open(io.BytesIO(wav)) as container:
        seconds = sum(f.samples for f in container.decode(audio=0)) / 24000
    assert 2.0 < seconds < 10.0, seconds
    heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav),
                                               response_format="verbose_json", timestamp_granularities=["word"])
    assert similarity(SPOKEN, heard.text) > 0.8, heard.text
    assert heard.language == "english" and heard.words and heard.words[0].start < heard.words[-1].end
    with pytest.raises(APIStatusError) as caught:
        client.audio.speech.create(model="tts-1", voice="ghost", input="Hi")
    assert caught.value.status_code == 400 and caught.value.response.json()["error"]["param"] == "voice"


def test_deepgram_live_and_speak_over_upstream_speech_models(front: Gateway) -> None:
    ws = front.url.replace("http://", "ws://")
    dg = DeepgramClient(api_key="test", environment=DeepgramClientEnvironment(
        base=front.url, production=ws, agent=ws, agent_rest=front.url))
    mp3 = b"".join(dg.speak.v1.audio.generate(text=SPOKEN, model="aura-asteria-en"))
    with av.open(io.BytesIO(mp3)) as container:
        assert container.streams.audio[0].codec_context.name.startswith("mp3")
    pcm = bytes(16000) + _pcm_16k(front.openai().audio.speech.create(
        model="tts-1", voice="alloy", input=SPOKEN, response_format="wav").content) + bytes(2 * 16000 * 2)
    with dg.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000, channels=1,
                              interim_results="true", endpointing=300) as conn:
        def feed() -> None:
            for i in range(0, len(pcm), 3200):
                conn.send_media(pcm[i:i + 3200])
                time.sleep(0.1)
            conn.send_close_stream()

        sender = threading.Thread(target=feed)
        sender.start()
        messages = list(conn)
        sender.join()
    finals = [m for m in messages if m.type == "Results" and m.is_final]
    transcript = " ".join(r.channel.alternatives[0].transcript for r in finals)
    assert similarity(SPOKEN, transcript) > 0.7, transcript
    assert messages[-1].type == "Metadata"


def test_a_realtime_conversation_over_upstream_models(front: Gateway) -> None:
    """Voice to voice with every part upstream: its speech heard, answered and spoken back."""
    pcm = speak(front, QUESTION)

    async def run() -> list[Any]:
        async with realtime(front) as conn:
            seen: list[Any] = []
            await conn.session.update(session={"type": "realtime", "max_output_tokens": 30, "temperature": 0,
                                               "audio": {"input": {"transcription": {"model": "whisper-1"},
                                                                   "turn_detection": VAD}}})
            await until(conn, "session.updated", seen)
            await append(conn, bytes(RATE) + pcm, silence_s=1.0)
            await until(conn, "response.done", seen)
            return seen

    seen = asyncio.run(run())
    heard = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert similarity(QUESTION, heard.transcript) > 0.7, heard.transcript
    transcript = next(e for e in seen if e.type == "response.output_audio_transcript.done").transcript
    assert transcript.strip()
    assert len(audio_of(seen)) > RATE  # over half a second of speech
    done = seen[-1].response
    assert done.usage.input_tokens > 10 and done.usage.output_tokens > 0


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "where"), [
    ("{model: m}", "models.u.options"),
    ("{endpoints: [], model: m}", "models.u.options.endpoints"),
    ('{endpoints: ["ftp://x"], model: m}', "models.u.options"),
    ('{endpoints: ["http://x/v1"], model: m, voices: [a], default_voice: b}', "models.u.options"),
])
def test_bad_upstream_options_name_their_key(options: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f'version: "1"\nmodels:\n  u:\n    type: tts\n    backend: upstream\n    options: {options}\n',
                     environ={})
    assert str(caught.value).startswith(where), caught.value


def test_an_upstream_model_has_no_source() -> None:
    with pytest.raises(ConfigError, match=r"models.u.source: .*remove source"):
        parse_config('version: "1"\nmodels:\n  u:\n    type: llm\n    backend: upstream\n    source: {path: /x}\n'
                     '    options: {endpoints: ["http://x/v1"], model: m}\n', environ={})
    config = parse_config('version: "1"\nmodels:\n  u:\n    type: llm\n    backend: upstream\n'
                          '    options: {endpoints: ["http://a/v1", "http://b/v1"], model: m, slots_per_endpoint: 3}\n',
                          environ={})
    assert config.models["u"].vision == "native", "images are passed on to the upstream"
    assert Registry(config).describe()[0]["state"] == "available"
