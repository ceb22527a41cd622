"""Sigma correlations of every type pySigma 1.5 reads: the reader, each target, the evaluator.

The temporal_ordered fixture (`tests/data/correlations/wmi_filter_then_consumer.yml`: a Sysmon 19
WMI filter, then a Sysmon 20 consumer, on one host within 10 s) is checked on recorded events
through three independent routes: the `eql` package parses and runs the EQL sequence; the Splunk
search is read back (each step's subsearch by our SPL reader, the streamstats stages by a small
interpreter of the documented command semantics below); and our evaluator.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_wmi.api import compile_rule, load
from sigma_wmi.errors import SigmaWmiError, UnsupportedError
from sigma_wmi.evaluate import alerting, compile_expr, event_time
from sigma_wmi.events import canonical_event, read_events, to_ecs
from sigma_wmi.model import Aggregate, Rule, Temporal
from sigma_wmi.readers import read_text_rules
from sigma_wmi.readers.spl import parse_splunk_search

eql = pytest.importorskip("eql")

EXAMPLES = 100_000 if os.environ.get("SIGMA_WMI_LONG") else 200
CORRELATIONS = REPO / "tests" / "data" / "correlations"
ORDERED = CORRELATIONS / "wmi_filter_then_consumer.yml"


def _rule(path: Path = ORDERED) -> Rule:
    (rule,) = load(path)
    return rule


# ---------------------------------------------------------------------------
# Reader: one table of every type
# ---------------------------------------------------------------------------

BASES = """
title: Process A
name: proc_a
logsource: {product: windows, category: process_creation}
detection: {sel: {Image|endswith: '\\a.exe'}, condition: sel}
---
title: Network B
name: net_b
logsource: {product: windows, category: network_connection}
detection: {sel: {DestinationPort: 4444}, condition: sel}
---
"""


def _correlation(body: str) -> str:
    return BASES + "title: the correlation\nid: 0f0e0d0c-0b0a-4909-8807-060504030201\ncorrelation:\n" + \
        "".join(f"    {line}\n" for line in body.strip().splitlines())


@pytest.mark.parametrize(("body", "aggregate", "field", "percentile"), [
    ("type: event_count\nrules: proc_a\ntimespan: 1h\ncondition: {gte: 10}", Aggregate.COUNT, None, None),
    ("type: value_count\nrules: proc_a\ntimespan: 1h\ncondition: {field: User, gt: 3}",
     Aggregate.DISTINCT_COUNT, "user", None),
    ("type: value_sum\nrules: net_b\ntimespan: 1h\ncondition: {field: DestinationPort, gte: 100}",
     Aggregate.SUM, "destination_port", None),
    ("type: value_avg\nrules: net_b\ntimespan: 1h\ncondition: {field: DestinationPort, lt: 5}",
     Aggregate.AVERAGE, "destination_port", None),
    ("type: value_percentile\nrules: net_b\ntimespan: 1h\ncondition: {field: DestinationPort, percentile: 95, "
     "gte: 9}", Aggregate.PERCENTILE, "destination_port", 95),
    ("type: value_median\nrules: net_b\ntimespan: 1h\ncondition: {field: DestinationPort, eq: 7}",
     Aggregate.MEDIAN, "destination_port", None),
])
def test_aggregating_types(body: str, aggregate: Aggregate, field: str | None, percentile: int | None) -> None:
    rule = read_text_rules(_correlation(body), "c.yml")[-1]  # the other base rule alerts on its own
    assert rule.aggregation is not None and rule.temporal is None
    (threshold,) = rule.aggregation.thresholds
    assert (threshold.aggregate, threshold.field, threshold.percentile) == (aggregate, field, percentile)
    assert rule.aggregation.window == 3600


@pytest.mark.parametrize(("body", "ordered", "min_steps", "fields"), [
    ("type: temporal\nrules: [proc_a, net_b]\ngroup-by: [Computer]\ntimespan: 5m", False, 2,
     (("host",), ("host",))),
    ("type: temporal\nrules: [proc_a, net_b]\ntimespan: 5m\ncondition: {gte: 1}", False, 1, ((), ())),
    ("type: temporal_ordered\nrules: [proc_a, net_b]\ngroup-by: [Computer]\ntimespan: 5m", True, 2,
     (("host",), ("host",))),
    ("type: temporal_ordered\ncondition: proc_a and net_b\ntimespan: 5m", True, 2, ((), ())),
    # aliases: one group-by name, a different field per rule
    ("type: temporal_ordered\nrules: [proc_a, net_b]\ngroup-by: [who]\ntimespan: 5m\n"
     "aliases: {who: {proc_a: User, net_b: SourceIp}}", True, 2, (("user",), ("source_ip",))),
])
def test_temporal_types(body: str, ordered: bool, min_steps: int, fields: tuple[tuple[str, ...], ...]) -> None:
    (rule,) = read_text_rules(_correlation(body), "c.yml")
    temporal = rule.temporal
    assert isinstance(temporal, Temporal) and rule.aggregation is None
    assert (temporal.ordered, temporal.min_steps, temporal.window) == (ordered, min_steps, 300)
    assert [s.name for s in temporal.steps] == ["proc_a", "net_b"]
    assert tuple(s.group_fields for s in temporal.steps) == fields
    assert [s.rule.logsource.category for s in temporal.steps] == ["process_creation", "network_connection"]
    assert rule.title == "the correlation" and rule.id == "0f0e0d0c-0b0a-4909-8807-060504030201"


@pytest.mark.parametrize(("body", "line", "words"), [
    ("type: temporal\nrules: [proc_a]\ntimespan: 5m", 16, "at least two rules"),
    ("type: temporal_ordered\nrules: [proc_a, net_b]\ntimespan: 5m\ncondition: {gte: 1}", 18, "every rule"),
    ("type: temporal\nrules: [proc_a, net_b]\ntimespan: 5m\ncondition: proc_a or net_b", 18, "only 'a and b"),
    ("type: event_count\nrules: [proc_a, proc_a]\ntimespan: 5m\ncondition: {gte: 2}", 16, "names a rule twice"),
    ("type: value_percentile\nrules: net_b\ntimespan: 5m\ncondition: {field: DestinationPort, gte: 2}", 18,
     "percentile"),
    ("type: value_sum\nrules: net_b\ntimespan: 5m\ncondition: {gte: 2}", 18, "condition.field"),
    ("type: temporal\nrules: [proc_a, net_b]\ntimespan: 5m\naliases: {who: {other: User}}", 18, "aliases"),
    ("type: value_mode\nrules: net_b\ntimespan: 5m", 15, "not supported"),
])
def test_correlation_errors_are_located(body: str, line: int, words: str) -> None:
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(_correlation(body), "c.yml")
    assert words in info.value.message
    assert info.value.origin is not None and info.value.origin.line == line


def test_steps_are_consumed_unless_generate() -> None:
    body = "type: temporal\nrules: [proc_a, net_b]\ntimespan: 5m"
    assert [r.title for r in read_text_rules(_correlation(body), "c.yml")] == ["the correlation"]
    kept = read_text_rules(_correlation(body + "\ngenerate: true"), "c.yml")
    assert [r.title for r in kept] == ["Process A", "Network B", "the correlation"]


# ---------------------------------------------------------------------------
# Recorded events: the ordered pair, and the same pair reversed
# ---------------------------------------------------------------------------

def _recorded() -> list[dict[str, Any]]:
    return list(read_events(shared_path("data", "events", "wmi_sysmon_19_20_21.jsonl")))


def _pair(reversed_: bool = False) -> list[dict[str, Any]]:
    """HR001's filter (19) at 18:43:40.289 and consumer (20) at 18:43:40.304; reversed, the
    two events swap their times (the consumer comes first)."""
    events = [e for e in _recorded() if e["Computer"] == "HR001.shire.com" and e["EventID"] in (19, 20)]
    assert [e["EventID"] for e in events] == [19, 20]
    if reversed_:
        first, second = (dict(e) for e in events)
        first["UtcTime"], second["UtcTime"] = second["UtcTime"], first["UtcTime"]
        first["TimeCreated"], second["TimeCreated"] = second["TimeCreated"], first["TimeCreated"]
        events = [second, first]
    return events


def _in_time_order(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(raws, key=lambda raw: event_time(canonical_event(raw)) or 0.0)


def _eql_parse(query: str) -> Any:
    with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions:
        return eql.parse_query(query)


def eql_alerts(query: str, raws: list[dict[str, Any]]) -> list[str]:
    """EventRecordIDs of the events in the sequences the eql engine finds; events are streamed
    in time order with their time in milliseconds."""
    engine = eql.PythonEngine({"time_unit": 1000})  # ticks per second
    found: list[str] = []
    engine.add_query(_eql_parse(query))
    engine.add_output_hook(lambda output: found.extend(e.data["sigma_wmi_record"]
                                                       for e in getattr(output, "events", [output])))
    events = []
    for raw in _in_time_order(raws):
        doc = to_ecs(raw)
        doc["sigma_wmi_record"] = str(raw["EventRecordID"])
        when = event_time(canonical_event(raw))
        assert when is not None
        events.append(eql.Event((doc.get("event") or {}).get("category") or "any", int(when * 1000), doc))
    engine.stream_events(events)
    return found


def evaluator_alerts(rule: Rule, raws: list[dict[str, Any]]) -> list[str]:
    return [str(e["EventRecordID"]) for e in alerting(rule, [canonical_event(r) for r in raws])]


def test_temporal_ordered_is_an_eql_sequence() -> None:
    rule = _rule()
    text = compile_rule(rule, "eql", profile="winlogbeat").text
    assert text.startswith("sequence by host.name with maxspan=10s\n  [any where ")
    parsed = _eql_parse(text)
    assert type(parsed.first).__name__ == "Sequence"
    rendered = [str(q) for q in parsed.first.queries]
    assert [('event.code == "19"' in q, 'event.code == "20"' in q, q.endswith("] by host.name")) for q in rendered] \
        == [(True, False, True), (False, True, True)]


def test_recorded_ordered_pair_matches_and_the_reversed_pair_does_not() -> None:
    rule = _rule()
    query = compile_rule(rule, "eql", profile="winlogbeat").text
    ordered, reversed_ = _pair(), _pair(reversed_=True)
    ids = [str(e["EventRecordID"]) for e in ordered]
    assert eql_alerts(query, ordered) == ids
    assert eql_alerts(query, reversed_) == []
    assert evaluator_alerts(rule, ordered) == ids
    assert evaluator_alerts(rule, reversed_) == []
    assert splunk_alerts(rule, ordered) == ids[-1:]  # Splunk's alert row is the event that completes
    assert splunk_alerts(rule, reversed_) == []


def test_routes_agree_on_the_whole_recording() -> None:
    """Five hosts: four create the filter first (one of them twice, with equal times), fs01 the
    consumer first; only fs01's pair is not a match."""
    rule = _rule()
    raws = _recorded()
    ours = evaluator_alerts(rule, raws)
    assert ours and not any(e["Computer"].startswith("fs01") for e in raws if str(e["EventRecordID"]) in ours)
    assert sorted(eql_alerts(compile_rule(rule, "eql", profile="winlogbeat").text, raws)) == sorted(ours)
    completing = {str(e["EventRecordID"]) for e in raws if e["EventID"] == 20 and str(e["EventRecordID"]) in ours}
    assert sorted(splunk_alerts(rule, raws)) == sorted(completing)


