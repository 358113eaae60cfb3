"""LLM backend on llama.cpp, driven through llama-cpp-python's low-level API.

One scheduler thread owns the model and the context: every llama call happens on it (llama.cpp is not
thread-safe, and a build's thread pools are fastest when called from one thread). Requests reach the
thread through a queue; tokens come back to the event loop through per-request asyncio queues, all of
a step's at once (one wake-up of the loop per step, or per ``stream_interval_ms``).

Each step of the scheduler decodes, in one ``llama_decode``, one token for every running sequence plus
a chunk of any prompt still being read, so ``parallel`` > 1 serves several streams at once. A sequence
whose reader has gone away is dropped at the next step and its KV cells freed.

Each slot remembers which tokens its KV cells hold. A new sequence takes the free slot whose cache
shares the longest prefix with its prompt and reads only the rest; when another slot (running or not)
shares a much longer prefix, its cells are copied over first. So a long system prompt is read once,
and the ``n`` choices of one request read their prompt once.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import dataclasses
import json
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import msgspec
import numpy as np

from backends.errors import ContextTooLong, EngineFailure, LoadFailed, Part, UnknownToken
from backends.grammars import HeldOutput, OutputCheck, json_grammar, tool_arguments_grammar, tool_call_grammar
from backends.llama_mtmd import Projector
from backends.threads import available_cores
from backends.tool_calls import history_calls_text, tools_system_prompt
from backends.types import (
    IMAGE_MARKER,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    FinishReason,
    GenerationChunk,
    Prompt,
    SamplingParams,
    TokenLogprob,
    ToolPlan,
)
from compat.errors import InvalidRequest  # until the domain errors reach here

__all__ = ["LlamaCppBackend", "Options", "load"]

log = logging.getLogger("syn4pse.llama_cpp")
T = TypeVar("T")

COPY_MIN_TOKENS = 64
"""Copy another slot's cache only when it saves reading at least this many prompt tokens."""
CHECK_ATTEMPTS = 4
"""Samples of one choice, at most, when its schema has keywords only the check after generation holds."""
RETRY_TEMPERATURE = 1.0
"""The temperature a greedy (temperature 0) choice is sampled again at, after failing its check."""


class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    n_ctx: Annotated[int, msgspec.Meta(ge=64)] = 4096
    """Context length of each sequence (prompt + completion)."""
    parallel: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    """Sequences decoded together (each with its own ``n_ctx``); further requests wait in the model's
    queue. Also the model's ``concurrency`` unless that is set."""
    n_batch: Annotated[int, msgspec.Meta(ge=16)] = 512
    """Most tokens in one decode step; long prompts are read in chunks of this size."""
    n_threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n_threads_batch: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n_gpu_layers: int = 0
    """Layers to offload to a GPU (-1: all) on a GPU build."""
    flash_attn: bool | None = None
    """None lets llama.cpp decide."""
    chat_template: str | None = None
    """A Jinja chat template overriding the one in the GGUF file."""
    mmproj: str | None = None
    """The vision projector (GGUF) that lets the model see images; a path relative to the model's files."""
    cache_prompt: bool = True
    """Keep each slot's KV cells after a request, to skip the shared prefix of the next prompt. Results
    can differ in the last bits from a run without the cache (llama.cpp's sums depend on batch shape)."""
    stream_interval_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 20
    """Hold a stream's tokens up to this long and send them as one chunk (0: every token at once). Each
    chunk wakes the server and the client, which share the cores with the engine on a small machine
    (at 150 tokens/s, per-token chunks cost a single stream 5-10 % of its speed on two cores); a stream's
    first text and its end are never held, and 20 ms is below what a reader or a speech pipeline notices."""


def load(files: Path, options: Options) -> LlamaCppBackend:
    return LlamaCppBackend(files, options)


def _projector_path(files: Path, mmproj: str) -> Path:
    path = Path(mmproj).expanduser()
    if not path.is_absolute():
        path = (files if files.is_dir() else files.parent) / path
    if not path.is_file():
        raise LoadFailed(f"the vision projector file {mmproj} was not found")
    return path


