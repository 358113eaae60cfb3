"""Embeddings backend on ONNX Runtime, for sentence-transformers model folders that ship an ONNX file.

Why a second embeddings engine: the transformer exported to ONNX runs about 1.3x faster than the torch
path on a CPU, in a third of the memory, and needs neither torch nor sentence-transformers at run
time, only ``onnxruntime`` and ``tokenizers``.

The folder is read the way sentence-transformers reads it, so both backends give the same vectors:

- ``modules.json``: a Transformer, then a Pooling module, then optionally a Normalize module. Any
  other module (Dense, LayerNorm, …) changes the vectors in a way this backend does not reproduce, so
  such a model is refused at load, never served with different vectors.
- The Pooling module's ``config.json``: the pooling modes (cls, max, mean, mean_sqrt_len_tokens,
  weightedmean, lasttoken; several are concatenated in order), old and new key styles.
- ``sentence_bert_config.json``: ``max_seq_length`` and ``do_lower_case``.
- ``tokenizer.json`` (with its own truncation and padding turned off: inputs over the limit are an
  error, and batches are padded here).
- The ONNX file (``onnx/model.onnx`` unless ``onnx_file`` names another): its inputs among
  ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``position_ids``; its token embeddings
  (``token_embeddings`` or ``last_hidden_state``, else its first output of rank 3) are pooled here.

Concurrent requests are batched (:mod:`backends.embed_batching`); inside a batch, inputs are sorted by
length and cut where lengths jump, so a long input does not make every short one pay for its padding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.embed_batching import EmbedBatcher, check_lengths, embed_request, input_texts
from backends.errors import LoadFailed
from backends.threads import available_cores
from backends.types import EmbeddingRequest, EmbeddingResult

__all__ = ["OnnxEmbeddingsBackend", "Options", "Pooling", "load"]

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {  # sentence-transformers' older config keys, in its concatenation order
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_SPLIT_RATIO = 2
"""Inside a batch, a new forward pass starts where an input is more than this many times longer than
the shortest of the current pass (and longer than ``_SPLIT_MIN`` tokens)."""
_SPLIT_MIN = 16


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    onnx_file: str = "onnx/model.onnx"
    """The ONNX file, relative to the model folder."""
    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    """Most inputs encoded together, from one request or several."""
    batch_wait_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    """How long an input may wait for others to share its batch, when the engine is idle."""
    threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """ONNX Runtime's intra-op threads; None: one per core this process may use."""
    max_seq_length: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Overrides the model's own limit (in tokens)."""
    normalize: bool = True
    """Return unit vectors, as OpenAI's embeddings are."""


