"""The serving layer: what lies between a route and an engine, once for every dialect.

One module per capability. Each object takes a domain request (``backends.types``) and returns a
result, or an :class:`~gateway.serving.owned.Owned` stream of domain events that owns its model lease
from admission to the last byte. Routes decode the wire struct (compat), call serving, and encode the
answer (compat); the Responses and Realtime APIs call the same objects.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from gateway.config import Config
from gateway.registry import Registry
from gateway.serving.chat import Chat, Limits
from gateway.serving.completions import Completions
from gateway.serving.embeddings import Embeddings
from gateway.serving.live import LiveTranscription
from gateway.serving.realtime import Realtime
from gateway.serving.responses import Responses
from gateway.serving.speech import Speech
from gateway.serving.transcription import Transcriptions
from gateway.workers import Workers

__all__ = ["Serving", "serving_of"]


class Serving:
    """Every capability's serving object, built once per app."""

    def __init__(self, registry: Registry, config: Config) -> None:
        self.registry = registry
        self.config = config
        limits = Limits(config.server.llm_limits)
        self.chat = Chat(registry, limits)
        self.completions = Completions(registry, limits)
        self.embeddings = Embeddings(registry)
        self.audio_work = Workers(config.server.audio.workers, "audio-work")
        self.transcriptions = Transcriptions(registry, config, self.audio_work)
        self.speech = Speech(registry, config)
        self.live = LiveTranscription(registry, config, self.audio_work)
        self.responses = Responses(self.chat, registry, config)
        self.realtime = Realtime(registry, config, self.chat, self.speech, self.transcriptions, self.audio_work)


def serving_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Serving:
    serving: Serving = connection.app.state.serving
    return serving
