"""Tensors of the Open Inference Protocol: a request's inputs read into Python values, answers written.

A request carries each input's elements either in its typed ``contents`` or, as Triton's client sends
them, in ``raw_input_contents`` (one little-endian buffer per input; a BYTES element is a 4-byte length
and its bytes). Both are read; answers go out raw, as Triton's server sends them, which every client
reads. A malformed tensor is an :class:`InvalidRequest` naming it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from compat.errors import InvalidRequest
from compat.kserve.inference_pb2 import InferParameter, ModelInferRequest, ModelInferResponse

__all__ = ["Inputs", "Outputs", "Tensor", "bytes_elements", "parameter_value", "raw_bytes"]

_LENGTH = struct.Struct("<I")
_CONTENTS = {"BOOL": "bool_contents", "BYTES": "bytes_contents", "FP32": "fp32_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT32": "uint_contents"}


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]
    """The elements in row-major order: ``bytes`` for BYTES, ``bool`` for BOOL."""


def bytes_elements(raw: bytes, name: str) -> list[bytes]:
    """BYTES elements from their raw form: each a 4-byte little-endian length, then that many bytes."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise InvalidRequest(f"Input tensor '{name}': its raw contents end inside an element's length.",
                                 param=name)
        (size,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + size > len(raw):
            raise InvalidRequest(f"Input tensor '{name}': an element of {size} bytes runs past the end of its raw"
                                 " contents.", param=name)
        out.append(raw[at:at + size])
        at += size
    return out


def raw_bytes(values: Iterable[bytes]) -> bytes:
    """BYTES elements in their raw form."""
    return b"".join(_LENGTH.pack(len(v)) + v for v in values)


def _raw_elements(datatype: str, raw: bytes, name: str) -> list[Any]:
    if datatype == "BYTES":
        return bytes_elements(raw, name)
    if datatype == "BOOL":
        return [b != 0 for b in raw]
    raise InvalidRequest(f"Input tensor '{name}' has datatype {datatype}; this server reads BYTES and BOOL inputs.",
                         param=name)


def parameter_value(parameter: InferParameter) -> bool | int | float | str | None:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


class Inputs:
    """A request's input tensors by name, checked against the names the model takes."""

    def __init__(self, request: ModelInferRequest, known: Mapping[str, str]) -> None:
        """``known``: each input the model takes → its datatype."""
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequest(f"The request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents;"
                                 " send one raw buffer per input, or none.", param="raw_input_contents")
        self._tensors: dict[str, Tensor] = {}
        for i, tensor in enumerate(request.inputs):
            name = tensor.name
            if name in self._tensors:
                raise InvalidRequest(f"Input tensor '{name}' is given twice.", param=name)
            if name not in known:
                names = ", ".join(known)
                raise InvalidRequest(f"Unexpected input tensor '{name}': this model takes {names}.", param=name)
            for key in tensor.parameters:
                if key != "content_type":
                    raise InvalidRequest(f"Input tensor '{name}': parameter '{key}' is not supported by this server"
                                         " (shared memory is not offered).", param=name)
            if tensor.datatype != known[name]:
                raise InvalidRequest(f"Input tensor '{name}' must be {known[name]}, got '{tensor.datatype}'.",
                                     param=name)
            shape = tuple(tensor.shape)
            if any(d < 0 for d in shape):
                raise InvalidRequest(f"Input tensor '{name}' has a negative dimension in its shape {list(shape)}.",
                                     param=name)
            if raw:
                if tensor.HasField("contents"):
                    raise InvalidRequest(f"Input tensor '{name}' has both contents and raw_input_contents.",
                                         param=name)
                values = _raw_elements(tensor.datatype, raw[i], name)
            else:
                values = list(getattr(tensor.contents, _CONTENTS[tensor.datatype]))
            if len(values) != math.prod(shape):
                raise InvalidRequest(f"Input tensor '{name}' has shape {list(shape)} ({math.prod(shape)} elements)"
                                     f" but {len(values)} elements.", param=name)
            self._tensors[name] = Tensor(name, tensor.datatype, shape, values)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def _one(self, name: str) -> Any:
        tensor = self._tensors[name]
        if len(tensor.values) != 1:
            raise InvalidRequest(f"Input tensor '{name}' must hold one element, got {len(tensor.values)}.",
                                 param=name)
        return tensor.values[0]

    def data(self, name: str) -> bytes | None:
        """The one BYTES element of ``name``, or None when the request has no such input."""
        return None if name not in self._tensors else bytes(self._one(name))

    def text(self, name: str) -> str | None:
        """The one BYTES element of ``name`` as UTF-8 text, or None when the request has no such input."""
        data = self.data(name)
        return None if data is None else _utf8(data, name)

    def texts(self, name: str) -> list[str] | None:
        """Every BYTES element of ``name`` as UTF-8 text (a 1-D tensor, or [N, 1])."""
        tensor = self._tensors.get(name)
        if tensor is None:
            return None
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InvalidRequest(f"Input tensor '{name}' must have shape [N] or [N, 1], got {list(tensor.shape)}.",
                                 param=name)
        return [_utf8(v, name) for v in tensor.values]

    def flag(self, name: str) -> bool | None:
        """The one BOOL element of ``name``, or None when the request has no such input."""
        return None if name not in self._tensors else bool(self._one(name))


def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"Input tensor '{name}' must be UTF-8 text.", param=name) from None


class Outputs:
    """The output tensors of one response, kept to those the request asked for (all when it named none)."""

    def __init__(self, request: ModelInferRequest, known: Iterable[str]) -> None:
        known = tuple(known)
        asked = [o.name for o in request.outputs]
        for name in asked:
            if name not in known:
                raise InvalidRequest(f"Unknown output tensor '{name}': this model gives {', '.join(known)}.",
                                     param=name)
        self.asked: frozenset[str] = frozenset(asked)
        self._known = known
        self._tensors: list[ModelInferResponse.InferOutputTensor] = []
        self._raw: list[bytes] = []

    def fresh(self) -> Outputs:
        """Outputs of another response to the same request (a streamed answer's next piece)."""
        out = object.__new__(Outputs)
        out.asked, out._known, out._tensors, out._raw = self.asked, self._known, [], []
        return out

    def wants(self, name: str, *, by_default: bool = True) -> bool:
        """Whether ``name`` goes out: asked for, or given by default when nothing was asked for."""
        return name in self.asked if self.asked else by_default

    def add_bytes(self, name: str, values: list[bytes], shape: tuple[int, ...] | None = None) -> None:
        self._add(name, "BYTES", shape or (len(values),), raw_bytes(values))

    def add_array(self, name: str, array: npt.NDArray[Any]) -> None:
        datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint32): "UINT32", np.dtype(np.int64): "INT64"}
        self._add(name, datatype[array.dtype], array.shape, np.ascontiguousarray(array).astype(array.dtype.newbyteorder(
            "<"), copy=False).tobytes())

    def _add(self, name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> None:
        self._tensors.append(ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=list(shape)))
        self._raw.append(raw)

    def response(self, model: str, request_id: str, *, final: bool | None = None) -> ModelInferResponse:
        """The response; ``final`` sets ``triton_final_response`` (answers on a stream)."""
        parameters = {} if final is None else {"triton_final_response": InferParameter(bool_param=final)}
        return ModelInferResponse(model_name=model, model_version="1", id=request_id, outputs=self._tensors,
                                  raw_output_contents=self._raw, parameters=parameters)
