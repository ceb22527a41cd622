"""The WMI persistence pack: metadata, every declared test, and the `test` command."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, RULES, SHARED

from sigma_wmi import load, rule_tests
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.evaluate import compile_rule
from sigma_wmi.model import Rule
from sigma_wmi.rule_tests import (
    SHARED_PREFIX,
    EventCache,
    Roots,
    declared_tests,
    record_id,
    run_case,
)

PACK = sorted((RULES / "sigma").glob("*.yml"))
BENIGN = ("shared:data/events/benign_nonwmi_process_creation.jsonl",
          "shared:data/events/benign_os_background_process_creation.jsonl")
ROOTS = Roots(REPO, SHARED)
CACHE = EventCache()


def pack_rules() -> list[Rule]:
    return [rule for path in PACK for rule in load(path)]


def cases():
    for rule in pack_rules():
        for index, case in enumerate(declared_tests(rule), 1):
            name = f"{Path(rule.origin.path).stem}-{index}-{Path(case.events).stem}"
            yield pytest.param(rule, case, id=name)


@pytest.mark.parametrize(("rule", "case"), list(cases()))
def test_declared(rule: Rule, case) -> None:
    result = run_case(case, compile_rule(rule), rule, ROOTS, CACHE)
    if result.status == "skip":
        pytest.skip(result.message)
    assert result.status == "pass", f"{rule.origin.path}: {case.events}: {result.message}"


@pytest.mark.parametrize("rule", pack_rules(), ids=lambda r: Path(r.origin.path).stem)
def test_metadata(rule: Rule) -> None:
    assert uuid.UUID(rule.id)
    assert rule.techniques and all(t.id.startswith("T1") for t in rule.techniques)
    assert rule.level in ("low", "medium", "high", "critical")
    assert rule.falsepositives
    tests = declared_tests(rule)
    events = {case.events for case in tests}
    assert set(BENIGN) <= events, "every rule declares 0 hits on both benign files"
    for case in tests:
        if case.events in BENIGN:
            assert case.hits == 0
    synthetic = [c for c in tests if not c.events.startswith(SHARED_PREFIX)]
    assert any(c.record_ids or c.hits or c.min_hits for c in synthetic), "a synthetic true positive"
    assert any(c.hits == 0 for c in synthetic), "a synthetic near-miss file"


def test_ids_are_unique() -> None:
    ids = [rule.id for rule in pack_rules()]
    assert len(ids) == len(set(ids))


def test_rules_without_recorded_sample_say_so() -> None:
    for rule in pack_rules():
        shared_hits = [c for c in declared_tests(rule) if c.events.startswith(SHARED_PREFIX)
                       and c.events not in BENIGN and (c.hits or c.min_hits or c.record_ids)]
        if not shared_hits:
            assert re.search(r"no recorded .*synthetic", " ".join(rule.description.split()), re.I), \
                rule.origin.path


def test_scrcons_hits_exactly_the_two_positives_raw_and_ecs() -> None:
    rule = load(RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml")[0]
    path = ROOTS.resolve("shared:data/events/wmi_persistence_positives_process.jsonl", rule)
    if path is None or not path.exists():
        pytest.skip("shared data not available")
    predicate = compile_rule(rule)
    for mapped in ("raw", "ecs"):
        events = CACHE.get(path, mapped)
        assert sorted(record_id(e) for e in events if predicate(e)) == ["120461", "431364"]


# ---- declarations ----

RULE_TEXT = """title: t
id: 11111111-2222-4333-8444-555555555555
logsource: {product: windows, category: process_creation}
detection:
    sel:
        Image|endswith: '\\scrcons.exe'
    condition: sel
