"""The Realtime API's conversation on the wire: items and their parts, responses, and the server's events.

An :class:`Item` is one entry of the conversation — a message (its parts), a function call or a
function call's output — kept as the session holds it and shown by :func:`item_object`. Items a
client creates are read by :func:`parse_item`; the ones a response makes are built by the session.
:func:`event` stamps every server event with its ``event_id``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

from backends.types import IMAGE_MARKER, ChatMessage, ImageInput, ToolCall, Usage
from compat.errors import InvalidRequest
from compat.openai.content import image_input
from compat.openai.realtime import Settings, new_id

__all__ = ["Item", "Part", "RealtimeResponse", "chat_messages", "event", "item_object", "parse_item",
           "response_object", "usage_object"]

ItemType = Literal["message", "function_call", "function_call_output"]
_ROLE_PARTS = {"user": ("input_text", "input_audio", "input_image"), "system": ("input_text",),
               "assistant": ("output_text", "output_audio", "text", "audio")}


@dataclass(slots=True)
class Part:
    """One part of a message."""

    type: str
    """``input_text``, ``input_audio``, ``input_image``, ``output_text`` or ``output_audio``."""
    text: str | None = None
    transcript: str | None = None
    image: ImageInput | None = None
    image_url: str | None = None
    detail: str | None = None
    audio: bytes | None = None
    """Audio a client sent in the item (in the session's input format), until it is transcribed."""
    heard: str | None = None
    """What the model is given of an input audio part that the client sees no transcript of (the session
    transcribes for its own use even when ``input_audio_transcription`` is off)."""
    spoken: list[tuple[int, int]] = field(default_factory=list)
    """Of output audio: (ms of audio, characters of the transcript) at the end of each spoken clause."""
    audio_ms: int = 0
    """Of output audio: how much was made."""

    def words(self) -> str:
        """What the model reads of it."""
        if self.type in ("input_audio", "output_audio", "audio"):
            return self.transcript or self.heard or ""
        return self.text or ""


@dataclass(slots=True)
class Item:
    id: str
    type: ItemType
    status: Literal["completed", "in_progress", "incomplete"] = "completed"
    role: str | None = None
    content: list[Part] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A server event of type ``kind``."""
    return {"type": kind, "event_id": new_id("event"), **fields}


def _part_object(part: Part) -> dict[str, Any]:
    if part.type == "input_text":
        return {"type": "input_text", "text": part.text}
    if part.type == "input_audio":
        return {"type": "input_audio", "transcript": part.transcript}
    if part.type == "input_image":
        return {"type": "input_image", "image_url": part.image_url, "detail": part.detail or "auto"}
    if part.type in ("output_audio", "audio"):
        return {"type": "output_audio", "transcript": part.transcript or ""}
    return {"type": "output_text", "text": part.text or ""}


def item_object(item: Item) -> dict[str, Any]:
    base: dict[str, Any] = {"id": item.id, "object": "realtime.item", "type": item.type, "status": item.status}
    if item.type == "message":
        return {**base, "role": item.role, "content": [_part_object(p) for p in item.content]}
    if item.type == "function_call":
        return {**base, "name": item.name, "call_id": item.call_id, "arguments": item.arguments or ""}
    return {**base, "call_id": item.call_id, "output": item.output}


def parse_item(raw: dict[str, Any], param: str = "item") -> Item:
    """A client's item; a wrong shape is an ``invalid_request_error`` naming its place."""
    kind = raw.get("type")
    item_id = raw.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not 0 < len(item_id) <= 64):
        raise InvalidRequest(f"Invalid '{param}.id': an id of 1 to 64 characters.", param=f"{param}.id",
                             code="invalid_value")
    item_id = item_id or new_id("item")
    known = {"message": {"content", "role"}, "function_call": {"call_id", "name", "arguments"},
             "function_call_output": {"call_id", "output"}}
    if kind not in known:
        raise InvalidRequest(f"Invalid '{param}.type': {str(kind)[:32]!r}; expected 'message', 'function_call' or"
                             " 'function_call_output'.", param=f"{param}.type", code="invalid_value")
    for key in raw:
        if key not in known[kind] | {"type", "id", "object", "status"}:
            raise InvalidRequest(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}",
                                 code="unknown_parameter")
    if kind == "message":
        return _message(raw, item_id, param)
    call_id = _text(raw, "call_id", param, required=True)
    if kind == "function_call":
        return Item(item_id, "function_call", call_id=call_id, name=_text(raw, "name", param, required=True),
                    arguments=_text(raw, "arguments", param) or "")
    return Item(item_id, "function_call_output", call_id=call_id, output=_text(raw, "output", param, required=True))


