"""EQL backend: golden tables, escaping, the eql package as independent parser and engine,
and the recorded scrcons.exe events."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from conftest import RULES, shared_path
from helpers import sigma_rule
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_wmi.api import compile_rule, load
from sigma_wmi.backends.elastic import EqlBackend, EqlGenerator, eql_field, eql_string
from sigma_wmi.backends.elastic_regex import lucene_regex
from sigma_wmi.errors import SigmaWmiError, UnsupportedError
from sigma_wmi.model import Match, Op, Pattern, Regex, Wildcard

eql = pytest.importorskip("eql")
from eql.parser import elasticsearch_syntax, ignore_missing_functions, parse_query  # noqa: E402

EXAMPLES = 100_000 if os.environ.get("SIGMA_WMI_LONG") else 300
SCRCONS_EQL = (
    'process where event.type == "start" and process.executable : "C:\\\\WINDOWS\\\\system32\\\\wbem\\\\scrcons.exe" '
    'and process.parent.executable : "C:\\\\Windows\\\\System32\\\\svchost.exe"'
)


def _unescape(cls: Any, text: str) -> str:
    """eql 1.0's String.unescape with one fix: its `\\u\\{.+\\}` is greedy, so a string with
    two \\u{..} escapes fails to parse back. Same grammar, same escapes, lazy match."""
    def one(sub: re.Match[str]) -> str:
        token = sub.group()
        if token.startswith("\\u{"):
            return chr(int(token[3:-1], 16))
        return str(cls.reverse_patterns[token])
    return re.sub(r"\\u\{[0-9A-Fa-f]{2,8}\}|\\[^u]", one, text)


def parse(query: str) -> Any:
    with elasticsearch_syntax, ignore_missing_functions, \
            mock.patch.object(eql.ast.String, "unescape", classmethod(_unescape)):
        return parse_query(query)


def eql_of(detection: str, **kwargs: Any) -> str:
    options = {k: kwargs.pop(k) for k in ("profile",) if k in kwargs}
    return compile_rule(sigma_rule(detection, **kwargs), "eql", **options).text


# ---------------------------------------------------------------------------
# Escaping
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("plain", '"plain"'),
    ("C:\\Windows", '"C:\\\\Windows"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("a\nb\rc\td", '"a\\nb\\rc\\td"'),
    ("\x00\x1f\x7f", '"\\u{00}\\u{1F}\\u{7F}"'),
    ("\u2028", '"\\u{2028}"'),
    ("*?", '"*?"'),  # not escapes in EQL strings: the operator decides
    ("'", '"\'"'),
    ("ü€", '"ü€"'),
    ("", '""'),
])
def test_eql_string(text: str, expected: str) -> None:
    assert eql_string(text) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("process.executable", "process.executable"),
    ("winlog.event_data.Some-Field", "`winlog.event_data.Some-Field`"),
    ("a.in", "`a.in`"),
    ("Event Type", "`Event Type`"),
    ("_x9", "_x9"),
    ("9lives", "`9lives`"),
])
def test_eql_field(name: str, expected: str) -> None:
    assert eql_field(name) == expected
    parse(f"any where {expected} : \"x\"")


def test_eql_field_with_backquote_is_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        eql_field("a`b")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_eql_string_round_trips_through_the_eql_parser(text: str) -> None:
    query = parse(f"any where x : {eql_string(text)}")
    call = query.first.query
    assert call.arguments[1].value == text


def _unregex(literal: str) -> str:
    """Undo `lucene_regex_literal`: every escape is a backslash before one character."""
    assert re.fullmatch(r"(\\.|[^\\.*+?|{}\[\]()\"#@&<>~])*", literal, re.S), literal
    return re.sub(r"\\(.)", r"\1", literal, flags=re.S)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_equality_of_any_string_round_trips(text: str) -> None:
    """Compile field == text, parse it with the eql package, recover the text."""
    match = Match("process.command_line", Op.EQUALS, (Pattern.literal(text),))
    query = parse("process where " + EqlGenerator([]).generate(match))
    node = query.first.query
    assert node.arguments[0].base == "process"
    if "*" in text or "?" in text:  # `:` would read them as wildcards: a case-insensitive regex instead
        assert node.name == "match"
        assert _unregex(node.arguments[1].value) == text
    else:
        assert node.name == "wildcard"
        assert node.arguments[1].value == text


@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(min_size=1), st.sampled_from([Wildcard.MANY, Wildcard.ONE])), max_size=6))
def test_wildcard_patterns_round_trip(parts: list[str | Wildcard]) -> None:
    pattern = Pattern(tuple(parts))
    match = Match("f", Op.WILDCARD, (pattern,))
    node = parse("any where " + EqlGenerator([]).generate(match)).first.query
    value = node.arguments[1].value
    if node.name == "wildcard":
        assert value == "".join(p if isinstance(p, str) else p.value for p in pattern.parts)
    else:  # a literal '*' or '?' in the text: a regex of escaped literals, '.*' and '.'
        assert node.name == "match"
        decoded: list[str | Wildcard] = []
        for token in re.findall(r"\\.|\.\*|\.|.", value, re.S):
            if token == ".*":
                decoded.append(Wildcard.MANY)
            elif token == ".":
                decoded.append(Wildcard.ONE)
            else:
                assert token.isalnum() or token.startswith("\\") or len(token) == 1
                decoded.append(token[-1] if token.startswith("\\") else token)
        assert Pattern(tuple(decoded)) == pattern


# ---------------------------------------------------------------------------
# Golden table: Sigma detection → EQL (ecs profile)
# ---------------------------------------------------------------------------

P = 'process where event.type == "start" and '

GOLDEN = [
    ("sel: {Image|endswith: '\\scrcons.exe'}\ncondition: sel",
     P + 'process.executable : "*\\\\scrcons.exe"'),
    ("sel: {CommandLine|contains: ['a', 'b']}\ncondition: sel",
     P + 'process.command_line : ("*a*", "*b*")'),
    ("sel: {CommandLine: 'a*b?c'}\ncondition: sel",
     P + 'process.command_line : "a*b?c"'),
    ("sel: {CommandLine: 'a\\*b'}\ncondition: sel",
     P + 'process.command_line regex~ "a\\\\*b"'),
    ("sel: {CommandLine|contains: 'x?y\\?'}\ncondition: sel",
     P + 'process.command_line regex~ ".*x.y\\\\?.*"'),
    ("sel: {CommandLine|cased: 'Abc'}\ncondition: sel",
     P + 'process.command_line == "Abc"'),
    ("sel: {CommandLine|cased|contains: 'Abc'}\ncondition: sel",
     P + 'process.command_line like "*Abc*"'),
    ("sel: {CommandLine|re: '^a\\d+$'}\ncondition: sel",
     P + 'process.command_line regex "a[0-9]+"'),
    ("sel: {CommandLine|re|i: 'evil'}\ncondition: sel",
     P + 'process.command_line regex~ ".*evil.*"'),
    ("sel: {ProcessId: 4}\ncondition: sel",
     P + "process.pid == 4"),
    ("sel: {ProcessId|gt: 4}\ncondition: sel",
     P + "process.pid > 4"),
    ("sel: {CommandLine: null}\ncondition: sel",
     P + '(process.command_line == null or process.command_line == "")'),
    ("sel: {CommandLine|exists: true}\ncondition: sel",
     P + "process.command_line != null"),
    ("a: {Image|endswith: '\\x.exe'}\nb: {CommandLine|contains: y}\ncondition: a and not b",
     # under `not`, a test also asserts presence: EQL's `not null` would drop events without the field
     P + 'process.executable : "*\\\\x.exe" and not (process.command_line != null and process.command_line : "*y*")'),
    ("a: {Image|endswith: '\\x.exe'}\nb: {CommandLine|contains: y}\ncondition: a or b",
     P + '(process.executable : "*\\\\x.exe" or process.command_line : "*y*")'),
    ("sel: {Image: 'C:\\a \"q\".exe'}\ncondition: sel",
     P + 'process.executable : "C:\\\\a \\"q\\".exe"'),
]


@pytest.mark.parametrize(("detection", "expected"), GOLDEN)
def test_golden(detection: str, expected: str) -> None:
    text = eql_of(detection)
    assert text == expected
    parse(text)


@pytest.mark.parametrize(("profile", "category", "detection", "expected"), [
    # Elastic Defend: event.type/event.action say which registry or file operation it was
    ("ecs", "registry_set", "TargetObject|contains: Run",
     'registry where event.type == "change" and registry.path : "*Run*"'),
    ("ecs", "registry_delete", "TargetObject|contains: Run",
     'registry where event.type == "deletion" and registry.path : "*Run*"'),
    ("ecs", "registry_add", "TargetObject|contains: Run",
     'registry where event.type == "creation" and registry.path : "*Run*"'),
    ("ecs", "file_delete", "TargetFilename|endswith: '.ps1'",
     'file where event.type == "deletion" and file.path : "*.ps1"'),
    ("ecs", "file_event", "TargetFilename|endswith: '.ps1'",
     'file where event.type == "creation" and file.path : "*.ps1"'),
    ("ecs", "network_connection", "DestinationPort: 4444",
     'network where event.action in ("connection_attempted", "connection_accepted") and destination.port == 4444'),
    # Sysmon in ECS: the event id tells Sysmon 12 (add/delete) from 13 (set)
    ("winlogbeat", "registry_set", "TargetObject|contains: Run",
     'registry where event.code == "13" and registry.path : "*Run*"'),
    ("winlogbeat", "registry_delete", "TargetObject|contains: Run",
     'registry where event.code == "12" and winlog.event_data.EventType in ("DeleteKey", "DeleteValue") '
     'and registry.path : "*Run*"'),
    ("elastic_agent", "process_access", "GrantedAccess: '0x1410'",
     'process where event.code == "10" and winlog.event_data.GrantedAccess : "0x1410"'),
    ("winlogbeat", "wmi_event", "EventType: WmiConsumerEvent",
     'any where winlog.channel : "Microsoft-Windows-Sysmon/Operational" and event.code : ("19", "20", "21") '
     'and winlog.event_data.EventType : "WmiConsumerEvent"'),
])
def test_event_kind_conditions_from_the_log_source(profile: str, category: str, detection: str,
                                                   expected: str) -> None:
    text = eql_of(f"sel: {{{detection}}}\ncondition: sel", category=category, profile=profile)
    assert text == expected
    parse(text)


@pytest.mark.parametrize(("profile", "category", "service"), [
    ("ecs", "wmi_event", None), ("ecs", "ps_script", None), ("ecs", "", "security"),
    ("ecs", "process_access", None), ("winlogbeat", "process_creation", None),
])
def test_a_log_source_without_an_index_fails_with_no_index(profile: str, category: str,
                                                           service: str | None) -> None:
    rule = sigma_rule("sel: {CommandLine: x}\ncondition: sel", category=category, service=service,
                      product="linux" if profile == "winlogbeat" else "windows")
    with pytest.raises(UnsupportedError, match="no index") as raised:
        compile_rule(rule, "eql", profile=profile)
    assert raised.value.code == "no-index"


def test_channel_condition_for_services() -> None:
    text = eql_of("sel: {EventID: 5861}\ncondition: sel", category="", service="wmi", profile="winlogbeat")
    assert text == 'any where winlog.channel : "Microsoft-Windows-WMI-Activity/Operational" and event.code : "5861"'
    parse(text)


def test_keyword_search_goes_to_message() -> None:
    rule = sigma_rule("keywords: ['evil thing']\ncondition: keywords")
    out = compile_rule(rule, "eql")
    assert out.text.endswith('message : "*evil thing*"')
    assert any(d.code == "keyword-field" for d in out.diagnostics)


def test_winlogbeat_profile_puts_unknown_windows_fields_under_event_data() -> None:
    text = eql_of("sel: {SomethingNew: x}\ncondition: sel", profile="winlogbeat")
    assert text == P + "winlog.event_data.SomethingNew : \"x\""


def test_a_field_the_index_lacks_fails_naming_the_sigma_field_and_line() -> None:
    rule = sigma_rule("sel:\n  CommandLine: a\n  SomethingNew: x\ncondition: sel")
    with pytest.raises(UnsupportedError, match="'SomethingNew'") as raised:
        compile_rule(rule, "eql")
    assert raised.value.code == "field-not-in-schema"
    assert raised.value.origin is not None and raised.value.origin.line is not None


def test_an_or_branch_on_an_absent_field_is_dropped_with_a_warning() -> None:
    out = compile_rule(sigma_rule("a: {CommandLine: a}\nb: {SomethingNew: x}\ncondition: a or b"), "eql")
    assert out.text == P + 'process.command_line : "a"'
    assert [d.code for d in out.diagnostics] == ["absent-field"]


def test_fieldref_is_unsupported() -> None:
    rule = sigma_rule("sel: {Image|fieldref: ParentImage}\ncondition: sel")
    with pytest.raises(UnsupportedError, match="fieldref"):
        compile_rule(rule, "eql")


def test_regex_with_lookahead_is_unsupported_with_a_reason() -> None:
    rule = sigma_rule("sel: {CommandLine|re: 'a(?=b)'}\ncondition: sel")
    with pytest.raises(SigmaWmiError, match="lookaround"):
        compile_rule(rule, "eql")


@pytest.mark.parametrize(("pattern", "flags", "expected"), [
    ("abc", "", ".*abc.*"),
    ("^abc$", "", "abc"),
    ("^a|b$", "", "a.*|.*b"),
    ("(^[a-z]{4}$)|(^x$)", "", "[a-z]{4}|x"),
    ("a\\d{2,}\\s?\\W", "", ".*a[0-9]{2,}[ \t\n\r\f\x0b]?[^a-zA-Z0-9\\_].*"),
    ("(?i)ab", "", ".*[aA][bB].*"),
    ("a.b", "i", ".*[aA].[bB].*"),
    ("[a-c_]+?x", "i", ".*[a-c\\_A-C]+[xX].*"),
    ("\\.exe\"#@<>~&", "", ".*\\.exe\\\"\\#\\@\\<\\>\\~\\&.*"),
    ("(?:ab|cd)*", "", ".*(ab|cd)*.*"),
    ("\\x41\\u0042", "", ".*AB.*"),
])
def test_lucene_regex(pattern: str, flags: str, expected: str) -> None:
    assert lucene_regex(Regex(pattern, frozenset(flags)), caseless="i" in flags) == expected


@pytest.mark.parametrize("pattern", ["a\\bb", "(a)\\1", "a(?<=b)", "a++", "[[:alpha:]]", "x^y", "(unclosed",
                                     "[\\D]", "*a"])
def test_lucene_regex_rejects_what_it_cannot_express(pattern: str) -> None:
    from sigma_wmi.backends.elastic_regex import RegexError
    with pytest.raises(RegexError):
        lucene_regex(Regex(pattern), caseless=False)


# ---------------------------------------------------------------------------
# The scrcons rule and the recorded events
# ---------------------------------------------------------------------------

def test_scrcons_rule_is_the_expected_eql(scrcons_rule_path: Path) -> None:
    (rule,) = load(scrcons_rule_path)
    for profile in ("ecs", "winlogbeat"):
        out = compile_rule(rule, "eql", profile=profile)
        assert out.text == SCRCONS_EQL
        assert not [d for d in out.diagnostics if d.code == "case-sensitive"]  # ':' keeps Sigma's case rule
        parse(out.text)


def _ecs_events(path: Path) -> list[Any]:
    from sigma_wmi.events import read_events, to_ecs

    events = []
    for raw in read_events(path):
        doc = to_ecs(raw)
        category = doc.get("event", {}).get("category")
        events.append(eql.Event(category if isinstance(category, str) else "unknown", 0, doc))
    return events


def _hits(query: str, events: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    engine = eql.PythonEngine()
    engine.add_query(parse(query))
    engine.add_output_hook(lambda result: found.extend(e.data for e in result.events))
    engine.stream_events(events)
    return found


def test_eql_engine_finds_the_recorded_scrcons_event(scrcons_rule_path: Path) -> None:
    positives = _ecs_events(shared_path("data", "events", "wmi_persistence_positives_process.jsonl"))
    (rule,) = load(scrcons_rule_path)
    query = compile_rule(rule, "eql").text
    hits = _hits(query, positives)
    # Both recordings (Sysmon 1 and Security 4688) are the same start of scrcons.exe.
    assert len(hits) == 2
    for hit in hits:
        assert hit["process"]["executable"] == "C:\\Windows\\System32\\wbem\\scrcons.exe"  # case differs from rule


@pytest.mark.parametrize("name", ["benign_nonwmi_process_creation.jsonl",
                                  "benign_os_background_process_creation.jsonl"])
def test_eql_engine_finds_no_benign_event(scrcons_rule_path: Path, name: str) -> None:
    events = _ecs_events(shared_path("data", "events", name))
    (rule,) = load(scrcons_rule_path)
    assert _hits(compile_rule(rule, "eql").text, events) == []
    # the near misses (svchost.exe → WmiPrvSE.exe) do reach the parent condition
    near = _hits('process where process.parent.executable : "C:\\\\Windows\\\\System32\\\\svchost.exe"', events)
    assert near or name == "benign_nonwmi_process_creation.jsonl"


# ---------------------------------------------------------------------------
# Every repository rule: parses, deterministic
# ---------------------------------------------------------------------------

def _repo_rules() -> list[Any]:
    return load(RULES)


@pytest.mark.parametrize("profile", ["ecs", "elastic_agent", "winlogbeat"])
def test_every_repository_rule_parses(profile: str) -> None:
    backend = EqlBackend(profile=profile)
    rules = _repo_rules()
    assert rules
    for rule in rules:
        try:
            text = backend.convert(rule).text
        except UnsupportedError as err:
            # Elastic Defend records no PowerShell logs nor Sysmon WMI events
            assert profile == "ecs" and err.code == "no-index", err
            continue
        parse(text)
        assert backend.convert(rule).text == text  # deterministic


def test_outputs_carry_origin_and_target() -> None:
    rule = sigma_rule("keywords: [evil]\ncondition: keywords")
    diagnostics = compile_rule(rule, "eql").diagnostics
    # the keyword search moves to `message`, which is analysed text on Elastic Defend
    assert [d.code for d in diagnostics] == ["keyword-field", "text-field"]
    for diagnostic in diagnostics:
        assert diagnostic.target == "eql" and diagnostic.origin is not None
        assert json.dumps(diagnostic.to_json())
