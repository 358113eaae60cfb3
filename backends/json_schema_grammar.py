"""JSON Schema to GBNF: the rules that make llama.cpp write only JSON valid against a schema.

A schema is first checked and put in one shape (:func:`backends.json_schema.normalise`, which refuses
what neither the grammar nor the check can hold). Then :class:`Converter` writes a rule for each part.
What a grammar cannot express exactly (``oneOf`` whose branches overlap, a ``pattern`` beside
``maxLength``, a ``multipleOf`` too large for an automaton, ...) is written as closely as it can be and
recorded in ``held``: those keywords are held by the check after generation, which resamples.

Whitespace is at most one space between tokens, and an object has only the properties its schema
names, in the schema's order (the required ones always): every reply is still valid, and a sampled
reply cannot wander.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from backends.gbnf import RuleSet, literal
from backends.gbnf_numbers import NumberSpec, Unsatisfiable, number_rule
from backends.gbnf_strings import FORMAT_RULES, JSON_CHAR, Untranslatable, pattern_rule
from backends.json_schema import FORMAT_ALIASES, NUMERIC, dumps, escape, refuse, unescape
from backends.output_check import SchemaValidator

__all__ = ["Converter"]

WS = '" "?'


class Converter:
    """Writes the rules of one or more schemas into a :class:`RuleSet`."""

    def __init__(self, rules: RuleSet, tool: int | None = None) -> None:
        self.rules = rules
        self.tool = tool
        """Whose schema is converted: None for the reply's own, else that tool's index (for errors)."""
        self.held: list[str] = []
        """Places ('pointer keyword') held by the check after generation rather than by the grammar."""
        self._root: Any = {}
        self._refs: dict[str, str] = {}
        self._any: str | None = None

    # -- entry ----------------------------------------------------------------------------------------

    def convert(self, schema: Any, hint: str) -> str:
        """The name of a rule for values of ``schema`` (already normalised)."""
        self._root, self._refs = schema, {}
        body = self.visit(schema, "", hint)
        return self.rules.add(hint or "root-value", body)

    def _hold(self, where: str, keyword: str) -> None:
        self.held.append(f"{where or '/'} {keyword}")

    # -- references and merging -----------------------------------------------------------------------

    def _resolve(self, ref: str, where: str) -> Any:
        node: Any = self._root
        for part in ref[2:].split("/") if ref != "#" else []:
            part = unescape(part)
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise refuse(self.tool, f"{where}/$ref", f"the reference '{ref}' points nowhere.")
        return node

    def _ref_rule(self, ref: str, where: str) -> str:
        known = self._refs.get(ref)
        if known is not None:
            return known
        target = self._resolve(ref, where)
        name = self.rules.reserve("ref-" + (ref[2:].rsplit("/", 1)[-1] if ref != "#" else "root"))
        self._refs[ref] = name
        self.rules.define(name, self.visit(target, ref[1:], name))
        return name

    def _merge(self, a: dict[str, Any], b: dict[str, Any], where: str) -> dict[str, Any]:
        """One schema meaning both (allOf); what cannot be merged is kept from ``a`` and held."""
        if "$ref" in b:
            b = {**self._deref(b, where)}
        out = dict(a)
        for key, value in b.items():
            if key not in out:
                out[key] = value
                continue
            mine = out[key]
            if key == "properties":
                merged = dict(mine)
                for name, sub in value.items():
                    merged[name] = {"allOf": [merged[name], sub]} if name in merged else sub
                out[key] = merged
            elif key == "required":
                out[key] = list(dict.fromkeys([*mine, *value]))
            elif key == "type":
                kinds = _types(mine) & _types(value)
                if not kinds:
                    raise refuse(self.tool, where, "'allOf' asks for types no value has.")
                out[key] = sorted(kinds)
            elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems"):
                out[key] = max(mine, value)
            elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems"):
                out[key] = min(mine, value)
            elif key == "enum":
                out[key] = [v for v in mine if any(_same(v, w) for w in value)]
            elif key == "additionalProperties" and (mine is False or value is False):
                out[key] = False
            elif key in ("items",) and isinstance(mine, dict) and isinstance(value, dict):
                out[key] = {"allOf": [mine, value]}
            elif not _same(mine, value):
                self._hold(where, key)
        closed = [s for s in (a, b) if s.get("additionalProperties") is False]
        if closed and "properties" in out:
            allowed = set.intersection(*(set(s.get("properties", {})) for s in closed))
            out["properties"] = {k: v for k, v in out["properties"].items() if k in allowed}
        return out

    def _deref(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        """A node with its ``$ref`` merged in, for merging (recursion stays a rule reference)."""
        target = self._resolve(node["$ref"], where)
        rest = {k: v for k, v in node.items() if k != "$ref"}
        if not isinstance(target, dict):
            return rest
        return self._merge(dict(target), rest, where) if rest else dict(target)

    # -- values ---------------------------------------------------------------------------------------

    def visit(self, node: dict[str, Any], where: str, hint: str) -> str:
        """A GBNF expression for the values of ``node``."""
        if "$ref" in node:
            rest = {k: v for k, v in node.items() if k not in ("$ref", "$defs", "definitions")}
            ref = self._ref_rule(node["$ref"], where)
            if not rest:
                return ref
            return self.visit(self._merge(self._deref(node, where), {}, where), where, hint)
        if "allOf" in node:
            merged = {k: v for k, v in node.items() if k != "allOf"}
            for i, part in enumerate(node["allOf"]):
                merged = self._merge(merged, part, f"{where}/allOf/{i}")
            return self.visit(merged, where, hint)
        for key in ("anyOf", "oneOf"):
            if key in node:
                rest = {k: v for k, v in node.items() if k not in (key, "$defs", "definitions")}
                branches = node[key]
                if key == "oneOf" and not _disjoint(branches):
                    self._hold(where, "oneOf")
                alts = [self.visit(self._merge(b, rest, f"{where}/{key}/{i}") if rest else b,
                                   f"{where}/{key}/{i}", f"{hint}-{i}") for i, b in enumerate(branches)]
                return " | ".join(f"( {a} )" for a in alts)
        if "const" in node or "enum" in node:
            return self._choices(node, where)
        kinds = _types(node.get("type")) if "type" in node else _implied(node)
        if not kinds:
            return self._any_value()
        if len(kinds) > 1:
            alts = [self._typed(node, kind, where, f"{hint}-{kind}") for kind in sorted(kinds)]
            if {"integer", "number"} <= kinds:
                alts = [self._typed(node, kind, where, f"{hint}-{kind}") for kind in sorted(kinds - {"integer"})]
            return " | ".join(f"( {a} )" for a in alts)
        return self._typed(node, next(iter(kinds)), where, hint)

    def _choices(self, node: dict[str, Any], where: str) -> str:
        values = [node["const"]] if "const" in node else list(node["enum"])
        if "const" in node and "enum" in node:
            values = [v for v in values if any(_same(v, w) for w in node["enum"])]
        rest = {k: v for k, v in node.items() if k not in ("const", "enum")}
        if rest:
            check = SchemaValidator({**rest, **({"$defs": self._root.get("$defs", {})} if "$defs" in self._root
                                                else {})})
            values = [v for v in values if check.valid(v)]
        if not values:
            raise refuse(self.tool, where, "no value of 'enum' / 'const' satisfies the rest of the schema.")
        return " | ".join(literal(dumps(v)) for v in values)

    def _typed(self, node: dict[str, Any], kind: str, where: str, hint: str) -> str:
        if kind == "string":
            return self._string(node, where)
        if kind in ("number", "integer"):
            return self._number(node, kind == "integer", where)
        if kind == "boolean":
            return '"true" | "false"'
        if kind == "null":
            return '"null"'
        if kind == "array":
            return self._array(node, where, hint)
        return self._object(node, where, hint)

    def _string(self, node: dict[str, Any], where: str) -> str:
        lo, hi = node.get("minLength", 0), node.get("maxLength")
        if hi is not None and hi < lo:
            raise refuse(self.tool, where, "'maxLength' is less than 'minLength'.")
        sized = lo > 0 or hi is not None
        inner: str | None = None
        if "format" in node:
            fmt = FORMAT_ALIASES.get(node["format"], node["format"])
            inner = self.rules.add(f"format-{fmt}", FORMAT_RULES[fmt])
            if sized:
                self._hold(where, "minLength/maxLength")
            if "pattern" in node:
                self._hold(where, "pattern")
        elif "pattern" in node:
            try:
                inner = self.rules.add("pattern", pattern_rule(node["pattern"]))
            except Untranslatable:
                self._hold(where, "pattern")
            if inner is not None and sized:
                self._hold(where, "minLength/maxLength")
        if inner is None:
            char = self.rules.add("char", JSON_CHAR)
            if not sized:
                inner = f"{char}*"
            elif hi is None:
                inner = f"{char}{{{lo},}}"
            else:
                inner = f"{char}{{{lo},{hi}}}"
        return f'"\\"" {inner} "\\""'

    def _number(self, node: dict[str, Any], integer: bool, where: str) -> str:
        lo, lo_strict, hi, hi_strict = None, False, None, False
        if "minimum" in node:
            lo = node["minimum"]
        if "exclusiveMinimum" in node and (lo is None or node["exclusiveMinimum"] >= lo):
            lo, lo_strict = node["exclusiveMinimum"], True
        if "maximum" in node:
            hi = node["maximum"]
        if "exclusiveMaximum" in node and (hi is None or node["exclusiveMaximum"] <= hi):
            hi, hi_strict = node["exclusiveMaximum"], True
        spec = NumberSpec(integer=integer, minimum=lo, minimum_strict=lo_strict, maximum=hi, maximum_strict=hi_strict,
                          multiple=node.get("multipleOf"))
        try:
            body, exact = number_rule(self.rules, spec)
        except Unsatisfiable as e:
            raise refuse(self.tool, where, f"{e}.") from None
        if not exact:
            self._hold(where, "multipleOf")
        return self.rules.add("integer" if integer else "number", body)

    def _array(self, node: dict[str, Any], where: str, hint: str) -> str:
        lo, hi = node.get("minItems", 0), node.get("maxItems")
        if hi is not None and hi < lo:
            raise refuse(self.tool, where, "'maxItems' is less than 'minItems'.")
        prefix = node.get("prefixItems", [])
        heads = [self.rules.add(f"{hint}-item{i}", self.visit(p, f"{where}/prefixItems/{i}", f"{hint}-item{i}"))
                 for i, p in enumerate(prefix)]
        items = node.get("items", {})
        tail = None if items is False else self.rules.add(
            f"{hint}-item", self.visit(items, f"{where}/items", f"{hint}-item"))
        if tail is None and lo > len(prefix):
            raise refuse(self.tool, where, "'minItems' asks for more items than the array may hold.")
        sep = f'"," {WS}'

        def elements(i: int) -> str:
            if hi is not None and i >= hi:
                return ""
            if i < len(heads):
                rest = elements(i + 1)
                one = (f"{sep} " if i else "") + heads[i] + (f" {rest}" if rest else "")
                return one if i < lo else f"( {one} )?"
            if tail is None:
                return ""
            need = max(lo - i, 0)
            more = None if hi is None else hi - i
            if i == 0:
                first = tail
                rest_need, rest_more = max(need - 1, 0), None if more is None else more - 1
                reps = _repeat(f"( {sep} {tail} )", rest_need, rest_more)
                one = f"{first} {reps}".strip()
                return one if need else f"( {one} )?"
            return _repeat(f"( {sep} {tail} )", need, more)

        body = elements(0)
        return f'"[" {WS} {body} {WS} "]"' if body else f'"[" {WS} "]"'

    def _object(self, node: dict[str, Any], where: str, hint: str) -> str:
        properties: dict[str, Any] = dict(node.get("properties", {}))
        required = node.get("required", [])
        extra = node.get("additionalProperties", True)
        for name in required:
            if name not in properties:
                if extra is False:
                    raise refuse(self.tool, f"{where}/required", f"'{name}' is required but not allowed.")
                properties[name] = extra if isinstance(extra, dict) else {}
        if not properties:
            if extra is False:
                return f'"{{" {WS} "}}"'
            value = self._any_value() if extra is True else self.rules.add(
                f"{hint}-value", self.visit(extra, f"{where}/additionalProperties", f"{hint}-value"))
            key = self.rules.add("string", f'"\\"" {self.rules.add("char", JSON_CHAR)}* "\\""')
            pair = f'{key} {WS} ":" {WS} {value}'
            return f'"{{" {WS} ( {pair} ( "," {WS} {pair} )* )? {WS} "}}"'
        pairs = []
        for name, sub in properties.items():
            at = f"{where}/properties/{escape(name)}"
            value = self.rules.add(f"{hint}-{name}", self.visit(sub, at, f"{hint}-{name}"))
            pairs.append((name in required, f'{literal(json.dumps(name, ensure_ascii=False))} {WS} ":" {WS} {value}'))
        memo: dict[tuple[int, bool], str] = {}

        def seq(i: int, first: bool) -> str:
            if (i, first) in memo:
                return memo[i, first]
            if i == len(pairs):
                return ""
            need, pair = pairs[i]
            lead = pair if first else f'"," {WS} {pair}'
            after = seq(i + 1, False)
            take = f"{lead} {after}".strip()
            if need:
                out = take
            else:
                skip = seq(i + 1, first)
                out = f"( {take} )" + (f" | {skip}" if skip else "")
                out = self.rules.add(f"{hint}-props", out) if skip else f"( {take} )?"
            memo[i, first] = out
            return out

        return f'"{{" {WS} {seq(0, True)} {WS} "}}"'

    def _any_value(self) -> str:
        if self._any is None:
            name = self.rules.reserve("value")
            self._any = name
            char = self.rules.add("char", JSON_CHAR)
            string = self.rules.add("string", f'"\\"" {char}* "\\""')
            number, _ = number_rule(self.rules, NumberSpec(integer=False))
            number_name = self.rules.add("number", number)
            pair = f'{string} {WS} ":" {WS} {name}'
            obj = self.rules.add("object", f'"{{" {WS} ( {pair} ( "," {WS} {pair} )* )? {WS} "}}"')
            arr = self.rules.add("array", f'"[" {WS} ( {name} ( "," {WS} {name} )* )? {WS} "]"')
            self.rules.define(name, f'{obj} | {arr} | {string} | {number_name} | "true" | "false" | "null"')
        return self._any


def _repeat(unit: str, least: int, most: int | None) -> str:
    if most is not None and most <= 0:
        return ""
    if most is None:
        return f"{unit}{{{least},}}" if least else f"{unit}*"
    return f"{unit}{{{least},{most}}}"


def _types(value: Any) -> set[str]:
    if value is None:
        return set()
    return set(value if isinstance(value, list) else [value])


def _implied(node: dict[str, Any]) -> set[str]:
    """The types a schema without ``type`` speaks of (none: any value)."""
    if any(k in node for k in ("properties", "additionalProperties", "required")):
        return {"object"}
    if any(k in node for k in ("items", "prefixItems", "minItems", "maxItems")):
        return {"array"}
    if any(k in node for k in ("pattern", "format", "minLength", "maxLength")):
        return {"string"}
    if any(k in node for k in NUMERIC):
        return {"number"}
    return set()


def _same(a: Any, b: Any) -> bool:
    """JSON equality (1 == 1.0, but true is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and (isinstance(a, (int, Decimal)) == isinstance(b, (int, Decimal)))


def _disjoint(branches: list[Any]) -> bool:
    """Whether no value can match two ``oneOf`` branches (told by their types or constants)."""
    seen: set[str] = set()
    for branch in branches:
        if not isinstance(branch, dict):
            return False
        kinds = _types(branch.get("type")) if "type" in branch else set()
        if not kinds:
            return False
        if "integer" in kinds:
            kinds = kinds | {"number"}
        if "number" in kinds:
            kinds = kinds | {"integer"}
        if seen & kinds:
            return False
        seen |= kinds
    return True
