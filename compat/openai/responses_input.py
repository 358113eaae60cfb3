"""``POST /v1/responses``: the request, validated, and its input items read into chat messages.

A response's input is a string or a list of items (messages, function calls and their outputs, reasoning
items the client echoes back); it runs on the same chat engine, tools and grammars as chat completions.
Items are kept in their full form (:func:`stored_item`: every message's content a list of parts, every
item an id), the form ``input_items`` lists and a continuation (``previous_response_id``) reads again.
Every field of OpenAI's request is honoured, accepted as what it is for this server, or handed to the
unsupported-parameter policy by name; a built-in tool is a 400 naming it whatever the policy.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any, Literal

import msgspec

from backends.types import IMAGE_MARKER, ChatMessage, ChatRequest, OutputFormat, SamplingParams, ToolCall, ToolSpec
from compat.errors import InvalidRequest
from compat.openai.content import ContentPart, ImagePart, ImageURL, RefusalPart, TextPart, split_content
from compat.wire import ParamPolicy, to_struct

__all__ = [
    "INCLUDABLE",
    "Item",
    "ItemReference",
    "ParsedResponse",
    "ResponseCreate",
    "chat_messages",
    "new_item_id",
    "parse_items",
    "parse_response_request",
    "stored_item",
]

BUILT_IN_TOOLS = frozenset({
    "web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26",
    "file_search", "code_interpreter", "computer_use", "computer_use_preview", "computer", "mcp",
    "image_generation", "local_shell", "shell", "apply_patch", "tool_search",
})
"""OpenAI's hosted tools: this server runs none of them, and a request counting on one is refused."""

INCLUDABLE = frozenset({
    "message.output_text.logprobs", "reasoning.encrypted_content", "message.input_image.image_url",
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "code_interpreter_call.outputs", "computer_call_output.output.image_url",
})
"""What ``include`` may name. Only the logprobs change an answer here: the rest belong to items this
server never makes, or are always included (input image URLs)."""

MAX_METADATA_KEYS = 16


class _Part(msgspec.Struct, forbid_unknown_fields=True, tag_field="type"):
    pass


class InputText(_Part, tag="input_text"):
    text: str


class InputImage(_Part, tag="input_image"):
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(_Part, tag="input_file"):
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None
    detail: str | None = None


class InputAudio(_Part, tag="input_audio"):
    input_audio: dict[str, Any]


class OutputText(_Part, tag="output_text"):
    text: str
    annotations: list[Any] | None = None  # echoed from an output message; none are made here
    logprobs: list[Any] | None = None


class Refusal(_Part, tag="refusal"):
    refusal: str


Part = InputText | InputImage | InputFile | InputAudio | OutputText | Refusal


class _Item(msgspec.Struct, forbid_unknown_fields=True, tag_field="type"):
    pass


class MessageItem(_Item, tag="message"):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: str | None = None
    phase: str | None = None  # an assistant message's place in a multi-step answer, echoed back


class FunctionCallItem(_Item, tag="function_call"):
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None
    namespace: str | None = None


class FunctionCallOutputItem(_Item, tag="function_call_output"):
    call_id: str
    output: str | list[Part]
    id: str | None = None
    status: str | None = None


class ReasoningItem(_Item, tag="reasoning"):
    """Echoed back by agents after another provider's reasoning model: accepted, and not read."""

    id: str | None = None
    summary: list[Any] | None = None
    content: list[Any] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class ItemReference(_Item, tag="item_reference"):
    id: str


Item = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem | ItemReference


class TextFormat(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")] | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, forbid_unknown_fields=True):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(msgspec.Struct, forbid_unknown_fields=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_obfuscation: bool | None = None


class ResponseCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, msgspec.Meta(ge=1)] | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=16)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    metadata: dict[str, Annotated[str, msgspec.Meta(max_length=512)]] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: Reasoning | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    # Defined by OpenAI for services this server does not run: each is handed to the policy when set.
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    context_management: list[Any] | None = None
    background_options: dict[str, Any] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    access_programs: Any = None
    image: dict[str, Any] | None = None


