"""Deepgram's text-to-speech wire format, ``/v1/speak`` over REST and WebSocket. Pure: no I/O.

REST: the query string becomes a :class:`SpeakSettings` and the JSON body its text. Deepgram ties
``encoding``, ``container``, ``sample_rate`` and ``bit_rate`` together (its "audio format
combinations" table); the table is checked here, so a mix Deepgram would refuse is a 400 naming the
parameter rather than audio the client cannot play. WebSocket: the query string becomes a
:class:`StreamSettings`, text frames become :data:`ClientMessage`, and the server's JSON messages are
the structs below, encoded by :func:`encode_message`.

Both speak the model's words at ``speed`` times its pace, within Deepgram's own range (0.7-1.5).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from backends.audio_answers import SpeechAudio, SpeechEvent
from compat.deepgram.common import model_uuid, number, one
from compat.errors import InvalidRequest, PayloadTooLarge, UnsupportedParameter
from compat.wire import decode_object

__all__ = [
    "REST_ENCODINGS",
    "SPEED_RANGE",
    "STREAM_ENCODINGS",
    "Clear",
    "Cleared",
    "ClientMessage",
    "Close",
    "Flush",
    "Flushed",
    "Metadata",
    "ServerMessage",
    "Speak",
    "SpeakSettings",
    "SpeakWarning",
    "StreamSettings",
    "encode_message",
    "g711_wav_header",
    "parse_client_message",
    "parse_speak_body",
    "parse_speak_query",
    "parse_stream_query",
    "speak_audio",
    "speak_content_type",
    "speak_headers",
]

SPEED_RANGE = (0.7, 1.5)
"""Deepgram's speed multipliers; a wider request is a 400 there, so it is one here."""


@dataclass(frozen=True)
class _Combination:
    """What Deepgram allows with one encoding. The first container is the default."""

    containers: tuple[str, ...]
    sample_rates: tuple[int, ...]
    default_rate: int
    bit_rates: tuple[int, ...] = ()
    """Allowed bit rates, or ``()`` with ``bit_rate_range`` for any in a range, or neither: fixed."""
    bit_rate_range: tuple[int, int] | None = None
    default_bit_rate: int | None = None


_PCM_RATES = (8000, 16000, 24000, 32000, 48000)
_G711 = _Combination(("wav", "none"), (8000, 16000), 8000)
# Deepgram's table. mp3, flac and aac have no container choice (their stream is the file): "none" is
# accepted for them as a no-op. Opus only comes in ogg: bare opus packets cannot be framed on a stream.
_REST: dict[str, _Combination] = {
    "linear16": _Combination(("wav", "none"), _PCM_RATES, 24000),
    "mulaw": _G711,
    "alaw": _G711,
    "mp3": _Combination(("none",), (22050,), 22050, bit_rates=(32000, 48000), default_bit_rate=48000),
    "opus": _Combination(("ogg",), (48000,), 48000, bit_rate_range=(4000, 650000), default_bit_rate=12000),
    "flac": _Combination(("none",), (8000, 16000, 22050, 24000, 32000, 48000), 48000),
    "aac": _Combination(("none",), (22050,), 22050, bit_rate_range=(4000, 192000), default_bit_rate=48000),
}
REST_ENCODINGS: tuple[str, ...] = tuple(_REST)
STREAM_ENCODINGS: tuple[str, ...] = ("linear16", "mulaw", "alaw")
_STREAM_RATES = {"linear16": (_PCM_RATES, 24000), "mulaw": ((8000, 16000), 8000), "alaw": ((8000, 16000), 8000)}

# Parameters Deepgram defines that would need this server to call out (it delivers results to a URL).
_UNSUPPORTED = ("callback", "callback_method")


# --------------------------------------------------------------------------------------------------
# REST


@dataclass(frozen=True)
class SpeakSettings:
    """One ``POST /v1/speak``, in neutral terms: which model, and what audio to send back."""

    model: str | None
    """As the client named it; None means the server's default speak model."""
    encoding: str
    container: str
    sample_rate: int
    bit_rate: int | None
    """For the lossy codecs (mp3, opus, aac); None where Deepgram has no bit rate (PCM, flac)."""
    speed: float | None
    """None when the client did not ask (then ``dg-speed-used`` is not sent)."""

    @property
    def stream_format(self) -> str:
        """The streaming encoder's name for this output (``backends.audio.FORMATS``).

        G.711 in WAV is the bare codec after :func:`g711_wav_header`: the encoder only writes WAV
        headers for 16-bit PCM.
        """
        if self.encoding == "linear16":
            return "wav" if self.container == "wav" else "pcm"
        return self.encoding

    @property
    def g711_wav(self) -> bool:
        """Whether the audio needs :func:`g711_wav_header` in front of it."""
        return self.encoding in ("mulaw", "alaw") and self.container == "wav"


