"""Text-to-speech backend on Piper (ONNX Runtime).

Piper synthesises a sentence at a time; each sentence is handed on as soon as it is ready, so the
first audio leaves while the rest of the text is still being spoken.

Voices: a Piper model is one voice (or several speakers). ``options.voices`` names the voices
requests may ask for (OpenAI's ``alloy``, ``nova``, … or names of your own), each mapped to a speaker
of the model and a base speed. The model's own name (``en_US-joe-medium``) is always a voice too.
An unknown voice is an error, never a silent substitute.

Several requests are spoken at once: the model is loaded ``instances`` times (each an ONNX Runtime
session with ``cpu_threads`` threads of its own, chosen so that instances × threads stay within the
cores) and each request borrows one copy for its whole synthesis. Each copy costs memory (about 150 to
200 MB for a medium voice once it has spoken), so the default is two.
"""

from __future__ import annotations

import json
import queue
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.errors import LoadFailed, UnknownVoice
from backends.threads import EngineLoad, Occupancy, iterate_in_thread, share_cores
from backends.types import SpeechRequest

__all__ = ["Options", "PiperBackend", "VoiceOptions", "configured_voices", "load"]

MOST_DEFAULT_INSTANCES = 2
"""Copies of the voice when ``instances`` is not set (fewer on a one-core machine): two requests
overlap without a third copy's memory."""


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
    instances: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None
    """Copies of the voice in memory: requests spoken at the same time. None: one per core, at most 2."""
    cpu_threads: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    """ONNX Runtime threads of each copy. 0: the cores shared out among the copies (at least one each)."""


def load(files: Path, options: Options) -> PiperBackend:
    return PiperBackend(files, options)


def configured_voices(options: Options, model_file: str | None) -> list[str]:
    """The voices of a configured model, without loading it: ``options.voices``, then the model's own
    voice when its ``.onnx`` file is named (else it is known only once the files are there)."""
    own = [Path(model_file).stem] if model_file else []
    return [*options.voices, *own]


def _find_onnx(files: Path) -> Path:
    if files.is_file():
        return files
    found = sorted(files.rglob("*.onnx"))
    if not found:
        raise LoadFailed("no Piper .onnx voice in the model's files")
    return found[0]


def _load_copies(model: Path, config_path: Path, options: Options) -> list[Any]:
    """``instances`` PiperVoices sharing one parsed config, each with an ONNX Runtime session of its own."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    instances, threads = share_cores(options.instances, options.cpu_threads, most_parallel=MOST_DEFAULT_INSTANCES)
    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    providers: list[Any] = ([("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})]
                            if options.use_cuda else ["CPUExecutionProvider"])
    copies = []
    for _ in range(instances):
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = threads  # 1: the work runs on the calling thread only
        session_options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(model), sess_options=session_options, providers=providers)
        copies.append(PiperVoice(config=config, session=session))
    return copies


class PiperBackend:
    """A :class:`backends.base.SpeechBackend`."""

    def __init__(self, files: Path, options: Options) -> None:
        model = _find_onnx(files)
        config = model.with_name(model.name + ".json")
        if not config.exists():
            raise LoadFailed(f"the Piper voice {model.stem} has no {config.name} beside it")
        try:
            copies = _load_copies(model, config, options)
        except Exception as e:  # onnxruntime and json errors: a broken voice file
            raise LoadFailed(f"Piper could not load the voice {model.stem} ({type(e).__name__})") from None
        self._voice: Any = copies[0]
        """The first copy: the voice's config, read by every request."""
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for copy in copies:
            self._free.put(copy)
        speakers: dict[str, int] = dict(self._voice.config.speaker_id_map or {})
        self._own_voice = model.stem
        self._speakers: dict[str, tuple[int | None, VoiceOptions]] = {model.stem: (None, VoiceOptions())}
        for name, voice in options.voices.items():
            speaker = voice.speaker
            if isinstance(speaker, str):
                if speaker not in speakers:
                    raise LoadFailed(f"voice '{name}': the model has no speaker '{speaker}'")
                speaker = speakers[speaker]
            elif speaker is not None and not 0 <= speaker < max(1, self._voice.config.num_speakers):
                raise LoadFailed(f"voice '{name}': speaker {speaker} is out of range")
            self._speakers[name] = (speaker, voice)
        self._occupancy = Occupancy(len(copies))
        # As many threads as copies: a running request always finds a free copy; the rest wait their turn.
        self._executor = ThreadPoolExecutor(max_workers=len(copies), thread_name_prefix=f"piper:{model.stem}")

    def engine_load(self) -> EngineLoad:
        return self._occupancy.snapshot()

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    @property
    def voices(self) -> list[str]:
        return list(self._speakers)

    @property
    def default_voice(self) -> str:
        """The voice named after the model's file, its default speaker at its own pace."""
        return self._own_voice

    def _run(self, request: SpeechRequest) -> Iterator[npt.NDArray[np.float32]]:
        from piper import SynthesisConfig

        speaker, voice = self._speakers[request.voice]
        length_scale = float(self._voice.config.length_scale) / (voice.speed * request.speed)
        config = SynthesisConfig(speaker_id=speaker, length_scale=length_scale, noise_scale=voice.noise_scale,
                                 noise_w_scale=voice.noise_w_scale)
        text = request.text.replace("\x00", "")  # unspeakable, and the phonemizer reads C strings
        copy = self._free.get_nowait()  # one thread per copy: never empty here
        try:
            with self._occupancy.hold():
                for chunk in copy.synthesize(text, syn_config=config):
                    yield np.asarray(chunk.audio_float_array, dtype=np.float32)
        finally:
            self._free.put(copy)

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[npt.NDArray[np.float32]]:
        if request.voice not in self._speakers:
            raise UnknownVoice(request.voice, self.voices)
        async for audio in iterate_in_thread(self._executor, lambda: self._run(request)):
            yield audio

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
