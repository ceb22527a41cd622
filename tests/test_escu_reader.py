"""ESCU analytics → model: metadata, macros, post-filters, partial marks, corpus coverage, round trip."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_wmi.api import compile_rule
from sigma_wmi.errors import Level, Origin, SigmaWmiError
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    And,
    LogSource,
    Match,
    Not,
    Op,
    Pattern,
    Regex,
    Technique,
    Threshold,
    Wildcard,
    string_match,
)
from sigma_wmi.readers import ReadOptions, read_file, read_text_rules
from sigma_wmi.readers.escu import is_partial, read_escu
from sigma_wmi.readers.macros import MacroLibrary, expand, split_args
from tests.conftest import RULES, shared_path

DATA = Path(__file__).parent / "data" / "escu"
HELD_OUT = DATA / "detections" / "endpoint"


def escu(search: str, **extra: object) -> object:
    doc = {"name": "Test", "id": "00000000-0000-4000-8000-000000000000", "search": search, **extra}
    return read_escu(doc, "", "test.yml", DATA / "macros")


def eq(field: str, text: str) -> Match:
    return string_match(field, Pattern.literal(text))


# ---- the seed analytic (4.x schema) ----

def test_seed_analytic() -> None:
    (rule,) = read_file(RULES / "escu" / "script_execution_via_wmi.yml")
    assert rule.detection == eq("process_name", "scrcons.exe")  # the name, not the path
    assert rule.logsource == LogSource(product="windows", category="process_creation")
    assert rule.techniques == (Technique("T1047"),)
    assert rule.tactics == ("execution",)
    assert rule.tags == ("attack.execution", "attack.t1047")
    assert rule.id == "aa73f80d-d728-4077-b226-81ea0c8be589"
    assert rule.date == "2024-09-30"
    assert rule.authors == ("Rico Valdez", "Michael Haag", "Splunk")
    assert rule.source_format == "escu" and rule.origin.line == 2
    assert not is_partial(rule)
    for key in ("version", "type", "data_source", "search", "how_to_implement", "known_false_positives",
                "drilldown_searches", "tags", "tests"):
        assert key in rule.extras, key
    assert rule.extras["tags"]["risk_score"] == 36
    assert rule.extras["tests"][0]["attack_data"][0]["sourcetype"] == "XmlWinEventLog"
    spl = rule.extras["spl"]
    assert spl["datamodel"] == "Endpoint.Processes"
    assert "script_execution_via_wmi_filter" in spl["macros"]
    assert [s["kind"] for s in spl["stages"]] == ["drop_dm_object_name", "presentation", "presentation",
                                                  "filter_macro"]
    assert "process_name" in rule.fields and "command_line" in rule.fields


def test_5x_schema_keeps_rba_and_every_key() -> None:
    path = shared_path("corpora", "escu", "detections", "endpoint", "add_or_set_windows_defender_exclusion.yml")
    (rule,) = read_file(path)
    assert rule.extras["rba"]["risk_objects"][0]["score"] == 64
    assert rule.extras["version"] == "10"
    assert rule.detection == And((
        Match("command_line", Op.CONTAINS, (Pattern.literal("Add-MpPreference "),
                                            Pattern.literal("Set-MpPreference "))),
        string_match("command_line", Pattern((Wildcard.MANY, "-exclusion", Wildcard.MANY))),
    ))
    assert rule.tactics == ("defense-evasion",)


def test_held_out_5x_with_nested_macros() -> None:
    (rule,) = read_file(HELD_OUT / "wmi_script_host_child.yml")
    assert rule.detection == And((
        eq("parent_process_name", "wmiprvse.exe"),
        Match("process_name", Op.EQUALS, tuple(Pattern.literal(n) for n in ("cscript.exe", "wscript.exe",
                                                                            "mshta.exe"))),
        Not(Match("command_line", Op.CONTAINS, (Pattern.literal("//nologo"), Pattern.literal("/B ")))),
    ))
    assert rule.techniques == (Technique("T1047"), Technique("T1059.005"))
    assert not is_partial(rule)


def test_held_out_4x_with_post_filters() -> None:
    (rule,) = read_file(HELD_OUT / "encoded_powershell_by_wmi.yml")
    assert rule.date == "2023-03-01" and rule.modified == "2024-06-30"
    assert rule.extras["tags"]["confidence"] == 50
    items = rule.detection.items  # type: ignore[union-attr]
    assert Match("command_line", Op.EXISTS) in items  # `!=` needs the field
    assert eq("parent_process_path", "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe") in items[0].items  # type: ignore
    like = string_match("command_line", Pattern((Wildcard.MANY, "-enc", Wildcard.MANY)), case_sensitive=True)
    assert any(like in getattr(i, "items", ()) for i in items)  # `| where like(...)` is case-sensitive
    regex = [m for m in items if isinstance(m, Not) and isinstance(m.item, Match) and m.item.op is Op.REGEX]
    assert regex[0].item.values[0].pattern == '"healthcheck"'  # type: ignore[union-attr]
    assert not is_partial(rule)  # `| table` only shapes the output


def test_partial_stage_is_named() -> None:
    (rule,) = read_file(HELD_OUT / "scrcons_with_lookup.yml")
    assert is_partial(rule)
    messages = [d.message for d in rule.diagnostics if d.level is Level.WARNING]
    assert any("`| lookup wmi_allow_list" in m for m in messages)
    assert any("`| search NOT allowed=true`" in m and "lookup" in m for m in messages)
    assert rule.extras["import_status"] == "partial"


@pytest.mark.parametrize(("name", "code"), [("cycle.yml", "macro-cycle"), ("unknown_macro.yml", "unknown-macro")])
def test_macro_errors_name_file_and_line(name: str, code: str) -> None:
    with pytest.raises(SigmaWmiError) as info:
        read_file(HELD_OUT / name)
    assert info.value.code == code
    assert info.value.origin is not None and info.value.origin.path.endswith(name)
    assert info.value.origin.line == 4


# ---- macros ----

def test_macro_arguments_and_standard_macros() -> None:
    library = MacroLibrary(DATA / "macros")
    result = expand("`child_of(cmd.exe)` `security_content_summariesonly` `x_filter`", library)
    assert result.text == 'Processes.parent_process_name="cmd.exe" `security_content_summariesonly` `x_filter`'
    assert [c.name for c in result.calls] == ["child_of", "security_content_summariesonly", "x_filter"]


def test_standard_macros_need_no_directory() -> None:
    rule = read_escu({"name": "t", "id": "i", "search": (
        "| tstats `security_content_summariesonly` count from datamodel=Endpoint.Processes "
        "where Processes.process_name=a.exe by Processes.dest | `drop_dm_object_name(Processes)` "
        "| `security_content_ctime(firstTime)` | `t_filter`")}, "", "/nonexistent/x.yml", None)
    assert rule.detection == eq("process_name", "a.exe")


def test_unknown_macro_without_directory() -> None:
    with pytest.raises(SigmaWmiError, match="no macros directory"):
        read_escu({"name": "t", "search": "| tstats count from datamodel=Endpoint.Processes where `m`"},
                  "", "/nonexistent/x.yml", None)


def test_split_args() -> None:
    assert split_args('a, "b,c" ,d') == ("a", '"b,c"', "d")
    assert split_args("") == ()


# ---- post-filters ----

@pytest.mark.parametrize(("post", "imported"), [
    ('| where process_name != parent_process_name', True),
    ('| regex process="(?i)x.{0,4}$"', True),
    ("| search process=*abc*", True),
    ("| rename process as cmd | search cmd=*x*", True),
    ("| where max_time > 5", False),  # an aggregate that is not a count: not an event field either
    ("| where process_path=\"x\"", False),  # not a split-by field: the results do not have it
    ("| eval x=1 | where process=\"y\"", True),  # the filter does not use what eval computed
    ("| eval process=1 | where process=\"y\"", False),  # it tests what eval computed, a constant: not imported
    ("| stats count by dest", False),
    ("| join dest [| tstats count from datamodel=Endpoint.Processes by Processes.dest]", False),
])
def test_post_filters(post: str, imported: bool) -> None:
    rule = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=a.exe "
                "by Processes.dest Processes.process Processes.process_name Processes.parent_process_name "
                "| `drop_dm_object_name(Processes)` " + post)
    assert is_partial(rule) is not imported  # type: ignore[arg-type]
    if imported:
        assert rule.detection != eq("process_name", "a.exe")  # type: ignore[attr-defined]


# ---- count thresholds after the tstats ----

THRESHOLD_BASE = ("| tstats count dc(Processes.process) as cmdlines max(_time) as lastTime "
                  "from datamodel=Endpoint.Processes where Processes.process_name=sc.exe "
                  "by Processes.dest Processes.user _time span=5m | `drop_dm_object_name(Processes)` ")


@pytest.mark.parametrize(("post", "thresholds"), [
    ("| where count >= 4", (Threshold(Aggregate.COUNT, Op.GTE, 4),)),
    ("| search count>10", (Threshold(Aggregate.COUNT, Op.GT, 10),)),
    ("| where cmdlines > 37", (Threshold(Aggregate.DISTINCT_COUNT, Op.GT, 37, "command_line"),)),
    ("| where count=3", (Threshold(Aggregate.COUNT, Op.EQUALS, 3),)),
    ("| where count >= 4 AND cmdlines < 9",
     (Threshold(Aggregate.COUNT, Op.GTE, 4), Threshold(Aggregate.DISTINCT_COUNT, Op.LT, 9, "command_line"))),
    ("| where count >= 4 | where cmdlines < 9",
     (Threshold(Aggregate.COUNT, Op.GTE, 4), Threshold(Aggregate.DISTINCT_COUNT, Op.LT, 9, "command_line"))),
])
def test_thresholds_are_imported(post: str, thresholds: tuple[Threshold, ...]) -> None:
    rule = escu(THRESHOLD_BASE + post)
    assert not is_partial(rule)  # type: ignore[arg-type]
    assert rule.aggregation == Aggregation(thresholds, ("host", "user"), 300)  # type: ignore[attr-defined]
    assert rule.detection == eq("process_name", "sc.exe")  # type: ignore[attr-defined]


def test_threshold_with_a_split_by_field_test() -> None:
    """A test on a split-by field is the same for the whole group: it stays a condition."""
    rule = escu(THRESHOLD_BASE + '| where count >= 4 AND user!="SYSTEM"')
    assert rule.aggregation.thresholds == (Threshold(Aggregate.COUNT, Op.GTE, 4),)  # type: ignore[attr-defined]
    assert isinstance(rule.detection, And)  # type: ignore[attr-defined]


def test_threshold_without_time_buckets() -> None:
    rule = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=sc.exe "
                "by Processes.dest | where count > 2")
    assert rule.aggregation == Aggregation((Threshold(Aggregate.COUNT, Op.GT, 2),), ("host",), None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("post", [
    "| where count >= 4 OR cmdlines > 2",  # a group passes on either: not a list of thresholds
    "| where NOT count >= 4",
    "| where count > 2.5",  # counts are integers: say so rather than round
    "| where count != 4",
    "| where count >= cmdlines",
    "| stats count by dest | where count > 2",  # counts of a re-aggregation
    '| regex count="^1[0-9]"',  # found in review: a regex on a count is not a threshold
    "| eval count=count*2 | where count > 10",  # found in review: the count was rewritten
])
def test_thresholds_the_model_cannot_hold_are_partial(post: str) -> None:
    rule = escu(THRESHOLD_BASE + post)
    assert is_partial(rule)  # type: ignore[arg-type]
    assert rule.aggregation is None  # type: ignore[attr-defined]


def test_aliased_count_is_tested_by_its_alias() -> None:
    search = ("| tstats count as total from datamodel=Endpoint.Processes where Processes.process_name=a.exe "
              "by Processes.dest _time span=1h, ")  # the comma after the span is in the ESCU corpus
    assert escu(search + "| where total > 10").aggregation == Aggregation(  # type: ignore[attr-defined]
        (Threshold(Aggregate.COUNT, Op.GT, 10),), ("host",), 3600)
    assert is_partial(escu(search + "| where count > 10"))  # type: ignore[arg-type]  # no such column


def test_unreadable_span_is_named() -> None:
    rule = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=a.exe "
                "by Processes.dest _time span=1mon | where count > 2")
    assert any("span '1mon'" in d.message for d in rule.diagnostics)  # type: ignore[attr-defined]


def test_threshold_tstats_without_split_and_repeated_distinct_count() -> None:
    plain = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=a.exe "
                 "| where count > 5")
    text = compile_rule(plain, "splunk", "tstats").text  # type: ignore[arg-type]
    assert " by " not in text and text.endswith("| where count > 5")
    ranged = escu(THRESHOLD_BASE + "| where cmdlines > 2 AND cmdlines < 9")
    text = compile_rule(ranged, "splunk", "tstats").text  # type: ignore[arg-type]
    assert text.count("dc(Processes.process)") == 1


def test_time_split_without_span_is_partial() -> None:
    rule = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=sc.exe "
                "by Processes.dest _time | where count > 2")
    assert is_partial(rule)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["tstats", "raw"])
def test_threshold_compiles_to_splunk(fmt: str) -> None:
    rule = escu(THRESHOLD_BASE + "| where count >= 4 AND cmdlines > 2")
    text = compile_rule(rule, "splunk", fmt).text  # type: ignore[arg-type]
    if fmt == "tstats":
        assert " dc(Processes.process) as dc_command_line " in text
        assert text.endswith("by Processes.dest Processes.user _time span=5m | `drop_dm_object_name(Processes)` "
                             "| `security_content_ctime(firstTime)` | `security_content_ctime(lastTime)` "
                             "| where count >= 4 AND dc_command_line > 2")
        again = read_escu({"name": "again", "search": text}, "", "again.yml", DATA / "macros")
        assert again.aggregation == rule.aggregation  # type: ignore[attr-defined]
    else:
        assert text.endswith(" | bin _time span=5m | stats count dc(CommandLine) as dc_command_line "
                             "by Computer User _time | where count >= 4 AND dc_command_line > 2")


def test_subsearch_in_where_clause_is_partial() -> None:
    rule = escu("| tstats count from datamodel=Endpoint.Processes where [| inputlookup t | fields "
                "Processes.process_name] AND Processes.dest!=unknown by Processes.dest")
    assert is_partial(rule)  # type: ignore[arg-type]
    assert rule.extras["spl"]["where_exact"] is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(("search", "code"), [
    ("| inputlookup attacker_tools", "unsupported-search"),
    ("| tstats count where x=1", "unsupported-search"),
    ("| tstats count from datamodel=Endpoint.Processes where (a=1", "spl-syntax"),
    ("| tstats count from datamodel=Endpoint.Processes by Processes.dest", "no-conditions"),
])
def test_bad_searches_raise_with_origin(search: str, code: str) -> None:
    text = f"name: Bad\nid: x\nsearch: '{search}'\n"
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "bad.yml", ReadOptions(DATA / "macros"))
    assert info.value.code == code
    assert info.value.origin == Origin("bad.yml", 3, format="escu")


def test_non_string_search_is_an_error() -> None:
    with pytest.raises(SigmaWmiError, match="non-empty string"):
        read_text_rules("name: x\nsearch: [1, 2]\n", "bad.yml")


# ---- the shared corpus ----

def _corpus() -> list[str]:
    directory = shared_path("corpora", "escu", "detections", "endpoint")
    return [p for p in sorted(glob.glob(str(directory / "*.yml")))
            if "datamodel=Endpoint.Processes" in Path(p).read_text(encoding="utf-8")]


def test_corpus_where_clauses_and_round_trip() -> None:
    """>= 98% of where-clauses exact; every imported detection survives our tstats output."""
    files = _corpus()
    rules, failures = [], []
    for path in files:
        try:
            rules.extend(read_file(path))
        except SigmaWmiError as err:
            failures.append(err)
    with_where = [r for r in rules if r.extras["spl"]["where_exact"] is not None]
    exact = sum(1 for r in with_where if r.extras["spl"]["where_exact"])
    no_where = sum(1 for e in failures if e.code == "no-conditions")
    assert exact / (len(with_where) + len(failures) - no_where) >= 0.98
    for rule in rules:
        text = compile_rule(rule, "splunk", "tstats").text
        back = read_escu({"name": rule.title, "id": rule.id, "search": text}, "", "<tstats>")
        assert back.detection == rule.detection, rule.origin.path


def test_v4_42_seed_era_schema() -> None:
    (rule,) = read_file(shared_path("corpora", "escu", "v4_42", "script_execution_via_wmi.yml"))
    assert rule.detection == eq("process_name", "scrcons.exe")


def test_raw_threshold_computes_the_process_name_it_groups_by() -> None:
    """Sysmon events have no process-name field: the raw search derives it from the image path
    before `stats`, with an eval whose regex (read back by an independent SPL tokenizer)
    keeps what follows the last backslash."""
    import re

    from tests.spl_tokens import tokenize

    rule = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process=*x* "
                "by Processes.process_name _time span=1h | where count > 2")
    text = compile_rule(rule, "splunk", "raw").text  # type: ignore[arg-type]
    tail = text[text.index("| eval process_name=replace(Image,"):]
    regex, replacement = [t.text for t in tokenize(tail) if t.kind == "string"][:2]
    for image, name in [(r"C:\Windows\System32\wbem\scrcons.exe", "scrcons.exe"), ("scrcons.exe", "scrcons.exe"),
                        ("\\\\server\\share\\a b.exe", "a b.exe")]:
        assert re.sub(regex, replacement, image) == name
    assert tail.endswith("| bin _time span=1h | stats count by process_name _time | where count > 2")


# ---- | eval: columns only, or fields a later filter tests ----

EVAL_BASE = ("| tstats count from datamodel=Endpoint.Processes where Processes.process=*x* "
             "by Processes.dest Processes.process Processes.process_name | `drop_dm_object_name(Processes)` ")


def test_eval_that_only_adds_columns_is_not_partial() -> None:
    rule = escu(EVAL_BASE + '| rex field=process "(?<tail>.{3})$" | eval kind=case(match(process, "a"), "A") '
                "| table dest process kind")
    assert not is_partial(rule)  # type: ignore[arg-type]
    assert rule.detection == string_match("command_line", Pattern((Wildcard.MANY, "x", Wildcard.MANY)))  # type: ignore[attr-defined]


def test_eval_fields_tested_later_are_imported() -> None:
    """single_letter_process_on_endpoint's shape: a name of five characters ending in .exe (cased)."""
    rule = escu(EVAL_BASE + '| eval n = len(process_name), exe = if(substr(process_name, -4) == ".exe", 1, 0) '
                "| search n=5 AND exe=1")
    assert not is_partial(rule)  # type: ignore[arg-type]
    from sigma_wmi.evaluate import evaluate
    for name, hit in [("a.exe", True), ("ab.exe", False), ("A.EXE", False), ("a.bat", False)]:
        assert evaluate(rule.detection, {"process_name": name, "command_line": "x"}) is hit  # type: ignore[attr-defined]


