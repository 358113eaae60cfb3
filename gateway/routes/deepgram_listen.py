"""Deepgram's pre-recorded transcription, ``POST /v1/listen``.

The body is the audio itself, in whatever container, sniffed from its bytes: Deepgram's SDKs send no
Content-Type, ``application/octet-stream`` or ``deepgram/audio+video``, curl users ``audio/*``. Only
``application/json`` means something else, a ``{"url": …}`` to fetch, and fetching is off here.
Headerless audio is named by ``encoding`` + ``sample_rate`` (+ ``channels``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from litestar import Request, Response, post

from compat.deepgram.common import iso_now
from compat.deepgram.listen import ListenOptions, listen_response, model_info, parse_listen_query
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy, decode_object
from gateway.config import RemoteFetchConfig
from gateway.fetch import fetch_url
from gateway.routes.common import config_of, dropped_headers, json_response, unless_disconnected
from gateway.routes.deepgram_request import query_of, request_id_of
from gateway.serving import serving_of
from gateway.serving.transcription import AudioInput, TranscriptionOptions

__all__ = ["HANDLERS", "listen"]


@post("/listen", status_code=200)
async def listen(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Transcribe the posted audio; the answer is Deepgram's ``ListenV1Response``."""
    request_id = request_id_of(request)
    config = config_of(request)
    policy = ParamPolicy(config.server.unsupported_params)
    options = parse_listen_query(query_of(request), policy, default_model=config.services.deepgram.listen_model)
    serving = serving_of(request).transcriptions
    serving.check(options.model)  # before the upload is read for nothing
    body = await request.body()
    if _is_json(request.headers.get("content-type")):
        body = await _fetch_url_form(body, config.server.remote_fetch)
    result = await unless_disconnected(request, serving.channels(options.model, _audio(body, options),
                                                                 _options(options), split=options.multichannel))
    response = listen_response(
        result.channels, options, request_id=request_id, sha256=hashlib.sha256(body).hexdigest(),
        created=iso_now(), duration=result.duration, canonical=result.model,
        model=model_info(options.model, result.model, result.engine))
    return json_response(response, headers={"dg-request-id": request_id, **dropped_headers(request, policy)})


def _audio(body: bytes, options: ListenOptions) -> AudioInput:
    return AudioInput(body, encoding=options.encoding, sample_rate=options.sample_rate, channels=options.channels)


def _options(options: ListenOptions) -> TranscriptionOptions:
    return TranscriptionOptions(language=options.language, prompt=options.prompt, word_timestamps=True)


async def _fetch_url_form(body: bytes, policy: RemoteFetchConfig) -> bytes:
    """A ``{"url": …}`` body: the audio there, if the server's remote-fetch policy allows it."""
    raw = decode_object(body)
    if not isinstance(raw.get("url"), str):
        raise InvalidRequest("A JSON body must be an object with a 'url'; to send audio, post its bytes"
                             " with any other Content-Type.", param="url")
    return await fetch_url(raw["url"], policy, param="url")


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


HANDLERS: list[Any] = [listen]
