"""Write the tables of ``docs/configuration.md`` from the structs ``syn4pse.yaml`` decodes into.

Every key the file accepts is a field of a msgspec struct: ``gateway.config`` for ``server:``,
``services:`` and a model entry, and each backend's own ``Options`` (found through
``backends.catalog``). The tables list each field with its type and constraints, its default and its
docstring, so the reference cannot drift from the code; prose stays hand-written around them. A field
without a docstring takes its description from ``NOTES`` below, and a field with neither fails
``tests/test_docs.py``.

    .venv/bin/python docs/gen_config.py           # rewrite the generated tables in place
    .venv/bin/python docs/gen_config.py --check   # exit 1 if they are out of date
"""

from __future__ import annotations

import ast
import enum
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends import catalog  # noqa: E402
from backends.types import ModelType  # noqa: E402
from gateway import config  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED {name}: docs/gen_config.py writes this block -->"
END = "<!-- END GENERATED {name} -->"
_BLOCK = re.compile(r"<!-- BEGIN GENERATED (\S+): docs/gen_config.py writes this block -->\n(.*?)"
                    r"<!-- END GENERATED \1 -->", re.S)

NOTES: dict[str, str] = {
    # What a field's docstring does not say (or a field without one). Keys are the key's path as the
    # tables print it; a key that names no field fails the docs test.
    "server.host": "Address the HTTP server listens on (`0.0.0.0` for every interface).",
    "server.http_port": "Port of the HTTP and WebSocket routes. `SYN4PSE_SERVER_HTTP_PORT` overrides it.",
    "server.grpc_port": "See [grpc.md](grpc.md). `--grpc-port` overrides it on the command line.",
    "server.models_path": "Where Hugging Face sources are downloaded. `SYN4PSE_MODELS_PATH` overrides it.",
    "server.unsupported_params": "Values of supported fields are always validated.",
    "server.env": "`development` turns on debug logging. `SYN4PSE_ENV` overrides it.",
    "server.log_level": "Level of the server's log.",
    "server.remote_fetch": "Governs every URL a client may name: Deepgram's `{\"url\"}`, Groq's `url`, chat "
                           "images.",
    "server.max_json_bytes": "Largest JSON body (413 above it).",
    "server.max_json_depth": "Deepest nesting of a JSON body (400 above it).",
    "server.max_header_bytes": "Largest request head (431 above it).",
    "server.max_loaded_models": "Most models loaded at once; see `max_models_memory_mb`.",
    "server.max_models_memory_mb": "A model's memory is its `memory_mb`, else estimated from its files.",
    "server.queue_size": "Requests that may wait for a model that sets no `queue` of its own.",
    "server.remote_fetch.enabled": "Off: every client-named URL is refused.",
    "server.remote_fetch.max_bytes": "Largest body fetched.",
    "server.remote_fetch.timeout": "Seconds a fetch may take.",
    "server.remote_fetch.max_redirects": "Redirects followed; each target is checked again.",
    "server.cors.allow_origins": "Origins allowed to call the server from a browser.",
    "server.cors.allow_methods": "Methods allowed cross-origin.",
    "server.cors.allow_headers": "Request headers allowed cross-origin.",
    "server.cors.allow_credentials": "Whether browsers may send credentials.",
    "server.cors.max_age": "Seconds a browser may cache a preflight answer.",
    "services.openai": "`/v1/chat/completions`, `/v1/responses` (HTTP and WebSocket), `/v1/completions`, "
                       "`/v1/embeddings`, `/v1/audio/*`, `/v1/models`.",
    "services.deepgram": "`/v1/listen` (REST and WebSocket) and `/v1/speak` (REST and WebSocket).",
    "services.openai.enabled": "Serve the dialect's routes.",
    "services.groq.enabled": "Serve the dialect's routes.",
    "services.deepgram.enabled": "Serve the dialect's routes.",
    "models.<name>.type": "Which Protocol the backend serves; it must be one of the backend's.",
    "models.<name>.backend": "A backend name from the tables below.",
    "models.<name>.source": "Exactly one of `huggingface`, `path` or `package`.",
    "models.<name>.aliases": "Other names requests may use (`gpt-4o-mini`, `whisper-1`, `nova-3`, …); a name "
                             "belongs to one model.",
    "models.<name>.options": "Checked like the rest of the file: an unknown option stops the server.",
    "models.<name>.concurrency": "Default for an llm: its `parallel`; for an embeddings model: twice its "
                                 "`max_batch_size`, at least `server.default_concurrency`.",
    "models.<name>.source.huggingface": "A Hugging Face repository, downloaded into `server.models_path` on "
                                        "first use or by `syn4pse pull`.",
    "models.<name>.source.huggingface.repo": "`owner/name` of the Hugging Face repository.",
    "models.<name>.source.huggingface.revision": "Branch, tag or commit.",
    "llama_cpp.parallel": "The KV cache holds `n_ctx` × `parallel` tokens.",
    "llama_cpp.n_batch": "A long prompt's chunks are read between the other streams' tokens.",
    "llama_cpp.n_threads": "Threads of a decode step; null: llama.cpp's default.",
    "llama_cpp.n_threads_batch": "Threads of a prompt-reading step; null: llama.cpp's default.",
    "llama_cpp.mmproj": "An absolute path works too. Setting it makes `vision: native` the model's default.",
    "llama_cpp.cache_prompt": "A prompt sharing a slot's prefix (a long system prompt, the `n` choices of one "
                              "request) reads only the rest.",
    "faster_whisper.device": "Where CTranslate2 runs.",
    "faster_whisper.beam_size": "Beam width of the decoder.",
    "piper.voices": "The voices requests may ask for, by name; the model's own name (its file's stem) is "
                    "always one.",
    "piper.use_cuda": "Run the voice on a GPU (needs onnxruntime-gpu).",
    "piper.instances": "Each copy costs about 150–200 MB for a medium voice.",
    "sentence_transformers.batch_wait_ms": "A lone client never waits.",
    "onnx.batch_wait_ms": "A lone client never waits.",
    "rapidocr.n_threads": "ONNX Runtime's threads; null: one per core this process may use.",
    "silero_vad.threshold": "Speech starts above it and ends below it minus 0.15.",
    "silero_vad.min_speech_ms": "Shorter stretches of speech are dropped.",
    "silero_vad.min_silence_ms": "Silence this long ends a stretch of speech.",
    "silero_vad.speech_pad_ms": "Added to both ends of each stretch.",
}


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    """The key's full path, e.g. ``server.cors.max_age``."""
    kind: str
    default: str
    doc: str


