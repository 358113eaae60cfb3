"""The backends this build knows, by the name ``syn4pse.yaml`` uses for them.

A new engine is one new module plus one line here. Modules are imported only when a model that uses
them is configured or loaded, so ``import gateway`` never pulls in torch or llama.cpp.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from backends.types import ModelType

if TYPE_CHECKING:
    from pathlib import Path

    import msgspec

    from backends.base import Backend

__all__ = ["BackendEntry", "entries", "find", "names_for"]


@dataclass(frozen=True, slots=True)
class BackendEntry:
    name: str
    model_type: ModelType
    module: str
    files: bool = True
    """Whether its models have files (a ``source``); an upstream model has none."""

    def _module(self) -> Any:
        return importlib.import_module(self.module)

    def options_type(self) -> type[msgspec.Struct]:
        """The struct this backend's ``options:`` decode into (engine not imported)."""
        return cast("type[msgspec.Struct]", self._module().Options)

    def load(self, files: Path | None, options: msgspec.Struct) -> Backend:
        """Build the backend from its model files (None for a backend without). Blocking: call it off
        the event loop."""
        return cast("Backend", self._module().load(files, options))

    def configured_voices(self, options: msgspec.Struct, model_file: str | None) -> list[str]:
        """A speech model's voices, from its configuration alone (nothing loaded or fetched); a loaded
        one's are ``SpeechBackend.voices``. Empty for a backend that cannot tell."""
        voices = getattr(self._module(), "configured_voices", None)
        return [] if voices is None else cast("list[str]", voices(options, model_file))


_ENTRIES = (
    BackendEntry("llama_cpp", ModelType.LLM, "backends.llama"),
    BackendEntry("sentence_transformers", ModelType.EMBEDDINGS, "backends.sentence_transformers"),
    BackendEntry("onnx", ModelType.EMBEDDINGS, "backends.onnx_embeddings"),
    BackendEntry("faster_whisper", ModelType.STT, "backends.faster_whisper"),
    BackendEntry("piper", ModelType.TTS, "backends.piper"),
    BackendEntry("silero_vad", ModelType.VAD, "backends.silero_vad"),
    BackendEntry("rapidocr", ModelType.VISION, "backends.rapidocr"),
    BackendEntry("upstream", ModelType.LLM, "backends.upstream.chat", files=False),
    BackendEntry("upstream", ModelType.EMBEDDINGS, "backends.upstream.embeddings", files=False),
    BackendEntry("upstream", ModelType.STT, "backends.upstream.transcription", files=False),
    BackendEntry("upstream", ModelType.TTS, "backends.upstream.speech", files=False),
)
_BY_NAME = {(entry.name, entry.model_type): entry for entry in _ENTRIES}


def find(name: str, model_type: ModelType) -> BackendEntry | None:
    """The backend ``name`` for models of ``model_type`` (one name may serve several types)."""
    return _BY_NAME.get((name, model_type))


def entries() -> tuple[BackendEntry, ...]:
    return _ENTRIES


def names_for(model_type: ModelType) -> list[str]:
    return [entry.name for entry in _ENTRIES if entry.model_type == model_type]
