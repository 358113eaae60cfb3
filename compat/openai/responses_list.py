"""The Responses API's other requests: the query of ``GET /v1/responses/{id}`` and of its
``input_items`` (OpenAI's cursor pages), and the ``response.create`` message of its WebSocket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compat.errors import GatewayError, InvalidRequest
from compat.openai.responses_input import INCLUDABLE

__all__ = ["ListQuery", "RetrieveQuery", "SocketCancel", "deleted_body", "input_items_page", "input_tokens_body",
           "parse_list_query", "parse_retrieve_query", "socket_error", "socket_message"]

_TRUE = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True, slots=True)
class RetrieveQuery:
    stream: bool = False
    starting_after: int = -1


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _known(query: dict[str, list[str]], known: set[str]) -> None:
    for name in query:
        if name not in known:
            raise InvalidRequest(f"Unrecognized request argument supplied: '{name}'.", param=name,
                                 code="unknown_parameter")
    for i, value in enumerate(query.get("include[]", []) + query.get("include", [])):
        if value not in INCLUDABLE:
            raise InvalidRequest(f"Invalid value for 'include[{i}]': '{value}'.", param=f"include[{i}]",
                                 code="invalid_value")


def _integer(query: dict[str, list[str]], name: str, default: int, low: int, high: int | None = None) -> int:
    value = _one(query, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"Invalid '{name}': expected an integer, but got '{value[:32]}' instead.", param=name,
                             code="invalid_type") from None
    if number < low or (high is not None and number > high):
        most = f" and <= {high}" if high is not None else ""
        raise InvalidRequest(f"Invalid '{name}': expected a value >= {low}{most}, but got {number} instead.",
                             param=name, code="invalid_value")
    return number


def parse_retrieve_query(query: dict[str, list[str]]) -> RetrieveQuery:
    _known(query, {"stream", "starting_after", "include", "include[]", "include_obfuscation"})
    stream = _one(query, "stream")
    if stream is not None and stream.lower() not in _TRUE:
        raise InvalidRequest(f"Invalid 'stream': expected a boolean, but got '{stream[:32]}' instead.",
                             param="stream", code="invalid_type")
    return RetrieveQuery(stream=stream is not None and _TRUE[stream.lower()],
                         starting_after=_integer(query, "starting_after", -1, 0))


def parse_list_query(query: dict[str, list[str]]) -> ListQuery:
    _known(query, {"limit", "order", "after", "before", "include", "include[]"})
    order = _one(query, "order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"Invalid value for 'order': '{order[:32]}'. Expected 'asc' or 'desc'.", param="order",
                             code="invalid_value")
    return ListQuery(limit=_integer(query, "limit", 20, 1, 100), order=order, after=_one(query, "after"),
                     before=_one(query, "before"))


def input_items_page(items: list[dict[str, Any]], query: ListQuery) -> dict[str, Any]:
    """One page of a response's input items, as OpenAI's cursor lists: ``after``/``before`` an item's id."""
    ordered = items if query.order == "asc" else items[::-1]
    ids = [item.get("id") for item in ordered]
    start, end = 0, len(ordered)
    for cursor, name in ((query.after, "after"), (query.before, "before")):
        if cursor is None:
            continue
        if cursor not in ids:
            raise InvalidRequest(f"Invalid '{name}': no input item with id '{cursor[:64]}'.", param=name)
        if name == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    page = ordered[start:end][:query.limit] if query.before is None else ordered[start:end][-query.limit:]
    return {"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": (start + len(page) < end) if query.before is None else (end - len(page) > start)}


@dataclass(frozen=True, slots=True)
class SocketCancel:
    """``response.cancel``: stop the response running on the socket (``response_id`` names it, or not)."""

    response_id: str | None


def socket_message(message: dict[str, Any]) -> dict[str, Any] | SocketCancel:
    """What a WebSocket message asks: the body of a ``response.create`` (its fields are those of
    ``POST /v1/responses``; every response on a socket streams, background responses are HTTP's alone),
    or a :class:`SocketCancel`."""
    kind = message.get("type")
    if kind == "response.cancel":
        response_id = message.get("response_id")
        if response_id is not None and not isinstance(response_id, str):
            raise InvalidRequest("Invalid 'response_id': expected a string.", param="response_id",
                                 code="invalid_type")
        return SocketCancel(response_id)
    if kind != "response.create":
        raise InvalidRequest(f"Invalid 'type': '{str(kind)[:64]}'. This socket takes 'response.create' and"
                             " 'response.cancel' messages.", param="type", code="invalid_value")
    body = {k: v for k, v in message.items() if k != "type"}
    if body.pop("stream", True) is not True:
        raise InvalidRequest("Responses on a WebSocket always stream: leave 'stream' out.", param="stream")
    if body.get("background"):
        raise InvalidRequest("Background responses are not supported over a WebSocket; use POST /v1/responses.",
                             param="background")
    body["stream"] = True
    return body


def socket_error(error: GatewayError) -> dict[str, Any]:
    """An error a WebSocket answers a message with (the socket stays open), in OpenAI's shape."""
    return {"type": "error", "status": error.status,
            "error": {"type": error.kind, "code": error.code, "message": error.message, "param": error.param}}


def input_tokens_body(count: int) -> dict[str, Any]:
    return {"object": "response.input_tokens", "input_tokens": count}


def deleted_body(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response.deleted", "deleted": True}
