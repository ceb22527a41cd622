"""`sigma-wmi check`: every planted defect found with its line, reports readable by
independent parsers (JSON, JUnit XML through xml.etree, SARIF through the official schema)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_wmi.cli import main

PLANTED = REPO / "tests" / "data" / "check" / "planted"
SARIF_SCHEMA = REPO / "tests" / "data" / "sarif" / "sarif-2.1.0-rtm.5.json"

# Every defect planted in tests/data/check/planted: (file, line, code). Each file holds at least three.
EXPECTED = {
    ("a_metadata.yml", 2, "bad-uuid"),
    ("a_metadata.yml", 6, "bad-date"),
    ("a_metadata.yml", 9, "revoked-technique"),
    ("a_metadata.yml", 17, "bad-level"),
    ("b_condition.yml", 12, "unknown-modifier"),
    ("b_condition.yml", 13, "unused-selection"),
    ("b_condition.yml", 15, "undefined-selection"),
    ("c_fields.yml", 3, "bad-status"),
    ("c_fields.yml", 6, "modified-before-date"),
    ("c_fields.yml", 8, "unknown-technique"),
    ("c_fields.yml", 9, "bad-tag"),
    ("c_fields.yml", 15, "unknown-field"),
    ("c_fields.yml", 16, "bad-modifier-combination"),
    ("d_duplicate.yml", 2, "duplicate-id"),
    ("d_duplicate.yml", 11, "bad-modifier-combination"),
    ("d_duplicate.yml", 12, "bad-modifier-combination"),
    ("d_duplicate.yml", 13, "undefined-selection"),
}

WARNING_ONLY = """title: Conversion warning only
id: 6f1f5a55-2a0d-4d8e-9a55-0a4f2b6d9c10
status: test
description: a regular expression KQL can only approximate
date: 2024-01-02
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        CommandLine|re: 'who.mi'
    condition: selection
level: low
"""
LINT_WARNING_ONLY = WARNING_ONLY.replace("CommandLine|re: 'who.mi'", "CommandLine|contains: 'whoami'") \
    .replace("level: low", "level: low\ntags:\n    - attack.t1002")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--no-config", *args], input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def findings(document: dict) -> set[tuple[str, int, str]]:
    return {(Path(f["path"]).name, f["line"], f["code"]) for rule in document["rules"] for f in rule["findings"]}


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A copy, so that the test also proves the inputs are left byte-identical."""
    folder = tmp_path / "planted"
    shutil.copytree(PLANTED, folder)
    return folder


def test_every_planted_defect_is_reported_with_its_line(planted: Path) -> None:
    before = {p.name: p.read_bytes() for p in planted.iterdir()}
    code, out, _ = run("check", "--no-cache", "-t", "splunk", "--format", "json", str(planted))
    document = json.loads(out)
    assert findings(document) == EXPECTED
    assert code == 1  # errors among them
    per_file = {name: sum(1 for f, _, _ in EXPECTED if f == name) for name, _, _ in EXPECTED}
    assert min(per_file.values()) >= 3
    assert {p.name: p.read_bytes() for p in planted.iterdir()} == before


def test_text_report_has_one_located_line_per_finding(planted: Path) -> None:
    _, out, err = run("check", "--no-cache", "-t", "splunk", str(planted))
    lines = out.splitlines()
    assert len(lines) == len(EXPECTED)
    for name, line, code in EXPECTED:
        assert any(f"{name}:{line}" in text and text.endswith(f"({code})") for text in lines), (name, line, code)
    assert "4 rules: 10 errors, 7 warnings" in err


def test_every_query_target_by_default_and_conversion_findings_name_theirs(tmp_path: Path) -> None:
    rule = tmp_path / "w.yml"
    rule.write_text(WARNING_ONLY)
    code, out, err = run("check", "--no-cache", "--format", "json", str(rule))
    document = json.loads(out)
    assert {f["target"] for r in document["rules"] for f in r["findings"]} == {"kql"}
    assert "splunk:raw" in err and "eql:query" in err and "lucene:query" in err and "sigma:" not in err
    assert code == 0