def _find_gguf(files: Path) -> Path:
    if files.is_file():
        return files
    candidates = sorted(p for p in files.rglob("*.gguf") if "mmproj" not in p.name.lower())
    if not candidates:
        raise LoadFailed(f"no .gguf file found in the model's files ({files.name})")
    return candidates[0]


# --------------------------------------------------------------------------------------------------
# Text assembly: bytes → UTF-8 → stop strings


class _TextAssembler:
    """Turns token pieces into text, holding back what might be the start of a stop string."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add a piece; returns (text safe to emit, whether a stop string was reached)."""
        text = self._held + self._decoder.decode(piece)
        first = -1
        for s in self._stop:
            at = text.find(s)
            if at != -1 and (first == -1 or at < first):
                first = at
        if first != -1:
            self._held = ""
            return text[:first], True
        keep = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text


# --------------------------------------------------------------------------------------------------
# Sequences and the scheduler


_END = object()


@dataclass(frozen=True, slots=True)
class _Retry:
    """Choice ``index`` failed its check and is being sampled again: drop what it sent so far."""

    index: int


class _Outbox:
    """What the steps produced, handed to each event loop in one wake-up rather than one per token.

    Waking a loop costs a write to its self-pipe and a pass of the loop; with eight streams a step would
    wake it eight times, each time competing for the cores the next decode needs. With an interval,
    text is held up to that long (never a stream's first text, its end or an error) and a choice's held
    chunks go out merged into one.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        self._urgent = False
        self._last = 0.0

    def post(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue[Any], item: Any, urgent: bool) -> None:
        self._pending.setdefault(loop, []).append((out, item))
        self._urgent = self._urgent or urgent

    def flush(self) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        if not self._urgent and now - self._last < self._interval:
            return
        self._last, self._urgent = now, False
        pending, self._pending = self._pending, {}
        for loop, items in pending.items():
            with contextlib.suppress(RuntimeError):  # a loop closed under us has no reader left
                loop.call_soon_threadsafe(_deliver, _merged(items) if self._interval else items)


def _merged(items: list[tuple[asyncio.Queue[Any], Any]]) -> list[tuple[asyncio.Queue[Any], Any]]:
    """Join each choice's successive chunks into one, keeping the order of everything else."""
    out: list[tuple[asyncio.Queue[Any], Any]] = []
    open_at: dict[tuple[int, int], int] = {}  # (reader, choice) -> where its chunk being extended sits
    for queue_, item in items:
        if not isinstance(item, GenerationChunk):
            for key in [k for k in open_at if k[0] == id(queue_)]:
                del open_at[key]
            out.append((queue_, item))
            continue
        key = (id(queue_), item.index)
        at = open_at.get(key)
        if at is None:
            open_at[key] = len(out)
            out.append((queue_, item))
            continue
        held: GenerationChunk = out[at][1]
        out[at] = (queue_, dataclasses.replace(item, text=held.text + item.text,
                                               logprobs=held.logprobs + item.logprobs))
    return out


def _deliver(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for out, item in items:
        out.put_nowait(item)


@dataclass(eq=False)
class _Group:
    """The ``n`` choices of one request: one reader, one cancel switch."""

    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    remaining: int
    outbox: _Outbox
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Any, urgent: bool = True) -> None:
        """Queue ``item`` for the reader; it is delivered when the engine flushes its outbox."""
        self.outbox.post(self.loop, self.out, item, urgent)


