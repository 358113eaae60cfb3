"""Deepgram's text-formatting flags, applied to the words of a transcript after whisper.

``filler_words``, ``dictation``, ``numerals`` and ``profanity_filter`` change only how the words are
written, so they are honoured here on Deepgram ``Word`` lists, for ``/v1/listen`` (REST) and the live
socket alike, in that order:

* ``filler_words=false`` (Deepgram's default) leaves out "uh", "um" and their kin; ``true`` keeps the
  ones the engine wrote (whisper rarely writes them, so ``true`` cannot make them appear).
* ``dictation=true`` with punctuation on turns spoken commands ("comma", "period", "new line", …) into
  the marks they name; without punctuation it has no effect, as with Deepgram.
* ``numerals=true`` writes spelled-out cardinal numbers as digits ("twenty five" → ``25``,
  "one hundred and three" → ``103``, "three point five" → ``3.5``, "four one five" → ``415``; "no one"
  and "the one" stay words).
* ``profanity_filter=true`` masks a list of profanities as Deepgram does: the first letter, then one
  asterisk per remaining letter.

A merged word (a number of several words) keeps the first word's start, the last word's end and the
lowest confidence.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

import msgspec

from compat.deepgram.common import Word, flag

__all__ = ["FORMATTING_FLAGS", "Formatting", "apply_formatting", "formatting_of", "to_numerals", "written_form"]

FORMATTING_FLAGS = ("filler_words", "dictation", "numerals", "profanity_filter")
"""The query parameters :func:`formatting_of` reads."""


class Formatting(msgspec.Struct, frozen=True):
    filler_words: bool = False
    dictation: bool = False
    numerals: bool = False
    profanity_filter: bool = False


def formatting_of(query: Mapping[str, Sequence[str]]) -> Formatting:
    return Formatting(filler_words=flag(query, "filler_words"), dictation=flag(query, "dictation"),
                      numerals=flag(query, "numerals"), profanity_filter=flag(query, "profanity_filter"))


# -- shared helpers --------------------------------------------------------------------------------

_LEAD = re.compile(r"^[^\w']+")
_TRAIL = re.compile(r"[^\w']+$")
_TERMINAL = ".?!"


def written_form(word: Word) -> str:
    """The word as the transcript shows it: punctuated when punctuation is on."""
    return word.punctuated_word if word.punctuated_word is not None else word.word


def _trail(text: str) -> str:
    match = _TRAIL.search(text)
    return match.group(0) if match else ""


def _lead(text: str) -> str:
    match = _LEAD.search(text)
    return match.group(0) if match else ""


def _capitalised(text: str) -> str:
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1:]
    return text


def _lowered(text: str) -> str:
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.lower() + text[i + 1:]
    return text


def _with_punctuated(word: Word, text: str) -> Word:
    return msgspec.structs.replace(word, punctuated_word=text) if word.punctuated_word is not None else word


# -- filler words ----------------------------------------------------------------------------------

_FILLERS = frozenset({"uh", "uhh", "uhm", "um", "umm", "erm", "mhm", "hmm", "mm"})


def _drop_fillers(words: Sequence[Word]) -> list[Word]:
    out: list[Word] = []
    capitalise = False
    for w in words:
        if w.word in _FILLERS:
            trail = _trail(written_form(w)).strip()
            if out and trail and trail[-1] in _TERMINAL and out[-1].punctuated_word is not None:
                # "…so, um." : the sentence end moves to the word before
                prev = out[-1]
                out[-1] = _with_punctuated(prev, _TRAIL.sub("", prev.punctuated_word or "") + trail[-1])
            written = written_form(w)
            capitalise = capitalise or (w.punctuated_word is not None and written[:1].isupper())
            continue
        if capitalise and w.punctuated_word is not None:
            w = _with_punctuated(w, _capitalised(w.punctuated_word))
        capitalise = False
        out.append(w)
    return out


# -- dictation -------------------------------------------------------------------------------------

_COMMANDS: dict[tuple[str, ...], str] = {
    ("new", "paragraph"): "\n\n",
    ("new", "line"): "\n",
    ("question", "mark"): "?",
    ("exclamation", "point"): "!",
    ("exclamation", "mark"): "!",
    ("full", "stop"): ".",
    ("period",): ".",
    ("comma",): ",",
    ("colon",): ":",
    ("semicolon",): ";",
    ("semi", "colon"): ";",
}
_LONGEST = max(len(k) for k in _COMMANDS)


def _command_at(words: Sequence[Word], i: int) -> tuple[int, str] | None:
    for n in range(_LONGEST, 0, -1):
        symbol = _COMMANDS.get(tuple(w.word for w in words[i:i + n]))
        if symbol is not None and len(words[i:i + n]) == n:
            return n, symbol
    return None


def _dictate(words: Sequence[Word]) -> list[Word]:
    out: list[Word] = []
    after: str | None = None  # the mark last written, until the next word
    engine_broke = False  # whisper ended a sentence at the command (so capitalised what follows)
    i = 0
    while i < len(words):
        found = _command_at(words, i)
        if found is None:
            w = words[i]
            i += 1
            written = w.punctuated_word
            if after is not None and written is not None:
                if after in (".", "?", "!") or after.endswith("\n"):
                    w = _with_punctuated(w, _capitalised(written))
                elif engine_broke and w.word != "i" and not w.word.startswith("i'"):
                    w = _with_punctuated(w, _lowered(written))
            after = None
            out.append(w)
            continue
        n, symbol = found
        engine_broke = any(c in _TERMINAL for c in _trail(written_form(words[i + n - 1])))
        i += n
        if not out:
            continue  # nothing to attach the mark to
        prev = out[-1]
        written = prev.punctuated_word or prev.word
        # the engine's own mark gives way to the dictated one; a dictated one stays ("period, new line")
        base = written if after is not None else _TRAIL.sub("", written)
        out[-1] = msgspec.structs.replace(prev, punctuated_word=base + symbol)
        after = symbol
    return out


# -- numerals --------------------------------------------------------------------------------------

_UNITS = {name: value for value, name in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"))}
_TENS = {name: 10 * (value + 2) for value, name in enumerate((
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"))}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_NUMBER_WORDS = frozenset({*_UNITS, *_TENS, *_SCALES, "hundred"})


def _tokens(word: str) -> list[str] | None:
    """A word's number tokens, or None: ``twenty-five`` is two tokens, other hyphenations none."""
    if word in _NUMBER_WORDS:
        return [word]
    tens, sep, unit = word.partition("-")
    if sep and tens in _TENS and unit in _UNITS and 1 <= _UNITS[unit] <= 9:
        return [tens, unit]
    return None


