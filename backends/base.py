"""One Protocol per modality. A backend is built from its model files and options, then served.

Anything that streams is an async iterator; the non-streaming answer is the stream collected, so each
engine has one code path. Backends own their threads: a blocking engine never runs on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from backends.types import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationChunk,
    Prompt,
)

__all__ = ["Backend", "ChatBackend", "EmbeddingBackend"]


@runtime_checkable
class Backend(Protocol):
    """What every loaded model offers the registry."""

    def close(self) -> None:
        """Free the engine and stop its threads. Called once, when the model is unloaded."""


@runtime_checkable
class ChatBackend(Backend, Protocol):
    """Text generation. ``prepare_*`` checks and tokenises; ``generate`` streams from a Prompt."""

    @property
    def context_length(self) -> int: ...

    async def prepare_chat(self, request: ChatRequest) -> Prompt: ...

    async def prepare_completion(self, request: CompletionRequest) -> Prompt: ...

    def generate(self, prompt: Prompt) -> AsyncIterator[GenerationChunk]:
        """Stream the completion. Closing the iterator cancels the work within one token."""
        ...


@runtime_checkable
class EmbeddingBackend(Backend, Protocol):
    @property
    def dimensions(self) -> int: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...
