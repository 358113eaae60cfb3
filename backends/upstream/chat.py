"""Chat and completions from an upstream server: the request is sent whole and streamed back.

The upstream templates, tokenises and samples; its answer is read into the same chunks a local engine
gives (text, tool calls it has already parsed, a finish per choice), so everything above — the
dialects, tool loops, the Responses and Realtime APIs — works as it does on a local model. Each choice's
finish is held back until the upstream's usage arrives, so the last chunk carries the real token counts.
With ``structured_outputs: checked`` an answer that must be JSON is held back whole and checked as a
local engine's grammar-held reply is, and asked for again when it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from pathlib import Path

from backends.errors import SchemaNotSatisfied, UpstreamFailed
from backends.grammars import OutputCheck, json_grammar, tool_arguments_grammar
from backends.types import CallPiece, ChatRequest, CompletionRequest, GenerationChunk, Prompt
from backends.upstream.client import UpstreamModel
from backends.upstream.dialect import StreamRead
from backends.upstream.options import Options

__all__ = ["Options", "UpstreamChat", "load"]

log = logging.getLogger(__name__)


class UpstreamChat(UpstreamModel):
    @property
    def context_length(self) -> int:
        return self.options.context_length

    @property
    def slots(self) -> int:
        return self.options.parallel

    async def prepare_chat(self, request: ChatRequest) -> Prompt:
        return Prompt(tokens=(), sampling=request.sampling, request=request)

    async def prepare_completion(self, request: CompletionRequest) -> Prompt:
        text = request.prompt if isinstance(request.prompt, str) else ""
        return Prompt(tokens=(), sampling=request.sampling, text=text, request=request)

    async def generate(self, prompt: Prompt) -> AsyncIterator[GenerationChunk]:
        request, model, sampling = prompt.request, self.options.model, prompt.sampling
        if isinstance(request, ChatRequest):
            path, body = self.wire.chat_path, self.wire.chat_body(model, request, sampling, True)
        elif isinstance(request, CompletionRequest):
            path, body = self.wire.completion_path, self.wire.completion_body(model, request, sampling, True)
        else:
            raise TypeError("an upstream model generates from the prompts it prepared")
        affinity = _affinity(request, self.options.prefix_chars) if self.options.routing == "prefix" else None
        checks = _Checks.of(request) if self.options.structured_outputs == "checked" else None
        if checks is None:
            async with contextlib.aclosing(self._answer(path, body, affinity, sampling.n)) as answer:
                async for chunk in answer:
                    yield chunk
            return
        attempts, problem = self.options.check_attempts, ""
        for attempt in range(1, attempts + 1):
            async with contextlib.aclosing(self._answer(path, body, affinity, sampling.n)) as answer:
                chunks = [chunk async for chunk in answer]
            failed = checks.failure(chunks)
            if failed is None:
                for chunk in chunks:
                    yield chunk
                return
            check, problem = failed
            log.info("the upstream's answer %d of %d failed its check (%s)", attempt, attempts, problem)
        raise SchemaNotSatisfied(attempts, problem, (), tool=check.tool, part=check.part)

    async def _answer(self, path: str, body: bytes, affinity: str | None,
                      n: int) -> AsyncGenerator[GenerationChunk, None]:
        tally = _Tally(n)
        async for data in self.upstream.stream(path, body=body, affinity=affinity):
            read = self.wire.read_stream_event(data)
            if read.error is not None:
                raise UpstreamFailed(f"the upstream failed mid-answer: {read.error.message}")
            for chunk in tally.read(read):
                yield chunk
        for chunk in tally.finish():
            yield chunk


@dataclasses.dataclass(frozen=True)
class _Checks:
    """What a chat answer must pass: its reply's schema, and each strict tool's arguments."""

    reply: OutputCheck | None
    tools: dict[str, OutputCheck]

    @classmethod
    def of(cls, request: ChatRequest | CompletionRequest) -> _Checks | None:
        if not isinstance(request, ChatRequest):
            return None
        output = request.output
        reply = json_grammar(output.json_schema).check if output.kind == "json" else None
        tools = {t.name: tool_arguments_grammar(t, i).check for i, t in enumerate(request.tools) if t.strict}
        return cls(reply, tools) if reply is not None or tools else None

    def failure(self, chunks: Iterable[GenerationChunk]) -> tuple[OutputCheck, str] | None:
        """The first check a finished choice fails, with why; None when all pass. A choice cut short
        (finish "length") is not checked, as a local engine's is not."""
        texts: dict[int, str] = {}
        calls: dict[tuple[int, int], list[str]] = {}
        finishes: dict[int, str] = {}
        for chunk in chunks:
            texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
            for piece in chunk.calls:
                call = calls.setdefault((chunk.index, piece.index), [piece.name or "", ""])
                call[1] += piece.arguments
            if chunk.finish_reason is not None:
                finishes[chunk.index] = chunk.finish_reason
        for index, reason in finishes.items():
            if reason == "length":
                continue
            made = [call for (choice, _), call in sorted(calls.items()) if choice == index]
            if not made and self.reply is not None and (problem := self.reply.problem(texts.get(index, ""))):
                return self.reply, problem
            for name, arguments in made:
                check = self.tools.get(name)
                if check is not None and (problem := check.problem(arguments)):
                    return check, f"arguments of {name}: {problem}"
        return None


