"""A request's tensors as the body the HTTP dialect would have sent, so both are validated by one parser.

An LLM request becomes a chat-completion body (``messages``) or a legacy-completion body
(``text_input``) with the sampling parameters at its top level; embeddings, transcription and speech
requests become their OpenAI bodies. An error the parser raises about a sampling parameter is renamed
to where the client put it (``sampling_parameters.temperature``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from compat.errors import InvalidRequest
from compat.kserve.tensors import Inputs
from compat.openai.sampling import SamplingFields

__all__ = ["SAMPLING_KEYS", "SAMPLING_NAMES", "LlmCall", "llm_call", "renamed", "sampling_of"]

SAMPLING_KEYS = frozenset(SamplingFields.__struct_fields__) - {"n", "user"}
"""What ``sampling_parameters`` may hold: the OpenAI sampling fields of one answer."""
_NUMBERS: dict[str, Callable[[str], float | int]] = {
    "temperature": float, "top_p": float, "presence_penalty": float, "frequency_penalty": float,
    "max_tokens": int, "seed": int}
"""Parameters Triton's vLLM clients send as strings (``{"temperature": "0.1"}``): read as numbers."""
_SAMPLING = "sampling_parameters"


@dataclass(frozen=True, slots=True)
class LlmCall:
    kind: Literal["chat", "completion"]
    body: dict[str, Any]
    """The OpenAI request body: ``model``, ``messages`` or ``prompt``, and the sampling parameters."""
    stream: bool


def sampling_of(text: str | None) -> dict[str, Any]:
    """The ``sampling_parameters`` JSON object, its known keys only, numeric strings read as numbers."""
    if text is None:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Input tensor '{_SAMPLING}' must hold a JSON object, such as"
                             ' {"max_tokens": 64, "temperature": 0.7}.', param=_SAMPLING)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{_SAMPLING}.{key}"
        if key not in SAMPLING_KEYS:
            raise InvalidRequest(f"Unrecognized sampling parameter '{where}'; '{_SAMPLING}' takes"
                                 f" {', '.join(sorted(SAMPLING_KEYS))}.", param=where, code="unknown_parameter")
        convert = _NUMBERS.get(key)
        if convert is not None and isinstance(value, str):
            try:
                value = convert(value.strip())
            except ValueError:
                raise InvalidRequest(f"Invalid value for '{where}': expected a number, got '{value}'.",
                                     param=where, code="invalid_value") from None
        out[key] = value
    return out


def llm_call(inputs: Inputs, model: str) -> LlmCall:
    """The chat or completion an LLM request asks for."""
    prompt, messages = inputs.text("text_input"), inputs.text("messages")
    if (prompt is None) == (messages is None):
        raise InvalidRequest("Send one of the input tensors 'text_input' (a prompt) and 'messages' (a chat as"
                             " JSON).", param="text_input" if prompt is None else "messages")
    stream = bool(inputs.flag("stream"))
    exclude = inputs.flag("exclude_input_in_output")
    sampling = sampling_of(inputs.text(_SAMPLING))
    if messages is not None:
        if exclude is False:
            raise InvalidRequest("Input tensor 'exclude_input_in_output': a chat's answer never repeats its"
                                 " messages; leave it out or set it true.", param="exclude_input_in_output")
        try:
            chat = json.loads(messages)
        except ValueError:
            raise InvalidRequest("Input tensor 'messages' must hold a JSON array of chat messages, such as"
                                 ' [{"role": "user", "content": "Hi"}].', param="messages") from None
        return LlmCall("chat", {"model": model, "messages": chat, **sampling}, stream)
    body = {"model": model, "prompt": prompt, **sampling}
    if not stream and not exclude:  # as Triton's vLLM backend: the whole answer begins with its prompt
        body["echo"] = True
    return LlmCall("completion", body, stream)


SAMPLING_NAMES = {key: f"{_SAMPLING}.{key}" for key in SAMPLING_KEYS}
"""Where a sampling parameter's error points: inside the tensor the client put it in."""


@contextmanager
def renamed(names: Mapping[str, str]) -> Iterator[None]:
    """Report an error about a body field under the name the client sent it as (``names``: the
    field → the tensor or parameter), so a message names what is in the request, not the HTTP body."""
    try:
        yield
    except InvalidRequest as e:
        param = e.param or ""
        root = param.split(".")[0].split("[")[0]
        if root not in names:
            raise
        where = names[root] + param[len(root):]
        raise InvalidRequest(e.message.replace(f"'{param}'", f"'{where}'"), param=where, code=e.code) from None
