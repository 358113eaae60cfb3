"""``syn4pse.yaml``: decoded into typed structs, validated at start-up, overridden by the environment.

A bad file never half-starts a server: every unknown key or bad value is reported with the path of the
key (``models.foo.backend: …``) and start-up stops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from backends import catalog
from backends.types import ModelType

__all__ = [
    "AudioLimits",
    "Config",
    "ConfigError",
    "HuggingFaceSource",
    "LlmLimits",
    "ModelConfig",
    "ServerConfig",
    "Source",
    "load_config",
    "parse_config",
]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
DEFAULT_CONFIG_PATH = "syn4pse.yaml"


class ConfigError(Exception):
    """The configuration cannot be used; the message starts with the offending key's path."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HuggingFaceSource(_Strict):
    repo: Annotated[str, msgspec.Meta(min_length=3, pattern=r"^[\w.-]+/[\w.-]+$")]
    include: list[str] = msgspec.field(default_factory=list)
    """Glob patterns of the files to fetch; empty fetches the whole repo."""
    revision: str = "main"


class Source(_Strict):
    """Where a model's files come from: exactly one of ``huggingface``, ``path`` or ``package``."""

    huggingface: HuggingFaceSource | None = None
    path: str | None = None
    """A file or folder on this machine."""
    package: str | None = None
    """An installed Python package that ships the files (its import name)."""
    file: str | None = None
    """The model file inside the fetched repo, the package or the folder."""


class ModelConfig(_Strict):
    type: ModelType
    backend: str
    source: Source = msgspec.field(default_factory=lambda: Source())
    """Where the files come from; none for ``backend: upstream`` (the upstream holds them)."""
    aliases: list[str] = msgspec.field(default_factory=list)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Backend options, validated against the struct the backend owns."""
    vad: str | None = None
    """For speech-to-text models: a ``vad`` model that finds the speech before it is transcribed."""
    ttl: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    """Seconds idle before the model is unloaded: -1 never, 0 at once; None takes ``server.model_ttl``."""
    preload: bool = False
    """Load at start-up instead of on the first request."""
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Requests served at once; None takes ``server.default_concurrency``."""
    queue: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Requests that may wait for a turn beyond ``concurrency``; None takes ``server.queue_size``."""
    memory_mb: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Estimated memory when loaded; None estimates it from the size of the model's files."""
    vision: Literal["native", "ocr", "reject"] | None = None
    """For llm models, what becomes of an image in a chat: the model sees it (``native``, with the
    projector named by ``options.mmproj``), a ``vision`` model reads its text into the prompt (``ocr``),
    or the request is refused (``reject``). None: native with an mmproj, else ocr with an
    ``ocr_model``, else reject. Resolved when the file is read."""
    ocr_model: str | None = None
    """For ``vision: ocr``: the vision model of this file that reads the images; None takes the file's
    only vision model. Resolved when the file is read."""


class RealtimeModel(_Strict):
    """A voice-to-voice model of the Realtime API: the models of this file it hears, thinks and speaks
    with. Each is named by its name or an alias."""

    type: Literal["realtime"]
    llm: str
    stt: str
    tts: str
    vad: str | None = None
    """None: the ``stt`` model's own ``vad``, else the file's first vad model."""
    aliases: list[str] = msgspec.field(default_factory=list)


class CorsConfig(_Strict):
    allow_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    allow_methods: list[str] = msgspec.field(default_factory=lambda: ["GET", "POST", "OPTIONS"])
    allow_headers: list[str] = msgspec.field(default_factory=lambda: ["*"])
    allow_credentials: bool = False
    max_age: Annotated[int, msgspec.Meta(ge=0)] = 600


class RemoteFetchConfig(_Strict):
    """Whether the server may fetch URLs clients name (Deepgram's ``url`` body, Groq's ``url`` field)."""

    enabled: bool = False
    allow_private: bool = False
    """Also fetch from loopback, private and link-local addresses (a test setup, never the internet)."""
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 25 * 1024 * 1024
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3


