"""Text-to-speech backend on Piper (ONNX Runtime).

Piper synthesises a sentence at a time; each sentence is handed on as soon as it is ready, so the
first audio leaves while the rest of the text is still being spoken.

Voices: a Piper model is one voice (or several speakers). ``options.voices`` names the voices
requests may ask for (OpenAI's ``alloy``, ``nova``, … or names of your own), each mapped to a speaker
of the model and a base speed. The model's own name (``en_US-joe-medium``) is always a voice too.
An unknown voice is an error, never a silent substitute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.errors import InvalidRequest, ModelUnavailable
from backends.threads import iterate_in_thread
from backends.types import SpeechRequest

__all__ = ["Options", "PiperBackend", "VoiceOptions", "load"]


class VoiceOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    speaker: int | str | None = None
    """Speaker id or name in a multi-speaker model; None is the model's default speaker."""
    speed: Annotated[float, msgspec.Meta(gt=0.0, le=4.0)] = 1.0
    """Base speed of this voice; a request's ``speed`` multiplies it."""
    noise_scale: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    """Variation in the voice's sound; None keeps the model's own. 0 makes the voice repeatable."""
    noise_w_scale: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    """Variation in phoneme durations; None keeps the model's own."""


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    voices: dict[str, VoiceOptions] = msgspec.field(default_factory=dict)
    use_cuda: bool = False


def load(files: Path, options: Options) -> PiperBackend:
    return PiperBackend(files, options)


def _find_onnx(files: Path) -> Path:
    if files.is_file():
        return files
    found = sorted(files.rglob("*.onnx"))
    if not found:
        raise ModelUnavailable("no Piper .onnx voice in the model's files")
    return found[0]


class PiperBackend:
    """A :class:`backends.base.SpeechBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        from piper import PiperVoice

        model = _find_onnx(files)
        config = model.with_name(model.name + ".json")
        if not config.exists():
            raise ModelUnavailable(f"the Piper voice {model.stem} has no {config.name} beside it")
        try:
            self._voice: Any = PiperVoice.load(model, config_path=config, use_cuda=options.use_cuda)
        except Exception as e:  # onnxruntime and json errors: a broken voice file
            raise ModelUnavailable(f"Piper could not load the voice {model.stem} ({type(e).__name__})") from None
        speakers: dict[str, int] = dict(self._voice.config.speaker_id_map or {})
        self._speakers: dict[str, tuple[int | None, VoiceOptions]] = {model.stem: (None, VoiceOptions())}
        for name, voice in options.voices.items():
            speaker = voice.speaker
            if isinstance(speaker, str):
                if speaker not in speakers:
                    raise ModelUnavailable(f"voice '{name}': the model has no speaker '{speaker}'")
                speaker = speakers[speaker]
            elif speaker is not None and not 0 <= speaker < max(1, self._voice.config.num_speakers):
                raise ModelUnavailable(f"voice '{name}': speaker {speaker} is out of range")
            self._speakers[name] = (speaker, voice)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"piper:{model.stem}")

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    @property
    def voices(self) -> list[str]:
        return list(self._speakers)

    def _run(self, request: SpeechRequest) -> Iterator[npt.NDArray[np.float32]]:
        from piper import SynthesisConfig

        speaker, voice = self._speakers[request.voice]
        length_scale = float(self._voice.config.length_scale) / (voice.speed * request.speed)
        config = SynthesisConfig(speaker_id=speaker, length_scale=length_scale, noise_scale=voice.noise_scale,
                                 noise_w_scale=voice.noise_w_scale)
        text = request.text.replace("\x00", "")  # unspeakable, and the phonemizer reads C strings
        for chunk in self._voice.synthesize(text, syn_config=config):
            yield np.asarray(chunk.audio_float_array, dtype=np.float32)

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[npt.NDArray[np.float32]]:
        if request.voice not in self._speakers:
            raise InvalidRequest(f"Unknown voice '{request.voice}'. This model's voices: "
                                 f"{', '.join(self.voices)}.", param="voice")
        async for audio in iterate_in_thread(self._executor, lambda: self._run(request)):
            yield audio

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
