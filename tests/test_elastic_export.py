"""Kibana NDJSON and detection-rules TOML exports: structure, ATT&CK mapping from the
offline table, TOML checked with tomllib, and no network while exporting."""

from __future__ import annotations

import json
import socket
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import RULES
from helpers import sigma_rule
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_wmi.api import backend, compile_rule, convert, load
from sigma_wmi.backends.elastic_export import threat, toml_dumps, toml_string
from sigma_wmi.model import Aggregate, Aggregation, Match, Op, Rule, Threshold

ATTACK = "https://attack.mitre.org"


def _scrcons(path: Path) -> Any:
    (rule,) = load(path)
    return rule


@pytest.mark.parametrize(("target", "rule_type", "language"), [
    ("eql", "eql", "eql"), ("kql", "query", "kuery"), ("lucene", "query", "lucene")])
def test_ndjson_rule(scrcons_rule_path: Path, target: str, rule_type: str, language: str) -> None:
    rule = _scrcons(scrcons_rule_path)
    out = compile_rule(rule, target, "ndjson")
    assert out.text.endswith("\n") and out.text.count("\n") == 1
    doc = json.loads(out.text)
    assert doc["rule_id"] == "ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e"
    assert doc["type"] == rule_type and doc["language"] == language
    assert doc["query"] == compile_rule(rule, target).text
    assert doc["index"] == ["logs-endpoint.events.process-*"]  # Defend's process events
    assert (doc["severity"], doc["risk_score"]) == ("medium", 47)
    assert doc["name"] == rule.title and doc["author"] == ["Thomas Patzke"]
    assert doc["from"] == "now-6m" and doc["interval"] == "5m"
    persistence = doc["threat"][0]
    assert persistence["framework"] == "MITRE ATT&CK"
    assert persistence["tactic"] == {"id": "TA0003", "name": "Persistence", "reference": f"{ATTACK}/tactics/TA0003/"}
    (technique,) = persistence["technique"]
    assert technique["id"] == "T1546" and technique["name"] == "Event Triggered Execution"
    assert technique["reference"] == f"{ATTACK}/techniques/T1546/"
    assert technique["subtechnique"] == [{
        "id": "T1546.003", "name": "Windows Management Instrumentation Event Subscription",
        "reference": f"{ATTACK}/techniques/T1546/003/"}]
    assert [t["tactic"]["id"] for t in doc["threat"]] == ["TA0003", "TA0004"]


def test_winlogbeat_index_and_option_override(scrcons_rule_path: Path) -> None:
    rule = _scrcons(scrcons_rule_path)
    assert json.loads(compile_rule(rule, "kql", "ndjson", profile="winlogbeat").text)["index"] == ["winlogbeat-*"]
    custom = json.loads(compile_rule(rule, "kql", "ndjson", index="a-*,b-*", interval="1h",
                                     lookback="30m").text)
    assert custom["index"] == ["a-*", "b-*"] and custom["from"] == "now-90m"


def test_severity_table() -> None:
    base = sigma_rule("sel: {Image: x}\ncondition: sel")
    for level, severity, risk in [("informational", "low", 21), ("low", "low", 21), ("high", "high", 73),
                                  ("critical", "critical", 99), (None, "medium", 47)]:
        doc = json.loads(compile_rule(replace(base, level=level), "eql", "ndjson").text)
        assert (doc["severity"], doc["risk_score"]) == (severity, risk), level


def test_threat_without_tactic_tags_uses_the_techniques_tactics() -> None:
    rule = sigma_rule("sel: {Image: x}\ncondition: sel", extra="tags:\n    - attack.t1047\n")
    diagnostics: list[Any] = []
    (entry,) = threat(rule, diagnostics)
    assert entry["tactic"]["id"] == "TA0002"
    assert entry["technique"] == [{"id": "T1047", "name": "Windows Management Instrumentation",
                                   "reference": f"{ATTACK}/techniques/T1047/"}]
    assert diagnostics == []


def test_threat_follows_revocations_and_reports_them() -> None:
    rule = sigma_rule("sel: {Image: x}\ncondition: sel", extra="tags:\n    - attack.t1004\n")
    diagnostics: list[Any] = []
    entries = threat(rule, diagnostics)
    assert [d.code for d in diagnostics] == ["revoked-technique"]
    subs = [s["id"] for e in entries for t in e["technique"] for s in t.get("subtechnique", [])]
    assert "T1547.004" in subs


def test_ndjson_combines_one_object_per_line() -> None:
    # elastic_agent: an index for every pack rule (Defend has no PowerShell or WMI logs)
    text = convert(RULES / "sigma", "kql", "ndjson", profile="elastic_agent")
    lines = text.splitlines()
    assert len(lines) == len(load(RULES / "sigma")) >= 2
    assert all(json.loads(line)["language"] == "kuery" for line in lines)
    assert text == convert(RULES / "sigma", "kql", "ndjson", profile="elastic_agent")  # deterministic


def test_ndjson_is_produced_with_the_network_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for target in ("eql", "kql", "lucene"):
        text = convert(RULES, target, "ndjson", profile="elastic_agent")
        assert all(json.loads(line)["threat"] is not None for line in text.splitlines())


# ---------------------------------------------------------------------------
# TOML
# ---------------------------------------------------------------------------

