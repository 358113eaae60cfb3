"""LLM backend on llama.cpp, driven through llama-cpp-python's low-level API.

One scheduler thread owns the model and the context: every llama call happens on it (llama.cpp is not
thread-safe, and a build's thread pools are fastest when called from one thread). The package, one job
per module:

- :mod:`~backends.llama.options` — the ``options:`` struct (the package's ``load`` is what the catalog calls);
- :mod:`~backends.llama.engine` — the model and context over ctypes: loading, tokens, pieces, the
  chat template the file carries;
- :mod:`~backends.llama.prompts` — requests into prompts: chat templates, tools, grammars, the checks
  that fail a request before it starts (no model needed to test them);
- :mod:`~backends.llama.sampling` — sampler chains and log-probabilities;
- :mod:`~backends.llama.scheduler` — continuous batching: sequences, slots, the prompt cache, the
  check and resampling of grammar-held replies;
- :mod:`~backends.llama.backend` — the async :class:`~backends.base.ChatBackend` over the thread.

Importing the package imports no engine (see :mod:`backends.catalog`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from backends.llama.options import Options

if TYPE_CHECKING:
    from backends.llama.backend import LlamaCppBackend

__all__ = ["Options", "load"]


def load(files: Path, options: Options) -> LlamaCppBackend:
    """Load the model in ``files`` (a GGUF file, or a folder holding one). Blocking."""
    from backends.llama.backend import LlamaCppBackend

    return LlamaCppBackend(files, options)
