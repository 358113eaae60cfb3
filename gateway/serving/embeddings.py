"""Embeddings: lease the model and embed the inputs (the backend batches concurrent requests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from backends.types import EmbeddingRequest, EmbeddingResult
from gateway.registry import EMBEDDINGS, Registry

__all__ = ["EmbeddingTokenIds", "Embeddings"]

EmbeddingTokenIds = Callable[[str, str, EmbeddingRequest], EmbeddingRequest]
"""(the name the client used, the model's name, the request) → the request, with token-id inputs that
are not the model's own read into text. Runs on a worker thread."""


class Embeddings:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def embed(self, model: str, request: EmbeddingRequest, *,
                    token_ids: EmbeddingTokenIds | None = None) -> EmbeddingResult:
        async with self._registry.lease(model, EMBEDDINGS) as held:
            if token_ids is not None and not all(isinstance(i, str) for i in request.inputs):
                request = await asyncio.to_thread(token_ids, held.requested, held.name, request)
            return await held.backend.embed(request)