class _Tally:
    """Counts each choice's pieces and holds its finish until the usage is known."""

    def __init__(self, n: int) -> None:
        self.generated = [0] * n
        self.finishes: dict[int, GenerationChunk] = {}
        self.usage: StreamRead | None = None
        self.calls: dict[tuple[int, int], int] = {}
        """(choice, the upstream's index of a call) → the call's place among its choice's calls."""

    def read(self, read: StreamRead) -> list[GenerationChunk]:
        if read.prompt_tokens is not None:
            self.usage = read
        out = []
        for chunk in read.chunks:
            if not 0 <= chunk.index < len(self.generated):
                continue  # a choice nobody asked for
            chunk = dataclasses.replace(chunk, calls=self._calls(chunk))
            if chunk.text or chunk.calls or chunk.logprobs:
                self.generated[chunk.index] += max(1, len(chunk.logprobs))
                out.append(dataclasses.replace(chunk, finish_reason=None,
                                               completion_tokens=self.generated[chunk.index]))
            if chunk.finish_reason is not None:
                self.finishes[chunk.index] = chunk
        return out

    def _calls(self, chunk: GenerationChunk) -> tuple[CallPiece, ...]:
        """The chunk's call pieces numbered 0, 1, … per choice in the order the calls opened; pieces of a
        call that never opened (no name) are dropped."""
        out = []
        for piece in chunk.calls:
            key = (chunk.index, piece.index)
            opens = key not in self.calls
            if opens:
                if piece.name is None:
                    continue
                self.calls[key] = sum(1 for c, _ in self.calls if c == chunk.index)
            out.append(dataclasses.replace(piece, index=self.calls[key], name=piece.name if opens else None))
        return tuple(out)

    def finish(self) -> list[GenerationChunk]:
        usage = self.usage
        if usage is not None and usage.completion_tokens is not None:
            # The upstream's own count: each choice keeps its share, the last takes what is left.
            told = usage.completion_tokens - sum(self.generated[:-1])
            self.generated[-1] = max(told, 0) if len(self.generated) > 1 else usage.completion_tokens
        prompt_tokens = usage.prompt_tokens or 0 if usage is not None else 0
        cached = usage.cached_tokens if usage is not None else 0
        out = []
        for index, generated in enumerate(self.generated):
            held = self.finishes.get(index)
            reason = held.finish_reason if held is not None else "stop"
            out.append(GenerationChunk("", reason, prompt_tokens=prompt_tokens, completion_tokens=generated,
                                       index=index, cached_tokens=cached))
        return out


def _affinity(request: ChatRequest | CompletionRequest, chars: int) -> str:
    """The prompt's start, which picks the replica under prefix routing."""
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        return (prompt if isinstance(prompt, str) else " ".join(map(str, prompt)))[:chars]
    text = ""
    for message in request.messages:
        text += f"\x1e{message.role}\x1f{message.content}"
        if len(text) >= chars:
            break
    return text[:chars]


def load(files: Path | None, options: Options) -> UpstreamChat:
    return UpstreamChat(options)
