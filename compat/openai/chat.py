"""``POST /v1/chat/completions``: request validation → :class:`ChatRequest`, and the response shapes.

Every field of OpenAI's request is either honoured, or handed to the server's unsupported-parameter
policy by name. ``null`` means the same as absent, as in OpenAI's API.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from backends.answers import (
    AnswerEnd,
    CallDelta,
    CallOpened,
    ChatAnswer,
    ChatEvent,
    ChoiceFinished,
    ChoiceOpened,
    ChoiceResult,
    TextDelta,
)
from backends.types import (
    ChatMessage,
    ChatRequest,
    FinishReason,
    OutputFormat,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolSpec,
    Usage,
)
from compat.errors import InvalidRequest
from compat.openai.content import ContentPart, split_content
from compat.openai.dialect import OpenAI
from compat.openai.sampling import SamplingFields, sampling_params, screen_sizes
from compat.wire import ParamPolicy, to_struct

__all__ = [
    "ChatCompletionRequest",
    "ChatStream",
    "chat_body",
    "chat_chunks",
    "chat_completion",
    "parse_chat_request",
]


class _Message(msgspec.Struct, forbid_unknown_fields=True, tag_field="role"):
    pass


# Fields a client sends back because a response message carried them (the SDKs' own
# ``messages.append(response.choices[0].message)``, accumulated streams, other providers' message objects).
# OpenAI accepts them on a message and ignores them, and so do we; none of them reaches the prompt.
# Anything else on a message is still refused by name.
_Echoed = Any


class SystemMessage(_Message, tag="system"):
    content: str | list[ContentPart]
    name: str | None = None


class DeveloperMessage(_Message, tag="developer"):
    content: str | list[ContentPart]
    name: str | None = None


class UserMessage(_Message, tag="user"):
    content: str | list[ContentPart]
    name: str | None = None


_NAME = msgspec.Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")


class CalledFunction(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: str
    parsed_arguments: _Echoed = None  # the SDKs' parse()/stream helpers put the decoded arguments here


class MessageToolCall(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    function: CalledFunction
    type: Literal["function"] = "function"
    index: _Echoed = None  # the position a streamed call was accumulated from


class AssistantMessage(_Message, tag="assistant"):
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    # Echoed from responses: OpenAI's own, Groq's, reasoning models' and client libraries' message objects.
    annotations: _Echoed = None
    reasoning_content: _Echoed = None
    reasoning: _Echoed = None
    reasoning_details: _Echoed = None
    thinking_blocks: _Echoed = None
    executed_tools: _Echoed = None
    provider_specific_fields: _Echoed = None
    parsed: _Echoed = None  # the SDKs' parse()/stream helpers put the decoded structured output here


class ToolMessage(_Message, tag="tool"):
    content: str | list[ContentPart]
    tool_call_id: str
    name: _Echoed = None  # the called function's name, as OpenAI's cookbook sends it


class FunctionMessage(_Message, tag="function"):
    content: str | None
    name: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage


class FunctionDefinition(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, _NAME]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    function: FunctionDefinition | None = None
    custom: dict[str, Any] | None = None


class JsonSchemaFormat(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, _NAME]
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _Format(msgspec.Struct, forbid_unknown_fields=True, tag_field="type"):
    pass


class TextFormat(_Format, tag="text"):
    pass


class JsonObjectFormat(_Format, tag="json_object"):
    pass


class JsonSchemaResponseFormat(_Format, tag="json_schema"):
    json_schema: JsonSchemaFormat


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaResponseFormat


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    model: str
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Accepted and honoured as what they are for this server: caller identity (logged) and caching
    # hints (the engine reuses prompt prefixes on its own).
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    # Defined by OpenAI; each is honoured, or handed to the unsupported-parameter policy.
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None


KNOWN_FIELDS = frozenset(ChatCompletionRequest.__struct_fields__)


class ParsedChat(msgspec.Struct):
    request: ChatRequest
    model: str
    stream: bool
    include_usage: bool
    user: str | None


def _messages(request: ChatCompletionRequest, policy: ParamPolicy) -> tuple[ChatMessage, ...]:
    out: list[ChatMessage] = []
    answerable: set[str] = set()  # ids of the calls the latest assistant message made
    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(m, ToolMessage):
            if m.tool_call_id not in answerable:
                raise InvalidRequest(f"Invalid parameter: messages with role 'tool' must be a response to a"
                                     f" preceding message with 'tool_calls' ('{m.tool_call_id}' is not one of"
                                     " its calls).", param=where)
        elif isinstance(m, AssistantMessage):
            answerable = {c.id for c in m.tool_calls or ()}
        else:
            answerable = set()
        if isinstance(m, FunctionMessage):
            policy.unsupported(where, "'function' messages belong to the deprecated functions API; use 'tool'"
                                      " messages")
            continue
        calls: tuple[ToolCall, ...] = ()
        if isinstance(m, AssistantMessage):
            if m.tool_calls:
                calls = tuple(ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                              for c in m.tool_calls)
            if m.function_call:
                policy.unsupported(f"{where}.function_call", "use 'tool_calls'")
            if m.audio:
                policy.unsupported(f"{where}.audio")
        role = "system" if isinstance(m, DeveloperMessage) else str(m.__struct_config__.tag)
        text, images = split_content(m.content, where, policy)
        if images and not isinstance(m, UserMessage):
            raise InvalidRequest(f"Images are only allowed in user messages ('{images[0].where}').",
                                 param=images[0].where)
        name = m.name if isinstance(m, SystemMessage | DeveloperMessage | UserMessage | AssistantMessage) else None
        call_id = m.tool_call_id if isinstance(m, ToolMessage) else None
        out.append(ChatMessage(role=role, content=text, name=name, images=images, tool_calls=calls,
                               tool_call_id=call_id))
    if not out:
        raise InvalidRequest("No message is left to answer.", param="messages")
    return tuple(out)


def _tools(r: ChatCompletionRequest, policy: ParamPolicy) -> tuple[tuple[ToolSpec, ...], str]:
    """The functions on offer and the choice among them: "none", "auto", "required" or a name."""
    specs: list[ToolSpec] = []
    for i, tool in enumerate(r.tools or []):
        if tool.type != "function" or tool.function is None:
            policy.unsupported(f"tools[{i}]", f"only 'function' tools are supported (got '{tool.type}')")
            continue
        f = tool.function
        specs.append(ToolSpec(name=f.name, description=f.description,
                              parameters=f.parameters if f.parameters is not None else {"type": "object",
                                                                                          "properties": {}},
                              strict=bool(f.strict)))
    names = [t.name for t in specs]
    if len(set(names)) != len(names):
        raise InvalidRequest("Tool function names must be unique.", param="tools")
    choice = r.tool_choice
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, dict) or \
                not isinstance(function.get("name"), str):
            policy.unsupported("tool_choice", "the object form must be {'type': 'function', 'function':"
                                              " {'name': ...}}")
            choice = None
        else:
            name = function["name"]
            if name not in names:
                raise InvalidRequest(f"Invalid 'tool_choice': no function named '{name}' in 'tools'.",
                                     param="tool_choice")
            return tuple(specs), name
    if choice is None:
        choice = "auto" if specs else "none"
    if choice not in ("none", "auto", "required"):
        raise InvalidRequest(f"Invalid value for 'tool_choice': '{choice}'. Expected 'none', 'auto', 'required'"
                             " or an object naming a function.", param="tool_choice")
    if choice != "none" and not specs:
        raise InvalidRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are"
                             " specified.", param="tool_choice")
    return tuple(specs), choice


def _output(r: ChatCompletionRequest, messages: tuple[ChatMessage, ...]) -> OutputFormat:
    f = r.response_format
    if f is None or isinstance(f, TextFormat):
        return OutputFormat()
    if isinstance(f, JsonObjectFormat):
        if not any("json" in m.content.lower() for m in messages):
            raise InvalidRequest("'messages' must contain the word 'json' in some form, to use 'response_format'"
                                 " of type 'json_object'.", param="messages")
        return OutputFormat(kind="json")
    schema = f.json_schema.schema if f.json_schema.schema is not None else {"type": "object"}
    return OutputFormat(kind="json", json_schema=schema, strict=bool(f.json_schema.strict))


def _screen_features(r: ChatCompletionRequest, policy: ParamPolicy) -> None:
    """Hand every set-but-unimplemented feature to the policy, by name."""
    if r.functions:
        policy.unsupported("functions", "use 'tools'")
    if r.function_call not in (None, "none", "auto"):
        policy.unsupported("function_call", "use 'tool_choice'")
    if r.top_logprobs is not None and not r.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    if r.modalities is not None and set(r.modalities) - {"text"}:
        policy.unsupported("modalities", "only text output is supported")
    for name in ("audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"):
        if getattr(r, name) is not None:
            policy.unsupported(name)
    if r.store:
        policy.unsupported("store", "completions are never stored")
    if r.metadata:
        policy.unsupported("metadata", "metadata is only kept with stored completions")
    if r.service_tier not in (None, "auto", "default"):
        policy.unsupported("service_tier")


def parse_chat_request(raw: dict[str, Any], policy: ParamPolicy) -> ParsedChat:
    policy.screen(raw, KNOWN_FIELDS)
    screen_sizes(raw)
    r = to_struct(raw, ChatCompletionRequest)
    if r.stream_options is not None and not r.stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options")
    _screen_features(r, policy)
    max_tokens = r.max_completion_tokens if r.max_completion_tokens is not None else r.max_tokens
    sampling: SamplingParams = sampling_params(r, max_tokens, policy)
    if r.logprobs:
        sampling = dataclasses.replace(sampling, logprobs=r.top_logprobs or 0)
    messages = _messages(r, policy)
    tools, choice = _tools(r, policy)
    return ParsedChat(
        request=ChatRequest(messages=messages, sampling=sampling, tools=tools, tool_choice=choice,
                            parallel_tool_calls=r.parallel_tool_calls is not False, output=_output(r, messages)),
        model=r.model,
        stream=bool(r.stream),
        include_usage=bool(r.stream_options and r.stream_options.include_usage),
        user=r.user or r.safety_identifier,
    )


# --------------------------------------------------------------------------------------------------
# Responses


class FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct):
    id: str
    function: FunctionOut
    type: str = "function"


class ResponseMessage(msgspec.Struct):
    content: str | None
    role: str = "assistant"
    refusal: str | None = None
    annotations: list[Any] = msgspec.field(default_factory=list)
    tool_calls: list[ToolCallOut] | UnsetType = UNSET


class TopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class LogprobEntry(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(msgspec.Struct):
    content: list[LogprobEntry] | None
    refusal: list[LogprobEntry] | None = None


def logprobs_body(entries: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        LogprobEntry(token=e.token, logprob=e.logprob, bytes=list(e.bytes),
                     top_logprobs=[TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in e.top])
        for e in entries])


class Choice(msgspec.Struct):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    audio_tokens: int = 0


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class UsageBody(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = msgspec.field(default_factory=CompletionTokensDetails)


def usage_body(usage: Usage) -> UsageBody:
    return UsageBody(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                     total_tokens=usage.total_tokens,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens))


SYSTEM_FINGERPRINT = "fp_syn4pse"


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: UsageBody
    object: str = "chat.completion"
    system_fingerprint: str = SYSTEM_FINGERPRINT
    service_tier: str = "default"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_completion(model: str, results: list[ChoiceResult], usage: Usage) -> ChatCompletion:
    choices = []
    for index, r in enumerate(results):
        message = ResponseMessage(content=r.content or (None if r.tool_calls else ""))
        if r.tool_calls:
            message.tool_calls = [ToolCallOut(id=c.id, function=FunctionOut(name=c.name, arguments=c.arguments))
                                  for c in r.tool_calls]
        choices.append(Choice(index=index, message=message, finish_reason=r.finish_reason,
                              logprobs=None if r.logprobs is None else logprobs_body(r.logprobs)))
    return ChatCompletion(id=new_id("chatcmpl"), created=int(time.time()), model=model, choices=choices,
                          usage=usage_body(usage))


class FunctionDelta(msgspec.Struct):
    arguments: str
    name: str | UnsetType = UNSET


class ToolCallDelta(msgspec.Struct):
    index: int
    function: FunctionDelta
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET


class Delta(msgspec.Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    system_fingerprint: str = SYSTEM_FINGERPRINT
    service_tier: str = "default"
    usage: UsageBody | UnsetType | None = UNSET


class ChatStream:
    """Builds the chunks of one streamed chat completion, in OpenAI's order."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = new_id("chatcmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list[ChunkChoice], usage: UsageBody | UnsetType | None = UNSET) -> ChatCompletionChunk:
        if usage is UNSET and self.include_usage:
            usage = None  # OpenAI sends an explicit null on every chunk but the last
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices,
                                   usage=usage)

    def first(self, index: int = 0) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(index, Delta(role="assistant", content="", refusal=None))])

    def content(self, text: str, index: int = 0,
                logprobs: tuple[TokenLogprob, ...] | None = None) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(index, Delta(content=text),
                                        logprobs=None if logprobs is None else logprobs_body(logprobs))])

    def tool_call(self, index: int, call: int, *, id: str | None = None, name: str | None = None,
                  arguments: str = "") -> ChatCompletionChunk:
        """The first delta of a call names it (with its id); the ones after carry argument text."""
        delta = ToolCallDelta(index=call, function=FunctionDelta(arguments=arguments))
        if name is not None and id is not None:
            delta.id, delta.type, delta.function.name = id, "function", name
        return self._chunk([ChunkChoice(index, Delta(tool_calls=[delta]))])

    def finish(self, reason: FinishReason, index: int = 0) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(index, Delta(), finish_reason=reason)])

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self._chunk([], usage=usage_body(usage))


