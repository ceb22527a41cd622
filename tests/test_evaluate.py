"""The evaluator's Sigma semantics, one table row per modifier and value kind.

Rules are written as Sigma YAML and read through the real reader, so each row also
checks that the reader's model means what the modifier means.
"""

from __future__ import annotations

import pytest

from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.evaluate import alerting, compile_expr, compile_rule, evaluate, hits, logsource_predicate
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    And,
    LogSource,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Regex,
    Rule,
    Threshold,
    Wildcard,
)
from sigma_wmi.readers import read_text_rules

RULE = """
title: t
logsource: {{product: windows, category: {category}}}
detection:
    sel:
        {field}{modifiers}: {value}
    condition: {condition}
"""


def rule_for(field: str, modifiers: str, value: str, condition: str = "sel",
             category: str = "process_creation"):
    text = RULE.format(field=field, modifiers=modifiers, value=value, condition=condition, category=category)
    return read_text_rules(text, "t.yml")[0]


def matches(field: str, modifiers: str, value: str, event: dict, condition: str = "sel") -> bool:
    return compile_rule(rule_for(field, modifiers, value, condition), with_logsource=False)(event)


SCRCONS = r"C:\Windows\System32\wbem\scrcons.exe"

# (field, modifiers, YAML value, event, expected)
CASES = [
    # plain equality is case-insensitive and exact
    ("Image", "", r"C:\WINDOWS\system32\wbem\scrcons.exe", {"process_path": SCRCONS}, True),
    ("Image", "", r"C:\WINDOWS\system32\wbem\scrcons", {"process_path": SCRCONS}, False),
    ("Image", "", "x", {}, False),
    # wildcards
    ("Image", "", r"'*\SCRCONS.EXE'", {"process_path": SCRCONS}, True),
    # Sigma escapes: a backslash before * ? or \ escapes it, elsewhere it is literal
    ("Image", "", r"'C:\\*\wbem\scr?ons.exe'", {"process_path": SCRCONS}, True),
    ("Image", "", r"'C:\\*\wbem\scr?ons.exe'", {"process_path": r"C:\x\wbem\scrcoons.exe"}, False),
    ("Image", "", r"'C:\*\wbem'", {"process_path": r"C:\x\wbem"}, False),
    ("Image", "", r"'C:\*\wbem'", {"process_path": r"C:*\wbem"}, True),
    ("Image", "", "'*'", {"process_path": ""}, True),
    ("CommandLine", "", "'a*b'", {"command_line": "a\nline\nb"}, True),  # * spans line breaks
    # contains / startswith / endswith, and their lists (OR)
    ("CommandLine", "|contains", "EMBEDDING", {"command_line": "scrcons.exe -Embedding"}, True),
    ("CommandLine", "|contains", "[x, Embed]", {"command_line": "scrcons.exe -Embedding"}, True),
    ("CommandLine", "|contains", "[qq, zz]", {"command_line": "scrcons.exe -Embedding"}, False),
    ("CommandLine", "|contains|all", "[scrcons, embed]", {"command_line": "scrcons.exe -Embedding"}, True),
    ("CommandLine", "|contains|all", "[scrcons, nope]", {"command_line": "scrcons.exe -Embedding"}, False),
    ("Image", "|startswith", r"c:\windows\system32", {"process_path": SCRCONS}, True),
    ("Image", "|endswith", r"\wbem\scrcons.exe", {"process_path": SCRCONS}, True),
    ("Image", "|endswith", "[a.exe, b.exe]", {"process_path": SCRCONS}, False),
    # the model keeps `?` and `*` as wildcards; an escaped one is literal
    ("CommandLine", "|contains", r"'a\*b'", {"command_line": "xa*bx"}, True),
    ("CommandLine", "|contains", r"'a\*b'", {"command_line": "xaZZbx"}, False),
    # case-sensitive modifier
    ("Image", "|cased", SCRCONS, {"process_path": SCRCONS}, True),
    ("Image", "|cased", r"C:\WINDOWS\System32\wbem\scrcons.exe", {"process_path": SCRCONS}, False),
    ("CommandLine", "|contains|cased", "Embed", {"command_line": "-embedding"}, False),
    # regex: case-sensitive by default, flags i/m/s, unanchored search
    ("CommandLine", "|re", "'scr[a-z]+ns'", {"command_line": "x scrcons y"}, True),
    ("CommandLine", "|re", "'SCRCONS'", {"command_line": "scrcons"}, False),
    ("CommandLine", "|re|i", "'SCRCONS'", {"command_line": "scrcons"}, True),
    ("CommandLine", "|re|m", "'^b$'", {"command_line": "a\nb\nc"}, True),
    ("CommandLine", "|re", "'^b$'", {"command_line": "a\nb\nc"}, False),
    ("CommandLine", "|re|s", "'a.b'", {"command_line": "a\nb"}, True),
    ("CommandLine", "|re", "'a.b'", {"command_line": "a\nb"}, False),
    # windash: - and / (and the dash variants) are interchangeable
    ("CommandLine", "|windash|contains", "' -enc '", {"command_line": "powershell /enc AAA"}, True),
    ("CommandLine", "|windash|contains", "' -enc '", {"command_line": "powershell \u2013enc AAA"}, True),
    # base64 / base64offset
    ("CommandLine", "|base64", "'calc'", {"command_line": "Y2FsYw=="}, True),
    ("CommandLine", "|base64offset|contains", "'http://'", {"command_line": "x aHR0cDovL y"}, True),
    ("CommandLine", "|wide|base64offset|contains", "'ping'", {"command_line": "cABpAG4AZwA"}, True),
    # numbers: ints, decimal text, comparisons
    ("ProcessId", "", "972", {"process_id": 972}, True),
    ("ProcessId", "", "972", {"process_id": "972"}, True),
    ("ProcessId", "", "972", {"process_id": 973}, False),
    ("ProcessId", "|gt", "900", {"process_id": 972}, True),
    ("ProcessId", "|gte", "972", {"process_id": "972"}, True),
    ("ProcessId", "|lt", "900", {"process_id": 972}, False),
    ("ProcessId", "|lte", "972", {"process_id": 972}, True),
    ("ProcessId", "|lt", "900", {"process_id": "abc"}, False),
    # null and exists
    ("CommandLine", "", "null", {}, True),
    ("CommandLine", "", "null", {"command_line": ""}, True),
    ("CommandLine", "", "null", {"command_line": None}, True),
    ("CommandLine", "", "null", {"command_line": "x"}, False),
    ("CommandLine", "|exists", "true", {"command_line": ""}, True),
    ("CommandLine", "|exists", "true", {}, False),
    ("CommandLine", "|exists", "false", {}, True),
    # field reference: equal values, case-insensitive
    ("CommandLine", "|fieldref", "ParentCommandLine", {"command_line": "A", "parent_command_line": "a"}, True),
    ("CommandLine", "|fieldref", "ParentCommandLine", {"command_line": "A", "parent_command_line": "b"}, False),
    ("CommandLine", "|fieldref", "ParentCommandLine", {"command_line": "A"}, False),
    # booleans
    ("Signed", "", "true", {"signed": "true"}, True),
    ("Signed", "", "true", {"signed": True}, True),
    ("Signed", "", "false", {"signed": True}, False),
    # multi-valued fields: any value
    ("CommandLine", "|contains", "needle", {"command_line": ["hay", "a needle"]}, True),
    ("CommandLine", "|contains", "needle", {"command_line": ["hay", "straw"]}, False),
]


