"""The `escu` target: rules as Splunk security_content detection YAML.

Independent checks: contentctl (Splunk's own models, in its own environment; the tests skip
without it, see tests/contentctl_check.py) accepts the output of every pack rule; our own ESCU
reader reads the written analytic back to the rule's conditions; the file, name and tuning-macro
conventions are checked against contentctl's rule written out here from its source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RULES, shared_path
from contentctl_check import contentctl, validate
from helpers import sigma_rule
from hypothesis import given
from hypothesis import strategies as st

from sigma_wmi.api import compile_rule
from sigma_wmi.backends.escu import EscuBackend
from sigma_wmi.backends.splunk_es import MAX_NAME_CHARS, escu_name, filter_macro_name
from sigma_wmi.model import Rule, normalize
from sigma_wmi.readers import read_source, rule_files
from sigma_wmi.readers.escu import read_escu


def contentctl_file_name(name: str) -> str:
    """contentctl 5.6's `contentNameToFileName` (and, with `_filter`, its filter macro name)."""
    return name.replace(" ", "_").replace("-", "_").replace(".", "_").replace("/", "_").lower() + ".yml"


@cache
def _pack() -> tuple[Rule, ...]:
    return tuple(rule for path in rule_files([RULES]) for rule in read_source(path).rules)


@cache
def _outputs() -> dict[str, str]:
    """Every pack rule's analytic, by the file name the batch writes it under."""
    backend = EscuBackend()
    found = {}
    for rule in _pack():
        text = backend.convert(backend.catalog.map_rule(rule), "yaml").text
        found[f"{backend.file_stem(text)}.yml"] = text
    return found


def test_every_pack_rule_converts_to_a_consistent_analytic() -> None:
    assert len(_outputs()) == len(_pack())
    for file_name, text in _outputs().items():
        analytic = yaml.safe_load(text)
        assert contentctl_file_name(analytic["name"]) == file_name
        assert analytic["search"].endswith(f"| `{file_name[:-4]}_filter`")
        assert analytic["status"] in ("experimental", "production") and analytic["type"] in ("TTP", "Anomaly", "Hunting")
        assert all(re.fullmatch(r"T\d{4}(\.\d{3})?", t) for t in analytic["tags"]["mitre_attack_id"])
        if analytic["type"] != "Hunting":
            fields = [o["field"] for o in analytic["rba"]["risk_objects"] + analytic["rba"]["threat_objects"]]
            # a tstats result row has only its split-by fields; raw events have every field ESCU lists
            assert fields and (not analytic["search"].startswith("| tstats")
                               or all(re.search(rf"\b{f}\b", analytic["search"]) for f in fields)), file_name
            assert all(f"${o['field']}$" in analytic["drilldown_searches"][0]["search"]
                       for o in analytic["rba"]["risk_objects"])


def test_pack_is_accepted_by_contentctl(tmp_path: Path) -> None:
    if contentctl() is None:
        pytest.skip("contentctl not installed (SIGMA_WMI_CONTENTCTL, .cc/bin/contentctl or PATH)")
    corpus = shared_path("corpora", "escu")
    analytics = dict(_outputs())
    # a negative control: the check sees a missing tuning macro, so silence means acceptance
    broken = yaml.safe_load(analytics["script_execution_via_wmi.yml"])
    broken["name"], broken["id"] = "Broken Copy", "0b7e4e0c-6c1c-4a47-9a0e-000000000001"
    analytics["broken_copy.yml"] = yaml.safe_dump(broken, sort_keys=False)
    errors = validate(analytics, corpus, tmp_path)
    assert list(errors) == ["broken_copy.yml"], errors
    assert any("filter macro" in message for message in errors["broken_copy.yml"])


def test_seed_analytic_keeps_its_metadata() -> None:
    (rule,) = read_source(RULES / "escu" / "script_execution_via_wmi.yml").rules
    analytic = yaml.safe_load(compile_rule(rule, "escu").text)
    assert (analytic["id"], analytic["version"], analytic["date"], analytic["status"], analytic["type"]) == (
        "aa73f80d-d728-4077-b226-81ea0c8be589", 6, "2024-09-30", "production", "TTP")
    assert analytic["author"] == "Rico Valdez, Michael Haag, Splunk"
    assert analytic["data_source"] == rule.extras["data_source"]
    assert analytic["how_to_implement"] == rule.extras["how_to_implement"]
    assert analytic["drilldown_searches"] == rule.extras["drilldown_searches"]
    assert analytic["tests"] == rule.extras["tests"]
    assert analytic["tags"]["analytic_story"] == ["Suspicious WMI Use"]
    # 4.x observables and risk score become 5.x rba; the 4.x-only tags are gone (contentctl forbids them)
    assert analytic["rba"]["risk_objects"] == [{"field": "dest", "type": "system", "score": 36},
                                               {"field": "user", "type": "user", "score": 36}]
    assert not {"confidence", "impact", "risk_score", "observable", "required_fields"} & set(analytic["tags"])
    assert analytic["search"].endswith("| `script_execution_via_wmi_filter`")