@pytest.mark.parametrize(("post", "words"), [
    ('| eval n = mvcount(split(process, "/..")) - 1 | search n > 1', "was not imported"),
    ("| eval n = mvcount(process) | where n > 1", "not imported"),
    ('| eval process = lower(process) | regex process="^A"', "upper-case text"),  # `^a` is exact: see below
    ('| eval p = process | rename p as q | where like(q, "a%")', "computed by `| eval`"),
    ('| eval n = len(process_path) | where n > 1', "not a split-by field"),
])
def test_eval_fields_a_filter_cannot_use_are_partial(post: str, words: str) -> None:
    rule = escu(EVAL_BASE + post)
    assert is_partial(rule)  # type: ignore[arg-type]
    assert any(words in d.message for d in rule.diagnostics if d.code == "partial-import")  # type: ignore[attr-defined]


def test_eval_overwriting_a_field_changes_what_later_filters_test() -> None:
    rule = escu(EVAL_BASE + '| eval process_name = lower(process_name) | where process_name == "cmd.exe"')
    assert not is_partial(rule)  # type: ignore[arg-type]
    assert eq("process_name", "cmd.exe") in rule.detection.items  # type: ignore[attr-defined]  # caseless


def test_held_out_threshold_with_eval_fields() -> None:
    (rule,) = read_file(HELD_OUT / "wmic_burst_with_short_names.yml")
    assert not is_partial(rule)
    assert rule.aggregation == Aggregation((Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 5, "process_id"),),
                                           ("host", "process_name"), 600)
    from sigma_wmi.evaluate import evaluate
    event = {"parent_process_name": "WMIC.exe", "process_name": "ab.exe"}
    assert evaluate(rule.detection, event)
    assert not evaluate(rule.detection, {**event, "process_name": "abc.exe"})
    tstats = compile_rule(rule, "splunk", "tstats").text
    again = read_escu({"name": "again", "search": tstats}, "", "again.yml", DATA / "macros")
    assert (again.detection, again.aggregation) == (rule.detection, rule.aggregation)
    assert tstats.endswith("| where dc_process_id >= 5 | `wmic_burst_with_short_names_filter`")


