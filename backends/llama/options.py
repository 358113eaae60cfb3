"""What ``options:`` a llama.cpp model takes in ``syn4pse.yaml`` (the package's ``load`` builds the backend).

Importing this module imports no engine: the configuration is checked before any model loads.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["Options"]


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    n_ctx: Annotated[int, msgspec.Meta(ge=64)] = 4096
    """Context length of each sequence (prompt + completion)."""
    parallel: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    """Sequences decoded together (each with its own ``n_ctx``); further requests wait in the model's
    queue. Also the model's ``concurrency`` unless that is set."""
    n_batch: Annotated[int, msgspec.Meta(ge=16)] = 512
    """Most tokens in one decode step; long prompts are read in chunks of this size."""
    n_threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n_threads_batch: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n_gpu_layers: int = 0
    """Layers to offload to a GPU (-1: all) on a GPU build."""
    flash_attn: bool | None = None
    """None lets llama.cpp decide."""
    chat_template: str | None = None
    """A Jinja chat template overriding the one in the GGUF file."""
    mmproj: str | None = None
    """The vision projector (GGUF) that lets the model see images; a path relative to the model's files."""
    cache_prompt: bool = True
    """Keep each slot's KV cells after a request, to skip the shared prefix of the next prompt. Results
    can differ in the last bits from a run without the cache (llama.cpp's sums depend on batch shape)."""
    stream_interval_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 20
    """Hold a stream's tokens up to this long and send them as one chunk (0: every token at once). Each
    chunk wakes the server and the client, which share the cores with the engine on a small machine
    (at 150 tokens/s, per-token chunks cost a single stream 5-10 % of its speed on two cores); a stream's
    first text and its end are never held, and 20 ms is below what a reader or a speech pipeline notices."""
    speculative: Literal["lookup"] | bool = "lookup"
    """Speculative decoding: ``lookup`` (or true) drafts a sequence's next tokens from its own prompt and
    output (the tokens that followed its latest n-gram where it appeared before) and checks them in the
    same decode step as every stream's next token, keeping those the model picks itself: the reply is the
    one decoding token by token makes. False (or off) decodes one token per step and stream."""
    draft_max: Annotated[int, msgspec.Meta(ge=1, le=32)] = 8
    """Most tokens one draft holds."""
    draft_streams: Annotated[int, msgspec.Meta(ge=1)] = 2
    """Drafts are made while at most this many streams decode at once. A CPU's decode step costs more
    with each token it holds, so with many streams drafted tokens the model does not keep are a loss,
    while one or two streams gain (raise it on a GPU, where a step of many tokens costs little more).
    Default 2, measured on the starter model (bench/speculative.py)."""
    step_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = 300.0
    """Seconds one pass of the engine's loop (a decode step, a prompt being prepared) may take before the
    engine is deemed wedged: its requests fail with a 500 and the model is loaded afresh for the next one
    (null: never). Generous, since a long prompt chunk of a large model on a few cores takes a while."""
