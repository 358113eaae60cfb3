"""The model and its context over llama.cpp's ctypes API: loading, tokens, pieces, the chat template.

Everything here is a llama.cpp call and runs on the scheduler's thread (see
:mod:`backends.llama.scheduler`); ``llama_cpp`` is imported only when an :class:`Engine` is built.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backends.errors import LoadFailed
from backends.llama.options import Options
from backends.llama_mtmd import Projector
from backends.threads import available_cores

__all__ = ["Engine", "find_gguf", "projector_path"]

log = logging.getLogger("syn4pse.llama_cpp")


def find_gguf(files: Path) -> Path:
    """The model's GGUF file: ``files`` itself, or the first one in it that is not a projector."""
    if files.is_file():
        return files
    candidates = sorted(p for p in files.rglob("*.gguf") if "mmproj" not in p.name.lower())
    if not candidates:
        raise LoadFailed(f"no .gguf file found in the model's files ({files.name})")
    return candidates[0]


def projector_path(files: Path, mmproj: str) -> Path:
    """The vision projector ``options.mmproj`` names, relative to the model's files unless absolute."""
    path = Path(mmproj).expanduser()
    if not path.is_absolute():
        path = (files if files.is_dir() else files.parent) / path
    if not path.is_file():
        raise LoadFailed(f"the vision projector file {path.name} was not found")
    return path


class Engine:
    """One GGUF model, a context of ``parallel`` sequences of ``n_ctx`` each, and a decode batch."""

    def __init__(self, path: Path, options: Options, mmproj: Path | None) -> None:
        import llama_cpp as lc

        self.lc: Any = lc
        self.options = options
        lc.llama_backend_init()
        # llama-cpp-python routes llama.cpp's log through this logger: only errors, unless debugging.
        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR)

        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers if options.n_gpu_layers >= 0 else 999
        model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:  # llama.cpp's log says why (truncated, not GGUF, an unknown architecture)
            log.error("llama.cpp could not load %s", path)
            raise LoadFailed(f"llama.cpp could not load the model file {path.name} (truncated, not a GGUF"
                             " file, or a model this build does not know)")
        self.model = model
        self.vocab = lc.llama_model_get_vocab(model)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self.vocab)

        threads = options.n_threads or available_cores()
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = options.n_ctx * options.parallel
        cparams.n_batch = options.n_batch
        cparams.n_ubatch = min(options.n_batch, 512)
        cparams.n_seq_max = options.parallel
        cparams.n_threads = threads
        cparams.n_threads_batch = options.n_threads_batch or threads
        cparams.kv_unified = False
        cparams.no_perf = True
        cparams.flash_attn_type = {None: lc.LLAMA_FLASH_ATTN_TYPE_AUTO, True: lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                   False: lc.LLAMA_FLASH_ATTN_TYPE_DISABLED}[options.flash_attn]
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            lc.llama_model_free(model)
            raise LoadFailed("llama.cpp could not create a context (out of memory?)")
        self.ctx = ctx
        self.memory = lc.llama_get_memory(ctx)
        self.n_ctx_seq: int = int(lc.llama_n_ctx(ctx)) // options.parallel
        self.batch = lc.llama_batch_init(options.n_batch, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)

        self.bos_token: int = lc.llama_vocab_bos(self.vocab)
        self.bos_text = self._special_text(self.bos_token)
        self.eos_text = self._special_text(lc.llama_vocab_eos(self.vocab))
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        self.template: str | None = options.chat_template or self._builtin_template()
        """The Jinja chat template: the options' own, else the one the GGUF file carries (None: neither)."""

        self.projector: Projector | None = None
        if mmproj is not None:
            try:
                self.projector = Projector(model, mmproj, n_threads=threads, use_gpu=options.n_gpu_layers != 0)
            except BaseException:
                self.free()
                raise

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode(errors="replace")

    def _builtin_template(self) -> str | None:
        raw = self.lc.llama_model_chat_template(self.model, None)
        return raw.decode() if raw else None

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (special tokens as their text only when ``special``)."""
        n = self.lc.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        """The tokens of ``text``, special tokens parsed; with the BOS token first when ``add_bos``."""
        data = text.encode()
        size = len(data) + 8
        tokens = (self.lc.llama_token * size)()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), tokens, size, add_bos, True)
        if n < 0:
            size = -n
            tokens = (self.lc.llama_token * size)()
            n = self.lc.llama_tokenize(self.vocab, data, len(data), tokens, size, add_bos, True)
        return list(tokens[:n])

    def detokenize(self, tokens: tuple[int, ...]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode(errors="replace")

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends a generation (end of turn, end of text)."""
        return bool(self.lc.llama_vocab_is_eog(self.vocab, token))

    def grammar_sampler(self, grammar: str) -> Any:
        """A sampler holding to the GBNF ``grammar`` (rule ``root``), or a null pointer if llama.cpp
        cannot build it."""
        return self.lc.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")

    def accepts_grammar(self, grammar: str) -> bool:
        """Whether llama.cpp can build ``grammar`` against this vocabulary."""
        sampler = self.grammar_sampler(grammar)
        if not sampler:
            return False
        self.lc.llama_sampler_free(sampler)
        return True

    def decode(self, n_tokens: int) -> int:
        """Run the first ``n_tokens`` of :attr:`batch` through the model: llama.cpp's return code (0: done,
        1: no room in the KV cache for them, else a failure that leaves the context's state unknown)."""
        self.batch.n_tokens = n_tokens
        return int(self.lc.llama_decode(self.ctx, self.batch))

    def logits(self, index: int) -> npt.NDArray[np.float32]:
        """The logits of the batch's ``index``-th output (-1: the last), valid until the next decode."""
        pointer = self.lc.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def forget(self, slot: int, start: int = -1) -> bool:
        """Drop sequence ``slot``'s KV cells from position ``start`` on (-1: all of them)."""
        return bool(self.lc.llama_memory_seq_rm(self.memory, slot, start, -1))

    def copy_cells(self, source: int, target: int) -> None:
        """Give sequence ``target`` every KV cell of sequence ``source``."""
        self.lc.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def free(self) -> None:
        lc = self.lc
        if self.projector is not None:
            self.projector.close()
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)
