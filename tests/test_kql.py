"""KQL backend: escaping checked against an independent reading of Kibana's kuery grammar
(tests/kql_grammar.py), golden tables, case handling against recorded events."""

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
from kql_grammar import WILDCARD, KqlSyntaxError, Wild, parse

from sigma_wmi.api import compile_rule, load
from sigma_wmi.backends.elastic import JS_WHITESPACE, KqlBackend, KqlGenerator, kql_quoted, kql_unquoted
from sigma_wmi.errors import Level, UnsupportedError
from sigma_wmi.model import Match, Op, Pattern, Wildcard
from tests.helpers import ecs_events

EXAMPLES = 100_000 if os.environ.get("SIGMA_WMI_LONG") else 300


def kql_of(detection: str, **kwargs: Any) -> tuple[str, list[str]]:
    options = {k: kwargs.pop(k) for k in ("profile",) if k in kwargs}
    out = compile_rule(sigma_rule(detection, **kwargs), "kql", **options)
    return out.text, [d.code for d in out.diagnostics]


# ---------------------------------------------------------------------------
# Escaping
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("plain", '"plain"'),
    ("C:\\Windows\\temp", '"C:\\\\Windows\\\\temp"'),  # \t would otherwise be a tab
    ('a "b"', '"a \\"b\\""'),
    ("a*b (c) or d: <e>", '"a*b (c) or d: <e>"'),  # nothing else is special in quotes
    ("\\u0041", '"\\\\u0041"'),
    ("", '""'),
])
def test_kql_quoted(text: str, expected: str) -> None:
    assert kql_quoted(text) == expected
    assert parse(f"f:{expected}") == ("is", "f", text, True)


@pytest.mark.parametrize(("parts", "expected"), [
    (["abc"], "abc"),
    (["a\\b(c)d:e<f>g\"h*i{j}"], 'a\\\\b\\(c\\)d\\:e\\<f\\>g\\"h\\*i\\{j\\}'),
    ([Wildcard.MANY, "x y", Wildcard.MANY], "*x y*"),
    (["a or b"], "a \\or b"),
    (["a OR b"], "a \\OR b"),
    (["a and"], "a \\and"),
    (["color or"], "color \\or"),  # 'or' inside a word is not a keyword
    (["not x"], "\\u006eot x"),  # '\not' would read as a newline and 'ot'
    (["NOT x"], "\\NOT x"),
    (["cannot x"], "can\\u006eot x"),  # Not needs no space before it
    (["knot", Wildcard.MANY], "knot*"),
    (["a\tb\nc\rd"], "a\\tb\\nc\\rd"),
    (["a\u00a0or\u00a0b"], "a\u00a0\\or\u00a0b"),
])
def test_kql_unquoted(parts: list[Any], expected: str) -> None:
    assert kql_unquoted(parts) == expected
    value = parse(f"f:{expected}")[2]
    text = "".join("*" if p is Wildcard.MANY else p for p in parts)
    if isinstance(value, Wild):
        assert "".join("*" if p is WILDCARD else p for p in value.parts) == text
    else:
        assert value == text


def test_kql_unquoted_rejects_single_wildcards() -> None:
    with pytest.raises(ValueError):
        kql_unquoted(["a", Wildcard.ONE])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_equality_of_any_string_round_trips(text: str) -> None:
    match = Match("process.command_line", Op.EQUALS, (Pattern.literal(text),))
    query = KqlGenerator([], lambda name: False).generate(match)
    assert parse(query) == ("is", "process.command_line", text, True)


def _expected_wild(pattern: Pattern) -> tuple[Any, ...]:
    """What Kibana should read back: '?' widened to '*', edge whitespace kept behind '*'."""
    parts: list[Any] = [WILDCARD if isinstance(p, Wildcard) else p for p in pattern.parts]
    if isinstance(parts[0], str) and parts[0][0] in JS_WHITESPACE:
        parts.insert(0, WILDCARD)
    if isinstance(parts[-1], str) and parts[-1][-1] in JS_WHITESPACE:
        parts.append(WILDCARD)
    merged: list[Any] = []
    for part in parts:
        if not (part is WILDCARD and merged and merged[-1] is WILDCARD):
            merged.append(part)
    return tuple(merged)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(min_size=1), st.sampled_from([Wildcard.MANY, Wildcard.ONE])), min_size=1,
                max_size=6).filter(lambda parts: any(isinstance(p, Wildcard) for p in parts)))