def chat_body(model: str, answer: ChatAnswer, dialect: OpenAI) -> Any:
    """A finished chat answer as the dialect's ``chat.completion``."""
    return dialect.completion(chat_completion(model, answer.choices, answer.usage), answer)


async def chat_chunks(events: AsyncIterator[ChatEvent], model: str, include_usage: bool,
                      dialect: OpenAI) -> AsyncIterator[Any]:
    """A streamed chat answer as the dialect's ``chat.completion.chunk`` payloads (None: a keep-alive)."""
    builder = ChatStream(model, include_usage)
    async for e in events:
        if isinstance(e, TextDelta):
            yield builder.content(e.text, e.index, e.logprobs)
        elif isinstance(e, CallOpened):
            yield builder.tool_call(e.index, e.call, id=e.id, name=e.name)
        elif isinstance(e, CallDelta):
            yield builder.tool_call(e.index, e.call, arguments=e.fragment)
        elif isinstance(e, ChoiceOpened):
            first = builder.first(e.index)
            yield dialect.first_chunk(first) if e.index == 0 else first
        elif isinstance(e, ChoiceFinished):
            yield dialect.finishing_chunk(builder.finish(e.reason, e.index), e)
        elif isinstance(e, AnswerEnd):
            if include_usage:
                yield builder.usage(e.usage)
        else:
            yield None
