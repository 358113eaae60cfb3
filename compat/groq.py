"""Groq's dialect: OpenAI's wire format under ``/openai/v1`` plus Groq's extras.

Apps written for Groq read ``x_groq.id``, the timing fields of ``usage`` and, when streaming, the usage
in ``x_groq.usage`` of the last chunk. The Groq-only request fields either mean nothing for a local
model that does no reasoning or web search (accepted), or go to the unsupported-parameter policy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from backends.types import Usage
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = ["GROQ_FIELDS", "GroqTimings", "add_x_groq", "new_groq_id", "screen_groq_fields", "usage_with_timings",
           "with_x_groq"]

# Fields Groq's chat API adds to OpenAI's. Accepted: they change nothing for a model that neither
# reasons nor has service tiers (no reasoning text exists to hide, parse or include).
_ACCEPTED = frozenset({"reasoning_format", "include_reasoning", "disable_tool_validation"})
# Groq features a local model does not have.
_UNSUPPORTED = frozenset({"search_settings", "compound_custom", "documents", "citation_options",
                          "exclude_domains", "include_domains"})
GROQ_FIELDS = _ACCEPTED | _UNSUPPORTED


def screen_groq_fields(raw: dict[str, Any], policy: ParamPolicy) -> None:
    """Take Groq's own chat fields out of ``raw`` before OpenAI's validation sees them."""
    for name in [k for k in raw if k in GROQ_FIELDS]:
        value = raw.pop(name)
        if name in _UNSUPPORTED and value is not None:
            policy.unsupported(name)
    if raw.get("n") not in (None, 1):
        raise InvalidRequest("'n' must be 1: Groq generates one choice per request.", param="n")
    if raw.get("service_tier") in ("on_demand", "flex", "performance"):
        raw["service_tier"] = "auto"  # Groq's tiers are rate-limit classes; locally there is one


def new_groq_id() -> str:
    return f"req_{uuid.uuid4().hex[:26]}"


@dataclass(frozen=True, slots=True)
class GroqTimings:
    """Seconds, measured at the gateway: waiting, reading the prompt, generating, in all."""

    queue_time: float
    prompt_time: float
    completion_time: float

    @property
    def total_time(self) -> float:
        return self.queue_time + self.prompt_time + self.completion_time


def usage_with_timings(usage: Usage, timings: GroqTimings) -> dict[str, Any]:
    return {"queue_time": round(timings.queue_time, 6), "prompt_tokens": usage.prompt_tokens,
            "prompt_time": round(timings.prompt_time, 6), "completion_tokens": usage.completion_tokens,
            "completion_time": round(timings.completion_time, 6), "total_tokens": usage.total_tokens,
            "total_time": round(timings.total_time, 6)}


def with_x_groq(body: msgspec.Struct, groq_id: str, *, usage: dict[str, Any] | None = None,
                top_level_usage: bool = False) -> dict[str, Any]:
    """``body`` as JSON-ready data with ``x_groq`` added (and Groq's usage, where it goes)."""
    data: dict[str, Any] = msgspec.to_builtins(body)
    x_groq: dict[str, Any] = {"id": groq_id}
    if usage is not None:
        if top_level_usage:
            data["usage"] = usage
        else:
            x_groq["usage"] = usage
    data["x_groq"] = x_groq
    return data


_json = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def add_x_groq(body: bytes, groq_id: str) -> bytes:
    """A JSON object body with ``x_groq`` added (transcriptions: ``{"text", "x_groq": {"id"}}``)."""
    data = _json.decode(body)
    data["x_groq"] = {"id": groq_id}
    return _encoder.encode(data)
