"""The last check on every grammar-held reply: strict JSON, valid against its schema.

The grammar is written to make this check pass; the check is what proves it, on every reply. Numbers
are read as exact decimals (``0.3`` is a multiple of ``0.1`` here, unlike in binary floating point),
and the string formats are checked by the same definitions the grammar writes them by, together with
``jsonschema``'s own checkers where it has them.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

__all__ = ["FORMAT_CHECKER", "SchemaValidator", "parse_strict"]

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_DUR_DATE = r"([0-9]+Y([0-9]+M)?([0-9]+D)?|[0-9]+M([0-9]+D)?|[0-9]+D)"
_DUR_TIME = r"([0-9]+H([0-9]+M)?([0-9]+S)?|[0-9]+M([0-9]+S)?|[0-9]+S)"
_DURATION_RE = re.compile(rf"P({_DUR_DATE}(T{_DUR_TIME})?|T{_DUR_TIME}|[0-9]+W)")
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME_RE = re.compile(rf"({_LABEL}\.)*[a-zA-Z]{{2,63}}")
_ATOM = r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_RE = re.compile(rf"{_ATOM}(\.{_ATOM})*@({_LABEL}\.)+[a-zA-Z]{{2,63}}")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _date(s: str) -> bool:
    if not _DATE_RE.fullmatch(s):
        return False
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return True


def _time(s: str) -> bool:
    return bool(_TIME_RE.fullmatch(s))


def _date_time(s: str) -> bool:
    date, sep, time = s.partition("T")
    return bool(sep) and _date(date) and _time(time)


def _ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def _ipv6(s: str) -> bool:
    try:
        address = ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return not address.scope_id


def _hostname(s: str) -> bool:
    return len(s) <= 253 and bool(_HOSTNAME_RE.fullmatch(s))


_OWN: dict[str, Callable[[str], bool]] = {
    "date": _date,
    "time": _time,
    "date-time": _date_time,
    "duration": lambda s: bool(_DURATION_RE.fullmatch(s)),
    "email": lambda s: bool(_EMAIL_RE.fullmatch(s)),
    "hostname": _hostname,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "uuid": lambda s: bool(_UUID_RE.fullmatch(s)),
}


def _format_checker() -> jsonschema.FormatChecker:
    library = jsonschema.Draft202012Validator.FORMAT_CHECKER
    checker = jsonschema.FormatChecker(formats=())
    for name, own in _OWN.items():
        def check(instance: object, own: Callable[[str], bool] = own, name: str = name) -> bool:
            if not isinstance(instance, str):
                return True
            if not own(instance):
                return False
            try:
                library.check(instance, name)
            except jsonschema.FormatError:
                return False
            return True
        checker.checks(name)(check)
    return checker


FORMAT_CHECKER = _format_checker()
"""The formats the grammar writes, each checked by its own definition and by ``jsonschema``'s."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_strict(text: str) -> Any:
    """JSON as a strict parser reads it (no control characters in strings, no NaN), numbers exact."""
    return json.loads(text, strict=True, parse_float=Decimal, parse_constant=_no_constant)


class SchemaValidator:
    """Validates parsed replies against one schema (numbers in it as exact decimals)."""

    def __init__(self, schema: Any) -> None:
        self._validator = jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid, or None."""
        error = best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        return f"{error.message} (at '{where}')"

    def valid(self, value: Any) -> bool:
        return bool(self._validator.is_valid(value))
