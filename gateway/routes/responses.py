"""The Responses API (and Groq's, under ``/openai/v1``): create, retrieve, list input items, delete, cancel,
over HTTP (JSON or SSE) and over a WebSocket at ``/v1/responses``.

A stored response is its key's (:func:`gateway.auth.owner_of`): another key's ids are 404s. Over the
WebSocket each ``response.create`` message is answered with the same events a stream sends, one
response at a time; ``store: false`` responses chain on the socket itself.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import msgspec
from litestar import Request, Response, Router, WebSocket, delete, get, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath
from litestar.response import Stream

from backends.errors import DomainError
from compat.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from compat.openai.responses_input import parse_response_request
from compat.openai.responses_list import (
    SocketCancel,
    deleted_body,
    input_items_page,
    input_tokens_body,
    parse_list_query,
    parse_retrieve_query,
    socket_error,
    socket_message,
)
from compat.wire import ParamPolicy
from gateway.auth import owner_of
from gateway.errors import RESPONSES_FIELDS, as_wire
from gateway.observability import meter_generation, set_request_model
from gateway.ownership import own
from gateway.routes.common import decode_json, dropped_headers, json_response, read_object, unless_disconnected
from gateway.serving import serving_of
from gateway.serving.responses import Chains, Responses
from gateway.sockets import close_quietly
from gateway.sse import sse_response, typed_events

__all__ = ["responses_router"]

_encoder = msgspec.json.Encoder()


def _responses(connection: Request[Any, Any, Any] | WebSocket[Any, Any, Any]) -> Responses:
    return serving_of(connection).responses


@post("/responses", status_code=200, opt={"fields": RESPONSES_FIELDS})
async def create_response(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    raw, policy = await read_object(request)
    parsed = parse_response_request(raw, policy)
    set_request_model(request, parsed.model)
    headers = dropped_headers(request, policy)
    responses, owner, meter = _responses(request), owner_of(request.scope), meter_generation(request)
    if parsed.background:
        queued, response_id = await responses.background(parsed, owner, meter)
        if not parsed.stream:
            return json_response(queued, headers)
        return sse_response(typed_events(await responses.follow(response_id, owner)), headers)
    if parsed.stream:
        events = own(request, await responses.stream(parsed, owner, meter))
        return sse_response(typed_events(events), headers)
    body = await unless_disconnected(request, responses.create(parsed, owner, meter))
    return json_response(body, headers)


@post("/responses/input_tokens", status_code=200, opt={"fields": RESPONSES_FIELDS})
async def count_input_tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
    raw, policy = await read_object(request)
    parsed = parse_response_request(raw, policy)
    set_request_model(request, parsed.model)
    count = await unless_disconnected(request, _responses(request).count(parsed, owner_of(request.scope)))
    return json_response(input_tokens_body(count), dropped_headers(request, policy))


@post("/responses/compact", status_code=200, opt={"fields": RESPONSES_FIELDS})
async def compact_response(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Said plainly, not a 405 from the ``{response_id}`` routes: compaction is not served."""
    raise NotFound("POST /v1/responses/compact (compacting a conversation) is not available on this server: continue"
                   " it with previous_response_id and truncation 'auto' instead.")


@get("/responses/{response_id:str}", opt={"fields": RESPONSES_FIELDS})
async def retrieve_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes] | Stream:
    query = parse_retrieve_query(request.query_params.dict())
    responses, owner = _responses(request), owner_of(request.scope)
    if query.stream:
        return sse_response(typed_events(await responses.follow(response_id, owner, query.starting_after)))
    return json_response(await responses.retrieve(response_id, owner))


