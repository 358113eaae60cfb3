"""``POST /v1/completions`` (legacy): raw prompts continued as-is, no chat template."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from backends.answers import CompletionAnswer, CompletionEvent, TextPiece
from backends.types import CompletionRequest, FinishReason, TokenLogprob, Usage
from compat.errors import InvalidRequest
from compat.openai.chat import SYSTEM_FINGERPRINT, StreamOptions, UsageBody, new_id, usage_body
from compat.openai.sampling import SamplingFields, array_too_long, sampling_params, screen_sizes
from compat.openai.vocab import ids_as_text, openai_encoding
from compat.wire import ParamPolicy, to_struct

__all__ = ["CompletionChoice", "CompletionChunkBuilder", "LegacyCompletionRequest", "completion_body",
           "completion_chunks", "completion_logprobs", "openai_prompts", "parse_completion_request", "prompts_as_text",
           "text_completion"]

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
MAX_PROMPTS = 2048
"""Most prompts one request may list, whatever the server's ``llm_limits.max_prompts``: the list is
refused by its length before a request is built for each prompt."""


class LegacyCompletionRequest(SamplingFields, kw_only=True):
    model: str
    prompt: str | list[Any]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    echo: bool | None = None
    best_of: Annotated[int, msgspec.Meta(ge=1, le=20)] | None = None
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    suffix: str | None = None


KNOWN_FIELDS = frozenset(LegacyCompletionRequest.__struct_fields__)


class ParsedCompletion(msgspec.Struct):
    requests: list[CompletionRequest]
    model: str
    stream: bool
    include_usage: bool


def _prompts(prompt: str | list[Any]) -> list[str | tuple[int, ...]]:
    """OpenAI's four prompt shapes: str, list[str], list[int], list[list[int]]."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("'prompt' must not be an empty list.", param="prompt")
    if not isinstance(prompt[0], int) and len(prompt) > MAX_PROMPTS:  # a list of token ids is one prompt
        raise array_too_long("prompt", MAX_PROMPTS, len(prompt))
    if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return [tuple(prompt)]
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
           for p in prompt):
        return [tuple(p) for p in prompt]
    raise InvalidRequest("'prompt' must be a string, a list of strings, a list of token ids or a list of"
                         " lists of token ids.", param="prompt")


def parse_completion_request(raw: dict[str, Any], policy: ParamPolicy) -> ParsedCompletion:
    policy.screen(raw, KNOWN_FIELDS)
    screen_sizes(raw)
    r = to_struct(raw, LegacyCompletionRequest)
    if r.stream_options is not None and not r.stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options")
    if r.best_of is not None and r.best_of > 1:
        policy.unsupported("best_of")
    if r.logprobs is not None and r.echo:
        policy.unsupported("logprobs", "log-probabilities of an echoed prompt are not computed")
    if r.suffix:
        policy.unsupported("suffix", "this model does not do fill-in-the-middle")
    max_tokens = r.max_tokens if r.max_tokens is not None else DEFAULT_MAX_TOKENS
    sampling = sampling_params(r, max_tokens, policy)
    if r.logprobs is not None:
        sampling = dataclasses.replace(sampling, logprobs=r.logprobs)
    echo = bool(r.echo)
    return ParsedCompletion(
        requests=[CompletionRequest(prompt=p, sampling=sampling, echo=echo) for p in _prompts(r.prompt)],
        model=r.model,
        stream=bool(r.stream),
        include_usage=bool(r.stream_options and r.stream_options.include_usage),
    )


def prompts_as_text(requests: list[CompletionRequest], *, model: str, encoding_name: str) -> list[CompletionRequest]:
    """The requests with their token-id prompts decoded in OpenAI's encoding ``encoding_name`` (see ``vocab``)."""
    texts = ids_as_text([r.prompt for r in requests], model=model, encoding_name=encoding_name, field="prompt")
    return [dataclasses.replace(r, prompt=text) for r, text in zip(requests, texts, strict=True)]


class CompletionLogprobs(msgspec.Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


def completion_logprobs(entries: tuple[TokenLogprob, ...] | list[TokenLogprob], offset: int) -> CompletionLogprobs:
    """The legacy shape: parallel lists, alternatives as {token: logprob}, offsets into the choice's text."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return CompletionLogprobs(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                              top_logprobs=[{t.token: t.logprob for t in e.top} for e in entries],
                              text_offset=offsets)


class CompletionChoice(msgspec.Struct):
    text: str
    index: int
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class TextCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: str = "text_completion"
    system_fingerprint: str = SYSTEM_FINGERPRINT
    usage: UsageBody | UnsetType | None = UNSET


def text_completion(model: str, choices: list[CompletionChoice], usage: Usage) -> TextCompletion:
    return TextCompletion(id=new_id("cmpl"), created=int(time.time()), model=model, choices=choices,
                          usage=usage_body(usage))


class CompletionChunkBuilder:
    """Chunks of one streamed legacy completion (``index`` tells the prompts apart)."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = new_id("cmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def chunk(self, index: int, text: str, finish: FinishReason | None = None,
              logprobs: CompletionLogprobs | None = None) -> TextCompletion:
        return TextCompletion(id=self.id, created=self.created, model=self.model,
                              choices=[CompletionChoice(text=text, index=index, finish_reason=finish,
                                                        logprobs=logprobs)],
                              usage=None if self.include_usage else UNSET)

    def usage(self, usage: Usage) -> TextCompletion:
        return TextCompletion(id=self.id, created=self.created, model=self.model, choices=[],
                              usage=usage_body(usage))


def openai_prompts(requested: str, canonical: str, requests: list[CompletionRequest]) -> list[CompletionRequest]:
    """Token-id prompts sent under an OpenAI model name are OpenAI's tokens: read them into text."""
    encoding = openai_encoding(requested, canonical, [r.prompt for r in requests])
    if encoding is None:
        return requests
    return prompts_as_text(requests, model=requested, encoding_name=encoding)


def completion_body(model: str, answer: CompletionAnswer) -> TextCompletion:
    """A finished answer as ``text_completion``: each choice's text after its echoed prompt, if any."""
    choices = []
    for index, (head, c) in enumerate(answer.choices):
        logprobs = completion_logprobs(c.logprobs, len(head)) if c.logprobs is not None else None
        choices.append(CompletionChoice(text=head + c.content, index=index, finish_reason=c.finish_reason,
                                        logprobs=logprobs))
    return text_completion(model, choices, answer.usage)


async def completion_chunks(events: AsyncIterator[CompletionEvent], model: str,
                            include_usage: bool) -> AsyncIterator[TextCompletion]:
    """A streamed answer as ``text_completion`` chunks."""
    builder = CompletionChunkBuilder(model, include_usage)
    async for e in events:
        if isinstance(e, TextPiece):
            logprobs = completion_logprobs(e.logprobs, e.offset) if e.logprobs is not None else None
            yield builder.chunk(e.index, e.text, e.finish_reason, logprobs)
        elif include_usage:
            yield builder.usage(e.usage)