level: low
"""


def write_rule(tmp_path: Path, tests: str) -> Path:
    path = tmp_path / "rule.yml"
    path.write_text(RULE_TEXT + tests, encoding="utf-8")
    return path


@pytest.mark.parametrize("tests", [
    "x_sigma_wmi_tests: nope\n",
    "x_sigma_wmi_tests:\n  - hits: 1\n",
    "x_sigma_wmi_tests:\n  - events: a.jsonl\n",
    "x_sigma_wmi_tests:\n  - events: a.jsonl\n    hits: -1\n",
    "x_sigma_wmi_tests:\n  - events: a.jsonl\n    hits: 1\n    bogus: 2\n",
    "x_sigma_wmi_tests:\n  - events: a.jsonl\n    hits: 1\n    mapped: kql\n",
])
def test_bad_declarations_name_file_and_line(tmp_path: Path, tests: str) -> None:
    rule = load(write_rule(tmp_path, tests))[0]
    with pytest.raises(SigmaWmiError) as info:
        declared_tests(rule)
    assert info.value.origin is not None and info.value.origin.line == RULE_TEXT.count("\n") + 1


# ---- the command ----

def test_command_passes_on_the_pack(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    synthetic = REPO / "tests" / "data" / "events" / "wmi_pack_synthetic.jsonl"
    result = CliRunner().invoke(rule_tests.test_command, [str(RULES / "sigma"), "--events", str(synthetic),
                                               "--report", str(report), "--root", str(REPO),
                                               "--shared", str(SHARED)])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert len(doc["rules"]) == len(PACK)
    by_title = {r["title"]: r for r in doc["rules"]}
    mofcomp = by_title["MOF File Compiled With mofcomp.exe"]
    assert mofcomp["hits"][str(synthetic)]["record_ids"] == ["3701", "3702", "3703"]
    assert all(t["status"] in ("pass", "skip") for r in doc["rules"] for t in r["tests"])


def test_command_fails_on_a_broken_expectation(tmp_path: Path) -> None:
    synthetic = REPO / "tests" / "data" / "events" / "wmi_pack_synthetic.jsonl"
    rule = write_rule(tmp_path, f"x_sigma_wmi_tests:\n  - events: {synthetic}\n    hits: 1\n")
    result = CliRunner().invoke(rule_tests.test_command, [str(rule)])
    assert result.exit_code == 1
    assert "expected 1 hits" in result.output


def test_command_reports_missing_local_event_file(tmp_path: Path) -> None:
    rule = write_rule(tmp_path, "x_sigma_wmi_tests:\n  - events: nowhere/x.jsonl\n    hits: 0\n")
    result = CliRunner().invoke(rule_tests.test_command, [str(rule), "--root", str(tmp_path)])
    assert result.exit_code == 1 and "event file not found" in result.output


def test_command_skips_missing_shared_data(tmp_path: Path) -> None:
    rule = write_rule(tmp_path, "x_sigma_wmi_tests:\n  - events: shared:data/none.jsonl\n    hits: 3\n")
    result = CliRunner().invoke(rule_tests.test_command, [str(rule), "--shared", str(tmp_path)])
    assert result.exit_code == 0 and "skip" in result.output


def test_command_input_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n", encoding="utf-8")
    rule = write_rule(tmp_path, "")
    result = CliRunner().invoke(rule_tests.test_command, [str(rule), "--events", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:1" in result.output


def test_command_fails_only_the_rule_the_evaluator_cannot_run(tmp_path: Path) -> None:
    """A regex RE2 refuses (a lookahead) fails its own rule, located; the other rules still run."""
    synthetic = REPO / "tests" / "data" / "events" / "wmi_pack_synthetic.jsonl"
    refused = tmp_path / "refused.yml"
    refused.write_text(
        "title: Lookahead\nid: 0d0e5a51-7c35-4f4e-9a3e-2f7a6c1b9e01\n"
        "logsource:\n  product: windows\n  category: process_creation\n"
        "detection:\n  sel:\n    CommandLine|re: 'a(?=b)'\n  condition: sel\n", encoding="utf-8")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(rule_tests.test_command, [str(refused), str(RULES / "sigma"), "--events",
                                                          str(synthetic), "--report", str(report)])
    assert result.exit_code == 1, result.output
    assert f"{refused}:8" in result.output
    doc = json.loads(report.read_text(encoding="utf-8"))
    by_title = {r["title"]: r for r in doc["rules"]}
    assert by_title["Lookahead"]["status"] == "fail" and by_title["Lookahead"]["error"]["line"] == 8
    mofcomp = by_title["MOF File Compiled With mofcomp.exe"]
    assert mofcomp["hits"][str(synthetic)]["record_ids"] == ["3701", "3702", "3703"]
