"""Splunk backend: golden tables per format, escaping proven with an independent tokenizer."""

from __future__ import annotations

import pytest
from helpers import sigma_rule
from hypothesis import given, settings
from hypothesis import strategies as st
from spl_tokens import Token, tokenize

import sigma_wmi
from sigma_wmi import Match, Op, Pattern, Rule, Wildcard
from sigma_wmi.backends.splunk import SplunkBackend, spl_string
from sigma_wmi.errors import Level, UnsupportedError
from sigma_wmi.model import LogSource, Regex

SYSMON = 'source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode=1'


def raw(rule: Rule, **options: object) -> str:
    return SplunkBackend(**options).convert(rule, "raw").text


# ---- must-show outputs ----

def test_scrcons_raw_search(scrcons_rule_path) -> None:
    (rule,) = sigma_wmi.load(scrcons_rule_path)
    assert sigma_wmi.convert(rule, "splunk") == (
        SYSMON + r' Image="C:\\WINDOWS\\system32\\wbem\\scrcons.exe"'
        r' ParentImage="C:\\Windows\\System32\\svchost.exe"')


def test_scrcons_backslashes_doubled_exactly_once(scrcons_rule_path) -> None:
    text = sigma_wmi.convert(scrcons_rule_path, "splunk")
    assert "\\\\\\\\" not in text  # never four
    values = [t.text for t in tokenize(text) if t.kind == "string"]
    assert r"C:\WINDOWS\system32\wbem\scrcons.exe" in values


def test_scrcons_tstats(scrcons_rule_path) -> None:
    text = sigma_wmi.convert(scrcons_rule_path, "splunk", "tstats")
    assert text.startswith("| tstats `security_content_summariesonly` count min(_time) as firstTime "
                           "max(_time) as lastTime from datamodel=Endpoint.Processes where "
                           r'Processes.process_path="C:\\WINDOWS\\system32\\wbem\\scrcons.exe" '
                           r'Processes.parent_process_path="C:\\Windows\\System32\\svchost.exe" by ')
    assert text.endswith("| `drop_dm_object_name(Processes)` | `security_content_ctime(firstTime)` "
                         "| `security_content_ctime(lastTime)`")


def test_tstats_expanded_macros_need_no_escu(scrcons_rule_path) -> None:
    text = sigma_wmi.convert(scrcons_rule_path, "splunk", "tstats", expand_macros=True)
    assert "`" not in text
    assert "summariesonly=false" in text and "| rename Processes.* as *" in text


def test_security_4688_profile(scrcons_rule_path) -> None:
    text = sigma_wmi.convert(scrcons_rule_path, "splunk", profile="security")
    assert text == ('source="XmlWinEventLog:Security" EventCode=4688 '
                    r'NewProcessName="C:\\WINDOWS\\system32\\wbem\\scrcons.exe" '
                    r'ParentProcessName="C:\\Windows\\System32\\svchost.exe"')


def test_security_profile_refuses_fields_4688_lacks() -> None:
    rule = sigma_rule("""
        sel:
            ParentCommandLine|contains: foo
        condition: sel
    """)
    with pytest.raises(UnsupportedError, match=r"cannot match Security 4688 events, which have no ParentCommandLine"):
        raw(rule, profile="security")


def test_security_profile_drops_or_branches_4688_cannot_have() -> None:
    rule = sigma_rule("""
        sel:
            - Image|endswith: '\\mofcomp.exe'
            - OriginalFileName: mofcomp.exe
        filter:
            ParentCommandLine|contains: setup
        condition: sel and not filter
    """)
    output = SplunkBackend(profile="security").convert(rule, "raw")
    assert output.text == r'source="XmlWinEventLog:Security" EventCode=4688 NewProcessName="*\\mofcomp.exe"'
    assert [d.code for d in output.diagnostics] == ["absent-field"]
    assert "OriginalFileName" in output.diagnostics[0].message and "ParentCommandLine" in output.diagnostics[0].message


def test_source_template_is_configurable(scrcons_rule_path) -> None:
    text = sigma_wmi.convert(scrcons_rule_path, "splunk", source_template='index=wineventlog sourcetype="{channel}"')
    # the template is read as field=value terms and written back with SPL quoting
    assert text.startswith('index="wineventlog" sourcetype="Microsoft-Windows-Sysmon/Operational" EventCode=1 ')


# ---- table of detections -> raw search (after the log-source prefix) ----