@pytest.mark.parametrize(("field", "modifiers", "value", "event", "expected"), CASES)
def test_modifier_semantics(field: str, modifiers: str, value: str, event: dict, expected: bool) -> None:
    assert matches(field, modifiers, value, event) is expected


def test_cidr() -> None:
    rule = read_text_rules("""
title: t
logsource: {product: windows, category: network_connection}
detection:
    sel:
        DestinationIp|cidr: [10.0.0.0/8, 'fe80::/10']
    condition: sel
""", "t.yml")[0]
    run = compile_rule(rule, with_logsource=False)
    assert run({"destination_ip": "10.1.2.3"})
    assert run({"destination_ip": "fe80::1"})
    assert not run({"destination_ip": "11.0.0.1"})
    assert not run({"destination_ip": "not an ip"})
    assert not run({})


def test_keywords_search_every_value_but_provenance() -> None:
    rule = read_text_rules("""
title: t
logsource: {product: windows, category: process_creation}
detection:
    keywords: [SCRCONS, '-Embedding']
    condition: keywords
""", "t.yml")[0]
    run = compile_rule(rule, with_logsource=False)
    assert run({"process_path": SCRCONS})
    assert run({"command_line": "x -embedding y"})
    assert run({"Data": ["a", "runs scrcons here"]})
    assert not run({"@file": "scrcons.jsonl", "command_line": "cmd"})
    assert not run({"EventRecordID": 5})


def test_not_on_missing_field_holds() -> None:
    rule = rule_for("Image", "|endswith", r"\scrcons.exe", "not sel")
    run = compile_rule(rule, with_logsource=False)
    assert run({})
    assert run({"process_path": r"C:\x\cmd.exe"})
    assert not run({"process_path": SCRCONS})