@pytest.mark.parametrize(("text", "fail_on", "exit_code"), [
    (WARNING_ONLY, "error", 0), (WARNING_ONLY, "partial", 1), (WARNING_ONLY, "warning", 1),
    (LINT_WARNING_ONLY, "error", 0), (LINT_WARNING_ONLY, "partial", 0), (LINT_WARNING_ONLY, "warning", 1),
])
def test_fail_on_decides_the_exit_code(tmp_path: Path, text: str, fail_on: str, exit_code: int) -> None:
    rule = tmp_path / "r.yml"
    rule.write_text(text)
    assert run("check", "--no-cache", "-t", "kql", "--fail-on", fail_on, str(rule))[0] == exit_code


def test_sarif_validates_against_the_sarif_2_1_0_schema(planted: Path, tmp_path: Path) -> None:
    report = tmp_path / "check.sarif"
    run("check", "--no-cache", "-t", "splunk", "-o", str(report), str(planted))  # format from the name
    document = json.loads(report.read_text(encoding="utf-8"))
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator(schema).validate(document)
    (sarif_run,) = document["runs"]
    located = {(Path(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]).name,
                r["locations"][0]["physicalLocation"]["region"]["startLine"], r["ruleId"])
               for r in sarif_run["results"]}
    assert located == EXPECTED
    rule_ids = [rule["id"] for rule in sarif_run["tool"]["driver"]["rules"]]
    assert all(rule_ids[r["ruleIndex"]] == r["ruleId"] for r in sarif_run["results"])
    assert {r["level"] for r in sarif_run["results"]} == {"error", "warning"}


def test_sarif_of_stdin_validates_too(tmp_path: Path) -> None:
    _, out, _ = run("check", "--no-cache", "-t", "kql", "--format", "sarif", "-", stdin=WARNING_ONLY)
    document = json.loads(out)
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))).validate(document)
    assert document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] \
        == "%3Cstdin%3E"


@pytest.mark.parametrize("fail_on", ["error", "warning"])
def test_junit_one_testcase_per_rule_one_failure_per_failing_finding(planted: Path, tmp_path: Path,
                                                                     fail_on: str) -> None:
    report = tmp_path / "check.xml"
    run("check", "--no-cache", "-t", "splunk", "--format", "junit", "--fail-on", fail_on, "-o", str(report),
        str(planted))
    root = ET.parse(report).getroot()
    cases = root.findall(".//testcase")
    assert sorted(Path(c.get("file", "")).name for c in cases) == sorted(p.name for p in PLANTED.iterdir())
    failures = {(Path(c.get("file", "")).name, f.get("type")) for c in cases for f in c.findall("failure")}
    errors = {"bad-uuid", "bad-date", "bad-level", "unknown-modifier", "undefined-selection", "bad-status",
              "duplicate-id"}
    wanted = {(name, code) for name, _, code in EXPECTED
              if fail_on == "warning" or code in errors
              or (code == "bad-modifier-combination" and name in ("c_fields.yml", "d_duplicate.yml"))}
    assert failures == wanted
    failing_cases = sum(1 for c in cases if c.findall("failure"))
    assert root.get("failures") == str(failing_cases)


def test_stdin_is_checked_and_labelled(tmp_path: Path) -> None:
    text = (PLANTED / "a_metadata.yml").read_text(encoding="utf-8")
    code, out, _ = run("check", "--no-cache", "-t", "splunk", "--format", "json", "-", stdin=text)
    document = json.loads(out)
    assert findings(document) == {("<stdin>", line, c) for name, line, c in EXPECTED if name == "a_metadata.yml"}
    assert code == 1


def test_a_file_that_cannot_be_read_is_one_finding_and_the_batch_goes_on(planted: Path) -> None:
    (planted / "broken.yml").write_text("title: x\ndetection: [unclosed\n")
    _, out, _ = run("check", "--no-cache", "-t", "splunk", "--format", "json", str(planted))
    document = json.loads(out)
    broken = [f for r in document["rules"] for f in r["findings"] if Path(f["path"]).name == "broken.yml"]
    assert [(f["code"], f["line"]) for f in broken] == [("yaml-syntax", 3)]
    assert findings(document) - {("broken.yml", 3, "yaml-syntax")} == EXPECTED


