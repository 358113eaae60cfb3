"""OpenAI's API as an upstream speaks it: what ``backend: upstream`` models with ``api: openai`` send
to vLLM, llama-server, TGI, SGLang, Ollama or another SYN4PSE, and how their answers are read.

Requests are written from domain types (the gateway has already validated them in the client's own
dialect); answers are read leniently, since servers differ in what they add or leave out (llama-server's
``timings``, a usage chunk with no choices, an error object or a bare string).
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from backends.types import (
    IMAGE_MARKER,
    CallPiece,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationChunk,
    SamplingParams,
    SpeechRequest,
    TokenLogprob,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
    TranscriptWord,
)
from backends.upstream.dialect import Form, Refusal, StreamRead, register
from compat.openai.languages import language_code

__all__ = ["OpenAIUpstream"]

_FINISHES = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
             "eos": "stop", "stop_sequence": "stop", "content_filter": "stop"}


class OpenAIUpstream:
    chat_path = "chat/completions"
    completion_path = "completions"
    embeddings_path = "embeddings"
    transcription_path = "audio/transcriptions"
    translation_path = "audio/translations"
    speech_path = "audio/speech"
    health_path = "models"

    # -- generation ---------------------------------------------------------------------------------

    def chat_body(self, model: str, request: ChatRequest, sampling: SamplingParams, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
        body.update(_sampling(sampling, chat=True))
        if request.tools:
            body["tools"] = [{"type": "function", "function": _function(t.name, t.description, t.parameters,
                                                                           t.strict)} for t in request.tools]
            choice = request.tool_choice
            body["tool_choice"] = (choice if choice in ("none", "auto", "required")
                                   else {"type": "function", "function": {"name": choice}})
            if not request.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        output = request.output
        if output.kind == "json":
            body["response_format"] = ({"type": "json_object"} if output.json_schema is None else
                                       {"type": "json_schema", "json_schema": {
                                           "name": "reply", "schema": output.json_schema, "strict": output.strict}})
        return _stream(body, stream)

    def completion_body(self, model: str, request: CompletionRequest, sampling: SamplingParams,
                        stream: bool) -> bytes:
        prompt = request.prompt if isinstance(request.prompt, str) else list(request.prompt)
        body: dict[str, Any] = {"model": model, "prompt": prompt, **_sampling(sampling, chat=False)}
        if request.echo:
            body["echo"] = True
        return _stream(body, stream)

    def read_stream_event(self, data: bytes) -> StreamRead:
        obj = _json(data)
        if not isinstance(obj, dict):
            return StreamRead()
        if "error" in obj:
            return StreamRead(error=_refusal(obj))
        read = StreamRead(chunks=[_chunk(c) for c in obj.get("choices") or () if isinstance(c, dict)])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            read.prompt_tokens = _int(usage.get("prompt_tokens"))
            read.completion_tokens = _int(usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
            read.cached_tokens = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return read

    def read_generation(self, body: bytes) -> StreamRead:
        return self.read_stream_event(body)

    # -- embeddings ---------------------------------------------------------------------------------

    def embeddings_body(self, model: str, request: EmbeddingRequest) -> bytes:
        inputs = [i if isinstance(i, str) else list(i) for i in request.inputs]
        return msgspec.json.encode({"model": model, "input": inputs, "encoding_format": "float"})

    def read_embeddings(self, body: bytes) -> tuple[npt.NDArray[np.float32], int]:
        obj = _json(body)
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list):
            return np.zeros((0, 0), np.float32), 0
        rows = sorted((d for d in data if isinstance(d, dict)), key=lambda d: _int(d.get("index")))
        vectors = [_vector(d.get("embedding")) for d in rows]
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        array = np.array(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), np.float32)
        return array, _int(usage.get("prompt_tokens"))

    # -- speech -------------------------------------------------------------------------------------

    def transcription_form(self, model: str, request: TranscriptionRequest, wav: bytes) -> Form:
        fields = [("model", model), ("response_format", "verbose_json"),
                  ("timestamp_granularities[]", "segment")]
        if request.word_timestamps:
            fields.append(("timestamp_granularities[]", "word"))
        if request.language and request.task == "transcribe":
            fields.append(("language", request.language))
        if request.prompt:
            fields.append(("prompt", request.prompt))
        if request.temperature is not None:
            fields.append(("temperature", repr(request.temperature)))
        return Form(fields, "file", "audio.wav", wav, "audio/wav")

    def read_transcription(self, body: bytes, duration: float) -> tuple[TranscriptionInfo, list[TranscriptSegment]]:
        obj = _json(body)
        if not isinstance(obj, dict):
            obj = {}
        length = _float(obj.get("duration")) or duration
        info = TranscriptionInfo(language_code(str(obj.get("language") or "en")), 1.0, length)
        words = [TranscriptWord(str(w.get("word", "")), _float(w.get("start")), _float(w.get("end")),
                                _float(w.get("probability"), 1.0))
                 for w in obj.get("words") or () if isinstance(w, dict)]
        raw = [s for s in obj.get("segments") or () if isinstance(s, dict)]
        if not raw:
            text = str(obj.get("text") or "")
            return info, ([TranscriptSegment(0, 0.0, length, text, words=tuple(words))] if text.strip() else [])
        segments = []
        for i, s in enumerate(raw):
            start, end = _float(s.get("start")), _float(s.get("end"))
            last = i == len(raw) - 1
            mine = tuple(w for w in words if start <= (w.start + w.end) / 2 <= end or (last and w.start >= start))
            segments.append(TranscriptSegment(
                id=i, start=start, end=end, text=str(s.get("text", "")),
                tokens=tuple(t for t in s.get("tokens") or () if isinstance(t, int)), seek=_int(s.get("seek")),
                temperature=_float(s.get("temperature")), avg_logprob=_float(s.get("avg_logprob")),
                compression_ratio=_float(s.get("compression_ratio")), no_speech_prob=_float(s.get("no_speech_prob")),
                words=mine))
        return info, segments

    def speech_body(self, model: str, request: SpeechRequest) -> bytes:
        return msgspec.json.encode({"model": model, "input": request.text, "voice": request.voice,
                                    "speed": request.speed, "response_format": "pcm"})

    def read_error(self, body: bytes) -> Refusal:
        obj = _json(body)
        if isinstance(obj, dict):
            return _refusal(obj)
        text = body.decode("utf-8", "replace").strip()
        return Refusal(text[:300] or "no details given")


# --------------------------------------------------------------------------------------------------


def _stream(body: dict[str, Any], stream: bool) -> bytes:
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)


def _sampling(s: SamplingParams, *, chat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p}
    if s.max_tokens is not None:
        out["max_tokens"] = s.max_tokens
    if s.stop:
        out["stop"] = list(s.stop)
    if s.seed is not None:
        out["seed"] = s.seed
    if s.presence_penalty:
        out["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty:
        out["frequency_penalty"] = s.frequency_penalty
    if s.logit_bias:
        out["logit_bias"] = {str(token): bias for token, bias in s.logit_bias}
    if s.n != 1:
        out["n"] = s.n
    if s.logprobs is not None:
        if chat:
            out["logprobs"] = True
            out["top_logprobs"] = s.logprobs
        else:
            out["logprobs"] = s.logprobs
    return out


def _function(name: str, description: str | None, parameters: dict[str, Any], strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "parameters": parameters or {"type": "object", "properties": {}}}
    if description:
        out["description"] = description
    if strict:
        out["strict"] = True
    return out


def _message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": _content(m)}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in m.tool_calls]
        if not m.content:
            out["content"] = None
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _content(m: ChatMessage) -> str | list[dict[str, Any]]:
    if not m.images:
        return m.content
    texts = m.content.split(IMAGE_MARKER)
    parts: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        if text:
            parts.append({"type": "text", "text": text})
        if i < len(m.images):
            image = m.images[i]
            url = (f"data:{image.mime};base64,{base64.b64encode(image.data).decode()}" if image.data
                   else image.url)
            part: dict[str, Any] = {"url": url}
            if image.detail:
                part["detail"] = image.detail
            parts.append({"type": "image_url", "image_url": part})
    return parts


def _chunk(c: dict[str, Any]) -> GenerationChunk:
    delta = c.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else c.get("text")
    calls: tuple[CallPiece, ...] = ()
    if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
        calls = tuple(_call(i, t) for i, t in enumerate(delta["tool_calls"]) if isinstance(t, dict))
    elif isinstance(c.get("message"), dict):  # a whole answer read as one event
        message = c["message"]
        text = message.get("content")
        calls = tuple(_call(i, t) for i, t in enumerate(message.get("tool_calls") or ()) if isinstance(t, dict))
    reason = c.get("finish_reason")
    return GenerationChunk(text if isinstance(text, str) else "",
                           finish_reason=_FINISHES.get(reason, "stop") if isinstance(reason, str) else None,  # type: ignore[arg-type]
                           index=_int(c.get("index")), logprobs=_logprobs(c.get("logprobs")), calls=calls)


def _call(position: int, t: dict[str, Any]) -> CallPiece:
    found = t.get("function")
    function: dict[str, Any] = found if isinstance(found, dict) else {}
    name, arguments = function.get("name"), function.get("arguments")
    return CallPiece(index=_int(t.get("index"), position), id=t.get("id") if isinstance(t.get("id"), str) else None,
                     name=name if isinstance(name, str) and name else None,
                     arguments=arguments if isinstance(arguments, str) else "")


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(raw, dict):
        return ()
    content = raw.get("content")
    if isinstance(content, list):  # chat
        return tuple(_token(t, tuple(_token(a, ()) for a in t.get("top_logprobs") or () if isinstance(a, dict)))
                     for t in content if isinstance(t, dict))
    tokens, logprobs = raw.get("tokens"), raw.get("token_logprobs")  # completions
    if isinstance(tokens, list) and isinstance(logprobs, list):
        given = raw.get("top_logprobs")
        tops: list[Any] = given if isinstance(given, list) else [None] * len(tokens)
        return tuple(TokenLogprob(str(t), str(t).encode(), _float(lp), tuple(
            TokenLogprob(str(k), str(k).encode(), _float(v)) for k, v in (top or {}).items()))
            for t, lp, top in zip(tokens, logprobs, tops, strict=False))
    return ()


def _token(t: dict[str, Any], top: tuple[TokenLogprob, ...]) -> TokenLogprob:
    token = str(t.get("token", ""))
    raw = t.get("bytes")
    data = bytes(b for b in raw if isinstance(b, int) and 0 <= b < 256) if isinstance(raw, list) else token.encode()
    return TokenLogprob(token, data, _float(t.get("logprob")), top)


_CONTEXT_EXCEEDED = "context_length_exceeded"
_CONTEXT_WORDS = ("context length", "context size", "context window", "`inputs` must have less than",
                  "`max_new_tokens` must be <=")
"""How servers word a prompt too long for the context: vLLM's "maximum context length", llama-server's
"exceeds the available context size", SGLang's "longer than the model's context length", TGI's
"`inputs` must have less than N tokens"."""


def _refusal(obj: dict[str, Any]) -> Refusal:
    """The error body's words, field and code."""
    error = obj.get("error", obj.get("detail"))
    if isinstance(error, dict):
        message, param, code = str(error.get("message") or "no details given"), error.get("param"), error.get("code")
        return Refusal(message, param if isinstance(param, str) else None,
                       _code(message, code if isinstance(code, str) else None, error.get("type")))
    if isinstance(error, list) and error and isinstance(error[0], dict):  # FastAPI's validation errors
        return Refusal(str(error[0].get("msg", error[0])))
    message = str(error or obj.get("message") or "no details given")
    return Refusal(message, None, _code(message, None, None))


def _code(message: str, code: str | None, kind: object) -> str | None:
    """The refusal's code: OpenAI's for a prompt too long for the context, whatever the server called
    it (so that ``truncation: auto`` can act on it), else the server's own."""
    if kind == "exceed_context_size_error" or any(w in message.lower() for w in _CONTEXT_WORDS):
        return _CONTEXT_EXCEEDED
    return code


def _vector(raw: Any) -> list[float]:
    if isinstance(raw, str):
        return [float(x) for x in np.frombuffer(base64.b64decode(raw), dtype="<f4")]
    return [float(x) for x in raw] if isinstance(raw, list) else []


def _json(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


register("openai", OpenAIUpstream())