def parse_speak_query(query: Mapping[str, Sequence[str]]) -> SpeakSettings:
    """The REST query string → settings, with Deepgram's defaults (mp3, as its SDKs and curl examples
    expect) and its combination rules."""
    for name in _UNSUPPORTED:
        if one(query, name) is not None:
            raise UnsupportedParameter(name, "audio is always returned in the response")
    encoding = _choice(query, "encoding", REST_ENCODINGS, "mp3")
    combo = _REST[encoding]
    container = (one(query, "container") or combo.containers[0]).strip().lower()
    if container not in combo.containers:
        allowed = " or ".join(f"'{c}'" for c in combo.containers)
        raise InvalidRequest(f"container '{container}' is not available with encoding '{encoding}'; use {allowed}.",
                             param="container")
    return SpeakSettings(model=_model(query), encoding=encoding, container=container,
                         sample_rate=_sample_rate(query, encoding, combo.sample_rates, combo.default_rate),
                         bit_rate=_bit_rate(query, encoding, combo), speed=_speed(query))


def parse_speak_body(body: bytes, max_chars: int | None = None) -> str:
    """The text of ``{"text": "…"}``; whatever the Content-Type said, as long as the body is that JSON.

    Text over ``max_chars`` (Deepgram's limit is 2000) is a 413, as Deepgram answers it.
    """
    raw = decode_object(body)
    text = raw.get("text")
    if text is None:
        raise InvalidRequest("Missing required parameter: 'text'.", param="text", code="missing_required_parameter")
    if not isinstance(text, str):
        raise InvalidRequest("'text' must be a string.", param="text")
    if not text.strip():
        raise InvalidRequest("'text' must not be empty.", param="text")
    if "\x00" in text:  # the phonemizer reads C strings
        raise InvalidRequest("'text' must not contain NUL characters.", param="text")
    if max_chars is not None and len(text) > max_chars:
        raise PayloadTooLarge(f"Input text of {len(text)} characters exceeds the maximum of {max_chars} characters.",
                              param="text")
    return text


def g711_wav_header(encoding: str, sample_rate: int) -> bytes:
    """A WAV header for 8-bit G.711 (format 7 mu-law, 6 A-law) whose sizes say "unknown" (0xFFFFFFFF).

    The length is not known when a stream starts; decoders read such a file to its end. The fmt chunk
    is the 18-byte form (``cbSize`` 0) that non-PCM formats call for.
    """
    tag = {"mulaw": 7, "alaw": 6}[encoding]
    return struct.pack("<4sI4s4sIHHIIHHH4sI", b"RIFF", 0xFFFFFFFF, b"WAVE", b"fmt ", 18, tag, 1, sample_rate,
                       sample_rate, 1, 8, 0, b"data", 0xFFFFFFFF)


def speak_headers(settings: SpeakSettings, *, request_id: str, requested: str, canonical: str,
                  text: str) -> dict[str, str]:
    """The ``dg-*`` headers of a REST answer (Deepgram's Python SDK v3 reads them)."""
    headers = {"dg-request-id": request_id, "dg-model-name": requested, "dg-model-uuid": model_uuid(canonical),
               "dg-char-count": str(len(text))}
    if settings.speed is not None:
        headers["dg-speed-used"] = f"{settings.speed:g}"
    return headers


def speak_content_type(settings: SpeakSettings, encoded: str) -> str:
    """The answer's content type: WAV for the wav container, else that of the encoded stream."""
    return "audio/wav" if settings.container == "wav" else encoded


async def speak_audio(events: AsyncIterator[SpeechEvent], settings: SpeakSettings,
                      sample_rate: int) -> AsyncIterator[bytes]:
    """The REST answer's body: the audio (after :func:`g711_wav_header` when it needs one)."""
    if settings.g711_wav:
        yield g711_wav_header(settings.encoding, sample_rate)
    async for event in events:
        if isinstance(event, SpeechAudio):
            yield event.data


# --------------------------------------------------------------------------------------------------
# WebSocket


@dataclass(frozen=True)
class StreamSettings:
    """One ``/v1/speak`` WebSocket: raw audio (no container) in one of :data:`STREAM_ENCODINGS`."""

    model: str | None
    encoding: str
    sample_rate: int
    speed: float | None

    @property
    def stream_format(self) -> str:
        return "pcm" if self.encoding == "linear16" else self.encoding


def parse_stream_query(query: Mapping[str, Sequence[str]]) -> StreamSettings:
    """The WebSocket query string → settings (linear16 at 24 kHz by default, as Deepgram)."""
    encoding = _choice(query, "encoding", STREAM_ENCODINGS, "linear16")
    container = one(query, "container")
    if container is not None and container.strip().lower() != "none":
        raise InvalidRequest("the speak WebSocket sends raw audio: container must be 'none'.", param="container")
    rates, default = _STREAM_RATES[encoding]
    return StreamSettings(model=_model(query), encoding=encoding,
                          sample_rate=_sample_rate(query, encoding, rates, default), speed=_speed(query))