# ---- Splunk, read back ----

_SUBSEARCH = re.compile(r"\[search (.*?) \| eval sigma_step=(\d+)(?:, [^\]]*)?\]")
_BEFORE = re.compile(r"streamstats current=f last\((sigma_start_\d+)\) as (sigma_before_\d+) by (\w+)")
_START = re.compile(r"eval (sigma_start_\d+)=if\(sigma_step==(\d+) AND (sigma_before_\d+)>=_time-(\d+), "
                    r"(sigma_before_\d+), null\(\)\)")


def splunk_alerts(rule: Rule, raws: list[dict[str, Any]]) -> list[str]:
    """Run the generated Splunk search over the events: each `multisearch` subsearch is read back
    by our SPL reader and evaluated; the stages after it are interpreted as Splunk documents them
    (`sort 0 _time`: ascending, stable; `streamstats current=f last(x) by g`: the last non-null
    x of the earlier results of the same group; `where isnotnull`). A stage of another shape
    fails the test, so the interpreter cannot drift from what the backend writes."""
    text = compile_rule(rule, "splunk").text
    head, _, tail = text.partition("] | where ")
    steps = [(int(n), compile_expr(parse_splunk_search(search))) for search, n in _SUBSEARCH.findall(head + "]")]
    assert len(steps) == len(rule.temporal.steps) if rule.temporal else False
    rows = []
    for raw in raws:
        event = canonical_event(raw)
        for number, predicate in steps:
            if predicate(event):
                rows.append({"sigma_step": number, "_time": event_time(event), "Computer": event.get("host"),
                             "record": str(raw["EventRecordID"])})
    stages = [s.strip() for s in ("where " + tail).split(" | ")]
    grouped = re.fullmatch(r"where isnotnull\((\w+)\)", stages[0])  # the group-by name, or its alias
    assert grouped and stages[1] == "sort 0 _time", stages
    for row in rows:
        row[grouped.group(1)] = row["Computer"]
    rows = sorted((r for r in rows if r["Computer"] is not None), key=lambda r: r["_time"])
    for stage in stages[2:]:
        if stage == "eval sigma_start_1=if(sigma_step==1, _time, null())":
            for row in rows:
                row["sigma_start_1"] = row["_time"] if row["sigma_step"] == 1 else None
        elif found := _BEFORE.fullmatch(stage):
            source, target, group = found.groups()
            last: dict[Any, Any] = {}
            for row in rows:
                row[target] = last.get(row[group])
                if row.get(source) is not None:
                    last[row[group]] = row[source]
        elif found := _START.fullmatch(stage):
            target, step, before, span, before_again = found.groups()
            assert before == before_again
            for row in rows:
                ok = row["sigma_step"] == int(step) and row[before] is not None \
                    and row[before] >= row["_time"] - int(span)
                row[target] = row[before] if ok else None
        elif found := re.fullmatch(r"where isnotnull\((sigma_start_\d+)\)", stage):
            rows = [r for r in rows if r[found.group(1)] is not None]
        else:
            raise AssertionError(f"stage not interpreted: {stage}")
    return [r["record"] for r in rows]