def load(files: Path, options: Options) -> OnnxEmbeddingsBackend:
    return OnnxEmbeddingsBackend(files, options)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoadFailed(f"The model folder has no {path.name} (looked for {path.parent.name}/{path.name}).")\
            from None
    except (OSError, ValueError) as e:
        raise LoadFailed(f"{path.name} of the model could not be read ({type(e).__name__}).") from None


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The pooling modes a sentence-transformers Pooling ``config.json`` names, in concatenation order."""
    if "pooling_mode" in config:
        raw = config["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key, False))
        modes = modes or ("mean",)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise LoadFailed(f"The model's pooling mode {mode!r} is not one of {', '.join(POOLING_MODES)}.")
    return modes


class Pooling:
    """Token embeddings → one vector per input, as sentence-transformers' Pooling module computes it."""

    def __init__(self, modes: tuple[str, ...]) -> None:
        self.modes = modes

    def __call__(self, hidden: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """``hidden`` (batch, tokens, dim), right-padded; ``lengths`` the real tokens of each row."""
        n, width, _ = hidden.shape
        positions = np.arange(width)[None, :]
        mask = (positions < lengths[:, None]).astype(np.float32)[..., None]
        rows = np.arange(n)
        parts: list[npt.NDArray[np.float32]] = []
        summed: npt.NDArray[np.float32] | None = None
        for mode in self.modes:
            if mode == "cls":
                parts.append(hidden[:, 0])
            elif mode == "max":
                parts.append(np.where(mask > 0, hidden, -np.inf).max(axis=1).astype(np.float32, copy=False))
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                if summed is None:
                    summed = (hidden * mask).sum(axis=1)
                count = np.maximum(lengths[:, None].astype(np.float32), np.float32(1e-9))
                parts.append((summed / (count if mode == "mean" else np.sqrt(count))).astype(np.float32, copy=False))
            elif mode == "weightedmean":
                weights = mask * (positions.astype(np.float32) + 1)[..., None]
                total = np.maximum(weights.sum(axis=1), np.float32(1e-9))
                parts.append(((hidden * weights).sum(axis=1) / total).astype(np.float32, copy=False))
            else:  # lasttoken
                parts.append(hidden[rows, np.maximum(lengths - 1, 0)])
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


class OnnxEmbeddingsBackend:
    """A :class:`backends.base.EmbeddingBackend` on ONNX Runtime."""

    def __init__(self, files: Path, options: Options) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if not files.is_dir():
            raise LoadFailed("The onnx backend reads a sentence-transformers model folder; point the"
                                   " model's source at the folder, and onnx_file at the ONNX file inside it.")
        self._options = options
        folder = files
        transformer_dir, pooling_dir, self._normalize_module = self._modules(folder)
        self._pooling = Pooling(pooling_modes(_read_json(pooling_dir / "config.json")))
        bert_config_path = transformer_dir / "sentence_bert_config.json"
        bert_config: dict[str, Any] = _read_json(bert_config_path) if bert_config_path.is_file() else {}
        self._lower_case = bool(bert_config.get("do_lower_case", False))

        try:
            self._tokenizer: Any = Tokenizer.from_file(str(transformer_dir / "tokenizer.json"))
        except Exception as e:  # tokenizers raises plain Exceptions for missing and malformed files
            raise LoadFailed(f"The model's tokenizer.json could not be read ({e}).") from None
        padding = self._tokenizer.padding
        self._pad_id = int(padding["pad_id"]) if padding else 0
        self._tokenizer.no_truncation()  # an input over the limit is an error, not a shorter input
        self._tokenizer.no_padding()  # batches are padded here, to their own longest input
        self._vocab = int(self._tokenizer.get_vocab_size(with_added_tokens=True))
        self._max_tokens = options.max_seq_length or self._model_limit(transformer_dir, bert_config)

        onnx_path = folder / options.onnx_file
        if not onnx_path.is_file():
            raise LoadFailed(f"The model folder has no ONNX file {options.onnx_file}.")
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.threads or available_cores()
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would spin between batches, taking the CPU the HTTP server needs.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session: Any = ort.InferenceSession(str(onnx_path), session_options,
                                                      providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's errors have no common base class
            raise LoadFailed(f"ONNX Runtime could not load {options.onnx_file} ({type(e).__name__}).") from None
        self._inputs = self._check_inputs()
        self._output, hidden_size = self._token_output()
        self._dimensions = hidden_size * len(self._pooling.modes)
        self._batcher: EmbedBatcher[npt.NDArray[np.int64]] = EmbedBatcher(
            self._encode, max_batch_size=options.max_batch_size, wait=options.batch_wait_ms / 1000,
            name=folder.name)

    # -- reading the folder -------------------------------------------------------------------------------

    @staticmethod
    def _modules(folder: Path) -> tuple[Path, Path, bool]:
        """The Transformer's folder, the Pooling module's folder, and whether a Normalize module follows."""
        modules = _read_json(folder / "modules.json")
        transformer: Path | None = None
        pooling: Path | None = None
        normalize = False
        for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            path = folder / str(module.get("path", ""))
            if kind == "Transformer" and transformer is None and pooling is None:
                transformer = path
            elif kind == "Pooling" and transformer is not None and pooling is None:
                pooling = path
            elif kind == "Normalize" and pooling is not None:
                normalize = True
            else:
                raise LoadFailed(f"The onnx backend serves Transformer → Pooling (→ Normalize) models;"
                                       f" this one has a {kind or 'nameless'} module where it does not expect one.")
        if transformer is None or pooling is None:
            raise LoadFailed("The model's modules.json names no Transformer and Pooling modules.")
        return transformer, pooling, normalize

    @staticmethod
    def _model_limit(transformer_dir: Path, bert_config: dict[str, Any]) -> int:
        """The most tokens the model reads: sentence-transformers' own setting, else the model's limits."""
        if bert_config.get("max_seq_length"):
            return int(bert_config["max_seq_length"])
        limits: list[int] = []
        for name, key in (("tokenizer_config.json", "model_max_length"), ("config.json", "max_position_embeddings")):
            path = transformer_dir / name
            if path.is_file():
                value = _read_json(path).get(key)
                if isinstance(value, int) and 0 < value < 1_000_000:
                    limits.append(value)
        if not limits:
            raise LoadFailed("The model states no maximum sequence length; set max_seq_length in its options.")
        return min(limits)

    def _check_inputs(self) -> dict[str, type[np.integer[Any]]]:
        """The ONNX inputs this backend feeds, with their integer types."""
        inputs: dict[str, type[np.integer[Any]]] = {}
        for node in self._session.get_inputs():
            if node.name not in _KNOWN_INPUTS:
                raise LoadFailed(f"The ONNX file takes an input {node.name!r}; the onnx backend feeds only"
                                       f" {', '.join(_KNOWN_INPUTS)}.")
            inputs[node.name] = np.int32 if node.type == "tensor(int32)" else np.int64
        if "input_ids" not in inputs:
            raise LoadFailed("The ONNX file takes no input_ids.")
        return inputs

    def _token_output(self) -> tuple[str, int]:
        """The output holding the token embeddings, and their size."""
        outputs = self._session.get_outputs()
        by_name = {node.name: node for node in outputs}
        chosen = next((by_name[n] for n in ("token_embeddings", "last_hidden_state") if n in by_name), None)
        if chosen is None:
            chosen = next((node for node in outputs if len(node.shape) == 3), None)
        if chosen is None or len(chosen.shape) != 3:
            raise LoadFailed("The ONNX file has no token-embeddings output (batch, tokens, hidden).")
        hidden = chosen.shape[2]
        if not isinstance(hidden, int):  # a symbolic size: ask the model
            probe = np.array([[self._pad_id]], dtype=np.int64)
            hidden = int(self._run(probe, np.ones_like(probe), chosen.name).shape[2])
        return str(chosen.name), int(hidden)

    # -- serving ------------------------------------------------------------------------------------------

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def _prepare(self, request: EmbeddingRequest) -> tuple[list[npt.NDArray[np.int64]], int]:
        """Each input's token ids (specials included) and their count; an input over the model's limit is an
        error."""
        # As the sentence-transformers backend does: token-id inputs are read as the text they spell.
        texts = input_texts(request.inputs, self._vocab,
                            lambda ids: self._tokenizer.decode(ids, skip_special_tokens=True))
        if self._lower_case:
            texts = [t.lower() for t in texts]
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        check_lengths((len(row) for row in ids), self._max_tokens)
        return ids, sum(len(row) for row in ids)

    def _run(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64], output: str) -> npt.NDArray[np.float32]:
        feed: dict[str, npt.NDArray[Any]] = {}
        for name, dtype in self._inputs.items():
            if name == "input_ids":
                value: npt.NDArray[Any] = ids
            elif name == "attention_mask":
                value = mask
            elif name == "token_type_ids":
                value = np.zeros_like(ids)
            else:  # position_ids
                value = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
            feed[name] = np.ascontiguousarray(value, dtype=dtype)
        hidden: npt.NDArray[np.float32] = self._session.run([output], feed)[0]
        return hidden

    def _encode(self, batch: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        """One batch, on the batcher's thread: sorted by length, run in passes of similar lengths."""
        lengths = np.array([len(ids) for ids in batch], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(batch), self._dimensions), dtype=np.float32)
        start = 0
        while start < len(order):
            shortest = int(lengths[order[start]])
            stop = start + 1
            while stop < len(order) and (lengths[order[stop]] <= _SPLIT_RATIO * shortest
                                         or lengths[order[stop]] <= _SPLIT_MIN):
                stop += 1
            rows = order[start:stop]
            width = int(lengths[rows].max())
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                n = lengths[r]
                ids[j, :n] = batch[r]
                mask[j, :n] = 1
            out[rows] = self._pooling(self._run(ids, mask, self._output), lengths[rows])
            start = stop
        if self._normalize_module:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def batch_sizes(self) -> dict[int, int]:
        return self._batcher.batch_sizes()

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        return await embed_request(request, dimensions=self._dimensions, normalize=self._options.normalize,
                                   batcher=self._batcher, work=lambda: self._prepare(request))

    def close(self) -> None:
        self._batcher.close()
        self._session = None