@dataclass(eq=False)
class _Sequence:
    prompt: Prompt
    group: _Group
    index: int = 0
    seed: int | None = None
    leader: _Sequence | None = None
    """For choices 1..n-1 of a long prompt: start once choice 0 has read it, and copy its cache."""
    slot: int = -1
    n_past: int = 0
    n_read: int = 0
    """Prompt tokens already sent to the engine."""
    generated: int = 0
    last_token: int = -1
    sampler: Any = None
    text: _TextAssembler | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    done: bool = False
    reused: int = 0
    """Prompt tokens found in the slot's cache."""
    sent: bool = False
    """Whether any text has gone to the reader yet."""
    produced: list[str] = field(default_factory=list)
    """The text sent so far, for the check of a grammar-held choice."""
    attempt: int = 0

    @property
    def prefilled(self) -> bool:
        return self.n_read >= len(self.prompt.tokens) and self.slot >= 0


def _common_prefix(a: list[int], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Engine:
    """The model, its context and the scheduler loop. Lives on one thread."""

    def __init__(self, path: Path, options: Options, mmproj: Path | None) -> None:
        import llama_cpp as lc

        self.lc = lc
        self.options = options
        lc.llama_backend_init()
        # llama-cpp-python routes llama.cpp's log through this logger: only errors, unless debugging.
        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR)

        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers if options.n_gpu_layers >= 0 else 999
        model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise LoadFailed(f"llama.cpp could not load the model file {path.name}")
        self.model = model
        self.vocab = lc.llama_model_get_vocab(model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)

        threads = options.n_threads or available_cores()
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = options.n_ctx * options.parallel
        cparams.n_batch = options.n_batch
        cparams.n_ubatch = min(options.n_batch, 512)
        cparams.n_seq_max = options.parallel
        cparams.n_threads = threads
        cparams.n_threads_batch = options.n_threads_batch or threads
        cparams.kv_unified = False
        cparams.no_perf = True
        cparams.flash_attn_type = {None: lc.LLAMA_FLASH_ATTN_TYPE_AUTO, True: lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                   False: lc.LLAMA_FLASH_ATTN_TYPE_DISABLED}[options.flash_attn]
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            lc.llama_model_free(model)
            raise LoadFailed("llama.cpp could not create a context (out of memory?)")
        self.ctx = ctx
        self.memory = lc.llama_get_memory(ctx)
        self.n_ctx_seq: int = int(lc.llama_n_ctx(ctx)) // options.parallel
        self.batch = lc.llama_batch_init(options.n_batch, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)

        self.bos_text = self._special_text(lc.llama_vocab_bos(self.vocab))
        self.eos_text = self._special_text(lc.llama_vocab_eos(self.vocab))
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        template = options.chat_template or self._builtin_template()
        self.formatter = None
        self.template_has_tools = bool(template and "tools" in template)
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self.formatter = Jinja2ChatFormatter(template=template, eos_token=self.eos_text,
                                                 bos_token=self.bos_text)

        self.projector: Projector | None = None
        if mmproj is not None:
            try:
                self.projector = Projector(model, mmproj, n_threads=threads, use_gpu=options.n_gpu_layers != 0)
            except BaseException:
                self._free()
                raise

        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.waiting: list[_Sequence] = []
        self.running: list[_Sequence] = []
        self.free_slots = list(range(options.parallel))
        self.cached: list[list[int]] = [[] for _ in range(options.parallel)]
        """The tokens whose KV cells each slot holds, in position order."""
        self.stopping = False
        self.outbox = _Outbox(options.stream_interval_ms / 1000)

    # -- helpers (engine thread only) ---------------------------------------------------------------

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode(errors="replace")

    def _builtin_template(self) -> str | None:
        raw = self.lc.llama_model_chat_template(self.model, None)
        return raw.decode() if raw else None

    def _piece(self, token: int, special: bool = False) -> bytes:
        n = self.lc.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        tokens = (self.lc.llama_token * size)()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), tokens, size, add_bos, True)
        if n < 0:
            size = -n
            tokens = (self.lc.llama_token * size)()
            n = self.lc.llama_tokenize(self.vocab, data, len(data), tokens, size, add_bos, True)
        return list(tokens[:n])

    def detokenize(self, tokens: tuple[int, ...]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode(errors="replace")

    # -- request preparation (engine thread) --------------------------------------------------------

    def _check_fits(self, n_prompt: int, sampling: SamplingParams) -> None:
        bad = [t for t, _ in sampling.logit_bias if t >= self.n_vocab]
        if bad:
            raise UnknownToken(bad[0], self.n_vocab, part=Part.LOGIT_BIAS)
        limit = self.n_ctx_seq
        if n_prompt >= limit:
            raise ContextTooLong(n_prompt, limit)
        if sampling.max_tokens is not None and n_prompt + sampling.max_tokens > limit:
            raise ContextTooLong(n_prompt, limit, sampling.max_tokens)

    def _message(self, m: ChatMessage, native_tools: bool, call_names: dict[str, str]) -> dict[str, Any]:
        """One message in the shape chat templates read (Hugging Face's)."""
        out: dict[str, Any] = {"role": m.role, "content": m.content}
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

    def _render(self, request: ChatRequest) -> str:
        if self.formatter is None:
            raise InvalidRequest("This model has no chat template; use /v1/completions or set"
                                 " options.chat_template for it.", param="model")
        use_tools = bool(request.tools) and request.tool_choice != "none"
        native = use_tools and self.template_has_tools
        call_names: dict[str, str] = {}
        messages = [self._message(m, self.template_has_tools, call_names) for m in request.messages]
        tools = None
        if native:
            tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                       "parameters": t.parameters}} for t in request.tools]
        elif use_tools:
            guide = tools_system_prompt(request.tools, request.tool_choice, request.parallel_tool_calls)
            if messages[0]["role"] == "system":
                messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{guide}"}
            else:
                messages.insert(0, {"role": "system", "content": guide})
        try:
            rendered = self.formatter(messages=cast(Any, messages), tools=cast(Any, tools))
        except Exception as e:  # the template's own raise_exception, or a Jinja error
            raise InvalidRequest(f"The model's chat template rejected the messages: {e}",
                                 param="messages") from None
        return rendered.prompt

    def _output_rules(self, request: ChatRequest) -> tuple[HeldOutput | None, ToolPlan | None]:
        """The grammar the reply must follow (with its check), and how to read tool calls from it."""
        if request.tools and request.tool_choice != "none":
            names = tuple(t.name for t in request.tools)
            if request.tool_choice == "auto":
                grammar = json_grammar(request.output.json_schema) if request.output.kind == "json" else None
                return grammar, ToolPlan("auto", names, request.parallel_tool_calls)
            if request.tool_choice == "required":
                return tool_call_grammar(request.tools), ToolPlan("required", names, request.parallel_tool_calls)
            index = names.index(request.tool_choice)
            return (tool_arguments_grammar(request.tools[index], f"tools[{index}].function.parameters"),
                    ToolPlan("named", (request.tool_choice,)))
        if request.output.kind == "json":
            return json_grammar(request.output.json_schema), None
        return None, None

    def prepare_chat(self, request: ChatRequest) -> Prompt:
        images = [image for m in request.messages for image in m.images]
        if images and self.projector is None:
            raise InvalidRequest(f"This model does not accept images ('{images[0].where}').",
                                 param=images[0].where, code="image_not_supported")
        held, plan = self._output_rules(request)
        grammar = held.grammar if held is not None else None
        check = held.check if held is not None else None
        if held is not None:
            self.check_grammar(held.grammar, held.check.param)
        text = self._render(request)
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        if images:
            assert self.projector is not None
            media = self.projector.tokenize(text, images, add_special=add_bos)
            try:
                self._check_fits(media.n_tokens, request.sampling)
            except BaseException:
                media.free()
                raise
            if log.isEnabledFor(logging.DEBUG):
                log.debug("prompt %r", text)
            return Prompt(tokens=(), sampling=request.sampling, text=text, stop=tuple(request.sampling.stop),
                          grammar=grammar, check=check, tools=plan, media=media, media_tokens=media.n_tokens)
        text = text.replace(IMAGE_MARKER, "")
        tokens = self.tokenize(text, add_bos)
        self._check_fits(len(tokens), request.sampling)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("prompt %r", text)
        return Prompt(tokens=tuple(tokens), sampling=request.sampling, text=text,
                      stop=tuple(request.sampling.stop), grammar=grammar, check=check, tools=plan)

    def prepare_completion(self, request: CompletionRequest) -> Prompt:
        if isinstance(request.prompt, str):
            text = request.prompt
            tokens = self.tokenize(text, self.add_bos)
        else:
            bad = [t for t in request.prompt if not 0 <= t < self.n_vocab]
            if bad:
                raise InvalidRequest(f"Token id {bad[0]} is outside this model's vocabulary"
                                     f" (0..{self.n_vocab - 1}).", param="prompt")
            tokens = list(request.prompt)
            text = self.detokenize(request.prompt)
        if not tokens:
            tokens = [self.lc.llama_vocab_bos(self.vocab)]
        self._check_fits(len(tokens), request.sampling)
        return Prompt(tokens=tuple(tokens), sampling=request.sampling, text=text,
                      stop=tuple(request.sampling.stop))

    # -- sampling -----------------------------------------------------------------------------------

    def _make_sampler(self, s: SamplingParams, grammar: str | None, seed: int | None) -> Any:
        lc = self.lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if s.logit_bias:
            biases = (lc.llama_logit_bias * len(s.logit_bias))(
                *(lc.llama_logit_bias(token=t, bias=b) for t, b in s.logit_bias))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(
                self.n_vocab, len(s.logit_bias), biases))
        if s.presence_penalty or s.frequency_penalty:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
                self.n_vocab, self.n_ctx_seq, 1.0, s.frequency_penalty, s.presence_penalty))
        if grammar is not None:
            sampler = lc.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not sampler:
                lc.llama_sampler_free(chain)
                raise EngineFailure("llama.cpp could not build the output grammar.")
            lc.llama_sampler_chain_add(chain, sampler)
        if s.temperature <= 0.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if s.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temperature))
        seed = seed if seed is not None else random.getrandbits(32)
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def check_grammar(self, grammar: str, param: str = "response_format") -> None:
        """Build the grammar once, so a bad one fails the request before any stream starts."""
        sampler = self.lc.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidRequest("The requested output format could not be turned into a grammar.",
                                 param=param)
        self.lc.llama_sampler_free(sampler)

    def _logprob(self, index: int, token: int, top: int) -> TokenLogprob:
        """The chosen token's log-probability under the model, and the ``top`` likeliest tokens."""
        pointer = self.lc.llama_get_logits_ith(self.ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))

        def entry(t: int) -> TokenLogprob:
            raw = self._piece(t)
            return TokenLogprob(token=raw.decode(errors="replace"), bytes=raw, logprob=float(logprobs[t]))

        alternatives: tuple[TokenLogprob, ...] = ()
        if top > 0:
            best = np.argpartition(-logprobs, top)[:top]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            alternatives = tuple(entry(int(t)) for t in best)
        chosen = entry(token)
        return TokenLogprob(token=chosen.token, bytes=chosen.bytes, logprob=chosen.logprob, top=alternatives)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            block = not self.running and not self.waiting
            try:
                call = self.calls.get(block=block)
                call()
                while True:
                    self.calls.get_nowait()()
            except queue.Empty:
                pass
            if self.stopping:
                break
            self._admit()
            if self.running:
                self._step()
            self.outbox.flush()
        for seq in [*self.running, *self.waiting]:
            seq.group.emit(EngineFailure("The model was unloaded while generating."))
            self._finish(seq)
        self.outbox.flush()
        self._free()

    def enqueue(self, prompt: Prompt, group: _Group) -> None:
        n = prompt.sampling.n
        seed = prompt.sampling.seed
        leader = _Sequence(prompt=prompt, group=group, index=0, seed=seed)
        self.waiting.append(leader)
        share = len(prompt.tokens) > COPY_MIN_TOKENS
        for i in range(1, n):
            self.waiting.append(_Sequence(prompt=prompt, group=group, index=i,
                                          seed=None if seed is None else seed + i,
                                          leader=leader if share else None))

    def _finish(self, seq: _Sequence) -> None:
        """A choice is over (done, failed or cancelled): the request ends with its last choice."""
        if seq.done:
            return
        seq.done = True
        seq.group.remaining -= 1
        if seq.group.remaining == 0:
            if seq.prompt.media is not None:
                seq.prompt.media.free()
            seq.group.emit(_END)

    def _admit(self) -> None:
        i = 0
        while i < len(self.waiting) and self.free_slots:
            seq = self.waiting[i]
            if seq.group.cancelled.is_set():
                del self.waiting[i]
                self._finish(seq)
                continue
            if seq.leader is not None and not seq.leader.done and not seq.leader.prefilled:
                i += 1  # its prompt is being read by choice 0; others may go first
                continue
            del self.waiting[i]
            try:
                self._start(seq)
            except BaseException as e:  # a sampler that cannot be built fails that request alone
                seq.group.emit(e if isinstance(e, Exception) else EngineFailure(str(e)))
                self._finish(seq)

    def _start_media(self, seq: _Sequence) -> None:
        """A prompt with images: read at once (mtmd decodes it), then sampled from its last logits."""
        lc = self.lc
        slot = min(self.free_slots, key=lambda s: len(self.cached[s]))
        self.free_slots.remove(slot)
        lc.llama_memory_seq_rm(self.memory, slot, -1, -1)
        self.cached[slot] = [-1]  # holds image embeddings: no token prefix can match it
        seq.slot = slot
        try:
            seq.n_past = seq.prompt.media.evaluate(self.ctx, slot, 0, self.options.n_batch)
            seq.sampler = self._make_sampler(seq.prompt.sampling, seq.prompt.grammar, seq.seed)
        except BaseException:
            lc.llama_memory_seq_rm(self.memory, slot, -1, -1)
            self.cached[slot] = []
            self.free_slots.append(slot)
            raise
        del self.cached[slot][1:]
        self.cached[slot].extend([-1] * (seq.n_past - 1))
        seq.text = _TextAssembler(seq.prompt.stop)
        self.running.append(seq)
        self._sample(seq, -1)

    def _start(self, seq: _Sequence) -> None:
        if seq.prompt.media is not None:
            self._start_media(seq)
            return
        tokens = seq.prompt.tokens
        limit = len(tokens) - 1  # at least one prompt token is read, for the logits of the first pick
        common = [min(_common_prefix(cells, tokens), limit) for cells in self.cached]
        slot = max(self.free_slots, key=common.__getitem__)
        donor = max(range(self.options.parallel), key=common.__getitem__)
        own, shared = common[slot], common[donor]
        self.free_slots.remove(slot)
        lc = self.lc
        if donor != slot and shared - own >= COPY_MIN_TOKENS:
            lc.llama_memory_seq_rm(self.memory, slot, -1, -1)
            lc.llama_memory_seq_cp(self.memory, donor, slot, -1, -1)
            self.cached[slot] = self.cached[donor][:shared]
            reuse = shared
        else:
            reuse = own
        if not lc.llama_memory_seq_rm(self.memory, slot, reuse, -1):
            lc.llama_memory_seq_rm(self.memory, slot, -1, -1)
            reuse = 0
        del self.cached[slot][reuse:]
        seq.slot = slot
        seq.n_past = seq.n_read = seq.reused = reuse
        seq.sampler = self._make_sampler(seq.prompt.sampling, seq.prompt.grammar, seq.seed)
        seq.text = _TextAssembler(seq.prompt.stop)
        self.running.append(seq)

    def _release(self, seq: _Sequence) -> None:
        """Free the slot; its KV cells stay, as a cache for the next prompt sharing their prefix."""
        self.running.remove(seq)
        # Cells not matching the record (or no cache wanted): drop them.
        if seq.n_past != len(self.cached[seq.slot]) or not self.options.cache_prompt:
            self.lc.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
            self.cached[seq.slot] = []
        self.lc.llama_sampler_free(seq.sampler)
        seq.sampler = None
        self.free_slots.append(seq.slot)
        self._finish(seq)

    def _step(self) -> None:
        for seq in [s for s in self.running if s.group.cancelled.is_set()]:
            self._release(seq)
        if not self.running:
            return
        batch = self.batch
        n = 0
        budget = self.options.n_batch
        outputs: list[tuple[_Sequence, int]] = []

        def add(seq: _Sequence, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = seq.n_past
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.slot
            batch.logits[n] = logits
            seq.n_past += 1
            self.cached[seq.slot].append(token)
            if logits:
                outputs.append((seq, n))
            n += 1

        # Decoding sequences first: one token each keeps every stream moving.
        for seq in self.running:
            if seq.n_read == len(seq.prompt.tokens) and budget > 0:
                add(seq, seq.last_token, True)
                budget -= 1
        # Then prompt chunks, within what is left of the batch.
        for seq in self.running:
            remaining = len(seq.prompt.tokens) - seq.n_read
            if remaining <= 0 or budget <= 0:
                continue
            take = min(remaining, budget)
            for i in range(take):
                idx = seq.n_read + i
                add(seq, seq.prompt.tokens[idx], idx == len(seq.prompt.tokens) - 1)
            seq.n_read += take
            budget -= take

        batch.n_tokens = n
        rc = self.lc.llama_decode(self.ctx, batch)
        if rc != 0:
            for seq in list(self.running):
                seq.group.emit(EngineFailure(f"llama.cpp failed to decode (status {rc})."))
                seq.n_past = -1  # the cells are in an unknown state
                self._release(seq)
            return
        for seq, index in outputs:
            self._sample(seq, index)

    def _sample(self, seq: _Sequence, index: int) -> None:
        sampling = seq.prompt.sampling
        token = self.lc.llama_sampler_sample(seq.sampler, self.ctx, index)
        seq.generated += 1
        seq.last_token = token
        assert seq.text is not None
        finish: FinishReason | None = None
        text = ""
        eog = bool(self.lc.llama_vocab_is_eog(self.vocab, token))
        if sampling.logprobs is not None and not eog:
            seq.logprobs.append(self._logprob(index, token, sampling.logprobs))
        if eog:
            finish = "stop"
            text = seq.text.flush()
        else:
            text, stopped = seq.text.push(self._piece(token))
            if stopped:
                finish = "stop"
            elif seq.generated >= (sampling.max_tokens or self.n_ctx_seq) or seq.n_past >= self.n_ctx_seq:
                finish = "length"
                text += seq.text.flush()
        if finish and seq.prompt.check is not None and self._failed_check(seq, text, finish):
            return
        if text or finish:
            if seq.prompt.check is not None:
                seq.produced.append(text)
            logprobs = tuple(seq.logprobs)
            seq.logprobs.clear()
            seq.group.emit(GenerationChunk(text=text, finish_reason=finish, prompt_tokens=seq.prompt.n_tokens,
                                           completion_tokens=seq.generated, index=seq.index,
                                           logprobs=logprobs, cached_tokens=seq.reused),
                           urgent=finish is not None or not seq.sent)
            seq.sent = True
        if finish:
            self._release(seq)

    def _failed_check(self, seq: _Sequence, text: str, finish: FinishReason) -> bool:
        """Check a grammar-held choice as it ends; True when it failed (and was resampled or failed).

        A reply cut short by ``max_tokens`` or the context ends with finish "length" unchecked, as the
        client asked. When the schema has keywords only the check holds, the reader holds the choice's
        text back (see :meth:`LlamaCppBackend.generate`), so a failed sample is dropped and the choice
        sampled again with another seed, up to :data:`CHECK_ATTEMPTS` samples in all.
        """
        check: OutputCheck = seq.prompt.check
        if finish != "stop":
            return False
        problem = check.problem("".join(seq.produced) + text)
        if problem is None:
            return False
        group = seq.group
        if check.held and seq.attempt + 1 < CHECK_ATTEMPTS:
            log.info("choice %d failed its schema check (%s); sampling it again", seq.index, problem)
            group.emit(_Retry(seq.index))
            group.remaining += 1
            seed = None if seq.seed is None else (seq.seed + 7919 * (seq.attempt + 1)) & 0xFFFFFFFF
            prompt = seq.prompt
            if prompt.sampling.temperature <= 0:  # greedy would only repeat the sample
                prompt = dataclasses.replace(prompt, sampling=dataclasses.replace(prompt.sampling,
                                                                                  temperature=RETRY_TEMPERATURE))
            self.waiting.insert(0, _Sequence(prompt=prompt, group=group, index=seq.index, seed=seed,
                                             attempt=seq.attempt + 1))
        elif check.held:
            group.emit(InvalidRequest(
                f"The model gave no reply valid for the schema in {CHECK_ATTEMPTS} samples ({problem}). Only"
                f" a check after generation holds {', '.join(check.held)}: loosen it, or try again.",
                param=check.param, code="schema_not_satisfied"))
        else:
            log.error("a grammar-held reply failed its schema check (%s): %r", problem,
                      "".join(seq.produced) + text)
            group.emit(EngineFailure("The reply failed its schema check."))
        self._release(seq)
        return True

    def _free(self) -> None:
        lc = self.lc
        if self.projector is not None:
            self.projector.close()
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)