CASES = [
    ("sel:\n  Image|endswith: '\\cmd.exe'\ncondition: sel", r'Image="*\\cmd.exe"'),
    ("sel:\n  CommandLine|contains:\n    - ' -enc '\n    - ' -e '\ncondition: sel",
     'CommandLine IN ("* -enc *", "* -e *")'),
    ("sel:\n  CommandLine|contains|all:\n    - a\n    - b\ncondition: sel", 'CommandLine="*a*" CommandLine="*b*"'),
    ("a:\n  Image: x\nb:\n  Image: y\nc:\n  User: z\ncondition: (a or b) and c",
     'Image IN ("x", "y") User="z"'),
    # Or of Ands needs parentheses in SPL, where OR binds tighter than AND.
    ("a:\n  Image: x\n  User: u\nb:\n  Image: y\ncondition: a or b", '((Image="x" User="u") OR Image="y")'),
    ("a:\n  Image: x\nb:\n  User: u\n  CommandLine: c\ncondition: a and not b",
     'Image="x" NOT (User="u" CommandLine="c")'),
    ("sel:\n  ProcessId: 4\ncondition: sel", "ProcessId=4"),
    ("sel:\n  CommandLine: null\ncondition: sel", "NOT CommandLine=*"),
    ("sel:\n  CommandLine|exists: true\ncondition: sel", "CommandLine=*"),
    ("sel:\n  ProcessId|gte: 10\ncondition: sel", "ProcessId>=10"),
    ("kw:\n  - evil.exe\ncondition: kw", '"evil.exe"'),
    ("sel:\n  Image|startswith: 'C:\\Users\\'\ncondition: sel", r'Image="C:\\Users\\*"'),
]


@pytest.mark.parametrize(("detection", "expected"), CASES)
def test_raw_search_table(detection: str, expected: str) -> None:
    assert raw(sigma_rule(detection)) == f"{SYSMON} {expected}"


def test_regex_goes_to_where_and_keeps_or() -> None:
    # pySigma's Splunk backend turns an OR with a regex into an AND; ours must not.
    rule = sigma_rule("""
        a:
            CommandLine|re: 'foo\\d+'
        b:
            Image|endswith: '\\x.exe'
        condition: a or b
    """)
    text = raw(rule)
    assert text == (SYSMON + r' | where match(CommandLine, "foo\\d+") OR match(Image, "(?i)^.*\\\\x\\.exe$")')


def test_regex_ignorecase_flag() -> None:
    rule = sigma_rule("sel:\n  CommandLine|re|i: 'abc'\ncondition: sel")
    assert raw(rule).endswith('| where match(CommandLine, "(?i)abc")')


def test_case_sensitive_value_uses_where() -> None:
    rule = sigma_rule("sel:\n  CommandLine|cased: AbC\ncondition: sel")
    assert raw(rule).endswith('| where match(CommandLine, "^AbC$")')


def test_cidr_in_search() -> None:
    rule = sigma_rule("sel:\n  DestinationIp|cidr: 10.0.0.0/8\ncondition: sel", category="network_connection")
    assert raw(rule).endswith('DestinationIp="10.0.0.0/8"')


def test_wmi_event_source_condition() -> None:
    rule = sigma_rule("sel:\n  EventType: WmiConsumerEvent\ncondition: sel", category="wmi_event")
    assert raw(rule) == ('source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" '
                         'EventCode IN (19, 20, 21) EventType="WmiConsumerEvent"')


def test_service_channel_and_event_id() -> None:
    rule = sigma_rule("sel:\n  EventID: 5861\ncondition: sel", category="", service="wmi")
    assert raw(rule) == 'source="XmlWinEventLog:Microsoft-Windows-WMI-Activity/Operational" EventCode=5861'


def test_product_without_splunk_data_has_no_source_condition_and_says_so() -> None:
    rule = sigma_rule("sel:\n  foo: bar\ncondition: sel", category="application", product="opencanary")
    output = SplunkBackend().convert(rule, "raw")
    assert output.text == 'foo="bar"'
    assert [d.code for d in output.diagnostics] == ["no-logsource-condition"]


def test_process_name_becomes_path_suffix_on_raw_events() -> None:
    rule = Rule(id="x", title="t", logsource=LogSource("windows", "process_creation"),
                detection=Match("process_name", Op.EQUALS, (Pattern.literal("scrcons.exe"),)))
    assert raw(rule) == SYSMON + r' Image="*\\scrcons.exe"'
    assert SplunkBackend().convert(rule, "tstats").text.split(" where ")[1].startswith(
        "Processes.process_name=\"scrcons.exe\" by ")


# ---- escaping: every tricky value stays inside its quotes and reads back intact ----

TRICKY = ["C:\\", 'say "hi"', "a|b", "two words", "line\nbreak", "naïve ünïcode ✓", "back\\\\slash",
          'end\\"', "= NOT OR (x)", "tab\there", "`macro`", "$token$"]


