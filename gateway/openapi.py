"""``GET /openapi.json``: an OpenAPI 3.1 document of the HTTP routes, generated from the wire structs.

The routes read raw bodies (their own validation names the offending field, as OpenAI does), so
Litestar's generated schema knows nothing of them. This document is built from the msgspec structs the
routes decode and encode with (``compat``), so it follows them; the few shapes the routes read or build
by hand (the multipart forms, Deepgram's query strings and ``{"text"}`` body, the voice list) are
declared below as structs too. WebSockets are left out: OpenAPI cannot describe them.

Server-sent events are described one event at a time (the reading OpenAPI 3.2 names ``itemSchema``, and
the one tools apply to ``schema`` before it): ``data`` holds the JSON of one chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get
from msgspec import UNSET, UnsetType

from compat.deepgram.common import DeepgramError
from compat.deepgram.listen import DEFAULT_UTT_SPLIT, ListenResponse
from compat.groq import GROQ_FIELDS
from compat.openai.audio import SpeechBody, _AudioDelta, _AudioDone, _Json, _TextDelta, _TextDone, _Verbose
from compat.openai.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from compat.openai.completions import LegacyCompletionRequest, TextCompletion
from compat.openai.embeddings import EmbeddingsRequest, EmbeddingsResponse
from compat.openai.errors import ErrorEnvelope
from compat.openai.models import ModelCard, ModelList
from compat.openai.realtime import ClientSecretRequest
from compat.openai.responses_input import ResponseCreate
from gateway.config import Config

__all__ = ["openapi_document", "openapi_json"]

JSON = dict[str, Any]

# -- the shapes the routes read or build by hand ---------------------------------------------------


class TranslationForm(msgspec.Struct, kw_only=True):
    """``multipart/form-data`` of ``/audio/translations`` (``file`` is the upload)."""

    file: bytes
    model: str
    prompt: str | UnsetType = UNSET
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | UnsetType = UNSET


class TranscriptionForm(TranslationForm, kw_only=True):
    """``multipart/form-data`` of ``/audio/transcriptions``."""

    language: str | UnsetType = UNSET
    timestamp_granularities: list[Literal["word", "segment"]] | UnsetType = msgspec.field(
        default=UNSET, name="timestamp_granularities[]")
    stream: bool = False
    chunking_strategy: Literal["auto"] | UnsetType = UNSET


class Voice(msgspec.Struct):
    id: str
    model: str
    object: str = "voice"


class VoiceList(msgspec.Struct):
    data: list[Voice]
    object: str = "list"


class Health(msgspec.Struct):
    status: str


class ResponseObject(msgspec.Struct):
    """The ``response`` object (``compat.openai.responses`` builds it as a dict): the fields every client
    reads; the others echo the request."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "cancelled", "queued", "in_progress"]
    model: str
    output: list[dict[str, Any]]
    parallel_tool_calls: bool
    tools: list[dict[str, Any]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    metadata: dict[str, str]


class ResponseEvent(msgspec.Struct):
    """One event of a streamed response (``response.created`` … ``response.completed``, ``error``)."""

    type: str
    sequence_number: int


class InputItemList(msgspec.Struct):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedResponse(msgspec.Struct):
    id: str
    object: Literal["response.deleted"]
    deleted: bool


class RetrieveResponseQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/responses/{response_id}`` (``compat.openai.responses_list`` reads it)."""

    stream: bool = False
    starting_after: Annotated[int, msgspec.Meta(ge=0)] | UnsetType = UNSET


class InputItemsQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/responses/{response_id}/input_items``."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | UnsetType = UNSET
    before: str | UnsetType = UNSET


class ListenQuery(msgspec.Struct, kw_only=True):
    """The query string of Deepgram's ``POST /v1/listen`` (``compat.deepgram.listen`` reads it)."""

    model: str | UnsetType = UNSET
    language: Annotated[str, msgspec.Meta(pattern=r"^(?:multi|[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*)$")] = "en"
    detect_language: bool = False
    punctuate: bool = False
    smart_format: bool = False
    paragraphs: bool = False
    utterances: bool = False
    utt_split: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = DEFAULT_UTT_SPLIT
    multichannel: bool = False
    keywords: list[str] | UnsetType = UNSET
    keyterm: list[str] | UnsetType = UNSET
    encoding: Literal["linear16", "linear32", "mulaw", "alaw", "flac", "opus", "ogg-opus", "mp3", "aac",
                      "amr-nb", "amr-wb", "speex", "g729"] | UnsetType = UNSET
    sample_rate: Annotated[int, msgspec.Meta(ge=8000, le=192000)] | UnsetType = UNSET
    channels: Annotated[int, msgspec.Meta(ge=1, le=32)] = 1
    tag: list[str] | UnsetType = UNSET
    extra: list[Annotated[str, msgspec.Meta(pattern=r"^[^:]+:")]] | UnsetType = UNSET
    filler_words: bool = False
    dictation: bool = False
    numerals: bool = False
    profanity_filter: bool = False


class SpeakQuery(msgspec.Struct, kw_only=True):
    """The query string of Deepgram's ``POST /v1/speak`` (``compat.deepgram.speak`` reads it)."""

    model: str | UnsetType = UNSET
    encoding: Literal["mp3", "linear16", "mulaw", "alaw", "opus", "flac", "aac"] = "mp3"
    container: Literal["none", "wav", "ogg"] | UnsetType = UNSET
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 48000] | UnsetType = UNSET
    bit_rate: Annotated[int, msgspec.Meta(ge=4000, le=650000)] | UnsetType = UNSET
    speed: Annotated[float, msgspec.Meta(ge=0.7, le=1.5)] | UnsetType = UNSET


