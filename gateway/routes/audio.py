"""The OpenAI dialect's audio routes (and Groq's, under ``/openai/v1``): transcriptions, translations,
speech and the voice list. Each handler decodes the wire form, calls the serving layer, and encodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from litestar import Request, Response, Router, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromQuery
from litestar.response import Stream

from compat.errors import InvalidRequest
from compat.openai.audio import (
    SPEECH_RATE,
    ParsedTranscription,
    parse_speech_request,
    parse_transcription_form,
    speech_events,
    transcript_body,
    transcript_events,
    voice_list,
)
from compat.openai.dialect import OpenAI
from compat.wire import ParamPolicy
from gateway.errors import Fields
from gateway.fetch import fetch_url
from gateway.ownership import own
from gateway.routes.common import (
    config_of,
    dialect_of,
    dropped_headers,
    json_response,
    read_object,
    unless_disconnected,
)
from gateway.serving import serving_of
from gateway.serving.speech import AudioOutput, audio_of
from gateway.serving.transcription import AudioInput, TranscriptionOptions
from gateway.sse import event, sse_response

__all__ = ["audio_router"]


# --------------------------------------------------------------------------------------------------
# Transcriptions and translations


async def _transcribe(request: Request[Any, Any, Any],
                      task: Literal["transcribe", "translate"]) -> Response[bytes] | Stream:
    policy = ParamPolicy(config_of(request).server.unsupported_params)
    dialect = dialect_of(request)
    fields, data = await _audio_form(request, policy, dialect)
    parsed = parse_transcription_form(fields, policy, task=task)
    headers = dropped_headers(request, policy)
    serving, options = serving_of(request).transcriptions, _options(parsed)
    if not parsed.stream:
        answer = await unless_disconnected(request, serving.answer(parsed.model, AudioInput(data), options))
        body, content_type = transcript_body(answer, parsed, dialect)
        return Response(body, media_type=content_type, headers=headers)
    events = own(request, await serving.stream(parsed.model, AudioInput(data), options))
    return sse_response(_frames(transcript_events(events)), headers)


@post("/audio/transcriptions", status_code=200, opt={"fields": Fields(input="file")})
async def transcriptions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _transcribe(request, "transcribe")


@post("/audio/translations", status_code=200, opt={"fields": Fields(input="file")})
async def translations(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _transcribe(request, "translate")


def _options(parsed: ParsedTranscription) -> TranscriptionOptions:
    return TranscriptionOptions(task=parsed.task, language=parsed.language, prompt=parsed.prompt,
                                temperature=parsed.temperature, word_timestamps=parsed.words)


async def _audio_form(request: Request[Any, Any, Any], policy: ParamPolicy,
                      dialect: OpenAI) -> tuple[dict[str, list[str]], bytes]:
    """The form's text fields and the audio: the uploaded ``file``, or where the dialect's ``url`` says."""
    fields, data = await _upload(request, policy, url_allowed=dialect.accepts_audio_url)
    url = fields.pop("url", None) if dialect.accepts_audio_url else None
    if url:
        data = await fetch_url(url[0], config_of(request).server.remote_fetch, param="url")
    return fields, data


async def _upload(request: Request[Any, Any, Any], policy: ParamPolicy,
                  url_allowed: bool = False) -> tuple[dict[str, list[str]], bytes]:
    form = await request.form()
    fields: dict[str, list[str]] = {}
    upload: UploadFile | None = None
    for key, value in form.multi_items():
        if key == "file":
            if not isinstance(value, UploadFile) or upload is not None:
                raise InvalidRequest("'file' must be one uploaded audio file.", param="file")
            upload = value
        elif isinstance(value, str):
            fields.setdefault(key, []).append(value)
        else:
            policy.unknown(key)
    if upload is None:
        if url_allowed and fields.get("url"):
            return fields, b""
        raise InvalidRequest("Missing required parameter: 'file' (a multipart upload of the audio).",
                             param="file", code="missing_required_parameter")
    return fields, await upload.read()


async def _frames(payloads: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """An SSE frame per payload (these streams end without ``[DONE]``)."""
    async for payload in payloads:
        yield event(payload)


# --------------------------------------------------------------------------------------------------
# Speech


@post("/audio/speech", status_code=200, opt={"fields": Fields(input="input")})
async def speech(request: Request[Any, Any, Any]) -> Stream:
    raw, policy = await read_object(request)
    parsed = parse_speech_request(raw, policy)
    headers = dropped_headers(request, policy)
    spoken = await serving_of(request).speech.speak(parsed.model, parsed.text,
                                                    AudioOutput(parsed.response_format, SPEECH_RATE),
                                                    voice=parsed.voice, speed=parsed.speed)
    events = own(request, spoken.events)
    if parsed.sse:
        return sse_response(_frames(speech_events(events, len(parsed.text))), headers)
    return Stream(audio_of(events), media_type=spoken.content_type, headers=headers)


@get("/audio/voices")
async def voices(request: Request[Any, Any, Any], model: FromQuery[str | None] = None) -> Response[bytes]:
    """The voices of each speech model, from the configuration (nothing is loaded or downloaded)."""
    return json_response(voice_list(serving_of(request).speech.voices(model)))


def audio_router(path: str, max_upload_bytes: int, dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[transcriptions, translations, speech, voices],
                  request_max_body_size=max_upload_bytes, opt={"dialect": dialect})
