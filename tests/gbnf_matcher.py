"""A small GBNF reader for tests: does a grammar accept a text, and random texts it accepts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Cls:
    ranges: tuple[tuple[int, int], ...]
    negated: bool

    def has(self, ch: str) -> bool:
        cp = ord(ch)
        inside = any(lo <= cp <= hi for lo, hi in self.ranges)
        return inside != self.negated


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Any, ...]


@dataclass(frozen=True)
class Rep:
    item: Any
    least: int
    most: int | None


class _Reader:
    def __init__(self, src: str) -> None:
        self.s, self.i = src, 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def char(self) -> int:
        c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return ord(c)
        e = self.s[self.i]
        self.i += 1
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width:
            v = int(self.s[self.i:self.i + width], 16)
            self.i += width
            return v
        return ord({"n": "\n", "t": "\t", "r": "\r"}.get(e, e))

    def alt(self) -> Any:
        options = [self.seq()]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            options.append(self.seq())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def seq(self) -> Any:
        items = []
        while True:
            self.ws()
            if self.i >= len(self.s) or self.s[self.i] in "|)":
                break
            items.append(self.postfix(self.atom()))
        return Seq(tuple(items))

    def atom(self) -> Any:
        c = self.s[self.i]
        if c == '"':
            self.i += 1
            out = []
            while self.s[self.i] != '"':
                out.append(chr(self.char()))
            self.i += 1
            return Lit("".join(out))
        if c == "[":
            self.i += 1
            neg = self.s[self.i] == "^"
            if neg:
                self.i += 1
            ranges = []
            while self.s[self.i] != "]":
                lo = self.char()
                hi = lo
                if self.s[self.i] == "-" and self.s[self.i + 1] != "]":
                    self.i += 1
                    hi = self.char()
                ranges.append((lo, hi))
            self.i += 1
            return Cls(tuple(ranges), neg)
        if c == "(":
            self.i += 1
            inner = self.alt()
            assert self.s[self.i] == ")"
            self.i += 1
            return inner
        j = self.i
        while j < len(self.s) and (self.s[j].isalnum() or self.s[j] == "-"):
            j += 1
        name, self.i = self.s[self.i:j], j
        assert name, self.s[self.i:]
        return Ref(name)

    def postfix(self, node: Any) -> Any:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "?":
                node = Rep(node, 0, 1)
            elif c == "*":
                node = Rep(node, 0, None)
            elif c == "+":
                node = Rep(node, 1, None)
            elif c == "{":
                end = self.s.index("}", self.i)
                lo, comma, hi = self.s[self.i + 1:end].partition(",")
                node = Rep(node, int(lo), (int(hi) if hi else None) if comma else int(lo))
                self.i = end
            else:
                break
            self.i += 1
        return node


class Grammar:
    def __init__(self, text: str) -> None:
        self.rules: dict[str, Any] = {}
        for line in text.strip().splitlines():
            name, _, body = line.partition(" ::= ")
            self.rules[name.strip()] = _Reader(body).alt()

    def accepts(self, text: str) -> bool:
        @cache
        def rule(name: str, i: int) -> frozenset[int]:
            return ends(self.rules[name], i)

        def ends(node: Any, i: int) -> frozenset[int]:
            if isinstance(node, Lit):
                return frozenset([i + len(node.text)]) if text.startswith(node.text, i) else frozenset()
            if isinstance(node, Cls):
                return frozenset([i + 1]) if i < len(text) and node.has(text[i]) else frozenset()
            if isinstance(node, Ref):
                return rule(node.name, i)
            if isinstance(node, Seq):
                cur = frozenset([i])
                for item in node.items:
                    cur = frozenset(e for p in cur for e in ends(item, p))
                    if not cur:
                        break
                return cur
            if isinstance(node, Alt):
                return frozenset(e for o in node.options for e in ends(o, i))
            assert isinstance(node, Rep)
            out = {i} if node.least == 0 else set()
            cur = frozenset([i])
            count = 0
            seen: set[int] = set()
            while cur and (node.most is None or count < node.most):
                cur = frozenset(e for p in cur for e in ends(node.item, p))
                count += 1
                if count >= node.least:
                    out |= cur
                if node.most is None:
                    cur = frozenset(cur - seen)
                    seen |= cur
            return frozenset(out)

        return len(text) in rule("root", 0)

    def sample(self, rng: random.Random, depth: int = 40) -> str:
        """A random text of the grammar (repetitions kept short)."""
        out: list[str] = []

        def pick_char(c: Cls) -> str:
            if c.negated:
                pool = [chr(x) for x in [*range(0x20, 0x7F), 0xE9, 0x4E2D, 0x1F600, 0x2028] if c.has(chr(x))]
                return rng.choice(pool)
            lo, hi = rng.choice(c.ranges)
            return chr(rng.randint(lo, hi))

        def gen(node: Any, d: int) -> None:
            if isinstance(node, Lit):
                out.append(node.text)
            elif isinstance(node, Cls):
                out.append(pick_char(node))
            elif isinstance(node, Ref):
                gen(self.rules[node.name], d + 1)
            elif isinstance(node, Seq):
                for item in node.items:
                    gen(item, d)
            elif isinstance(node, Alt):
                gen(rng.choice(node.options), d)
            else:
                most = node.most if node.most is not None else node.least + 3
                if d > depth:
                    most = node.least
                for _ in range(rng.randint(node.least, max(node.least, min(most, node.least + 6)))):
                    gen(node.item, d + 1)

        gen(self.rules["root"], 0)
        return "".join(out)