def test_splunk_subsearches_are_the_step_rules_own_searches() -> None:
    rule = _rule()
    assert rule.temporal is not None
    text = compile_rule(rule, "splunk").text
    found = _SUBSEARCH.findall(text)
    assert [int(n) for _, n in found] == [1, 2]
    for (search, _), step in zip(found, rule.temporal.steps, strict=True):
        assert search == compile_rule(step.rule, "splunk").text
        assert parse_splunk_search(search) == parse_splunk_search(compile_rule(step.rule, "splunk").text)


def test_splunk_unordered_temporal_uses_a_sliding_window() -> None:
    rule = _rule()
    assert rule.temporal is not None
    unordered = _with_temporal(rule, ordered=False)
    text = compile_rule(unordered, "splunk").text
    assert text.endswith("| sort 0 _time | streamstats time_window=10s dc(sigma_step) as sigma_steps by Computer "
                         "| where sigma_steps >= 2")
    # the evaluator: fs01's consumer-then-filter pair now counts as well
    raws = _recorded()
    hosts = {e["Computer"] for e in raws if str(e["EventRecordID"]) in evaluator_alerts(unordered, raws)}
    assert "fs01.offsec.lan" in hosts


def _with_temporal(rule: Rule, **changes: Any) -> Rule:
    import dataclasses

    assert rule.temporal is not None
    return dataclasses.replace(rule, temporal=dataclasses.replace(rule.temporal, **changes))


