"""What the framework tests say to the gateway and how they judge what it heard (shared by the client
environments' conftests: ``from spoken import ...``)."""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Any

import httpx
import pytest

__all__ = ["SPOKEN", "similarity", "speech_16k"]

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
