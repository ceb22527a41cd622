"""Raw-event ESCU searches → model: the source terms pick the log source, the rest are conditions.

The searches below spell out what ESCU's data-source macros expand to (`sysmon` is
`(source=WinEventLog:Microsoft-Windows-Sysmon/Operational OR ...)`), so the table needs no macro
files; `test_shared_macros_pick_the_same_log_sources` runs the macros themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sigma_wmi.api import compile_rule
from sigma_wmi.errors import Level
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
    Rule,
    Threshold,
    Wildcard,
    normalize,
    patterns_match,
    string_match,
)
from sigma_wmi.readers.escu import is_partial, read_escu
from sigma_wmi.readers.spl import parse_search
from tests.conftest import shared_path

SYSMON = ('(source=WinEventLog:Microsoft-Windows-Sysmon/Operational OR '
          'source=XmlWinEventLog:Microsoft-Windows-Sysmon/Operational OR source=Syslog:Linux-Sysmon/Operational)')
SECURITY = ('eventtype="wineventlog_security" OR Channel="security" OR source="XmlWinEventLog:Security" '
            'OR source="WinEventLog:Security"')
POWERSHELL = ('(source=WinEventLog:Microsoft-Windows-PowerShell/Operational OR '
              'source="XmlWinEventLog:Microsoft-Windows-PowerShell/Operational")')
WMI = ('(source="WinEventLog:Microsoft-Windows-WMI-Activity/Operational" OR '
       'source="XmlWinEventLog:Microsoft-Windows-WMI-Activity/Operational")')
AUDITD = 'sourcetype="auditd"'


def escu(search: str) -> Rule:
    return read_escu({"name": "Test", "id": "00000000-0000-4000-8000-000000000000", "search": search},
                     "", "test.yml", Path("/nonexistent"))


def windows(category: str | None = None, service: str | None = None) -> LogSource:
    return LogSource(product="windows", category=category, service=service)


def ends(field: str, text: str) -> Match:
    return string_match(field, Pattern((Wildcard.MANY, text)))


# (search, log source, detection): the log source comes from the source terms and event ids
LOGSOURCES = [
    (f"{SYSMON} EventCode=1 Image=*\\\\scrcons.exe", windows("process_creation"), ends("process_path", "\\scrcons.exe")),
    # one id of wmi_event's 19/20/21 stays a condition, as a Sigma rule writes it
    (f"{SYSMON} EventCode=20", windows("wmi_event"), Match("event_id", Op.EQUALS, (20,))),
    (f"{SYSMON} EventCode IN (19, 20, 21) Operation=*Created*", windows("wmi_event"),
     string_match("wmi_operation", Pattern((Wildcard.MANY, "Created", Wildcard.MANY)))),
    # Security 4688 is process_creation, its fields in Security's names
    (f"{SECURITY} EventCode=4688 NewProcessName=*\\\\wmic.exe", windows("process_creation"),
     ends("process_path", "\\wmic.exe")),
    (f"{POWERSHELL} EventCode=4104 ScriptBlockText=*Register-WmiEvent*", windows("ps_script"),
     string_match("script_block_text", Pattern((Wildcard.MANY, "Register-WmiEvent", Wildcard.MANY)))),
    # WMI-Activity 5861 is the wmi service; its event id is the rule's own condition
    (f"{WMI} EventCode=5861 ESS=*", windows(service="wmi"),
     And((Match("event_id", Op.EQUALS, (5861,)), Match("wmi_activity_ess", Op.EXISTS)))),
    # an older add-on's sourcetype names the channel; a quoted event id is still one
    ('sourcetype="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode="1" CommandLine=*-enc*',
     windows("process_creation"), string_match("command_line", Pattern((Wildcard.MANY, "-enc", Wildcard.MANY)))),
    (f"{AUDITD} type=EXECVE a0=chmod", LogSource(product="linux", service="auditd"),
     And((string_match("type", Pattern.literal("EXECVE")), string_match("a0", Pattern.literal("chmod"))))),
]


@pytest.mark.parametrize(("search", "logsource", "detection"), LOGSOURCES)
def test_source_terms_and_event_ids_pick_the_log_source(search: str, logsource: LogSource, detection: object) -> None:
    rule = escu(search + " | stats count by dest | `test_filter`")
    assert (rule.logsource, rule.detection) == (logsource, normalize(detection))  # type: ignore[arg-type]
    assert not is_partial(rule), [d.message for d in rule.diagnostics]


@pytest.mark.parametrize(("search", "logsource", "detection"), LOGSOURCES)
def test_raw_imports_read_back_from_our_raw_output(search: str, logsource: LogSource, detection: object) -> None:
    rule = escu(search)
    again = escu(compile_rule(rule, "splunk", "raw").text)
    assert (again.logsource, again.detection) == (rule.logsource, rule.detection)


def test_an_add_on_alias_becomes_the_field_its_events_carry() -> None:
    # Sysmon events carry Image; the add-on's process_name is its last path component
    rule = escu(f"{SYSMON} EventCode=1 process_name=wmic.exe")
    assert rule.detection == ends("process_path", "\\wmic.exe")


def test_a_source_no_log_source_stands_for_keeps_its_terms() -> None:
    rule = escu('index=unix TERM(sudoedit) | stats count by host | where count > 5')
    assert rule.logsource.definition == "Splunk raw events: index=unix"
    assert rule.detection == And((string_match("index", Pattern.literal("unix")),
                                  string_match(None, Pattern.literal("sudoedit"))))
    assert rule.aggregation == Aggregation((Threshold(Aggregate.COUNT, Op.GT, 5),), ("host",))
    assert any(d.code == "no-logsource" for d in rule.diagnostics)


def test_a_field_neither_catalog_nor_source_has_is_partial_and_named() -> None:
    rule = escu(f"{SYSMON} EventCode=1 no_such_field=x")
    assert is_partial(rule)
    assert any("'no_such_field'" in d.message and d.level is Level.WARNING for d in rule.diagnostics)


# ---- more SPL: rex captures, filters after stats, lookups, RE2 ----

def test_rex_capture_tests_become_regexes_on_the_field() -> None:
    base = f'{SYSMON} EventCode=1 | rex field=CommandLine "-enc\\s+(?<blob>[A-Za-z0-9+/=]+)"'
    present = Match("command_line", Op.REGEX, (Regex("-enc\\s+([A-Za-z0-9+/=]+)"),), case_sensitive=True)
    assert escu(base + " | where isnotnull(blob)").detection == present
    assert escu(base + " | where isnull(blob)").detection == Not(present)
    assert escu(base + " | search blob=*").detection == present


def test_a_capture_compared_with_a_value_is_the_regex_with_the_value_in_place() -> None:
    rule = escu(f'{WMI} EventCode=5861 | rex field=Message "Consumer =\\s+(?<consumer>[^;]+)" '
                '| search consumer!="SCM*"')
    message = [m for m in rule.detection.items if isinstance(m, Not)]  # type: ignore[union-attr]
    assert message == [Not(Match("message", Op.REGEX, (Regex("Consumer =\\s+[Ss][Cc][Mm][^;]*(?:[;]|$)"),),
                                 case_sensitive=True))]
    assert not is_partial(rule)


def test_a_capture_compared_when_its_text_is_unknown_is_partial() -> None:
    rule = escu(f'{SYSMON} EventCode=1 | rex field=CommandLine "(?<x>\\d+)-(?<y>\\d+)" | search x=5')
    assert is_partial(rule)


def test_filters_after_stats_on_by_fields_and_values_passthroughs() -> None:
    rule = escu(f"{SYSMON} EventCode=1 | stats count values(CommandLine) as CommandLine by Image "
                "| where match(CommandLine, \"(?i)wmic\") AND like(Image, \"%\\\\cmd.exe\")")
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    # eval's like() is case-sensitive
    cased = string_match("process_path", Pattern((Wildcard.MANY, "\\cmd.exe")), case_sensitive=True)
    assert cased in rule.detection.items  # type: ignore[union-attr]


def test_a_filter_on_an_aggregate_that_is_not_countable_is_partial() -> None:
    rule = escu(f"{SYSMON} EventCode=1 | stats min(_time) as firstTime by Image | where firstTime > 5")
    assert is_partial(rule)


def test_a_threshold_after_stats() -> None:
    rule = escu(f"{SYSMON} EventCode=1 Image=*\\\\wmic.exe | stats dc(CommandLine) as n by Computer | where n >= 3")
    assert rule.aggregation == Aggregation((Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 3, "command_line"),), ("host",))


def test_a_lookup_without_its_csv_is_partial_with_the_reason() -> None:
    rule = escu(f"{SYSMON} EventCode=1 | lookup lolbas_file_path lolbas_file_name as process_name OUTPUT description "
                "| where isnotnull(description)")
    assert is_partial(rule)
    assert any("lookup lolbas_file_path: CSV not available" in d.message for d in rule.diagnostics)


def test_a_regex_re2_refuses_is_partial_with_the_reason() -> None:
    rule = escu(f'{SYSMON} EventCode=1 | regex CommandLine="a(?!b)"')
    assert is_partial(rule)
    assert any("RE2" in d.message for d in rule.diagnostics)


@pytest.mark.parametrize(("text", "expected"), [
    ("TERM(sudoedit)", string_match(None, Pattern.literal("sudoedit"))),
    ("CASE(Abc)", string_match(None, Pattern.literal("Abc"), case_sensitive=True)),
    ("x=TERM", string_match("x", Pattern.literal("TERM"))),
])
def test_term_directives(text: str, expected: Match) -> None:
    assert parse_search(text) == expected


def test_in_lists_normalize_like_or_chains_whatever_the_value_types() -> None:
    assert parse_search('f IN ("0x0", 0)') == parse_search('(f="0x0" OR f=0)')


# ---- the macros themselves ----

@pytest.mark.parametrize(("macro", "event", "logsource"), [
    ("sysmon", "EventCode=1", windows("process_creation")),
    ("sysmon", "EventCode=21", windows("wmi_event")),
    ("wineventlog_security", "EventCode=4688", windows("process_creation")),
    ("wineventlog_security", "EventCode=4624", windows(service="security")),
    ("powershell", "EventCode=4104", windows("ps_script")),
    ("wmi", "EventCode=5861", windows(service="wmi")),
    ("wineventlog_system", "EventCode=7045", windows(service="system")),
    ("linux_auditd", "type=SYSCALL", LogSource(product="linux", service="auditd")),
])
def test_shared_macros_pick_the_same_log_sources(macro: str, event: str, logsource: LogSource) -> None:
    macros = shared_path("corpora", "escu", "macros")
    rule = read_escu({"name": "T", "search": f"`{macro}` {event} | stats count by dest | `t_filter`"}, "", "t.yml",
                     macros)
    assert rule.logsource == logsource


# ---- lookups beside the corpus ----

def _with_lookups(tmp_path: Path, search: str) -> Rule:
    (tmp_path / "macros").mkdir()
    lookups = tmp_path / "lookups"
    lookups.mkdir()
    (lookups / "tools.csv").write_text("tool_name,is_tool,kind\nmimikatz.exe,true,creds\n*\\\\psexec*.exe,true,lateral\n"
                                       "notepad.exe,,editor\n", encoding="utf-8")
    (lookups / "tools.yml").write_text("name: tools\nfilename: tools.csv\nmatch_type: WILDCARD(tool_name)\n"
                                       "case_sensitive_match: 'false'\n", encoding="utf-8")
    return read_escu({"name": "T", "search": search}, "", "t.yml", tmp_path / "macros")


def test_a_lookup_test_is_an_in_list_of_the_tables_keys(tmp_path: Path) -> None:
    rule = _with_lookups(tmp_path, f"{SYSMON} EventCode=1 | lookup tools tool_name AS process_path OUTPUT is_tool "
                                   "| where isnotnull(is_tool)")
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    keys = [Pattern.literal("mimikatz.exe"), Pattern((Wildcard.MANY, "\\psexec", Wildcard.MANY, ".exe"))]
    assert rule.detection == normalize(patterns_match("process_path", keys))  # notepad has no is_tool


def test_a_lookup_output_compared_with_a_value(tmp_path: Path) -> None:
    rule = _with_lookups(tmp_path, f"{SYSMON} EventCode=1 | lookup tools tool_name AS process_path OUTPUT kind "
                                   '| search kind="LATERAL"')
    assert rule.detection == string_match("process_path", Pattern((Wildcard.MANY, "\\psexec", Wildcard.MANY, ".exe")))


def test_a_lookup_nothing_tests_only_adds_columns(tmp_path: Path) -> None:
    rule = _with_lookups(tmp_path, f"{SYSMON} EventCode=1 Image=*\\\\cmd.exe | lookup missing x AS y OUTPUT z | table z")
    assert not is_partial(rule)


def test_an_unreadable_lookup_csv_is_partial_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "macros").mkdir()
    (tmp_path / "lookups").mkdir()
    (tmp_path / "lookups" / "bad.csv").write_bytes(b"key,out\n\xff\xfe,1\n")
    rule = read_escu({"name": "T", "search": f"{SYSMON} EventCode=1 | lookup bad key AS Image OUTPUT out "
                                              "| where isnotnull(out)"}, "", "t.yml", tmp_path / "macros")
    assert is_partial(rule)
    assert any("lookup bad: CSV cannot be read" in d.message for d in rule.diagnostics)


@pytest.mark.parametrize(("tail", "partial"), [
    ("| eventstats count as total by dest | dedup dest | head 10", False),  # nothing selects after them
    ("| dedup dest | where count > 5", True),  # a count after a dedup counts something else
    ("| eventstats avg(count) as mean | where count > mean", True),
])
def test_stages_that_keep_some_result_are_harmless_only_at_the_end(tail: str, partial: bool) -> None:
    rule = escu(f"{SYSMON} EventCode=1 Image=*\\\\wmic.exe | stats count by dest {tail}")
    assert is_partial(rule) is partial


def test_a_threshold_grouped_by_a_rex_capture_is_partial() -> None:
    rule = escu(f'{SYSMON} EventCode=1 | rex field=CommandLine "(?<x>[^ ]+)" | stats count by x | where count > 5')
    assert is_partial(rule) and rule.aggregation is None
    assert rule.fields == ("x",)  # the capture is a result column, not an event field called x


def test_other_sources_the_terms_name_are_noted() -> None:
    rule = escu(f"{SYSMON} EventCode=1 Image=*\\\\wmic.exe")
    notes = [d.message for d in rule.diagnostics if d.code == "other-sources"]
    assert len(notes) == 1 and "Syslog:Linux-Sysmon/Operational" in notes[0] and not is_partial(rule)
    assert not [d for d in escu(f"{WMI} EventCode=5861").diagnostics if d.code == "other-sources"]


def test_a_tstats_style_macro_inside_a_raw_search_names_cim_fields() -> None:
    # ESCU's process macros write `Processes.process_name=...`; in a raw search they mean the same fields
    rule = escu(f"{SYSMON} EventCode=1 (Processes.process_name=rundll32.exe OR Processes.original_file_name=RUNDLL32.EXE)")
    assert not is_partial(rule)
    assert rule.detection == normalize(escu(f"{SYSMON} EventCode=1 (Image=*\\\\rundll32.exe OR "
                                            "OriginalFileName=RUNDLL32.EXE)").detection)
