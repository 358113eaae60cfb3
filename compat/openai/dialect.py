"""A dialect of OpenAI's wire format: the same routes, plus a vendor's extras on what they answer.

OpenAI's own adds nothing; Groq's (``compat.groq.Groq``) adds ``x_groq`` and timed usage. Routes pick
one per request and every encoder applies it, so no handler branches on the vendor.
"""

from __future__ import annotations

from typing import Any

import msgspec

from backends.answers import ChatAnswer, ChoiceFinished
from compat.wire import ParamPolicy

__all__ = ["OpenAI"]


class OpenAI:
    """OpenAI's dialect: the answers as they are."""

    accepts_audio_url = False
    """Whether transcriptions may name their audio by ``url`` instead of uploading it."""

    def screen_chat(self, raw: dict[str, Any], policy: ParamPolicy) -> None:
        """Take the dialect's own chat fields out of ``raw`` before OpenAI's validation sees them."""

    def completion(self, body: msgspec.Struct, answer: ChatAnswer) -> Any:
        return body

    def first_chunk(self, chunk: msgspec.Struct) -> Any:
        return chunk

    def finishing_chunk(self, chunk: msgspec.Struct, finished: ChoiceFinished) -> Any:
        return chunk

    def transcript(self, body: bytes, content_type: str) -> bytes:
        return body
