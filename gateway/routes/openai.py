"""The OpenAI dialect (and Groq's, the same routes under ``/openai/v1``): chat, legacy completions,
embeddings and models. Each handler decodes the wire struct, calls the serving layer, and encodes."""

from __future__ import annotations

import functools
import time
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.params import FromPath
from litestar.response import Stream

from compat.openai.chat import chat_body, chat_chunks, parse_chat_request
from compat.openai.completions import completion_body, completion_chunks, openai_prompts, parse_completion_request
from compat.openai.embeddings import embedding_response, openai_inputs, parse_embeddings_request
from compat.openai.models import ModelCard, ModelList
from gateway.errors import Fields
from gateway.observability import meter_generation, set_request_model
from gateway.ownership import own
from gateway.routes.common import (
    config_of,
    dialect_of,
    dropped_headers,
    json_response,
    read_object,
    registry_of,
    unless_disconnected,
)
from gateway.serving import serving_of
from gateway.sse import sse_events, sse_response
from gateway.vision import resolve_images

__all__ = ["openai_router"]


@post("/chat/completions", status_code=200, opt={"fields": Fields(input="messages")})
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    received = time.perf_counter()
    raw, policy = await read_object(request)
    dialect = dialect_of(request)
    dialect.screen_chat(raw, policy)
    parsed = parse_chat_request(raw, policy)
    set_request_model(request, parsed.model)
    chat_request = await resolve_images(request, parsed.model, parsed.request)
    headers = dropped_headers(request, policy)
    chat, meter = serving_of(request).chat, meter_generation(request)
    if not parsed.stream:
        answer = await unless_disconnected(request, chat.answer(parsed.model, chat_request, meter, received=received))
        return json_response(chat_body(parsed.model, answer, dialect), headers)
    events = own(request, await chat.stream(parsed.model, chat_request, meter, received=received))
    return sse_response(sse_events(chat_chunks(events, parsed.model, parsed.include_usage, dialect)), headers)


@post("/completions", status_code=200, opt={"fields": Fields(input="prompt")})
async def completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    raw, policy = await read_object(request)
    parsed = parse_completion_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    serving, meter = serving_of(request).completions, functools.partial(meter_generation, request)
    if not parsed.stream:
        answer = await unless_disconnected(request, serving.answer(parsed.model, parsed.requests, meter,
                                                                   token_ids=openai_prompts))
        return json_response(completion_body(parsed.model, answer), headers)
    events = own(request, await serving.stream(parsed.model, parsed.requests, meter, token_ids=openai_prompts))
    return sse_response(sse_events(completion_chunks(events, parsed.model, parsed.include_usage)), headers)


@post("/embeddings", status_code=200, opt={"fields": Fields(input="input")})
async def embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    raw, policy = await read_object(request)
    parsed = parse_embeddings_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    embedder = serving_of(request).embeddings
    result = await unless_disconnected(request, embedder.embed(parsed.model, parsed.request, token_ids=openai_inputs))
    return json_response(embedding_response(parsed.model, result, parsed.base64), headers)


# --------------------------------------------------------------------------------------------------
# Models


def _card(name: str, created: int) -> ModelCard:
    return ModelCard(id=name, created=created)


@get("/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    created = int(request.app.state.started_at)
    names = [*registry_of(request).names(), *_realtime_names(request)]
    return json_response(ModelList(data=[_card(name, created) for name in names]))


def _realtime_names(request: Request[Any, Any, Any]) -> list[str]:
    """The Realtime API's models (``/v1/realtime``), by every name they answer to."""
    return [alias for name, model in config_of(request).realtime.items() for alias in (name, *model.aliases)]


@get("/models/{model_id:path}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[bytes]:
    name = model_id.lstrip("/")
    if name not in _realtime_names(request):
        registry_of(request).resolve(name)
    return json_response(_card(name, int(request.app.state.started_at)))


def openai_router(path: str = "/v1", dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[chat_completions, completions, embeddings, list_models,
                                             retrieve_model], opt={"dialect": dialect})

