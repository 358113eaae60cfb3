"""The OpenAI dialect's audio routes: transcriptions, translations, speech and the voice list."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from litestar import Request, Response, Router, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromQuery
from litestar.response import Stream

from backends.audio import StreamEncoder, decode
from backends.base import SpeechBackend, TranscriptionBackend
from backends.errors import BadAudio
from backends.types import (
    ModelType,
    SpeechRequest,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
)
from compat.errors import InvalidRequest
from compat.groq import add_x_groq, new_groq_id
from compat.openai.audio import (
    Transcript,
    parse_speech_request,
    parse_transcription_form,
    render_transcript,
    speech_delta_event,
    speech_done_event,
    transcript_delta_event,
    transcript_done_event,
)
from compat.wire import ParamPolicy
from gateway.errors import Fields, from_domain
from gateway.fetch import fetch_url
from gateway.routes.common import (
    backend_as,
    config_of,
    dropped_headers,
    json_response,
    read_object,
    registry_of,
    speech_spans,
    unless_disconnected,
)
from gateway.routes.openai import is_groq
from gateway.sse import event, sse_response

__all__ = ["audio_router"]

log = logging.getLogger("syn4pse.audio")
SPEECH_RATE = 24000
"""OpenAI's speech output rate, for every format."""
MAX_AUDIO_SECONDS = 4 * 3600
"""Longest audio an upload may decode to: a few KB of some codecs expand to hours of samples."""


# --------------------------------------------------------------------------------------------------
# Transcriptions and translations


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


async def _decoded(data: bytes, param: str) -> npt.NDArray[np.float32]:
    try:
        return await asyncio.to_thread(decode, data, max_seconds=MAX_AUDIO_SECONDS)
    except BadAudio as e:
        raise from_domain(e, Fields(input=param)) from None


async def _transcribe(request: Request[Any, Any, Any],
                      task: Literal["transcribe", "translate"]) -> Response[bytes] | Stream:
    policy = ParamPolicy(config_of(request).server.unsupported_params)
    groq_id = new_groq_id() if is_groq(request) else None
    fields, data = await _upload(request, policy, url_allowed=groq_id is not None)
    url = fields.pop("url", None) if groq_id else None
    if url:  # Groq lets clients name the audio by URL instead of uploading it
        data = await fetch_url(url[0], config_of(request).server.remote_fetch, param="url")
    parsed = parse_transcription_form(fields, policy, task=task)
    headers = dropped_headers(request, policy)
    registry = registry_of(request)
    registry.resolve(parsed.model)
    audio = await _decoded(data, "file")

    lease = await registry.acquire(parsed.model, ModelType.STT)
    try:
        backend: TranscriptionBackend = backend_as(lease, TranscriptionBackend)
        speech = await speech_spans(registry, parsed.model, audio)
        events = backend.transcribe(TranscriptionRequest(
            audio=audio, task=task, language=parsed.language, prompt=parsed.prompt,
            temperature=parsed.temperature, word_timestamps=parsed.words, speech=speech))
        first = await anext(events)  # checks the request: a bad one fails here, with a real status
        assert isinstance(first, TranscriptionInfo)
    except BaseException:
        lease.release()
        raise

    if not parsed.stream:
        async def collect() -> list[TranscriptSegment]:
            return [s async for s in events if isinstance(s, TranscriptSegment)]

        try:
            segments = await unless_disconnected(request, collect())
        finally:
            lease.release()
        body, content_type = render_transcript(Transcript(info=first, segments=segments, task=task),
                                               parsed.response_format, words=parsed.words,
                                               segments=parsed.segments)
        if groq_id and content_type == "application/json":
            body = add_x_groq(body, groq_id)
        return Response(body, media_type=content_type, headers=headers)

    async def frames() -> AsyncIterator[bytes]:
        try:
            text = ""
            async for segment in events:
                if not isinstance(segment, TranscriptSegment):
                    continue
                delta = segment.text if text else segment.text.lstrip()
                if delta:
                    text += delta
                    yield event(transcript_delta_event(delta))
            yield event(transcript_done_event(text, first))
        finally:
            lease.release()

    return sse_response(frames(), headers)


@post("/audio/transcriptions", status_code=200, opt={"fields": Fields(input="file")})
async def transcriptions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _transcribe(request, "transcribe")


@post("/audio/translations", status_code=200, opt={"fields": Fields(input="file")})
async def translations(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _transcribe(request, "translate")


# --------------------------------------------------------------------------------------------------
# Speech


class _Spoken:
    """What a speech stream has synthesised so far."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.sentences = 0

    def add(self, seconds: float) -> None:
        self.seconds += seconds
        self.sentences += 1


@post("/audio/speech", status_code=200, opt={"fields": Fields(input="input")})
async def speech(request: Request[Any, Any, Any]) -> Stream:
    raw, policy = await read_object(request)
    parsed = parse_speech_request(raw, policy)
    headers = dropped_headers(request, policy)
    lease = await registry_of(request).acquire(parsed.model, ModelType.TTS)
    backend: SpeechBackend = backend_as(lease, SpeechBackend)
    if parsed.voice not in backend.voices:
        lease.release()
        raise InvalidRequest(f"Unknown voice '{parsed.voice}'. The voices of '{parsed.model}' are: "
                             f"{', '.join(backend.voices)}.", param="voice", code="invalid_voice")
    encoder = StreamEncoder(parsed.response_format, input_rate=backend.sample_rate, output_rate=SPEECH_RATE)
    chunks = backend.synthesize(SpeechRequest(text=parsed.text, voice=parsed.voice, speed=parsed.speed))

    spoken = _Spoken()

    async def audio() -> AsyncIterator[bytes]:
        try:
            async for samples in chunks:
                spoken.add(len(samples) / backend.sample_rate)
                data = encoder.encode(samples)
                if data:
                    yield data
            log.info("speech synthesis finished: %d sentences, %.2fs of audio", spoken.sentences, spoken.seconds)
            tail = encoder.finish()
            if tail:
                yield tail
        finally:
            lease.release()

    if parsed.sse:
        async def sse() -> AsyncIterator[bytes]:
            async for data in audio():
                yield event(speech_delta_event(data))
            yield event(speech_done_event(len(parsed.text), spoken.seconds))

        return sse_response(sse(), headers)
    return Stream(audio(), media_type=encoder.content_type, headers=headers)


@get("/audio/voices")
async def voices(request: Request[Any, Any, Any], model: FromQuery[str | None] = None) -> Response[bytes]:
    """The voices of each speech model, from the configuration (nothing is loaded or downloaded)."""
    registry = registry_of(request)
    config = config_of(request)
    names = [registry.resolve(model)] if model else [n for n, m in config.models.items() if m.type == ModelType.TTS]
    data: list[dict[str, str]] = []
    for name in names:
        model_config = config.models[name]
        if model_config.type != ModelType.TTS:
            raise InvalidRequest(f"The model '{model}' is not a speech model.", param="model")
        own = Path(model_config.source.file).stem if model_config.source.file else None
        for voice in [*model_config.options.get("voices", {}), *([own] if own else [])]:
            data.append({"id": voice, "object": "voice", "model": name})
    return json_response({"object": "list", "data": data})


def audio_router(path: str, max_upload_bytes: int, dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[transcriptions, translations, speech, voices],
                  request_max_body_size=max_upload_bytes, opt={"dialect": dialect})
