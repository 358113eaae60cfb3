"""The Responses API, on the chat engine: continuations, the store, background responses.

A response is a chat answer (:class:`~gateway.serving.chat.Chat`, the same engine, prompt cache,
grammars, tools and vision) read into output items. What makes it more than that lives here: a
``previous_response_id`` continues the conversation that response ended (from the store, or from the
chains a WebSocket keeps for ``store: false``); a stored response is kept with its input and
conversation, for ``GET``, ``input_items`` and the next continuation; ``truncation: "auto"`` drops the
oldest turns until the conversation fits the context; a background response runs on its own, is polled
or followed by id, and can be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from backends.answers import ChatEvent, ChoiceOpened
from backends.errors import ContextTooLong, DomainError, UpstreamRefused
from backends.types import ChatMessage, ChatRequest
from compat.errors import GatewayError, InvalidRequest, NotFound, ServerFailure
from compat.openai.responses import ResponseBuilder, failed, new_response_id
from compat.openai.responses_input import Item, ItemReference, ParsedResponse, chat_messages, parse_items, stored_item
from gateway.config import Config
from gateway.errors import RESPONSES_FIELDS, as_wire
from gateway.registry import Registry
from gateway.response_store import ResponseStore, StoredResponse
from gateway.serving.chat import Chat, Meter
from gateway.serving.owned import Owned
from gateway.vision import resolve_chat_images

__all__ = ["Chains", "Responses"]

log = logging.getLogger("syn4pse.responses")

Event = dict[str, Any]
_json = msgspec.json.Encoder()

UNFINISHED = ("queued", "in_progress")
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
KEPT_RUNS = 256
"""Background runs whose events stay in memory (to be followed by id) after they finish."""


class Chains:
    """The conversations a WebSocket's responses ended, for continuations of ``store: false`` responses
    on the same socket (the most recent few)."""

    def __init__(self, most: int = 64) -> None:
        self._most = most
        self._history: OrderedDict[str, list[Any]] = OrderedDict()

    def keep(self, response_id: str, history: list[Any]) -> None:
        self._history[response_id] = history
        while len(self._history) > self._most:
            self._history.popitem(last=False)

    def get(self, response_id: str) -> list[Any] | None:
        return self._history.get(response_id)

    def item(self, item_id: str) -> dict[str, Any] | None:
        """An item of one of the kept conversations, by its id."""
        for history in reversed(self._history.values()):
            for item in history:
                if isinstance(item, dict) and item.get("id") == item_id:
                    return item
        return None


@dataclass
class _Turn:
    """One response being made: its request, the conversation it continues, and its builder."""

    parsed: ParsedResponse
    owner: str
    history: list[Any]
    inputs: list[dict[str, Any]]
    """Its input items in their stored form (references resolved to the items they name)."""
    request: ChatRequest
    builder: ResponseBuilder
    received: float


@dataclass
class _Run:
    """A background response as it runs: its events so far, for whoever follows it."""

    turn: _Turn
    events_out: Owned[Event | None] | None = None
    """Its events, once the model took it."""
    events: list[Event] = field(default_factory=list)
    done: bool = False
    settled: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()

    def end(self) -> None:
        self.done = True
        self.changed.set()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


async def _until(events: AsyncIterator[ChatEvent], stop: asyncio.Event) -> AsyncIterator[ChatEvent]:
    """``events`` until they end or ``stop`` is set, whichever comes first."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                await asyncio.wait({following})
                return
            try:
                event = following.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopped.cancel()


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


def _drop_oldest(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...] | None:
    """The conversation less its oldest turn (up to the next user message); None when nothing is left to
    drop. Instructions (leading system messages) stay."""
    lead = 0
    while lead < len(messages) and messages[lead].role == "system":
        lead += 1
    rest = messages[lead + 1:]
    while rest and rest[0].role != "user":
        rest = rest[1:]
    if not rest:
        return None
    return messages[:lead] + rest


