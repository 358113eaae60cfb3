"""Deepgram pre-recorded transcription, ``POST /v1/listen``: the wire translation on its own, then the
real server through the newest Deepgram Python SDK and raw HTTP.

The audio is the gateway's own speech (piper), so what comes back must match the text that was spoken.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jiwer
import msgspec
import numpy as np
import pytest
from conftest import Gateway, base_config
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.errors import BadRequestError
from deepgram.types.listen_v1response import ListenV1Response

from backends.types import TranscriptionInfo, TranscriptWord
from compat.deepgram.formatting import Formatting, apply_formatting, to_numerals
from compat.deepgram.listen import (
    ChannelTranscript,
    ListenOptions,
    alternative,
    clean_word,
    listen_response,
    model_info,
    paragraphs_of,
    parse_listen_query,
    transcript_of,
    utterances_of,
    whisper_language,
    words_json,
)
from compat.errors import InvalidRequest, UnsupportedParameter
from compat.wire import ParamPolicy

FIRST = "The quick brown fox jumps over the lazy dog near the river bank."
SECOND = "Birds were singing in the tall trees."
RATE = 24000  # the gateway's speech rate
CORRUPT = "Bad Request: failed to process audio: corrupt or unsupported data"


def _wer(reference: str, hypothesis: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def _wav(samples: np.ndarray) -> bytes:
    """16-bit WAV of int16 samples, shape (n,) or (n, channels)."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.ascontiguousarray(frames, dtype="<i2").tobytes())
    return out.getvalue()


def _query(**params: str | list[str]) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in params.items()}


def _tw(word: str, start: float, end: float, p: float = 0.9) -> TranscriptWord:
    return TranscriptWord(word=word, start=start, end=end, probability=p)


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


# -- the wire translation, without a server --------------------------------------------------------


def test_query_defaults() -> None:
    options = parse_listen_query({}, ParamPolicy("reject"), default_model="nova-3")
    assert options == ListenOptions(model="nova-3")
    assert options.language == "en"  # Deepgram's default, not detection
    assert not options.punctuate and not options.paragraphs and options.utt_split == 0.8


def test_query_features() -> None:
    options = parse_listen_query(_query(
        model="nova-2", language="en-US", smart_format="true", utterances="true", utt_split="1.5",
        keywords=["SYN4PSE:2", "Litestar", "http://x"], keyterm=["Deepgram", "Litestar"], tag=["a", "b"],
        extra=["team:audio", "k:v:w"], multichannel="true", version="latest", tier="nova", mip_opt_out="true",
        interim_results="true", endpointing="300", utterance_end_ms="1000", vad_events="true", no_delay="true",
    ), ParamPolicy("reject"), default_model="nova-3")
    assert options.model == "nova-2" and options.language == "en"
    assert options.punctuate and options.paragraphs  # smart_format implies both
    assert options.utterances and options.utt_split == 1.5 and options.multichannel
    assert options.prompt == "SYN4PSE, Litestar, http://x, Deepgram"
    assert options.tags == ["a", "b"] and options.extra == {"team": "audio", "k": "v:w"}


@pytest.mark.parametrize(("tag", "expected"), [("en", "en"), ("en-GB", "en"), ("es-419", "es"), ("ZH-hant", "zh"),
                                               ("multi", None)])
def test_language_tags(tag: str, expected: str | None) -> None:
    assert whisper_language(tag) == expected


def test_language_multi_and_detection() -> None:
    multi = parse_listen_query(_query(language="multi"), ParamPolicy("reject"), default_model="m")
    assert multi.language is None and multi.multilingual
    for value in ("true", "en"):  # detect_language=en&detect_language=es names the candidates
        detect = parse_listen_query(_query(language="fr", detect_language=value), ParamPolicy("reject"),
                                    default_model="m")
        assert detect.language is None and detect.detect_language
    plain = parse_listen_query(_query(detect_language="false"), ParamPolicy("reject"), default_model="m")
    assert plain.language == "en"


def test_paragraphs_imply_punctuation() -> None:
    options = parse_listen_query(_query(paragraphs="true"), ParamPolicy("reject"), default_model="m")
    assert options.paragraphs and options.punctuate


