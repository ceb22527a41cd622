"""Sigma meta filters: reading them, which rules they select, and the fixture set in
`tests/data/filters/` applied to the pack: every event a filter removes stops matching in the
evaluator, in EQL (the `eql` engine) and in Splunk (read back by our SPL reader), and every
other hit stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, RULES, shared_path
from test_differential import Sample, _eql, eql_hits, local_samples, shared_samples, splunk_predicates

from sigma_wmi.api import load
from sigma_wmi.batch import Cache
from sigma_wmi.cli import main
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.evaluate import compile_rule
from sigma_wmi.model import LogSource, Rule
from sigma_wmi.readers import ReadOptions, read_text_rules
from sigma_wmi.readers.sigma_filters import FILTER_CODE, load_filters, read_filter_text

FILTERS = REPO / "tests" / "data" / "filters"
WMI_OBJECTS = "f17b13ca-ffc0-45e5-9192-db962e936998"

RULE = """title: Suspicious tool
id: 11111111-2222-4333-8444-555555555555
name: suspicious_tool
logsource: {product: windows, category: process_creation}
detection:
    selection: {Image|endswith: '\\tool.exe'}
    condition: selection
"""


def _filter(rules: str = "[suspicious_tool]", logsource: str = "{product: windows}",
            condition: str = "not admin") -> str:
    return (f"title: admins may\nlogsource: {logsource}\nfilter:\n    rules: {rules}\n"
            f"    admin:\n        User|startswith: 'ADM-'\n    condition: {condition}\n")


def _applied(rule_text: str, filter_text: str) -> Rule:
    filters, _ = read_filter_text(filter_text, "f.yml")
    (rule,) = read_text_rules(rule_text, "r.yml", ReadOptions(filters=tuple(filters)))
    return rule


# ---------------------------------------------------------------------------
# Which rules a filter selects
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("rules", "logsource", "applies"), [
    ("[suspicious_tool]", "{product: windows}", True),  # by name
    ("[11111111-2222-4333-8444-555555555555]", "{product: windows}", True),  # by id
    ("any", "{product: windows}", True),
    ("[]", "{product: windows, category: process_creation}", True),  # an empty list is any, as in pySigma
    ("any", "{product: Windows}", True),  # log source names compare case-insensitively
    ("[other_rule]", "{product: windows}", False),
    ("any", "{product: linux}", False),
    ("any", "{product: windows, category: file_event}", False),
    ("any", "{product: windows, service: sysmon}", False),  # the rule names no service
])
def test_selection(rules: str, logsource: str, applies: bool) -> None:
    rule = _applied(RULE, _filter(rules, logsource))
    plain = read_text_rules(RULE, "r.yml")[0]
    assert (rule.detection != plain.detection) is applies
    assert bool([d for d in rule.diagnostics if d.code == FILTER_CODE]) is applies


def test_filter_condition_is_anded_with_fields_of_the_rule() -> None:
    rule = _applied(RULE, _filter())
    predicate = compile_rule(rule)
    base = {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": 1, "process_path": "C:\\x\\tool.exe"}
    assert predicate({**base, "user": "bob"})
    assert not predicate({**base, "user": "adm-alice"})  # case-insensitive, as Sigma
    assert predicate(base)  # `not admin` holds without the field


def test_filter_agrees_with_pysigma() -> None:
    """pySigma reads each fixture as a SigmaFilter (an independent reader of the format)."""
    from sigma.filters import SigmaFilter

    for path in sorted(FILTERS.glob("*.yml")):
        parsed = SigmaFilter.from_yaml(path.read_text(encoding="utf-8"))
        ours = load_filters([path])
        assert len(ours) == 1 and ours[0].title == parsed.title
        assert ours[0].condition == parsed.filter.condition[0]


@pytest.mark.parametrize(("text", "line", "words"), [
    ("title: f\nfilter:\n    rules: any\n    s: {User: x}\n    condition: not s\n", 1, "needs a logsource"),
    ("title: f\nlogsource: {product: windows}\nfilter:\n    s: {User: x}\n    condition: not s\n", 3, "needs 'rules'"),
    ("title: f\nlogsource: {product: windows}\nfilter:\n    rules: any\n    s: {User: x}\n", 3, "condition"),
    ("title: f\nlogsource: {product: windows}\nfilter:\n    rules: any\n    s: {User: x}\n    condition: not t\n",
     6, "filter 'f'"),
    ("title: f\nlogsource: {product: windows}\nfilter:\n    rules: 5\n    s: {User: x}\n    condition: not s\n", 4,
     "rules"),
    ("title: f\nlogsource: {product: windows}\nfilter:\n    rules: any\n    s: {User|nope: x}\n"
     "    condition: not s\n", 5, "nope"),
])
def test_bad_filters_are_located(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "f.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SigmaWmiError) as info:
        load_filters([path])
    assert words in info.value.message
    assert info.value.origin is not None and info.value.origin.line == line


def test_a_rule_passed_as_a_filter_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.yml"
    path.write_text(RULE, encoding="utf-8")
    with pytest.raises(SigmaWmiError, match="not a Sigma filter"):
        load_filters([path])


def test_filter_document_among_rules_is_not_a_broken_rule() -> None:
    """A filter in the rule tree is no "missing required key 'detection'": it holds no rule."""
    assert read_text_rules(_filter(), "f.yml") == []
    rules = read_text_rules(RULE + "---\n" + _filter(), "both.yml")
    assert [r.title for r in rules] == ["Suspicious tool"]


def test_filters_apply_before_correlations() -> None:
    text = RULE + "---\n" + """title: tool twice