def test_targets_without_a_form_say_why() -> None:
    rule = _rule()
    with pytest.raises(UnsupportedError, match="no EQL form"):
        compile_rule(_with_temporal(rule, ordered=False), "eql", profile="winlogbeat")
    for target in ("kql", "lucene"):
        with pytest.raises(UnsupportedError, match="EQL sequence"):
            compile_rule(rule, target, profile="winlogbeat")
    with pytest.raises(UnsupportedError, match="tstats"):
        compile_rule(rule, "splunk", "tstats")


def test_kibana_export_is_an_eql_sequence_rule() -> None:
    import json

    rule = _rule()
    body = json.loads(compile_rule(rule, "eql", "ndjson", profile="winlogbeat").text)
    assert (body["type"], body["language"], body["index"]) == ("eql", "eql", ["winlogbeat-*"])
    assert body["from"] == "now-370s"  # interval 5m + lookback 1m + the 10 s a sequence may span
    _eql_parse(body["query"])


def test_sigma_writer_round_trip() -> None:
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule

    rule = _rule()
    text = compile_rule(rule, "sigma").text
    collection = SigmaCollection.from_yaml(text)
    collection.resolve_rule_references()
    correlation = collection.rules[-1]
    assert isinstance(correlation, SigmaCorrelationRule)
    assert (correlation.type.name, [r.reference for r in correlation.rules], correlation.group_by,
            correlation.timespan.seconds) == ("TEMPORAL_ORDERED", ["wmi_filter_created", "wmi_consumer_created"],
                                              ["Computer"], 10)
    (again,) = read_text_rules(text, "back.yml")
    assert again.temporal is not None and rule.temporal is not None
    assert [(s.name, s.rule.detection, s.rule.logsource, s.group_fields) for s in again.temporal.steps] == \
        [(s.name, s.rule.detection, s.rule.logsource, s.group_fields) for s in rule.temporal.steps]
    assert (again.temporal.window, again.temporal.ordered, again.title) == (10, True, rule.title)


