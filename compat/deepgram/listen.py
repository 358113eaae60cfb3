"""Deepgram's pre-recorded ``/v1/listen``: query parameters in, the transcription JSON out.

Pure translation, no I/O: the query string becomes :class:`ListenOptions`; whisper's words become
Deepgram's words, alternatives, paragraphs and utterances. The live WebSocket builds its ``Results``
from the same pieces (:func:`words_json`, :func:`alternative`, :func:`model_info`), so both endpoints
word and time a transcript the same way.

Deepgram's conventions followed here: ``word`` is always lower case without punctuation and
``punctuated_word`` (present only with punctuation on) is the word as written; ``transcript`` is the
words joined by spaces, punctuated or not likewise; times are seconds from the start of the audio.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

import msgspec

from backends.audio import ENCODINGS
from backends.audio_answers import ChannelTranscript
from backends.types import TranscriptWord
from compat.deepgram.common import ModelInfo, Word, flag, model_uuid, number, one
from compat.deepgram.formatting import Formatting, apply_formatting, formatting_of, written_form
from compat.errors import InvalidRequest
from compat.wire import ParamPolicy

__all__ = [
    "DEFAULT_UTT_SPLIT",
    "UNAVAILABLE_TOGGLES",
    "UNAVAILABLE_VALUED",
    "Alternative",
    "Channel",
    "ChannelTranscript",
    "ListenMetadata",
    "ListenOptions",
    "ListenResponse",
    "ListenResults",
    "Paragraph",
    "Paragraphs",
    "Sentence",
    "Utterance",
    "Word",
    "alternative",
    "clean_word",
    "listen_response",
    "model_info",
    "paragraphs_of",
    "parse_listen_query",
    "screen_features",
    "transcript_of",
    "utterances_of",
    "whisper_language",
    "words_json",
]

DEFAULT_UTT_SPLIT = 0.8
"""Seconds of silence between words that end an utterance (Deepgram's default ``utt_split``)."""
PARAGRAPH_PAUSE = 1.0
"""Seconds of silence before a sentence that start a new paragraph."""
PARAGRAPH_WORDS = 50
"""A paragraph this long ends at its next sentence end, pause or not."""

# -- wire structs ----------------------------------------------------------------------------------
# omit_defaults: optional members (None) are left out, as Deepgram leaves out features not asked for.


class Sentence(msgspec.Struct):
    text: str
    start: float
    end: float


class Paragraph(msgspec.Struct):
    sentences: list[Sentence]
    num_words: int
    start: float
    end: float


class Paragraphs(msgspec.Struct):
    transcript: str
    paragraphs: list[Paragraph]


class Alternative(msgspec.Struct, omit_defaults=True):
    transcript: str
    confidence: float
    words: list[Word]
    paragraphs: Paragraphs | None = None
    languages: list[str] | None = None


class Channel(msgspec.Struct, omit_defaults=True):
    alternatives: list[Alternative]
    detected_language: str | None = None
    language_confidence: float | None = None


class Utterance(msgspec.Struct):
    start: float
    end: float
    confidence: float
    channel: int
    transcript: str
    words: list[Word]
    id: str


class ListenResults(msgspec.Struct, omit_defaults=True):
    channels: list[Channel]
    utterances: list[Utterance] | None = None


class ListenMetadata(msgspec.Struct, omit_defaults=True):
    # No defaults on the members Deepgram always sends: omit_defaults must never drop them.
    transaction_key: str
    request_id: str
    sha256: str
    created: str
    duration: float
    channels: int
    models: list[str]
    model_info: dict[str, ModelInfo]
    """Model uuid → object; Deepgram's Python SDK v3 fails on anything but an object here."""
    tags: list[str] | None = None
    extra: dict[str, str] | None = None


class ListenResponse(msgspec.Struct):
    metadata: ListenMetadata
    results: ListenResults


# -- query parameters ------------------------------------------------------------------------------


class ListenOptions(msgspec.Struct, kw_only=True):
    """What a ``/v1/listen`` query asks for, in the gateway's terms."""

    model: str
    language: str | None = "en"
    """ISO-639-1 code for whisper; None detects it. Deepgram assumes English when none is given."""
    multilingual: bool = False
    """``language=multi``: words and alternatives report the language detected."""
    detect_language: bool = False
    punctuate: bool = False
    """Punctuated ``transcript`` and ``punctuated_word``: punctuate, smart_format or paragraphs."""
    paragraphs: bool = False
    utterances: bool = False
    utt_split: float = DEFAULT_UTT_SPLIT
    multichannel: bool = False
    prompt: str | None = None
    """Keywords and key terms, as a hint for whisper's decoder."""
    encoding: str | None = None
    """A headerless encoding (``backends.audio.ENCODINGS``); None: the container is sniffed."""
    sample_rate: int | None = None
    channels: int = 1
    tags: list[str] = msgspec.field(default_factory=list)
    extra: dict[str, str] = msgspec.field(default_factory=dict)
    formatting: Formatting = msgspec.field(default_factory=Formatting)
    """filler_words, dictation, numerals, profanity_filter (``compat.deepgram.formatting``)."""


_SUPPORTED = frozenset({
    "model", "language", "detect_language", "punctuate", "smart_format", "paragraphs", "utterances",
    "utt_split", "multichannel", "keywords", "keyterm", "encoding", "sample_rate", "channels", "tag", "extra",
    "filler_words", "dictation", "numerals", "profanity_filter",
})
# Accepted without effect: Deepgram itself ignores these on pre-recorded audio, or they only tune a
# feature that is off (callback_method without callback), or bias what whisper decides anyway.
_IGNORED = frozenset({
    "version", "tier", "mip_opt_out", "callback_method", "custom_topic_mode", "custom_intent_mode", "language_hint",
    # streaming-only: not part of the pre-recorded API
    "interim_results", "endpointing", "utterance_end_ms", "vad_events", "no_delay",
})
# Boolean features this server does not implement: only ``true`` goes to the policy.
UNAVAILABLE_TOGGLES = {
    "diarize": "speaker diarization is not available",
    "measurements": "measurement formatting is not available",
    "topics": "topic detection is not available",
    "detect_topics": "topic detection is not available",
    "intents": "intent recognition is not available",
    "sentiment": "sentiment analysis is not available",
    "detect_entities": "entity detection is not available",
}
# Valued features this server does not implement: any value but ``false`` goes to the policy.
UNAVAILABLE_VALUED = {
    "diarize_model": "speaker diarization is not available",
    "diarize_version": "speaker diarization is not available",
    "redact": "redaction is not available",
    "search": "search is not available",
    "replace": "term replacement is not available",
    "summarize": "summaries are not available",
    "custom_topic": "topic detection is not available",
    "custom_intent": "intent recognition is not available",
    "callback": "asynchronous callbacks are not available; the transcript is returned in the response",
}
# Encodings Deepgram accepts that come inside a container (or a self-describing stream) here.
_SNIFFED_ENCODINGS = frozenset({"flac", "opus", "ogg-opus", "mp3", "aac", "amr-nb", "amr-wb", "speex", "g729"})
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_TRUE_FALSE = ("true", "false", "1", "0", "")


def whisper_language(tag: str) -> str | None:
    """BCP-47 ``en-US`` → whisper's ``en``; ``multi`` → None (detect). Whisper codes are the primary subtag."""
    tag = tag.strip()
    if tag.lower() == "multi":
        return None
    if not _LANGUAGE_TAG.match(tag):
        raise InvalidRequest(f"'language' must be a BCP-47 tag such as en or en-US, or multi; got '{tag}'.",
                             param="language")
    return tag.split("-")[0].lower()


def _keyword(value: str) -> str:
    """``word:boost`` → ``word``: whisper takes no boosts. A colon that is part of the word stays."""
    term, sep, boost = value.rpartition(":")
    if sep:
        try:
            float(boost)
        except ValueError:
            return value.strip()
        return term.strip()
    return value.strip()


def _prompt(query: Mapping[str, Sequence[str]]) -> str | None:
    terms: list[str] = []
    for term in [*(_keyword(v) for v in query.get("keywords", ())), *(v.strip() for v in query.get("keyterm", ()))]:
        if term and term not in terms:
            terms.append(term)
    return ", ".join(terms) or None


def _extra(values: Sequence[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition(":")
        if not sep or not key:
            raise InvalidRequest(f"'extra' takes key:value pairs; got '{value}'.", param="extra")
        extra[key] = rest
    return extra


def screen_features(query: Mapping[str, Sequence[str]], policy: ParamPolicy, accepted: frozenset[str],
                    toggles: Mapping[str, str]) -> None:
    """Apply the policy to every parameter outside ``accepted``: a feature turned off is fine, one turned
    on that is not available here (``toggles``: name → why) goes to the policy, an unknown name too."""
    for name, values in query.items():
        if name in accepted:
            continue
        if name in toggles:
            if flag(query, name):
                policy.unsupported(name, toggles[name])
        elif name in UNAVAILABLE_VALUED:
            if any(v.strip().lower() != "false" for v in values):
                policy.unsupported(name, UNAVAILABLE_VALUED[name])
        elif name == "alternatives":
            if number(query, name, 1, low=1, high=10) > 1:
                policy.unsupported(name, "one alternative is returned")
        else:
            policy.unknown(name)


def _screen(query: Mapping[str, Sequence[str]], policy: ParamPolicy) -> None:
    screen_features(query, policy, _SUPPORTED | _IGNORED, UNAVAILABLE_TOGGLES)


def parse_listen_query(query: Mapping[str, Sequence[str]], policy: ParamPolicy, *,
                       default_model: str) -> ListenOptions:
    """Validate a ``/v1/listen`` query string (name → repeated values) into :class:`ListenOptions`."""
    _screen(query, policy)
    options = ListenOptions(model=one(query, "model") or default_model)
    language = one(query, "language")
    if language:
        options.language = whisper_language(language)
        options.multilingual = options.language is None
    detect = one(query, "detect_language")
    # detect_language=true, or detect_language=en&detect_language=es (the languages to pick from:
    # whisper cannot be narrowed, it just detects).
    if detect is not None and (detect.strip().lower() not in _TRUE_FALSE or flag(query, "detect_language")):
        options.detect_language = True
        options.language = None
    smart_format = flag(query, "smart_format")
    options.paragraphs = flag(query, "paragraphs") or smart_format
    options.punctuate = flag(query, "punctuate") or smart_format or options.paragraphs
    options.utterances = flag(query, "utterances")
    options.utt_split = number(query, "utt_split", DEFAULT_UTT_SPLIT, low=0.0, high=60.0)
    options.multichannel = flag(query, "multichannel")
    options.prompt = _prompt(query)
    options.tags = [t for t in query.get("tag", ()) if t]
    options.extra = _extra(query.get("extra", ()))
    options.formatting = formatting_of(query)

    encoding = one(query, "encoding")
    if encoding is not None:
        encoding = encoding.strip().lower()
        if encoding in ENCODINGS:
            if one(query, "sample_rate") is None:
                raise InvalidRequest(f"'sample_rate' is required with encoding={encoding}.", param="sample_rate")
            options.encoding = encoding
            options.sample_rate = int(number(query, "sample_rate", 0, low=8000, high=192000))
            options.channels = int(number(query, "channels", 1, low=1, high=32))
        elif encoding not in _SNIFFED_ENCODINGS:
            known = ", ".join([*ENCODINGS, *sorted(_SNIFFED_ENCODINGS)])
            raise InvalidRequest(f"'encoding' must be one of {known}; got '{encoding}'.", param="encoding")
    return options


# -- words, alternatives, paragraphs, utterances ---------------------------------------------------

_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")
_SENTENCE_END = re.compile(r"[.?!…][\"'”’)\]]*$")


def clean_word(text: str) -> str:
    """Deepgram's ``word``: lower case, without the punctuation around it (``"Yep."`` → ``yep``)."""
    return _EDGE_PUNCTUATION.sub("", text.strip()).lower()


def _t(seconds: float) -> float:
    return round(seconds, 3)


def words_json(words: Sequence[TranscriptWord], punctuate: bool, *, offset: float = 0.0,
               language: str | None = None) -> list[Word]:
    """Whisper's words as Deepgram's, ``offset`` seconds added to their times.

    Whisper starts each word with a space. A piece that is only punctuation (`` ...``), or has no
    space and starts with punctuation (``-known``), belongs to the word before it; with no word before
    it, it is dropped: Deepgram never sends an empty ``word``.
    """
    out: list[Word] = []
    written: list[str] = []  # the punctuated text of each word in ``out``
    for w in words:
        text = w.word
        stripped = text.strip()
        if not stripped:
            continue
        plain = clean_word(stripped)
        if out and (not plain or (not text[0].isspace() and not stripped[0].isalnum())):
            prev = out[-1]
            written[-1] += stripped
            out[-1] = Word(word=clean_word(written[-1]), start=prev.start, end=_t(max(prev.end, w.end + offset)),
                           confidence=min(prev.confidence, w.probability),
                           punctuated_word=written[-1] if punctuate else None, language=prev.language)
            continue
        if not plain:
            continue
        written.append(stripped)
        out.append(Word(word=plain, start=_t(w.start + offset), end=_t(w.end + offset), confidence=w.probability,
                        punctuated_word=stripped if punctuate else None, language=language))
    return out


def transcript_of(words: Sequence[Word]) -> str:
    """The words joined by spaces (none after a dictated line break): punctuated when they carry
    ``punctuated_word``."""
    text = ""
    for w in words:
        text += written_form(w) if not text or text.endswith("\n") else " " + written_form(w)
    return text


def _confidence(words: Sequence[Word]) -> float:
    return sum(w.confidence for w in words) / len(words) if words else 0.0


def paragraphs_of(words: Sequence[Word]) -> Paragraphs:
    """Sentences end at ``.?!``; a paragraph ends before a sentence that follows a pause, or once long."""
    sentences: list[list[Word]] = []
    current: list[Word] = []
    for w in words:
        current.append(w)
        if _SENTENCE_END.search(written_form(w)):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)

    grouped: list[list[list[Word]]] = []
    for sentence in sentences:
        if grouped:
            last = grouped[-1]
            length = sum(len(s) for s in last)
            if sentence[0].start - last[-1][-1].end < PARAGRAPH_PAUSE and length < PARAGRAPH_WORDS:
                last.append(sentence)
                continue
        grouped.append([sentence])

    paragraphs = [Paragraph(sentences=[Sentence(text=transcript_of(s), start=s[0].start, end=s[-1].end) for s in p],
                            num_words=sum(len(s) for s in p), start=p[0][0].start, end=p[-1][-1].end)
                  for p in grouped]
    text = "\n\n".join(" ".join(s.text for s in p.sentences) for p in paragraphs)
    return Paragraphs(transcript=f"\n{text}" if text else "", paragraphs=paragraphs)


def alternative(words: Sequence[TranscriptWord], *, punctuate: bool, paragraphs: bool = False,
                offset: float = 0.0, language: str | None = None,
                formatting: Formatting | None = None) -> Alternative:
    """One ``alternatives[]`` entry: transcript, confidence (mean word probability) and words.

    ``language`` (``language=multi``) tags every word and fills ``languages``; ``formatting`` (Deepgram's
    default when None: filler words left out) rewrites the words first.
    """
    built = apply_formatting(words_json(words, punctuate, offset=offset, language=language),
                             formatting or Formatting())
    return Alternative(transcript=transcript_of(built), confidence=_confidence(built), words=built,
                       paragraphs=paragraphs_of(built) if paragraphs else None,
                       languages=[language] if language is not None and built else None)


def utterances_of(words: Sequence[Word], *, channel: int, utt_split: float = DEFAULT_UTT_SPLIT) -> list[Utterance]:
    """Runs of words with no gap of ``utt_split`` seconds or more between them."""
    runs: list[list[Word]] = []
    for w in words:
        if runs and w.start - runs[-1][-1].end < utt_split:
            runs[-1].append(w)
        else:
            runs.append([w])
    return [Utterance(start=run[0].start, end=run[-1].end, confidence=_confidence(run), channel=channel,
                      transcript=transcript_of(run), words=run, id=str(uuid.uuid4())) for run in runs]


def model_info(requested: str, canonical: str, arch: str) -> ModelInfo:
    """``model_info`` of a served model: the name the client asked for, the local model as the version,
    the engine as the architecture."""
    return ModelInfo(name=requested, version=canonical, arch=arch)


def listen_response(channels: Sequence[ChannelTranscript], options: ListenOptions, *, request_id: str, sha256: str,
                    created: str, duration: float, model: ModelInfo, canonical: str) -> ListenResponse:
    """The whole ``/v1/listen`` answer: one ``results.channels[]`` entry per transcribed channel."""
    entries: list[Channel] = []
    utterances: list[Utterance] = []
    for index, transcript in enumerate(channels):
        info = transcript.info
        alt = alternative(transcript.words, punctuate=options.punctuate, paragraphs=options.paragraphs,
                          language=info.language if options.multilingual else None, formatting=options.formatting)
        entry = Channel(alternatives=[alt])
        if options.detect_language:
            entry.detected_language = info.language
            entry.language_confidence = info.language_probability
        entries.append(entry)
        if options.utterances:
            utterances += utterances_of(alt.words, channel=index, utt_split=options.utt_split)
    uid = model_uuid(canonical)
    metadata = ListenMetadata(
        transaction_key="deprecated", request_id=request_id, sha256=sha256, created=created,
        duration=round(duration, 6), channels=len(channels), models=[uid], model_info={uid: model},
        tags=options.tags or None, extra=options.extra or None)
    if options.utterances:
        utterances.sort(key=lambda u: (u.start, u.channel))
    return ListenResponse(metadata=metadata,
                          results=ListenResults(channels=entries, utterances=utterances if options.utterances
                                                else None))