class _Cardinal:
    """A cardinal number read token by token; :meth:`take` says whether a token continues it."""

    def __init__(self) -> None:
        self.total = 0
        self.group = 0  # the part below the last scale word
        self.below_hundred = 0
        self.has_hundred = False
        self.last_scale: int | None = None
        self.tokens = 0

    def take(self, token: str) -> bool:
        if token in _UNITS:
            value = _UNITS[token]
            has_tens = self.below_hundred >= 20
            if (self.below_hundred and not (has_tens and self.below_hundred % 10 == 0 and 1 <= value <= 9)) or (
                    value == 0 and self.tokens):
                return False
            self.below_hundred += value
            self.group += value
        elif token in _TENS:
            if self.below_hundred:
                return False
            self.below_hundred = _TENS[token]
            self.group += self.below_hundred
        elif token == "hundred":
            if self.has_hundred or not 1 <= self.group <= 99:
                return False
            self.group *= 100
            self.has_hundred = True
            self.below_hundred = 0
        else:
            scale = _SCALES[token]
            if not self.group or (self.last_scale is not None and scale >= self.last_scale):
                return False
            self.total += self.group * scale
            self.group = self.below_hundred = 0
            self.has_hundred = False
            self.last_scale = scale
        self.tokens += 1
        return True

    def can_take_and(self) -> bool:
        """"one hundred and five", "two thousand and ten": ``and`` only after hundred or a scale."""
        return self.tokens > 0 and not self.below_hundred and (self.has_hundred or self.last_scale is not None)

    @property
    def value(self) -> int:
        return self.total + self.group


def to_numerals(words: Sequence[Word]) -> list[Word]:
    """Runs of number words as digits; every other word as it was."""
    out: list[Word] = []
    i = 0
    while i < len(words):
        end, text = _read_number(words, i)
        if end == i or (end == i + 1 and _pronoun_one(words, i)):
            out.append(words[i])
            i += 1
            continue
        if end == i + 1 and _single_digit_word(words[i]):
            # single digits said one by one ("four one five") are one digit string
            while (not _trail(written_form(words[end - 1])) and end < len(words) and _single_digit_word(words[end])
                   and not _lead(written_form(words[end])) and _read_number(words, end)[0] == end + 1):
                text += str(_UNITS[words[end].word])
                end += 1
        out.append(_merged(words[i:end], text))
        i = end
    return out


