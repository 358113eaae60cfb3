"""Deepgram's pre-recorded transcription, ``POST /v1/listen``.

The body is the audio itself, in whatever container, sniffed from its bytes: Deepgram's SDKs send no
Content-Type, ``application/octet-stream`` or ``deepgram/audio+video``, curl users ``audio/*``. Only
``application/json`` means something else, a ``{"url": …}`` to fetch, and fetching is off here.
Headerless audio is named by ``encoding`` + ``sample_rate`` (+ ``channels``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from litestar import Request, Response, post

from backends.audio import decode, decode_raw, duration
from backends.base import TranscriptionBackend
from backends.errors import BadAudio
from backends.types import (
    ModelType,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
    TranscriptWord,
)
from compat.deepgram.common import iso_now
from compat.deepgram.listen import ChannelTranscript, ListenOptions, listen_response, model_info, parse_listen_query
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy, decode_object
from gateway.config import RemoteFetchConfig
from gateway.fetch import fetch_url
from gateway.registry import Registry
from gateway.routes.audio import MAX_AUDIO_SECONDS
from gateway.routes.common import (
    backend_as,
    config_of,
    dropped_headers,
    json_response,
    registry_of,
    speech_spans,
    unless_disconnected,
)
from gateway.routes.deepgram import query_of, request_id_of

__all__ = ["HANDLERS", "listen"]

log = logging.getLogger("syn4pse.deepgram.listen")

RATE = 16000
"""What whisper reads."""
CORRUPT_AUDIO = "failed to process audio: corrupt or unsupported data"
"""Deepgram's own words for audio it cannot read (rendered after ``Bad Request: ``): clients match them."""

# Bytes per sample of each headerless encoding, to split interleaved channels apart.
_SAMPLE_BYTES = {"linear16": 2, "linear32": 4, "mulaw": 1, "alaw": 1}
# Containers whose first bytes say what they are; headerless ``encoding=`` does not apply to them.
_MAGIC = (b"RIFF", b"RF64", b"OggS", b"fLaC", b"ID3", b"\x1a\x45\xdf\xa3", b"FORM", b"#!AMR")

Tracks = list[npt.NDArray[np.float32]]


def _containerized(data: bytes) -> bool:
    """Whether the bytes open with a container's signature (a WAV sent with ``encoding=linear16``)."""
    return data.startswith(_MAGIC) or data[4:8] == b"ftyp"


def _decode_raw_tracks(data: bytes, options: ListenOptions) -> Tracks:
    """Headerless audio: split into channels here when each is transcribed, since decode_raw downmixes."""
    assert options.encoding is not None and options.sample_rate is not None
    width = _SAMPLE_BYTES[options.encoding]
    if len(data) / (width * options.channels * options.sample_rate) > MAX_AUDIO_SECONDS:
        raise BadAudio(f"The audio is longer than the {MAX_AUDIO_SECONDS:g} seconds allowed.")
    if not options.multichannel or options.channels == 1:
        return [decode_raw(data, encoding=options.encoding, sample_rate=options.sample_rate,
                           channels=options.channels)]
    frame = width * options.channels
    if not data or len(data) % frame:
        raise BadAudio(f"{len(data)} bytes is not a whole number of {frame}-byte frames.")
    interleaved = np.frombuffer(data, dtype=np.uint8).reshape(-1, options.channels, width)
    return [decode_raw(interleaved[:, c, :].tobytes(), encoding=options.encoding, sample_rate=options.sample_rate)
            for c in range(options.channels)]


def _decode_tracks(data: bytes, options: ListenOptions) -> Tracks:
    """The audio as 16 kHz mono tracks: one per channel with ``multichannel``, else one downmix."""
    try:
        if options.encoding is not None and not _containerized(data):
            return _decode_raw_tracks(data, options)
        samples = decode(data, sample_rate=RATE, mono=not options.multichannel, max_seconds=MAX_AUDIO_SECONDS)
    except BadAudio as e:
        log.info("/v1/listen: unreadable audio (%d bytes): %s", len(data), e.message)
        raise BadAudio(CORRUPT_AUDIO) from None
    return [samples] if samples.ndim == 1 else [np.ascontiguousarray(row) for row in samples]


async def _fetch_url_form(body: bytes, policy: RemoteFetchConfig) -> bytes:
    """A ``{"url": …}`` body: the audio there, if the server's remote-fetch policy allows it."""
    raw = decode_object(body)
    if not isinstance(raw.get("url"), str):
        raise InvalidRequest("A JSON body must be an object with a 'url'; to send audio, post its bytes"
                             " with any other Content-Type.", param="url")
    return await fetch_url(raw["url"], policy, param="url")


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


async def _transcribe_tracks(registry: Registry, backend: TranscriptionBackend, tracks: Tracks,
                             options: ListenOptions) -> list[ChannelTranscript]:
    """Each track on its own, one after another (the model's workers are shared with every request)."""
    out: list[ChannelTranscript] = []
    for audio in tracks:
        speech = await speech_spans(registry, options.model, audio)
        info: TranscriptionInfo | None = None
        words: list[TranscriptWord] = []
        async for item in backend.transcribe(TranscriptionRequest(
                audio=audio, language=options.language, prompt=options.prompt, word_timestamps=True,
                speech=speech)):
            if isinstance(item, TranscriptionInfo):
                info = item
            elif isinstance(item, TranscriptSegment):
                words += item.words
        assert info is not None  # every transcription stream opens with its info
        out.append(ChannelTranscript(info=info, words=words))
    return out


@post("/listen", status_code=200)
async def listen(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Transcribe the posted audio; the answer is Deepgram's ``ListenV1Response``."""
    request_id = request_id_of(request)
    config = config_of(request)
    policy = ParamPolicy(config.server.unsupported_params)
    options = parse_listen_query(query_of(request), policy, default_model=config.services.deepgram.listen_model)
    registry = registry_of(request)
    canonical = registry.resolve(options.model)
    if registry.model_config(canonical).type != ModelType.STT:  # before the upload is decoded for nothing
        raise InvalidRequest(f"The model '{options.model}' is not a speech-to-text model.", param="model")
    body = await request.body()
    if _is_json(request.headers.get("content-type")):
        body = await _fetch_url_form(body, config.server.remote_fetch)
    tracks = await asyncio.to_thread(_decode_tracks, body, options)
    sha256 = hashlib.sha256(body).hexdigest()

    async with registry.lease(options.model, ModelType.STT) as lease:
        backend: TranscriptionBackend = backend_as(lease, TranscriptionBackend)
        transcripts = await unless_disconnected(request, _transcribe_tracks(registry, backend, tracks, options))

    response = listen_response(
        transcripts, options, request_id=request_id, sha256=sha256, created=iso_now(),
        duration=duration(tracks[0], RATE), canonical=canonical,
        model=model_info(options.model, canonical, registry.model_config(canonical).backend))
    return json_response(response, headers={"dg-request-id": request_id, **dropped_headers(request, policy)})


HANDLERS: list[Any] = [listen]