@pytest.mark.parametrize("path", sorted(p.name for p in (RULES / "sigma").glob("*.yml")))
def test_tstats_analytic_reads_back_to_the_rule(path: str, tmp_path: Path) -> None:
    """Our ESCU reader takes the written analytic back to the same conditions."""
    (rule,) = read_source(RULES / "sigma" / path).rules
    out = compile_rule(rule, "escu")
    analytic = yaml.safe_load(out.text)
    if not analytic["search"].startswith("| tstats"):
        pytest.skip("raw event search (no CIM data model for the log source)")
    written = tmp_path / "analytic.yml"
    written.write_text(out.text, encoding="utf-8")
    again = read_escu(analytic, out.text, str(written))
    assert again.tuning_macro == f"{Path(contentctl_file_name(analytic['name'])).stem}_filter"
    cim = compile_rule(rule, "splunk", "tstats").text
    reread = read_escu({"name": "x", "search": cim}, "", "x.yml")
    assert normalize(again.detection) == normalize(reread.detection)


@given(st.text(max_size=120))
def test_names_fit_contentctl(title: str) -> None:
    name = escu_name(title)
    assert 0 < len(name) <= MAX_NAME_CHARS
    assert re.fullmatch(r"[A-Za-z0-9 _\-./]+", name)
    assert filter_macro_name(title) == contentctl_file_name(name)[:-4] + "_filter"
    assert re.fullmatch(r"[a-z0-9_]+_filter", filter_macro_name(title))


def test_sigma_level_and_tags_decide_the_type() -> None:
    rule = sigma_rule("""
        sel:
            Image|endswith: '\\mofcomp.exe'
        condition: sel
        """, extra="tags:\n    - attack.t1546.003\n    - attack.t1546\n")
    kinds = {level: yaml.safe_load(compile_rule(dataclasses.replace(rule, level=level), "escu").text)
             for level in ("low", "medium", "high")}
    assert [kinds[level]["type"] for level in ("low", "medium", "high")] == ["Hunting", "Anomaly", "TTP"]
    assert "rba" not in kinds["low"] and "drilldown_searches" not in kinds["low"]
    assert {o["score"] for o in kinds["high"]["rba"]["risk_objects"]} == {70}
    assert kinds["high"]["tags"]["mitre_attack_id"] == ["T1546.003"]  # not the technique with its sub-technique


def test_raw_search_when_no_data_model() -> None:
    (rule,) = read_source(RULES / "sigma" / "sysmon_wmi_event_subscription_object_created.yml").rules
    out = compile_rule(rule, "escu")
    analytic = yaml.safe_load(out.text)
    assert analytic["search"].startswith('source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational"')
    assert analytic["data_source"] == ["Sysmon EventID 20", "Sysmon EventID 21"]
    assert any(d.code == "escu-raw-search" for d in out.diagnostics)


def test_batch_names_files_for_contentctl_and_renames_consistently(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    source = (RULES / "sigma" / "proc_creation_win_mofcomp_execution.yml").read_text(encoding="utf-8")
    (rules / "a.yml").write_text(source, encoding="utf-8")
    (rules / "b.yml").write_text(re.sub(r"(?m)^id: .*$", "id: 3c0bc9a2-2a8f-4a38-a0f4-6b1d0e3e0b11", source),
                                 encoding="utf-8")
    out, report = tmp_path / "out", tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "sigma_wmi", "convert", "-t", "escu", "-o", str(out), "--report",
                    str(report), "--no-cache", str(rules)], cwd=REPO, check=True, capture_output=True)
    files = sorted((out / "escu-yaml").glob("*.yml"))
    assert [f.name for f in files] == ["mof_file_compiled_with_mofcomp_exe.yml", "mof_file_compiled_with_mofcomp_exe_2.yml"]
    for file in files:
        analytic = yaml.safe_load(file.read_text(encoding="utf-8"))
        assert contentctl_file_name(analytic["name"]) == file.name
        assert analytic["search"].endswith(f"| `{file.stem}_filter`")
    codes = [d["code"] for r in json.loads(report.read_text(encoding="utf-8"))["rules"] for d in r["diagnostics"]]
    assert "renamed-output" in codes


def test_backtick_in_a_value_is_diagnosed() -> None:
    rule = sigma_rule("""
        sel:
            CommandLine|contains: 'IN`V`o`Ke'
        condition: sel
        """)
    out = compile_rule(rule, "escu")
    assert any(d.code == "escu-backtick" for d in out.diagnostics)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SIGMA_WMI_LONG") != "1", reason="corpus run: SIGMA_WMI_LONG=1")
def test_sigmahq_process_creation_analytics_are_accepted_by_contentctl() -> None:
    """≥ 95 % of the SigmaHQ process_creation rules that convert to tstats (bench/escu_contentctl.py)."""
    if contentctl() is None:
        pytest.skip("contentctl not installed")
    folder = shared_path("corpora", "sigmahq", "rules", "windows", "process_creation")
    result = subprocess.run([sys.executable, str(REPO / "bench" / "escu_contentctl.py"), str(folder)],
                            cwd=REPO, capture_output=True, text=True, check=True)
    found = re.search(r"converted_to_tstats=(\d+) contentctl_accepted=(\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    converted, accepted = map(int, found.groups())
    assert converted > 1000 and accepted >= 0.95 * converted, result.stdout


def test_standard_output_is_one_yaml_stream() -> None:
    result = subprocess.run([sys.executable, "-m", "sigma_wmi", "convert", "-t", "escu", "--no-cache",
                             str(RULES / "sigma" / "proc_creation_win_mofcomp_execution.yml"), str(RULES / "escu")],
                            cwd=REPO, capture_output=True, text=True, check=True)
    names = [document["name"] for document in yaml.safe_load_all(result.stdout)]
    assert names == ["MOF File Compiled With mofcomp.exe", "Script Execution via WMI"]
