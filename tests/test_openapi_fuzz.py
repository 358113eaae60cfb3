"""``GET /openapi.json`` is a valid OpenAPI document, and the server keeps to it under schemathesis.

Schemathesis (its CLI, in a subprocess, against a real server with the starter models) generates
requests from the document — the coverage phase's boundary and wrong-type values, field by field, then a
few fuzzed requests per operation — and checks every answer: no 5xx, a documented status, content type
and headers, a body (each event, for streams) that matches the documented schema.

Bounded to finish well under two minutes on two cores:

* the document stays truthful (``max_tokens`` has no upper bound there); this module, which the CLI
  loads as its hooks module, caps what is sent instead: at most :data:`MAX_TOKENS` tokens per
  generation, :data:`MAX_CHOICES` choices (``n``), :data:`MAX_PROMPTS` prompts per legacy completion,
  :data:`MAX_SPEECH_CHARS` characters to speak. It also swaps generated model and voice names for
  served ones, so valid requests reach the engines rather than stopping at a 404;
* generated uploads are noise, which every decoder refuses (a 400); in the fuzzing phase the hook
  sends a short real recording instead, so transcriptions go through whisper and their answers are
  checked too (not in the coverage phase, which would run whisper hundreds of times);
* Groq's ``/openai/v1`` copies of the OpenAI operations share the OpenAI code but for a few response
  extras: they get the fuzzing phase only.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from conftest import Gateway, base_config
from openapi_spec_validator import validate
from schemathesis.transport.serialization import Binary

from backends.audio import ENCODINGS
from compat.deepgram import listen, speak
from compat.openai import audio
from gateway.config import parse_config
from gateway.openapi import ListenQuery, SpeakQuery, TranscriptionForm, openapi_document

MAX_TOKENS = 2
MAX_PROMPTS = 2
MIN_OUTPUT_TOKENS = 16
"""The Responses API's least ``max_output_tokens`` (OpenAI's), and the most the fuzzing asks for."""
MAX_CHOICES = 2
MAX_SPEECH_CHARS = 40
AUDIO_ENV = "SYN4PSE_FUZZ_AUDIO"
"""The path of the recording the fuzzing phase uploads (the test writes it)."""
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance")
MODELS = {  # a served model per operation, by the end of its path
    "/chat/completions": "gpt-4o-mini",
    "/completions": "gpt-4o-mini",
    "/responses": "gpt-4o-mini",
    "/embeddings": "text-embedding-3-small",
    "/audio/transcriptions": "whisper-1",
    "/audio/translations": "whisper-1",
    "/audio/speech": "tts-1",
    "/v1/listen": "nova-3",
    "/v1/speak": "aura-asteria-en",
}
SCHEMATHESIS_CONFIG = f"""
hooks = "{Path(__file__).stem}"
cache.enabled = false

[[operations]]
include-tag = "groq"
phases.coverage.enabled = false
"""


@functools.cache
def _recording() -> bytes | None:
    path = os.environ.get(AUDIO_ENV)
    return Path(path).read_bytes() if path else None


def _tame(fields: dict[str, Any], path: str) -> None:
    """Name served models and cap what makes engines run long, in a body or a query string."""
    model = next((m for suffix, m in MODELS.items() if path.endswith(suffix)), None)
    if model is not None and isinstance(fields.get("model"), str):
        fields["model"] = model
    if path.endswith("/completions"):
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(fields.get(name), int):
                fields[name] = min(fields[name], MAX_TOKENS)
        if isinstance(fields.get("prompt"), list):
            fields["prompt"] = fields["prompt"][:MAX_PROMPTS]
        if isinstance(fields.get("n"), int):
            fields["n"] = min(fields["n"], MAX_CHOICES)
    if path.endswith("/responses") and isinstance(fields.get("max_output_tokens"), int):
        fields["max_output_tokens"] = min(fields["max_output_tokens"], MIN_OUTPUT_TOKENS)
    if path.endswith(("/audio/speech", "/v1/speak")):
        for name in ("input", "text"):
            if isinstance(fields.get(name), str):
                fields[name] = fields[name][:MAX_SPEECH_CHARS]
        if isinstance(fields.get("voice"), str):
            fields["voice"] = "alloy"


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]) -> None:
    """Tame the request, and upload real audio in the fuzzing phase (see the module docstring)."""
    path = case.operation.path
    if isinstance(case.query, dict):
        _tame(case.query, path)
    body = case.body
    if isinstance(body, dict):
        _tame(body, path)
        unbounded = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
        if path.endswith("/completions") and unbounded:
            body["max_completion_tokens" if path.endswith("/chat/completions") else "max_tokens"] = MAX_TOKENS
        if path.endswith("/responses") and body.get("max_output_tokens") is None:
            body["max_output_tokens"] = MIN_OUTPUT_TOKENS
    recording = _recording()
    if recording is not None and case.meta is not None and case.meta.phase.name == "fuzzing":
        if isinstance(body, Binary):  # /v1/listen
            case.body = Binary(recording)
        elif isinstance(body, dict) and isinstance(body.get("file"), Binary):
            body["file"] = Binary(recording)


@pytest.fixture(scope="module")
def fuzzed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("openapi"), base_config()).start()
    yield gw
    gw.stop()


def test_document_is_valid_openapi(fuzzed_gateway: Gateway) -> None:
    response = httpx.get(f"{fuzzed_gateway.url}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert {"/v1/chat/completions", "/openai/v1/audio/speech", "/v1/listen", "/health"} <= set(document["paths"])
    assert "401" not in document["paths"]["/v1/models"]["get"]["responses"]  # no keys configured


def test_api_keys_are_documented() -> None:
    config = parse_config(base_config('  api_keys: ["secret"]\n'), environ={})
    document = openapi_document(config)
    validate(document)
    assert document["security"] == [{"apiKey": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "401" in document["paths"]["/v1/listen"]["post"]["responses"]


def test_hand_declared_shapes_follow_compat() -> None:
    """The structs ``gateway.openapi`` declares for what the routes parse by hand name the same values."""
    assert set(ListenQuery.__struct_fields__) == listen._SUPPORTED
    assert _enum(ListenQuery, "encoding") == {*ENCODINGS, *listen._SNIFFED_ENCODINGS}
    assert _enum(SpeakQuery, "encoding") == set(speak.REST_ENCODINGS)
    assert _enum(TranscriptionForm, "response_format") == set(audio.TRANSCRIPT_FORMATS)


def _enum(struct: type[msgspec.Struct], field: str) -> set[Any]:
    schema = msgspec.json.schema(struct)["$defs"][struct.__name__]["properties"][field]
    return set(next(s for s in schema.get("anyOf", [schema]) if "enum" in s)["enum"])


def test_server_keeps_to_its_document(fuzzed_gateway: Gateway, tmp_path: Path) -> None:
    speech = httpx.post(f"{fuzzed_gateway.url}/v1/audio/speech", timeout=60, json={
        "model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "wav"})
    assert speech.status_code == 200
    (tmp_path / "hello.wav").write_bytes(speech.content)
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    env = {**os.environ, AUDIO_ENV: str(tmp_path / "hello.wav"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", "schemathesis.toml", "run",
               f"{fuzzed_gateway.url}/openapi.json", "--checks", CHECKS, "--phases", "coverage,fuzzing",
               "--max-examples", "5", "--request-timeout", "30", "--seed", "1", "--generation-database", "none",
               "--no-color", "--output-truncate", "false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=360,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output}\n--- server log ---\n{fuzzed_gateway.log()[-5000:]}"
