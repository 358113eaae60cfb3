"""Grammars for JSON numbers held to bounds and ``multipleOf``, by comparing digits as they are written.

A number is written without an exponent: an optional ``-``, an integer part without leading zeros and
at most a few fraction digits. Its magnitude is compared with each bound digit by digit: while the
digits written so far equal the bound's, the next digit may not cross it ("tight"); once they differ,
the rest is free. The integer part's length decides first (a longer integer part is larger), so the
lengths strictly between the bounds' lengths share one free rule. ``multipleOf`` p/10^k adds the
remainder modulo p of the digits so far to each state (a divisibility automaton), when that stays
small; otherwise the bounds are held by the grammar and the multiple by the check after generation.

An open side admits integer parts of up to :data:`OPEN_DIGITS` digits (or one more than the other
bound has), which keeps a sampled number from running on for ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from backends.gbnf import RuleSet

__all__ = ["NumberSpec", "Unsatisfiable", "number_rule", "to_decimal"]

OPEN_DIGITS = 16
"""Integer digits an unbounded side admits."""
FRACTION_DIGITS = 6
"""Fraction digits a number admits when its schema does not fix them."""
MAX_STATES = 4000
"""Largest divisibility automaton written into a grammar; past it the check holds ``multipleOf``."""
MAX_LISTED = 256
"""Multiples listed one by one when the automaton would be too large but the range is narrow."""

PLAIN_INTEGER = '"-"? ("0" | [1-9] [0-9]{0,15})'
PLAIN_NUMBER = '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,6})?'


class Unsatisfiable(ValueError):
    """No number meets the schema's bounds (and multiple)."""