correlation:
    type: event_count
    rules: suspicious_tool
    timespan: 1h
    condition: {gte: 2}
"""
    filters, _ = read_filter_text(_filter(), "f.yml")
    (rule,) = read_text_rules(text, "c.yml", ReadOptions(filters=tuple(filters)))
    assert rule.aggregation is not None
    assert "adm-" in str(rule.detection).lower()


# ---------------------------------------------------------------------------
# The fixture set on the pack: every route
# ---------------------------------------------------------------------------

def _pack(filtered: bool) -> dict[str, Rule]:
    options = ReadOptions(filters=load_filters([FILTERS])) if filtered else None
    return {rule.id: rule for rule in load(RULES / "sigma", read_options=options)}


def _hits(rule: Rule, samples: list[Sample], route: str) -> set[int]:
    if route == "evaluator":
        predicate = compile_rule(rule)
        return {i for i, s in enumerate(samples) if predicate(s.canonical)}
    if route == "eql":
        return eql_hits(_eql(rule), samples)
    splunk, uncovered = splunk_predicates(rule)
    return {i for i, s in enumerate(samples)
            if str(s.canonical.get("channel", "")).lower() not in uncovered and splunk(s.canonical)}


def _removed(rule_id: str, sample: Sample) -> bool:
    """What the fixture filters say they remove, read from the raw event."""
    host = str(sample.raw.get("Computer") or "")
    name = str(sample.raw.get("Name") or "")
    return host.lower().endswith(".theshire.local") or (rule_id == WMI_OBJECTS and "updater" in name.lower())


@pytest.mark.parametrize("route", ["evaluator", "eql", "splunk"])
def test_fixture_filters_remove_their_events_in_every_route(route: str) -> None:
    samples: list[Sample] = local_samples() + shared_samples()
    before, after = _pack(False), _pack(True)
    removed_somewhere = 0
    for rule_id, rule in before.items():
        old = _hits(rule, samples, route)
        new = _hits(after[rule_id], samples, route)
        expected = {i for i in old if not _removed(rule_id, samples[i])}
        assert new == expected, f"{rule.origin.path} ({route}): filtered hits differ"
        removed_somewhere += len(old - new)
    assert removed_somewhere >= 10  # the filters do remove hits: 70 -> 56 on the local and shared events


def test_unused_filter_is_a_warning_with_its_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["convert", "-q", "--no-cache", "--filter", str(FILTERS), str(RULES / "sigma")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "(filter-unused)" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{FILTERS / 'selects_nothing.yml'}:1: warning: filter 'A filter for a rule this "
                                  "pack does not have'")
    assert result.stdout.count('NOT Computer="*.theshire.local"') == 11  # every Windows rule of the pack
    assert result.stdout.count('NOT Name="*Updater*"') == 1


def test_cli_filter_changes_every_target_and_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["convert", "-q", "--no-cache", "-t", "splunk,eql,sigma", "-p", "winlogbeat",
                                       "--filter", str(FILTERS / "wmi_objects_not_updater.yml"), "--report",
                                       str(report), "-o", str(tmp_path / "out"), str(RULES / "sigma")])
    assert result.exit_code == 0, result.output
    name = f"{WMI_OBJECTS}"
    texts = {d: (tmp_path / "out" / d / f"{name}{ext}").read_text(encoding="utf-8")
             for d, ext in (("splunk-raw", ".spl"), ("eql-query", ".eql"), ("sigma-yaml", ".yml"))}
    assert 'NOT Name="*Updater*"' in texts["splunk-raw"]
    assert 'winlog.event_data.Name : "*Updater*"' in texts["eql-query"]
    assert "Updater" in texts["sigma-yaml"]
    import json

    rules = json.loads(report.read_text(encoding="utf-8"))["rules"]
    codes = [d["code"] for r in rules if r["id"] == WMI_OBJECTS for d in r["diagnostics"]]
    assert FILTER_CODE in codes


def test_cli_bad_filter_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("title: f\nlogsource: {product: windows}\nfilter:\n    s: {User: x}\n    condition: not s\n",
                   encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "-q", "--no-cache", "--filter", str(bad), str(RULES / "sigma")])
    assert result.exit_code == 2
    assert f"{bad}:3: error: filter needs 'rules'" in result.stderr
    assert result.stdout == ""


def test_cli_applies_a_filter_found_among_the_inputs(tmp_path: Path) -> None:
    tree = tmp_path / "rules"
    tree.mkdir()
    (tree / "rule.yml").write_text(RULE, encoding="utf-8")
    (tree / "filter.yml").write_text(_filter(), encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "--no-cache", str(tree)])
    assert result.exit_code == 0, result.output
    assert "filter.yml:1: info: filter 'admins may'" in result.stderr and "(filter-in-inputs)" in result.stderr
    assert 'NOT User="ADM-*"' in result.stdout
    assert "1 rules: 1 ok" in result.stderr
    assert "missing required key" not in result.output


def _salt(tmp_path: Path, text: str) -> str:
    path = tmp_path / "f.yml"
    path.write_text(text, encoding="utf-8")
    return Cache(tmp_path / "cache", [], ReadOptions(filters=load_filters([path]))).salt


def test_cache_key_follows_filter_content(tmp_path: Path) -> None:
    first = _salt(tmp_path, _filter())
    assert _salt(tmp_path, _filter()) == first
    assert _salt(tmp_path, _filter(condition="admin")) != first
    assert Cache(tmp_path / "cache", [], ReadOptions()).salt != first


def test_logsource_type_is_the_model_one() -> None:
    (meta,) = load_filters([FILTERS / "wmi_objects_not_updater.yml"])
    assert meta.logsource == LogSource("windows", "wmi_event")
    assert meta.rules == (WMI_OBJECTS,)
    assert "detection:" in meta.text and "\nfilter:" not in meta.text




def test_sigma_wmi_test_evaluates_filtered_rules() -> None:
    """The rule declares 15 hits on the recorded Sysmon 19/20/21 events; with the fixture
    filters 8 are left (the Updater subscriptions and the theshire.local hosts go), so its
    declared test fails, and the filter that selects nothing is named with its line."""
    events = shared_path("data", "events", "wmi_sysmon_19_20_21.jsonl")
    rule = RULES / "sigma" / "sysmon_wmi_event_subscription_object_created.yml"
    result = CliRunner().invoke(main, ["test", str(rule), "--filter", str(FILTERS), "--events", str(events)])
    assert result.exit_code == 1
    assert f"        8 hits  {events}" in result.stdout
    assert "expected 15 hits, got 8" in result.stdout
    assert f"{FILTERS / 'selects_nothing.yml'}:1: warning: filter 'A filter for a rule this pack does not have'" \
        in result.stderr


def test_docs_show_filtered_rules(tmp_path: Path) -> None:
    site = tmp_path / "site"
    rule = RULES / "sigma" / "sysmon_wmi_event_subscription_object_created.yml"
    built = CliRunner().invoke(main, ["docs", "-q", "--filter", str(FILTERS), "-o", str(site), str(rule)])
    assert built.exit_code == 0, built.output
    assert "(filter-unused)" in built.stderr
    pages = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.md"))
    assert 'NOT Computer="*.theshire.local" NOT Name="*Updater*"' in pages


def test_a_filter_given_twice_applies_once(tmp_path: Path) -> None:
    tree = tmp_path / "rules"
    tree.mkdir()
    (tree / "rule.yml").write_text(RULE, encoding="utf-8")
    (tree / "filter.yml").write_text(_filter(), encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "--no-cache", "--filter", str(tree / "filter.yml"), str(tree)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count('NOT User="ADM-*"') == 1
    assert "(filter-in-inputs)" not in result.stderr
