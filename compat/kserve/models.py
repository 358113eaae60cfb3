"""Each model type's tensors over the Open Inference Protocol, and the answers that describe models.

The names are those of Triton's vLLM backend where it has them (``text_input``, ``stream``,
``sampling_parameters``, ``exclude_input_in_output``, ``text_output``, ``finish_reason``, the token
counts), so a client written for it works unchanged:

    llm          text_input | messages BYTES [1], stream BOOL [1], sampling_parameters BYTES [1] (JSON),
                 exclude_input_in_output BOOL [1]
                 → text_output BYTES [1]; on request: finish_reason BYTES [1],
                   num_input_tokens UINT32 [1], num_output_tokens UINT32 [1]
    embeddings   text BYTES [N] → embedding FP32 [N, D]
    stt          audio BYTES [1] (an encoded file), language BYTES [1] → text BYTES [1]
    tts          text BYTES [1], voice BYTES [1] → audio BYTES [1] (a WAV file)
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.types import ModelType
from compat.kserve.inference_pb2 import ModelMetadataResponse, RepositoryIndexResponse

__all__ = ["SIGNATURES", "VERSION", "Signature", "index_entry", "model_metadata"]

VERSION = "1"
"""The one version of every model: the protocol names versions, a configured model has one."""


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: dict[str, tuple[str, tuple[int, ...]]]
    """Each input → (datatype, shape; -1 where the size varies)."""
    outputs: dict[str, tuple[str, tuple[int, ...]]]
    defaults: tuple[str, ...]
    """The outputs sent when a request names none."""


_TEXT = ("BYTES", (1,))
_FLAG = ("BOOL", (1,))
_COUNT = ("UINT32", (1,))

SIGNATURES: dict[ModelType, Signature] = {
    ModelType.LLM: Signature(
        inputs={"text_input": _TEXT, "messages": _TEXT, "stream": _FLAG, "sampling_parameters": _TEXT,
                "exclude_input_in_output": _FLAG},
        outputs={"text_output": _TEXT, "finish_reason": _TEXT, "num_input_tokens": _COUNT,
                 "num_output_tokens": _COUNT},
        defaults=("text_output",)),
    ModelType.EMBEDDINGS: Signature(inputs={"text": ("BYTES", (-1,))}, outputs={"embedding": ("FP32", (-1, -1))},
                                    defaults=("embedding",)),
    ModelType.STT: Signature(inputs={"audio": _TEXT, "language": _TEXT}, outputs={"text": _TEXT},
                             defaults=("text",)),
    ModelType.TTS: Signature(inputs={"text": _TEXT, "voice": _TEXT}, outputs={"audio": _TEXT}, defaults=("audio",)),
}


def _tensors(table: dict[str, tuple[str, tuple[int, ...]]]) -> list[ModelMetadataResponse.TensorMetadata]:
    return [ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=list(shape))
            for name, (datatype, shape) in table.items()]


def model_metadata(name: str, model_type: ModelType, platform: str) -> ModelMetadataResponse:
    signature = SIGNATURES.get(model_type)
    return ModelMetadataResponse(name=name, versions=[VERSION], platform=platform,
                                 inputs=_tensors(signature.inputs) if signature else [],
                                 outputs=_tensors(signature.outputs) if signature else [])


_STATES = {"loaded": "READY", "loading": "LOADING", "downloading": "LOADING", "failed": "UNAVAILABLE"}


def index_entry(name: str, state: str, reason: str | None) -> RepositoryIndexResponse.ModelIndex:
    """A model in the repository index: READY when loaded, LOADING, UNAVAILABLE when it failed, and
    otherwise (not loaded yet: it loads on its first request) with no state, as Triton lists a model it
    knows of but has not loaded."""
    return RepositoryIndexResponse.ModelIndex(name=name, version=VERSION, state=_STATES.get(state, ""),
                                              reason=reason or ("" if state in _STATES else state))