def test_sigma_writer_keeps_aliases() -> None:
    from sigma.collection import SigmaCollection

    body = ("type: temporal_ordered\nrules: [proc_a, net_b]\ngroup-by: [who]\ntimespan: 5m\n"
            "aliases: {who: {proc_a: User, net_b: SourceIp}}")
    (rule,) = read_text_rules(_correlation(body), "c.yml")
    text = compile_rule(rule, "sigma").text
    correlation = SigmaCollection.from_yaml(text).rules[-1]
    assert correlation.aliases.to_dict() == {"who": {"proc_a": "User", "net_b": "SourceIp"}}
    (again,) = read_text_rules(text, "back.yml")
    assert again.temporal is not None and rule.temporal is not None
    assert [s.group_fields for s in again.temporal.steps] == [s.group_fields for s in rule.temporal.steps]


# ---------------------------------------------------------------------------
# Value aggregations: Splunk stats, the evaluator, the Sigma writer
# ---------------------------------------------------------------------------

def _value_rule(kind: str, condition: str) -> Rule:
    body = f"type: {kind}\nrules: net_b\ngroup-by: [Computer]\ntimespan: 1h\ncondition: {{{condition}}}"
    return read_text_rules(_correlation(body), "c.yml")[-1]


@pytest.mark.parametrize(("kind", "condition", "stats", "where"), [
    ("value_sum", "field: SourcePort, gte: 100", "sum(SourcePort) as sum_source_port", "sum_source_port >= 100"),
    ("value_avg", "field: SourcePort, gt: 10", "avg(SourcePort) as avg_source_port", "avg_source_port > 10"),
    ("value_percentile", "field: SourcePort, percentile: 90, lte: 7",
     "exactperc90(SourcePort) as exactperc90_source_port", "exactperc90_source_port <= 7"),
    ("value_median", "field: SourcePort, eq: 3", "median(SourcePort) as median_source_port", "median_source_port == 3"),
    ("value_sum", "field: SourcePort, neq: 5", "sum(SourcePort) as sum_source_port", "sum_source_port != 5"),
])
def test_value_aggregations_in_splunk(kind: str, condition: str, stats: str, where: str) -> None:
    text = compile_rule(_value_rule(kind, condition), "splunk").text
    assert text.endswith(f"| bin _time span=1h | stats count {stats} by Computer _time | where {where}")
    sigma = compile_rule(_value_rule(kind, condition), "sigma").text
    from sigma.collection import SigmaCollection

    written = SigmaCollection.from_yaml(sigma).rules[-1].to_dict()["correlation"]
    assert written["type"] == kind


