"""OpenAI's Realtime API (GA) on the wire: the client's events in, the session object and errors out.

Every frame is a JSON text message with a ``type``. :func:`parse_client_event` reads one into its
struct (an unknown type or field is an ``invalid_request_error`` naming it, as OpenAI answers);
``session.update`` is read into a :class:`SessionPatch` whose unset fields change nothing, and
:func:`apply_patch` folds it into the session's :class:`Settings` (what the session serves with, in the
gateway's own terms). :func:`session_object` is the session as ``session.created``/``.updated`` show it.
The conversation's items and the server's other events are in :mod:`compat.openai.realtime_items`.

Audio is base64 inside JSON: ``audio/pcm`` (24 kHz, 16-bit little-endian mono), ``audio/pcmu`` and
``audio/pcma`` (G.711 at 8 kHz), in and out.
"""

from __future__ import annotations

import binascii
import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from backends.types import ToolSpec
from compat.errors import InvalidRequest
from compat.wire import to_struct

T = TypeVar("T")

__all__ = [
    "DEFAULT_VOICE",
    "OPENAI_VOICES",
    "AudioFormat",
    "ClientEvent",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemRetrieve",
    "ConversationItemTruncate",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCommit",
    "OutputAudioBufferClear",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseParams",
    "SemanticVad",
    "ServerVad",
    "SessionPatch",
    "SessionUpdate",
    "Settings",
    "apply_patch",
    "decode_audio",
    "error_event",
    "new_id",
    "parse_client_event",
    "parse_client_secret_request",
    "session_object",
    "tool_choice_of",
    "tools_of",
]

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
"""The voices OpenAI's realtime models speak with; one the speech model lacks is spoken in its own voice."""
DEFAULT_VOICE = "alloy"