def test_wildcard_patterns_round_trip(parts: list[Any]) -> None:
    pattern = Pattern(tuple(parts))
    diagnostics: list[Any] = []
    query = KqlGenerator(diagnostics, lambda name: False).generate(Match("f", Op.WILDCARD, (pattern,)))
    kind, field, value, phrase = parse(query)
    assert (kind, field, phrase) == ("is", "f", False)
    assert isinstance(value, Wild)
    assert value.parts == _expected_wild(pattern)
    first, last = pattern.parts[0], pattern.parts[-1]
    edge_space = (isinstance(first, str) and first[0] in JS_WHITESPACE) or (
        isinstance(last, str) and last[-1] in JS_WHITESPACE)
    assert (Wildcard.ONE in pattern.parts or edge_space) == bool(diagnostics)


@pytest.mark.parametrize("query", ["f:(a or", "f:\"x", "f:x)", "f < ", "(f:a"])
def test_grammar_rejects_broken_queries(query: str) -> None:
    with pytest.raises(KqlSyntaxError):
        parse(query)


# ---------------------------------------------------------------------------
# Golden tables
# ---------------------------------------------------------------------------

P = 'event.category:"process" and event.type:"start" and '

GOLDEN_ECS = [
    ("sel: {Image|endswith: '\\Scrcons.EXE'}\ncondition: sel", P + "process.executable.caseless:*\\\\scrcons.exe", []),
    ("sel: {CommandLine|contains: ['A B', 'c']}\ncondition: sel",
     P + "process.command_line.caseless:(*a b* or *c*)", []),
    ("sel: {CommandLine|cased: 'Abc'}\ncondition: sel", P + 'process.command_line:"Abc"', []),
    ("sel: {OriginalFileName: 'WMIC.exe'}\ncondition: sel", P + 'process.pe.original_file_name:"WMIC.exe"',
     ["case-sensitive"]),
    ("sel: {CommandLine: 'a?b'}\ncondition: sel", P + "process.command_line.caseless:a*b", ["single-wildcard"]),
    ("sel: {CommandLine: 'a\\*b'}\ncondition: sel", P + 'process.command_line.caseless:"a*b"', []),
    ("sel: {CommandLine|contains: 'a\\*b'}\ncondition: sel", P + "process.command_line.caseless:*a\\*b*", []),
    ("sel: {ProcessId: 4}\ncondition: sel", P + "process.pid:4", []),
    ("sel: {ProcessId|lte: 4}\ncondition: sel", P + "process.pid <= 4", []),
    ("sel: {CommandLine: null}\ncondition: sel", P + "not process.command_line:*", []),
    ("sel: {CommandLine|exists: true}\ncondition: sel", P + "process.command_line:*", []),
    ("a: {Image|endswith: '\\x.exe'}\nb: {CommandLine|contains: y}\ncondition: a and not b",
     P + "process.executable.caseless:*\\\\x.exe and not process.command_line.caseless:*y*", []),
    ("a: {Image|endswith: '\\x.exe'}\nb: {CommandLine|contains: y}\ncondition: a or b",
     P + "(process.executable.caseless:*\\\\x.exe or process.command_line.caseless:*y*)", []),
    ("sel: {CommandLine|re: '^abc$'}\ncondition: sel", P + 'process.command_line:"abc"', []),
    ("sel: {CommandLine|re: 'a.*b'}\ncondition: sel", P + "process.command_line:*a*b*", []),
    ("sel: {CommandLine|re: 'a\\d+b'}\ncondition: sel", P + "process.command_line:*a*b*", ["regex-approximated"]),
    ("sel: {CommandLine|contains: ' or '}\ncondition: sel", P + "process.command_line.caseless:* \\or *", []),
]