async def _begun(chat: Owned[ChatEvent]) -> Owned[ChatEvent]:
    """``chat`` read up to its answer's first event, which it then gives again with the rest. A local
    engine refuses a prompt too long before the stream opens; an upstream says so only when asked for
    the answer, and this makes that refusal come here, while ``truncation: auto`` can still act on it.
    (A model still loading sends a keep-alive first, which ends the look-ahead.)"""
    head: list[ChatEvent] = []
    async for event in chat:  # an error closes it (Owned releases its lease) and goes up
        head.append(event)
        if not isinstance(event, ChoiceOpened):
            break

    async def events() -> AsyncGenerator[ChatEvent, None]:
        for event in head:
            yield event
        async for event in chat:
            yield event

    return Owned(None, events(), inner=chat)


class Responses:
    def __init__(self, chat: Chat, registry: Registry, config: Config) -> None:
        self._chat = chat
        self._registry = registry
        self._config = config
        self.store = ResponseStore(config.server.responses)
        self._runs: OrderedDict[str, _Run] = OrderedDict()

    async def start(self) -> None:
        """Background responses a server left unfinished (it was killed: a server that stops cancels its
        own, :meth:`close`) are failed: nothing runs them now."""
        error = ServerFailure("The server stopped before this response finished.")
        for stored in await self.store.with_status(UNFINISHED):
            body = failed(msgspec.json.decode(stored.body), error)
            await self.store.put(dataclasses.replace(stored, status="failed", body=_json.encode(body)))

    async def close(self) -> None:
        runs = list(self._runs.values())
        tasks = [run.task for run in runs if run.task is not None and run.running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for run in runs:
            await self._settle(run)  # a task cancelled before it began ran none of its own ending
        await self.store.close()

    # -- making a response ------------------------------------------------------------------------------

    async def _turn(self, parsed: ParsedResponse, owner: str, chains: Chains | None, status: str) -> _Turn:
        received = time.perf_counter()
        history: list[Any] = []
        if parsed.previous_response_id is not None:
            history = await self._history(parsed.previous_response_id, owner, chains)
        new = await self._referenced(parsed.items, history, owner, chains)
        items = parse_items(history, "previous_response_id") + new
        messages = chat_messages(parsed.instructions, items, parsed.policy, first_new=len(history))
        request = await resolve_chat_images(self._config, self._registry, parsed.model, parsed.chat_request(messages))
        return _Turn(parsed, owner, history, [stored_item(i) for i in new], request,
                     ResponseBuilder(new_response_id(), parsed, status), received)

    async def _referenced(self, items: list[Item], history: list[Any], owner: str, chains: Chains | None) -> list[Item]:
        """``items`` with each ``item_reference`` replaced by the item it names: from the conversation
        continued, this socket's chains, or the owner's stored responses."""
        out: list[Item] = []
        for i, item in enumerate(items):
            if not isinstance(item, ItemReference):
                out.append(item)
                continue
            found = next((h for h in history if isinstance(h, dict) and h.get("id") == item.id), None)
            if found is None and chains is not None:
                found = chains.item(item.id)
            if found is None and (stored := await self.store.item(item.id, owner)) is not None:
                found = msgspec.json.decode(stored)
            if found is None:
                raise InvalidRequest(f"Item with id '{item.id[:64]}' not found.", param=f"input[{i}]",
                                     code="item_not_found")
            out.extend(parse_items([found], f"input[{i}]"))
        return out

    async def _history(self, response_id: str, owner: str, chains: Chains | None) -> list[Any]:
        if chains is not None and (kept := chains.get(response_id)) is not None:
            return kept
        stored = await self.store.get(response_id, owner)
        if stored is None:
            raise InvalidRequest(f"Previous response with id '{response_id}' not found.",
                                 param="previous_response_id", code="previous_response_not_found")
        if stored.status in UNFINISHED:
            raise InvalidRequest(f"Previous response with id '{response_id}' has not finished yet.",
                                 param="previous_response_id")
        history: list[Any] = msgspec.json.decode(stored.history)
        return history

    async def _truncated(self, turn: _Turn, work: Callable[[ChatRequest], Awaitable[Any]]) -> Any:
        """``work(request)``, with the oldest turns dropped while it does not fit (``truncation: auto``)."""
        request = turn.request
        while True:
            try:
                return await work(request)
            except (ContextTooLong, UpstreamRefused) as e:
                too_long = not isinstance(e, UpstreamRefused) or e.context_exceeded
                shorter = _drop_oldest(request.messages) if too_long and turn.parsed.truncation == "auto" else None
                if shorter is None:
                    raise
                request = dataclasses.replace(request, messages=shorter)

    async def _keep(self, turn: _Turn, chains: Chains | None) -> None:
        """Store the response (or only its status, while it runs) and keep its conversation."""
        body = turn.builder.response
        done = body["status"] not in UNFINISHED
        history = [*turn.history, *turn.inputs, *(body["output"] if done else ())]
        if chains is not None and done:
            chains.keep(body["id"], history)
        if not turn.parsed.store:
            return
        items = tuple((i["id"], _json.encode(i)) for i in [*turn.inputs, *body["output"]] if "id" in i) if done else ()
        stored = StoredResponse(body["id"], turn.owner, body["status"], _json.encode(body), _json.encode(turn.inputs),
                                _json.encode(history), items)
        await self.store.put(stored)

    async def create(self, parsed: ParsedResponse, owner: str, meter: Meter) -> dict[str, Any]:
        """The whole response, once made (and stored, unless ``store: false``)."""
        turn = await self._turn(parsed, owner, None, "in_progress")
        answer = await self._truncated(turn, lambda r: self._chat.answer(parsed.model, r, meter,
                                                                         received=turn.received))
        turn.builder.answer(answer)
        await self._keep(turn, None)
        return turn.builder.response

    async def count(self, parsed: ParsedResponse, owner: str) -> int:
        """The input tokens the response would read (``POST /v1/responses/input_tokens``), after truncation."""
        turn = await self._turn(parsed, owner, None, "in_progress")
        count: int = await self._truncated(turn, lambda r: self._chat.count(parsed.model, r))
        return count

    async def _open(self, turn: _Turn, meter: Meter, chains: Chains | None,
                    stop: asyncio.Event | None = None) -> Owned[Event | None]:
        async def opened(request: ChatRequest) -> Owned[ChatEvent]:
            chat = await self._chat.stream(turn.parsed.model, request, meter, received=turn.received)
            return await _begun(chat) if turn.parsed.truncation == "auto" else chat

        chat = await self._truncated(turn, opened)
        return Owned(None, self._events(turn, chat, chains, stop), inner=chat)

    async def stream(self, parsed: ParsedResponse, owner: str, meter: Meter, chains: Chains | None = None,
                     stop: asyncio.Event | None = None) -> Owned[Event | None]:
        """The response as its events (None: a keep-alive). A bad request fails here, before any event.
        Setting ``stop`` cancels it: the generation stops and the response ends ``cancelled``."""
        turn = await self._turn(parsed, owner, chains, "in_progress")
        return await self._open(turn, meter, chains, stop)

    async def _events(self, turn: _Turn, chat: Owned[ChatEvent], chains: Chains | None,
                      stop: asyncio.Event | None = None) -> AsyncGenerator[Event | None, None]:
        """The response's events; it is stored before its terminal event is sent, so a client that chains
        from it as soon as it hears the end finds it."""
        builder = turn.builder
        for event in builder.start():
            yield event
        ending: list[Event | None] = []
        try:
            async for chat_event in chat if stop is None else _until(chat, stop):
                for out in builder.feed(chat_event):
                    if out is not None and out["type"] in TERMINAL:
                        await self._keep(turn, chains)
                    yield out
        except (GatewayError, DomainError) as e:
            error = as_wire(e, RESPONSES_FIELDS)
            log.warning("response %s ended by %s: %s", builder.response["id"], type(e).__name__, error.message)
            ending = list(builder.fail(error))
        except Exception:
            log.exception("response %s failed", builder.response["id"])
            ending = list(builder.fail(ServerFailure("The engine failed while generating.")))
        finally:
            await chat.aclose()
        if not ending and stop is not None and stop.is_set() and builder.response["status"] in UNFINISHED:
            ending = list(builder.cancel())
        if ending:
            await self._keep(turn, chains)
            for out in ending:
                yield out

    # -- background responses -----------------------------------------------------------------------------

    async def background(self, parsed: ParsedResponse, owner: str, meter: Meter) -> tuple[dict[str, Any], str]:
        """Start a background response: checked now (a bad request or an unknown model is still a 400 or a
        404), stored as ``queued`` and answered at once; it waits for the model and runs on its own, and
        what fails from then on (a full queue, a prompt past the context) fails the response. Returns its
        object, and its id to follow its events by."""
        self._registry.resolve(parsed.model)
        turn = await self._turn(parsed, owner, None, "queued")
        await self._keep(turn, None)
        response_id = turn.builder.response["id"]
        run = _Run(turn)
        self._runs[response_id] = run
        while len(self._runs) > KEPT_RUNS and next(iter(self._runs.values())).done:
            self._runs.popitem(last=False)
        queued = turn.builder.snapshot()
        run.task = asyncio.create_task(self._run(run, meter), name=f"response {response_id}")
        return queued, response_id

    async def _run(self, run: _Run, meter: Meter) -> None:
        builder = run.turn.builder
        try:
            try:
                run.events_out = await self._open(run.turn, meter, None)
            except (GatewayError, DomainError) as e:
                for said in [*builder.start(), *builder.fail(as_wire(e, RESPONSES_FIELDS))]:
                    run.add(said)
                await self._keep(run.turn, None)
                return
            async for event in run.events_out:
                if event is not None:
                    run.add(event)
                    if event["type"] == "response.in_progress":  # polled, it says it runs
                        await self._keep(run.turn, None)
        finally:
            await self._settle(run)

    async def _settle(self, run: _Run) -> None:
        """The end of a run, however it came (idempotent): its stream closed, and a response that did not
        finish (cancelled, or the server stops) stored as ``cancelled``."""
        if run.settled:
            return
        run.settled = True
        if run.events_out is not None:
            await run.events_out.aclose()
        if run.turn.builder.response["status"] in UNFINISHED:
            if not run.events:  # cancelled while it waited for the model: it still begins as every one does
                for event in run.turn.builder.start():
                    run.add(event)
            for event in run.turn.builder.cancel():
                run.add(event)
            with contextlib.suppress(Exception):
                await self._keep(run.turn, None)
        run.end()

    async def follow(self, response_id: str, owner: str, after: int = -1) -> AsyncIterator[Event]:
        """A background response's events after ``after`` (a ``sequence_number``), as they come."""
        await self._stored(response_id, owner)  # another key's, or none: a 404
        run = self._runs.get(response_id)
        if run is None:
            raise InvalidRequest("Only background responses can be streamed by id, while this server keeps"
                                 " their events.", param="stream")
        return self._follow(run, after)

    @staticmethod
    async def _follow(run: _Run, after: int) -> AsyncIterator[Event]:
        sent = 0
        while True:
            while sent < len(run.events):
                event = run.events[sent]
                sent += 1
                if event["sequence_number"] > after:
                    yield event
            if run.done:
                return
            await run.changed.wait()

    async def cancel(self, response_id: str, owner: str) -> dict[str, Any]:
        stored = await self._stored(response_id, owner)
        run = self._runs.get(response_id)
        body: dict[str, Any] = msgspec.json.decode(stored.body)
        if not body.get("background"):
            raise InvalidRequest("Only background responses can be cancelled.", param="response_id")
        if run is not None and run.task is not None and run.running:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(run.task)
            await self._settle(run)
            return run.turn.builder.snapshot()
        return body

    # -- what is stored -------------------------------------------------------------------------------------

    async def _stored(self, response_id: str, owner: str) -> StoredResponse:
        stored = await self.store.get(response_id, owner)
        if stored is None:
            raise _not_found(response_id)
        return stored

    async def retrieve(self, response_id: str, owner: str) -> dict[str, Any]:
        body: dict[str, Any] = msgspec.json.decode((await self._stored(response_id, owner)).body)
        return body

    async def input_items(self, response_id: str, owner: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = msgspec.json.decode((await self._stored(response_id, owner)).input)
        return items

    async def delete(self, response_id: str, owner: str) -> None:
        run = self._runs.get(response_id)
        if run is not None and run.task is not None and run.running and await self.store.get(response_id, owner):
            # Stopped (and settled) first: a run settling after the delete would store its response again.
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(run.task)
            await self._settle(run)
        if not await self.store.delete(response_id, owner):
            raise _not_found(response_id)