FORMATS = {"audio/pcm": ("linear16", 24000), "audio/pcmu": ("mulaw", 8000), "audio/pcma": ("alaw", 8000)}
"""A format's headerless encoding (``backends.audio.ENCODINGS``) and rate."""


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``event_…``, ``item_…``, ``resp_…``, ``sess_…``, ``call_…``."""
    return f"{prefix}_{secrets.token_urlsafe(15).replace('-', 'A').replace('_', 'B')}"


class _Wire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class AudioFormat(_Wire):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: int | UnsetType = UNSET

    @property
    def encoding(self) -> str:
        return FORMATS[self.type][0]

    @property
    def sample_rate(self) -> int:
        return FORMATS[self.type][1]

    def wire(self) -> dict[str, Any]:
        return {"type": self.type, "rate": self.sample_rate} if self.type == "audio/pcm" else {"type": self.type}


class ServerVad(_Wire, tag="server_vad", tag_field="type"):
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None


class SemanticVad(_Wire, tag="semantic_vad", tag_field="type"):
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = ServerVad | SemanticVad


class Transcription(_Wire):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class NoiseReduction(_Wire):
    type: Literal["near_field", "far_field"]


class AudioInput(_Wire):
    format: AudioFormat | UnsetType = UNSET
    transcription: Transcription | UnsetType | None = UNSET
    turn_detection: TurnDetection | UnsetType | None = UNSET
    noise_reduction: NoiseReduction | UnsetType | None = UNSET


class AudioOutput(_Wire):
    format: AudioFormat | UnsetType = UNSET
    voice: str | UnsetType = UNSET
    speed: float | UnsetType = UNSET


class Audio(_Wire):
    input: AudioInput | UnsetType = UNSET
    output: AudioOutput | UnsetType = UNSET


class FunctionTool(_Wire, kw_only=True):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class NamedFunction(_Wire):
    type: Literal["function"]
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedFunction


class SessionPatch(_Wire):
    """``session.update``'s ``session``: what it names changes, the rest stays."""

    type: Literal["realtime", "transcription"] | UnsetType = UNSET
    model: str | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    output_modalities: list[Literal["text", "audio"]] | UnsetType = UNSET
    audio: Audio | UnsetType = UNSET
    tools: list[FunctionTool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    tracing: Literal["auto"] | dict[str, Any] | UnsetType | None = UNSET
    truncation: Literal["auto", "disabled"] | dict[str, Any] | UnsetType = UNSET
    include: list[Literal["item.input_audio_transcription.logprobs"]] | UnsetType | None = UNSET
    prompt: dict[str, Any] | UnsetType | None = UNSET
    id: str | UnsetType = UNSET
    object: str | UnsetType = UNSET
    expires_at: int | UnsetType = UNSET


@dataclass(slots=True)
class Settings:
    """A session's settings, in the gateway's terms."""

    kind: Literal["realtime", "transcription"]
    model: str
    """The realtime model (or, for a transcription session, the name asked for)."""
    id: str = field(default_factory=lambda: new_id("sess"))
    created: int = field(default_factory=lambda: int(time.time()))
    instructions: str = ("You are a helpful, witty and friendly voice assistant. Answer briefly, in a few"
                         " spoken sentences.")
    modalities: tuple[str, ...] = ("audio",)
    input_format: AudioFormat = field(default_factory=lambda: AudioFormat(type="audio/pcm"))
    output_format: AudioFormat = field(default_factory=lambda: AudioFormat(type="audio/pcm"))
    voice: str = DEFAULT_VOICE
    speed: float = 1.0
    turn_detection: TurnDetection | None = field(default_factory=ServerVad)
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | None = None
    temperature: float = 0.8
    tracing: str | dict[str, Any] | None = None
    truncation: str | dict[str, Any] = "auto"
    logprobs: bool = False
    prompt: dict[str, Any] | None = None


def apply_patch(settings: Settings, patch: SessionPatch) -> Settings:
    """``settings`` with ``patch`` applied (a new object: a refused patch changes nothing)."""
    s = dataclasses.replace(settings)
    if not isinstance(patch.type, UnsetType) and patch.type != s.kind:
        raise InvalidRequest(f"This is a {s.kind} session; its type cannot change to '{patch.type}'.",
                             param="session.type", code="invalid_value")
    if not isinstance(patch.instructions, UnsetType):
        s.instructions = patch.instructions
    if not isinstance(patch.output_modalities, UnsetType):
        if not patch.output_modalities or len(set(patch.output_modalities)) != len(patch.output_modalities):
            raise InvalidRequest("'session.output_modalities' must be [\"audio\"] or [\"text\"].",
                                 param="session.output_modalities", code="invalid_value")
        s.modalities = tuple(patch.output_modalities)
    if not isinstance(patch.tools, UnsetType):
        s.tools = tuple(patch.tools)
    if not isinstance(patch.tool_choice, UnsetType):
        s.tool_choice = patch.tool_choice
    if not isinstance(patch.max_output_tokens, UnsetType):
        s.max_output_tokens = _max_tokens(patch.max_output_tokens, "session.max_output_tokens")
    if not isinstance(patch.temperature, UnsetType):
        s.temperature = _temperature(patch.temperature, "session.temperature")
    if not isinstance(patch.tracing, UnsetType):
        s.tracing = patch.tracing
    if not isinstance(patch.truncation, UnsetType):
        s.truncation = patch.truncation
    if not isinstance(patch.include, UnsetType):
        s.logprobs = bool(patch.include)
    if not isinstance(patch.prompt, UnsetType) and patch.prompt is not None:
        raise InvalidRequest("Stored prompts ('session.prompt') are not available on this server; send the"
                             " instructions instead.", param="session.prompt", code="unsupported_parameter")
    if not isinstance(patch.audio, UnsetType):
        _apply_audio(s, patch.audio)
    if isinstance(s.tool_choice, NamedFunction) and s.tool_choice.name not in {t.name for t in s.tools}:
        raise InvalidRequest(f"'session.tool_choice' names the function '{s.tool_choice.name}', which is not"
                             " among the session's tools.", param="session.tool_choice", code="invalid_value")
    return s


def _apply_audio(s: Settings, audio: Audio) -> None:
    if not isinstance(audio.input, UnsetType):
        given = audio.input
        if not isinstance(given.format, UnsetType):
            s.input_format = _format(given.format, "session.audio.input.format")
        if not isinstance(given.transcription, UnsetType):
            s.transcription = given.transcription
        if not isinstance(given.turn_detection, UnsetType):
            s.turn_detection = _turn_detection(given.turn_detection)
        if not isinstance(given.noise_reduction, UnsetType):
            s.noise_reduction = given.noise_reduction
    if not isinstance(audio.output, UnsetType):
        out = audio.output
        if not isinstance(out.format, UnsetType):
            s.output_format = _format(out.format, "session.audio.output.format")
        if not isinstance(out.voice, UnsetType):
            s.voice = out.voice
        if not isinstance(out.speed, UnsetType):
            if not 0.25 <= out.speed <= 1.5:
                raise InvalidRequest(f"Invalid 'session.audio.output.speed': {out.speed}; expected a number from"
                                     " 0.25 to 1.5.", param="session.audio.output.speed", code="invalid_value")
            s.speed = out.speed


def _format(given: AudioFormat, param: str) -> AudioFormat:
    if given.type == "audio/pcm" and not isinstance(given.rate, UnsetType) and given.rate != 24000:
        raise InvalidRequest(f"Invalid '{param}.rate': {given.rate}. audio/pcm is 24000 Hz.", param=f"{param}.rate",
                             code="invalid_value")
    return given


def _turn_detection(given: TurnDetection | None) -> TurnDetection | None:
    if isinstance(given, ServerVad):
        param = "session.audio.input.turn_detection"
        if not 0.0 <= given.threshold <= 1.0:
            raise InvalidRequest(f"Invalid '{param}.threshold': {given.threshold}; expected 0 to 1.",
                                 param=f"{param}.threshold", code="invalid_value")
        bounds = {"prefix_padding_ms": (0, 10_000), "silence_duration_ms": (0, 10_000),
                  "idle_timeout_ms": (5_000, 30_000)}
        for key, (low, high) in bounds.items():
            value = getattr(given, key)
            if value is not None and not low <= value <= high:
                raise InvalidRequest(f"Invalid '{param}.{key}': {value}; expected {low} to {high}.",
                                     param=f"{param}.{key}", code="invalid_value")
    return given


def _max_tokens(value: int | Literal["inf"], param: str) -> int | None:
    if value == "inf":
        return None
    assert isinstance(value, int)
    if not 1 <= value <= 4096:
        raise InvalidRequest(f"Invalid '{param}': {value}; expected 1 to 4096 or 'inf'.", param=param,
                             code="invalid_value")
    return value


def _temperature(value: float, param: str) -> float:
    if not 0.0 <= value <= 2.0:
        raise InvalidRequest(f"Invalid '{param}': {value}; expected 0 to 2.", param=param, code="invalid_value")
    return value


def tools_of(tools: tuple[FunctionTool, ...]) -> tuple[ToolSpec, ...]:
    return tuple(ToolSpec(name=t.name, description=t.description, parameters=t.parameters) for t in tools)


def tool_choice_of(choice: ToolChoice) -> str:
    """The chat's ``tool_choice``: "auto", "none", "required" or the one function's name."""
    return choice.name if isinstance(choice, NamedFunction) else choice


def session_object(s: Settings) -> dict[str, Any]:
    """The session as the server shows it."""
    def turn() -> dict[str, Any] | None:
        return None if s.turn_detection is None else msgspec.to_builtins(s.turn_detection)

    transcription = None if s.transcription is None else msgspec.to_builtins(s.transcription)
    noise = None if s.noise_reduction is None else msgspec.to_builtins(s.noise_reduction)
    audio_in = {"format": s.input_format.wire(), "transcription": transcription, "noise_reduction": noise,
                "turn_detection": turn()}
    base = {"object": "realtime.session" if s.kind == "realtime" else "realtime.transcription_session",
            "type": s.kind, "id": s.id, "expires_at": s.created + 3600}
    if s.kind == "transcription":
        return {**base, "audio": {"input": audio_in},
                "include": ["item.input_audio_transcription.logprobs"] if s.logprobs else None}
    return {**base, "model": s.model, "output_modalities": list(s.modalities), "instructions": s.instructions,
            "tools": [msgspec.to_builtins(t) for t in s.tools],
            "tool_choice": msgspec.to_builtins(s.tool_choice),
            "max_output_tokens": "inf" if s.max_output_tokens is None else s.max_output_tokens,
            "tracing": s.tracing, "truncation": s.truncation, "prompt": s.prompt,
            "include": ["item.input_audio_transcription.logprobs"] if s.logprobs else None,
            "audio": {"input": audio_in,
                      "output": {"format": s.output_format.wire(), "voice": s.voice, "speed": s.speed}}}


# -- client events --------------------------------------------------------------------------------------


class _Event(_Wire, tag_field="type", kw_only=True):
    event_id: str | None = None


class SessionUpdate(_Event, tag="session.update", kw_only=True):
    session: dict[str, Any]


class InputAudioBufferAppend(_Event, tag="input_audio_buffer.append", kw_only=True):
    audio: str


class InputAudioBufferCommit(_Event, tag="input_audio_buffer.commit", kw_only=True):
    pass


class InputAudioBufferClear(_Event, tag="input_audio_buffer.clear", kw_only=True):
    pass


class ConversationItemCreate(_Event, tag="conversation.item.create", kw_only=True):
    item: dict[str, Any]
    previous_item_id: str | None = None


class ConversationItemRetrieve(_Event, tag="conversation.item.retrieve", kw_only=True):
    item_id: str


class ConversationItemTruncate(_Event, tag="conversation.item.truncate", kw_only=True):
    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemDelete(_Event, tag="conversation.item.delete", kw_only=True):
    item_id: str


class ResponseCreate(_Event, tag="response.create", kw_only=True):
    response: dict[str, Any] | None = None


class ResponseCancel(_Event, tag="response.cancel", kw_only=True):
    response_id: str | None = None


class OutputAudioBufferClear(_Event, tag="output_audio_buffer.clear", kw_only=True):
    pass


ClientEvent = (SessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear
               | ConversationItemCreate | ConversationItemRetrieve | ConversationItemTruncate
               | ConversationItemDelete | ResponseCreate | ResponseCancel | OutputAudioBufferClear)

_EVENT_TYPES = {cls.__struct_config__.tag: cls for cls in ClientEvent.__args__}
_json = msgspec.json.Decoder()


def parse_client_event(raw: bytes | str) -> tuple[ClientEvent, str | None]:
    """One client message → its event, and the client's ``event_id`` for an error about it.

    Raises ``InvalidRequest`` (with the ``event_id`` it read, if any, as ``.event_id``)."""
    try:
        value = _json.decode(raw)
    except msgspec.DecodeError:
        raise _Refused("We could not parse the JSON body of your event. Events must be valid JSON.",
                       code="invalid_json", event_id=None) from None
    if not isinstance(value, dict):
        raise _Refused("An event must be a JSON object.", code="invalid_event", event_id=None)
    event_id = value.get("event_id") if isinstance(value.get("event_id"), str) else None
    kind = value.get("type")
    if not isinstance(kind, str):
        raise _Refused("Missing required parameter: 'type'.", param="type", code="missing_required_parameter",
                       event_id=event_id)
    if kind not in _EVENT_TYPES:
        raise _Refused(f"Invalid value: '{kind[:64]}'. Supported values are: {', '.join(sorted(_EVENT_TYPES))}.",
                       param="type", code="invalid_value", event_id=event_id)
    try:
        event: ClientEvent = to_struct(value, _EVENT_TYPES[kind])
    except InvalidRequest as e:
        raise _Refused(e.message, param=e.param, code=e.code, event_id=event_id) from None
    return event, event_id


class _Refused(InvalidRequest):
    def __init__(self, message: str, *, event_id: str | None, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.event_id = event_id


def _under(field: str, raw: dict[str, Any], type_: type[T]) -> T:
    """``raw`` (the event's ``field``) validated into ``type_``; its errors name ``field.…``."""
    try:
        return to_struct(raw, type_)
    except InvalidRequest as e:
        param = f"{field}.{e.param}" if e.param else field
        raise InvalidRequest(e.message.replace(f"'{e.param}'", f"'{param}'"), param=param, code=e.code) from None


def parse_patch(raw: dict[str, Any]) -> SessionPatch:
    """``session.update``'s session; its fields' errors name ``session.…``."""
    return _under("session", raw, SessionPatch)


class ResponseAudioOutput(_Wire):
    format: AudioFormat | UnsetType = UNSET
    voice: str | UnsetType = UNSET


class ResponseAudio(_Wire):
    output: ResponseAudioOutput | UnsetType = UNSET


class ResponseParams(_Wire):
    """``response.create``'s ``response``: this response's own settings over the session's."""

    conversation: Literal["auto", "none"] | str = "auto"
    input: list[dict[str, Any]] | UnsetType = UNSET
    instructions: str | UnsetType | None = UNSET
    output_modalities: list[Literal["text", "audio"]] | UnsetType = UNSET
    tools: list[FunctionTool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    metadata: dict[str, str] | None = None
    audio: ResponseAudio | UnsetType = UNSET
    prompt: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | UnsetType = UNSET
    voice: str | UnsetType = UNSET
    output_audio_format: str | UnsetType = UNSET


def response_settings(s: Settings, raw: dict[str, Any] | None) -> tuple[Settings, ResponseParams]:
    """The settings one response runs with, and what it asked for."""
    if raw is None:
        return s, ResponseParams()
    params = _under("response", raw, ResponseParams)
    if params.conversation not in ("auto", "none"):
        raise InvalidRequest("'response.conversation' must be 'auto' or 'none'.", param="response.conversation",
                             code="invalid_value")
    if params.prompt is not None:
        raise InvalidRequest("Stored prompts ('response.prompt') are not available on this server.",
                             param="response.prompt", code="unsupported_parameter")
    patch = SessionPatch(instructions=UNSET if params.instructions is None else params.instructions,
                         output_modalities=params.output_modalities if not isinstance(
                             params.output_modalities, UnsetType) else params.modalities,
                         tools=params.tools, tool_choice=params.tool_choice,
                         max_output_tokens=params.max_output_tokens, temperature=params.temperature)
    out = dataclasses.replace(s)
    try:
        out = apply_patch(out, patch)
    except InvalidRequest as e:
        param = (e.param or "").replace("session.", "response.", 1)
        raise InvalidRequest(e.message.replace("session.", "response."), param=param, code=e.code) from None
    audio = params.audio
    if not isinstance(audio, UnsetType) and not isinstance(audio.output, UnsetType):
        if not isinstance(audio.output.format, UnsetType):
            out.output_format = _format(audio.output.format, "response.audio.output.format")
        if not isinstance(audio.output.voice, UnsetType):
            out.voice = audio.output.voice
    if not isinstance(params.voice, UnsetType):
        out.voice = params.voice
    return out, params


class ExpiresAfter(_Wire):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = 600


class ClientSecretRequest(_Wire):
    """``POST /v1/realtime/client_secrets``."""

    expires_after: ExpiresAfter = msgspec.field(default_factory=ExpiresAfter)
    session: dict[str, Any] | None = None

    @property
    def seconds(self) -> int:
        return self.expires_after.seconds


def parse_client_secret_request(raw: dict[str, Any]) -> ClientSecretRequest:
    body = to_struct(raw, ClientSecretRequest)
    if not 10 <= body.seconds <= 7200:
        raise InvalidRequest(f"Invalid 'expires_after.seconds': {body.seconds}; expected 10 to 7200.",
                             param="expires_after.seconds", code="invalid_value")
    return body


def decode_audio(b64: str, param: str = "audio") -> bytes:
    """An append's base64 audio; refused when it is not base64."""
    try:
        return binascii.a2b_base64(b64)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"Invalid '{param}': the audio must be base64-encoded.", param=param,
                             code="invalid_value") from None


def error_event(kind: str, message: str, *, code: str | None = None, param: str | None = None,
                event_id: str | None = None) -> dict[str, Any]:
    """An ``error`` event: the socket stays open."""
    return {"type": "error", "event_id": new_id("event"),
            "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}}