@dataclass(frozen=True, slots=True)
class Table:
    prefix: str
    """The path of the mapping whose keys the rows are, e.g. ``server.cors``."""
    struct: type[msgspec.Struct]
    rows: tuple[Row, ...]


# --------------------------------------------------------------------------------------------------
# Reading the structs


def field_docs(struct: type[msgspec.Struct]) -> dict[str, str]:
    """The docstrings written under a struct's fields (the string literal after each annotation)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(struct)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = after.value.value
    return docs


def _markdown(docstring: str) -> str:
    text = " ".join(docstring.split())
    text = re.sub(r":(?:class|func|mod|attr|data):`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"\bNone\b", "null", text)  # the YAML word for it
    return text.replace("``", "`").replace("|", "\\|")


def _nested(tp: Any) -> tuple[type[msgspec.Struct], str] | None:
    """The struct a field holds (directly, optionally, or as a map's values) and the path suffix."""
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp, ""
    if typing.get_origin(tp) is dict:
        value = _strip(typing.get_args(tp)[1])
        if isinstance(value, type) and issubclass(value, msgspec.Struct):
            return value, ".<name>"
    return None


def _strip(tp: Any) -> Any:
    """``T`` from ``Annotated[T, …]`` and from ``T | None``."""
    if typing.get_origin(tp) is typing.Annotated:
        return _strip(typing.get_args(tp)[0])
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return _strip(rest[0])
    return tp


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _constraints(meta: msgspec.Meta) -> list[str]:
    said: list[str] = []
    low = ("≥", meta.ge) if meta.ge is not None else (">", meta.gt) if meta.gt is not None else None
    high = ("≤", meta.le) if meta.le is not None else ("<", meta.lt) if meta.lt is not None else None
    if low and high and low[0] == "≥" and high[0] == "≤":
        said.append(f"{_number(low[1])}–{_number(high[1])}")
    else:
        said += [f"{bound[0]} {_number(bound[1])}" for bound in (low, high) if bound is not None]
    if meta.min_length == 1:
        said.append("not empty")
    elif meta.min_length is not None:
        said.append(f"at least {meta.min_length} long")
    if meta.max_length is not None:
        said.append(f"at most {meta.max_length} long")
    if meta.pattern is not None:
        said.append(f"matching `{meta.pattern}`")
    return said


def kind(tp: Any) -> str:
    """A field's type in words: ``int, 1–65535``, ``one of `reject`, `drop` ``, ``list of string``."""
    if typing.get_origin(tp) is typing.Annotated:
        inner, *metas = typing.get_args(tp)
        said = [c for m in metas if isinstance(m, msgspec.Meta) for c in _constraints(m)]
        return f"{kind(inner)} ({', '.join(said)})" if said else kind(inner)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        options = typing.get_args(tp)
        named = [kind(a) for a in options if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in options else "")
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {kind(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        key, value = typing.get_args(tp)
        return f"map of {'name' if key is str else kind(key)} to {kind(value)}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "mapping (below)"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp is Any:
        return "any"
    if tp in names:
        return names[tp]
    raise TypeError(f"no words for the type {tp!r}: teach docs/gen_config.py's kind() about it")


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    value = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    if isinstance(value, msgspec.Struct):
        return "its defaults"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{json.dumps(value, ensure_ascii=False)}`" if not isinstance(value, str) else f"`{value}`"


def tables(struct: type[msgspec.Struct], prefix: str) -> Iterator[Table]:
    """The struct's table, then one for each struct it holds, depth first."""
    hints = typing.get_type_hints(struct, include_extras=True)
    docs = field_docs(struct)
    rows: list[Row] = []
    nested: list[tuple[type[msgspec.Struct], str]] = []
    for field in msgspec.structs.fields(struct):
        key = f"{prefix}.{field.encode_name}"
        tp = hints[field.name]
        inner = _nested(tp)
        text = " ".join(part for part in (_markdown(docs.get(field.name, "")), NOTES.get(key, "")) if part)
        rows.append(Row(key, kind(tp), _default(field), text))
        if inner is not None:
            nested.append((inner[0], key + inner[1]))
    yield Table(prefix, struct, tuple(rows))
    for sub, path in nested:
        yield from tables(sub, path)


# --------------------------------------------------------------------------------------------------
# The blocks of docs/configuration.md


def backend_entries() -> list[catalog.BackendEntry]:
    """Every backend the catalog knows, by model type; a backend serving several types once."""
    found: dict[str, catalog.BackendEntry] = {}
    for model_type in ModelType:
        for entry in catalog.entries():
            if entry.model_type == model_type:
                found.setdefault(entry.name, entry)
    return list(found.values())


def _types_of(name: str) -> str:
    return ", ".join(f"`{e.model_type.value}`" for e in catalog.entries() if e.name == name)


def sections() -> dict[str, list[Table]]:
    """Each generated block's tables, by block name, in the order the page shows them."""
    out: dict[str, list[Table]] = {
        "server": list(tables(config.ServerConfig, "server")),
        "services": list(tables(config.ServicesConfig, "services")),
        "models": list(tables(config.ModelConfig, "models.<name>")),
    }
    for entry in backend_entries():
        out[f"backend:{entry.name}"] = list(tables(entry.options_type(), entry.name))
    return out


def _render(block: list[Table], top: str | None) -> str:
    lines: list[str] = []
    for i, table in enumerate(block):
        title = top if i == 0 and top is not None else f"`{table.prefix}`"
        lines += [f"**{title}**", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{row.key.removeprefix(table.prefix + '.')}` | {row.kind} | {row.default} | {row.doc} |"
                  for row in table.rows]
        lines.append("")
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    """Each generated block's text (what goes between its markers)."""
    out: dict[str, str] = {}
    for name, block in sections().items():
        top = None
        if name.startswith("backend:"):
            backend = name.removeprefix("backend:")
            top = f"`options:` of `backend: {backend}` (type {_types_of(backend)})"
        out[name] = _render(block, top)
    return out


def update(text: str) -> str:
    """``text`` with every generated block rewritten. Raises if a block is missing or unknown."""
    wanted = blocks()
    found = [m.group(1) for m in _BLOCK.finditer(text)]
    missing = [name for name in wanted if name not in found]
    unknown = [name for name in found if name not in wanted]
    if missing or unknown:
        raise ValueError(f"docs/configuration.md: blocks missing {missing}, blocks for nothing {unknown}: add "
                         f"'{BEGIN.format(name='NAME')}' … '{END.format(name='NAME')}' where they belong")
    return _BLOCK.sub(lambda m: BEGIN.format(name=m.group(1)) + "\n" + wanted[m.group(1)]
                      + END.format(name=m.group(1)), text)


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = update(text)
    if "--check" in argv:
        if new != text:
            print("docs/configuration.md is out of date: run .venv/bin/python docs/gen_config.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print("docs/configuration.md: tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