KNOWN_FIELDS = frozenset(ResponseCreate.__struct_fields__)


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedResponse:
    """A validated request: what the engine is asked (its messages still to be joined to a continuation's
    conversation), and what the response object echoes back."""

    model: str
    items: list[Item]
    """The new input, in order."""
    instructions: str | None
    sampling: SamplingParams
    tools: tuple[ToolSpec, ...]
    tool_choice: str
    parallel_tool_calls: bool
    output: OutputFormat
    stream: bool
    store: bool
    background: bool
    previous_response_id: str | None
    truncation: str
    echo: ResponseCreate
    """The request as sent, for the fields the response object repeats."""
    policy: ParamPolicy
    """The request's parameter policy: a continuation's items are read under it too."""

    def chat_request(self, messages: tuple[ChatMessage, ...]) -> ChatRequest:
        return ChatRequest(messages=messages, sampling=self.sampling, tools=self.tools, tool_choice=self.tool_choice,
                           parallel_tool_calls=self.parallel_tool_calls, output=self.output)


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


def _typed(raw: dict[str, Any]) -> dict[str, Any]:
    """An "easy" message (``{"role", "content"}``, no ``type``) as the message item it stands for."""
    if "type" not in raw and "role" in raw:
        return {**raw, "type": "message"}
    return raw


def parse_items(raw: str | list[dict[str, Any]] | list[Any], where: str = "input") -> list[Item]:
    if isinstance(raw, str):
        return [MessageItem(role="user", content=raw)]
    items: list[Item] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InvalidRequest(f"Invalid type for '{where}[{i}]': expected an object, but got"
                                 f" {type(entry).__name__} instead.", param=f"{where}[{i}]", code="invalid_type")
        try:
            items.append(to_struct(_typed(entry), Item))  # type: ignore[arg-type]
        except InvalidRequest as e:
            param = f"{where}[{i}]" + (f".{e.param}" if e.param else "")
            raise InvalidRequest(e.message.replace(f"'{e.param}'", f"'{param}'") if e.param else e.message,
                                 param=param, code=e.code) from None
    return items


def _tools(r: ResponseCreate, policy: ParamPolicy) -> tuple[list[ToolSpec], set[str]]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(r.tools or []):
        kind = tool.get("type")
        where = f"tools[{i}]"
        if kind in BUILT_IN_TOOLS:
            raise InvalidRequest(f"Invalid '{where}': the built-in tool '{kind}' is not available on this server;"
                                 " only function tools are.", param=where, code="unsupported_tool")
        if kind != "function":
            policy.unsupported(where, f"only 'function' tools are supported (got '{kind}')")
            continue
        spec = to_struct({k: v for k, v in tool.items() if k != "type"}, _FunctionTool)
        specs.append(ToolSpec(name=spec.name, description=spec.description,
                              parameters=spec.parameters if spec.parameters is not None else
                              {"type": "object", "properties": {}},
                              strict=spec.strict is not False))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidRequest("Tool function names must be unique.", param="tools")
    return specs, set(names)


class _FunctionTool(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z0-9_.-]{1,128}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # Responses' function tools are strict unless told otherwise
    defer_loading: bool | None = None


def _named(choice: dict[str, Any], names: set[str], where: str) -> str:
    name = choice.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(f"Missing required parameter: '{where}.name'.", param=f"{where}.name",
                             code="missing_required_parameter")
    if name not in names:
        raise InvalidRequest(f"Invalid '{where}': no function named '{name}' in 'tools'.", param=where)
    return name