class SpeakText(msgspec.Struct):
    text: Annotated[str, msgspec.Meta(min_length=1)]


class ClientSecret(msgspec.Struct):
    """``POST /v1/realtime/client_secrets``'s answer (``gateway.routes.realtime`` builds it)."""

    value: str
    expires_at: int
    session: dict[str, Any]


# -- schemas ---------------------------------------------------------------------------------------

_REF = "#/components/schemas/{name}"
_PUBLIC_NAMES = {"_Json": "Transcription", "_Verbose": "VerboseTranscription", "_Usage": "TranscriptionUsage",
                 "_Segment": "TranscriptionSegment", "_Word": "TranscriptionWord",
                 "_TextDelta": "TranscriptTextDelta", "_TextDone": "TranscriptTextDone",
                 "_AudioDelta": "SpeechAudioDelta", "_AudioDone": "SpeechAudioDone", "_SpeechUsage": "SpeechUsage"}
"""Public names for the private structs of ``compat`` (msgspec names a component after its class)."""

_TYPES: tuple[Any, ...] = (
    ChatCompletionRequest, ChatCompletion, ChatCompletionChunk, ResponseCreate, ResponseObject, ResponseEvent,
    InputItemList, DeletedResponse, LegacyCompletionRequest, TextCompletion,
    EmbeddingsRequest, EmbeddingsResponse, TranscriptionForm, TranslationForm, _Json, _Verbose, _TextDelta, _TextDone,
    SpeechBody, _AudioDelta, _AudioDone, VoiceList, ModelList, ModelCard, Health, ErrorEnvelope, SpeakText,
    ListenResponse, DeepgramError, ClientSecretRequest, ClientSecret)
_TEXT: JSON = {"type": "string"}
_BINARY: JSON = {"type": "string", "format": "binary"}


def _four_shapes(text: JSON) -> JSON:
    """OpenAI's prompt and input: text, texts, token ids or lists of them (``list[Any]`` in the struct)."""
    token = {"type": "integer", "minimum": 0}
    shapes = (text, token, {"type": "array", "minItems": 1, "items": token})
    return {"anyOf": [text, *({"type": "array", "minItems": 1, "items": shape} for shape in shapes)]}


def _components() -> tuple[dict[Any, JSON], JSON]:
    """Each of :data:`_TYPES` → its schema (a ``$ref``), and the components they refer to."""
    refs, schemas = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    names = {name: _PUBLIC_NAMES.get(name, name) for name in schemas}

    def public(node: Any) -> Any:
        if isinstance(node, list | tuple):
            return [public(v) for v in node]
        if isinstance(node, dict):
            return {k: _REF.format(name=names[v.rpartition("/")[2]]) if k == "$ref" else public(v)
                    for k, v in node.items()}
        return node

    components = {names[name]: {**public(schema), "title": names[name]} for name, schema in schemas.items()}
    for form in ("TranscriptionForm", "TranslationForm"):  # a file part, not base64 text
        components[form]["properties"]["file"] = _BINARY
    components["LegacyCompletionRequest"]["properties"]["prompt"] = _four_shapes(_TEXT)
    components["EmbeddingsRequest"]["properties"]["input"] = _four_shapes({"type": "string", "minLength": 1})
    chat = components["ChatCompletionRequest"]  # Groq's chat takes its own fields beside OpenAI's
    groq_fields: dict[str, Any] = {key: {} for key in sorted(GROQ_FIELDS)}
    components["GroqChatCompletionRequest"] = {**chat, "title": "GroqChatCompletionRequest",
                                               "properties": {**chat["properties"], **groq_fields}}
    return dict(zip(_TYPES, public(refs), strict=True)), components