def test_toml_export_parses_and_holds_the_rule(scrcons_rule_path: Path) -> None:
    rule = _scrcons(scrcons_rule_path)
    text = compile_rule(rule, "eql", "toml").text
    doc = tomllib.loads(text)
    assert doc["metadata"] == {"creation_date": "2018/03/07", "maturity": "production",
                               "updated_date": "2022/10/11"}
    kibana = json.loads(compile_rule(rule, "eql", "ndjson").text)
    for key in ("rule_id", "name", "query", "language", "type", "index", "severity", "risk_score", "threat",
                "tags", "references", "from", "author", "description", "false_positives"):
        assert doc["rule"][key] == kibana[key], key
    assert text.index("[rule]") < text.index("[[rule.threat]]") < text.index("[rule.threat.tactic]")


def test_toml_combine_keeps_documents_apart() -> None:
    eql = backend("eql", profile="elastic_agent")
    rules = load(RULES / "sigma")
    combined = eql.combine([eql.convert(r, "toml").text for r in rules], "toml")
    assert combined.count("[metadata]") == len(rules)


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", '"plain"'),
    ('C:\\a "b"', '"C:\\\\a \\"b\\""'),
    ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
    ("\x00\x1f\x7f", '"\\u0000\\u001F\\u007F"'),
    ("ü ''' \"\"\"", '"ü \'\'\' \\"\\"\\""'),
])
def test_toml_string(text: str, expected: str) -> None:
    assert toml_string(text) == expected
    assert tomllib.loads(f"k = {expected}") == {"k": text}


_scalars = st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans())
_tables = st.recursive(
    st.dictionaries(st.text(min_size=1), st.one_of(_scalars, st.lists(_scalars.filter(
        lambda v: isinstance(v, str)), max_size=3)), max_size=4),
    lambda inner: st.dictionaries(st.text(min_size=1), st.one_of(inner, st.lists(inner, min_size=1, max_size=2)),
                                  max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_tables)
def test_toml_documents_round_trip(document: dict[str, Any]) -> None:
    assert tomllib.loads(toml_dumps(document)) == document


# ---- count thresholds: Kibana threshold rules ----

def _with_threshold(*thresholds: Threshold, window: int | None = 600) -> Rule:
    (rule,) = load(RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml")
    return replace(rule, aggregation=Aggregation(thresholds, ("host", "user"), window))


@pytest.mark.parametrize("target", ["kql", "lucene"])
def test_threshold_becomes_a_kibana_threshold_rule(target: str) -> None:
    rule = _with_threshold(Threshold(Aggregate.COUNT, Op.GT, 3),
                           Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 2, "command_line"))
    output = compile_rule(rule, target, "ndjson")
    body = json.loads(output.text)
    assert body["type"] == "threshold"
    assert body["threshold"] == {"field": ["host.name", "user.name"], "value": 4,  # > 3 is >= 4
                                 "cardinality": [{"field": "process.command_line", "value": 2}]}
    assert (body["interval"], body["from"]) == ("10m", "now-10m")
    assert body["query"] == compile_rule(rule, target).text
    assert "threshold-not-applied" not in [d.code for d in output.diagnostics]
    toml = tomllib.loads(compile_rule(rule, target, "toml").text)  # an independent TOML parser
    assert toml["rule"]["threshold"] == body["threshold"] and toml["rule"]["type"] == "threshold"
    assert toml["rule"]["interval"] == "10m"  # the window, in TOML as in NDJSON


def test_threshold_rule_stays_inside_what_kibana_accepts() -> None:
    """Kibana's validator: at most 3 group-by fields, value >= 1, cardinality not on a group-by field."""
    wide = replace(_with_threshold(Threshold(Aggregate.COUNT, Op.GTE, 2)),
                   aggregation=Aggregation((Threshold(Aggregate.COUNT, Op.GTE, 2),),
                                           ("host", "user", "process_name", "parent_process_name"), 60))
    assert json.loads(compile_rule(wide, "kql", "ndjson").text)["type"] == "query"
    zero = json.loads(compile_rule(_with_threshold(Threshold(Aggregate.COUNT, Op.GTE, 0)), "kql", "ndjson").text)
    assert zero["threshold"]["value"] == 1
    same = _with_threshold(Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 2, "user"))
    assert json.loads(compile_rule(same, "kql", "ndjson").text)["type"] == "query"


@pytest.mark.parametrize(("target", "fmt", "thresholds"), [
    ("eql", "ndjson", (Threshold(Aggregate.COUNT, Op.GTE, 3),)),  # EQL rules do not count
    ("kql", "ndjson", (Threshold(Aggregate.COUNT, Op.LT, 3),)),  # Kibana only tests "at least"
    ("kql", "ndjson", (Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 3, "user"),
                       Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 3, "command_line"))),
    ("kql", "query", (Threshold(Aggregate.COUNT, Op.GTE, 3),)),  # a bare query has no place for it
])
def test_threshold_kibana_cannot_carry_is_a_warning(target: str, fmt: str,
                                                    thresholds: tuple[Threshold, ...]) -> None:
    output = compile_rule(_with_threshold(*thresholds), target, fmt)
    assert "threshold-not-applied" in [d.code for d in output.diagnostics]
    if fmt == "ndjson":
        assert json.loads(output.text)["type"] != "threshold"


def test_threshold_fields_are_named_as_the_query_names_them() -> None:
    """A group-by field the catalog does not know: on winlogbeat the query reads it under
    winlog.event_data, so the threshold must group by that same name."""
    rule = _with_threshold(Threshold(Aggregate.COUNT, Op.GTE, 2))
    rule = replace(rule, aggregation=replace(rule.aggregation, group_by=("ServiceName",)),  # type: ignore[arg-type]
                   detection=Match("ServiceName", Op.EXISTS))
    output = compile_rule(rule, "kql", "ndjson", profile="winlogbeat")
    body = json.loads(output.text)
    assert body["threshold"]["field"] == ["winlog.event_data.ServiceName"]
    assert "winlog.event_data.ServiceName" in body["query"]