@pytest.mark.parametrize(("kind", "condition", "alerts"), [
    ("value_sum", "field: SourcePort, gte: 6", True),  # 1 + 2 + 3
    ("value_sum", "field: SourcePort, gt: 6", False),
    ("value_avg", "field: SourcePort, eq: 2", True),
    ("value_median", "field: SourcePort, gte: 3", False),
    ("value_percentile", "field: SourcePort, percentile: 90, gte: 3", True),
    ("value_sum", "field: SourcePort, neq: 6", False),  # the sum is 6
    ("value_avg", "field: SourcePort, neq: 3", True),  # the average is 2
])
def test_value_aggregations_in_the_evaluator(kind: str, condition: str, alerts: bool) -> None:
    rule = _value_rule(kind, condition)
    events = [{"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 3, "destination_port": 4444,
               "source_port": port, "host": "h1", "UtcTime": f"2024-01-01 10:00:0{port}"} for port in (1, 2, "3")]
    events.append({**events[0], "host": "h2", "source_port": "not a number"})
    assert bool(alerting(rule, events)) is alerts
    assert all(e["host"] == "h1" for e in alerting(rule, events))


def test_kibana_threshold_rule_refuses_value_aggregations() -> None:
    out = compile_rule(_value_rule("value_sum", "field: SourcePort, gte: 6"), "kql", "ndjson",
                       profile="winlogbeat")
    assert '"type": "query"' in out.text
    assert [d.code for d in out.diagnostics if d.code in ("no-threshold-rule", "threshold-not-applied")] == \
        ["no-threshold-rule", "threshold-not-applied"]


def test_sigma_wmi_test_runs_a_temporal_correlation(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sigma_wmi.cli import main

    events = shared_path("data", "events", "wmi_sysmon_19_20_21.jsonl")
    rule = tmp_path / "c.yml"
    rule.write_text(ORDERED.read_text(encoding="utf-8") + f"x_sigma_wmi_tests:\n    - events: {events}\n"
                    "      hits: 10\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["test", str(rule)])
    assert result.exit_code == 0, result.output
    assert "pass    10 hits" in result.output



def test_one_event_never_fills_two_steps_as_in_eql() -> None:
    """Steps (19 or 20) then 20: a lone 20 is no sequence; a 19 then a 20 is; two 20s are."""
    text = _correlation("type: temporal_ordered\nrules: [proc_a, net_b]\ngroup-by: [Computer]\ntimespan: 10s")
    text = text.replace("{sel: {Image|endswith: '\\a.exe'}, condition: sel}", "{sel: {DestinationPort: [1, 2]}, "
                        "condition: sel}").replace("{DestinationPort: 4444}", "{DestinationPort: 2}")
    text = text.replace("category: process_creation", "category: network_connection")
    (rule,) = read_text_rules(text, "c.yml")
    base = {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 3, "host": "h"}

    def event(n: int, port: int, second: int) -> dict[str, Any]:
        return {**base, "EventRecordID": n, "destination_port": port, "UtcTime": f"2024-01-01 10:00:0{second}"}

    def run(*events: dict[str, Any]) -> list[int]:
        return [e["EventRecordID"] for e in alerting(rule, list(events))]

    assert run(event(1, 2, 1)) == []
    assert run(event(1, 1, 1), event(2, 2, 2)) == [1, 2]
    assert run(event(1, 2, 1), event(2, 2, 2)) == [1, 2]
    query = compile_rule(rule, "eql", profile="winlogbeat").text
    raws = [{"EventID": 3, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "h", "EventRecordID": n,
             "DestinationPort": port, "UtcTime": f"2024-01-01 10:00:0{second}"}
            for n, port, second in ((1, 2, 1), (2, 2, 2))]
    assert eql_alerts(query, raws[:1]) == [] and eql_alerts(query, raws) == ["1", "2"]


# ---- a property: the three routes agree on which groups alert ----

_EVENT = st.tuples(st.sampled_from(["h1.corp", "h2.corp"]), st.sampled_from([19, 20, 21]), st.integers(0, 40))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_EVENT, max_size=12))
def test_routes_agree_on_alerting_groups(events: list[tuple[str, int, int]]) -> None:
    """Random Sysmon 19/20/21 streams (times in whole seconds, with ties): the evaluator, the eql
    engine and the Splunk search read back alert for the same hosts. (Which events each reports
    may differ: EQL starts afresh after a sequence, the others report every completing event.)"""
    rule = _rule()
    raws = [{"EventID": event_id, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": host,
             "EventRecordID": str(n), "UtcTime": f"2024-01-01 10:00:{second:02d}.000"}
            for n, (host, event_id, second) in enumerate(events)]
    by_id = {r["EventRecordID"]: r["Computer"] for r in raws}
    ours = {by_id[i] for i in evaluator_alerts(rule, raws)}
    assert {by_id[i] for i in eql_alerts(compile_rule(rule, "eql", profile="winlogbeat").text, raws)} == ours
    assert {by_id[i] for i in splunk_alerts(rule, raws)} == ours