@get("/responses/{response_id:str}/input_items", opt={"fields": RESPONSES_FIELDS})
async def list_input_items(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
    query = parse_list_query(request.query_params.dict())
    items = await _responses(request).input_items(response_id, owner_of(request.scope))
    return json_response(input_items_page(items, query))


@delete("/responses/{response_id:str}", status_code=200, opt={"fields": RESPONSES_FIELDS})
async def delete_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
    await _responses(request).delete(response_id, owner_of(request.scope))
    return json_response(deleted_body(response_id))


@post("/responses/{response_id:str}/cancel", status_code=200, opt={"fields": RESPONSES_FIELDS})
async def cancel_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
    return json_response(await _responses(request).cancel(response_id, owner_of(request.scope)))


@websocket("/responses")
async def responses_socket(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    try:
        await _ResponsesSocket(socket).serve()
    except WebSocketDisconnect:
        pass
    finally:
        await close_quietly(socket, 1000)


class _ResponsesSocket:
    """One socket. Messages are read as they come, so a ``response.cancel`` stops the running response at
    once (a voice agent's barge-in); ``response.create`` messages are answered in order, one at a time."""

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self._socket = socket
        self._serving = serving_of(socket)
        self._server = self._serving.config.server
        self._chains = Chains()
        self._owner = owner_of(socket.scope)
        self._inbox: asyncio.Queue[dict[str, Any] | GatewayError | DomainError | None] = asyncio.Queue(32)
        self._stop: asyncio.Event | None = None
        self._running: str | None = None
        self._made: collections.deque[str] = collections.deque(maxlen=256)
        """This socket's latest responses: a cancel that names one that has ended is no error."""

    async def serve(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while (item := await self._inbox.get()) is not None:
                if isinstance(item, dict):
                    await self._answer(item)
                else:
                    await self._send(socket_error(as_wire(item, RESPONSES_FIELDS)))
        finally:
            reader.cancel()
            await asyncio.wait({reader})

    async def _read(self) -> None:
        try:
            while True:
                message = await self._socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text: str | None = message.get("text")  # type: ignore[assignment]
                data: bytes = text.encode() if text is not None else message.get("bytes") or b""  # type: ignore[assignment]
                try:
                    asked = socket_message(self._decode(data))
                    if isinstance(asked, SocketCancel):
                        self._cancel(asked.response_id)
                    else:
                        await self._inbox.put(asked)
                except (GatewayError, DomainError) as e:
                    await self._inbox.put(e)
        finally:
            if self._stop is not None:  # the client is gone: its response stops with it
                self._stop.set()
            await self._inbox.put(None)

    def _decode(self, data: bytes) -> dict[str, Any]:
        server = self._server
        if len(data) > server.max_json_bytes:
            raise PayloadTooLarge(f"A message of {len(data)} bytes; this socket takes at most {server.max_json_bytes}.")
        return decode_json(server, data)

    def _cancel(self, response_id: str | None) -> None:
        if response_id is None or response_id == self._running:
            if self._stop is not None:
                self._stop.set()
        elif response_id not in self._made:
            raise InvalidRequest(f"No response with id '{response_id[:64]}' is running on this socket.",
                                 param="response_id")

    async def _answer(self, raw: dict[str, Any]) -> None:
        try:
            parsed = parse_response_request(raw, ParamPolicy(self._server.unsupported_params))
            set_request_model(self._socket, parsed.model)
            self._stop = asyncio.Event()
            events = await self._serving.responses.stream(parsed, self._owner, meter_generation(self._socket),
                                                          self._chains, self._stop)
        except (GatewayError, DomainError) as e:
            self._stop = None
            await self._send(socket_error(as_wire(e, RESPONSES_FIELDS)))
            return
        try:  # closed here, not when the socket ends: a socket makes many
            async for event in events:
                if event is None:
                    continue
                if event["type"] == "response.created":
                    self._running = event["response"]["id"]
                    self._made.append(event["response"]["id"])
                await self._send(event)
        finally:
            await events.aclose()
            self._running = self._stop = None

    async def _send(self, event: dict[str, Any]) -> None:
        await self._socket.send_text(_encoder.encode(event).decode())


def responses_router(path: str = "/v1", dialect: str = "openai") -> Router:
    return Router(path=path, route_handlers=[create_response, count_input_tokens, compact_response, retrieve_response,
                                             list_input_items, delete_response, cancel_response, responses_socket],
                  opt={"dialect": dialect})
