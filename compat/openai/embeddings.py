"""``POST /v1/embeddings``: the four input shapes, float or base64 output, ``dimensions``."""

from __future__ import annotations

import base64
import dataclasses
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from backends.types import EmbeddingRequest, EmbeddingResult
from compat.errors import InvalidRequest
from compat.openai.vocab import ids_as_text, openai_encoding
from compat.wire import ParamPolicy, to_struct

__all__ = ["EmbeddingsRequest", "embedding_response", "inputs_as_text", "openai_inputs",
           "parse_embeddings_request"]

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


class EmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    input: str | list[Any]
    model: str
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    user: str | None = None


KNOWN_FIELDS = frozenset(EmbeddingsRequest.__struct_fields__)


class ParsedEmbeddings(msgspec.Struct):
    request: EmbeddingRequest
    model: str
    base64: bool


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inputs(value: str | list[Any]) -> tuple[str | tuple[int, ...], ...]:
    """str, list[str], list[int] or list[list[int]] → one entry per input."""
    if isinstance(value, str):
        items: list[str | tuple[int, ...]] = [value]
    elif not value:
        raise InvalidRequest("'input' must not be empty.", param="input")
    elif all(_is_token(t) for t in value):
        items = [tuple(value)]
    elif all(isinstance(s, str) for s in value):
        items = list(value)
    elif all(isinstance(p, list) and all(_is_token(t) for t in p) for p in value):
        items = [tuple(p) for p in value]
    else:
        raise InvalidRequest("'input' must be a string, a list of strings, a list of token ids or a list"
                             " of lists of token ids.", param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    for i, item in enumerate(items):
        if len(item) == 0:
            raise InvalidRequest(f"input[{i}] is empty; every input must hold text or tokens.", param="input")
    return tuple(items)


def parse_embeddings_request(raw: dict[str, Any], policy: ParamPolicy) -> ParsedEmbeddings:
    policy.screen(raw, KNOWN_FIELDS)
    r = to_struct(raw, EmbeddingsRequest)
    return ParsedEmbeddings(
        request=EmbeddingRequest(inputs=_inputs(r.input), dimensions=r.dimensions),
        model=r.model,
        base64=r.encoding_format == "base64",
    )


def inputs_as_text(request: EmbeddingRequest, *, model: str, encoding_name: str) -> EmbeddingRequest:
    """The request with its token-id inputs decoded in OpenAI's encoding ``encoding_name`` (see ``vocab``)."""
    texts = ids_as_text(request.inputs, model=model, encoding_name=encoding_name, field="input")
    return dataclasses.replace(request, inputs=tuple(texts))


def openai_inputs(requested: str, canonical: str, request: EmbeddingRequest) -> EmbeddingRequest:
    """Token-id inputs sent under an OpenAI model name are OpenAI's tokens: read them into text."""
    encoding = openai_encoding(requested, canonical, request.inputs)
    if encoding is None:
        return request
    return inputs_as_text(request, model=requested, encoding_name=encoding)


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingsUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(msgspec.Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage
    object: str = "list"


def embedding_response(model: str, result: EmbeddingResult, as_base64: bool) -> EmbeddingsResponse:
    vectors = result.vectors
    if as_base64:
        little = vectors.astype("<f4", copy=False)
        data = [Embedding(index=i, embedding=base64.b64encode(row.tobytes()).decode("ascii"))
                for i, row in enumerate(little)]
    else:
        data = [Embedding(index=i, embedding=row.tolist()) for i, row in enumerate(vectors.astype(np.float64))]
    return EmbeddingsResponse(data=data, model=model,
                              usage=EmbeddingsUsage(prompt_tokens=result.prompt_tokens,
                                                    total_tokens=result.prompt_tokens))
