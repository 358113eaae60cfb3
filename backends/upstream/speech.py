"""Text to speech by an upstream server, streamed: its raw 16-bit audio is handed on as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from backends.types import SpeechRequest
from backends.upstream.client import UpstreamModel
from backends.upstream.options import Options

__all__ = ["Options", "UpstreamSpeech", "configured_voices", "load"]


class UpstreamSpeech(UpstreamModel):
    @property
    def sample_rate(self) -> int:
        return self.options.sample_rate

    @property
    def voices(self) -> list[str]:
        return list(self.options.voices)

    @property
    def default_voice(self) -> str:
        return self.options.default_voice or self.options.voices[0]

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[npt.NDArray[np.float32]]:
        body = self.wire.speech_body(self.options.model, request)
        held = b""
        async for data in self.upstream.stream(self.wire.speech_path, body=body, events=False):
            data = held + data
            whole = len(data) - len(data) % 2
            held = data[whole:]
            if whole:
                yield np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0


def configured_voices(options: Options, model_file: str | None) -> list[str]:
    return list(options.voices)


def load(files: Path | None, options: Options) -> UpstreamSpeech:
    return UpstreamSpeech(options)