# ---- filters on `values()` columns; unknown macros standing as a whole stage ----

SYSMON_SOURCE = "source=XmlWinEventLog:Microsoft-Windows-Sysmon/Operational"


@pytest.mark.parametrize(("post", "exact"), [
    # one value asked for (or any of several): the groups with such an event
    ("| search ImageLoaded=*samlib.dll", True),
    ("| search ImageLoaded=*samlib.dll OR ImageLoaded=*vaultcli.dll", True),
    ("| where Image=\"*lsass*\" AND like(ImageLoaded, \"%samlib.dll\")", True),  # split-by AND one value
    # several values together, or none of them: no single event's test says that
    ("| search ImageLoaded=*samlib.dll ImageLoaded=*vaultcli.dll", False),
    ("| search NOT ImageLoaded=*samlib.dll", False),
    ("| where NOT like(ImageLoaded, \"%samlib.dll\")", False),
])
def test_filters_on_every_value_of_a_group(post: str, exact: bool) -> None:
    rule = read_escu({"name": "t", "search": f"{SYSMON_SOURCE} EventCode=7 | stats values(ImageLoaded) as ImageLoaded "
                      f"count by Computer, Image {post}"}, "", "t.yml", None)
    assert is_partial(rule) is not exact, [d.message for d in rule.diagnostics]
    if not exact:
        assert any("values()" in d.message and "ImageLoaded" in d.message for d in rule.diagnostics)