class Speak(msgspec.Struct, tag_field="type", tag="Speak"):
    """Text to add to the buffer; nothing is spoken until a Flush."""

    text: str


class Flush(msgspec.Struct, tag_field="type", tag="Flush"):
    """Speak the buffered text now."""


class Clear(msgspec.Struct, tag_field="type", tag="Clear"):
    """Drop the buffered text and stop the audio still being made (barge-in)."""


class Close(msgspec.Struct, tag_field="type", tag="Close"):
    """Finish what is buffered, then close the socket."""


ClientMessage = Speak | Flush | Clear | Close


class Metadata(msgspec.Struct, tag_field="type", tag="Metadata"):
    request_id: str
    model_name: str
    model_version: str
    model_uuid: str


class Flushed(msgspec.Struct, tag_field="type", tag="Flushed"):
    sequence_id: int


class Cleared(msgspec.Struct, tag_field="type", tag="Cleared"):
    sequence_id: int


class SpeakWarning(msgspec.Struct, tag_field="type", tag="Warning"):
    """Something the client sent was ignored; the socket stays open."""

    description: str
    code: str


ServerMessage = Metadata | Flushed | Cleared | SpeakWarning

_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_encoder = msgspec.json.Encoder()
_KNOWN_TYPES = ("Speak", "Flush", "Clear", "Close")


def parse_client_message(data: str | bytes) -> ClientMessage | SpeakWarning:
    """A client text frame → its message, or the Warning to answer it with (it is then ignored)."""
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as e:
        detail = str(e)
        if detail.startswith("Invalid value") and "`$.type`" in detail:
            return SpeakWarning(description=f"Unknown message type ({detail}); expected one of: "
                                            f"{', '.join(_KNOWN_TYPES)}.", code="UNKNOWN_MESSAGE_TYPE")
        return SpeakWarning(description=f"Invalid message: {detail}.", code="INVALID_MESSAGE")
    except msgspec.DecodeError:
        return SpeakWarning(description="Messages must be JSON text frames such as {\"type\": \"Speak\", "
                                        "\"text\": \"...\"}.", code="INVALID_JSON")


def encode_message(message: ServerMessage) -> str:
    """A server message as the JSON of one text frame."""
    return _encoder.encode(message).decode()


# --------------------------------------------------------------------------------------------------
# Query parameters


def _model(query: Mapping[str, Sequence[str]]) -> str | None:
    value = (one(query, "model") or "").strip()
    return value or None


def _choice(query: Mapping[str, Sequence[str]], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (one(query, name) or default).strip().lower()
    if value not in allowed:
        raise InvalidRequest(f"{name} '{value}' is not supported; expected one of: {', '.join(allowed)}.", param=name)
    return value


def _integer(query: Mapping[str, Sequence[str]], name: str, default: int) -> int:
    """An integer parameter; SDKs send ``16000`` or ``16000.0`` alike."""
    value = number(query, name, default, low=1, high=10_000_000)
    if value != int(value):
        raise InvalidRequest(f"'{name}' must be a whole number, got '{one(query, name)}'.", param=name)
    return int(value)


def _sample_rate(query: Mapping[str, Sequence[str]], encoding: str, allowed: tuple[int, ...], default: int) -> int:
    rate = _integer(query, "sample_rate", default)
    if rate not in allowed:
        choices = ", ".join(map(str, allowed))
        raise InvalidRequest(f"sample_rate {rate} is not available with encoding '{encoding}'; use {choices}.",
                             param="sample_rate")
    return rate


def _bit_rate(query: Mapping[str, Sequence[str]], encoding: str, combo: _Combination) -> int | None:
    if combo.default_bit_rate is None:
        if one(query, "bit_rate") is not None:
            raise InvalidRequest(f"bit_rate is not configurable with encoding '{encoding}'.", param="bit_rate")
        return None
    rate = _integer(query, "bit_rate", combo.default_bit_rate)
    if combo.bit_rates and rate not in combo.bit_rates:
        raise InvalidRequest(f"bit_rate {rate} is not available with encoding '{encoding}'; use "
                             f"{', '.join(map(str, combo.bit_rates))}.", param="bit_rate")
    if combo.bit_rate_range is not None and not combo.bit_rate_range[0] <= rate <= combo.bit_rate_range[1]:
        low, high = combo.bit_rate_range
        raise InvalidRequest(f"bit_rate for encoding '{encoding}' must be between {low} and {high}.",
                             param="bit_rate")
    return rate


def _speed(query: Mapping[str, Sequence[str]]) -> float | None:
    if one(query, "speed") is None:
        return None
    return number(query, "speed", 1.0, low=SPEED_RANGE[0], high=SPEED_RANGE[1])
