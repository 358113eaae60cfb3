"""Where every error becomes what a client sees, in one place.

Backends raise domain errors (:mod:`backends.errors`: facts, no statuses, no wire names); compat and the
gateway raise wire errors (:mod:`compat.errors`: a status, OpenAI's ``type``, a ``param``, a ``code``).
:func:`from_domain` turns the first into the second for an endpoint, naming the part at fault with the
endpoint's own field (:class:`Fields`); :func:`from_http_exception` does the same for the web
framework's own errors. Each dialect then renders the wire error in its envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

from backends import errors as domain
from backends.errors import DomainError, Part
from compat.errors import *  # noqa: F403
from compat.errors import (
    BadGateway,
    Busy,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    MethodNotAllowed,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    ServerFailure,
)
from compat.errors import __all__ as _errors

__all__ = [*_errors, "DEEPGRAM_FIELDS", "OPENAI_FIELDS", "RESPONSES_FIELDS", "Fields", "as_wire", "fields_of",
           "from_domain",
           "from_http_exception", "to_gateway_error"]

_OPENAI_NAMES = {Part.MODEL: "model", Part.LOGIT_BIAS: "logit_bias", Part.DIMENSIONS: "dimensions",
                 Part.LANGUAGE: "language", Part.VOICE: "voice", Part.OUTPUT_FORMAT: "response_format",
                 Part.TOOLS: "tools", Part.AUDIO_ENCODING: "encoding", Part.SAMPLE_RATE: "sample_rate",
                 Part.CHANNELS: "channels"}
_DEEPGRAM_NAMES = {Part.MODEL: "model", Part.LANGUAGE: "language", Part.AUDIO_ENCODING: "encoding",
                   Part.SAMPLE_RATE: "sample_rate", Part.CHANNELS: "channels", Part.VOICE: "model",
                   Part.OUTPUT_FORMAT: "encoding"}
_CODES: dict[type[DomainError], str] = {
    domain.ContextTooLong: "context_length_exceeded",
    domain.BadAudio: "invalid_audio",
    domain.ImagesNotSupported: "image_not_supported",
    domain.BadSchema: "invalid_json_schema",
    domain.SchemaNotSatisfied: "schema_not_satisfied",
    domain.UnknownVoice: "invalid_voice",
}
_IMAGE_CODES = {domain.ImageProblem.NOT_AN_IMAGE: "invalid_image_format",
                domain.ImageProblem.UNREADABLE: "invalid_image", domain.ImageProblem.TOO_LARGE: "image_too_large"}


@dataclass(frozen=True, slots=True)
class Fields:
    """How an endpoint names the parts of its requests."""

    input: str
    """The field holding what is worked on: ``messages``, ``prompt``, ``input``, ``file``, ``text``."""
    names: dict[Part, str] = field(default_factory=lambda: dict(_OPENAI_NAMES))
    bad_audio: str | None = None
    """What to say of unreadable audio instead of the engine's words (a vendor's clients match its own)."""
    output_schema: str = "response_format"
    """Where the reply's JSON Schema is sent."""
    tool_schema: str = "tools[{}].function.parameters"
    """Where a tool's parameters' JSON Schema is sent (``{}``: the tool's index)."""

    def name(self, part: Part | None) -> str | None:
        if part is None:
            return None
        if part is Part.INPUT:
            return self.input
        return self.names.get(part)


OPENAI_FIELDS = Fields(input="input")
RESPONSES_FIELDS = Fields(input="input", names={**_OPENAI_NAMES, Part.OUTPUT_FORMAT: "text.format"},
                          output_schema="text.format.schema", tool_schema="tools[{}].parameters")
DEEPGRAM_FIELDS = Fields(input="audio", names=dict(_DEEPGRAM_NAMES),
                         bad_audio="failed to process audio: corrupt or unsupported data")


def _schema_param(error: domain.BadSchema | domain.SchemaNotSatisfied, fields: Fields) -> str:
    if error.part is Part.TOOLS:
        return "tools"
    return fields.output_schema if error.tool is None else fields.tool_schema.format(error.tool)