class AudioLimits(_Strict):
    """What one audio client may cost: decoded audio, CPU work at once, and how long a socket lives."""

    max_decoded_seconds: Annotated[float, msgspec.Meta(gt=0)] = 4 * 3600
    """Most audio an upload may decode to, counted as channels × seconds (8 channels of 30 minutes
    count 4 hours): a few MB of FLAC can hold hours of samples. Decoding stops as soon as it is passed
    (400)."""
    workers: Annotated[int, msgspec.Meta(ge=1)] = 2
    """Audio decoding, resampling and VAD scoring jobs run at once, on threads of their own (never the
    event loop); more wait their turn."""
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024
    """Largest WebSocket message an audio socket takes (closed with 1009 above it). Any WebSocket
    message over four times this is closed (1009) before it is read whole."""
    live_burst_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Audio a live client may send ahead of real time before it is slowed down; one message holding
    more is refused (1008)."""
    live_rate: Annotated[float, msgspec.Meta(ge=1)] = 4.0
    """Past the burst, live audio is read at most this many times faster than real time: the server
    stops reading the socket until the audio is due."""
    max_live_sessions: Annotated[int, msgspec.Meta(ge=1)] = 8
    """Live transcription sockets open at once; each holds its speech-to-text model for its whole life,
    so they must leave the model's other slots to REST requests. More are closed with 1008."""
    max_speak_sessions: Annotated[int, msgspec.Meta(ge=1)] = 8
    """Speak sockets open at once, each holding its voice; more are closed with 1008."""
    listen_idle_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A live socket with neither audio nor ``KeepAlive`` for this long is closed (1011, ``NET-0001``),
    as Deepgram does."""
    flux_idle_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """A Flux socket (``/v2/listen``) with no message for this long is closed (1011, ``NET-0001``). Flux
    has no ``KeepAlive``; WebSocket pings are answered by the server but are not messages, so they do not
    count (pipecat and LiveKit send audio all along, silence included)."""
    speak_idle_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """A speak socket with no client message and nothing left to speak for this long is closed (1000)."""
    max_socket_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    """Longest an audio socket stays open, however busy (closed with 1008)."""
    speak_max_chars: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Longest text ``POST /v1/speak`` speaks (413 above it): as much as a speak socket may buffer.
    Deepgram's own limit is 2000, for a server that should refuse what Deepgram refuses."""
    speak_flushes_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 20
    """``Flush`` messages a speak socket may send in any 60 s (Deepgram's limit); more get a Warning
    and are not spoken."""
    speak_pending_flushes: Annotated[int, msgspec.Meta(ge=1)] = 8
    """Flushes a speak socket may have waiting to be spoken; more get a Warning and are not spoken."""