def test_a_values_column_that_is_also_a_split_by_field_has_one_value() -> None:
    rule = read_escu({"name": "t", "search": f"{SYSMON_SOURCE} EventCode=1 | stats values(CommandLine) as CommandLine "
                      "by Computer CommandLine | search CommandLine=*a* CommandLine=*b*"}, "", "t.yml", None)
    assert not is_partial(rule), [d.message for d in rule.diagnostics]


@pytest.mark.parametrize("tail", ["| `not_defined_anywhere`", "| `not_defined_anywhere` | table x",
                                  "| `not_defined_anywhere(1, 2)` | stats count by Image"])
def test_an_unknown_macro_standing_as_a_stage_is_partial_with_its_name(tail: str) -> None:
    rule = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=a.exe "
                f"by Processes.dest Processes.process_name | `drop_dm_object_name(Processes)` {tail}")
    assert is_partial(rule) and rule.detection == eq("process_name", "a.exe")
    warning = next(d for d in rule.diagnostics if d.level is Level.WARNING)
    assert "`not_defined_anywhere" in warning.message and "not defined" in warning.message
    assert warning.origin is not None and warning.origin.line is not None


@pytest.mark.parametrize("search", [
    "`not_defined_anywhere` EventCode=1",  # the source itself
    "| tstats count from datamodel=Endpoint.Processes where `not_defined_anywhere` by Processes.dest",
    "| tstats count from datamodel=Endpoint.Processes by Processes.dest | search `not_defined_anywhere` x=1",
])
def test_an_unknown_macro_anywhere_else_is_still_an_error(search: str) -> None:
    with pytest.raises(SigmaWmiError, match="unknown macro"):
        escu(search)