def _tool_choice(r: ResponseCreate, specs: list[ToolSpec], names: set[str]) -> tuple[tuple[ToolSpec, ...], str]:
    choice = r.tool_choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            return tuple(specs), _named(choice, names, "tool_choice")
        if kind == "allowed_tools":
            mode = choice.get("mode", "auto")
            allowed = choice.get("tools")
            if mode not in ("auto", "required") or not isinstance(allowed, list):
                raise InvalidRequest("Invalid 'tool_choice': 'allowed_tools' needs a 'mode' of 'auto' or"
                                     " 'required' and a list of 'tools'.", param="tool_choice")
            keep = {_named(t, names, f"tool_choice.tools[{i}]") if isinstance(t, dict) else "" for i, t in
                    enumerate(allowed)}
            return tuple(s for s in specs if s.name in keep), mode
        raise InvalidRequest(f"Invalid 'tool_choice': the tool type '{kind}' is not available on this server;"
                             " only function tools are.", param="tool_choice", code="unsupported_tool")
    if choice is None:
        choice = "auto" if specs else "none"
    if choice not in ("none", "auto", "required"):
        raise InvalidRequest(f"Invalid value for 'tool_choice': '{choice}'. Expected 'none', 'auto', 'required'"
                             " or an object naming a function.", param="tool_choice", code="invalid_value")
    if choice == "required" and not specs:
        raise InvalidRequest("Invalid 'tool_choice': 'required' needs at least one function in 'tools'.",
                             param="tool_choice")
    return tuple(specs), choice


def _output(r: ResponseCreate) -> OutputFormat:
    f = r.text.format if r.text is not None else None
    if f is None or f.type == "text":
        return OutputFormat()
    if f.type == "json_object":
        return OutputFormat(kind="json")
    if f.name is None:
        raise InvalidRequest("Missing required parameter: 'text.format.name'.", param="text.format.name",
                             code="missing_required_parameter")
    schema = f.schema if f.schema is not None else {"type": "object"}
    return OutputFormat(kind="json", json_schema=schema, strict=bool(f.strict))


def _screen(r: ResponseCreate, policy: ParamPolicy) -> None:
    """Refuse what cannot hold together; hand every set-but-unimplemented feature to the policy."""
    if r.background and r.store is False:
        raise InvalidRequest("Background mode requires 'store' to be true.", param="background")
    if r.stream_options is not None and not r.stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options")
    for i, name in enumerate(r.include or []):
        if name not in INCLUDABLE:
            raise InvalidRequest(f"Invalid value for 'include[{i}]': '{name}'. Supported values are: "
                                 + ", ".join(sorted(INCLUDABLE)) + ".", param=f"include[{i}]", code="invalid_value")
    if r.metadata and len(r.metadata) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"Invalid 'metadata': too many properties. Expected an object with at most"
                             f" {MAX_METADATA_KEYS} properties, but got {len(r.metadata)}.", param="metadata",
                             code="object_above_max_properties")
    if r.text is not None and r.text.verbosity not in (None, "medium"):
        policy.unsupported("text.verbosity", "the answer's length follows the model and 'max_output_tokens'")
    for name in ("conversation", "prompt", "context_management", "background_options", "prompt_cache_options",
                 "moderation", "access_programs", "image"):
        if getattr(r, name) is not None:
            policy.unsupported(name)


def parse_response_request(raw: dict[str, Any], policy: ParamPolicy) -> ParsedResponse:
    policy.screen(raw, KNOWN_FIELDS)
    r = to_struct(raw, ResponseCreate)
    _screen(r, policy)
    if r.input is None and r.previous_response_id is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    items = parse_items(r.input if r.input is not None else [])
    specs, names = _tools(r, policy)
    tools, choice = _tool_choice(r, specs, names)
    logprobs = (r.top_logprobs or 0) if "message.output_text.logprobs" in (r.include or ()) else None
    sampling = SamplingParams(max_tokens=r.max_output_tokens,
                              temperature=1.0 if r.temperature is None else r.temperature,
                              top_p=1.0 if r.top_p is None else r.top_p, logprobs=logprobs)
    return ParsedResponse(
        model=r.model, items=items, instructions=r.instructions, sampling=sampling, tools=tools, tool_choice=choice,
        parallel_tool_calls=r.parallel_tool_calls is not False, output=_output(r), stream=bool(r.stream),
        store=r.store is not False, background=bool(r.background), previous_response_id=r.previous_response_id,
        truncation=r.truncation or "disabled", echo=r, policy=policy)


# --------------------------------------------------------------------------------------------------
# Items → chat messages


