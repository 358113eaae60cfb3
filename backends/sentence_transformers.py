"""Embeddings backend on sentence-transformers (PyTorch).

The model runs on a worker thread of its own so the event loop never waits on torch, and the inputs
of concurrent requests are encoded together in batches (:mod:`backends.embed_batching`). Inputs are
checked against the model's maximum sequence length before they are queued: a too-long input is an
error naming it, as OpenAI's API does, never a silently truncated vector.

Two things keep the threads apart. The checks tokenise with a copy of the tokenizer: a fast tokenizer
refuses calls from a second thread while the batch thread uses it ("Already borrowed"). And torch's
OpenMP threads are told to sleep when idle (``OMP_WAIT_POLICY=PASSIVE``, unless the environment says
otherwise, before torch is first imported): spinning, they take the cores the event loop needs between
batches, and with any other load on the machine torch runs several times slower (measured on 2 cores:
the same speed idle, 4x faster under load; bench/README.md).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.embed_batching import EmbedBatcher, check_lengths, embed_request, input_texts
from backends.errors import LoadFailed
from backends.types import EmbeddingRequest, EmbeddingResult

__all__ = ["Options", "SentenceTransformersBackend", "load"]


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, mps."""
    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    """Most inputs encoded together, from one request or several."""
    batch_wait_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    """How long an input may wait for others to share its batch, when the engine is idle."""
    max_seq_length: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Overrides the model's own limit (in tokens)."""
    normalize: bool = True
    """Return unit vectors, as OpenAI's embeddings are."""


def load(files: Path, options: Options) -> SentenceTransformersBackend:
    return SentenceTransformersBackend(files, options)


class SentenceTransformersBackend:
    """A :class:`backends.base.EmbeddingBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch's OpenMP starts (module docstring)
        from sentence_transformers import SentenceTransformer

        folder = files if files.is_dir() else files.parent
        try:
            self._model: Any = SentenceTransformer(str(folder), device=options.device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise LoadFailed(f"sentence-transformers could not load the model: {e}") from None
        if options.max_seq_length is not None:
            self._model.max_seq_length = options.max_seq_length
        self._options = options
        self._checks = _Tokenizer(self._model.tokenizer)
        dimension_of = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dims = dimension_of()
        self._dimensions = int(dims) if dims else 0
        self._batcher: EmbedBatcher[str] = EmbedBatcher(
            self._encode, max_batch_size=options.max_batch_size, wait=options.batch_wait_ms / 1000,
            name=folder.name)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    def _prepare(self, request: EmbeddingRequest) -> tuple[list[str], int]:
        """The texts to encode and their token count; an input over the model's limit is an error."""
        texts = input_texts(request.inputs, self._checks.vocab, self._checks.decode)
        counts = self._checks.count(texts)
        check_lengths(counts, self.max_tokens)
        return texts, sum(counts)

    def _encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One batch, on the batcher's thread."""
        return np.asarray(
            self._model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True,
                               normalize_embeddings=False, show_progress_bar=False),
            dtype=np.float32,
        )

    def batch_sizes(self) -> dict[int, int]:
        return self._batcher.batch_sizes()

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        return await embed_request(request, dimensions=self._dimensions, normalize=self._options.normalize,
                                   batcher=self._batcher, work=lambda: self._prepare(request))

    def close(self) -> None:
        self._batcher.close()
        self._model = None


class _Tokenizer:
    """The model's tokenizer for the request checks, safe beside the batch thread's own.

    A fast tokenizer is copied down to its Rust tokenizer, whose encode and decode only read it, so any
    number of threads may check requests at once; a slow (Python) tokenizer is deep-copied.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self._rust: Any = Tokenizer.from_str(backend.to_str())
            self._rust.no_truncation()  # counts are of the whole input: over the limit is an error
            self._rust.no_padding()
            self.vocab = int(self._rust.get_vocab_size(with_added_tokens=True))
        else:
            self._rust = None
            self._slow: Any = copy.deepcopy(tokenizer)
            self.vocab = len(self._slow)

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text, special tokens included."""
        if self._rust is not None:
            return [len(e.ids) for e in self._rust.encode_batch(texts, add_special_tokens=True)]
        return [len(ids) for ids in self._slow(texts, add_special_tokens=True)["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        if self._rust is not None:
            return str(self._rust.decode(ids, skip_special_tokens=True))
        return str(self._slow.decode(ids, skip_special_tokens=True))