def test_a_macros_directory_that_does_not_exist_is_a_located_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(SigmaWmiError, match="does not exist") as raised:
        read_escu({"name": "t", "search": "`sysmon` EventCode=1"}, "", "t.yml", tmp_path / "missing")
    assert raised.value.code == "unknown-macro"


@pytest.mark.parametrize(("where", "words"), [
    ("Processs.process_name=net.exe", "'Processs.process_name' is not a field of the CIM data set Endpoint.Processes"),
    ("Processes.registry_path=*Run*", "'Processes.registry_path' is not a field of the CIM data set"),
])
def test_a_tstats_test_of_a_field_the_data_set_lacks_is_partial(where: str, words: str) -> None:
    rule = escu(f"| tstats count from datamodel=Endpoint.Processes where {where} by Processes.dest")
    assert is_partial(rule)
    assert any(words in d.message and d.level is Level.WARNING for d in rule.diagnostics)


def test_a_data_model_the_cim_data_lacks_is_partial() -> None:
    rule = escu("| tstats count from datamodel=Change_Analysis where All_Changes.result_id=4663 by All_Changes.dest")
    assert is_partial(rule)
    assert any("Change_Analysis is not in the CIM data" in d.message for d in rule.diagnostics)


@pytest.mark.parametrize("spelling", ["nodename = All_Changes", "(nodename=All_Changes)", 'nodename="All_Changes"'])
def test_nodename_names_the_data_set(spelling: str) -> None:
    plain = escu("| tstats count from datamodel=Change.All_Changes where All_Changes.action=deleted by All_Changes.dest")
    rule = escu(f"| tstats count from datamodel=Change where {spelling} All_Changes.action=deleted by All_Changes.dest")
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    assert (rule.detection, rule.logsource) == (plain.detection, plain.logsource)


