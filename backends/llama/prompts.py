"""Chat and completion requests into prompts: templates, tools, grammars, and the checks before a start.

Every way a request can fail before its first token fails here, so it fails before a stream starts:
images for a model that cannot see, a schema no grammar can follow, a model without a chat template,
a template that raises, token ids outside the vocabulary, a prompt too long for the context. What this
needs of the model is small (:class:`TextModel`, :class:`ChatTemplate`, :class:`ImageTokenizer`), so it
is tested with a fake one.

A chat is prepared in two halves: :meth:`PromptBuilder.draft_chat` is pure Python (the template, the
size check) and may run on any thread; :meth:`PromptBuilder.finish_chat` makes the model's calls
(grammar, tokens) and runs on the model's thread. The size check refuses, without tokenising, a text
that cannot fit: no token covers more than ``max_token_bytes`` bytes of text, so a text of more than
``n_ctx × max_token_bytes`` bytes holds more than ``n_ctx`` tokens. What reaches the tokenizer on the
model's thread is therefore bounded, whatever a client sends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from backends.errors import (
    BadSchema,
    ContextTooLong,
    ImagesNotSupported,
    NoChatTemplate,
    Part,
    TemplateRejected,
    UnknownToken,
)
from backends.grammars import HeldOutput, json_grammar, tool_arguments_grammar, tool_call_grammar
from backends.tool_calls import history_calls_text, tools_system_prompt
from backends.types import (
    IMAGE_MARKER,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    ImageInput,
    Prompt,
    SamplingParams,
    ToolPlan,
)

__all__ = ["ChatDraft", "ChatTemplate", "ImageTokenizer", "MediaTokens", "PromptBuilder", "TextModel"]

log = logging.getLogger("syn4pse.llama_cpp")

_ASCII_SPACES = " \t\n\v\f\r"
"""What the tokenizer strips beside a special token that strips (C's ``isspace``)."""

Turn = dict[str, Any]
"""One message in the shape chat templates read (Hugging Face's)."""


class TextModel(Protocol):
    """What building a prompt asks of the model (the engine; a fake in tests)."""

    @property
    def n_vocab(self) -> int: ...

    @property
    def n_ctx_seq(self) -> int:
        """Tokens one sequence holds: prompt and completion together."""
        ...

    @property
    def add_bos(self) -> bool:
        """Whether a prompt starts with the BOS token."""
        ...

    @property
    def bos_token(self) -> int: ...

    @property
    def bos_text(self) -> str: ...

    def tokenize(self, text: str, add_bos: bool) -> list[int]: ...

    def detokenize(self, tokens: tuple[int, ...]) -> str: ...

    def accepts_grammar(self, grammar: str) -> bool:
        """Whether the engine can build ``grammar`` (GBNF)."""
        ...


class MediaTokens(Protocol):
    """A prompt tokenised with its images (:class:`backends.llama_mtmd.MediaPrompt`)."""

    @property
    def n_tokens(self) -> int: ...

    def free(self) -> None: ...


class ImageTokenizer(Protocol):
    """What reads images into a prompt (:class:`backends.llama_mtmd.Projector`)."""

    def tokenize(self, text: str, images: Sequence[ImageInput], *, add_special: bool = False) -> MediaTokens: ...


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A chat template: messages (and tools, for a template that knows them) into the prompt's text."""

    render: Callable[[list[Turn], list[Turn] | None], str]
    """Raises when the template refuses the messages (its own ``raise_exception``, a Jinja error)."""
    knows_tools: bool
    """Whether the template writes tools and tool calls itself; else they go in as text."""

    @classmethod
    def jinja(cls, source: str, *, bos_text: str, eos_text: str) -> ChatTemplate:
        """A template from its Jinja source, as GGUF files and ``options.chat_template`` give it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(template=source, eos_token=eos_text, bos_token=bos_text)

        def render(messages: list[Turn], tools: list[Turn] | None) -> str:
            return formatter(messages=messages, tools=tools).prompt  # type: ignore[arg-type]

        return cls(render, "tools" in source)


def _turn(m: ChatMessage, native_tools: bool, call_names: dict[str, str]) -> Turn:
    """One message as a template reads it; tool calls and results as the template or the tool prompt
    expects them."""
    out: Turn = {"role": m.role, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        if native_tools:
            calls = []
            for call in m.tool_calls:
                try:
                    arguments: Any = json.loads(call.arguments)
                except ValueError:
                    arguments = call.arguments
                calls.append({"id": call.id, "type": "function",
                              "function": {"name": call.name, "arguments": arguments}})
                call_names[call.id] = call.name
            out["tool_calls"] = calls
        else:
            text = history_calls_text(m.tool_calls)
            out["content"] = f"{m.content}\n{text}" if m.content else text
    if m.role == "tool":
        if native_tools:
            out["tool_call_id"] = m.tool_call_id
            if m.tool_call_id in call_names:
                out["name"] = call_names[m.tool_call_id]
        else:
            out["content"] = f"<tool_response>\n{m.content}\n</tool_response>"
    return out


@dataclass(frozen=True, slots=True)
class ChatDraft:
    """A chat rendered and checked, before any call into the model."""

    request: ChatRequest
    text: str
    held: HeldOutput | None
    plan: ToolPlan | None
    add_bos: bool


def output_rules(request: ChatRequest) -> tuple[HeldOutput | None, ToolPlan | None]:
    """The grammar the reply must follow (with its check), and how to read tool calls from it."""
    if request.tools and request.tool_choice != "none":
        names = tuple(t.name for t in request.tools)
        if request.tool_choice == "auto":
            grammar = json_grammar(request.output.json_schema) if request.output.kind == "json" else None
            return grammar, ToolPlan("auto", names, request.parallel_tool_calls)
        if request.tool_choice == "required":
            return tool_call_grammar(request.tools), ToolPlan("required", names, request.parallel_tool_calls)
        index, tool = next((i, t) for i, t in enumerate(request.tools) if t.name == request.tool_choice)
        return tool_arguments_grammar(tool, index), ToolPlan("named", (request.tool_choice,))
    if request.output.kind == "json":
        return json_grammar(request.output.json_schema), None
    return None, None


class PromptBuilder:
    """Prepares requests for one model: checked, rendered, tokenised, with their grammar and check."""

    def __init__(self, model: TextModel, template: ChatTemplate | None = None,
                 images: ImageTokenizer | None = None, max_token_bytes: int | None = None,
                 strips_spaces: bool = False) -> None:
        self.model = model
        self.template = template
        self.images = images
        """None: the model cannot see."""
        self.max_token_bytes = max_token_bytes
        """The most bytes of text one token of the vocabulary covers; None: unknown (no size check)."""
        self.strips_spaces = strips_spaces
        """Some special token swallows the whitespace beside it: the size check counts no whitespace."""

    def _most_bytes(self) -> int | None:
        """The most bytes of text the context could hold; None: not known (no size check)."""
        return None if self.max_token_bytes is None else self.model.n_ctx_seq * self.max_token_bytes

    def _refuse_past(self, size: int, most: int) -> None:
        """A text of ``size`` bytes (or characters, each at least a byte) past ``most`` cannot fit."""
        if size > most:
            assert self.max_token_bytes is not None
            raise ContextTooLong(-(-size // self.max_token_bytes), self.model.n_ctx_seq, at_least=True)

    def check_size(self, text: str) -> None:
        """Refuse a text too large for the context without tokenising it (see the module's docstring).
        Costs at most one encoding of a text the context could hold, unless whitespace is not counted."""
        most = self._most_bytes()
        if most is None:
            return
        chars = len(text)
        if chars * 4 <= most:  # a character is at most 4 bytes of UTF-8
            return
        if self.strips_spaces:
            size = len(text.encode()) - sum(text.count(c) for c in _ASCII_SPACES)
        else:
            size = chars if chars > most else len(text.encode())
        self._refuse_past(size, most)

    def check_contents(self, messages: Sequence[ChatMessage]) -> None:
        """Refuse, before the template renders them, messages whose contents alone cannot fit: the
        rendered text holds each content (a template may trim its ends, not its inside), and rendering
        megabytes costs far more than counting their characters."""
        most = self._most_bytes()
        if most is None or self.strips_spaces:
            return
        markers = len(IMAGE_MARKER) * sum(len(m.images) for m in messages)
        if sum(len(m.content) for m in messages) - markers <= most:  # the cheap count first: no copies
            return
        self._refuse_past(sum(len(m.content.strip()) for m in messages) - markers, most)

    def check_fits(self, n_prompt: int, sampling: SamplingParams) -> None:
        """Every biased token is in the vocabulary, and prompt + completion fit one sequence."""
        n_vocab = self.model.n_vocab
        bad = [t for t, _ in sampling.logit_bias if t >= n_vocab]
        if bad:
            raise UnknownToken(bad[0], n_vocab, part=Part.LOGIT_BIAS)
        limit = self.model.n_ctx_seq
        if n_prompt >= limit:
            raise ContextTooLong(n_prompt, limit)
        if sampling.max_tokens is not None and n_prompt + sampling.max_tokens > limit:
            raise ContextTooLong(n_prompt, limit, sampling.max_tokens)

    def check_grammar(self, held: HeldOutput) -> None:
        """Build the grammar once, so a bad one fails the request before any stream starts."""
        if not self.model.accepts_grammar(held.grammar):
            raise BadSchema("the output format could not be turned into a grammar.", tool=held.check.tool,
                            part=held.check.part)

    def render(self, request: ChatRequest) -> str:
        """The chat's text, by the model's template; tools through the template when it knows them,
        else as a system prompt."""
        if self.template is None:
            raise NoChatTemplate()
        knows_tools = self.template.knows_tools
        use_tools = bool(request.tools) and request.tool_choice != "none"
        call_names: dict[str, str] = {}
        turns = [_turn(m, knows_tools, call_names) for m in request.messages]
        tools = None
        if use_tools and knows_tools:
            tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                       "parameters": t.parameters}} for t in request.tools]
        elif use_tools:
            guide = tools_system_prompt(request.tools, request.tool_choice, request.parallel_tool_calls)
            if turns[0]["role"] == "system":
                turns[0] = {**turns[0], "content": f"{turns[0]['content']}\n\n{guide}"}
            else:
                turns.insert(0, {"role": "system", "content": guide})
        try:
            return self.template.render(turns, tools)
        except Exception as e:  # the template's own raise_exception, or a Jinja error
            raise TemplateRejected(str(e)) from None

    def chat(self, request: ChatRequest) -> Prompt:
        return self.finish_chat(self.draft_chat(request))

    def draft_chat(self, request: ChatRequest) -> ChatDraft:
        """The half of :meth:`chat` that makes no call into the model: any thread may run it."""
        images = [image for m in request.messages for image in m.images]
        if images and self.images is None:
            raise ImagesNotSupported(images[0].where)
        held, plan = output_rules(request)
        self.check_contents(request.messages)
        text = self.render(request)
        model = self.model
        add_bos = model.add_bos and not (model.bos_text and text.startswith(model.bos_text))
        if not images:
            text = text.replace(IMAGE_MARKER, "")
        self.check_size(text)
        return ChatDraft(request, text, held, plan, add_bos)

    def finish_chat(self, draft: ChatDraft) -> Prompt:
        """The half of :meth:`chat` that calls the model (its grammar, its tokens): on the model's thread."""
        request, text, held, plan, add_bos = draft.request, draft.text, draft.held, draft.plan, draft.add_bos
        if held is not None:
            self.check_grammar(held)
        grammar = held.grammar if held is not None else None
        check = held.check if held is not None else None
        images = [image for m in request.messages for image in m.images]
        model = self.model
        stop = tuple(request.sampling.stop)
        if images:
            assert self.images is not None
            media = self.images.tokenize(text, images, add_special=add_bos)
            try:
                self.check_fits(media.n_tokens, request.sampling)
            except BaseException:
                media.free()
                raise
            if log.isEnabledFor(logging.DEBUG):
                log.debug("prompt %r", text)
            return Prompt(tokens=(), sampling=request.sampling, text=text, stop=stop, grammar=grammar, check=check,
                          tools=plan, media=media, media_tokens=media.n_tokens)
        tokens = model.tokenize(text, add_bos)
        self.check_fits(len(tokens), request.sampling)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("prompt %r", text)
        return Prompt(tokens=tuple(tokens), sampling=request.sampling, text=text, stop=stop, grammar=grammar,
                      check=check, tools=plan)

    def completion(self, request: CompletionRequest) -> Prompt:
        model = self.model
        if isinstance(request.prompt, str):
            text = request.prompt
            self.check_size(text)
            tokens = model.tokenize(text, model.add_bos)
        else:
            self.check_fits(len(request.prompt), request.sampling)  # before reading each id of a huge list
            bad = [t for t in request.prompt if not 0 <= t < model.n_vocab]
            if bad:
                raise UnknownToken(bad[0], model.n_vocab)
            tokens = list(request.prompt)
            text = model.detokenize(request.prompt)
        if not tokens:
            tokens = [model.bos_token]
        self.check_fits(len(tokens), request.sampling)
        return Prompt(tokens=tuple(tokens), sampling=request.sampling, text=text, stop=tuple(request.sampling.stop))
