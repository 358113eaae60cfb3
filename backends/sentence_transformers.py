"""Embeddings backend on sentence-transformers (PyTorch).

The model runs on a worker thread of its own so the event loop never waits on torch. Inputs are
checked against the model's maximum sequence length: a too-long input is an error naming it, as
OpenAI's API does, never a silently truncated vector.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.errors import InvalidRequest, ModelUnavailable
from backends.types import EmbeddingRequest, EmbeddingResult

__all__ = ["Options", "SentenceTransformersBackend", "load"]


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, mps."""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    max_seq_length: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Overrides the model's own limit (in tokens)."""
    normalize: bool = True
    """Return unit vectors, as OpenAI's embeddings are."""


def load(files: Path, options: Options) -> SentenceTransformersBackend:
    return SentenceTransformersBackend(files, options)


class SentenceTransformersBackend:
    """A :class:`backends.base.EmbeddingBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local; never reach for a hub
        from sentence_transformers import SentenceTransformer

        folder = files if files.is_dir() else files.parent
        try:
            self._model: Any = SentenceTransformer(str(folder), device=options.device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelUnavailable(f"sentence-transformers could not load the model: {e}") from None
        if options.max_seq_length is not None:
            self._model.max_seq_length = options.max_seq_length
        self._options = options
        self._tokenizer = self._model.tokenizer
        dimension_of = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dims = dimension_of()
        self._dimensions = int(dims) if dims else 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed:{folder.name}")

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    def _texts(self, request: EmbeddingRequest) -> list[str]:
        vocab = len(self._tokenizer)
        texts: list[str] = []
        for i, item in enumerate(request.inputs):
            if isinstance(item, str):
                texts.append(item)
                continue
            bad = [t for t in item if not 0 <= t < vocab]
            if bad:
                raise InvalidRequest(f"Token id {bad[0]} in input[{i}] is outside this model's vocabulary"
                                     f" (0..{vocab - 1}).", param="input")
            texts.append(self._tokenizer.decode(list(item), skip_special_tokens=True))
        return texts

    def _run(self, request: EmbeddingRequest) -> EmbeddingResult:
        texts = self._texts(request)
        counts = [len(ids) for ids in self._tokenizer(texts, add_special_tokens=True)["input_ids"]]
        limit = self.max_tokens
        for i, n in enumerate(counts):
            if n > limit:
                raise InvalidRequest(f"input[{i}] is {n} tokens long; this model reads at most {limit}.",
                                     param="input")
        vectors: npt.NDArray[np.float32] = np.asarray(
            self._model.encode(texts, batch_size=self._options.batch_size, convert_to_numpy=True,
                               normalize_embeddings=False, show_progress_bar=False),
            dtype=np.float32,
        )
        if request.dimensions is not None:
            vectors = vectors[:, : request.dimensions]
        if self._options.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return EmbeddingResult(vectors=np.ascontiguousarray(vectors, dtype=np.float32),
                               prompt_tokens=sum(counts))

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        if request.dimensions is not None and request.dimensions > self._dimensions:
            raise InvalidRequest(f"dimensions is {request.dimensions}, but this model's embeddings have"
                                 f" {self._dimensions}.", param="dimensions")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, request)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._model = None