# ---- the events of a data set: `| from datamodel`, `| datamodel X Y search` ----

@pytest.mark.parametrize("head", ["| from datamodel Endpoint.Processes", '| from datamodel:"Endpoint.Processes"',
                                  "| from datamodel=Endpoint.Processes", "| datamodel Endpoint Processes search",
                                  "| datamodel Endpoint Processes"])
def test_a_data_set_search_is_the_tstats_search_of_its_filters(head: str) -> None:
    tstats = escu("| tstats count from datamodel=Endpoint.Processes where Processes.process_name=wmic.exe "
                  "Processes.process=*node:* by Processes.dest")
    rule = escu(f'{head} | search Processes.process_name=wmic.exe process="*node:*" | stats count by dest')
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    assert (rule.detection, rule.logsource) == (tstats.detection, tstats.logsource)
    again = read_escu({"name": "t", "search": compile_rule(rule, "splunk", "tstats").text}, "", "<splunk>")
    assert (again.detection, again.logsource, again.aggregation) == (rule.detection, rule.logsource, rule.aggregation)


def test_a_data_set_search_keeps_thresholds() -> None:
    rule = escu("| from datamodel Endpoint.Processes | search process_name=wmic.exe | stats dc(process) as n by dest "
                "| where n > 3")
    assert rule.aggregation == Aggregation((Threshold(Aggregate.DISTINCT_COUNT, Op.GT, 3, "command_line"),), ("host",))