def test_conditions_combine() -> None:
    rule = read_text_rules(r"""
title: t
logsource: {product: windows, category: process_creation}
detection:
    sel_a:
        Image|endswith: \wmic.exe
    sel_b:
        CommandLine|contains: create
    filter:
        CommandLine|contains: process
    condition: all of sel_* and not filter
""", "t.yml")[0]
    run = compile_rule(rule, with_logsource=False)
    assert run({"process_path": r"C:\W\WMIC.exe", "command_line": "wmic path __EventFilter create"})
    assert not run({"process_path": r"C:\W\WMIC.exe", "command_line": "wmic process call create x"})
    assert not run({"process_path": r"C:\W\cmd.exe", "command_line": "create"})


def test_direct_model_nodes() -> None:
    """Trees that readers other than Sigma may build (SPL): EQUALS with inner wildcards, empty And/Or."""
    inner = Match("command_line", Op.EQUALS, (Pattern(("a", Wildcard.MANY, "b")),))
    assert evaluate(inner, {"command_line": "AxxB"})
    assert evaluate(And(()), {}) and not evaluate(Or(()), {})
    assert evaluate(Not(Match("x", Op.EXISTS)), {"x": None})
    assert evaluate(Match("x", Op.EQUALS, (1.5,)), {"x": "1.5"})
    assert evaluate(Match("x", Op.EQUALS, ("literal",)), {"x": "LITERAL"})


@pytest.mark.parametrize("bad", [
    Match("x", Op.REGEX, (Regex("("),)),
    Match("x", Op.CIDR, ("999.1.1.1/8",)),
    Match("x", Op.GT, ("abc",)),
    Match("x", Op.REGEX, (Pattern.literal("x"),)),
    Match(None, Op.GT, (1,)),
])
def test_bad_model_raises_sigma_wmi_error(bad: Match) -> None:
    with pytest.raises(SigmaWmiError):
        compile_expr(bad)


