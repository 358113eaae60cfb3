"""``options:`` of an upstream model (one struct for every model type; a few keys are for one type)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["Options"]


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    endpoints: Annotated[list[str], msgspec.Meta(min_length=1)]
    """Base URLs of the upstream's replicas, up to the API's version (``http://10.0.0.5:8000/v1``)."""
    model: str
    """The model's name on the upstream (what its ``models`` listing calls it)."""
    api: Literal["openai"] = "openai"
    """The API the upstream speaks: ``openai`` (vLLM, llama-server, TGI, SGLang, Ollama, SYN4PSE)."""
    api_key_env: str | None = None
    """An environment variable holding the upstream's API key (sent as a bearer token); None sends none."""
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """Seconds to open a connection to a replica before trying the next."""
    first_byte_timeout: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    """Seconds a replica may take to start answering (a long prompt's prefill included); past it the
    request goes to the next replica, or fails with 504."""
    read_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Seconds between two pieces of an answer already started before it is given up (504)."""
    slots_per_endpoint: Annotated[int, msgspec.Meta(ge=1)] = 8
    """Requests each replica serves at once: the model's ``concurrency`` defaults to this times the
    replicas, and its queue holds the rest."""
    routing: Literal["least_outstanding", "prefix"] = "least_outstanding"
    """``least_outstanding``: each request to the replica with the fewest in flight. ``prefix``: requests
    whose prompts start alike go to the same replica (its prompt cache holds their shared part) unless it
    has ``prefix_slack`` more in flight than the least busy."""
    prefix_chars: Annotated[int, msgspec.Meta(ge=16)] = 1024
    """For ``prefix`` routing: how many leading characters of the prompt choose the replica."""
    prefix_slack: Annotated[int, msgspec.Meta(ge=0)] = 4
    """For ``prefix`` routing: how many more requests in flight than the least busy replica a prompt's own
    replica may have before the request goes to the least busy instead."""
    failure_threshold: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Failures in a row that open a replica's circuit: it gets no requests for ``cooldown`` seconds, then
    one trial request (or health check) that closes the circuit again if it succeeds."""
    cooldown: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds an open circuit keeps a replica out before its trial."""
    health_interval: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    """Seconds between active health checks of each replica (a ``GET`` of its model listing); 0: none,
    the replicas are judged by the requests alone."""
    context_length: Annotated[int, msgspec.Meta(ge=1)] = 32768
    """For llm models: the upstream's context, which bounds what one request may ask for here."""
    structured_outputs: Literal["upstream", "checked"] = "upstream"
    """For llm models, replies that must be JSON (``response_format`` ``json_object`` or ``json_schema``)
    and the arguments of ``strict`` tools: ``upstream`` trusts the upstream to hold them (vLLM,
    llama-server and SGLang do); ``checked`` holds each such answer back until it is checked here
    (strict JSON, valid for its schema) and asks the upstream again when it is not, for an upstream that
    cannot hold them. Streamed answers then arrive whole."""
    check_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    """For ``structured_outputs: checked``: answers asked for in all before the request fails (400
    ``schema_not_satisfied``)."""
    voices: list[str] = msgspec.field(default_factory=lambda: ["alloy"])
    """For tts models: the voices requests may name, sent to the upstream as they are."""
    default_voice: str | None = None
    """For tts models: the voice of requests that name none (Deepgram's, for one); None: the first of
    ``voices``."""
    sample_rate: Annotated[int, msgspec.Meta(ge=8000, le=48000)] = 24000
    """For tts models: the rate of the raw 16-bit audio the upstream sends."""
    can_translate: bool = True
    """For stt models: whether the upstream's model translates into English."""

    @property
    def parallel(self) -> int:
        """Requests in flight across the replicas: the registry's default concurrency for the model."""
        return self.slots_per_endpoint * len(self.endpoints)

    def __post_init__(self) -> None:
        bad = [url for url in self.endpoints if not url.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"endpoints must be http:// or https:// URLs (got {bad[0]!r})")
        if self.default_voice is not None and self.default_voice not in self.voices:
            raise ValueError(f"default_voice {self.default_voice!r} is not one of voices")
        self.endpoints = [url.rstrip("/") + "/" for url in self.endpoints]
