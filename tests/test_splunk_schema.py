"""The schema-true Splunk target: source conditions from data, fields checked against the
Splunk source and CIM data-set schemas, field references and literal wildcards exact."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import shared_path
from helpers import sigma_rule
from hypothesis import given, settings
from hypothesis import strategies as st
from spl_tokens import Token, tokenize

from sigma_wmi.backends.splunk import SplunkBackend, eval_field
from sigma_wmi.backends.splunk_data import SplunkSources, cim_fields, cim_split_by, template_conditions
from sigma_wmi.catalog import catalog
from sigma_wmi.errors import Level, SigmaWmiError, UnsupportedError
from sigma_wmi.generate import DATA
from sigma_wmi.generate.splunk import INDEXED_FIELDS, build
from sigma_wmi.model import (
    LogSource,
    Match,
    Op,
    Pattern,
    Rule,
    Wildcard,
    matches,
    normalize,
    string_match,
)
from sigma_wmi.readers import read_source, rule_files
from sigma_wmi.readers.spl import parse_splunk_search

SOURCES = json.loads((DATA / "splunk_sources.json").read_text(encoding="utf-8"))


def raw(rule: Rule, **options: object) -> str:
    return SplunkBackend(**options).convert(rule, "raw").text


def warnings(rule: Rule, format: str = "raw") -> list[str]:
    return [d.code for d in SplunkBackend().convert(rule, format).diagnostics if d.level is not Level.INFO]


# ---- the generated data ----

def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    shared = shared_path("corpora", "escu").parent.parent
    shutil.copy(DATA / "logsources.yaml", tmp_path / "logsources.yaml")
    written = build(shared, tmp_path)
    assert len(written) > 10
    for path in written:
        committed = DATA / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python -m sigma_wmi.generate"


def test_every_data_set_of_the_log_source_table_has_fields_and_split_by() -> None:
    models = {info.cim for info in (catalog().logsource(LogSource("windows", c)) for c in catalog().categories())
              if info.cim}
    assert "Endpoint.Processes" in models
    for datamodel in sorted(models):
        fields = cim_fields(datamodel)
        assert fields is not None and len(fields) >= 3, datamodel
        assert set(cim_split_by(datamodel)) <= set(fields), datamodel
        assert fields.provenance["version"] and fields.provenance["data_set"] == datamodel


def test_non_windows_conditions_are_escu_data_source_facts() -> None:
    folder = shared_path("corpora", "escu", "data_sources")
    by_name = {}
    for path in folder.glob("*.yml"):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        by_name[document["name"]] = document
    assert SOURCES["logsources"]
    for entry in SOURCES["logsources"]:
        first = by_name[entry["data_sources"][0]]
        assert entry["conditions"]["sourcetype"] == first["sourcetype"]
        assert entry["conditions"].get("source", first["source"]) == first["source"]


# ---- where the events are ----

SOURCE_TABLE = [
    (("linux", "process_creation", None),
     'sourcetype="sysmon:linux" source="Syslog:Linux-Sysmon/Operational" EventID=1'),
    (("aws", None, "cloudtrail"), 'sourcetype="aws:cloudtrail"'),
    (("okta", None, "okta"), 'sourcetype="OktaIM2:log"'),
    (("azure", None, "signinlogs"), 'sourcetype="azure:monitor:aad" operationName="Sign-in activity"'),
    (("linux", None, "auditd"), 'sourcetype="auditd"'),
    (("windows", "process_creation", None), 'source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode=1'),
    (("windows", "ps_script", None), 'source="XmlWinEventLog:Microsoft-Windows-PowerShell/Operational" EventCode=4104'),
    (("windows", None, "wmi"), 'source="XmlWinEventLog:Microsoft-Windows-WMI-Activity/Operational"'),
]


@pytest.mark.parametrize(("logsource", "prefix"), SOURCE_TABLE)
def test_source_conditions_per_log_source(logsource: tuple[str, str | None, str | None], prefix: str) -> None:
    product, category, service = logsource
    rule = sigma_rule("sel:\n  Marker: m\ncondition: sel", product=product, category=category or "",
                      service=service)
    output = SplunkBackend().convert(rule, "raw")
    assert output.text == f'{prefix} Marker="m"'
    assert "no-logsource-condition" not in {d.code for d in output.diagnostics}


def test_channels_come_from_the_log_source_table() -> None:
    # one home: a channel in logsources.yaml is the source the search names
    for category in catalog().categories():
        info = catalog().logsource(LogSource("windows", category))
        if info.channel and not info.sysmon_event_ids:
            rule = sigma_rule("sel:\n  Marker: m\ncondition: sel", category=category)
            assert tokenize(raw(rule))[:3] == [Token("word", "source"), Token("op", "="),
                                               Token("string", f"XmlWinEventLog:{info.channel}")]


def test_index_sourcetype_and_source_options() -> None:
    rule = sigma_rule("sel:\n  Image: x\ncondition: sel")
    assert raw(rule, index="wineventlog").startswith(
        'index="wineventlog" source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode=1 ')
    assert raw(rule, source="WinEventLog:Microsoft-Windows-Sysmon/Operational", sourcetype="WinEventLog") == (
        'sourcetype="WinEventLog" source="WinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode=1 Image="x"')
    # `*` in an option stays SPL's wildcard (no exact-match regex for it)
    assert raw(rule, index="main*").startswith('index="main*" source=')
    assert raw(rule, index="007").startswith('index="007" ')  # a name, not the number 7


def test_for_logsource_is_the_one_lookup() -> None:
    sources = SplunkSources(catalog(), 'source="XmlWinEventLog:{channel}"', {"index": "edr"})
    found = sources.for_logsource(LogSource("windows", "process_creation"), "security")
    assert dict(found.conditions) == {"index": ("edr",), "source": ("XmlWinEventLog:Security",),
                                      "EventCode": ("4688",)}
    assert found.schema == "splunk_xmlwineventlog_security"
    assert "override" in (SplunkSources.for_logsource.__doc__ or "") + (SplunkSources.__doc__ or "")
    assert sources.for_logsource(LogSource("opencanary", "application"), "sysmon").schema is None


def test_source_template_terms() -> None:
    assert template_conditions('index=win source="Xml:{channel}"', "A B") == {"index": ("win",),
                                                                              "source": ("Xml:A B",)}
    with pytest.raises(SigmaWmiError, match="field=value"):
        SplunkBackend(source_template="source IN (a, b)")


def test_expanded_macros_are_escu_definitions(scrcons_rule_path: Path) -> None:
    folder = shared_path("corpora", "escu", "macros")
    ctime = yaml.safe_load((folder / "security_content_ctime.yml").read_text(encoding="utf-8"))["definition"]
    (rule,) = read_source(scrcons_rule_path).rules
    text = SplunkBackend(expand_macros=True).convert(rule, "tstats").text
    assert "`" not in text
    assert text.endswith(" | ".join(ctime.replace("$field$", f) for f in ("firstTime", "lastTime")))


def test_rewrites_are_declared_per_format() -> None:
    rewrites = SplunkBackend.REWRITES
    assert set(rewrites) == {"raw", "tstats"}
    names = {fmt: [step.__name__ for step in steps] for fmt, steps in rewrites.items()}
    assert names["raw"][-1] == "add_source_conditions" and "exact_wildcards" in names["raw"]
    assert names["tstats"][-1] == "prefix_node" and "check_cim_fields" in names["tstats"]
    assert names["raw"].index("to_target_names") < names["raw"].index("name_field_references")


# ---- fields checked against the schemas ----

def test_tstats_field_the_data_set_lacks_fails_located() -> None:
    # Sysmon 11 has Image, but CIM Endpoint.Filesystem has no process_path: the search never fires
    rule = sigma_rule("sel:\n  TargetFilename|endswith: '.lnk'\n  Image|endswith: '\\cmd.exe'\ncondition: sel",
                      category="file_event")
    with pytest.raises(UnsupportedError) as raised:
        SplunkBackend().convert(rule, "tstats")
    assert raised.value.code == "field-not-in-schema"
    assert "process_path" in raised.value.message and "Endpoint.Filesystem" in raised.value.message
    assert raised.value.origin is not None and raised.value.origin.path == "test.yml"
    assert raised.value.origin.line == rule.source_text[:rule.source_text.index("Image|")].count("\n") + 1


def test_tstats_field_without_cim_name_uses_the_same_code() -> None:
    rule = sigma_rule("sel:\n  Description: x\ncondition: sel")
    with pytest.raises(UnsupportedError) as raised:
        SplunkBackend().convert(rule, "tstats")
    assert raised.value.code == "field-not-in-schema"


def test_raw_field_outside_the_source_schema_is_reported_at_its_line() -> None:
    rule = sigma_rule("sel:\n  Image: x\n  NoSuchField: y\ncondition: sel")
    output = SplunkBackend().convert(rule, "raw")
    found = [d for d in output.diagnostics if d.code == "field-not-in-schema"]
    assert len(found) == 1 and "NoSuchField" in found[0].message and "Sysmon" in found[0].message
    assert found[0].origin is not None and found[0].origin.path == "test.yml"
    assert found[0].origin.line == rule.source_text[:rule.source_text.index("NoSuchField")].count("\n") + 1


@pytest.mark.parametrize(("category", "reported"), [("process_creation", True), ("file_event", False)])
def test_raw_fields_are_checked_per_event(category: str, reported: bool) -> None:
    # ESCU lists TargetFilename for Sysmon 11 (file creation), never for Sysmon 1
    rule = sigma_rule("sel:\n  TargetFilename|endswith: '.lnk'\ncondition: sel", category=category)
    found = [d for d in SplunkBackend().convert(rule, "raw").diagnostics if d.code == "field-not-in-schema"]
    assert bool(found) is reported
    assert not found or ("TargetFilename" in found[0].message and "event 1" in found[0].message)


def test_raw_fields_of_the_scrcons_rule_are_all_in_the_sysmon_schema(scrcons_rule_path: Path) -> None:
    (rule,) = read_source(scrcons_rule_path).rules
    assert "field-not-in-schema" not in {d.code for d in SplunkBackend().convert(rule, "raw").diagnostics}


# ---- field references ----

def test_field_reference_uses_target_names() -> None:
    rule = sigma_rule("sel:\n  CommandLine|fieldref: ParentCommandLine\ncondition: sel")
    assert raw(rule).endswith("| where lower(CommandLine)==lower(ParentCommandLine)")
    tstats = SplunkBackend().convert(rule, "tstats").text
    assert tstats.endswith("| where lower(process)==lower(parent_process)")
    by = tstats.split(" by ")[1].split(" | ")[0].split()
    assert {"Processes.process", "Processes.parent_process"} <= set(by)


def _fieldref_pairs(node: Any) -> list[tuple[str, str]]:
    """(field, referenced field) pairs of a Sigma detection, read with plain YAML."""
    pairs = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and "|fieldref" in key:
                for other in value if isinstance(value, list) else [value]:
                    pairs.append((key.split("|")[0], str(other)))
            else:
                pairs.extend(_fieldref_pairs(value))
    elif isinstance(node, list):
        for item in node:
            pairs.extend(_fieldref_pairs(item))
    return pairs


def test_sigmahq_field_references_name_target_fields() -> None:
    files = rule_files([shared_path("corpora", "sigmahq", "rules")])
    checked = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        if "|fieldref" not in text:
            continue
        pairs = _fieldref_pairs(yaml.safe_load(text).get("detection"))
        (rule,) = read_source(path).rules
        query = raw(rule)
        tokenize(query)
        for field, other in pairs:
            # these rules' log sources name their event fields as Sigma does
            assert f"lower({eval_field(field)})==lower({eval_field(other)})" in query, (path.name, query)
            checked += 1
    assert checked >= 4


# ---- literal `*` and `?` are exact ----

def _needs_regex(value: object) -> bool:
    return isinstance(value, Pattern) and any(
        p is Wildcard.ONE or (isinstance(p, str) and "*" in p) for p in value.parts)


def _triples(expr: Any) -> set[tuple[Any, ...]]:
    return {(m.field, m.op, v) for m in matches(expr) for v in m.values}


def test_sigmahq_literal_wildcard_rules_are_exact_and_read_back() -> None:
    files = rule_files([shared_path("corpora", "sigmahq", "rules")])
    backend = SplunkBackend()
    exact = 0
    for path in files:
        for rule in read_source(path).rules:
            wanted = {t for t in _triples(rule.detection) if t[1].is_string and _needs_regex(t[2])}
            if not wanted:
                continue
            output = backend.convert(rule, "raw")
            assert not [d for d in output.diagnostics if d.level is not Level.INFO], (path.name, output.diagnostics)
            strings = [t.text for t in tokenize(output.text) if t.kind == "string"]
            profile = backend.raw_profile(rule, catalog().logsource(rule.logsource))
            back = _triples(parse_splunk_search(output.text, profile))
            for field, op, value in wanted:
                if field is not None:
                    assert (field, op, value) in back, (path.name, field, value)
                else:  # a keyword: an unanchored regex over _raw, which the reader keeps as a regex
                    literal = "".join(p if isinstance(p, str) else "x" for p in value.parts)
                    assert any(re.search(s, literal) for s in strings if s.startswith("(?i)")), path.name
            exact += 1
    assert exact >= 30  # 34 in the SigmaHQ corpus of 2026-12: all partial before, exact now


_TEXT = st.text(alphabet=st.characters(min_codepoint=9, max_codepoint=126), min_size=1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TEXT, st.sampled_from([Wildcard.ONE, Wildcard.MANY, "*", "?"])), min_size=1)
       .filter(lambda parts: any(p is Wildcard.ONE or "*" in str(p) for p in parts)))
def test_any_pattern_with_star_or_one_reads_back_exactly(parts: list[str | Wildcard]) -> None:
    pattern = Pattern(tuple(parts))
    rule = Rule(id="x", title="t", detection=Match("CommandLine", Op.WILDCARD, (pattern,)))
    output = SplunkBackend().convert(rule, "raw")
    assert not [d for d in output.diagnostics if d.level is not Level.INFO]
    tokens = tokenize(output.text)
    # a broader search term first, then the exact test
    assert [t.kind for t in tokens] == ["word", "op", "string", "pipe", "word", "word", "lparen", "word", "comma",
                                        "string", "rparen"]
    broad = ".*".join(re.escape(piece) for piece in tokens[2].text.split("*"))  # SPL: `*` is any run
    regex = tokens[-2].text
    assert regex.startswith("(?i)")
    # an event value the pattern matches, in other letter case; and one with a literal `*` widened
    sample = "".join(p if isinstance(p, str) else "Z" for p in pattern.parts)
    assert re.fullmatch(regex[4:], sample.swapcase(), re.I)
    assert re.fullmatch(broad, sample.swapcase(), re.I | re.S)  # the search term never loses an event
    if any(isinstance(p, str) and "*" in p for p in pattern.parts):
        assert not re.fullmatch(regex[4:], sample.replace("*", "!"), re.I)
    expected = normalize(string_match("command_line", pattern))
    assert isinstance(expected, Match)
    back = [m for m in matches(parse_splunk_search(output.text)) if m.field == "command_line"]
    # the SPL reader reads an anchored regex back as the pattern, except one ending in an
    # escaped backslash (`\\\\$`), which it keeps as a regex
    assert expected in back or (back[-1].op is Op.REGEX and sample.endswith("\\"))


# ---- the generator on a small ESCU tree (runs without ../shared) ----

def _write_yaml(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")


def test_generator_on_a_small_escu_tree(tmp_path: Path) -> None:
    escu = tmp_path / "shared" / "corpora" / "escu"
    _write_yaml(escu / "data_sources" / "s1.yml", {
        "name": "Sysmon EventID 1", "source": "XmlWinEventLog:Microsoft-Windows-Sysmon/Operational",
        "sourcetype": "XmlWinEventLog", "separator": "EventID", "separator_value": "1",
        "fields": ["Image", "OriginalFileName"],
        "field_mappings": [{"data_model": "cim", "data_set": "Endpoint.Processes",
                            "mapping": {"Image": "Processes.process_path"}}]})
    _write_yaml(escu / "data_sources" / "s11.yml", {
        "name": "Sysmon EventID 11", "source": "XmlWinEventLog:Microsoft-Windows-Sysmon/Operational",
        "sourcetype": "XmlWinEventLog", "separator": "EventID", "separator_value": "11",
        "fields": ["Image", "TargetFilename"]})
    _write_yaml(escu / "data_sources" / "ct.yml", {
        "name": "AWS CloudTrail", "source": "aws_cloudtrail", "sourcetype": "aws:cloudtrail",
        "fields": ["eventName"]})
    _write_yaml(escu / "macros" / "cloudtrail.yml", {"name": "cloudtrail", "definition": "sourcetype=aws:cloudtrail"})
    _write_yaml(escu / "macros" / "inner.yml", {"name": "inner", "definition": "false"})
    _write_yaml(escu / "macros" / "security_content_summariesonly.yml",
                {"name": "security_content_summariesonly", "definition": "summariesonly=`inner`"})
    _write_yaml(escu / "macros" / "security_content_ctime.yml",
                {"name": "security_content_ctime", "arguments": ["field"], "definition": "ctime($field$)"})
    for number, by in enumerate(["Processes.dest Processes.user", "Processes.dest Processes.user",
                                 "Processes.process_name"]):
        _write_yaml(escu / "detections" / "endpoint" / f"d{number}.yml", {
            "search": "| tstats count from datamodel=Endpoint.Processes where Processes.process_name=x "
                      f"by {by} | `drop_dm_object_name(Processes)`"})
    data = tmp_path / "data"
    _write_yaml(data / "logsources.yaml", {
        "categories": {"process_creation": {"sysmon_event_ids": [1], "cim": "Endpoint.Processes"}},
        "services": {"sysmon": {"channel": "Microsoft-Windows-Sysmon/Operational"}}})

    written = build(tmp_path / "shared", data, {("aws", None, "cloudtrail"): ("AWS CloudTrail",)})
    names = sorted(p.name for p in written)
    assert names == ["cim_endpoint_processes.json", "splunk_aws_cloudtrail.json", "splunk_sources.json",
                     "splunk_xmlwineventlog_microsoft_windows_sysmon_operational.json"]
    sysmon = json.loads((data / "schemas" / names[-1]).read_text(encoding="utf-8"))
    assert sysmon["fields"] == {"Image": {"events": ["1", "11"]}, "OriginalFileName": {"events": ["1"]},
                                "TargetFilename": {"events": ["11"]}}
    cim = json.loads((data / "schemas" / "cim_endpoint_processes.json").read_text(encoding="utf-8"))
    assert cim["split_by"] == ["dest", "user"]  # the list most detections use
    assert set(cim["fields"]) == {"process_path", "process_name", "dest", "user", *INDEXED_FIELDS}
    sources = json.loads((data / "splunk_sources.json").read_text(encoding="utf-8"))
    (entry,) = sources["logsources"]
    assert entry["conditions"] == {"sourcetype": "aws:cloudtrail"}  # the macro searches no source
    assert entry["macros"] == ["cloudtrail"] and entry["data_sources"] == ["AWS CloudTrail"]
    assert sources["macros"]["security_content_summariesonly"]["definition"] == "summariesonly=false"
    assert sources["channels"]["Microsoft-Windows-Sysmon/Operational"]["data_sources"] == [
        "Sysmon EventID 1", "Sysmon EventID 11"]
    first = [p.read_bytes() for p in written]
    again = build(tmp_path / "shared", data, {("aws", None, "cloudtrail"): ("AWS CloudTrail",)})
    assert [p.read_bytes() for p in again] == first  # deterministic


def test_security_profile_applies_only_where_4688_records_the_category() -> None:
    # -p security chooses 4688 over Sysmon 1 for process creation; a WMI-Activity rule keeps its
    # own log's names, so its exclusion filter is not dropped as "absent from 4688".
    rule = sigma_rule("sel:\n    EventID: 5861\nfilter:\n    ESS: x\ncondition: sel and not filter",
                      service="wmi", category="")
    output = SplunkBackend(profile="security").convert(rule, "raw")
    assert 'NOT ESS="x"' in output.text
    assert not [d for d in output.diagnostics if d.code == "absent-field"]
