"""Prompt building for llama.cpp models, without a model: every check that fails a request before its
first token, against a byte-level fake vocabulary and a template written in Python."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from backends.errors import (
    BadSchema,
    ContextTooLong,
    ImagesNotSupported,
    NoChatTemplate,
    Part,
    TemplateRejected,
    UnknownToken,
)
from backends.llama.prompts import ChatTemplate, PromptBuilder
from backends.types import (
    IMAGE_MARKER,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    ImageInput,
    OutputFormat,
    SamplingParams,
    ToolSpec,
)

BOS = 256
N_VOCAB = 260
N_CTX = 64


@dataclass
class ByteModel:
    """One token per byte of UTF-8; the BOS token is 256, written ``<s>``."""

    n_vocab: int = N_VOCAB
    n_ctx_seq: int = N_CTX
    add_bos: bool = True
    bos_token: int = BOS
    bos_text: str = "<s>"
    grammars: list[str] = field(default_factory=list)
    builds: bool = True

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return ([BOS] if add_bos else []) + list(text.encode())

    def detokenize(self, tokens: tuple[int, ...]) -> str:
        return bytes(t for t in tokens if t < 256).decode(errors="replace")

    def accepts_grammar(self, grammar: str) -> bool:
        self.grammars.append(grammar)
        return self.builds


def _plain(turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    return "".join(f"<{t['role']}>{t['content']}\n" for t in turns) + "<assistant>"


PLAIN = ChatTemplate(_plain, knows_tools=False)


def _chat(*texts: str, sampling: SamplingParams | None = None, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=tuple(ChatMessage("user", t) for t in texts), sampling=sampling or SamplingParams(),
                       **kw)


def test_a_chat_is_rendered_and_tokenised_with_one_bos() -> None:
    prompt = PromptBuilder(ByteModel(), PLAIN).chat(_chat("hi"))
    assert prompt.text == "<user>hi\n<assistant>"
    assert prompt.tokens == (BOS, *b"<user>hi\n<assistant>")
    assert prompt.grammar is None and prompt.check is None and prompt.tools is None

    def with_bos(turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return "<s>" + _plain(turns, tools)

    own = PromptBuilder(ByteModel(), ChatTemplate(with_bos, knows_tools=False)).chat(_chat("hi"))
    assert own.tokens[0] != BOS  # the template wrote it: not added twice
    assert own.tokens == tuple(b"<s><user>hi\n<assistant>")


def test_a_prompt_longer_than_the_context_is_refused() -> None:
    builder = PromptBuilder(ByteModel(), PLAIN)
    fits = "x" * (N_CTX - len("<user>\n<assistant>") - 2)  # BOS + text = N_CTX - 1
    assert len(builder.chat(_chat(fits)).tokens) == N_CTX - 1
    with pytest.raises(ContextTooLong) as caught:
        builder.chat(_chat(fits + "x"))
    assert (caught.value.n_prompt, caught.value.limit, caught.value.max_new) == (N_CTX, N_CTX, None)
    with pytest.raises(ContextTooLong) as asked:
        builder.chat(_chat(fits, sampling=SamplingParams(max_tokens=2)))
    assert (asked.value.n_prompt, asked.value.limit, asked.value.max_new) == (N_CTX - 1, N_CTX, 2)
    assert builder.chat(_chat(fits, sampling=SamplingParams(max_tokens=1))).sampling.max_tokens == 1


def test_a_logit_bias_outside_the_vocabulary_is_refused() -> None:
    builder = PromptBuilder(ByteModel(), PLAIN)
    assert builder.chat(_chat("hi", sampling=SamplingParams(logit_bias=((N_VOCAB - 1, 5.0),)))).tokens
    with pytest.raises(UnknownToken) as caught:
        builder.chat(_chat("hi", sampling=SamplingParams(logit_bias=((3, 1.0), (N_VOCAB, -100.0)))))
    assert (caught.value.token, caught.value.vocab_size, caught.value.part) == (N_VOCAB, N_VOCAB, Part.LOGIT_BIAS)
    with pytest.raises(UnknownToken):
        builder.completion(CompletionRequest("hi", SamplingParams(logit_bias=((N_VOCAB + 7, 1.0),))))


@pytest.mark.parametrize("bad", [N_VOCAB, N_VOCAB + 100, -1])
def test_token_ids_outside_the_vocabulary_are_refused(bad: int) -> None:
    builder = PromptBuilder(ByteModel())  # completions need no chat template
    with pytest.raises(UnknownToken) as caught:
        builder.completion(CompletionRequest((104, 105, bad)))
    assert (caught.value.token, caught.value.vocab_size, caught.value.part) == (bad, N_VOCAB, Part.INPUT)


def test_token_id_prompts_are_read_as_given() -> None:
    builder = PromptBuilder(ByteModel())
    prompt = builder.completion(CompletionRequest((104, 105)))
    assert prompt.tokens == (104, 105) and prompt.text == "hi"  # no BOS added to ids
    assert builder.completion(CompletionRequest("hi")).tokens == (BOS, 104, 105)
    assert builder.completion(CompletionRequest(())).tokens == (BOS,)  # something to read logits from
    with pytest.raises(ContextTooLong):
        builder.completion(CompletionRequest(tuple([104] * N_CTX)))


def test_a_model_without_a_chat_template_refuses_chats_only() -> None:
    builder = PromptBuilder(ByteModel(), template=None)
    with pytest.raises(NoChatTemplate) as caught:
        builder.chat(_chat("hi"))
    assert caught.value.part is Part.MODEL
    assert builder.completion(CompletionRequest("hi")).text == "hi"


def test_a_template_that_raises_rejects_the_messages() -> None:
    def alternating(turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        roles = [t["role"] for t in turns]
        if any(a == b for a, b in itertools.pairwise(roles)):
            raise ValueError("Conversation roles must alternate user/assistant")
        return _plain(turns, tools)

    builder = PromptBuilder(ByteModel(), ChatTemplate(alternating, knows_tools=False))
    assert builder.chat(_chat("one")).text
    with pytest.raises(TemplateRejected) as caught:
        builder.chat(_chat("one", "two"))
    assert caught.value.part is Part.INPUT
    assert "roles must alternate" in caught.value.detail and "roles must alternate" in caught.value.message


def _image_chat(where: str = "messages[0].content[1]") -> ChatRequest:
    image = ImageInput(where=where, url="data:", data=b"\x89PNG", mime="image/png")
    return ChatRequest(messages=(ChatMessage("user", f"Look:\n{IMAGE_MARKER}", images=(image,)),))


def test_images_for_a_model_that_cannot_see_are_refused_naming_the_first() -> None:
    with pytest.raises(ImagesNotSupported) as caught:
        PromptBuilder(ByteModel(), PLAIN).chat(_image_chat("messages[2].content[0]"))
    assert caught.value.place == "messages[2].content[0]" and caught.value.part is Part.IMAGE


@dataclass
class FakeMedia:
    n_tokens: int
    freed: bool = False

    def free(self) -> None:
        self.freed = True


@dataclass
class FakeProjector:
    image_tokens: int
    made: list[FakeMedia] = field(default_factory=list)

    def tokenize(self, text: str, images: Sequence[ImageInput], *, add_special: bool = False) -> FakeMedia:
        media = FakeMedia(len(text.encode()) + int(add_special) + self.image_tokens * len(images))
        self.made.append(media)
        return media


def test_images_go_to_the_projector_and_count_against_the_context() -> None:
    small = FakeProjector(image_tokens=8)
    prompt = PromptBuilder(ByteModel(), PLAIN, small).chat(_image_chat())
    assert prompt.tokens == () and prompt.media is small.made[0] and IMAGE_MARKER in prompt.text
    assert prompt.n_tokens == small.made[0].n_tokens and not small.made[0].freed
    large = FakeProjector(image_tokens=N_CTX)
    with pytest.raises(ContextTooLong):
        PromptBuilder(ByteModel(), PLAIN, large).chat(_image_chat())
    assert large.made[0].freed  # refused: its chunks are released at once


WEATHER = ToolSpec("weather", "The weather in a city.",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def test_tools_without_a_tool_aware_template_go_into_a_system_prompt() -> None:
    seen: list[Any] = []

    def spy(turns: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        seen.append((turns, tools))
        return _plain(turns, tools)

    PromptBuilder(ByteModel(n_ctx_seq=4096), ChatTemplate(spy, knows_tools=False)).chat(_chat("hi", tools=(WEATHER,)))
    turns, tools = seen[-1]
    assert tools is None and turns[0]["role"] == "system" and '"weather"' in turns[0]["content"]
    PromptBuilder(ByteModel(n_ctx_seq=4096), ChatTemplate(spy, knows_tools=True)).chat(_chat("hi", tools=(WEATHER,)))
    turns, tools = seen[-1]
    assert [t["function"]["name"] for t in tools] == ["weather"] and turns[0]["role"] == "user"


def test_forced_tool_calls_and_json_replies_carry_their_grammar_and_check() -> None:
    model = ByteModel(n_ctx_seq=4096)  # room for the tools' system prompt
    builder = PromptBuilder(model, PLAIN)
    required = builder.chat(_chat("hi", tools=(WEATHER,), tool_choice="required"))
    assert required.grammar == model.grammars[-1] and required.check.part is Part.TOOLS
    assert required.tools is not None and required.tools.mode == "required"
    named = builder.chat(_chat("hi", tools=(WEATHER,), tool_choice="weather"))
    assert named.check.part is Part.SCHEMA and named.check.tool == 0
    reply = builder.chat(_chat("hi", output=OutputFormat("json", {"type": "object"})))
    assert reply.check.tool is None and reply.check.problem('{"a": 1}') is None


@pytest.mark.parametrize(("kw", "part", "tool"), [
    ({"output": OutputFormat("json", {"type": "object"})}, Part.SCHEMA, None),
    ({"tools": (WEATHER,), "tool_choice": "weather"}, Part.SCHEMA, 0),
    ({"tools": (WEATHER,), "tool_choice": "required"}, Part.TOOLS, None),
])
def test_a_grammar_the_engine_cannot_build_is_a_bad_schema(kw: dict[str, Any], part: Part, tool: int | None) -> None:
    with pytest.raises(BadSchema) as caught:
        PromptBuilder(ByteModel(builds=False), PLAIN).chat(_chat("hi", **kw))
    assert (caught.value.part, caught.value.tool) == (part, tool)