# ---------------------------------------------------------------------------
# Aggregations over several rules
# ---------------------------------------------------------------------------

def _counted(condition: str, kind: str = "event_count") -> Rule:
    text = ORDERED.read_text(encoding="utf-8").replace("type: temporal_ordered", f"type: {kind}")
    return read_text_rules(text.replace("    timespan: 10s", f"    timespan: 10s\n    condition: {condition}"),
                           "c.yml")[-1]


@pytest.mark.parametrize(("condition", "hosts"), [
    # every host records a filter and a consumer within one 10-second bucket
    ("{gte: 2}", {"HR001.shire.com", "IT001.shire.com", "WORKSTATION6.theshire.local", "fs01.offsec.lan",
                  "WORKSTATION6.mssentinel.local"}),
    # only fs01 has three (a consumer and two filters); theshire.local's pairs fall in two buckets
    ("{gte: 3}", {"fs01.offsec.lan"}),
])
def test_event_count_over_two_rules_on_recorded_events(condition: str, hosts: set[str]) -> None:
    rule = _counted(condition)
    assert rule.aggregation is not None and [s.name for s in rule.aggregation.steps] == [
        "wmi_filter_created", "wmi_consumer_created"]
    raws = _recorded()
    by_id = {str(r["EventRecordID"]): r for r in raws}
    alerts = evaluator_alerts(rule, raws)
    assert {by_id[i]["Computer"] for i in alerts} == hosts
    assert all(by_id[i]["EventID"] in (19, 20) for i in alerts)


def test_value_count_over_two_rules_in_splunk_and_sigma() -> None:
    from sigma.collection import SigmaCollection

    rule = _counted("{field: EventID, gte: 2}", "value_count")
    text = compile_rule(rule, "splunk").text
    found = _SUBSEARCH.findall(text)
    assert [int(n) for _, n in found] == [1, 2]
    assert rule.aggregation is not None
    assert [s for s, _ in found] == [compile_rule(s.rule, "splunk").text for s in rule.aggregation.steps]
    assert text.endswith("| eval sigma_step=2, sigma_value=EventCode] | eventstats min(sigma_step) as sigma_first "
                         "by index splunk_server _cd | where sigma_step==sigma_first | bin _time span=10s "
                         "| stats count dc(sigma_value) as dc_sigma_value by Computer _time "
                         "| where dc_sigma_value >= 2")
    written = compile_rule(rule, "sigma").text
    correlation = SigmaCollection.from_yaml(written).rules[-1].to_dict()["correlation"]
    assert (correlation["type"], correlation["rules"], correlation["condition"]) == (
        "value_count", ["wmi_filter_created", "wmi_consumer_created"], {"field": "EventID", "gte": 2})
    again = read_text_rules(written, "back.yml")[-1]
    assert again.aggregation is not None and rule.aggregation is not None
    assert (again.aggregation.thresholds, again.aggregation.group_by, again.aggregation.window) == \
        (rule.aggregation.thresholds, rule.aggregation.group_by, rule.aggregation.window)
    assert [(s.name, s.rule.detection, s.group_fields, s.value_field) for s in again.aggregation.steps] == \
        [(s.name, s.rule.detection, s.group_fields, s.value_field) for s in rule.aggregation.steps]
    for target, words in (("eql", "several rules"), ("kql", "several rules")):
        with pytest.raises(UnsupportedError, match=words):
            compile_rule(rule, target, profile="winlogbeat")
    with pytest.raises(UnsupportedError, match="several data sets"):
        compile_rule(rule, "splunk", "tstats")
