"""The sampling fields chat and legacy completions share, and their translation.

The limits OpenAI sets on them are enforced with OpenAI's own words and codes (``Invalid 'stop': array
too long. …``, ``array_above_max_length``), so clients that match on them see what they expect. The
collections are measured before they are decoded (:func:`screen_sizes`): a 16 MB ``logit_bias`` is refused
by its length, not converted first.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from backends.types import SamplingParams
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = ["MAX_LOGIT_BIAS", "MAX_N", "MAX_STOP_CHARS", "MAX_STOP_SEQUENCES", "SamplingFields", "array_too_long",
           "integer_too_large", "sampling_params", "screen_sizes"]

MAX_STOP_SEQUENCES = 4
"""OpenAI's limit."""
MAX_STOP_CHARS = 256
"""Longest stop string: each generated token is matched against every prefix of each stop string, on
the model's thread."""
MAX_LOGIT_BIAS = 300
"""OpenAI's limit on biased tokens."""
MAX_N = 128
"""OpenAI's limit on choices; the server's own (``server.llm_limits.max_n``) is usually lower."""


class SamplingFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_N)] | None = None
    stop: str | list[str] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, msgspec.Meta(ge=-100, le=100)]] | None = None
    seed: int | None = None
    user: str | None = None


def array_too_long(param: str, most: int, got: int) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': array too long. Expected an array with maximum length {most}, but"
                          f" got an array with length {got} instead.", param=param, code="array_above_max_length")


def integer_too_large(param: str, most: int, got: int, why: str = "") -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': integer above maximum value. Expected a value <= {most}{why}, but"
                          f" got {got} instead.", param=param, code="integer_above_max_value")


def _too_many_biases(got: int) -> InvalidRequest:
    return InvalidRequest(f"Invalid 'logit_bias': too many properties. Expected an object with at most"
                          f" {MAX_LOGIT_BIAS} properties, but got an object with {got} properties instead.",
                          param="logit_bias", code="object_above_max_properties")


def screen_sizes(raw: dict[str, Any]) -> None:
    """Refuse an ``n``, ``stop`` or ``logit_bias`` larger than OpenAI allows, in OpenAI's words, before the
    body is converted."""
    n = raw.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > MAX_N:
        raise integer_too_large("n", MAX_N, n)
    stop = raw.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
        raise array_too_long("stop", MAX_STOP_SEQUENCES, len(stop))
    bias = raw.get("logit_bias")
    if isinstance(bias, dict) and len(bias) > MAX_LOGIT_BIAS:
        raise _too_many_biases(len(bias))


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > MAX_STOP_SEQUENCES:
        raise array_too_long("stop", MAX_STOP_SEQUENCES, len(stops))
    for i, s in enumerate(stops):
        where = "stop" if isinstance(stop, str) else f"stop[{i}]"
        if s == "":
            raise InvalidRequest("'stop' sequences must not be empty.", param="stop")
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequest(f"Invalid '{where}': string too long. Expected a string with maximum length"
                                 f" {MAX_STOP_CHARS}, but got a string with length {len(s)} instead.",
                                 param=where, code="string_above_max_length")
    return tuple(stops)


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    if not bias:
        return ()
    if len(bias) > MAX_LOGIT_BIAS:
        raise _too_many_biases(len(bias))
    out: list[tuple[int, float]] = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"logit_bias keys must be token ids; got '{key[:64]}'.", param="logit_bias") from None
        if token < 0:
            raise InvalidRequest(f"logit_bias token id {token} is negative.", param="logit_bias")
        out.append((token, float(value)))
    return tuple(out)


def sampling_params(r: SamplingFields, max_tokens: int | None, policy: ParamPolicy) -> SamplingParams:
    return SamplingParams(
        n=r.n or 1,
        max_tokens=max_tokens,
        temperature=1.0 if r.temperature is None else r.temperature,
        top_p=1.0 if r.top_p is None else r.top_p,
        stop=_stops(r.stop),
        seed=r.seed,
        presence_penalty=r.presence_penalty or 0.0,
        frequency_penalty=r.frequency_penalty or 0.0,
        logit_bias=_logit_bias(r.logit_bias),
    )
