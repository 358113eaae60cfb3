"""Embeddings from an upstream server. ``dimensions`` is applied here (cut, then made unit length again)
rather than asked of the upstream, since not every server implements it; the vectors are made unit
length whatever the upstream sends, as a local model's are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backends.errors import BadDimensions, UpstreamFailed
from backends.types import EmbeddingRequest, EmbeddingResult
from backends.upstream.client import UpstreamModel
from backends.upstream.options import Options

__all__ = ["Options", "UpstreamEmbeddings", "load"]


class UpstreamEmbeddings(UpstreamModel):
    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._dimensions = 0

    @property
    def dimensions(self) -> int:
        """The upstream's vector size, once it has answered (0 before)."""
        return self._dimensions

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        if request.dimensions is not None and self._dimensions and request.dimensions > self._dimensions:
            raise BadDimensions(request.dimensions, self._dimensions)
        body = self.wire.embeddings_body(self.options.model, EmbeddingRequest(request.inputs))
        vectors, tokens = self.wire.read_embeddings(await self.upstream.send(self.wire.embeddings_path, body=body))
        if vectors.ndim != 2 or len(vectors) != len(request.inputs):
            raise UpstreamFailed(f"the upstream answered {len(vectors)} vectors for {len(request.inputs)} inputs")
        self._dimensions = int(vectors.shape[1])
        if request.dimensions is not None:
            if request.dimensions > self._dimensions:
                raise BadDimensions(request.dimensions, self._dimensions)
            vectors = vectors[:, :request.dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return EmbeddingResult(np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32), tokens)


def load(files: Path | None, options: Options) -> UpstreamEmbeddings:
    return UpstreamEmbeddings(options)
