"""OpenAI's audio API: transcriptions and translations (multipart in), speech (JSON in), and the
response formats: json, text, srt, vtt, verbose_json, and the streaming events of both directions.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec

from backends.audio_answers import SpeechAudio, SpeechEvent, Transcribed, TranscriptDelta, TranscriptEvent
from backends.types import TranscriptionInfo, TranscriptSegment
from compat.errors import InvalidRequest
from compat.openai.dialect import OpenAI
from compat.openai.languages import language_name
from compat.wire import ParamPolicy, to_struct

__all__ = [
    "SPEECH_FORMATS",
    "SPEECH_RATE",
    "ParsedSpeech",
    "ParsedTranscription",
    "Transcript",
    "parse_speech_request",
    "parse_transcription_form",
    "render_transcript",
    "speech_delta_event",
    "speech_done_event",
    "speech_events",
    "transcript_body",
    "transcript_delta_event",
    "transcript_done_event",
    "transcript_events",
    "voice_list",
]

TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MAX_SPEECH_INPUT = 4096  # characters, OpenAI's limit
SPEECH_RATE = 24000
"""OpenAI's speech output rate, for every format."""

# Multipart fields of /audio/transcriptions as the SDK sends them; translations take a subset.
_TRANSCRIBE_FIELDS = frozenset({
    "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
    "timestamp_granularities", "stream", "include[]", "include", "chunking_strategy",
    "known_speaker_names[]", "known_speaker_references[]",
})
_TRANSLATE_FIELDS = frozenset({"model", "prompt", "response_format", "temperature"})


class ParsedTranscription(msgspec.Struct, kw_only=True):
    model: str
    task: Literal["transcribe", "translate"]
    response_format: str = "json"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    words: bool = False
    segments: bool = True
    stream: bool = False


def _one(fields: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"'{name}' was given more than once.", param=name)
    return values[0]


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidRequest(f"'{name}' must be true or false.", param=name)


def _temperature(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise InvalidRequest("'temperature' must be a number.", param="temperature") from None
    if not 0.0 <= t <= 1.0 or math.isnan(t):
        raise InvalidRequest("'temperature' must be between 0 and 1.", param="temperature")
    return t


def parse_transcription_form(fields: Mapping[str, Sequence[str]], policy: ParamPolicy, *,
                             task: Literal["transcribe", "translate"]) -> ParsedTranscription:
    """Validate the text fields of a transcription or translation form (``file`` is the route's)."""
    known = _TRANSCRIBE_FIELDS if task == "transcribe" else _TRANSLATE_FIELDS
    for name in fields:
        if name == "file":
            continue
        if name.startswith("chunking_strategy[") and task == "transcribe":
            continue
        if name not in known:
            policy.unknown(name)
    model = _one(fields, "model")
    if not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model",
                             code="missing_required_parameter")
    parsed = ParsedTranscription(model=model, task=task)
    fmt = _one(fields, "response_format")
    if fmt is not None:
        if fmt == "diarized_json":
            policy.unsupported("response_format", "speaker diarization is not supported")
        elif fmt not in TRANSCRIPT_FORMATS:
            raise InvalidRequest(f"'response_format' must be one of {', '.join(TRANSCRIPT_FORMATS)}.",
                                 param="response_format")
        else:
            parsed.response_format = fmt
    parsed.prompt = _one(fields, "prompt") or None
    temperature = _one(fields, "temperature")
    if temperature is not None:
        parsed.temperature = _temperature(temperature)
    if task == "translate":
        return parsed

    language = _one(fields, "language")
    if language:
        parsed.language = language.strip().lower().split("-")[0]
    granularities = [*fields.get("timestamp_granularities[]", ()), *fields.get("timestamp_granularities", ())]
    for g in granularities:
        if g not in ("word", "segment"):
            raise InvalidRequest("'timestamp_granularities[]' takes 'word' and/or 'segment'.",
                                 param="timestamp_granularities")
    if granularities:
        if parsed.response_format != "verbose_json":
            raise InvalidRequest("'timestamp_granularities' needs response_format 'verbose_json'.",
                                 param="timestamp_granularities")
        parsed.words = "word" in granularities
        parsed.segments = "segment" in granularities
    stream = _one(fields, "stream")
    if stream is not None and _bool(stream, "stream"):
        if parsed.response_format in ("srt", "vtt", "verbose_json", "text"):
            raise InvalidRequest("Streaming returns text events; use response_format 'json' with stream.",
                                 param="stream")
        parsed.stream = True
    if [*fields.get("include[]", ()), *fields.get("include", ())]:
        policy.unsupported("include", "token log-probabilities are not returned")
    chunking = _one(fields, "chunking_strategy")
    if any(k.startswith("chunking_strategy[") for k in fields) or (chunking not in (None, "auto")):
        policy.unsupported("chunking_strategy", "only 'auto' is supported")
    if fields.get("known_speaker_names[]") or fields.get("known_speaker_references[]"):
        policy.unsupported("known_speaker_names", "speaker diarization is not supported")
    return parsed


# --------------------------------------------------------------------------------------------------
# Transcription responses


class Transcript(msgspec.Struct, kw_only=True):
    """A finished transcription, as the domain gives it."""

    info: TranscriptionInfo
    segments: list[TranscriptSegment]
    task: str = "transcribe"

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


class _Usage(msgspec.Struct):
    seconds: int
    type: str = "duration"


class _Json(msgspec.Struct):
    text: str
    usage: _Usage


class _Segment(msgspec.Struct):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class _Word(msgspec.Struct):
    word: str
    start: float
    end: float


class _Verbose(msgspec.Struct, omit_defaults=True):
    task: str
    language: str
    duration: float
    text: str
    usage: _Usage
    segments: list[_Segment] | None = None
    words: list[_Word] | None = None


