"""Deepgram's Python SDK v3 against a real gateway, with no network.

The SDK gets only the gateway's address on 127.0.0.1 (``DeepgramClientOptions(url=...)``), and
:func:`no_network` fails a test that tries to reach any host but 127.0.0.1. The gateway is the shared
``gateway`` fixture of tests/conftest.py, started from the project's environment (``SYN4PSE_SERVER_PYTHON``).
"""

from __future__ import annotations

import os
import re
import sys
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the gateway fixture and helpers

from recording import install_network_guard, no_network  # noqa: F401 (fixture)

os.environ["DEEPGRAM_API_KEY"] = "test"
os.environ.pop("DEEPGRAM_HOST", None)

install_network_guard()


SPOKEN = "The morning was cold and bright. A small boat moved across the calm water."


def similarity(reference: str, heard: str) -> float:
    """How close two texts are, word by word (1.0: the same words), case and punctuation aside."""
    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()

    return SequenceMatcher(None, words(reference), words(heard)).ratio()


@pytest.fixture(scope="session")
def speech_16k(gateway: Any) -> bytes:
    """:data:`SPOKEN` in the gateway's own voice: 16 kHz s16le, with silence around it as a microphone
    would hear it (Deepgram's /v1/speak, headerless)."""
    response = httpx.post(f"{gateway.url}/v1/speak", params={"model": "aura-2-thalia-en", "encoding": "linear16",
                                                             "sample_rate": "16000", "container": "none"},
                          json={"text": SPOKEN}, headers={"Authorization": "Token test"}, timeout=120)
    assert response.status_code == 200, response.text
    return bytes(16000) + response.content + bytes(2 * 16000 * 2)