class LlamaCppBackend:
    """A :class:`backends.base.ChatBackend` over one GGUF model."""

    def __init__(self, files: Path, options: Options) -> None:
        path = _find_gguf(files)
        mmproj = _projector_path(files, options.mmproj) if options.mmproj else None
        self._ready: Future[_Engine] = Future()
        self._thread = threading.Thread(target=self._main, args=(path, options, mmproj),
                                        name=f"llama:{path.stem}", daemon=True)
        self._thread.start()
        self._engine = self._ready.result()

    def _main(self, path: Path, options: Options, mmproj: Path | None) -> None:
        try:
            engine = _Engine(path, options, mmproj)
        except BaseException as e:
            self._ready.set_exception(e)
            return
        self._ready.set_result(engine)
        engine.run()

    @property
    def context_length(self) -> int:
        return self._engine.n_ctx_seq

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread, between two decode steps."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:
                future.set_exception(e)

        self._engine.calls.put(run)
        return await asyncio.wrap_future(future)

    async def prepare_chat(self, request: ChatRequest) -> Prompt:
        return await self._call(lambda: self._engine.prepare_chat(request))

    async def prepare_completion(self, request: CompletionRequest) -> Prompt:
        return await self._call(lambda: self._engine.prepare_completion(request))

    async def generate(self, prompt: Prompt) -> AsyncIterator[GenerationChunk]:
        engine = self._engine
        group = _Group(loop=asyncio.get_running_loop(), out=asyncio.Queue(), remaining=prompt.sampling.n,
                       outbox=engine.outbox)
        engine.calls.put(lambda: engine.enqueue(prompt, group))
        # Choices whose check holds keywords the grammar cannot: sent only once checked.
        holding = prompt.check is not None and bool(prompt.check.held)
        held: dict[int, list[GenerationChunk]] = {}
        try:
            while True:
                item = await group.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Retry):
                    held.pop(item.index, None)
                    continue
                if holding:
                    held.setdefault(item.index, []).append(item)
                    if item.finish_reason is None:
                        continue
                    for chunk in held.pop(item.index):
                        yield chunk
                    continue
                yield item
        finally:
            group.cancelled.set()
            engine.calls.put(lambda: None)  # wake the loop so it frees the slots now

    def close(self) -> None:
        engine = self._engine

        def stop() -> None:
            engine.stopping = True

        engine.calls.put(stop)
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=30)