class LlmLimits(_Strict):
    """What one chat or legacy completion may ask of an LLM, so that no request holds the model's slots
    for long ahead of everyone else. A request past a limit is a 400 naming the field."""

    max_prompts: Annotated[int, msgspec.Meta(ge=1, le=2048)] = 64
    """Prompts one ``/v1/completions`` request may list; they run a round of the model's slots at a time."""
    max_n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    """Choices (``n``) one request may ask for; None: the model's parallel slots (``options.parallel``)."""
    max_request_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Completion tokens one request may ask for in all: prompts × ``n`` × ``max_tokens`` (each capped at
    the context). None: what the model's slots hold at once (``parallel`` × ``n_ctx``). A request that
    sets no ``max_tokens`` has each choice capped at its share instead."""


class RealtimeLimits(_Strict):
    """What the Realtime API's sessions (``/v1/realtime``) may cost. A session holds its models only for
    a turn (listening while audio arrives, generating while it answers), so an idle one holds none."""

    max_sessions: Annotated[int, msgspec.Meta(ge=1)] = 16
    """Realtime sessions open at once; more are refused with an ``error`` event and a close (1008)."""
    max_buffer_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """Most audio an input buffer holds before it is committed (``turn_detection: null``); an append past
    it is an ``error`` event and is not kept."""
    max_items: Annotated[int, msgspec.Meta(ge=2)] = 1000
    """Items a conversation keeps; past it the oldest are dropped from what the model sees."""
    listen_idle_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """With turn detection on, the speech models are given back after this long with no audio, and taken
    again when audio comes."""


class ResponsesStore(_Strict):
    """Where stored Responses (``store: true``, OpenAI's default) are kept, and for how long: the
    ``previous_response_id`` chains, ``GET /v1/responses/{id}`` and background responses read them."""

    path: str | None = "~/.local/share/syn4pse/responses.db"
    """An SQLite file, so a restart loses nothing stored; None keeps them in memory only.
    ``SYN4PSE_RESPONSES_STORE`` overrides it."""
    ttl: Annotated[int, msgspec.Meta(ge=60)] = 30 * 24 * 3600
    """Seconds a stored response is kept (OpenAI's: 30 days); then it is a 404."""
    max_responses: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    """Most responses kept; past it the oldest go first."""
    max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 512 * 1024 * 1024
    """Most bytes the stored responses take in all (their JSON); past it the oldest go first."""


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    http_port: Port = 8000
    grpc_port: Port | None = 50051
    """The Open Inference Protocol (KServe v2, Triton) over gRPC, on ``host``; None turns it off.
    ``SYN4PSE_SERVER_GRPC_PORT`` overrides it (``off`` or ``none`` turns it off)."""
    models_path: str = "~/.cache/syn4pse/models"
    unsupported_params: Literal["reject", "drop"] = "reject"
    """What to do with a request field this server does not implement: a 400 naming it, or drop it
    and report it in the ``x-syn4pse-dropped-params`` response header."""
    max_audio_upload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 25 * 1024 * 1024
    """Largest audio upload accepted (413 above it); OpenAI's own limit by default."""
    env: Literal["production", "development"] = "production"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_keys: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(default_factory=list)
    """Keys a client must present (Bearer, Token, or a WebSocket subprotocol); empty: no auth.
    ``SYN4PSE_API_KEYS`` (comma-separated) adds to them."""
    remote_fetch: RemoteFetchConfig = msgspec.field(default_factory=RemoteFetchConfig)
    max_image_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 20 * 1024 * 1024
    """Largest image file a chat message may carry, as a data URL or fetched (a 400 naming the part)."""
    max_image_pixels: Annotated[int, msgspec.Meta(ge=1)] = 50_000_000
    """Most pixels (width × height) an image may unpack to, checked before it is decoded."""
    max_images: Annotated[int, msgspec.Meta(ge=0)] = 16
    """Most images one chat request may carry."""
    max_image_decodes: Annotated[int, msgspec.Meta(ge=1)] = 2
    """Threads that read images, over all requests: each checks one header or decodes one image (a
    full bitmap in memory) at a time; the other images wait their turn."""
    cors: CorsConfig | None = None
    """Cross-origin access for browsers; off unless set."""
    max_json_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024 * 1024
    max_json_depth: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 64
    max_json_items: Annotated[int, msgspec.Meta(ge=1000)] = 300_000
    """Items (array elements and object members) a JSON request body may hold, counted by its commas
    before it is decoded (413 past it): decoding costs per item, and a body of a million small ones would
    hold the server for a quarter of a second. The default takes OpenAI's largest embeddings batch
    (300 000 tokens as token ids)."""
    max_json_members: Annotated[int, msgspec.Meta(ge=1000)] = 50_000
    """Object members a JSON request body may hold, counted by its colons before it is decoded (413 past
    it): each member is a key to make and hash, several times an array element's cost, and no request of
    the APIs served needs many (OpenAI: 300 ``logit_bias`` entries, 5000 schema properties)."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024
    model_ttl: Annotated[int, msgspec.Meta(ge=-1)] = -1
    """Default seconds idle before a model is unloaded: -1 never, 0 at once."""
    max_loaded_models: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_models_memory_mb: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Past either limit, the least recently used idle model is unloaded to make room."""
    default_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 16
    """Requests served at once by a model that sets no ``concurrency`` of its own."""
    queue_size: Annotated[int, msgspec.Meta(ge=0)] = 64
    queue_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds a request waits for its turn before a 429."""
    shutdown_timeout: Annotated[int, msgspec.Meta(ge=0)] = 10
    """Seconds running requests get to finish when the server stops."""
    audio: AudioLimits = msgspec.field(default_factory=AudioLimits)
    """Limits on audio decoding and on the audio WebSockets (``/v1/listen``, ``/v1/speak``)."""
    allowed_hosts: list[Annotated[str, msgspec.Meta(min_length=1)]] | None = None
    """Names the ``Host`` header may carry (any port; ``*`` any name, ``.example.com`` it and its
    subdomains); another gets a 421, which defeats DNS rebinding. None: the loopback names
    (``localhost``, ``127.0.0.1``, ``[::1]``) on a loopback bind, any name otherwise."""
    allowed_origins: list[Annotated[str, msgspec.Meta(min_length=1)]] | None = None
    """Browser origins (``scheme://host[:port]``, ``*`` any) whose pages may open a WebSocket; another
    origin is refused with a 403. A handshake without ``Origin`` (an SDK, not a browser) and a page of
    the server's own origin are always let in. None: loopback origins, plus ``cors.allow_origins``."""
    allow_open_bind: bool = False
    """Start on a non-loopback address with no ``api_keys`` (an open server on the network); otherwise
    start-up stops. ``SYN4PSE_ALLOW_OPEN_BIND=1`` sets it."""
    admin_keys: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(default_factory=list)
    """Keys for ``/admin/*``: when set, only these open it (an API key alone gets a 403); they also work
    as API keys. Empty: ``/admin/*`` takes the API keys like every route. ``SYN4PSE_ADMIN_KEYS``
    (comma-separated) adds to them."""
    max_connections: Annotated[int, msgspec.Meta(ge=1)] | None = 1000
    """Connections served at once; past it a new request gets a 503 (keeps file descriptors for the
    clients already served). None: no limit."""
    header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds a client has to send a request's whole head (line and headers); then it is closed with a
    408, so trickled headers hold no connection for long."""
    body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds a request body may go without a byte arriving; then the connection is closed."""
    keep_alive_timeout: Annotated[int, msgspec.Meta(ge=1)] = 5
    """Seconds an idle keep-alive connection stays open between requests."""
    llm_limits: LlmLimits = msgspec.field(default_factory=LlmLimits)
    """How much of an LLM one chat or completion request may take."""
    responses: ResponsesStore = msgspec.field(default_factory=ResponsesStore)
    """The Responses API's store (``/v1/responses``)."""
    realtime: RealtimeLimits = msgspec.field(default_factory=RealtimeLimits)
    """The Realtime API's sessions (``/v1/realtime``)."""


class ServiceConfig(_Strict):
    enabled: bool = True


class DeepgramService(_Strict):
    enabled: bool = True
    listen_model: str = "nova-3"
    """The model ``/v1/listen`` uses when a request names none (Deepgram's default)."""
    speak_model: str = "aura-asteria-en"
    """The model ``/v1/speak`` uses when a request names none."""


class ServicesConfig(_Strict):
    openai: ServiceConfig = msgspec.field(default_factory=ServiceConfig)
    groq: ServiceConfig = msgspec.field(default_factory=ServiceConfig)
    """The OpenAI routes again under ``/openai/v1``, with Groq's response extras."""
    deepgram: DeepgramService = msgspec.field(default_factory=DeepgramService)


class _File(_Strict):
    version: Literal["1"]
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    models: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    services: ServicesConfig = msgspec.field(default_factory=ServicesConfig)


class Config(msgspec.Struct, kw_only=True):
    """The validated configuration. ``models`` keys are the models' canonical names."""

    server: ServerConfig
    models: dict[str, ModelConfig]
    services: ServicesConfig
    backend_options: dict[str, msgspec.Struct]
    """Each model's options, decoded into the struct its backend owns."""
    realtime: dict[str, RealtimeModel] = msgspec.field(default_factory=dict)
    """The Realtime API's models (``type: realtime``), their components resolved to canonical names."""
    source_path: Path | None = None

    @property
    def models_dir(self) -> Path:
        return Path(self.server.models_path).expanduser().resolve()


def _located(error: msgspec.ValidationError, prefix: str) -> ConfigError:
    """Rewrite msgspec's ``… - at `$.a.b`` into ``prefix.a.b: …``."""
    text = str(error)
    message, _, where = text.rpartition(" - at `")
    if not message:
        return ConfigError(f"{prefix}: {text}")
    path = where.rstrip("`").removeprefix("$")
    return ConfigError(f"{prefix}{path}: {message}".lstrip("."))


def _check_source(name: str, source: Source, files: bool) -> None:
    given = [k for k in ("huggingface", "path", "package") if getattr(source, k) is not None]
    if not files:
        if given or source.file is not None:
            raise ConfigError(f"models.{name}.source: this backend's models have no files here; remove source")
        return
    if len(given) != 1:
        raise ConfigError(
            f"models.{name}.source: give exactly one of huggingface, path or package"
            f" (got {', '.join(given) or 'none'})"
        )


def _decode_model(name: str, raw: Any) -> tuple[ModelConfig, msgspec.Struct]:
    prefix = f"models.{name}"
    try:
        model = msgspec.convert(raw, ModelConfig)
    except msgspec.ValidationError as e:
        raise _located(e, prefix) from None
    entry = catalog.find(model.backend, model.type)
    if entry is None:
        known = ", ".join(catalog.names_for(model.type)) or "none yet"
        raise ConfigError(
            f"{prefix}.backend: unknown backend '{model.backend}' for type {model.type.value}"
            f" (known: {known})"
        )
    _check_source(name, model.source, entry.files)
    try:
        options = msgspec.convert(model.options, entry.options_type())
    except msgspec.ValidationError as e:
        raise _located(e, f"{prefix}.options") from None
    return model, options


def _decode_realtime(name: str, raw: dict[str, Any]) -> RealtimeModel:
    try:
        return msgspec.convert(raw, RealtimeModel)
    except msgspec.ValidationError as e:
        raise _located(e, f"models.{name}") from None


def _check_realtime(realtime: dict[str, RealtimeModel], models: Mapping[str, ModelConfig]) -> None:
    """Each realtime model's parts name models of the right type (resolved to their names), and its
    names are no one else's."""
    names = {n: n for n in models} | {a: n for n, m in models.items() for a in m.aliases}
    taken = set(names)
    wanted = {"llm": ModelType.LLM, "stt": ModelType.STT, "tts": ModelType.TTS, "vad": ModelType.VAD}
    for name, model in realtime.items():
        for key, kind in wanted.items():
            given = getattr(model, key)
            if given is None:
                continue
            found = names.get(given)
            if found is None or models[found].type != kind:
                raise ConfigError(f"models.{name}.{key}: '{given}' is not a {kind.value} model of this file")
            setattr(model, key, found)
        if model.vad is None:
            model.vad = models[model.stt].vad or next(
                (n for n, m in models.items() if m.type == ModelType.VAD), None)
            if model.vad is None:
                raise ConfigError(f"models.{name}.vad: a realtime model needs a vad model, and this file has none")
        for alias in [name, *model.aliases]:
            if alias in taken:
                raise ConfigError(f"models.{name}: the name '{alias}' is already used by another model")
            taken.add(alias)


def _check_names(models: Mapping[str, ModelConfig]) -> None:
    owner: dict[str, str] = {name: name for name in models}
    for name, model in models.items():
        if model.vad is not None:
            if model.type != ModelType.STT:
                raise ConfigError(f"models.{name}.vad: only speech-to-text models use a VAD model")
            vad = models.get(model.vad)
            if vad is None or vad.type != ModelType.VAD:
                raise ConfigError(f"models.{name}.vad: '{model.vad}' is not a vad model of this file")
        for alias in model.aliases:
            if alias in owner and owner[alias] != name:
                raise ConfigError(f"models.{name}.aliases: '{alias}' is already used by model '{owner[alias]}'")
            owner[alias] = name


def _check_vision(models: Mapping[str, ModelConfig]) -> None:
    """Settle each llm model's ``vision`` mode and OCR model, so requests need not guess."""
    readers = [name for name, model in models.items() if model.type == ModelType.VISION]
    for name, model in models.items():
        prefix = f"models.{name}"
        if model.type != ModelType.LLM:
            for key in ("vision", "ocr_model"):
                if getattr(model, key) is not None:
                    raise ConfigError(f"{prefix}.{key}: only llm models take images")
            continue
        has_projector = model.options.get("mmproj") is not None or model.backend == "upstream"
        if model.vision is None:
            model.vision = "native" if has_projector else "ocr" if model.ocr_model is not None else "reject"
        if model.vision == "native" and not has_projector:
            raise ConfigError(f"{prefix}.vision: 'native' needs the model's vision projector in options.mmproj")
        # An upstream model sees what its upstream sees: images are passed on, and refused there if need be.
        if model.vision != "ocr":
            if model.ocr_model is not None:
                raise ConfigError(f"{prefix}.ocr_model: only used with vision: ocr (this model has vision:"
                                  f" {model.vision})")
            continue
        if model.ocr_model is None:
            if len(readers) != 1:
                found = ", ".join(readers) if readers else "none"
                raise ConfigError(f"{prefix}.ocr_model: name the vision model that reads this model's images"
                                  f" (vision models in this file: {found})")
            model.ocr_model = readers[0]
        elif model.ocr_model not in readers:
            raise ConfigError(f"{prefix}.ocr_model: '{model.ocr_model}' is not a vision model of this file")


_ENV_OVERRIDES: dict[str, str] = {
    "SYN4PSE_ENV": "env",
    "SYN4PSE_SERVER_HTTP_PORT": "http_port",
    "SYN4PSE_SERVER_GRPC_PORT": "grpc_port",
    "SYN4PSE_MODELS_PATH": "models_path",
}


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}


def _apply_env(server: dict[str, Any], environ: Mapping[str, str]) -> None:
    for var, key in _ENV_OVERRIDES.items():
        value = environ.get(var)
        if value is None or value == "":
            continue
        if key == "grpc_port" and value.strip().lower() in ("off", "none", "null"):
            server[key] = None
        elif key.endswith("_port"):
            try:
                server[key] = int(value)
            except ValueError:
                raise ConfigError(f"{var}: expected a port number, got '{value}'") from None
        else:
            server[key] = value
    for var, key in (("SYN4PSE_API_KEYS", "api_keys"), ("SYN4PSE_ADMIN_KEYS", "admin_keys")):
        keys = environ.get(var)
        if keys:
            extra = [k.strip() for k in keys.split(",") if k.strip()]
            existing = server.get(key) or []
            server[key] = [*existing, *extra] if isinstance(existing, list) else existing
    store = environ.get("SYN4PSE_RESPONSES_STORE")
    if store:
        responses = server.setdefault("responses", {})
        if isinstance(responses, dict):
            responses["path"] = store
    open_bind = environ.get("SYN4PSE_ALLOW_OPEN_BIND", "").strip().lower()
    if open_bind:
        if open_bind not in _BOOLEANS:
            raise ConfigError(f"SYN4PSE_ALLOW_OPEN_BIND: expected 1/0, true/false, yes/no, got '{open_bind}'")
        server["allow_open_bind"] = _BOOLEANS[open_bind]


def parse_config(text: str, *, environ: Mapping[str, str] | None = None,
                 origin: str = DEFAULT_CONFIG_PATH) -> Config:
    """Validate a YAML document into a :class:`Config`, with environment overrides applied."""
    environ = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin}:{where} not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping with version, server, models and services")
    server = raw.get("server")
    if server is None:
        server = raw["server"] = {}
    if isinstance(server, dict):
        _apply_env(server, environ)
    try:
        top = msgspec.convert(raw, _File)
    except msgspec.ValidationError as e:
        error = _located(e, "")
        if any(environ.get(var) for var in _ENV_OVERRIDES) and "server." in str(error):
            env_hint = ", ".join(v for v in _ENV_OVERRIDES if environ.get(v))
            raise ConfigError(f"{error} (after environment overrides: {env_hint})") from None
        raise error from None

    models: dict[str, ModelConfig] = {}
    options: dict[str, msgspec.Struct] = {}
    realtime: dict[str, RealtimeModel] = {}
    for name, entry in top.models.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"models: model names must be non-empty strings, got {name!r}")
        if isinstance(entry, dict) and entry.get("type") == "realtime":
            realtime[name] = _decode_realtime(name, entry)
        else:
            models[name], options[name] = _decode_model(name, entry)
    _check_names(models)
    _check_vision(models)
    _check_realtime(realtime, models)
    return Config(server=top.server, models=models, services=top.services, backend_options=options,
                  realtime=realtime)


def load_config(path: str | os.PathLike[str] | None = None, *,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read the config file: ``path``, else ``$SYN4PSE_CONFIG_PATH``, else ``./syn4pse.yaml``."""
    environ = os.environ if environ is None else environ
    chosen = Path(path or environ.get("SYN4PSE_CONFIG_PATH") or DEFAULT_CONFIG_PATH)
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{chosen}: cannot read the configuration ({e.strerror})") from None
    config = parse_config(text, environ=environ, origin=str(chosen))
    config.source_path = chosen.resolve()
    return config
