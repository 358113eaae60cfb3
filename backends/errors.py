"""What can go wrong inside an engine, in the engine's own terms.

These errors carry facts (a prompt's length and the context's, a token id and the vocabulary's size,
which part of the request is at fault), nothing of any wire format: :mod:`gateway.errors` turns each
into every dialect's own error, in one place. ``message`` is safe to show a client: no paths, no traces.

    DomainError
    ├── Rejected                    the request's content is at fault
    │   ├── ContextTooLong          prompt (+ the completion asked for) exceeds the context
    │   ├── UnknownToken            a token id outside the vocabulary
    │   ├── InputTooLong            an input longer than the model reads (embeddings)
    │   ├── BadDimensions           more dimensions than the model's embeddings have
    │   ├── BadAudio                audio that is empty, truncated, not audio, or raw audio's settings
    │   ├── BadOutputFormat         an audio format the encoder cannot write
    │   ├── BadImage                an image that cannot be read, or is too large
    │   ├── ImagesNotSupported      images for a model that cannot see
    │   ├── BadSchema               a JSON Schema structured outputs cannot follow
    │   ├── SchemaNotSatisfied      no sample satisfied the keywords only a check after generation holds
    │   ├── NoTools                 tool calls asked for, with no tools
    │   ├── NoChatTemplate          a chat request for a model without a chat template
    │   ├── TemplateRejected        the chat template raised on these messages
    │   ├── UnknownVoice            a voice the speech model does not have
    │   ├── UnsupportedLanguage     a language the model does not know
    │   ├── CannotTranslate         translation asked of an English-only model
│   └── UpstreamRefused         the engine behind an ``upstream`` model refused the request (its 4xx)
    ├── LoadFailed                  the model's files could not be found or loaded
    └── EngineFailure               the engine failed while working on a request
        ├── EngineBroken            ... and can serve no more: the model is loaded again for the next one
    └── UpstreamFailed          no endpoint of an ``upstream`` model answered (errors, refused connections)
        └── UpstreamTimeout     ... because it took too long
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

__all__ = [
    "BadAudio",
    "BadDimensions",
    "BadImage",
    "BadOutputFormat",
    "BadSchema",
    "CannotTranslate",
    "ContextTooLong",
    "DomainError",
    "EngineBroken",
    "EngineFailure",
    "ImageProblem",
    "ImagesNotSupported",
    "InputTooLong",
    "LoadFailed",
    "NoChatTemplate",
    "NoTools",
    "Part",
    "Rejected",
    "SchemaNotSatisfied",
    "TemplateRejected",
    "UnknownToken",
    "UnknownVoice",
    "UnsupportedLanguage",
    "UpstreamFailed",
    "UpstreamRefused",
    "UpstreamTimeout",
    "without_paths",
]

_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"`()<>,;:]+){2,}|(?<![\w])[A-Za-z]:\\(?:[^\s\\'\"`()<>,;:]+\\?)+")


def without_paths(text: str) -> str:
    """``text`` with each absolute file path cut to its last part: what a library's exception says of
    the files it read (``Unrecognized model in /srv/models/x``) may reach a client, the machine's
    layout may not."""
    return _PATH.sub(lambda m: re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], text)


class Part(enum.Enum):
    """The part of a request an error is about; each dialect names it with its own field."""

    INPUT = "input"
    """What the request asks to be worked on: the messages, the prompt, the texts, the audio."""
    MODEL = "model"
    LOGIT_BIAS = "logit_bias"
    DIMENSIONS = "dimensions"
    LANGUAGE = "language"
    VOICE = "voice"
    OUTPUT_FORMAT = "output_format"
    AUDIO_ENCODING = "audio_encoding"
    SAMPLE_RATE = "sample_rate"
    CHANNELS = "channels"
    IMAGE = "image"
    """An image of the input; the error's ``place`` says which, as the request placed it."""
    SCHEMA = "schema"
    """The reply's JSON Schema (``tool`` None) or a tool's parameters (``tool`` its index)."""
    TOOLS = "tools"


class DomainError(Exception):
    """Base of every engine error. ``message`` is safe to show."""

    part: Part | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Rejected(DomainError):
    """The request cannot be served as asked: retrying it unchanged fails the same way."""

    part: Part | None = Part.INPUT


class ContextTooLong(Rejected):
    def __init__(self, n_prompt: int, limit: int, max_new: int | None = None, *, at_least: bool = False) -> None:
        self.n_prompt = n_prompt
        self.limit = limit
        self.max_new = max_new
        """The completion tokens asked for, when they are what no longer fits (None: the prompt alone)."""
        self.at_least = at_least
        """``n_prompt`` is a bound, found from the text's size without tokenising it."""
        if max_new is None:
            size = f"at least {n_prompt}" if at_least else str(n_prompt)
            why = f"the prompt is {size} tokens, leaving no room for a completion"
        else:
            why = f"{n_prompt} prompt tokens and {max_new} completion tokens were asked for"
        super().__init__(f"This model's maximum context length is {limit} tokens; {why}.")


class UnknownToken(Rejected):
    def __init__(self, token: int, vocab_size: int, *, part: Part = Part.INPUT, item: int | None = None) -> None:
        self.token = token
        self.vocab_size = vocab_size
        self.part = part
        self.item = item
        """Which input holds it, when a request has several."""
        super().__init__(f"Token id {token} is outside this model's vocabulary (0..{vocab_size - 1}).")


class InputTooLong(Rejected):
    def __init__(self, item: int, n_tokens: int, limit: int) -> None:
        self.item = item
        self.n_tokens = n_tokens
        self.limit = limit
        super().__init__(f"Input {item} is {n_tokens} tokens long; this model reads at most {limit}.")


