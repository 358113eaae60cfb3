"""One inference request over the Open Inference Protocol: its tensors read and checked, the request
validated by the same parser its HTTP twin goes through, the serving layer called, the answer written.

A request on ``ModelStreamInfer`` gets its answers with ``triton_final_response`` set on the last one
(or, with the request parameter ``triton_enable_empty_final_response``, on an empty response after
them); an LLM request with ``stream`` gets its text piece by piece as it is generated.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.answers import AnswerEnd, ChoiceFinished, TextDelta, TextPiece
from backends.errors import DomainError, Part
from backends.types import ModelType, Usage
from compat.errors import InvalidRequest, ModelNotFound, NotFound, PayloadTooLarge
from compat.kserve.inference_pb2 import ModelInferRequest, ModelInferResponse
from compat.kserve.models import SIGNATURES, VERSION, Signature
from compat.kserve.requests import SAMPLING_NAMES, llm_call, renamed
from compat.kserve.tensors import Inputs, Outputs, parameter_value
from compat.openai.audio import SPEECH_RATE, Transcript, parse_speech_request, parse_transcription_form
from compat.openai.chat import parse_chat_request
from compat.openai.completions import parse_completion_request
from compat.openai.embeddings import parse_embeddings_request
from compat.wire import ParamPolicy
from gateway.config import Config
from gateway.errors import Fields, from_domain
from gateway.observability import STARTED_KEY, GenerationMeter, Metrics
from gateway.registry import Registry
from gateway.serving import Serving
from gateway.serving.speech import AudioOutput, audio_of
from gateway.serving.transcription import AudioInput, TranscriptionOptions
from gateway.vision import resolve_chat_images

__all__ = ["EMPTY_FINAL", "Inference", "model_named"]

EMPTY_FINAL = "triton_enable_empty_final_response"
"""The request parameter (Triton's) that asks for the final flag on an empty response of its own."""
_NAMES = {Part.MODEL: "model_name", Part.LANGUAGE: "language", Part.VOICE: "voice"}
_FIELDS = {kind: Fields(input=tensor, names=_NAMES, output_schema="sampling_parameters")
           for kind, tensor in ((ModelType.LLM, "text_input"), (ModelType.EMBEDDINGS, "text"),
                                (ModelType.STT, "audio"), (ModelType.TTS, "text"))}
"""An engine's refusal names the tensor at fault."""


@dataclass(frozen=True, slots=True)
class _Answer:
    outputs: Outputs
    last: bool


class Inference:
    """Answers requests on the app's registry and serving objects, shared with HTTP."""

    def __init__(self, registry: Registry, serving: Serving, config: Config, metrics: Metrics) -> None:
        self._registry = registry
        self._serving = serving
        self._config = config
        self._metrics = metrics

    def model_type(self, name: str, version: str = "") -> tuple[str, ModelType, Signature]:
        """The configured model ``name`` reaches, its type and its tensors; NOT_FOUND for an unknown
        name or version, INVALID_ARGUMENT for a model this protocol does not serve."""
        model = model_named(self._registry, name)
        if version not in ("", VERSION):
            raise NotFound(f"The model '{name}' has no version '{version}'; its one version is '{VERSION}'.",
                           param="model_version")
        model_type = self._registry.model_config(model).type
        signature = SIGNATURES.get(model_type)
        if signature is None:
            raise InvalidRequest(f"The model '{name}' is a {model_type.value} model, which is not served over"
                                 " the inference protocol.", param="model_name", code="model_not_supported")
        return model, model_type, signature

    async def answers(self, request: ModelInferRequest, *, streaming: bool,
                      started: float) -> AsyncGenerator[ModelInferResponse, None]:
        """The responses to ``request``: one on ``ModelInfer``; on ``ModelStreamInfer`` as many as its
        answer takes, the last flagged final."""
        model, model_type, signature = self.model_type(request.model_name, request.model_version)
        empty_final = _empty_final(request)
        if empty_final and not streaming:
            raise InvalidRequest(f"The request parameter '{EMPTY_FINAL}' applies to ModelStreamInfer only.",
                                 param=EMPTY_FINAL)
        inputs = Inputs(request, {name: datatype for name, (datatype, _) in signature.inputs.items()})
        outputs = Outputs(request, signature.outputs)
        name, request_id = request.model_name, request.id
        if model_type is ModelType.LLM:
            answers = self._llm(request, model, inputs, outputs, streaming, started)
        else:
            answers = self._single(model_type, name, inputs, outputs)
        try:
            async for answer in answers:
                yield answer.outputs.response(name, request_id,
                                              final=(answer.last and not empty_final) if streaming else None)
        except DomainError as e:
            raise from_domain(e, _FIELDS[model_type]) from None
        if empty_final:
            yield outputs.fresh().response(name, request_id, final=True)

    async def _single(self, model_type: ModelType, name: str, inputs: Inputs,
                      outputs: Outputs) -> AsyncIterator[_Answer]:
        if model_type is ModelType.EMBEDDINGS:
            await self._embeddings(name, inputs, outputs)
        elif model_type is ModelType.STT:
            await self._transcription(name, inputs, outputs)
        else:
            await self._speech(name, inputs, outputs)
        yield _Answer(outputs, last=True)

    # -- LLM ----------------------------------------------------------------------------------------

    async def _llm(self, request: ModelInferRequest, model: str, inputs: Inputs, outputs: Outputs, streaming: bool,
                   started: float) -> AsyncIterator[_Answer]:
        name = request.model_name
        call = llm_call(inputs, name)
        if call.stream and not streaming:
            raise InvalidRequest("Input tensor 'stream': a streamed answer needs ModelStreamInfer (in tritonclient:"
                                 " start_stream and async_stream_infer).", param="stream")
        policy = ParamPolicy("reject")  # nothing is dropped unseen: there is no header to report it in
        meter = GenerationMeter(self._metrics, model, {STARTED_KEY: started})
        with renamed(SAMPLING_NAMES):
            if call.kind == "chat":
                parsed = parse_chat_request(call.body, policy)
                chat = await resolve_chat_images(self._config, self._registry, name, parsed.request)
                events: Any = await self._serving.chat.stream(name, chat, meter, received=started)
            else:
                completion = parse_completion_request(call.body, policy)
                events = await self._serving.completions.stream(name, completion.requests, lambda: meter)
        text: list[str] = []
        finish: str | None = None
        usage = Usage()
        try:
            async for event in events:
                piece = ""
                if isinstance(event, TextDelta):
                    piece = event.text
                elif isinstance(event, TextPiece):
                    piece, finish = event.text, event.finish_reason or finish
                elif isinstance(event, ChoiceFinished):
                    finish = event.reason
                elif isinstance(event, AnswerEnd):
                    usage = event.usage
                if not piece:
                    continue
                if call.stream:
                    if outputs.wants("text_output"):
                        yield _Answer(_text(outputs.fresh(), piece), last=False)
                else:
                    text.append(piece)
        finally:
            await events.aclose()
        _text(outputs, "".join(text))
        if outputs.wants("finish_reason", by_default=False):
            outputs.add_bytes("finish_reason", [(finish or "stop").encode()])
        for tensor, count in (("num_input_tokens", usage.prompt_tokens),
                              ("num_output_tokens", usage.completion_tokens)):
            if outputs.wants(tensor, by_default=False):
                outputs.add_array(tensor, np.array([count], dtype=np.uint32))
        yield _Answer(outputs, last=True)

    # -- embeddings, speech to text, text to speech ---------------------------------------------------

    async def _embeddings(self, name: str, inputs: Inputs, outputs: Outputs) -> None:
        texts = inputs.texts("text")
        if not texts:
            raise InvalidRequest("Input tensor 'text' must hold at least one text to embed.", param="text")
        with renamed({"input": "text"}):
            parsed = parse_embeddings_request({"model": name, "input": texts}, ParamPolicy("reject"))
            result = await self._serving.embeddings.embed(name, parsed.request)
        if outputs.wants("embedding"):
            outputs.add_array("embedding", np.asarray(result.vectors, dtype=np.float32))

    async def _transcription(self, name: str, inputs: Inputs, outputs: Outputs) -> None:
        audio = inputs.data("audio")
        if not audio:
            raise InvalidRequest("Input tensor 'audio' must hold an audio file (wav, mp3, ogg, flac, …).",
                                 param="audio")
        most = self._config.server.max_audio_upload_bytes
        if len(audio) > most:
            raise PayloadTooLarge(f"Input tensor 'audio' holds {len(audio)} bytes; the most this server takes is"
                                  f" {most} (server.max_audio_upload_bytes).", param="audio")
        fields = {"model": [name]}
        language = inputs.text("language")
        if language:
            fields["language"] = [language]
        parsed = parse_transcription_form(fields, ParamPolicy("reject"), task="transcribe")
        answer = await self._serving.transcriptions.answer(
            parsed.model, AudioInput(audio), TranscriptionOptions(language=parsed.language))
        if outputs.wants("text"):
            text = Transcript(info=answer.info, segments=list(answer.segments)).text
            outputs.add_bytes("text", [text.encode()])

    async def _speech(self, name: str, inputs: Inputs, outputs: Outputs) -> None:
        text, voice = inputs.text("text"), inputs.text("voice")
        if text is None:
            raise InvalidRequest("Missing input tensor 'text': the text to speak.", param="text")
        with renamed({"input": "text", "voice": "voice"}):
            parsed = parse_speech_request({"model": name, "input": text, "voice": voice or "default",
                                           "response_format": "wav"}, ParamPolicy("reject"))
        spoken = await self._serving.speech.speak(name, parsed.text, AudioOutput("wav", SPEECH_RATE), voice=voice)
        try:
            audio = b"".join([chunk async for chunk in audio_of(spoken.events)])
        finally:
            await spoken.events.aclose()
        if outputs.wants("audio"):
            outputs.add_bytes("audio", [audio])


def model_named(registry: Registry, name: str) -> str:
    """The configured model ``name`` reaches; NOT_FOUND naming ``model_name``, the field it came in."""
    try:
        return registry.resolve(name)
    except ModelNotFound:
        raise ModelNotFound(name, param="model_name") from None


def _text(outputs: Outputs, text: str) -> Outputs:
    if outputs.wants("text_output"):
        outputs.add_bytes("text_output", [text.encode()])
    return outputs


def _empty_final(request: ModelInferRequest) -> bool:
    """Whether the request asks for an empty final response; any other request parameter is refused."""
    empty_final = False
    for key, parameter in request.parameters.items():
        value = parameter_value(parameter)
        if key != EMPTY_FINAL:
            raise InvalidRequest(f"Request parameter '{key}' is not supported by this server; it takes"
                                 f" '{EMPTY_FINAL}' only.", param=key)
        if not isinstance(value, bool):
            raise InvalidRequest(f"Request parameter '{EMPTY_FINAL}' must be a bool.", param=EMPTY_FINAL)
        empty_final = value
    return empty_final
