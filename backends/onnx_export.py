"""Make the folder the ``onnx`` embeddings backend serves, from a sentence-transformers folder without ONNX.

    python -m backends.onnx_export SRC DEST [--onnx-file onnx/model.onnx]

``DEST`` gets a link to every file and folder of ``SRC`` (the configs, the tokenizer) and the
transformer exported to ``DEST/onnx/model.onnx``: inputs ``input_ids``, ``attention_mask`` (and
``token_type_ids`` when the model takes them), output ``last_hidden_state``, batch and sequence length
dynamic. Pooling and normalisation are not in the graph: the backend reads them from the folder, as
sentence-transformers does.

The server never imports this module. It needs torch, transformers and the ``onnx`` package (torch's
exporter writes the file with it); the tests and the embeddings benchmark use it to make the ONNX file
of the starter model, which its package does not ship.
"""

from __future__ import annotations

import argparse
import inspect
import warnings
from pathlib import Path
from typing import Any

__all__ = ["export", "main"]

OPSET = 17


def _link_tree(src: Path, dest: Path, skip: str) -> None:
    """Link each entry of ``src`` into ``dest`` (not ``skip``, the top folder the export goes to)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name == skip:
            continue
        link = dest / entry.name
        if link.is_symlink() or link.exists():
            continue
        link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


def export(src: Path, dest: Path, onnx_file: str = "onnx/model.onnx") -> Path:
    """Export the transformer of the sentence-transformers folder ``src`` into ``dest``; returns the file.

    Blocking, and takes seconds: it loads the model with torch.
    """
    import torch
    from transformers import AutoModel

    target = dest / onnx_file
    _link_tree(src, dest, Path(onnx_file).parts[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    model: Any = AutoModel.from_pretrained(str(src), local_files_only=True).eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class TokenEmbeddings(torch.nn.Module):
        """The transformer called by keyword, returning only its token embeddings."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    # Two rows of different lengths, so padding and the attention mask are traced as they are served.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    ids = ids.clamp(max=int(model.config.vocab_size) - 1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    example = (ids, mask, torch.zeros_like(ids))[: len(names)]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    tmp = target.with_suffix(".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns of Python branches it freezes; for an encoder they do not depend on the input
        # (no cache, a mask always given), and the backend's tests compare the result with torch's.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(TokenEmbeddings().eval(), example, str(tmp), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=OPSET,
                          dynamo=False)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("src", type=Path, help="a sentence-transformers model folder")
    parser.add_argument("dest", type=Path, help="the folder to make (links to SRC's files, and the ONNX file)")
    parser.add_argument("--onnx-file", default="onnx/model.onnx", help="where the ONNX file goes, inside DEST")
    args = parser.parse_args(argv)
    print(export(args.src, args.dest, args.onnx_file))


if __name__ == "__main__":
    main()
