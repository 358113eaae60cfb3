"""``POST /v1/chat/completions``: request validation → :class:`ChatRequest`, and the response shapes.

Every field of OpenAI's request is either honoured, or handed to the server's unsupported-parameter
policy by name. ``null`` means the same as absent, as in OpenAI's API.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from backends.errors import InvalidRequest
from backends.types import ChatMessage, ChatRequest, FinishReason, SamplingParams, Usage
from compat.openai.sampling import SamplingFields, sampling_params
from compat.wire import ParamPolicy, to_struct

__all__ = [
    "ChatCompletionRequest",
    "ChatStream",
    "chat_completion",
    "parse_chat_request",
]


class _Part(msgspec.Struct, forbid_unknown_fields=True, tag_field="type"):
    pass


class TextPart(_Part, tag="text"):
    text: str


class ImageURL(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part, tag="image_url"):
    image_url: ImageURL


class InputAudioPart(_Part, tag="input_audio"):
    input_audio: dict[str, Any]


class FilePart(_Part, tag="file"):
    file: dict[str, Any]


class RefusalPart(_Part, tag="refusal"):
    refusal: str


ContentPart = TextPart | ImagePart | InputAudioPart | FilePart | RefusalPart


class _Message(msgspec.Struct, forbid_unknown_fields=True, tag_field="role"):
    pass


class SystemMessage(_Message, tag="system"):
    content: str | list[ContentPart]
    name: str | None = None


class DeveloperMessage(_Message, tag="developer"):
    content: str | list[ContentPart]
    name: str | None = None


class UserMessage(_Message, tag="user"):
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(_Message, tag="assistant"):
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None


class ToolMessage(_Message, tag="tool"):
    content: str | list[ContentPart]
    tool_call_id: str


class FunctionMessage(_Message, tag="function"):
    content: str | None
    name: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage


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
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
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


def _text_of(content: str | list[ContentPart] | None, where: str, policy: ParamPolicy) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        else:
            kind = {ImagePart: "image", InputAudioPart: "audio", FilePart: "file"}[type(part)]
            policy.unsupported(f"{where}.content[{j}]", f"{kind} content parts are not supported yet")
    return "\n".join(texts)


def _messages(request: ChatCompletionRequest, policy: ParamPolicy) -> tuple[ChatMessage, ...]:
    out: list[ChatMessage] = []
    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(m, ToolMessage | FunctionMessage):
            policy.unsupported(where, f"'{m.__struct_config__.tag}' messages need tool support")
            continue
        if isinstance(m, AssistantMessage):
            if m.tool_calls:
                policy.unsupported(f"{where}.tool_calls")
            if m.function_call:
                policy.unsupported(f"{where}.function_call")
            if m.audio:
                policy.unsupported(f"{where}.audio")
        role = "system" if isinstance(m, DeveloperMessage) else str(m.__struct_config__.tag)
        text = _text_of(m.content, where, policy)
        name = m.name if isinstance(m, SystemMessage | DeveloperMessage | UserMessage | AssistantMessage) else None
        out.append(ChatMessage(role=role, content=text, name=name))
    if not out:
        raise InvalidRequest("No message is left to answer.", param="messages")
    return tuple(out)


def _screen_features(r: ChatCompletionRequest, policy: ParamPolicy) -> None:
    """Hand every set-but-unimplemented feature to the policy, by name."""
    if r.tools:
        policy.unsupported("tools")
    if r.tool_choice not in (None, "none", "auto"):
        policy.unsupported("tool_choice")
    if r.functions:
        policy.unsupported("functions")
    if r.function_call not in (None, "none", "auto"):
        policy.unsupported("function_call")
    if r.response_format is not None and r.response_format.get("type", "text") != "text":
        policy.unsupported("response_format")
    if r.logprobs:
        policy.unsupported("logprobs")
    if r.top_logprobs:
        policy.unsupported("top_logprobs")
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
    r = to_struct(raw, ChatCompletionRequest)
    if r.stream_options is not None and not r.stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options")
    _screen_features(r, policy)
    max_tokens = r.max_completion_tokens if r.max_completion_tokens is not None else r.max_tokens
    sampling: SamplingParams = sampling_params(r, max_tokens, policy)
    return ParsedChat(
        request=ChatRequest(messages=_messages(r, policy), sampling=sampling),
        model=r.model,
        stream=bool(r.stream),
        include_usage=bool(r.stream_options and r.stream_options.include_usage),
        user=r.user or r.safety_identifier,
    )


# --------------------------------------------------------------------------------------------------
# Responses


class ResponseMessage(msgspec.Struct):
    content: str | None
    role: str = "assistant"
    refusal: str | None = None
    annotations: list[Any] = msgspec.field(default_factory=list)


class Choice(msgspec.Struct):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: None = None


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
                     total_tokens=usage.total_tokens)


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


def chat_completion(model: str, text: str, finish: FinishReason | None, usage: Usage) -> ChatCompletion:
    return ChatCompletion(
        id=new_id("chatcmpl"), created=int(time.time()), model=model,
        choices=[Choice(index=0, message=ResponseMessage(content=text), finish_reason=finish)],
        usage=usage_body(usage),
    )


class Delta(msgspec.Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


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

    def first(self) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(0, Delta(role="assistant", content="", refusal=None))])

    def content(self, text: str) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(0, Delta(content=text))])

    def finish(self, reason: FinishReason) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(0, Delta(), finish_reason=reason)])

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self._chunk([], usage=usage_body(usage))