@pytest.mark.parametrize(("detection", "expected", "codes"), GOLDEN_ECS)
def test_golden_ecs(detection: str, expected: str, codes: list[str]) -> None:
    text, diagnostics = kql_of(detection)
    assert text == expected
    assert diagnostics == codes
    parse(text)


def test_keyword_search_is_unfielded_and_contains() -> None:
    text, codes = kql_of("keywords: ['evil thing', 'or']\ncondition: keywords")
    assert text == P + "(*evil thing* or *or*)"
    assert codes == ["case-sensitive"]
    tree = parse(text)
    assert tree[0] == "and" and tree[1][2][0] == "or"


def test_fieldref_is_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        compile_rule(sigma_rule("sel: {Image|fieldref: ParentImage}\ncondition: sel"), "kql")


def test_winlogbeat_has_no_caseless_and_says_so_once() -> None:
    out = compile_rule(sigma_rule("sel: {Image|endswith: '\\X.exe', CommandLine|contains: Y}\ncondition: sel"),
                       "kql", profile="winlogbeat")
    assert out.text == P + "process.executable:*\\\\X.exe and process.command_line:*Y*"
    (diagnostic,) = out.diagnostics
    assert diagnostic.code == "case-sensitive" and diagnostic.level is Level.WARNING
    assert "process.executable, process.command_line" in diagnostic.message


# ---------------------------------------------------------------------------
# Case: the rule says C:\WINDOWS\system32, the event C:\Windows\System32
# ---------------------------------------------------------------------------

def _value(doc: dict[str, Any], field: str) -> Any:
    caseless = field.endswith(".caseless")
    node: Any = doc
    for part in (field[: -len(".caseless")] if caseless else field).split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node.lower() if caseless and isinstance(node, str) else node


def evaluate(tree: Any, doc: dict[str, Any]) -> bool:
    """Kibana's meaning of a parsed query on keyword fields: exact, case-sensitive terms;
    `.caseless` subfields hold the lower-cased value (Elastic Defend's normalizer)."""
    kind = tree[0]
    if kind == "or":
        return any(evaluate(t, doc) for t in tree[1])
    if kind == "and":
        return all(evaluate(t, doc) for t in tree[1])
    if kind == "not":
        return not evaluate(tree[1], doc)
    if kind == "is":
        _, field, value, _phrase = tree
        actual = _value(doc, field)
        if actual is None:
            return False
        if isinstance(value, Wild):
            regex = "".join(".*" if p is WILDCARD else re.escape(p) for p in value.parts)
            return re.fullmatch(regex, str(actual), re.S) is not None
        return str(actual) == str(value)
    raise AssertionError(f"not used by these tests: {kind}")


def test_case_scrcons_matches_on_caseless_or_carries_a_diagnostic(scrcons_rule_path: Path) -> None:
    (rule,) = load(scrcons_rule_path)
    positives = ecs_events("wmi_persistence_positives_process.jsonl")
    ecs = compile_rule(rule, "kql", profile="ecs")
    assert not ecs.diagnostics
    assert sum(evaluate(parse(ecs.text), doc) for doc in positives) == 2
    winlogbeat = compile_rule(rule, "kql", profile="winlogbeat")
    # The same query on case-sensitive keyword fields misses the event, and says it can.
    assert sum(evaluate(parse(winlogbeat.text), doc) for doc in positives) == 0
    assert [d.code for d in winlogbeat.diagnostics] == ["case-sensitive"]


def test_no_benign_event_matches(scrcons_rule_path: Path) -> None:
    (rule,) = load(scrcons_rule_path)
    tree = parse(compile_rule(rule, "kql").text)
    for name in ("benign_nonwmi_process_creation.jsonl", "benign_os_background_process_creation.jsonl"):
        assert not any(evaluate(tree, doc) for doc in ecs_events(name))


@pytest.mark.parametrize("profile", ["ecs", "winlogbeat"])
def test_every_repository_rule_parses(profile: str) -> None:
    backend = KqlBackend(profile=profile)
    for rule in load(RULES):
        try:
            text = backend.convert(rule).text
        except UnsupportedError:
            continue
        parse(text)