def test_cached_and_parallel_reports_equal_the_serial_uncached_one(planted: Path, tmp_path: Path) -> None:
    for n in range(12):  # enough files for two workers to share
        text = (PLANTED / "b_condition.yml").read_text(encoding="utf-8")
        (planted / f"copy{n:02d}.yml").write_text(text.replace("9c01", f"9d{n:02d}"), encoding="utf-8")
    args = ("check", "-t", "splunk", "--format", "json", str(planted))
    serial = run(*args, "--no-cache", "-j", "1")[1]
    cache = tmp_path / "cache"
    first = run(*args, "--cache-dir", str(cache), "-j", "2")[1]
    second = run(*args, "--cache-dir", str(cache), "-j", "2")[1]
    assert serial == first == second
    assert any(cache.rglob("*.json"))


# ---------------------------------------------------------------------------
# Property: any set of defects planted in a clean rule is reported, each on its own line
# ---------------------------------------------------------------------------

CLEAN = """title: Property rule
id: 6f1f5a55-2a0d-4d8e-9a55-0a4f2b6d9c30
status: test
date: 2024-01-02
modified: 2024-02-03
tags:
    - attack.execution
    - attack.t1059.001
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\\\cmd.exe'
        CommandLine|contains: 'whoami'
    filter:
        ParentImage|endswith: '\\\\explorer.exe'
    condition: selection and not filter
level: medium
"""
# line -> (replacement, (line reported, code))
DEFECTS = {
    2: ("id: 1234", (2, "bad-uuid")),
    3: ("status: final", (3, "bad-status")),
    4: ("date: 2024-02-30", (4, "bad-date")),
    5: ("modified: 2024/13/01", (5, "bad-date")),
    7: ("    - attack.tactic_x", (7, "unknown-tactic")),
    8: ("    - attack.t1002", (8, "revoked-technique")),
    14: ("        Image|endswith|bogus: '\\\\cmd.exe'", (14, "unknown-modifier")),
    15: ("        CommandLine|contains|startswith: 'whoami'", (15, "bad-modifier-combination")),
    17: ("        NoSuchField: 'x'", (17, "unknown-field")),
    18: ("    condition: selection and not filter and not other", (18, "undefined-selection")),
    19: ("level: urgent", (19, "bad-level")),
}


def test_the_clean_rule_has_no_finding() -> None:
    from sigma_wmi.check import check_text
    from sigma_wmi.readers import ReadOptions

    (result,) = check_text(CLEAN, "clean.yml", [], ReadOptions())
    assert result.diagnostics == []


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from(sorted(DEFECTS)), min_size=1))
def test_every_planted_defect_of_any_combination_is_found_on_its_line(lines: set[int]) -> None:
    from sigma_wmi.check import check_text
    from sigma_wmi.readers import ReadOptions

    text = CLEAN.splitlines()
    for line in lines:
        text[line - 1] = DEFECTS[line][0]
    (result,) = check_text("\n".join(text) + "\n", "planted.yml", [], ReadOptions())
    assert {(d["line"], d["code"]) for d in result.diagnostics} == {DEFECTS[line][1] for line in lines}


def test_junit_reads_back_with_junitparser(planted: Path, tmp_path: Path) -> None:
    junitparser = pytest.importorskip("junitparser")
    report = tmp_path / "check.xml"
    run("check", "--no-cache", "-t", "splunk", "-o", str(report), str(planted))  # format from the name
    xml = junitparser.JUnitXml.fromfile(str(report))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == 4
    failed = {case.name: sorted(r.type for r in case.result if isinstance(r, junitparser.Failure)) for case in cases}
    assert failed["Planted defects A (metadata)"] == ["bad-date", "bad-level", "bad-uuid"]
    assert failed["Planted defects B (condition and modifiers)"] == ["undefined-selection", "unknown-modifier"]
    assert all(case.system_out for case in cases if case.name.startswith(("Planted defects A", "Planted defects B")))