_ONE_AFTER = frozenset({"no", "any", "every", "some", "each", "which", "this", "that", "the", "a", "little"})


def _pronoun_one(words: Sequence[Word], i: int) -> bool:
    """"no one", "the one", "one another": ``one`` as a word, not a number."""
    if words[i].word != "one":
        return False
    before = words[i - 1].word if i and not _trail(written_form(words[i - 1])) else None
    after = words[i + 1].word if i + 1 < len(words) and not _trail(written_form(words[i])) else None
    return before in _ONE_AFTER or after == "another"


def _single_digit_word(word: Word) -> bool:
    return word.word in _UNITS and _UNITS[word.word] <= 9


def _continued(cardinal: _Cardinal, tokens: Sequence[str]) -> _Cardinal | None:
    """The cardinal with ``tokens`` added, or None when they do not continue it."""
    probe = copy.copy(cardinal)
    return probe if all(probe.take(t) for t in tokens) else None


def _read_number(words: Sequence[Word], i: int) -> tuple[int, str]:
    """The end (exclusive) of the number starting at ``words[i]`` and its digits; ``(i, "")`` if none."""
    cardinal = _Cardinal()
    end = j = i
    while j < len(words):
        w = words[j]
        if j > i and _lead(written_form(w)):
            break
        if w.word == "and":
            following = _tokens(words[j + 1].word) if j + 1 < len(words) else None
            if (cardinal.can_take_and() and not _trail(written_form(w)) and following
                    and following[0] in {**_UNITS, **_TENS} and _continued(cardinal, following) is not None):
                j += 1
                continue
            break
        tokens = _tokens(w.word)
        taken = _continued(cardinal, tokens) if tokens is not None else None
        if taken is None:
            break
        cardinal = taken
        j = end = j + 1
        if _trail(written_form(w)):
            break
    if end == i:
        return i, ""
    text = str(cardinal.value)
    # "three point one four"
    if end + 1 < len(words) and words[end].word == "point" and not _trail(written_form(words[end - 1])):
        digits = ""
        k = end + 1
        while k < len(words) and _single_digit_word(words[k]):
            digits += str(_UNITS[words[k].word])
            k += 1
            if _trail(written_form(words[k - 1])):
                break
        if digits:
            return k, f"{text}.{digits}"
    return end, text


def _merged(span: Sequence[Word], text: str) -> Word:
    first, last = span[0], span[-1]
    punctuated = None
    if first.punctuated_word is not None:
        punctuated = _lead(written_form(first)) + text + _trail(written_form(last))
    return msgspec.structs.replace(first, word=text, end=last.end, punctuated_word=punctuated,
                                   confidence=min(w.confidence for w in span))


# -- profanity -------------------------------------------------------------------------------------

_PROFANITY = frozenset({
    "fuck", "fucks", "fucking", "fucked", "fucker", "fuckers", "motherfucker", "motherfuckers", "motherfucking",
    "shit", "shits", "shitty", "shitting", "bullshit", "bitch", "bitches", "cunt", "cunts", "asshole",
    "assholes", "bastard", "bastards", "dickhead", "pussy", "cock", "cocks", "prick", "twat", "wanker",
    "slut", "whore",
})


def _mask(text: str) -> str:
    return text[0] + "*" * (len(text) - 1)


def _filter_profanity(words: Sequence[Word]) -> list[Word]:
    out: list[Word] = []
    for w in words:
        if w.word in _PROFANITY:
            punctuated = w.punctuated_word
            if punctuated is not None:
                lead, trail = _lead(punctuated), _trail(punctuated)
                core = punctuated[len(lead):len(punctuated) - len(trail)]
                punctuated = lead + _mask(core) + trail
            w = msgspec.structs.replace(w, word=_mask(w.word), punctuated_word=punctuated)
        out.append(w)
    return out


def apply_formatting(words: Sequence[Word], formatting: Formatting) -> list[Word]:
    """The words as the flags ask them written (see the module docstring)."""
    out = list(words)
    if not formatting.filler_words:
        out = _drop_fillers(out)
    if formatting.dictation and out and out[0].punctuated_word is not None:
        out = _dictate(out)
    if formatting.numerals:
        out = to_numerals(out)
    if formatting.profanity_filter:
        out = _filter_profanity(out)
    return out