def test_raw_encodings() -> None:
    raw = parse_listen_query(_query(encoding="linear16", sample_rate="16000.0", channels="2"), ParamPolicy("reject"),
                             default_model="m")
    assert (raw.encoding, raw.sample_rate, raw.channels) == ("linear16", 16000, 2)
    sniffed = parse_listen_query(_query(encoding="flac"), ParamPolicy("reject"), default_model="m")
    assert sniffed.encoding is None  # flac carries its own header


@pytest.mark.parametrize(("query", "param"), [
    (_query(encoding="linear16"), "sample_rate"),
    (_query(encoding="mulaw", sample_rate="100"), "sample_rate"),
    (_query(encoding="pcm_s24"), "encoding"),
    (_query(punctuate="yes"), "punctuate"),
    (_query(utt_split="-1"), "utt_split"),
    (_query(language="english!"), "language"),
    (_query(extra="novalue"), "extra"),
    (_query(alternatives="0"), "alternatives"),
])
def test_bad_values_are_400_naming_the_param(query: dict[str, list[str]], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_listen_query(query, ParamPolicy("drop"), default_model="m")  # values are checked even under drop
    assert info.value.param == param


@pytest.mark.parametrize(("name", "value"), [
    ("diarize", "true"), ("diarize_model", "latest"), ("redact", "pci"), ("search", "fox"), ("replace", "a:b"),
    ("measurements", "true"), ("summarize", "v2"), ("topics", "true"), ("intents", "true"), ("sentiment", "true"),
    ("detect_entities", "true"), ("callback", "https://example.com/hook"), ("alternatives", "2"),
    ("custom_topic", "sports"), ("custom_intent", "buy"),
])
def test_unimplemented_features_go_to_the_policy(name: str, value: str) -> None:
    with pytest.raises(UnsupportedParameter) as info:
        parse_listen_query(_query(**{name: value}), ParamPolicy("reject"), default_model="m")
    assert info.value.param == name
    dropping = ParamPolicy("drop")
    parse_listen_query(_query(**{name: value}), dropping, default_model="m")
    assert dropping.dropped == [name]


def test_features_turned_off_are_fine_and_unknown_params_are_not() -> None:
    policy = ParamPolicy("reject")
    parse_listen_query(_query(diarize="false", filler_words="false", redact="false", alternatives="1",
                              custom_topic_mode="strict", callback_method="PUT"), policy, default_model="m")
    assert policy.dropped == []
    with pytest.raises(InvalidRequest, match="frobnicate"):
        parse_listen_query(_query(frobnicate="1"), ParamPolicy("reject"), default_model="m")
    dropping = ParamPolicy("drop")
    parse_listen_query(_query(frobnicate="1", diarize="true"), dropping, default_model="m")
    assert dropping.dropped == ["frobnicate", "diarize"]


# What pipecat's DeepgramSTTService and LiveKit's deepgram.STT send by default (their recognize() and
# connect() option builders), and the Deepgram SDKs' own off switches.
PIPECAT_DEFAULTS = _query(model="nova-3-general", language="en", detect_entities="false", diarize="false",
                          dictation="false", numerals="false", punctuate="true", smart_format="false",
                          encoding="linear16", channels="1", multichannel="false", sample_rate="16000")
LIVEKIT_DEFAULTS = _query(model="nova-3", punctuate="true", detect_language="false", smart_format="false",
                          dictation="false", profanity_filter="false", numerals="false", mip_opt_out="false",
                          language="en-US", filler_words="true", tag=["app", "test"])


@pytest.mark.parametrize("query", [PIPECAT_DEFAULTS, LIVEKIT_DEFAULTS], ids=["pipecat", "livekit"])
def test_framework_defaults_are_accepted(query: dict[str, list[str]]) -> None:
    policy = ParamPolicy("reject")
    options = parse_listen_query(query, policy, default_model="m")
    assert policy.dropped == [] and options.punctuate
    assert options.formatting == Formatting(filler_words="filler_words" in query)


def test_formatting_flags_are_read() -> None:
    options = parse_listen_query(_query(numerals="true", profanity_filter="true", dictation="true",
                                        filler_words="true", tag="t", mip_opt_out="true"),
                                 ParamPolicy("reject"), default_model="m")
    assert options.formatting == Formatting(filler_words=True, dictation=True, numerals=True, profanity_filter=True)
    assert options.tags == ["t"]
    with pytest.raises(InvalidRequest) as info:
        parse_listen_query(_query(numerals="sometimes"), ParamPolicy("drop"), default_model="m")
    assert info.value.param == "numerals"


def _spoken(text: str, punctuate: bool = True) -> list[Any]:
    """``text`` as whisper would give it word by word, half a second per word."""
    return words_json([_tw(" " + t, i * 0.5, i * 0.5 + 0.4, 0.9 - i / 100) for i, t in enumerate(text.split())],
                      punctuate)


def _written(words: list[Any]) -> str:
    return transcript_of(words)


@pytest.mark.parametrize(("spoken", "digits"), [
    ("I am twenty five years old.", "I am 25 years old."),
    ("one hundred and three cats", "103 cats"),
    ("It costs three point five dollars", "It costs 3.5 dollars"),
    ("two thousand and ten or nineteen hundred eighty-four", "2010 or 1984"),
    ("one million two hundred thousand people", "1200000 people"),
    ("Call four one five, five five five, two three six eight.", "Call 415, 555, 2368."),
    ("twenty-one pilots and zero", "21 pilots and 0"),
    ("one two and three", "12 and 3"),
    ("seven, eleven", "7, 11"),
    ("twenty twenty", "20 20"),
    ("hundred and thousand", "hundred and thousand"),
    ("someone won", "someone won"),
    ("No one saw the one they love; one another", "No one saw the one they love; one another"),
    ("one cat and the one hundred", "1 cat and the 100"),
])
def test_numerals_written_as_digits(spoken: str, digits: str) -> None:
    words = _spoken(spoken)
    assert _written(to_numerals(words)) == digits


def test_a_number_keeps_its_words_times_and_lowest_confidence() -> None:
    words = _spoken("I am twenty five")
    number = to_numerals(words)[2]
    assert (number.word, number.punctuated_word) == ("25", "25")
    assert (number.start, number.end) == (words[2].start, words[3].end)
    assert number.confidence == min(words[2].confidence, words[3].confidence)
    assert [w.word for w in to_numerals(_spoken("twenty five", punctuate=False))] == ["25"]


def test_profanity_is_masked_as_deepgram_does() -> None:
    out = apply_formatting(_spoken("What the fuck, this is Bullshit. Hello!"), Formatting(profanity_filter=True))
    assert _written(out) == "What the f***, this is B*******. Hello!"
    assert [w.word for w in out][2] == "f***"
    assert _written(apply_formatting(_spoken("What the fuck"), Formatting())) == "What the fuck"


def test_dictation_turns_commands_into_marks() -> None:
    on = Formatting(dictation=True)
    assert _written(apply_formatting(_spoken("Hello, comma. How are you question, Mark? I am fine. Period."), on)) \
        == "Hello, how are you? I am fine."
    assert _written(apply_formatting(_spoken("Dear John, new line, thanks. Period. New paragraph. bye"), on)) \
        == "Dear John\nThanks.\n\nBye"
    assert [w.word for w in apply_formatting(_spoken("one comma two"), on)] == ["one", "two"]
    # Deepgram: dictation needs punctuation; without it the words stay as they are
    plain = _spoken("hello comma world", punctuate=False)
    assert [w.word for w in apply_formatting(plain, on)] == ["hello", "comma", "world"]


def test_filler_words_are_left_out_unless_asked_for() -> None:
    spoken = _spoken("Um, so we uh went home, um.")
    assert _written(apply_formatting(spoken, Formatting())) == "So we went home."
    assert _written(apply_formatting(spoken, Formatting(filler_words=True))) == "Um, so we uh went home, um."
    alt = alternative([_tw(" Uh,", 0, 0.2), _tw(" yes.", 0.3, 0.6)], punctuate=True)
    assert alt.transcript == "Yes." and len(alt.words) == 1


def test_default_config_names_every_deepgram_model_the_frameworks_use() -> None:
    import yaml

    config = yaml.safe_load((Path(__file__).parent.parent / "syn4pse.yaml").read_text())
    by_type: dict[str, set[str]] = {}
    for model in config["models"].values():
        by_type.setdefault(model["type"], set()).update(model.get("aliases", []))
    # pipecat DeepgramSTTService / Daily's transcription, LiveKit deepgram.STT and its fallback, the SDKs'
    # model lists
    assert {"nova-3", "nova-3-general", "nova-2-general", "nova-3-medical", "nova-2-phonecall", "nova-2",
            "nova-2-meeting", "nova-3-multilingual", "enhanced", "base"} <= by_type["stt"]
    # pipecat DeepgramTTSService, LiveKit deepgram.TTS, Deepgram's docs and voice-agent defaults
    assert {"aura-2-helena-en", "aura-2-andromeda-en", "aura-2-thalia-en", "aura-asteria-en"} <= by_type["tts"]


def test_words_follow_deepgram_conventions() -> None:
    whisper = [_tw(" Yep.", 5.52, 6.24), _tw(" I'll", 6.96, 7.28, 0.5), _tw(" well", 7.3, 7.5),
               _tw("-known", 7.5, 7.9, 0.4), _tw(" U.S.", 8.0, 8.4), _tw(" ...", 8.4, 8.5)]
    punctuated = words_json(whisper, punctuate=True)
    assert [(w.word, w.punctuated_word) for w in punctuated] == [
        ("yep", "Yep."), ("i'll", "I'll"), ("well-known", "well-known"), ("u.s", "U.S....")]
    glued = punctuated[2]
    assert (glued.start, glued.end, glued.confidence) == (7.3, 7.9, 0.4)
    plain = words_json(whisper, punctuate=False, offset=10.0)
    assert all(w.punctuated_word is None for w in plain)
    assert plain[0].start == 15.52
    assert "punctuated_word" not in json.loads(msgspec.json.encode(plain[0]))
    assert words_json([_tw(" -", 0, 0.1), _tw(" ok", 0.1, 0.2)], punctuate=True)[0].word == "ok"
    assert clean_word(' "Hello," ') == "hello"


def test_alternative_transcripts() -> None:
    whisper = [_tw(" Hello,", 0.0, 0.4, 0.8), _tw(" world.", 0.5, 0.9, 0.6)]
    plain = alternative(whisper, punctuate=False)
    assert plain.transcript == "hello world" and plain.confidence == pytest.approx(0.7)
    punct = alternative(whisper, punctuate=True, language="en")
    assert punct.transcript == "Hello, world." and punct.languages == ["en"]
    assert all(w.language == "en" for w in punct.words)
    empty = alternative([], punctuate=True, paragraphs=True)
    assert (empty.transcript, empty.confidence, empty.words) == ("", 0.0, [])
    assert empty.paragraphs is not None and empty.paragraphs.transcript == ""


def test_paragraphs_and_utterances_split_on_pauses() -> None:
    words = words_json([_tw(" One", 0.0, 0.3), _tw(" two.", 0.4, 0.7), _tw(" Three?", 0.8, 1.1),
                        _tw(" Four", 3.0, 3.3), _tw(" five!", 3.4, 3.7)], punctuate=True)
    paragraphs = paragraphs_of(words)
    assert paragraphs.transcript == "\nOne two. Three?\n\nFour five!"
    first, second = paragraphs.paragraphs
    assert [s.text for s in first.sentences] == ["One two.", "Three?"]
    assert (first.num_words, first.start, first.end) == (3, 0.0, 1.1)
    assert (second.num_words, second.start, second.end) == (2, 3.0, 3.7)

    utterances = utterances_of(words, channel=1)
    assert [u.transcript for u in utterances] == ["One two. Three?", "Four five!"]
    assert all(u.channel == 1 for u in utterances) and len({u.id for u in utterances}) == 2
    assert len(utterances_of(words, channel=0, utt_split=5.0)) == 1


def _built_response(**options: Any) -> dict[str, Any]:
    info = TranscriptionInfo(language="en", language_probability=0.98, duration=4.0)
    words = [_tw(" Hello,", 0.0, 0.4), _tw(" world.", 0.5, 0.9)]
    response = listen_response(
        [ChannelTranscript(info=info, words=words), ChannelTranscript(info=info, words=())],
        ListenOptions(model="nova-3", **options), request_id=str(uuid.uuid4()), sha256="ab" * 32,
        created="2025-06-22T16:50:01.511Z", duration=4.0, canonical="whisper",
        model=model_info("nova-3", "whisper", "faster_whisper"))
    result: dict[str, Any] = json.loads(msgspec.json.encode(response))
    return result


def test_response_has_the_shape_deepgram_sdks_need() -> None:
    body = _built_response(punctuate=True, paragraphs=True, utterances=True, detect_language=True,
                           tags=["t"], extra={"k": "v"})
    meta = body["metadata"]
    assert {"transaction_key", "request_id", "sha256", "created", "duration", "channels", "models",
            "model_info"} <= meta.keys()
    assert meta["transaction_key"] == "deprecated" and meta["channels"] == 2
    assert meta["tags"] == ["t"] and meta["extra"] == {"k": "v"}
    # Python SDK v3 reads model_info as Dict[str, ModelInfo]: each value must be an object.
    assert list(meta["model_info"]) == meta["models"]
    for value in meta["model_info"].values():
        assert isinstance(value, dict) and value == {"name": "nova-3", "version": "whisper", "arch": "faster_whisper"}
    first, second = body["results"]["channels"]
    assert first["detected_language"] == "en" and first["language_confidence"] == pytest.approx(0.98)
    alt = first["alternatives"][0]
    assert {"transcript", "confidence", "words", "paragraphs"} <= alt.keys()
    assert alt["words"][0] == {"word": "hello", "start": 0.0, "end": 0.4, "confidence": 0.9,
                               "punctuated_word": "Hello,"}
    assert second["alternatives"][0] == {"transcript": "", "confidence": 0.0, "words": [],
                                         "paragraphs": {"transcript": "", "paragraphs": []}}
    (utterance,) = body["results"]["utterances"]
    assert utterance.keys() == {"start", "end", "confidence", "channel", "transcript", "words", "id"}
    assert utterance["channel"] == 0
    assert None not in _walk(body)  # absent features are left out, never null
    parsed = ListenV1Response.model_validate(body)  # the v7 SDK's own model
    assert parsed.metadata.channels == 2 and parsed.results.utterances is not None


def test_response_leaves_out_what_was_not_asked_for() -> None:
    body = _built_response()
    assert "utterances" not in body["results"]
    assert "tags" not in body["metadata"] and "extra" not in body["metadata"]
    channel = body["results"]["channels"][0]
    assert channel.keys() == {"alternatives"}
    assert channel["alternatives"][0].keys() == {"transcript", "confidence", "words"}
    assert all("punctuated_word" not in w for w in channel["alternatives"][0]["words"])


# -- the real server --------------------------------------------------------------------------------


def _pcm(gateway: Gateway, text: str) -> np.ndarray:
    audio = gateway.openai().audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm")
    return np.frombuffer(audio.content, dtype="<i2")


@pytest.fixture(scope="module")
def speech(gateway: Gateway) -> np.ndarray:
    """Two sentences 1.5 s apart, 16-bit at 24 kHz."""
    return np.concatenate([_pcm(gateway, FIRST), np.zeros(int(1.5 * RATE), dtype="<i2"), _pcm(gateway, SECOND)])


@pytest.fixture(scope="module")
def speech_wav(speech: np.ndarray) -> bytes:
    return _wav(speech)


@pytest.fixture(scope="module")
def deepgram(gateway: Gateway) -> DeepgramClient:
    ws = gateway.url.replace("http://", "ws://")
    return DeepgramClient(api_key="test", environment=DeepgramClientEnvironment(
        base=gateway.url, production=ws, agent=ws, agent_rest=gateway.url))


def _listen(gateway: Gateway, body: bytes, params: Any = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/listen", params=params, content=body, timeout=120,
                      headers={"Authorization": "Token test", **(headers or {})})


def _check_words(words: list[dict[str, Any]], punctuated: bool) -> None:
    assert words
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    for w in words:
        assert 0 <= w["start"] <= w["end"] and 0 < w["confidence"] <= 1
        assert w["word"] == w["word"].lower() and w["word"] == w["word"].strip(".,?!")
        assert ("punctuated_word" in w) is punctuated


def test_sdk_transcribes_with_smart_format_and_utterances(deepgram: DeepgramClient, speech_wav: bytes) -> None:
    raw = deepgram.listen.v1.media.with_raw_response.transcribe_file(
        request=speech_wav, model="nova-3", smart_format=True, utterances=True, language="en-US")
    response = raw.data
    assert isinstance(response, ListenV1Response)
    body = raw._response.json()
    meta = response.metadata
    assert raw.headers["dg-request-id"] == meta.request_id and uuid.UUID(meta.request_id)
    assert meta.sha256 == hashlib.sha256(speech_wav).hexdigest()
    assert meta.channels == 1 and meta.duration == pytest.approx(len(speech_wav[44:]) / 2 / RATE, abs=0.05)
    assert meta.transaction_key == "deprecated" and meta.created.tzinfo is not None
    assert body["metadata"]["created"].endswith("Z")
    assert meta.model_info == {meta.models[0]: {"name": "nova-3", "version": "whisper", "arch": "faster_whisper"}}

    alt = body["results"]["channels"][0]["alternatives"][0]
    assert _wer(f"{FIRST} {SECOND}", alt["transcript"]) < 0.15, alt["transcript"]
    assert alt["transcript"][0].isupper() and alt["transcript"].endswith(".")
    assert alt["transcript"] == " ".join(w["punctuated_word"] for w in alt["words"])
    assert 0 < alt["confidence"] <= 1
    _check_words(alt["words"], punctuated=True)
    paragraphs = alt["paragraphs"]
    assert paragraphs["transcript"].startswith("\n") and len(paragraphs["paragraphs"]) == 2  # split at the pause
    assert sum(p["num_words"] for p in paragraphs["paragraphs"]) == len(alt["words"])

    utterances = body["results"]["utterances"]
    assert len(utterances) == 2
    assert _wer(FIRST, utterances[0]["transcript"]) < 0.15 and _wer(SECOND, utterances[1]["transcript"]) < 0.15
    assert utterances[0]["end"] + 0.8 <= utterances[1]["start"]
    assert all(u["channel"] == 0 and uuid.UUID(u["id"]) and u["words"][0]["punctuated_word"] for u in utterances)


def test_without_punctuation_words_and_transcript_are_plain(gateway: Gateway, speech_wav: bytes) -> None:
    response = _listen(gateway, speech_wav, {"model": "nova-2", "utterances": "true", "utt_split": "5"},
                       {"Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    body = response.json()
    ListenV1Response.model_validate(body)
    alt = body["results"]["channels"][0]["alternatives"][0]
    assert alt["transcript"] == " ".join(w["word"] for w in alt["words"])
    assert not re.search(r"[A-Z.,?!]", alt["transcript"])
    assert _wer(f"{FIRST} {SECOND}", alt["transcript"]) < 0.15
    assert "paragraphs" not in alt
    _check_words(alt["words"], punctuated=False)
    assert len(body["results"]["utterances"]) == 1  # utt_split=5 keeps the 1.5 s pause inside


@pytest.mark.parametrize("content_type", [None, "deepgram/audio+video", "audio/mpeg", "application/octet-stream"])
def test_any_content_type_but_json_is_audio(gateway: Gateway, content_type: str | None) -> None:
    mp3 = gateway.openai().audio.speech.create(model="tts-1", voice="alloy", input=FIRST,
                                               response_format="mp3").content
    request = httpx.Request("POST", f"{gateway.url}/v1/listen", params={"punctuate": "true"}, content=mp3,
                            headers={"Content-Type": content_type} if content_type else {})
    assert request.headers.get("content-type") == content_type  # none at all, as Deepgram's v3 SDK sends
    with httpx.Client(timeout=120) as http:
        response = http.send(request)
    assert response.status_code == 200, response.text
    assert response.headers["dg-request-id"] == response.json()["metadata"]["request_id"]
    alt = response.json()["results"]["channels"][0]["alternatives"][0]
    assert _wer(FIRST, alt["transcript"]) < 0.15
    _check_words(alt["words"], punctuated=True)


def test_raw_linear16(gateway: Gateway, speech: np.ndarray) -> None:
    response = _listen(gateway, speech.tobytes(), {"encoding": "linear16", "sample_rate": str(RATE)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["duration"] == pytest.approx(len(speech) / RATE, abs=0.05)
    assert _wer(f"{FIRST} {SECOND}", body["results"]["channels"][0]["alternatives"][0]["transcript"]) < 0.15


def test_wav_sent_with_a_raw_encoding_is_read_as_wav(gateway: Gateway, speech_wav: bytes) -> None:
    response = _listen(gateway, speech_wav, {"encoding": "linear16", "sample_rate": "8000"})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["duration"] == pytest.approx(len(speech_wav[44:]) / 2 / RATE, abs=0.05)


def _assert_speech_and_silence(body: dict[str, Any]) -> None:
    assert body["metadata"]["channels"] == 2
    speaking, silent = (c["alternatives"][0] for c in body["results"]["channels"])
    assert _wer(f"{FIRST} {SECOND}", speaking["transcript"]) < 0.15
    assert (silent["transcript"], silent["words"], silent["confidence"]) == ("", [], 0.0)


def test_multichannel_transcribes_each_channel(deepgram: DeepgramClient, gateway: Gateway,
                                               speech: np.ndarray) -> None:
    stereo = _wav(np.stack([speech, np.zeros_like(speech)], axis=1))
    raw = deepgram.listen.v1.media.with_raw_response.transcribe_file(request=stereo, model="nova-3", multichannel=True,
                                                                     utterances=True, punctuate=True)
    body = raw._response.json()
    _assert_speech_and_silence(body)
    assert body["results"]["utterances"] and all(u["channel"] == 0 for u in body["results"]["utterances"])

    mixed = _listen(gateway, stereo).json()  # without multichannel: one downmixed channel
    assert mixed["metadata"]["channels"] == 1 and len(mixed["results"]["channels"]) == 1
    assert _wer(f"{FIRST} {SECOND}", mixed["results"]["channels"][0]["alternatives"][0]["transcript"]) < 0.15

    interleaved = np.stack([speech, np.zeros_like(speech)], axis=1).tobytes()
    raw_stereo = _listen(gateway, interleaved, {"encoding": "linear16", "sample_rate": str(RATE), "channels": "2",
                                                "multichannel": "true"})
    assert raw_stereo.status_code == 200, raw_stereo.text
    _assert_speech_and_silence(raw_stereo.json())


def test_detect_language_keywords_tags_and_extra(gateway: Gateway, speech_wav: bytes) -> None:
    response = _listen(gateway, speech_wav, [
        ("model", "base"), ("detect_language", "true"), ("keywords", "fox:2"), ("keyterm", "river bank"),
        ("tag", "first"), ("tag", "second"), ("extra", "team:audio"), ("mip_opt_out", "true"),
        ("interim_results", "true"), ("endpointing", "300")])
    assert response.status_code == 200, response.text
    body = response.json()
    channel = body["results"]["channels"][0]
    assert channel["detected_language"] == "en" and 0.5 < channel["language_confidence"] <= 1
    assert body["metadata"]["tags"] == ["first", "second"] and body["metadata"]["extra"] == {"team": "audio"}
    assert next(iter(body["metadata"]["model_info"].values()))["name"] == "base"
    assert _wer(f"{FIRST} {SECOND}", channel["alternatives"][0]["transcript"]) < 0.15


@pytest.mark.parametrize(("body", "params", "headers", "status", "needle"), [
    (b"this is not audio at all" * 40, {}, {}, 400, None),
    (b"", {}, {}, 400, None),
    (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", {}, {"Content-Type": "audio/wav"}, 400, None),
    (b'{"url": "https://example.com/a.wav"}', {}, {}, 400, None),  # JSON without the JSON Content-Type is audio
    (b'{"url": "https://example.com/a.wav"}', {}, {"Content-Type": "application/json"}, 400, "'url'"),
    (b'{"uri": "x"}', {}, {"Content-Type": "application/json; charset=utf-8"}, 400, "'url'"),
    (b"x", {"model": "nova-9"}, {}, 404, "nova-9"),
    (b"x", {"diarize": "true"}, {}, 400, "'diarize'"),
    (b"x", {"frobnicate": "1"}, {}, 400, "'frobnicate'"),
    (b"x", {"encoding": "linear16"}, {}, 400, "'sample_rate'"),
    (b"x", {"punctuate": "maybe"}, {}, 400, "'punctuate'"),
    (b"x", {"model": "tts-1"}, {}, 400, "not a speech-to-text model"),
])
def test_errors_in_deepgram_shape(gateway: Gateway, body: bytes, params: dict[str, str], headers: dict[str, str],
                                  status: int, needle: str | None) -> None:
    response = _listen(gateway, body, params, headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert error.keys() == {"err_code", "err_msg", "request_id"}
    assert response.headers["dg-request-id"] == error["request_id"]
    assert error["err_code"] == {400: "Bad Request", 404: "Not Found"}[status]
    if needle is None:
        assert error["err_msg"] == CORRUPT
    else:
        assert needle in error["err_msg"]
        if status == 400:
            assert error["err_msg"].startswith("Bad Request: ")


def test_remote_urls_are_refused_through_the_sdk(deepgram: DeepgramClient) -> None:
    with pytest.raises(BadRequestError) as info:
        deepgram.listen.v1.media.transcribe_url(url="https://example.com/audio.wav", model="nova-3")
    assert "url" in info.value.body["err_msg"] and "disabled" in info.value.body["err_msg"]


def test_sdk_sees_bad_audio_as_bad_request(deepgram: DeepgramClient) -> None:
    with pytest.raises(BadRequestError) as info:
        deepgram.listen.v1.media.transcribe_file(request=b"\x00\x01garbage" * 100, model="nova-3")
    assert info.value.body["err_msg"] == CORRUPT and info.value.headers is not None
    assert info.value.headers["dg-request-id"] == info.value.body["request_id"]


def test_oversized_upload_is_413(gateway: Gateway) -> None:
    response = _listen(gateway, b"\x00" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["err_code"] == "Payload Too Large" and "dg-request-id" in response.headers


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("listen-drop"), base_config(extra_server="  unsupported_params: drop\n"))
    gw.start()
    yield gw
    gw.stop()


def test_drop_policy_answers_and_reports_what_it_dropped(dropping: Gateway, speech_wav: bytes) -> None:
    response = _listen(dropping, speech_wav, {"diarize": "true", "frobnicate": "1", "redact": "pci"})
    assert response.status_code == 200, response.text
    dropped = {p.strip() for p in response.headers["x-syn4pse-dropped-params"].split(",")}
    assert dropped == {"diarize", "frobnicate", "redact"}
    words = response.json()["results"]["channels"][0]["alternatives"][0]["words"]
    assert words and all("speaker" not in w for w in words)


DICTATED = "Hello comma how are you question mark I have twenty five apples. This is bullshit."


@pytest.fixture(scope="module")
def dictated_wav(gateway: Gateway) -> bytes:
    return _wav(_pcm(gateway, DICTATED))


def test_sdk_formatting_flags_are_honoured(deepgram: DeepgramClient, dictated_wav: bytes) -> None:
    plain = deepgram.listen.v1.media.transcribe_file(request=dictated_wav, model="nova-3-general", punctuate=True)
    formatted = deepgram.listen.v1.media.transcribe_file(
        request=dictated_wav, model="nova-3-general", punctuate=True, dictation=True, numerals=True,
        profanity_filter=True, filler_words=False, mip_opt_out=True, tag=["voice-app"])
    before = plain.results.channels[0].alternatives[0].transcript
    after = formatted.results.channels[0].alternatives[0].transcript
    assert "comma" in before.lower() and "bullshit" in before.lower(), before  # what whisper wrote
    assert "comma" not in after.lower() and "question" not in after.lower(), after
    assert after.startswith("Hello, how are you?"), after
    assert "25" in after and "b*******" in after and "bullshit" not in after.lower(), after
    assert formatted.metadata.tags == ["voice-app"]
    words = formatted.results.channels[0].alternatives[0].words
    assert "b*******" in [w.word for w in words] and "comma" not in [w.word for w in words]


@pytest.mark.parametrize("model", ["nova-3-general", "nova-2-general", "nova-3-medical", "nova-2-phonecall"])
def test_framework_default_models_transcribe(gateway: Gateway, speech_wav: bytes, model: str) -> None:
    response = _listen(gateway, speech_wav, {"model": model, **{k: v[-1] for k, v in PIPECAT_DEFAULTS.items()
                                                               if k not in ("model", "encoding", "sample_rate")}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert next(iter(body["metadata"]["model_info"].values()))["name"] == model
    assert _wer(f"{FIRST} {SECOND}", body["results"]["channels"][0]["alternatives"][0]["transcript"]) < 0.15
