"""Chat and completions from an upstream server: the request is sent whole and streamed back.

The upstream templates, tokenises and samples; its answer is read into the same chunks a local engine
gives (text, tool calls it has already parsed, a finish per choice), so everything above — the
dialects, tool loops, the Responses and Realtime APIs — works as it does on a local model. Each choice's
finish is held back until the upstream's usage arrives, so the last chunk carries the real token counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from backends.errors import UpstreamFailed
from backends.types import CallPiece, ChatRequest, CompletionRequest, GenerationChunk, Prompt
from backends.upstream.client import UpstreamModel
from backends.upstream.dialect import StreamRead
from backends.upstream.options import Options

__all__ = ["Options", "UpstreamChat", "load"]


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
        tally = _Tally(sampling.n)
        async for data in self.upstream.stream(path, body=body, affinity=affinity):
            read = self.wire.read_stream_event(data)
            if read.error is not None:
                raise UpstreamFailed(f"the upstream failed mid-answer: {read.error.message}")
            for chunk in tally.read(read):
                yield chunk
        for chunk in tally.finish():
            yield chunk


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