def test_escu_analytics_get_id_date_and_attack_checks() -> None:
    from conftest import RULES

    from sigma_wmi.check import check_text
    from sigma_wmi.readers import ReadOptions

    text = (RULES / "escu" / "script_execution_via_wmi.yml").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[2].startswith("id: ") and lines[4].startswith("date: ") and lines[59].strip() == "- T1047"
    lines[2], lines[4], lines[59] = "id: not-a-uuid", "date: '2024-31-12'", "    - T1002"
    (result,) = check_text("\n".join(lines) + "\n", "escu.yml", [], ReadOptions(RULES / "escu" / "macros"))
    assert {(d["line"], d["code"]) for d in result.diagnostics} == {
        (3, "bad-uuid"), (5, "bad-date"), (60, "revoked-technique")}
    (clean,) = check_text(text, "escu.yml", [], ReadOptions())
    assert clean.diagnostics == []


@pytest.mark.parametrize(("service", "field", "level", "code"), [
    ("system", "ImagePath", "info", "uncatalogued-field"),  # 7045's event data: in the Splunk System schema
    ("security", "ObjectName", "info", "uncatalogued-field"),  # 4663's, in the Splunk Security schema
    ("security", "ObjectNaem", "warning", "unknown-field"),  # a typo no schema knows
])
def test_a_real_event_field_the_catalog_lacks_is_not_reported_as_unknown(service: str, field: str, level: str,
                                                                         code: str) -> None:
    from sigma_wmi.check import check_text
    from sigma_wmi.readers import ReadOptions

    text = CLEAN.replace("    category: process_creation", f"    service: {service}") \
        .replace("Image|endswith: '\\\\cmd.exe'", f"{field}: 'x'")
    assert f"{field}: 'x'" in text
    (result,) = check_text(text, "f.yml", [], ReadOptions())
    assert [(d["level"], d["code"]) for d in result.diagnostics if "field" in d["code"]] == [(level, code)]


def test_a_default_target_without_an_index_for_the_events_does_not_fail_the_rule(tmp_path: Path) -> None:
    """Elastic Defend (the default Elastic profile) holds no Security log: with the default targets
    that is information about the target, not a defect of the rule; with -t eql it is an error."""
    rule = tmp_path / "r.yml"
    rule.write_text(CLEAN.replace("    category: process_creation", "    service: security")
                    .replace("        Image|endswith: '\\\\cmd.exe'\n", "        EventID: 4625\n")
                    .replace("        CommandLine|contains: 'whoami'\n", "")
                    .replace("    filter:\n        ParentImage|endswith: '\\\\explorer.exe'\n", "")
                    .replace(" and not filter", ""), encoding="utf-8")
    code, out, _ = run("check", "--no-cache", "-f", "json", str(rule))
    by_default = [(f["severity"], f["target"]) for r in json.loads(out)["rules"] for f in r["findings"]
                  if f["code"] == "no-index"]
    assert code == 0 and by_default == [("info", "eql"), ("info", "kql"), ("info", "lucene")]
    code, out, _ = run("check", "--no-cache", "-f", "json", "-t", "eql", str(rule))
    chosen = [(f["severity"], f["target"]) for r in json.loads(out)["rules"] for f in r["findings"]
              if f["code"] == "no-index"]
    assert code == 1 and chosen == [("error", "eql")]


PLANTED_CORRELATION = """title: Base
name: base
id: 6f1f5a55-2a0d-4d8e-9a55-0a4f2b6d9c41
status: test
logsource: {product: windows, category: process_creation}
detection: {sel: {Image|endswith: '\\\\a.exe'}, condition: sel}
level: low
---
title: Many of them
id: 1234
correlation:
    type: event_count
    rules: base
    group-by: {host: Computer}
    timespan: 1M
    condition:
        ge: 10
    generate: 'yes'
level: high
"""


def test_a_correlation_gets_every_defect_on_its_line(tmp_path: Path) -> None:
    """The reader stops at the first defect of a correlation; the lint names each one."""
    path = tmp_path / "corr.yml"
    path.write_text(PLANTED_CORRELATION, encoding="utf-8")
    code, out, _ = run("check", "--no-cache", "-t", "splunk", "-f", "json", str(path))
    assert code == 1
    assert findings(json.loads(out)) == {("corr.yml", 10, "bad-uuid"), ("corr.yml", 14, "invalid-correlation"),
                                         ("corr.yml", 15, "invalid-correlation"),
                                         ("corr.yml", 17, "invalid-correlation"),
                                         ("corr.yml", 18, "invalid-correlation")}
