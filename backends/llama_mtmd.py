"""Images for llama.cpp models that see: a vision projector ("mmproj") over ``llama_cpp.mtmd_cpp``.

The LLM engine's scheduler thread owns a :class:`Projector` beside its model and context; every call
here is a llama.cpp call and must happen on that thread. The projector only ever receives image
bytes the gateway has already fetched and checked: nothing here opens a file or a URL a client named.

Images are decoded by :func:`backends.images.decode_rgb` (mtmd's own decoder knows no webp), and
their place in the prompt is marked by :data:`backends.types.IMAGE_MARKER`, which is stripped from
every caller's text before it reaches a backend, so a caller can never add or move an image by typing a
marker.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from backends.errors import BadImage, EngineFailure, ImageProblem, LoadFailed, Rejected
from backends.images import decode_rgb
from backends.types import IMAGE_MARKER, ImageInput

__all__ = ["MediaPrompt", "Projector"]

log = logging.getLogger("syn4pse.llama_mtmd")

_CHUNK_IMAGE = 1


def _quiet_logs() -> None:
    """Route mtmd's and clip's log lines through llama-cpp-python's own callback.

    That callback prints only what the ``llama-cpp-python`` logger's level lets through (the LLM
    engine sets it), and its module keeps the ctypes callback alive for the life of the process.
    """
    import llama_cpp._logger as lc_logger
    from llama_cpp import mtmd_cpp

    mtmd_cpp.mtmd_log_set(lc_logger.llama_log_callback, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(lc_logger.llama_log_callback, ctypes.c_void_p(0))


class MediaPrompt:
    """A prompt tokenised with its images, ready to be evaluated into one sequence of the context.

    Holds mtmd's chunks (text tokens and preprocessed images). :meth:`free` releases them once the
    prompt is evaluated; a prompt that is dropped unevaluated (its client went away) is freed when it
    is garbage-collected, which is safe on any thread: the chunks are plain memory.
    """

    def __init__(self, projector: Projector, chunks: Any) -> None:
        from llama_cpp import mtmd_cpp

        self._projector = projector
        self._chunks: Any = chunks
        self._release = weakref.finalize(self, mtmd_cpp.mtmd_input_chunks_free, chunks)
        self.n_tokens: int = int(mtmd_cpp.mtmd_helper_get_n_tokens(chunks))
        """Every prompt token, image tokens included: the prompt tokens a reply is billed for, and the
        KV cells the prompt takes."""
        self.n_pos: int = int(mtmd_cpp.mtmd_helper_get_n_pos(chunks))
        """Positions the prompt takes; differs from :attr:`n_tokens` only for M-RoPE models."""
        self.n_chunks: int = int(mtmd_cpp.mtmd_input_chunks_size(chunks))
        """Runs of text and images, each evaluated by one step of :meth:`steps`."""
        image_tokens = []
        for i in range(self.n_chunks):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == _CHUNK_IMAGE:
                image_tokens.append(int(mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)))
        self.image_tokens: tuple[int, ...] = tuple(image_tokens)
        """Tokens each image takes, in order."""

    def _live_chunks(self) -> Any:
        if self._chunks is None:
            raise EngineFailure("The prompt was already freed.")
        if self._projector.handle is None:
            raise EngineFailure("The vision projector is closed.")
        return self._chunks

    def evaluate(self, ctx: Any, seq_id: int, n_past: int, n_batch: int) -> int:
        """Decode the whole prompt into sequence ``seq_id`` from position ``n_past``; the new n_past.

        Text is decoded ``n_batch`` tokens at a time (at most the context's own n_batch); each image is
        encoded by the projector and its embeddings decoded. Afterwards the logits of the prompt's last
        token are at ``llama_get_logits_ith(ctx, -1)`` (``llama_sampler_sample(smpl, ctx, -1)`` samples
        from them) until the next ``llama_decode``. Other sequences wait meanwhile: see :meth:`steps`.
        """
        import llama_cpp as lc
        from llama_cpp import mtmd_cpp

        chunks = self._live_chunks()
        new_n_past = lc.llama_pos(n_past)  # mtmd counts on from the value it is given
        rc = mtmd_cpp.mtmd_helper_eval_chunks(self._projector.handle, ctx, chunks, n_past, seq_id, n_batch, True,
                                              ctypes.byref(new_n_past))
        if rc != 0:
            raise EngineFailure(f"llama.cpp failed to evaluate the prompt with its images (returned {rc}).")
        return int(new_n_past.value)

    def steps(self, ctx: Any, seq_id: int, n_past: int, n_batch: int) -> Iterator[int]:
        """:meth:`evaluate`, one run of text or one image per ``next()``, yielding the n_past so far.

        A scheduler can take one step between two decode steps of the other sequences, so a long
        prompt with images delays them by one chunk at a time. After the last step the logits are as
        after :meth:`evaluate`; a ``llama_decode`` between two steps is fine, but one after the last
        step replaces the logits, so sample first.
        """
        import llama_cpp as lc
        from llama_cpp import mtmd_cpp

        for i in range(self.n_chunks):
            chunk = mtmd_cpp.mtmd_input_chunks_get(self._live_chunks(), i)
            new_n_past = lc.llama_pos(n_past)  # mtmd counts on from the value it is given
            rc = mtmd_cpp.mtmd_helper_eval_chunk_single(self._projector.handle, ctx, chunk, n_past, seq_id, n_batch,
                                                        i == self.n_chunks - 1, ctypes.byref(new_n_past))
            if rc != 0:
                raise EngineFailure(f"llama.cpp failed to evaluate the prompt with its images (returned {rc}).")
            n_past = int(new_n_past.value)
            yield n_past

    def free(self) -> None:
        """Release the chunks now (idempotent)."""
        self._chunks = None
        self._release()

    def __enter__(self) -> MediaPrompt:
        return self

    def __exit__(self, *_: object) -> None:
        self.free()


class Projector:
    """A vision projector loaded for one llama.cpp text model (whose ``n_embd`` it must match)."""

    def __init__(self, model: Any, path: Path, *, n_threads: int, use_gpu: bool = False,
                 max_pixels: int | None = None) -> None:
        """Load the projector now, so a bad file fails when the model loads, not at the first chat.

        ``model`` is the ``llama_model`` pointer the engine loaded the text model into.
        """
        from llama_cpp import mtmd_cpp

        _quiet_logs()
        self.marker = IMAGE_MARKER
        """Stands for one image in the text given to :meth:`tokenize`."""
        self.max_pixels = max_pixels
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        # Kept referenced: mtmd reads the marker while it builds its context.
        self._marker_bytes = IMAGE_MARKER.encode()
        params.media_marker = self._marker_bytes
        handle = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model, params)
        if not handle:
            raise LoadFailed(f"llama.cpp could not load the vision projector {path.name} (not a projector"
                                   " for this model?)")
        self.handle: Any = handle
        if not mtmd_cpp.mtmd_support_vision(handle):
            self.close()
            raise LoadFailed(f"The projector {path.name} has no vision encoder.")

    def _bitmap(self, image: bytes | ImageInput, index: int) -> Any:
        from llama_cpp import mtmd_cpp

        data = image.data if isinstance(image, ImageInput) else image
        where = image.where if isinstance(image, ImageInput) else None
        try:
            rgb = decode_rgb(data, max_pixels=self.max_pixels)
        except BadImage as e:
            if where:
                raise BadImage(e.message, e.problem, place=where) from None
            raise BadImage(f"image {index + 1}: {e.message}", e.problem) from None
        width, height = rgb.size
        pixels = rgb.tobytes()
        buffer = (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
        bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, buffer)
        if not bitmap:
            raise EngineFailure("llama.cpp could not take the image.")
        return bitmap

    def tokenize(self, text: str, images: Sequence[bytes | ImageInput], *, add_special: bool = False) -> MediaPrompt:
        """Tokenise ``text`` (special tokens parsed) with an image at each :attr:`marker`, in order.

        ``add_special`` adds the model's BOS token (as ``llama_tokenize`` does). Raises
        :class:`BadImage` if an image cannot be decoded or prepared, :class:`Rejected` if the markers do
        not match the images (a chat template that repeats or drops a message's content).
        """
        from llama_cpp import mtmd_cpp

        if self.handle is None:
            raise EngineFailure("The vision projector is closed.")
        markers = text.count(self.marker)
        if markers != len(images):
            raise Rejected(f"The prompt has {markers} image places for {len(images)} images.")
        bitmaps: list[Any] = []
        try:
            for i, image in enumerate(images):
                bitmaps.append(self._bitmap(image, i))
            raw = text.encode()
            chunks = mtmd_cpp.mtmd_input_chunks_init()
            if not chunks:
                raise EngineFailure("llama.cpp could not allocate the prompt.")
            source = mtmd_cpp.mtmd_input_text(text=raw, text_len=len(raw), add_special=add_special,
                                              parse_special=True)
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            rc = mtmd_cpp.mtmd_tokenize(self.handle, chunks, ctypes.byref(source), array, len(bitmaps))
            if rc != 0:
                mtmd_cpp.mtmd_input_chunks_free(chunks)
                if rc == 2:
                    raise BadImage("An image could not be prepared for this model.", ImageProblem.UNREADABLE)
                raise EngineFailure(f"llama.cpp could not tokenise the prompt with its images (returned {rc}).")
            prompt = MediaPrompt(self, chunks)
            log.debug("prompt of %d tokens, %s for images", prompt.n_tokens, prompt.image_tokens)
            return prompt
        finally:
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    def close(self) -> None:
        """Free the projector (idempotent); prompts tokenised with it must be freed first."""
        if self.handle is not None:
            from llama_cpp import mtmd_cpp

            mtmd_cpp.mtmd_free(self.handle)
            self.handle = None
