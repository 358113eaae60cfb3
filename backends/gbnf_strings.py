"""Grammars for JSON strings: the characters a strict parser accepts, the formats, and ``pattern``.

A grammar writes a string as JSON text, so it works on the encoded form: a character is either one
that JSON allows unescaped (anything but ``"``, ``\\`` and U+0000..U+001F) or a valid escape (``\\n``,
``\\t``, ``\\uXXXX`` outside the surrogates, ...). A ``pattern`` constrains the decoded string, so each
character it names is written the way JSON encodes it (a tab in a pattern becomes ``\\t`` in the
text). Regular-expression features outside the translated subset (look-arounds, back-references,
anchors inside) leave the pattern to the check after generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from backends.gbnf import char_class, literal

__all__ = ["FORMAT_RULES", "JSON_CHAR", "SAFE_CHAR", "Untranslatable", "pattern_rule"]

SAFE_CHAR = r'[^"\\\x00-\x1F]'
"""A character JSON allows unescaped inside a string."""
JSON_CHAR = SAFE_CHAR + r' | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) )'
"""Any character of a JSON string, escapes included (never a lone surrogate)."""

_D2 = "[0-9] [0-9]"
_MD = ('( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )'
       ' | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )'
       ' | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] )')
_LEAP = '[1-9] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | ( [2468] [048] | [13579] [26] ) "00"'
_DATE = f'[1-9] [0-9]{{3}} "-" ( {_MD} ) | ( {_LEAP} ) "-02-29"'
_HOUR = '( [01] [0-9] | "2" [0-3] )'
_MINUTE = "[0-5] [0-9]"
_TIME = f'{_HOUR} ":" {_MINUTE} ":" {_MINUTE} ( "." [0-9]{{1,6}} )? ( "Z" | [+-] {_HOUR} ":" {_MINUTE} )'
_DN = "[0-9]{1,4}"
_DUR_DATE = f'{_DN} "Y" ( {_DN} "M" )? ( {_DN} "D" )? | {_DN} "M" ( {_DN} "D" )? | {_DN} "D"'
_DUR_TIME = f'{_DN} "H" ( {_DN} "M" )? ( {_DN} "S" )? | {_DN} "M" ( {_DN} "S" )? | {_DN} "S"'
_DURATION = f'"P" ( ( {_DUR_DATE} ) ( "T" ( {_DUR_TIME} ) )? | "T" ( {_DUR_TIME} ) | {_DN} "W" )'
_LABEL = '[a-zA-Z0-9] ( "-"? [a-zA-Z0-9] ){0,20}'
"""A host name label: letters and digits, single hyphens inside (so each next character is known)."""
_TLD = "[a-zA-Z]{2,12}"
_HOSTNAME = f'( {_LABEL} "." ){{0,3}} {_TLD}'
_ATOM = "[a-zA-Z0-9_%+-]{1,20}"
_EMAIL = f'{_ATOM} ( "." {_ATOM} ){{0,3}} "@" ( {_LABEL} "." ){{1,3}} {_TLD}'
_OCTET = '( "25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9] )'
_IPV4 = f'{_OCTET} "." {_OCTET} "." {_OCTET} "." {_OCTET}'
_H16 = "[0-9a-fA-F]{1,4}"
_IPV6 = f'{_H16} ( ":" {_H16} ){{7}}'
"""The full form (eight groups): every address has it, and the sampler follows one path through it."""
_HEX = "[0-9a-fA-F]"
_UUID = f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{12}}'

FORMAT_RULES: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f'( {_DATE} ) "T" {_TIME}',
    "duration": _DURATION,
    "email": _EMAIL,
    "hostname": _HOSTNAME,
    "ipv4": _IPV4,
    "ipv6": _IPV6,
    "uuid": _UUID,
}
"""The string formats the grammar writes (the inside of the quotes), each valid as the check reads it."""


class Untranslatable(ValueError):
    """A pattern outside the subset the grammar can write."""


_DIGIT = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_UNSAFE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
_SIMPLE_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B, "0": 0x00}


def _encoded(cp: int) -> str:
    """How JSON writes one character inside a string."""
    return json.dumps(chr(cp), ensure_ascii=False)[1:-1]


def _positive_class(ranges: list[tuple[int, int]]) -> str:
    """A class of decoded characters, as alternatives over their JSON encodings."""
    safe: list[tuple[int, int]] = []
    escaped: list[str] = []
    for lo, hi in sorted(ranges):
        start = lo
        for cp in range(lo, min(hi, 0x5C) + 1):
            if cp < 0x20 or cp in (0x22, 0x5C):
                if start < cp:
                    safe.append((start, cp - 1))
                escaped.append(literal(_encoded(cp)))
                start = cp + 1
        if start <= hi:
            safe.append((start, hi))
    alts = ([char_class(safe)] if safe else []) + sorted(set(escaped))
    if not alts:
        raise Untranslatable("empty character class")
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def _negated_class(ranges: list[tuple[int, int]]) -> str:
    return char_class(sorted(ranges) + _UNSAFE, negated=True)


@dataclass
class _Parser:
    src: str
    i: int = 0

    def peek(self) -> str:
        return self.src[self.i] if self.i < len(self.src) else ""

    def take(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def alternation(self) -> str:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.take()
            branches.append(self.sequence())
        if len(branches) == 1:
            return branches[0]
        return "( " + " | ".join(b or '""' for b in branches) + " )"

    def sequence(self) -> str:
        parts: list[str] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            parts.append(self.quantified(atom))
        return " ".join(parts)

    def quantified(self, atom: str) -> str:
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.take()
            suffix = ch
        elif ch == "{" and self._counted():
            suffix = self._count()
        else:
            return atom
        if self.peek() == "?":  # lazy: the same strings
            self.take()
        elif self.peek() == "+":
            raise Untranslatable("possessive quantifier")
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._counted()):
            raise Untranslatable("repeated quantifier")
        return f"( {atom} ){suffix}"

    def _counted(self) -> bool:
        end = self.src.find("}", self.i)
        if end == -1:
            return False
        body = self.src[self.i + 1:end]
        lo, _, hi = body.partition(",")
        return lo.isdigit() and (hi == "" or hi.isdigit())

    def _count(self) -> str:
        end = self.src.index("}", self.i)
        body = self.src[self.i + 1:end]
        self.i = end + 1
        lo, comma, hi = body.partition(",")
        if not comma:
            return "{" + str(int(lo)) + "}"
        if hi and int(hi) < int(lo):
            raise Untranslatable("bad repetition")
        return "{" + str(int(lo)) + "," + (str(int(hi)) if hi else "") + "}"

    def atom(self) -> str:
        ch = self.take()
        if ch == "(":
            if self.peek() == "?":
                self.take()
                if self.peek() == ":":
                    self.take()
                elif self.src.startswith("P<", self.i):
                    end = self.src.find(">", self.i)
                    if end == -1:
                        raise Untranslatable("bad group name")
                    self.i = end + 1
                else:
                    raise Untranslatable("group extension")
            inner = self.alternation()
            if self.take() != ")":
                raise Untranslatable("unbalanced parentheses")
            return f"( {inner or chr(34) * 2} )"
        if ch == "[":
            return self.char_set()
        if ch == ".":
            return SAFE_CHAR
        if ch == "\\":
            return self.escape()
        if ch in ("^", "$", ")", "*", "+", "?", "{"):
            raise Untranslatable(f"'{ch}' where it cannot be written")
        return literal(_encoded(ord(ch)))

    def escape(self) -> str:
        ch = self.take()
        if ch == "d":
            return char_class(_DIGIT)
        if ch == "w":
            return char_class(_WORD)
        if ch == "s":
            return _positive_class(_SPACE)
        if ch in ("D", "W", "S"):
            return _negated_class({"D": _DIGIT, "W": _WORD, "S": _SPACE}[ch])
        cp = self._escaped_cp(ch)
        return literal(_encoded(cp))

    def _escaped_cp(self, ch: str) -> int:
        if ch in _SIMPLE_ESCAPES and not (ch == "0" and self.peek().isdigit()):
            return _SIMPLE_ESCAPES[ch]
        if ch in ("x", "u"):
            width = 2 if ch == "x" else 4
            digits = self.src[self.i:self.i + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise Untranslatable("bad escape")
            self.i += width
            return int(digits, 16)
        if ch == "" or ch.isalnum():
            raise Untranslatable(f"the escape \\{ch}")
        return ord(ch)

    def char_set(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.take()
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            ch = self.take()
            if ch == "":
                raise Untranslatable("unterminated character class")
            if ch == "]" and not first:
                break
            first = False
            if ch == "\\":
                esc = self.take()
                if esc in ("d", "w", "s"):
                    ranges.extend({"d": _DIGIT, "w": _WORD, "s": _SPACE}[esc])
                    continue
                if esc in ("D", "W", "S"):
                    raise Untranslatable("negated shorthand inside a class")
                lo = 0x08 if esc == "b" else self._escaped_cp(esc)
            elif ch == "[" and self.peek() == ":":
                raise Untranslatable("POSIX class")
            else:
                lo = ord(ch)
            hi = lo
            if self.peek() == "-" and self.src[self.i + 1:self.i + 2] not in ("]", ""):
                self.take()
                end = self.take()
                if end == "\\":
                    esc = self.take()
                    if esc in ("d", "w", "s", "D", "W", "S"):
                        raise Untranslatable("range to a shorthand")
                    hi = self._escaped_cp(esc)
                else:
                    hi = ord(end)
                if hi < lo:
                    raise Untranslatable("bad range")
            ranges.append((lo, hi))
        return _negated_class(ranges) if negated else _positive_class(ranges)


def pattern_rule(pattern: str) -> str:
    """The inside of a JSON string whose decoded value fully matches ``pattern`` (and so is found by
    ``re.search``). Raises :class:`Untranslatable` for features outside the subset."""
    body = pattern
    if body.startswith("^"):
        body = body[1:]
    if body.endswith("$"):
        trailing = len(body[:-1]) - len(body[:-1].rstrip("\\"))
        if trailing % 2 == 0:
            body = body[:-1]
    parser = _Parser(body)
    out = parser.alternation()
    if parser.i != len(body):
        raise Untranslatable("unbalanced parentheses")
    return out or '""'