@pytest.mark.parametrize("value", TRICKY)
def test_tricky_value_reads_back(value: str) -> None:
    rule = Rule(id="x", title="t", logsource=LogSource("windows", "process_creation"),
                detection=Match("CommandLine", Op.EQUALS, (Pattern.literal(value),)))
    tokens = tokenize(raw(rule))
    assert tokens[-3:] == [Token("word", "CommandLine"), Token("op", "="), Token("string", value)]


def test_literal_star_is_matched_exactly_by_regex() -> None:
    # the search term (broader) lets the index narrow the events; the regex decides
    rule = Rule(id="x", title="t", detection=Match("CommandLine", Op.EQUALS, (Pattern.literal("a*b"),)))
    output = SplunkBackend().convert(rule, "raw")
    assert output.text == 'CommandLine="a*b" | where match(CommandLine, "(?i)^a\\\\*b$")'
    assert not [d for d in output.diagnostics if d.level is not Level.INFO]


def test_literal_question_mark_is_literal_in_spl() -> None:
    rule = Rule(id="x", title="t", detection=Match("CommandLine", Op.EQUALS, (Pattern.literal("a?b"),)))
    output = SplunkBackend().convert(rule, "raw")
    assert output.text == 'CommandLine="a?b"' and not [d for d in output.diagnostics if d.level is Level.WARNING]


def test_single_wildcard_is_matched_exactly_by_regex() -> None:
    rule = Rule(id="x", title="t", detection=Match("CommandLine", Op.WILDCARD,
                                                   (Pattern(("a", Wildcard.ONE, "b")),)))
    output = SplunkBackend().convert(rule, "raw")
    assert output.text == 'CommandLine="a*b" | where match(CommandLine, "(?i)^a.b$")'
    assert not [d for d in output.diagnostics if d.level is not Level.INFO]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="*", blacklist_categories=("Cs",))))
def test_any_value_round_trips_through_tokenizer(value: str) -> None:
    rule = Rule(id="x", title="t", detection=Match("CommandLine", Op.EQUALS, (Pattern.literal(value),)))
    tokens = tokenize(raw(rule))
    assert tokens == [Token("word", "CommandLine"), Token("op", "="), Token("string", value)]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_regex_stays_in_its_string(pattern: str) -> None:
    rule = Rule(id="x", title="t", detection=Match("CommandLine", Op.REGEX, (Regex(pattern),), True))
    tokens = tokenize(raw(rule))
    assert [t.kind for t in tokens] == ["word", "pipe", "word", "word", "lparen", "word", "comma", "string",
                                        "rparen"]
    assert tokens[-2].text == pattern


def test_spl_string_is_minimal() -> None:
    assert spl_string('a\\b"c') == '"a\\\\b\\"c"'


# ---- savedsearches.conf ----

def test_savedsearches_stanza(scrcons_rule_path) -> None:
    text = sigma_wmi.convert(scrcons_rule_path, "splunk", "savedsearches", cron_schedule="0 * * * *")
    lines = text.splitlines()
    assert lines[1] == "[WMI Persistence - Script Event Consumer]"
    assert "cron_schedule = 0 * * * *" in lines
    assert any(line.startswith("search = " + SYSMON) for line in lines)
    # a multi-line description is one line: a continuation line starting with `#` would be a comment
    description = next(line for line in lines if line.startswith("description = "))
    assert "When scrcons.exe launches" in description and not description.endswith("\\")
    assert "alert.severity = 3" in lines


@pytest.mark.parametrize("name", ["A\n", "Image\n", "a b", 'x"y', "x=y", "x|y"])
def test_unusual_field_names_are_quoted(name: str) -> None:
    # Found by the long-mode property run: `$` in a regex accepted "A\n" as a plain word.
    rule = Rule(id="x", title="t", detection=Match(name, Op.EQUALS, (Pattern.literal("v"),)))
    tokens = tokenize(SplunkBackend().convert(rule, "raw").text)
    assert tokens == [Token("string", name), Token("op", "="), Token("string", "v")]


def test_tstats_where_fields_are_in_the_by_clause() -> None:
    # After tstats only split-by fields exist; a post-filter on anything else never matches.
    rule = sigma_rule("sel:\n  Image|endswith|cased: '\\Scrcons.exe'\ncondition: sel")
    text = SplunkBackend().convert(rule, "tstats").text
    by_clause = text.split(" by ")[1].split(" | ")[0].split()
    assert "Processes.process_path" in by_clause
    assert text.endswith('| where match(process_path, "^.*\\\\\\\\Scrcons\\\\.exe$")')


