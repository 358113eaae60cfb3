"""Writing GBNF (llama.cpp's grammar format): named rules, literals and character classes.

The JSON-Schema converter builds its grammar through one :class:`RuleSet`, so identical rules are
written once and every name is valid GBNF.
"""

from __future__ import annotations

import re

__all__ = ["RuleSet", "char_class", "literal"]

_NAME_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


def _escape_char(cp: int, in_class: bool) -> str:
    ch = chr(cp)
    if ch.isalnum() and cp < 0x80:
        return ch
    if cp < 0x80 and ch in " _.,:;!#$%&'()*+/<=>?@{}|~`" and not (in_class and ch in "^"):
        return ch
    if cp <= 0xFF:
        return f"\\x{cp:02X}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04X}"
    return f"\\U{cp:08X}"


def literal(text: str) -> str:
    """A GBNF string literal that matches ``text`` exactly (any character, escaped as needed)."""
    return '"' + "".join(_escape_char(ord(c), in_class=False) for c in text) + '"'


def char_class(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    """A GBNF character class of the code-point ranges (inclusive)."""
    parts = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append(_escape_char(lo, in_class=True))
        else:
            parts.append(f"{_escape_char(lo, in_class=True)}-{_escape_char(hi, in_class=True)}")
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


class RuleSet:
    """Named rules; a body seen before keeps its first name."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self._reserved: set[str] = set()

    def _fresh(self, hint: str) -> str:
        base = _NAME_CHARS.sub("-", hint).strip("-").lower() or "r"
        name, i = base, 1
        while name in self._rules or name in self._reserved or name == "root":
            i += 1
            name = f"{base}-{i}"
        return name

    def add(self, hint: str, body: str) -> str:
        """The name of a rule with ``body`` (a new one unless the same body exists)."""
        known = self._by_body.get(body)
        if known is not None:
            return known
        name = self._fresh(hint)
        self._rules[name] = body
        self._by_body[body] = name
        return name

    def reserve(self, hint: str) -> str:
        """A name for a rule defined later with :meth:`define` (recursive schemas)."""
        name = self._fresh(hint)
        self._reserved.add(name)
        return name

    def define(self, name: str, body: str) -> None:
        self._reserved.discard(name)
        self._rules[name] = body

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines.extend(f"{name} ::= {body}" for name, body in self._rules.items())
        return "\n".join(lines) + "\n"

    def __len__(self) -> int:
        return len(self._rules)