def _usage(info: TranscriptionInfo) -> _Usage:
    return _Usage(seconds=max(1, math.ceil(info.duration)))


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(segments: Sequence[TranscriptSegment], sep: str) -> list[str]:
    return [f"{_clock(s.start, sep)} --> {_clock(s.end, sep)}\n{s.text.strip()}\n" for s in segments]


_json = msgspec.json.Encoder()


def render_transcript(t: Transcript, fmt: str, *, words: bool = False, segments: bool = True) -> tuple[bytes, str]:
    """The body and content type of a finished transcript in ``fmt``."""
    if fmt == "text":
        return (t.text + "\n").encode(), "text/plain; charset=utf-8"
    if fmt == "srt":
        body = "\n".join(f"{i}\n{cue}" for i, cue in enumerate(_cues(t.segments, ","), start=1))
        return body.encode(), "text/plain; charset=utf-8"
    if fmt == "vtt":
        return ("WEBVTT\n\n" + "\n".join(_cues(t.segments, "."))).encode(), "text/vtt; charset=utf-8"
    if fmt == "verbose_json":
        verbose = _Verbose(
            task=t.task, language=language_name(t.info.language), duration=round(t.info.duration, 3),
            text=t.text, usage=_usage(t.info),
            segments=[_Segment(id=s.id, seek=s.seek, start=round(s.start, 3), end=round(s.end, 3), text=s.text,
                               tokens=list(s.tokens), temperature=s.temperature, avg_logprob=s.avg_logprob,
                               compression_ratio=s.compression_ratio, no_speech_prob=s.no_speech_prob)
                      for s in t.segments] if segments else None,
            words=[_Word(word=w.word.strip(), start=round(w.start, 3), end=round(w.end, 3))
                   for s in t.segments for w in s.words] if words else None,
        )
        return _json.encode(verbose), "application/json"
    return _json.encode(_Json(text=t.text, usage=_usage(t.info))), "application/json"


def transcript_body(answer: Transcribed, parsed: ParsedTranscription, dialect: OpenAI) -> tuple[bytes, str]:
    """The body and content type of a finished transcription, as the request asked, in the dialect."""
    body, content_type = render_transcript(Transcript(info=answer.info, segments=list(answer.segments),
                                                      task=parsed.task),
                                           parsed.response_format, words=parsed.words, segments=parsed.segments)
    return dialect.transcript(body, content_type), content_type


class _TextDelta(msgspec.Struct):
    delta: str
    type: str = "transcript.text.delta"


class _TextDone(msgspec.Struct):
    text: str
    usage: _Usage
    type: str = "transcript.text.done"


def transcript_delta_event(delta: str) -> _TextDelta:
    return _TextDelta(delta=delta)


def transcript_done_event(text: str, info: TranscriptionInfo) -> _TextDone:
    return _TextDone(text=text, usage=_usage(info))


async def transcript_events(events: AsyncIterator[TranscriptEvent]) -> AsyncIterator[_TextDelta | _TextDone]:
    """A streamed transcription as OpenAI's ``transcript.text.*`` events."""
    async for event in events:
        if isinstance(event, TranscriptDelta):
            yield transcript_delta_event(event.text)
        else:
            yield transcript_done_event(event.text, event.info)


# --------------------------------------------------------------------------------------------------
# Speech


class VoiceRef(msgspec.Struct, forbid_unknown_fields=True):
    id: str


class SpeechBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SPEECH_INPUT)]
    voice: str | VoiceRef
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] | None = None
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] | None = None


class ParsedSpeech(msgspec.Struct, kw_only=True):
    model: str
    text: str
    voice: str
    response_format: str
    speed: float
    sse: bool


def parse_speech_request(raw: dict[str, Any], policy: ParamPolicy) -> ParsedSpeech:
    policy.screen(raw, frozenset(SpeechBody.__struct_fields__))
    body = to_struct(raw, SpeechBody)
    if not body.input.strip():
        raise InvalidRequest("'input' holds no text to speak.", param="input")
    if "\x00" in body.input:  # the phonemizer reads C strings
        raise InvalidRequest("'input' must not contain NUL characters.", param="input")
    if body.instructions:
        policy.unsupported("instructions", "this voice cannot follow speaking instructions")
    voice = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
    return ParsedSpeech(model=body.model, text=body.input, voice=voice,
                        response_format=body.response_format or "mp3", speed=body.speed or 1.0,
                        sse=body.stream_format == "sse")


class _AudioDelta(msgspec.Struct):
    audio: str
    type: str = "speech.audio.delta"


class _SpeechUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class _AudioDone(msgspec.Struct):
    usage: _SpeechUsage
    type: str = "speech.audio.done"


def speech_delta_event(audio: bytes) -> _AudioDelta:
    return _AudioDelta(audio=base64.b64encode(audio).decode("ascii"))


def speech_done_event(characters: int, seconds: float) -> _AudioDone:
    """Usage of a local voice: characters read in, and audio out at 50 units a second."""
    out = round(seconds * 50)
    return _AudioDone(usage=_SpeechUsage(input_tokens=characters, output_tokens=out, total_tokens=characters + out))


async def speech_events(events: AsyncIterator[SpeechEvent], characters: int) -> AsyncIterator[_AudioDelta | _AudioDone]:
    """Streamed speech as OpenAI's ``speech.audio.*`` events (``stream_format: sse``)."""
    async for event in events:
        if isinstance(event, SpeechAudio):
            yield speech_delta_event(event.data)
        else:
            yield speech_done_event(characters, event.seconds)


def voice_list(voices: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``GET /audio/voices``: each ``(voice, model)``."""
    return {"object": "list", "data": [{"id": voice, "object": "voice", "model": model} for voice, model in voices]}
