"""The sampling fields chat and legacy completions share, and their translation."""

from __future__ import annotations

from typing import Annotated

import msgspec

from backends.types import SamplingParams
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = ["SamplingFields", "sampling_params"]

MAX_STOP_SEQUENCES = 4


class SamplingFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stop: str | list[str] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, msgspec.Meta(ge=-100, le=100)]] | None = None
    seed: int | None = None
    user: str | None = None


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    if any(s == "" for s in stops):
        raise InvalidRequest("'stop' sequences must not be empty.", param="stop")
    return tuple(stops)


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    if not bias:
        return ()
    out: list[tuple[int, float]] = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"logit_bias keys must be token ids; got '{key}'.", param="logit_bias") from None
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
