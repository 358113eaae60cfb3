"""Groq's dialect: OpenAI's wire format under ``/openai/v1`` plus Groq's extras.

Apps written for Groq read ``x_groq.id``, the timing fields of ``usage`` and, when streaming, the usage
in ``x_groq.usage`` of the last chunk. The Groq-only request fields either mean nothing for a local
model that does no reasoning or web search (accepted), or go to the unsupported-parameter policy.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from backends.answers import ChatAnswer, ChoiceFinished, Timings
from backends.types import Usage
from compat.errors import InvalidRequest
from compat.openai.dialect import OpenAI
from compat.wire import ParamPolicy

__all__ = ["GROQ_FIELDS", "Groq", "add_x_groq", "new_groq_id", "screen_groq_fields", "usage_with_timings",
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


def usage_with_timings(usage: Usage, timings: Timings) -> dict[str, Any]:
    """Groq's usage: the token counts with the seconds spent queued, reading the prompt and generating."""
    return {"queue_time": round(timings.queued, 6), "prompt_tokens": usage.prompt_tokens,
            "prompt_time": round(timings.prompt, 6), "completion_tokens": usage.completion_tokens,
            "completion_time": round(timings.completion, 6), "total_tokens": usage.total_tokens,
            "total_time": round(timings.total, 6)}


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


class Groq(OpenAI):
    """Groq's dialect, for one request: ``x_groq.id`` on every answer, and Groq's timed usage (at the top of
    a completion; in ``x_groq.usage`` of the chunk that finishes a stream)."""

    accepts_audio_url = True

    def __init__(self) -> None:
        self.id = new_groq_id()

    def screen_chat(self, raw: dict[str, Any], policy: ParamPolicy) -> None:
        screen_groq_fields(raw, policy)

    def completion(self, body: msgspec.Struct, answer: ChatAnswer) -> Any:
        return with_x_groq(body, self.id, top_level_usage=True, usage=usage_with_timings(answer.usage, answer.timings))

    def first_chunk(self, chunk: msgspec.Struct) -> Any:
        return with_x_groq(chunk, self.id)

    def finishing_chunk(self, chunk: msgspec.Struct, finished: ChoiceFinished) -> Any:
        if not finished.last:
            return chunk
        return with_x_groq(chunk, self.id, usage=usage_with_timings(finished.usage, finished.timings))

    def transcript(self, body: bytes, content_type: str) -> bytes:
        return add_x_groq(body, self.id) if content_type == "application/json" else body