def _chat_parts(parts: str | list[Part], where: str, policy: ParamPolicy) -> str | list[ContentPart]:
    if isinstance(parts, str):
        return parts
    out: list[ContentPart] = []
    for j, part in enumerate(parts):
        at = f"{where}.content[{j}]"
        if isinstance(part, InputText | OutputText):
            out.append(TextPart(text=part.text))
        elif isinstance(part, Refusal):
            out.append(RefusalPart(refusal=part.refusal))
        elif isinstance(part, InputImage) and part.image_url is not None:
            detail = part.detail if part.detail in ("auto", "low", "high") else None
            out.append(ImagePart(image_url=ImageURL(url=part.image_url, detail=detail)))
        elif isinstance(part, InputImage):
            policy.unsupported(f"{at}.file_id", "send the image as 'image_url' (a data URL or an http(s) URL)")
        else:
            kind = "audio" if isinstance(part, InputAudio) else "file"
            policy.unsupported(at, f"{kind} inputs are not supported")
    return out


def chat_messages(instructions: str | None, items: list[Item], policy: ParamPolicy,
                  first_new: int = 0) -> tuple[ChatMessage, ...]:
    """The chat a response's items make, after its instructions. Items from ``first_new`` on are the
    request's own input (errors name them ``input[i]``); those before come from the conversation it
    continues."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append(ChatMessage(role="system", content=instructions))
    called: set[str] = set()
    for i, item in enumerate(items):
        where = f"input[{i - first_new}]" if i >= first_new else "previous_response_id"
        if isinstance(item, MessageItem):
            text, images = split_content(_chat_parts(item.content, where, policy), where, policy)
            if images and item.role != "user":
                raise InvalidRequest(f"Images are only allowed in user messages ('{images[0].where}').",
                                     param=images[0].where)
            role = "system" if item.role == "developer" else item.role
            messages.append(ChatMessage(role=role, content=text, images=images))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments)
            called.add(item.call_id)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":  # one turn's calls, with the text before them
                messages[-1] = dataclasses.replace(last, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(ChatMessage(role="assistant", content="", tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in called:
                raise InvalidRequest(f"No tool call found for function call output with call_id {item.call_id}.",
                                     param=where)
            text, images = split_content(_chat_parts(item.output, where, policy), where, policy)
            for image in images:  # a tool message carries text only: an image would never reach the model
                policy.unsupported(image.where, "images in a function call's output are not read; send the image"
                                                " in a user message")
            text = text.replace(IMAGE_MARKER, "")
            messages.append(ChatMessage(role="tool", content=text, tool_call_id=item.call_id))
        elif isinstance(item, ItemReference):  # the serving layer puts the items they name in their place
            raise InvalidRequest(f"Item with id '{item.id[:64]}' not found.", param=where, code="item_not_found")
    if not any(m.role != "system" for m in messages):
        raise InvalidRequest("No input is left to answer.", param="input")
    return tuple(messages)


# --------------------------------------------------------------------------------------------------
# Items in their stored form


def _stored_parts(parts: str | list[Part], role: str) -> list[dict[str, Any]]:
    if isinstance(parts, str):
        kind = "output_text" if role == "assistant" else "input_text"
        parts = [OutputText(text=parts, annotations=[]) if kind == "output_text" else InputText(text=parts)]
    out = []
    for part in parts:
        entry = {k: v for k, v in msgspec.to_builtins(part).items() if v is not None}
        if isinstance(part, OutputText):
            entry["annotations"] = part.annotations or []
        out.append(entry)
    return out


_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
              "item_reference": "ref"}


def stored_item(item: Item) -> dict[str, Any]:
    """``item`` in full: an id, a status, a message's content as parts."""
    entry: dict[str, Any] = {k: v for k, v in msgspec.to_builtins(item).items() if v is not None}
    kind = str(item.__struct_config__.tag)
    entry["type"] = kind
    if not isinstance(item, ItemReference):
        entry.setdefault("id", new_item_id(_ID_PREFIX[kind]))
        entry.setdefault("status", "completed")
    if isinstance(item, MessageItem):
        entry["content"] = _stored_parts(item.content, item.role)
    return entry