def test_negated_where_test_keeps_events_without_the_field() -> None:
    # eval's `NOT match(null, ...)` is null, which `| where` drops; Sigma's `not` keeps the event.
    rule = sigma_rule("sel:\n  Image: a\nfilter:\n  CommandLine|re: 'x+'\ncondition: sel and not filter")
    assert raw(rule).endswith('Image="a" | where NOT (isnotnull(CommandLine) AND match(CommandLine, "x+"))')


# ---- ESCU tuning (`<name>_filter`) macros ----

def _seed() -> Rule:
    from conftest import RULES

    from sigma_wmi.readers import read_source

    (rule,) = read_source(RULES / "escu" / "script_execution_via_wmi.yml").rules
    return rule


def test_seed_analytic_tstats_ends_with_its_filter_macro() -> None:
    rule = _seed()
    assert rule.tuning_macro == "script_execution_via_wmi_filter"
    tstats = SplunkBackend().convert(rule, "tstats").text
    assert tstats.endswith(" | `security_content_ctime(lastTime)` | `script_execution_via_wmi_filter`")
    assert SplunkBackend().convert(rule, "raw").text.endswith(" | `script_execution_via_wmi_filter`")


@pytest.mark.parametrize("format", ["raw", "tstats"])
def test_filter_macro_reads_back_as_the_same_rule(format: str) -> None:
    from sigma_wmi.readers.escu import read_escu

    rule = _seed()
    text = SplunkBackend().convert(rule, format).text
    if format == "tstats":  # our ESCU reader takes tstats searches back, the macro as metadata
        again = read_escu({"name": "again", "search": text}, "", "again.yml")
        assert again.tuning_macro == rule.tuning_macro and again.detection == rule.detection
    tokens = tokenize(text)
    assert tokens[-2:] == [Token("pipe", "|"), Token("word", "`script_execution_via_wmi_filter`")]  # one token, after a pipe


@pytest.mark.parametrize(("title", "macro"), [
    ("WMI Persistence - Script Event Consumer", "wmi_persistence___script_event_consumer_filter"),
    ("WMIC Creates a WMI Event Filter, Consumer or Binding", "wmic_creates_a_wmi_event_filter_consumer_or_binding_filter"),
    ("Suspicious `Invoke` (via cmd.exe)", "suspicious_invoke_via_cmd_exe_filter"),
])
def test_filter_macro_option_names_one_for_sigma_rules(title: str, macro: str) -> None:
    rule = sigma_rule("""
        sel:
            Image|endswith: '\\scrcons.exe'
        condition: sel
        """)
    rule = Rule(**{**rule.__dict__, "title": title})
    assert "_filter`" not in raw(rule)  # off by default: a Sigma rule has no tuning macro
    for format in ("raw", "tstats"):
        assert SplunkBackend(filter_macro=True).convert(rule, format).text.endswith(f" | `{macro}`")


def test_expanded_macros_leave_the_empty_filter_macro_out() -> None:
    out = SplunkBackend(expand_macros=True).convert(_seed(), "tstats")
    assert "`" not in out.text and out.text.endswith('convert timeformat="%Y-%m-%dT%H:%M:%S" ctime(lastTime)')
    assert [d.code for d in out.diagnostics] == ["filter-macro-dropped"]
    assert out.diagnostics[0].level is Level.INFO


def test_escu_analytic_splits_by_its_own_fields_first() -> None:
    rule = _seed()
    by = SplunkBackend().convert(rule, "tstats").text.split(" by ", 1)[1].split(" | ")[0].split()
    own = ["Processes.dest", "Processes.user", "Processes.parent_process", "Processes.process_name",
           "Processes.process", "Processes.process_id", "Processes.parent_process_id"]
    assert by[:len(own)] == own and len(by) == len(set(by))
    assert "Processes.original_file_name" in by  # then the data set's usual fields
    sigma = sigma_rule("""
        sel:
            Image|endswith: '\\scrcons.exe'
        condition: sel
        """)
    assert SplunkBackend().convert(sigma, "tstats").text.split(" by ", 1)[1].startswith("Processes.action ")


def test_our_search_reads_back_with_its_tuning_macro_last() -> None:
    """A last `| `<name>_filter`` (ESCU's tuning hook, shipped as `search *`) selects every event;
    anywhere else it is a stage the reader cannot know."""
    from sigma_wmi.readers.spl import SplUnsupported, parse_splunk_search

    search = 'EventCode=1 Image="*\\\\scrcons.exe"'
    assert parse_splunk_search(search + " | `script_execution_via_wmi_filter`") == parse_splunk_search(search)
    with pytest.raises(SplUnsupported):
        parse_splunk_search(search + " | `script_execution_via_wmi_filter` | where x=1")
    with pytest.raises(SplUnsupported):
        parse_splunk_search(search + " | `some_other_macro`")