@pytest.mark.parametrize(("search", "words"), [
    ('| from datamodel Risk.All_Risk | search normalized_risk_object="x"', "not a field of the CIM data set"),
    ("| from datamodel Alerts.Alerts | search app=osquery:results", "Alerts.Alerts is not in the CIM data"),
])
def test_a_data_set_search_on_fields_or_models_the_data_lacks_is_partial(search: str, words: str) -> None:
    rule = escu(search)
    assert is_partial(rule) and any(words in d.message for d in rule.diagnostics)


# ---- bad SPL: a located error or a partial import, never a crash ----

# Pieces of real ESCU searches; any sequence of them is some search, most of them malformed.
_SPL_PIECES = [
    "`sysmon`", "`wmi`", "`powershell`", "`wineventlog_security`", "`unknown_m`", "`x_filter`", "| tstats count",
    "from datamodel=Endpoint.Processes", "from datamodel", "where", "by", "Processes.process_name=a.exe",
    "EventCode=1", "EventCode IN (19,20", ")", "(", "\"", "'", "NOT", "OR", "AND", "=", "!=", "*", "\\",
    "| stats", "count", "values(x) as x", "| where", "match(x, \"(?<", "like(", "| rex field=Message",
    "\"(?<c>[^;]+)\"", "| search", "c=v*", "| eval", "y=lower(x)", "| lookup", "t.csv k OUTPUT v",
    "| rename", "x as y", "| fillnull", "| table", "[| inputlookup t]", "```c```", "| from datamodel X.Y",
    "| datamodel", "nodename=All_Changes", "span=1h", "_time", "| `drop_dm_object_name(Processes)`", "|", "cidrmatch(",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_SPL_PIECES), min_size=1, max_size=14))
