"""The voice-agent frameworks against a real gateway, with no network and no room.

pipecat's services and LiveKit Agents' plugins get only the gateway's address on 127.0.0.1 (through
:class:`RecordingProxy` for chat, so a test can show what the framework sent after a tool ran). Their
telemetry is switched off before they are imported, and :func:`no_network` fails a test that tries to
reach any host but 127.0.0.1: nothing may fetch a model or report usage.
"""

from __future__ import annotations

import io
import os
import re
import sys
import wave
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the gateway fixture and helpers

from recording import RecordingProxy, install_network_guard, no_network, proxy  # noqa: F401 (fixtures)

os.environ.update({
    "OPENAI_API_KEY": "sk-test",
    "DEEPGRAM_API_KEY": "test",
    "OTEL_SDK_DISABLED": "true",
    "PIPECAT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
})
for _name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
    os.environ.pop(_name, None)

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


def transcribe_pcm(gateway: Any, pcm: bytes, rate: int) -> str:
    """What the gateway's speech-to-text hears in 16-bit mono PCM."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    result = gateway.openai().audio.transcriptions.create(model="whisper-1", file=("speech.wav", buffer.getvalue()))
    return str(result.text)


def check_speech(gateway: Any, pcm: bytes, rate: int, text: str) -> None:
    """16-bit mono PCM a framework produced is speech of a sensible length that transcribes back to ``text``."""
    samples = np.frombuffer(pcm, dtype="<i2")
    seconds = len(samples) / rate
    assert 1.0 < seconds < 8.0, seconds
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300  # speech, not silence
    heard = transcribe_pcm(gateway, pcm, rate)
    assert similarity(text, heard) > 0.8, heard