def _query_parameters(struct: type[msgspec.Struct]) -> list[JSON]:
    schema = msgspec.json.schema(struct)["$defs"][struct.__name__]
    return [{"name": name, "in": "query", "required": name in schema["required"], "schema": prop}
            for name, prop in schema["properties"].items()]


def _json(schema: JSON) -> JSON:
    return {"application/json": {"schema": schema}}


def _binary(media_types: Iterable[str]) -> JSON:
    return {media_type: {"schema": _BINARY} for media_type in media_types}


def _sse(*payloads: JSON, done: bool = False) -> JSON:
    """Events whose ``data`` is the JSON of one of ``payloads`` (or of an error once the stream has
    started), and the closing ``[DONE]`` where ``done``."""
    data: JSON = {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": list(payloads)}}
    if done:
        data = {"anyOf": [{"const": "[DONE]"}, data]}
    return {"text/event-stream": {"schema": {"type": "object", "properties": {"data": data}, "required": ["data"]}}}


# -- operations ------------------------------------------------------------------------------------

_ERRORS = {
    400: "A field is malformed, out of range or not supported (`param` names it).",
    401: "The API key is missing or wrong.",
    404: "The model (or resource) does not exist here.",
    413: "The request body is larger than the server accepts.",
    429: "The model's queue is full.",
    500: "The engine failed while working on the request.",
    503: "The model could not be fetched or loaded.",
}
_ERROR_HEADERS = {
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
    503: {"x-should-retry": {"description": "Retrying at once fails the same way", "schema": {"const": "false"}}},
}
_ENGINE_ERRORS = (400, 401, 404, 413, 429, 500, 503)
_SPEECH_TYPES = ("audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm")
_SPEAK_TYPES = (*_SPEECH_TYPES, "audio/basic", "audio/x-alaw-basic")
_DG_HEADERS = {"dg-request-id": {"required": True, "schema": {"type": "string", "format": "uuid"}}}


def _operation(operation_id: str, summary: str, tag: str, ok: JSON, errors: Iterable[int], error: JSON, *,
               body: JSON | None = None, parameters: list[JSON] | None = None, headers: JSON | None = None) -> JSON:
    """One operation: ``ok`` is the 200 content (media type → schema), ``errors`` the other statuses."""
    operation: JSON = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    responses: JSON = {"200": {"description": "OK", "content": ok}}
    for code in errors:
        responses[str(code)] = {"description": _ERRORS[code], "content": _json(error)}
        if code in _ERROR_HEADERS or headers:
            responses[str(code)]["headers"] = {**_ERROR_HEADERS.get(code, {}), **(headers or {})}
    if headers:
        responses["200"]["headers"] = headers
    operation["responses"] = responses
    return operation


def _openai_paths(prefix: str, dialect: str, s: dict[Any, JSON]) -> JSON:
    groq = dialect == "groq"
    error = s[ErrorEnvelope]

    def op(name: str, summary: str, ok: JSON, errors: Iterable[int] = _ENGINE_ERRORS, **kw: Any) -> JSON:
        return _operation(f"groq_{name}" if groq else name, summary, dialect, ok, errors, error, **kw)

    def form(struct: type[msgspec.Struct]) -> JSON:
        return {"multipart/form-data": {"schema": s[struct]}}

    chat = {"$ref": _REF.format(name="GroqChatCompletionRequest")} if groq else s[ChatCompletionRequest]
    transcript = {**_json({"anyOf": [s[_Json], s[_Verbose]]}), "text/plain": {"schema": _TEXT},
                  "text/vtt": {"schema": _TEXT}}
    model = {"name": "model", "in": "query", "required": False, "schema": _TEXT}
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": _TEXT}
    response_id = {"name": "response_id", "in": "path", "required": True, "schema": _TEXT}
    response = {**_json(s[ResponseObject]), **_sse(s[ResponseEvent], error)}
    return {
        f"{prefix}/chat/completions": {"post": op(
            "createChatCompletion", "Chat, plain or streamed",
            {**_json(s[ChatCompletion]), **_sse(s[ChatCompletionChunk], error, done=True)}, body=_json(chat))},
        f"{prefix}/responses": {"post": op(
            "createResponse", "A response, plain, streamed or in the background", response,
            body=_json(s[ResponseCreate]))},
        f"{prefix}/responses/{{response_id}}": {
            "get": op("getResponse", "A stored response, or a background one's events", response, (400, 401, 404),
                      parameters=[response_id, *_query_parameters(RetrieveResponseQuery)]),
            "delete": op("deleteResponse", "Delete a stored response", _json(s[DeletedResponse]), (401, 404),
                         parameters=[response_id])},
        f"{prefix}/responses/{{response_id}}/input_items": {"get": op(
            "listInputItems", "A stored response's input items", _json(s[InputItemList]), (400, 401, 404),
            parameters=[response_id, *_query_parameters(InputItemsQuery)])},
        f"{prefix}/responses/{{response_id}}/cancel": {"post": op(
            "cancelResponse", "Cancel a background response", _json(s[ResponseObject]), (400, 401, 404),
            parameters=[response_id])},
        f"{prefix}/completions": {"post": op(
            "createCompletion", "Legacy completions, plain or streamed",
            {**_json(s[TextCompletion]), **_sse(s[TextCompletion], error, done=True)},
            body=_json(s[LegacyCompletionRequest]))},
        f"{prefix}/embeddings": {"post": op(
            "createEmbedding", "Embeddings", _json(s[EmbeddingsResponse]), body=_json(s[EmbeddingsRequest]))},
        f"{prefix}/audio/transcriptions": {"post": op(
            "createTranscription", "Speech to text, plain or streamed",
            {**transcript, **_sse(s[_TextDelta], s[_TextDone], error)}, body=form(TranscriptionForm))},
        f"{prefix}/audio/translations": {"post": op(
            "createTranslation", "Speech to English text", transcript, body=form(TranslationForm))},
        f"{prefix}/audio/speech": {"post": op(
            "createSpeech", "Text to speech, streamed as it is synthesised",
            {**_binary(_SPEECH_TYPES), **_sse(s[_AudioDelta], s[_AudioDone], error)}, body=_json(s[SpeechBody]))},
        f"{prefix}/audio/voices": {"get": op(
            "listVoices", "The voices of each speech model", _json(s[VoiceList]), (400, 401, 404),
            parameters=[model])},
        f"{prefix}/models": {"get": op("listModels", "Configured models and aliases", _json(s[ModelList]), (401,))},
        f"{prefix}/models/{{model_id}}": {"get": op(
            "retrieveModel", "One model", _json(s[ModelCard]), (401, 404), parameters=[model_id])},
    }


def _realtime_paths(s: dict[Any, JSON]) -> JSON:
    """The Realtime API's HTTP routes (the WebSocket and the WebRTC call's SDP are not OpenAPI's to say)."""
    return {"/v1/realtime/client_secrets": {"post": _operation(
        "createRealtimeClientSecret", "A short-lived key for realtime sessions", "openai", _json(s[ClientSecret]),
        (400, 401, 404), s[ErrorEnvelope], body=_json(s[ClientSecretRequest]))}}


def _deepgram_paths(s: dict[Any, JSON]) -> JSON:
    return {
        "/v1/listen": {"post": _operation(
            "listen", "Transcribe pre-recorded audio", "deepgram", _json(s[ListenResponse]), _ENGINE_ERRORS,
            s[DeepgramError], body={"application/octet-stream": {"schema": _BINARY}},
            parameters=_query_parameters(ListenQuery), headers=_DG_HEADERS)},
        "/v1/speak": {"post": _operation(
            "speak", "Text to speech, streamed as it is synthesised", "deepgram", _binary(_SPEAK_TYPES),
            _ENGINE_ERRORS, s[DeepgramError], body=_json(s[SpeakText]), parameters=_query_parameters(SpeakQuery),
            headers=_DG_HEADERS)},
    }


def openapi_document(config: Config) -> JSON:
    """The document of the routes ``config`` enables."""
    schemas, components = _components()
    paths: JSON = {"/health": {"get": _operation("health", "The process is up", "server", _json(schemas[Health]),
                                                 (), schemas[ErrorEnvelope])}}
    if config.services.openai.enabled:
        paths |= _openai_paths("/v1", "openai", schemas) | _realtime_paths(schemas)
    if config.services.groq.enabled:
        paths |= _openai_paths("/openai/v1", "groq", schemas)
    if config.services.deepgram.enabled:
        paths |= _deepgram_paths(schemas)
    document: JSON = {"openapi": "3.1.0", "info": {"title": "SYN4PSE", "version": "1"}, "paths": paths,
                      "components": {"schemas": components}}
    if config.server.api_keys:  # Deepgram's clients send "Token <key>", which is accepted too
        document["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"apiKey": []}]
        paths["/health"]["get"]["security"] = []
    else:
        for item in paths.values():
            for operation in item.values():
                operation["responses"].pop("401", None)
    return document


_encoder = msgspec.json.Encoder()


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    config: Config = request.app.state.config
    return Response(_encoder.encode(openapi_document(config)), media_type="application/json")
