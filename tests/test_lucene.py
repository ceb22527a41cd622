"""Lucene backend: escaping proven with luqum (an independent Lucene query parser),
golden tables, case handling against recorded events."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import RULES
from helpers import sigma_rule
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_wmi.api import compile_rule, load
from sigma_wmi.backends.elastic import LuceneBackend, LuceneGenerator, lucene_phrase, lucene_term
from sigma_wmi.errors import UnsupportedError
from sigma_wmi.model import Match, Op, Pattern, Wildcard
from tests.helpers import ecs_events

luqum_parser = pytest.importorskip("luqum.parser")
from luqum import tree as lt  # noqa: E402

EXAMPLES = 100_000 if os.environ.get("SIGMA_WMI_LONG") else 300


def parse(query: str) -> Any:
    return luqum_parser.parser.parse(query)


def phrase_text(node: Any) -> str:
    assert isinstance(node, lt.Phrase)
    return re.sub(r"\\(.)", r"\1", node.value[1:-1], flags=re.S)


def word_pattern(node: Any) -> Pattern:
    """A Lucene term back to text and wildcards: `\\x` is x, bare `*` and `?` are wildcards."""
    parts: list[str | Wildcard] = []
    if isinstance(node, lt.Regex):  # patterns with a newline: escaped literals, '.*' and '.'
        for token in re.findall(r"\\.|\.\*|.", node.value[1:-1], re.S):
            parts.append({".*": Wildcard.MANY, ".": Wildcard.ONE}.get(token, token[-1]))
        return Pattern(tuple(parts))
    assert isinstance(node, lt.Word)
    for token in re.findall(r"\\.|.", node.value, re.S):
        if token == "*":
            parts.append(Wildcard.MANY)
        elif token == "?":
            parts.append(Wildcard.ONE)
        else:
            parts.append(token[-1])
    return Pattern(tuple(parts))


def lucene_of(detection: str, **kwargs: Any) -> tuple[str, list[str]]:
    options = {k: kwargs.pop(k) for k in ("profile",) if k in kwargs}
    out = compile_rule(sigma_rule(detection, **kwargs), "lucene", **options)
    return out.text, [d.code for d in out.diagnostics]


# ---------------------------------------------------------------------------
# Escaping
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("parts", "expected"), [
    (["abc"], "abc"),
    (["a+b-c=d&e|f>g<h!i(j)k{l}m[n]o^p\"q~r*s?t:u\\v/w"],
     "a\\+b\\-c\\=d\\&e\\|f\\>g\\<h\\!i\\(j\\)k\\{l\\}m\\[n\\]o\\^p\\\"q\\~r\\*s\\?t\\:u\\\\v\\/w"),
    ([Wildcard.MANY, "a b", Wildcard.ONE], "*a\\ b?"),
    (["AND"], "AND"),  # only ever written next to a wildcard, where it is no operator
    (["x\ty"], "x\\\ty"),
])
def test_lucene_term(parts: list[Any], expected: str) -> None:
    assert lucene_term(parts) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("C:\\Windows", '"C:\\\\Windows"'),
    ('a "b" *?', '"a \\"b\\" *?"'),
    ("", '""'),
])
def test_lucene_phrase(text: str, expected: str) -> None:
    assert lucene_phrase(text) == expected
    assert phrase_text(parse(f"f:{expected}").expr) == text


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_equality_of_any_string_round_trips(text: str) -> None:
    query = LuceneGenerator([], lambda name: False).generate(Match("process.command_line", Op.EQUALS,
                                                                    (Pattern.literal(text),)))
    node = parse(query)
    assert isinstance(node, lt.SearchField) and node.name == "process.command_line"
    assert phrase_text(node.expr) == text


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(min_size=1), st.sampled_from([Wildcard.MANY, Wildcard.ONE])), min_size=1,
                max_size=6).filter(lambda parts: any(isinstance(p, Wildcard) for p in parts)))
def test_wildcard_patterns_round_trip(parts: list[Any]) -> None:
    pattern = Pattern(tuple(parts))
    node = parse(LuceneGenerator([], lambda name: False).generate(Match("f", Op.WILDCARD, (pattern,))))
    assert isinstance(node, lt.SearchField) and node.name == "f"
    assert word_pattern(node.expr) == pattern


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=40), st.sampled_from([Op.EQUALS, Op.CONTAINS, Op.STARTSWITH]))
def test_case_folded_regex_matches_every_casing_and_nothing_else(text: str, op: Op) -> None:
    """Without .caseless, Lucene writes a regex; read back by luqum and run by Python's re it
    matches the value in any casing (Sigma's rule) and not a different value."""
    generator = LuceneGenerator([], lambda name: False, lambda name: True)
    node = parse(generator.generate(Match("f", op, (Pattern.literal(text),))))
    assert isinstance(node, lt.SearchField) and isinstance(node.expr, lt.Regex)
    body = node.expr.value[1:-1]
    swapped = "".join(c.swapcase() if len(c.swapcase()) == 1 else c for c in text)
    around = ("x" if op is Op.CONTAINS else "", "" if op is Op.EQUALS else "y")
    for candidate in (text, swapped):
        assert re.fullmatch(body, around[0] + candidate + around[1], re.S)
    assert not re.fullmatch(body, "\x00" + text if op is Op.EQUALS else text[:-1], re.S)
    assert not generator.case_sensitive_fields


# ---------------------------------------------------------------------------
# Golden tables
# ---------------------------------------------------------------------------

P = 'event.category:"process" AND event.type:"start" AND '

GOLDEN_ECS = [
    ("sel: {Image|endswith: '\\Scrcons.EXE'}\ncondition: sel", P + "process.executable.caseless:*\\\\scrcons.exe", []),
    ("sel: {CommandLine|contains: ['A B', 'c']}\ncondition: sel",
     P + "process.command_line.caseless:(*a\\ b* OR *c*)", []),
    ("sel: {CommandLine: 'a?b'}\ncondition: sel", P + "process.command_line.caseless:a?b", []),
    ("sel: {CommandLine: 'a\\?b'}\ncondition: sel", P + 'process.command_line.caseless:"a?b"', []),
    # no .caseless sub-field: both cases of each letter in a regex
    ("sel: {OriginalFileName: 'WMIC.exe'}\ncondition: sel",
     P + "process.pe.original_file_name:/[Ww][Mm][Ii][Cc]\\.[eE][xX][eE]/", []),
    ("sel: {ProcessId|gt: 4}\ncondition: sel", P + "process.pid:{4 TO *}", []),
    ("sel: {ProcessId|lte: 4}\ncondition: sel", P + "process.pid:[* TO 4]", []),
    ("sel: {CommandLine: null}\ncondition: sel", P + "NOT _exists_:process.command_line", []),
    ("sel: {CommandLine|re: '^a/b\\d$'}\ncondition: sel", P + "process.command_line:/a\\/b[0-9]/", []),
    ("sel: {CommandLine|re|i: 'ab'}\ncondition: sel", P + "process.command_line:/.*[aA][bB].*/", []),
    ("sel: {DestinationIp|cidr: '10.0.0.0/8'}\ncondition: sel",
     'event.action:("connection_attempted" OR "connection_accepted") AND destination.ip:"10.0.0.0/8"', []),
    ("a: {Image|endswith: '\\x.exe'}\nb: {CommandLine|contains: y}\ncondition: a or not b",
     P + "(process.executable.caseless:*\\\\x.exe OR (NOT process.command_line.caseless:*y*))", []),
]


@pytest.mark.parametrize(("detection", "expected", "codes"), GOLDEN_ECS)
def test_golden_ecs(detection: str, expected: str, codes: list[str]) -> None:
    category = "network_connection" if "cidr" in detection else "process_creation"
    text, diagnostics = lucene_of(detection, category=category)
    if category == "network_connection":
        expected = 'event.category:"network" AND ' + expected
    assert text == expected
    assert diagnostics == codes
    parse(text)


def test_fieldref_is_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        compile_rule(sigma_rule("sel: {Image|fieldref: ParentImage}\ncondition: sel"), "lucene")


def test_keyword_search_is_an_unfielded_contains() -> None:
    text, codes = lucene_of("keywords: ['evil thing']\ncondition: keywords")
    assert text == P + "*evil\\ thing*"
    assert codes == ["case-sensitive"]
    parse(text)


# ---------------------------------------------------------------------------
# Case
# ---------------------------------------------------------------------------

def _value(doc: dict[str, Any], field: str) -> Any:
    caseless = field.endswith(".caseless")
    node: Any = doc
    for part in (field[: -len(".caseless")] if caseless else field).split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node.lower() if caseless and isinstance(node, str) else node


def evaluate(node: Any, doc: dict[str, Any], field: str | None = None) -> bool:
    """Lucene's meaning on keyword fields (exact, case-sensitive; `.caseless` lower-cased)."""
    if isinstance(node, lt.AndOperation):
        return all(evaluate(c, doc, field) for c in node.children)
    if isinstance(node, lt.OrOperation):
        return any(evaluate(c, doc, field) for c in node.children)
    if isinstance(node, lt.Not):
        return not evaluate(node.a, doc, field)
    if isinstance(node, (lt.Group, lt.FieldGroup)):
        return evaluate(node.expr, doc, field)
    if isinstance(node, lt.SearchField):
        return evaluate(node.expr, doc, node.name)
    assert field is not None
    actual = _value(doc, field)
    if actual is None:
        return False
    if isinstance(node, lt.Phrase):
        return str(actual) == phrase_text(node)
    if isinstance(node, lt.Regex):  # the subset we write: literals, escapes, classes, `.`, `.*`
        return re.fullmatch(node.value[1:-1], str(actual), re.S) is not None
    pattern = word_pattern(node)
    regex = "".join(re.escape(p) if isinstance(p, str) else (".*" if p is Wildcard.MANY else ".")
                    for p in pattern.parts)
    return re.fullmatch(regex, str(actual), re.S) is not None


def test_case_scrcons_matches_on_caseless_or_carries_a_diagnostic(scrcons_rule_path: Path) -> None:
    (rule,) = load(scrcons_rule_path)
    positives = ecs_events("wmi_persistence_positives_process.jsonl")
    ecs = compile_rule(rule, "lucene", profile="ecs")
    assert not ecs.diagnostics
    assert sum(evaluate(parse(ecs.text), doc) for doc in positives) == 2
    # No .caseless on winlogbeat: a case-folded regex keeps the match case-insensitive.
    winlogbeat = compile_rule(rule, "lucene", profile="winlogbeat")
    assert "process.executable:/[Cc]\\:" in winlogbeat.text
    assert sum(evaluate(parse(winlogbeat.text), doc) for doc in positives) == 2
    assert not winlogbeat.diagnostics
    benign = ecs_events("benign_os_background_process_creation.jsonl")
    assert not any(evaluate(parse(ecs.text), doc) for doc in benign)


@pytest.mark.parametrize("profile", ["ecs", "winlogbeat"])
def test_every_repository_rule_parses(profile: str) -> None:
    backend = LuceneBackend(profile=profile)
    for rule in load(RULES):
        try:
            text = backend.convert(rule).text
        except UnsupportedError:
            continue
        parse(text)