def test_logsource_filters_by_channel_and_event_id() -> None:
    proc = logsource_predicate(LogSource("windows", "process_creation"))
    assert proc({"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 1})
    assert proc({"channel": "Security", "event_id": 4688})
    assert not proc({"channel": "Security", "event_id": 1})
    assert not proc({"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 7})
    assert proc({"event_id": 4688})  # ECS documents without a channel: judged by id
    wmi = logsource_predicate(LogSource("windows", service="wmi"))
    assert wmi({"channel": "Microsoft-Windows-WMI-Activity/Operational", "event_id": 5861})
    assert not wmi({"channel": "Security", "event_id": 5861})
    script = logsource_predicate(LogSource("windows", "ps_script"))
    assert script({"channel": "Microsoft-Windows-PowerShell/Operational", "event_id": 4104})
    assert not script({"channel": "Microsoft-Windows-PowerShell/Operational", "event_id": 4103})
    anything = logsource_predicate(LogSource("linux"))
    assert anything({})


def test_hits_applies_the_logsource() -> None:
    rule = rule_for("Image", "|endswith", r"\scrcons.exe", "sel")
    events = [
        {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 1, "process_path": SCRCONS},
        {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 7, "process_path": SCRCONS},
    ]
    assert hits(rule, events) == events[:1]


# ---- found in review ----

def test_true_and_one_compile_to_different_tests() -> None:
    assert evaluate(Match("f", Op.EQUALS, (True,)), {"f": "true"})
    assert evaluate(Match("f", Op.EQUALS, (1,)), {"f": 1})
    assert not evaluate(Match("f", Op.EQUALS, (1,)), {"f": "true"})


def test_numeric_keywords_match_as_text_anywhere() -> None:
    assert evaluate(Match(None, Op.EQUALS, (5,)), {"command_line": "abc 5 def"})


def test_verbose_regex_flag() -> None:
    regex = Match("f", Op.REGEX, (Regex("a b", frozenset("x")),), True)
    assert evaluate(regex, {"f": "ab"}) and not evaluate(regex, {"f": "a b"})


# ---- count thresholds: groups of selected events ----

def _threshold_rule(*thresholds: Threshold, group_by: tuple[str, ...] = ("host",), window: int | None = 60) -> Rule:
    return Rule(id="t", title="t", detection=Match("process_name", Op.EQUALS, (Pattern.literal("sc.exe"),)),
                aggregation=Aggregation(thresholds, group_by, window))


def _sc(host: str | None, time: str | None, cmd: str = "sc stop x", record: int = 0) -> dict:
    event = {"process_name": "SC.EXE", "command_line": cmd, "EventRecordID": record}
    if host is not None:
        event["host"] = host
    if time is not None:
        event["TimeCreated"] = time
    return event


THRESHOLD_EVENTS = [
    _sc("a", "2024-05-01 10:00:05", "sc stop x", 1),
    _sc("a", "2024-05-01T10:00:50Z", "sc stop y", 2),
    _sc("a", "2024-05-01 10:01:10", "sc stop z", 3),  # next minute: another bucket
    _sc("b", "2024-05-01 10:00:10", "sc stop x", 4),
    _sc(None, "2024-05-01 10:00:20", "sc stop x", 5),  # no host: in no group
    _sc("a", None, "sc stop x", 6),  # no time: in no bucket
    {"process_name": "net.exe", "host": "a", "TimeCreated": "2024-05-01 10:00:30", "EventRecordID": 7},
]


@pytest.mark.parametrize(("thresholds", "window", "expected"), [
    ((Threshold(Aggregate.COUNT, Op.GTE, 2),), 60, [1, 2]),
    ((Threshold(Aggregate.COUNT, Op.GTE, 2),), 3600, [1, 2, 3]),
    ((Threshold(Aggregate.COUNT, Op.GTE, 2),), None, [1, 2, 3, 6]),  # the whole range: time not needed
    ((Threshold(Aggregate.COUNT, Op.EQUALS, 1),), 60, [3, 4]),
    ((Threshold(Aggregate.DISTINCT_COUNT, Op.GT, 2, "command_line"),), 3600, [1, 2, 3]),
    ((Threshold(Aggregate.DISTINCT_COUNT, Op.GT, 2, "command_line"),), 60, []),
    ((Threshold(Aggregate.COUNT, Op.GTE, 2), Threshold(Aggregate.COUNT, Op.LT, 3)), 3600, []),
])
def test_alerting_groups(thresholds: tuple[Threshold, ...], window: int | None, expected: list[int]) -> None:
    rule = _threshold_rule(*thresholds, window=window)
    assert [e["EventRecordID"] for e in alerting(rule, THRESHOLD_EVENTS)] == expected


def test_multi_valued_group_field_is_in_a_group_per_value() -> None:
    """As Splunk's `stats by` (found in review): each value of a list is its own group."""
    events = [{"process_name": "sc.exe", "user": u, "EventRecordID": i}
              for i, u in enumerate(["a", ["a", "b"], ["b", "a"]])]
    rule = _threshold_rule(Threshold(Aggregate.COUNT, Op.GTE, 3), group_by=("user",), window=None)
    assert [e["EventRecordID"] for e in alerting(rule, events)] == [0, 1, 2]  # group a has all three


def test_alerting_without_a_threshold_is_hits() -> None:
    rule = _threshold_rule(Threshold(Aggregate.COUNT, Op.GTE, 1))
    plain = Rule(id="p", title="p", detection=rule.detection)
    assert alerting(plain, THRESHOLD_EVENTS) == hits(plain, THRESHOLD_EVENTS)
    assert len(hits(plain, THRESHOLD_EVENTS)) == 6


def test_thresholds_on_recorded_events() -> None:
    """On real Sysmon events: `count >= 1` with no group alerts on exactly what the conditions
    select, grouping per host and hour only regroups them, and an unreachable count alerts on none."""
    from sigma_wmi.events import canonical_event, read_events
    from tests.conftest import shared_path

    events = [canonical_event(e) for e in read_events(shared_path("data", "events", "benign_nonwmi_process_creation.jsonl"))]
    selected = Rule(id="s", title="s", detection=Match("process_name", Op.EXISTS))
    every = hits(selected, events)
    assert len(every) > 100
    one = Rule(id="o", title="o", detection=selected.detection,
               aggregation=Aggregation((Threshold(Aggregate.COUNT, Op.GTE, 1),)))
    assert alerting(one, events) == every
    hourly = Rule(id="h", title="h", detection=selected.detection,
                  aggregation=Aggregation((Threshold(Aggregate.COUNT, Op.GTE, 1),), ("host",), 3600))
    timed = [e for e in every if e.get("host") and (e.get("TimeCreated") or e.get("UtcTime"))]
    assert len(timed) > 100
    assert sorted(map(id, alerting(hourly, events))) == sorted(map(id, timed))
    never = Rule(id="n", title="n", detection=selected.detection,
                 aggregation=Aggregation((Threshold(Aggregate.COUNT, Op.GT, len(events)),), ("host",), 3600))
    assert alerting(never, events) == []


# ---- one mapping path: the names a rule resolves to are the names its events resolve to ----

_SYSMON = "Microsoft-Windows-Sysmon/Operational"

# (log source, Sigma field, value, the raw event as the source records it)
DRIFT_CASES = [
    ({"category": "image_load"}, "OriginalFileName", "wmiutils.dll",
     {"Channel": _SYSMON, "EventID": 7, "OriginalFileName": "wmiutils.dll"}),
    ({"category": "image_load"}, "Description", "WMI",
     {"Channel": _SYSMON, "EventID": 7, "Description": "WMI"}),
    ({"category": "image_load"}, "Hashes", "SHA256=AB",
     {"Channel": _SYSMON, "EventID": 7, "Hashes": "SHA256=AB"}),
    ({"category": "driver_load"}, "Hashes", "SHA256=CD",
     {"Channel": _SYSMON, "EventID": 6, "Hashes": "SHA256=CD"}),
    ({"category": "registry_set"}, "EventType", "SetValue",
     {"Channel": _SYSMON, "EventID": 13, "EventType": "SetValue"}),
    ({"category": "network_connection"}, "ProcessId", "4242",
     {"Channel": _SYSMON, "EventID": 3, "ProcessId": "4242"}),
    ({"category": "file_delete"}, "User", "CORP\\alice",
     {"Channel": _SYSMON, "EventID": 23, "User": "CORP\\alice"}),
    ({"service": "security"}, "TargetUserName", "alice",
     {"Channel": "Security", "EventID": 4624, "TargetUserName": "alice"}),
    ({"service": "application"}, "Data", "MSSQLSERVER",
     {"Channel": "Application", "EventID": 18456, "Data": ["MSSQLSERVER"]}),
]


def _probe(logsource: dict, field: str, modifiers: str, value: str) -> Rule:
    source = ", ".join(f"{k}: {v}" for k, v in {"product": "windows", **logsource}.items())
    text = (f"title: probe\nlogsource: {{{source}}}\ndetection:\n    sel:\n"
            f"        {field}{modifiers}: {value if modifiers == '|exists' else repr(value)}\n"
            "    condition: sel\n")
    return read_text_rules(text, "probe.yml")[0]


@pytest.mark.parametrize(("logsource", "field", "value", "raw"), DRIFT_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in DRIFT_CASES])
def test_rule_and_event_fields_resolve_alike(logsource: dict, field: str, value: str, raw: dict) -> None:
    from sigma_wmi.events import canonical_event

    for modifiers, probe_value in (("", value), ("|contains", value[1:-1]), ("|exists", "true")):
        rule = _probe(logsource, field, modifiers, probe_value)
        event = canonical_event(raw, rule.logsource)
        assert hits(rule, [event]) == [event], (modifiers, rule.detection, event)
    # and a filter on the field applies: `not` the probe drops the event
    rule = read_text_rules(_probe(logsource, field, "", value).source_text.replace(
        "condition: sel", "condition: not sel"), "probe.yml")[0]
    assert hits(rule, [canonical_event(raw, rule.logsource)]) == []


def test_security_4688_is_translated_only_for_process_creation() -> None:
    from sigma_wmi.events import canonical_event

    raw = {"Channel": "Security", "EventID": 4688, "NewProcessName": r"C:\x\wmic.exe",
           "TargetUserName": "bob", "ProcessId": "0x10"}
    translated = _probe({"category": "process_creation"}, "User", "", "bob")
    own = _probe({"service": "security"}, "ProcessId", "", "16")
    assert hits(translated, [canonical_event(raw, translated.logsource)])
    assert hits(_probe({"category": "process_creation"}, "ParentProcessId", "", "16"),
                [canonical_event(raw, translated.logsource)])
    assert canonical_event(raw, own.logsource)["ProcessId"] == "0x10"  # Security's own field, as the rule names it


def test_every_catalog_name_resolves_alike_in_rules_and_events() -> None:
    """Exhaustive over the catalog: in every log source, an event field recorded under its
    plain (Sysmon-style) name resolves to what the same Sigma name in a rule resolves to."""
    from sigma_wmi.catalog import catalog

    cat = catalog()
    checked = 0
    for kind, name in cat.logsource_names():
        logsource = LogSource("windows", **{kind: name})
        info = cat.logsource(logsource)
        channel = info.channel or "Microsoft-Windows-Sysmon/Operational"
        profile = cat.event_profile(logsource, channel)
        for spec in cat.fields.values():
            recorded = spec.names.get(profile)
            if recorded and recorded in spec.sigma:
                assert cat.resolve_event_name(profile, recorded, logsource) == cat.canonical(recorded, logsource), \
                    (logsource, recorded)
                checked += 1
    assert checked > 2000