def to_decimal(value: Any) -> Decimal:
    """A JSON number as an exact decimal (a float by its shortest repr, as it was written)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError("not a number")
    d = value if isinstance(value, Decimal) else Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if not d.is_finite():
        raise TypeError("not a finite number")
    return d


@dataclass(frozen=True)
class NumberSpec:
    integer: bool
    minimum: Decimal | None = None
    minimum_strict: bool = False
    maximum: Decimal | None = None
    maximum_strict: bool = False
    multiple: Decimal | None = None


@dataclass(frozen=True)
class _Bound:
    digits: str
    """The integer part, without leading zeros ("0" for zero)."""
    frac: str
    """The fraction digits, without trailing zeros."""
    strict: bool


def _bound(value: Decimal, strict: bool) -> _Bound:
    text = format(abs(value), "f")
    whole, _, frac = text.partition(".")
    return _Bound(whole.lstrip("0") or "0", frac.rstrip("0"), strict)


@dataclass(frozen=True)
class _Magnitude:
    """Non-negative decimals between ``lo`` and ``hi`` with ``kmin``..``kmax`` fraction digits, whose
    digits (integer and fraction together) are a multiple of ``p``."""

    lo: _Bound
    hi: _Bound | None
    lmax: int
    kmin: int
    kmax: int
    p: int


class _Automaton:
    """Writes the rules of one :class:`_Magnitude`, one rule per live state."""

    def __init__(self, rules: RuleSet, m: _Magnitude) -> None:
        self.rules = rules
        self.m = m
        self.memo: dict[tuple[Any, ...], str | None] = {}

    def _emit(self, key: tuple[Any, ...], accepting: bool, moves: list[tuple[str, str | None]]) -> str | None:
        """A rule from (text, next state) moves; None when the state leads nowhere."""
        live = [(text, nxt) for text, nxt in moves if nxt is not None]
        if not live:
            return "" if accepting else None
        grouped: dict[str, list[str]] = {}
        for text, nxt in live:
            grouped.setdefault(nxt, []).append(text)
        alts = []
        for nxt, texts in grouped.items():
            head = _digits_class(texts) if all(len(t) == 1 and t.isdigit() for t in texts) else \
                " | ".join(f'"{t}"' for t in texts)
            if len(texts) > 1 and not head.startswith("["):
                head = f"( {head} )"
            alts.append(f"{head} {nxt}".strip())
        body = " | ".join(alts)
        if accepting:
            body = f"( {body} )?"
        return self.rules.add("num-" + "-".join(str(k) for k in key[:2]), body)

    def _end_ok(self, j: int, tlo: bool, thi: bool, rem: int) -> bool:
        m = self.m
        if j < m.kmin or rem != 0:
            return False
        if tlo and (j < len(m.lo.frac) or m.lo.strict):
            return False
        return not (thi and m.hi is not None and j >= len(m.hi.frac) and m.hi.strict)

    def frac(self, j: int, tlo: bool, thi: bool, rem: int) -> str | None:
        """After the point, ``j`` fraction digits written."""
        key = ("f", j, tlo, thi, rem)
        if key in self.memo:
            return self.memo[key]
        m = self.m
        moves: list[tuple[str, str | None]] = []
        if j < m.kmax:
            low = int(_at(m.lo.frac, j)) if tlo else 0
            high = int(_at(m.hi.frac, j)) if thi and m.hi is not None else 9
            for d in range(low, high + 1):
                moves.append((str(d), self.frac(j + 1, tlo and d == low, thi and d == high, (rem * 10 + d) % m.p)))
        out = self._emit(key, j >= 1 and self._end_ok(j, tlo, thi, rem), moves)
        self.memo[key] = out
        return out

    def point(self, tlo: bool, thi: bool, rem: int) -> str | None:
        """The integer part is written: stop, or a point and fraction digits."""
        key = ("p", tlo, thi, rem)
        if key in self.memo:
            return self.memo[key]
        moves: list[tuple[str, str | None]] = []
        if self.m.kmax >= 1:
            moves.append((".", self.frac(0, tlo, thi, rem)))
        out = self._emit(key, self._end_ok(0, tlo, thi, rem), moves)
        self.memo[key] = out
        return out

    def free(self, at_least: int, at_most: int, rem: int) -> str | None:
        """Integer digits with no bound in reach: between ``at_least`` and ``at_most`` more."""
        key = ("i", at_least, at_most, rem)
        if key in self.memo:
            return self.memo[key]
        moves: list[tuple[str, str | None]] = []
        if at_most > 0:
            for d in range(10):
                moves.append((str(d), self.free(max(at_least - 1, 0), at_most - 1, (rem * 10 + d) % self.m.p)))
        accepting = False
        if at_least == 0:
            end = self.point(False, False, rem)
            if end == "":
                accepting = True
            elif end is not None:
                moves.append(("", end))
        out = self._emit_mixed(key, accepting, moves)
        self.memo[key] = out
        return out

    def _emit_mixed(self, key: tuple[Any, ...], accepting: bool, moves: list[tuple[str, str | None]]) -> str | None:
        """Like :meth:`_emit`, allowing one move that writes nothing (into the point state)."""
        empty = [nxt for text, nxt in moves if text == "" and nxt is not None]
        digit_moves = [(t, n) for t, n in moves if t != ""]
        if not empty:
            return self._emit(key, accepting, digit_moves)
        inner = self._emit((*key, "d"), False, digit_moves)
        alts = [empty[0]] + ([inner] if inner else [])
        body = " | ".join(alts)
        if accepting:
            body = f"( {body} )?"
        return self.rules.add("num-" + "-".join(str(k) for k in key[:2]), body)

    def tight(self, digits_lo: str, digits_hi: str, pos: int, tlo: bool, thi: bool, rem: int) -> str | None:
        """Integer digits of a fixed length, ``pos`` written, near a bound (``tlo``/``thi``)."""
        length = max(len(digits_lo), len(digits_hi))
        if not tlo and not thi:
            return self.free(length - pos, length - pos, rem)
        key = ("t", length, pos, tlo, thi, rem, digits_lo if tlo else "", digits_hi if thi else "")
        if key in self.memo:
            return self.memo[key]
        if pos == length:
            out = self.point(tlo, thi, rem)
            self.memo[key] = out
            return out
        low = int(digits_lo[pos]) if tlo else 0
        high = int(digits_hi[pos]) if thi else 9
        if pos == 0 and length > 1:
            low = max(low, 1)
        moves: list[tuple[str, str | None]] = []
        for d in range(low, high + 1):
            moves.append((str(d), self.tight(digits_lo, digits_hi, pos + 1, tlo and d == int(digits_lo[pos]),
                                              thi and d == int(digits_hi[pos]), (rem * 10 + d) % self.m.p)))
        out = self._emit(key, False, moves)
        self.memo[key] = out
        return out

    def top(self) -> str | None:
        m = self.m
        la = len(m.lo.digits)
        lb = len(m.hi.digits) if m.hi is not None else m.lmax
        if m.hi is not None and (la > lb or (la == lb and m.lo.digits > m.hi.digits)):
            return None
        alts: list[str | None] = []
        if m.hi is not None and la == lb:
            alts.append(self.tight(m.lo.digits, m.hi.digits, 0, True, True, 0))
        else:
            alts.append(self.tight(m.lo.digits, "", 0, True, False, 0))
            middle_hi = lb - 1 if m.hi is not None else lb
            if middle_hi >= la + 1:
                firsts: list[tuple[str, str | None]] = [
                    (str(d), self.free(la, middle_hi - 1, d % m.p)) for d in range(1, 10)]
                alts.append(self._emit(("m", la), False, firsts))
            if m.hi is not None:
                alts.append(self.tight("", m.hi.digits, 0, False, True, 0))
        live = [a for a in alts if a is not None]
        if not live:
            return None
        if any(a == "" for a in live):  # only the number zero: a bare "0" is its own rule
            live = [a if a != "" else '""' for a in live]
        return " | ".join(live)


def _at(digits: str, i: int) -> str:
    return digits[i] if i < len(digits) else "0"


def _digits_class(texts: list[str]) -> str:
    values = sorted(int(t) for t in texts)
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return "[" + "".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) + "]"


def _decimal_parts(m: Decimal) -> tuple[int, int]:
    """``m`` as p / 10**k with p, k integers, k >= 0."""
    _, digits, exp = m.normalize().as_tuple()
    assert isinstance(exp, int)
    p = int("".join(map(str, digits)) or "0")
    if exp >= 0:
        return p * 10**exp, 0
    return p, -exp


def _magnitudes(spec: NumberSpec, kmin: int, kmax: int, p: int) -> list[tuple[str, _Magnitude]]:
    """The (sign, magnitude range) pieces of the signed range."""
    lo, hi = spec.minimum, spec.maximum
    pieces: list[tuple[str, _Magnitude]] = []

    def lmax(*bounds: _Bound | None) -> int:
        return max([OPEN_DIGITS] + [len(b.digits) + 1 for b in bounds if b is not None])

    if hi is None or hi > 0 or (hi == 0 and not spec.maximum_strict):
        mlo = _bound(lo, spec.minimum_strict) if lo is not None and lo >= 0 else _Bound("0", "", False)
        mhi = _bound(hi, spec.maximum_strict) if hi is not None else None
        pieces.append(("", _Magnitude(mlo, mhi, lmax(mlo, mhi), kmin, kmax, p)))
    if lo is None or lo < 0:
        nhi = _bound(lo, spec.minimum_strict) if lo is not None else None
        nlo = _bound(hi, spec.maximum_strict) if hi is not None and hi < 0 else _Bound("0", "", True)
        pieces.append(('"-" ', _Magnitude(nlo, nhi, lmax(nlo, nhi), kmin, kmax, p)))
    return pieces


def _listed(spec: NumberSpec, step: Decimal) -> list[Decimal] | None:
    """Every multiple of ``step`` in a bounded range, when there are few enough to list."""
    lo, hi = spec.minimum, spec.maximum
    if lo is None or hi is None:
        return None
    first = math.ceil(lo / step)
    last = math.floor(hi / step)
    if last - first + 1 > MAX_LISTED:
        return None
    out = []
    for t in range(first, last + 1):
        v = step * t
        if (spec.minimum_strict and v == lo) or (spec.maximum_strict and v == hi) or v < lo or v > hi:
            continue
        out.append(v)
    return out


def _format(v: Decimal, integer: bool) -> str:
    if integer:
        return str(int(v))
    text = format(v.normalize(), "f")
    return "0" if text in ("-0", "") else text


def number_rule(rules: RuleSet, spec: NumberSpec) -> tuple[str, bool]:
    """A GBNF expression for the numbers of ``spec``, and whether it holds every keyword by itself
    (False: ``multipleOf`` is left to the check after generation)."""
    if spec.minimum is None and spec.maximum is None and spec.multiple is None:
        return (PLAIN_INTEGER if spec.integer else PLAIN_NUMBER), True
    p, k = 1, 0
    if spec.multiple is not None:
        p, k = _decimal_parts(spec.multiple)
        if spec.integer:  # x * 10**k a multiple of p
            p //= math.gcd(p, 10**k)
            k = 0
    bounds_frac = max([len(_bound(b, False).frac) + 1 for b in (spec.minimum, spec.maximum) if b is not None] + [0])
    if spec.integer:
        kmin = kmax = 0
    elif p > 1:
        kmin = kmax = k
    elif spec.multiple is not None:
        kmin, kmax = 0, k
    else:
        kmin, kmax = 0, max(FRACTION_DIGITS, bounds_frac)
    exact = True
    pieces = _magnitudes(spec, kmin, kmax, p)
    if p > 1:
        size = sum((m.lmax + kmax + 2) for _, m in pieces) * p
        if size > MAX_STATES:
            step = Decimal(p) if spec.integer else spec.multiple
            listed = _listed(spec, step) if step is not None else None
            if listed is not None:
                if not listed:
                    raise Unsatisfiable("no number is a multiple of 'multipleOf' within the bounds")
                return " | ".join(f'"{_format(v, spec.integer)}"' for v in listed), True
            exact = False
            pieces = _magnitudes(spec, kmin, kmax, 1)
    alts = []
    for sign, magnitude in pieces:
        body = _Automaton(rules, magnitude).top()
        if body is None:
            continue
        alts.append(f"{sign}( {body} )" if sign else f"( {body} )")
    if not alts:
        raise Unsatisfiable("no number satisfies the schema's bounds" +
                            (" and 'multipleOf'" if spec.multiple is not None else ""))
    return " | ".join(alts), exact