def test_any_search_imports_or_is_a_located_error(pieces: list[str]) -> None:
    search = " ".join(pieces)
    try:
        rule = read_escu({"name": "t", "search": search}, "", "t.yml", shared_path("corpora", "escu", "macros"))
    except SigmaWmiError as err:
        assert err.origin is not None and err.origin.path == "t.yml" and err.origin.line
        return
    assert all(d.origin is not None for d in rule.diagnostics if d.level is Level.WARNING)


# ---- `| regex` on a field `| eval` lower-cased or copied ----

SYSTEM_7045 = "source=XmlWinEventLog:System EventCode=7045"


@pytest.mark.parametrize(("stages", "regex"), [
    ('| eval l_ImagePath=lower(ImagePath) | regex l_ImagePath="powershell[.\\s]|pwsh[.\\s]"',
     Regex("powershell[.\\s]|pwsh[.\\s]", frozenset({"i"}))),
    ('| eval path=ImagePath | regex path="^c:\\\\\\\\temp"', Regex("^c:\\\\temp")),
])
def test_a_regex_on_a_lowered_or_copied_field_is_a_regex_on_the_field(stages: str, regex: Regex) -> None:
    rule = read_escu({"name": "t", "search": f"{SYSTEM_7045} {stages}"}, "", "t.yml", None)
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    assert Match("ImagePath", Op.REGEX, (regex,), case_sensitive="i" not in regex.flags) in rule.detection.items  # type: ignore[union-attr]
    again = read_escu({"name": "t", "search": compile_rule(rule, "splunk", "raw").text}, "", "<splunk>")
    assert again.detection == rule.detection


@pytest.mark.parametrize(("stages", "words"), [
    ('| eval l=lower(ImagePath) | regex l="PowerShell"', "upper-case text"),  # never matches a lower-cased value
    ('| eval l=lower(ImagePath) | regex l="\\S+"', "upper-case text"),  # `\S` on lower(f) is not `\s`
    ('| eval n=len(ImagePath) | regex n="1"', "computed as len()"),
])
def test_a_regex_on_other_computed_fields_is_partial(stages: str, words: str) -> None:
    rule = read_escu({"name": "t", "search": f"{SYSTEM_7045} {stages}"}, "", "t.yml", None)
    assert is_partial(rule) and any(words in d.message for d in rule.diagnostics)


def test_a_regex_on_a_lowered_split_by_field_after_tstats() -> None:
    rule = escu(EVAL_BASE + '| eval process = lower(process) | regex process="^a"')
    assert not is_partial(rule), [d.message for d in rule.diagnostics]  # type: ignore[attr-defined]
    assert Match("command_line", Op.REGEX, (Regex("^a", frozenset({"i"})),)) in rule.detection.items  # type: ignore[attr-defined]


def test_time_modifiers_bound_the_search_and_test_no_field() -> None:
    rule = read_escu({"name": "t", "search": f"{SYSMON_SOURCE} EventCode=1 earliest=-24h latest=now Image=*\\\\a.exe"},
                     "", "t.yml", None)
    plain = read_escu({"name": "t", "search": f"{SYSMON_SOURCE} EventCode=1 Image=*\\\\a.exe"}, "", "t.yml", None)
    assert not is_partial(rule) and rule.detection == plain.detection
    assert any(d.code == "time-range" for d in rule.diagnostics)