def _message(error: DomainError, fields: Fields, param: str | None) -> str:
    """The error's words, where they must name the endpoint's own fields."""
    if isinstance(error, domain.ContextTooLong):
        what = fields.input
        if error.max_new is None:
            size = f"at least {error.n_prompt}" if error.at_least else str(error.n_prompt)
            return (f"This model's maximum context length is {error.limit} tokens. However, your {what}"
                    f" resulted in {size} tokens, leaving no room for a completion.")
        return (f"This model's maximum context length is {error.limit} tokens. However, you requested"
                f" {error.n_prompt + error.max_new} tokens ({error.n_prompt} in the {what}, {error.max_new} in"
                f" the completion). Please reduce the length of the {what} or the completion.")
    if isinstance(error, domain.UnknownToken):
        place = f"{param}[{error.item}]" if error.item is not None else param
        return f"Token id {error.token} in {place} is outside this model's vocabulary (0..{error.vocab_size - 1})."
    if isinstance(error, domain.InputTooLong):
        return f"{fields.input}[{error.item}] is {error.n_tokens} tokens long; this model reads at most {error.limit}."
    if isinstance(error, domain.BadDimensions):
        return f"{param} is {error.asked}, but this model's embeddings have {error.dimensions}."
    if isinstance(error, domain.BadSchema):
        place = f" at '{error.where}'" if error.where else ""
        return f"Invalid schema for '{_schema_param(error, fields)}'{place}: {error.why}"
    if isinstance(error, domain.SchemaNotSatisfied):
        keywords = ", ".join(k if t is None else f"tools[{t}].function.parameters {k}" for t, k in error.held)
        why = f" Only a check after generation holds {keywords}: loosen it, or try again." if error.held else ""
        return f"The model gave no reply valid for the schema in {error.attempts} samples ({error.problem}).{why}"
    if isinstance(error, domain.NoChatTemplate):
        return ("This model has no chat template; use /v1/completions or set options.chat_template for it.")
    if isinstance(error, domain.BadImage) and error.place is not None:
        return f"'{error.place}': {error.message}"
    if isinstance(error, domain.BadAudio) and error.part is Part.INPUT and fields.bad_audio is not None:
        return fields.bad_audio
    return error.message


def from_domain(error: DomainError, fields: Fields = OPENAI_FIELDS) -> GatewayError:
    """The wire error for a domain error raised while serving an endpoint named by ``fields``."""
    if isinstance(error, domain.LoadFailed):
        return ModelUnavailable(error.message)
    if isinstance(error, domain.UpstreamFailed):
        return (GatewayTimeout if isinstance(error, domain.UpstreamTimeout) else BadGateway)(error.message)
    if isinstance(error, domain.UpstreamRefused):
        return _refused_upstream(error, fields)
    if not isinstance(error, domain.Rejected):
        return ServerFailure(error.message)
    param = fields.name(error.part)
    if isinstance(error, domain.BadSchema | domain.SchemaNotSatisfied):
        param = _schema_param(error, fields)
    elif isinstance(error, domain.BadImage | domain.ImagesNotSupported):
        param = error.place or fields.input
    code = _IMAGE_CODES[error.problem] if isinstance(error, domain.BadImage) else _CODES.get(type(error))
    return InvalidRequest(_message(error, fields, param), param=param, code=code)


def _refused_upstream(error: domain.UpstreamRefused, fields: Fields) -> GatewayError:
    """An upstream's 4xx as the same 4xx. Its refusal of the gateway itself (its key, the model's name on
    it) is this server's misconfiguration, not the client's fault: a 502 that says so."""
    status = error.upstream_status
    if status in (401, 403, 404):
        return BadGateway(f"The upstream engine refused this server's request ({status}): {error.message}"
                          " Check the model's options.endpoints, options.model and options.api_key_env.")
    if status == 429:
        return Busy(error.message, retry_after=error.retry_after or 1.0)
    wire = InvalidRequest(error.message, param=error.field or fields.input, code=error.code)
    wire.status = status
    return wire


def as_wire(error: GatewayError | DomainError, fields: Fields = OPENAI_FIELDS) -> GatewayError:
    """The wire error for either kind: a wire error as it is, a domain error named in ``fields``' terms."""
    return error if isinstance(error, GatewayError) else from_domain(error, fields)


def fields_of(request: Request[Any, Any, Any]) -> Fields:
    """The fields of the endpoint serving ``request`` (its route's ``fields`` option; OpenAI's by default)."""
    fields = request.route_handler.opt.get("fields")
    return fields if isinstance(fields, Fields) else OPENAI_FIELDS


def to_gateway_error(request: Request[Any, Any, Any], error: Exception) -> GatewayError | None:
    """Any error a route let through as a wire error, or None when it is unexpected (a 500 to log)."""
    if isinstance(error, GatewayError):
        return error
    if isinstance(error, DomainError):
        return from_domain(error, fields_of(request))
    if isinstance(error, HTTPException):
        return from_http_exception(request, error)
    return None


def from_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> GatewayError | None:
    """Litestar's 4xx (unknown route, wrong method, body too large, …) as a gateway error; None for 5xx."""
    status = exc.status_code
    if status == 404:
        return NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
    if status == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        return MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}.", allow=allow)
    if status == 413:
        return PayloadTooLarge("The request body is too large.")
    if 400 <= status < 500:
        error = InvalidRequest(str(exc.detail))
        error.status = status
        return error
    return None