class BadDimensions(Rejected):
    part = Part.DIMENSIONS

    def __init__(self, asked: int, dimensions: int) -> None:
        self.asked = asked
        self.dimensions = dimensions
        super().__init__(f"{asked} dimensions were asked for, but this model's embeddings have {dimensions}.")


class BadAudio(Rejected):
    """Audio that cannot be read. ``part`` is the input itself, or the raw-audio setting at fault."""

    def __init__(self, message: str, *, part: Part = Part.INPUT) -> None:
        super().__init__(message)
        self.part = part


class BadOutputFormat(Rejected):
    part = Part.OUTPUT_FORMAT

    def __init__(self, fmt: str, supported: Sequence[str]) -> None:
        self.fmt = fmt
        self.supported = tuple(supported)
        super().__init__(f"Unsupported audio format '{fmt}'; expected one of: {', '.join(supported)}.")


class ImageProblem(enum.Enum):
    NOT_AN_IMAGE = "not an image"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too large"


class BadImage(Rejected):
    part = Part.IMAGE

    def __init__(self, message: str, problem: ImageProblem, place: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.place = place
        """Where the request put the image (its own words for it), once known."""


class ImagesNotSupported(Rejected):
    part = Part.IMAGE

    def __init__(self, place: str) -> None:
        self.place = place
        super().__init__(f"This model does not accept images ('{place}').")


class BadSchema(Rejected):
    """``part`` is SCHEMA for one schema (``tool``: None for the reply's, else that tool's parameters),
    TOOLS for what holds a call to any of the tools."""

    part = Part.SCHEMA

    def __init__(self, why: str, *, where: str = "", tool: int | None = None, part: Part = Part.SCHEMA) -> None:
        self.why = why
        self.where = where
        """The JSON Pointer of the schema's part at fault (empty: the whole schema)."""
        self.tool = tool
        self.part = part
        place = f" at '{where}'" if where else ""
        super().__init__(f"Invalid schema{place}: {why}")


class SchemaNotSatisfied(Rejected):
    """``part`` is SCHEMA for one schema (``tool``: None for the reply's, else that tool's parameters),
    TOOLS for a call to any of the tools."""

    part = Part.SCHEMA

    def __init__(self, attempts: int, problem: str, held: Sequence[tuple[int | None, str]], *,
                 tool: int | None = None, part: Part = Part.SCHEMA) -> None:
        self.attempts = attempts
        self.problem = problem
        self.held = tuple(held)
        """The keywords only the check after generation holds, each with the tool whose schema has it."""
        self.tool = tool
        self.part = part
        keywords = ", ".join(k if t is None else f"tool {t}: {k}" for t, k in held)
        why = f" Only a check after generation holds {keywords}: loosen it, or try again." if held else ""
        super().__init__(f"The model gave no reply valid for the schema in {attempts} samples ({problem}).{why}")


class NoTools(Rejected):
    part = Part.TOOLS

    def __init__(self) -> None:
        super().__init__("No tools to call.")


class NoChatTemplate(Rejected):
    part = Part.MODEL

    def __init__(self) -> None:
        super().__init__("This model has no chat template; send it a plain prompt, or set"
                         " options.chat_template for it.")


class TemplateRejected(Rejected):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"The model's chat template rejected the messages: {detail}")


class UnknownVoice(Rejected):
    part = Part.VOICE

    def __init__(self, voice: str, voices: Sequence[str]) -> None:
        self.voice = voice
        self.voices = tuple(voices)
        super().__init__(f"Unknown voice '{voice}'. This model's voices: {', '.join(voices)}.")


class UnsupportedLanguage(Rejected):
    part = Part.LANGUAGE

    def __init__(self, language: str, *, english_only: bool = False) -> None:
        self.language = language
        self.english_only = english_only
        super().__init__("This model is English-only." if english_only
                         else f"Language '{language}' is not one whisper knows.")


class CannotTranslate(Rejected):
    part = Part.MODEL

    def __init__(self) -> None:
        super().__init__("This model is English-only and cannot translate; use a multilingual whisper model.")


class UpstreamRefused(Rejected):
    """The upstream engine answered 4xx: the request, not the gateway, is at fault there, so it is told
    to the client as it was said (``upstream_status``; ``field`` and ``code`` as the upstream named them)."""

    def __init__(self, upstream_status: int, message: str, field: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        self.upstream_status = upstream_status
        self.field = field
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def context_exceeded(self) -> bool:
        """The upstream found the prompt too long for its context (its dialect names it so)."""
        return self.code == "context_length_exceeded"


class LoadFailed(DomainError):
    """The model's files are missing or the engine could not load them: retrying at once fails the same way.

    Its message often quotes an engine library's own exception, which names the files it read: each
    absolute path is cut to its last part (:func:`without_paths`).
    """

    def __init__(self, message: str) -> None:
        super().__init__(without_paths(message))


class EngineFailure(DomainError):
    """The engine failed while working on a request that was itself fine."""


class EngineBroken(EngineFailure):
    """The engine itself failed (its thread died, a step poisoned its state or never returned): every
    request on it fails, and the model is loaded afresh for the next one."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"The model's engine failed ({reason}); it is loaded again for the next request.")


class UpstreamFailed(EngineFailure):
    """No endpoint of an upstream model could answer: each failed (5xx, refused or broken connection) or
    was skipped while its circuit was open. Retrying later may succeed."""


class UpstreamTimeout(UpstreamFailed):
    """An upstream endpoint took longer than the model's timeouts allow."""
