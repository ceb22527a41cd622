"""Sigma correlations as practitioners write them (issue #15 review), through every target.

One table of correlation documents in the shapes the Sigma specification and pySigma's own tests
use (written here, not copied): every type, a rule named by `name` or by `id`, `group-by` with
`aliases`, timespans in s/m/h/d/w, each `condition` operator (neq included), `generate`, the
extended `a and b` condition. Each case goes through splunk raw, eql (query and ndjson), kql,
lucene and sigma: an output must be accepted by an independent parser (the `eql` package, luqum,
our KQL grammar, pySigma for the Sigma writer) or the target must refuse the rule saying why;
nothing may crash. Then the shape a detection repository has: a correlation in its own file
naming rules in other files (`tests/data/practitioner/split_correlation/`), through the CLI, the
`eql` engine, the Splunk search read back and the evaluator on recorded Sysmon 19/20 events.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO, shared_path
from test_correlations import _eql_parse, _pair, eql_alerts, evaluator_alerts, splunk_alerts

from sigma_wmi.api import compile_rule, load_all
from sigma_wmi.cli import main
from sigma_wmi.errors import SigmaWmiError, UnsupportedError
from sigma_wmi.model import Rule
from sigma_wmi.readers import ReadOptions, read_text_rules
from sigma_wmi.readers.sigma_correlation import rules_elsewhere

SPLIT = REPO / "tests" / "data" / "practitioner" / "split_correlation"
A_ID = "11111111-2222-4333-8444-555555555555"

BASES = f"""title: Process A
name: proc_a
id: {A_ID}
logsource: {{product: windows, category: process_creation}}
detection: {{sel: {{Image|endswith: '\\a.exe'}}, condition: sel}}
---
title: Process B
name: proc_b
logsource: {{product: windows, category: process_creation}}
detection: {{sel: {{Image|endswith: '\\b.exe'}}, condition: sel}}
---
title: the correlation
"""


def _document(body: str) -> str:
    return BASES + "correlation:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())


# (case, correlation body, titles the file yields, Splunk text, pySigma's reading of the Sigma output:
#  type, rule references, group-by, seconds, condition)
CASES: list[tuple[str, str, list[str], list[str], tuple[Any, ...]]] = [
    ("event_count by id", f"type: event_count\nrules: {A_ID}\ngroup-by: [Computer]\ntimespan: 1h\n"
     "condition: {gte: 10}", ["Process B", "the correlation"],
     ["bin _time span=1h", "stats count by Computer _time", "where count >= 10"],
     ("event_count", 1, ["Computer"], 3600, {"gte": 10})),
    ("value_count neq", "type: value_count\nrules: [proc_a]\ngroup-by: [User]\ntimespan: 1d\n"
     "condition: {field: CommandLine, neq: 1}", ["Process B", "the correlation"],
     ["bin _time span=1d", "dc(CommandLine) as dc_command_line by User _time", "where dc_command_line != 1"],
     ("value_count", 1, ["User"], 86400, {"field": "CommandLine", "neq": 1})),
    ("value_sum lte 30s", "type: value_sum\nrules: proc_a\ntimespan: 30s\ncondition: {field: ProcessId, lte: 5}",
     ["Process B", "the correlation"], ["bin _time span=30s", "where sum_process_id <= 5"],
     ("value_sum", 1, [], 30, {"field": "ProcessId", "lte": 5})),
    ("value_avg lt 1w", "type: value_avg\nrules: proc_a\ntimespan: 1w\ncondition: {field: ProcessId, lt: 100}",
     ["Process B", "the correlation"], ["bin _time span=7d", "where avg_process_id < 100"],
     ("value_avg", 1, [], 604800, {"field": "ProcessId", "lt": 100})),
    ("value_percentile", "type: value_percentile\nrules: proc_a\ntimespan: 1h\n"
     "condition: {field: ProcessId, percentile: 90, gt: 100}", ["Process B", "the correlation"],
     ["exactperc90(ProcessId)", "where exactperc90_process_id > 100"],
     ("value_percentile", 1, [], 3600, {"field": "ProcessId", "percentile": 90, "gt": 100})),
    ("value_median eq", "type: value_median\nrules: proc_a\ntimespan: 15m\ncondition: {field: ProcessId, eq: 4}",
     ["Process B", "the correlation"], ["bin _time span=15m", "where median_process_id == 4"],
     ("value_median", 1, [], 900, {"field": "ProcessId", "eq": 4})),
    ("alias over one rule", "type: event_count\nrules: proc_a\ngroup-by: [h]\naliases: {h: {proc_a: Computer}}\n"
     "timespan: 5m\ncondition: {gt: 3}", ["Process B", "the correlation"],
     ["stats count by Computer _time", "where count > 3"], ("event_count", 1, ["Computer"], 300, {"gt": 3})),
    ("event_count over two rules", "type: event_count\nrules: [proc_a, proc_b]\ngroup-by: [Computer]\n"
     "timespan: 5m\ncondition: {gte: 3}", ["the correlation"], ["| multisearch ", "where count >= 3"],
     ("event_count", 2, ["Computer"], 300, {"gte": 3})),
    ("temporal with aliases", "type: temporal\nrules: [proc_a, proc_b]\ngroup-by: [host]\n"
     "aliases: {host: {proc_a: Computer, proc_b: Computer}}\ntimespan: 30s", ["the correlation"],
     ["eval sigma_step=1, host=Computer", "streamstats time_window=30s"],
     ("temporal", 2, ["host"], 30, {"gte": 2})),
    ("temporal_ordered, rules from the condition", "type: temporal_ordered\ntimespan: 2m\ngroup-by: Computer\n"
     "condition: proc_a and proc_b", ["the correlation"], ["| multisearch ", "sigma_before_2>=_time-120"],
     ("temporal_ordered", 2, ["Computer"], 120, {"gte": 2})),
    ("temporal at least one", "type: temporal\nrules: [proc_a, proc_b]\ntimespan: 1d\ncondition: {gte: 1}",
     ["the correlation"], ["streamstats time_window=1d"], ("temporal", 2, [], 86400, {"gte": 1})),
    ("generate keeps the rules", "type: temporal\nrules: [proc_a, proc_b]\ntimespan: 1m\ngenerate: true",
     ["Process A", "Process B", "the correlation"], ["streamstats time_window=1m"],
     ("temporal", 2, [], 60, {"gte": 2})),
]

TARGETS = [("splunk", None, None), ("eql", None, "winlogbeat"), ("eql", "ndjson", "winlogbeat"),
           ("kql", None, "winlogbeat"), ("lucene", None, "winlogbeat"), ("sigma", None, None)]


def _parsed_by_its_target(target: str, format_: str | None, text: str) -> None:
    """The independent parser of each target accepts the text."""
    if target == "eql":
        _eql_parse(json.loads(text)["query"] if format_ == "ndjson" else text)
    elif target == "lucene":
        from luqum.parser import parser

        parser.parse(text)
    elif target == "kql":
        from kql_grammar import parse

        parse(text)


@pytest.mark.parametrize(("case", "body", "titles", "splunk", "pysigma"), CASES, ids=[c[0] for c in CASES])
def test_practitioner_correlations(case: str, body: str, titles: list[str], splunk: list[str],
                                   pysigma: tuple[Any, ...]) -> None:
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule

    rules = read_text_rules(_document(body), "c.yml")
    assert [r.title for r in rules] == titles
    rule = rules[-1]
    for target, format_, profile in TARGETS:
        try:
            out = compile_rule(rule, target, format_, **({"profile": profile} if profile else {}))
        except UnsupportedError as refused:  # a refusal names the target and says why
            assert str(refused).startswith(f"{target}: ") and len(str(refused)) > 40, (target, refused)
            assert target not in ("splunk", "sigma"), refused  # these two have a form for every type
            continue
        _parsed_by_its_target(target, format_, out.text)
        if target == "splunk":
            assert all(part in out.text for part in splunk), out.text
        if target == "sigma":
            collection = SigmaCollection.from_yaml(out.text)
            collection.resolve_rule_references()
            (correlation,) = [r for r in collection.rules if isinstance(r, SigmaCorrelationRule)]
            written = correlation.to_dict()["correlation"]
            assert (written["type"], len(written["rules"]), written["group-by"] or [], correlation.timespan.seconds,
                    written["condition"]) == pysigma


@pytest.mark.parametrize(("body", "line", "words"), [
    ("type: event_count\nrules: proc_a\ntimespan: 1M\ncondition: {gte: 1}", 16, "months and years"),
    ("type: event_count\nrules: proc_a\ncondition: {gte: 1}", 13, "has no timespan"),
    ("type: event_count\nrules: proc_a\ntimespan: 1m\ncondition: {ge: 1}", 17, "gt, gte, lt, lte, eq or neq"),
    ("type: event_count\nrules: proc_c\ntimespan: 1m\ncondition: {gte: 1}", 15, "rule 'proc_c'"),
])
def test_practitioner_errors_say_what_and_where(body: str, line: int, words: str) -> None:
    with pytest.raises(SigmaWmiError) as caught:
        read_text_rules(_document(body), "c.yml")
    assert caught.value.origin is not None and caught.value.origin.line == line
    assert words in caught.value.message


def test_sigma_writer_refuses_what_pysigma_cannot_read() -> None:
    """pySigma reads one comparison per condition: a range is refused with the reason, never
    written as a correlation pySigma rejects."""
    (_, rule) = read_text_rules(_document("type: event_count\nrules: proc_a\ntimespan: 1m\n"
                                          "condition: {gte: 5, lt: 100}"), "c.yml")
    assert "count < 100" in compile_rule(rule, "splunk").text.replace("count >= 5 AND count < 100", "count < 100")
    with pytest.raises(UnsupportedError, match="one comparison"):
        compile_rule(rule, "sigma")


# ---------------------------------------------------------------------------
# A correlation in its own file, naming rules in other files (by name and by id)
# ---------------------------------------------------------------------------

def _split_rule() -> Rule:
    rules, errors = load_all([SPLIT])
    assert errors == []
    (rule,) = rules  # the two base rules do not alert on their own (no generate)
    return rule


def test_rules_named_from_other_files_are_found() -> None:
    rule = _split_rule()
    assert rule.temporal is not None and rule.temporal.ordered
    assert [(s.name, s.rule.origin.path.rsplit("/", 1)[-1]) for s in rule.temporal.steps] == [
        ("wmi_filter_created", "wmi_filter_created.yml"),
        ("7d2e3f4a-5b6c-4d7e-9f8a-0b1c2d3e4f52", "wmi_consumer_created.yml")]
    assert rule.temporal.window == 60 and rule.temporal.group_by == ("host",)


def test_split_correlation_on_recorded_events() -> None:
    """The ordered pair of recorded events alerts and the reversed pair does not, in the `eql`
    engine, the Splunk search read back and the evaluator."""
    shared_path("data", "events", "wmi_sysmon_19_20_21.jsonl")
    rule = _split_rule()
    query = compile_rule(rule, "eql", profile="winlogbeat").text
    assert query.startswith("sequence by host.name with maxspan=1m\n")
    ordered, reversed_ = _pair(), _pair(reversed_=True)
    ids = [str(e["EventRecordID"]) for e in ordered]
    assert eql_alerts(query, ordered) == ids and eql_alerts(query, reversed_) == []
    assert evaluator_alerts(rule, ordered) == ids and evaluator_alerts(rule, reversed_) == []
    assert splunk_alerts(rule, ordered) == ids[-1:] and splunk_alerts(rule, reversed_) == []


def test_generate_in_the_correlation_file_keeps_the_rules_of_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(SPLIT, folder)
    correlation = folder / "filter_then_consumer.yml"
    correlation.write_text(correlation.read_text(encoding="utf-8").replace("    timespan: 1m\n",
                                                                             "    timespan: 1m\n    generate: true\n"),
                           encoding="utf-8")
    rules, _ = load_all([folder])
    assert sorted(r.title for r in rules) == ["WMI event consumer created", "WMI event filter created",
                                              "WMI filter then consumer on one host within a minute"]


def test_a_name_no_input_file_holds_is_a_located_error(tmp_path: Path) -> None:
    only = tmp_path / "corr.yml"
    only.write_text((SPLIT / "filter_then_consumer.yml").read_text(encoding="utf-8"), encoding="utf-8")
    rules, errors = load_all([only])
    assert rules == [] and len(errors) == 1
    assert "rule 'wmi_filter_created', which is neither in this file nor in the other input files" \
        in errors[0].message and errors[0].origin is not None and errors[0].origin.line == 11  # rules:


def test_cli_convert_and_test_on_a_split_correlation(tmp_path: Path) -> None:
    events = shared_path("data", "events", "wmi_sysmon_19_20_21.jsonl")
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "--no-cache", "-t", "eql", "-p", "winlogbeat", str(SPLIT)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("sequence by host.name with maxspan=1m")
    result = runner.invoke(main, ["test", str(SPLIT), "--events", str(events)])
    assert result.exit_code == 0 and "10 hits" in result.output, result.output


def test_the_cache_sees_an_edit_of_a_rule_in_another_file(tmp_path: Path) -> None:
    """The correlation's file did not change, the rule it names did: the cached output must not
    be reused."""
    folder = tmp_path / "rules"
    shutil.copytree(SPLIT, folder)
    args = ["convert", "--cache-dir", str(tmp_path / "cache"), "-t", "splunk", str(folder)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and "EventCode=20" in first.stdout, first.output
    base = folder / "wmi_consumer_created.yml"
    base.write_text(base.read_text(encoding="utf-8").replace("EventID: 20", "EventID: 21"), encoding="utf-8")
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "EventCode=21" in second.stdout and "EventCode=20" not in second.stdout


def test_rules_elsewhere_reads_only_what_correlations_name() -> None:
    found = rules_elsewhere(sorted(SPLIT.glob("*.yml")), ReadOptions())
    assert sorted(found.rules) == ["7d2e3f4a-5b6c-4d7e-9f8a-0b1c2d3e4f52", "wmi_filter_created"]
    assert not any(found.generate.values())
    assert rules_elsewhere([REPO / "tests" / "data" / "correlations" / "wmi_filter_then_consumer.yml"],
                           ReadOptions()).rules == {}  # its rules are in its own file


@pytest.mark.parametrize(("case", "body"), [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_check_finds_no_error_in_valid_correlations(case: str, body: str) -> None:
    from sigma_wmi.check import check_text

    results = check_text(_document(body), "c.yml", [], ReadOptions())
    assert [d for r in results for d in r.diagnostics if d["level"] == "error"] == []


SPRAYING = """title: Failed logon
name: failed_logon
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4625}, condition: sel}
---
title: Password spraying from one address
correlation:
    type: value_count
    rules: failed_logon
    group-by: [IpAddress]
    timespan: 10m
    condition: {field: TargetUserName, gte: 10}
"""


def test_fields_the_catalog_lacks_are_grouped_and_counted_by_their_sigma_names() -> None:
    """Security 4625's IpAddress and TargetUserName are not catalog fields: Splunk and the Sigma
    writer keep the rule's names, as they do in a detection, instead of refusing the rule."""
    from sigma.collection import SigmaCollection

    (rule,) = read_text_rules(SPRAYING, "s.yml")
    assert "stats count dc(TargetUserName) as dc_TargetUserName by IpAddress _time | where dc_TargetUserName >= 10" \
        in compile_rule(rule, "splunk").text
    collection = SigmaCollection.from_yaml(compile_rule(rule, "sigma").text)
    collection.resolve_rule_references()
    written = collection.rules[-1].to_dict()["correlation"]
    assert (written["group-by"], written["condition"]) == (["IpAddress"], {"field": "TargetUserName", "gte": 10})