def _text(raw: dict[str, Any], key: str, param: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        what = "Missing required parameter" if value is None else "Invalid type for"
        raise InvalidRequest(f"{what}: '{param}.{key}' (a string).", param=f"{param}.{key}",
                             code="missing_required_parameter" if value is None else "invalid_type")
    return value


def _message(raw: dict[str, Any], item_id: str, param: str) -> Item:
    role = raw.get("role")
    if role not in _ROLE_PARTS:
        raise InvalidRequest(f"Invalid '{param}.role': {str(role)[:32]!r}; expected 'user', 'assistant' or 'system'.",
                             param=f"{param}.role", code="invalid_value")
    content = raw.get("content")
    if not isinstance(content, list):
        raise InvalidRequest(f"Missing required parameter: '{param}.content' (a list of parts).",
                             param=f"{param}.content", code="missing_required_parameter")
    parts = [_part(p, role, f"{param}.content[{i}]") for i, p in enumerate(content)]
    return Item(item_id, "message", role=role, content=parts)


def _part(raw: Any, role: str, where: str) -> Part:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Invalid '{where}': a content part is an object.", param=where, code="invalid_type")
    kind = raw.get("type")
    if kind not in _ROLE_PARTS[role]:
        raise InvalidRequest(f"Invalid '{where}.type': {str(kind)[:32]!r}; a {role} message's parts are"
                             f" {', '.join(_ROLE_PARTS[role])}.", param=f"{where}.type", code="invalid_value")
    allowed = {"input_text": {"text"}, "output_text": {"text"}, "text": {"text"},
               "input_audio": {"audio", "transcript"}, "output_audio": {"audio", "transcript"},
               "audio": {"audio", "transcript"}, "input_image": {"image_url", "detail"}}[kind]
    for key in raw:
        if key not in allowed | {"type"}:
            raise InvalidRequest(f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}",
                                 code="unknown_parameter")
    if kind in ("input_text", "output_text", "text"):
        return Part("output_text" if kind == "text" else kind, text=_text(raw, "text", where, required=True))
    if kind == "input_image":
        url = _text(raw, "image_url", where, required=True)
        assert url is not None
        detail = _text(raw, "detail", where)
        image = image_input(url, detail, f"{where}.image_url")
        return Part("input_image", image=image, image_url=image.url, detail=detail)
    transcript = _text(raw, "transcript", where)
    audio_b64 = _text(raw, "audio", where)
    audio = None
    if audio_b64 is not None:
        try:
            audio = base64.b64decode(audio_b64, validate=True)
        except ValueError:
            raise InvalidRequest(f"Invalid '{where}.audio': the audio must be base64-encoded.",
                                 param=f"{where}.audio", code="invalid_value") from None
    if transcript is None and audio is None:
        raise InvalidRequest(f"'{where}' needs its 'audio' or its 'transcript'.", param=where,
                             code="missing_required_parameter")
    return Part("output_audio" if kind == "audio" else kind, transcript=transcript, audio=audio)


def chat_messages(items: list[Item]) -> list[ChatMessage]:
    """The conversation as chat messages: function calls join the assistant message before them."""
    messages: list[ChatMessage] = []
    for item in items:
        if item.type == "function_call":
            call = ToolCall(id=item.call_id or item.id, name=item.name or "", arguments=item.arguments or "")
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and not last.tool_call_id:
                messages[-1] = ChatMessage(role="assistant", content=last.content, images=last.images,
                                           tool_calls=(*last.tool_calls, call))
            else:
                messages.append(ChatMessage(role="assistant", content="", tool_calls=(call,)))
        elif item.type == "function_call_output":
            messages.append(ChatMessage(role="tool", content=item.output or "", tool_call_id=item.call_id))
        else:
            texts, images = [], []
            for part in item.content:
                if part.type == "input_image" and part.image is not None:
                    texts.append(IMAGE_MARKER)
                    images.append(part.image)
                elif words := part.words().replace(IMAGE_MARKER, ""):
                    texts.append(words)
            messages.append(ChatMessage(role=item.role or "user", content=" ".join(texts), images=tuple(images)))
    return messages


@dataclass(slots=True)
class RealtimeResponse:
    """A response as the session tracks it."""

    settings: Settings
    id: str = field(default_factory=lambda: new_id("resp"))
    status: Literal["in_progress", "completed", "cancelled", "incomplete", "failed"] = "in_progress"
    details: dict[str, Any] | None = None
    output: list[Item] = field(default_factory=list)
    usage: Usage | None = None
    metadata: dict[str, str] | None = None
    in_conversation: bool = True


def usage_object(usage: Usage | None, audio_out_tokens: int = 0) -> dict[str, Any] | None:
    if usage is None:
        return None
    text_out = usage.completion_tokens
    return {"total_tokens": usage.prompt_tokens + text_out + audio_out_tokens,
            "input_tokens": usage.prompt_tokens, "output_tokens": text_out + audio_out_tokens,
            "input_token_details": {"text_tokens": usage.prompt_tokens, "audio_tokens": 0, "image_tokens": 0,
                                    "cached_tokens": usage.cached_tokens,
                                    "cached_tokens_details": {"text_tokens": usage.cached_tokens,
                                                              "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out_tokens}}


def response_object(r: RealtimeResponse, audio_out_tokens: int = 0) -> dict[str, Any]:
    s = r.settings
    return {"object": "realtime.response", "id": r.id, "status": r.status, "status_details": r.details,
            "output": [item_object(i) for i in r.output],
            "conversation_id": "conv_" + s.id.removeprefix("sess_") if r.in_conversation else None,
            "output_modalities": list(s.modalities),
            "max_output_tokens": "inf" if s.max_output_tokens is None else s.max_output_tokens,
            "audio": {"output": {"format": s.output_format.wire(), "voice": s.voice}},
            "usage": usage_object(r.usage, audio_out_tokens), "metadata": r.metadata}
