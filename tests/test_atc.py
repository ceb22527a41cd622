"""ATC cards: Markdown escapers (checked through markdown-it), Data Needed derivation
(checked against recorded events), and the scrcons / ESCU cards against seed 000."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from sigma_wmi.api import compile_rule, load
from sigma_wmi.backends.atc import AtcBackend
from sigma_wmi.docs.data_needed import data_needed, data_needed_catalog
from sigma_wmi.docs.markdown import fence, md_cell, md_url
from sigma_wmi.docs.queries import QueryCompiler
from sigma_wmi.errors import Level, Origin, SigmaWmiError
from sigma_wmi.model import And, LogSource, Match, Op, Pattern, RelatedRule, Rule, Technique
from tests.conftest import RULES, shared_path

SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
ROW_LABELS = ["Title", "Description", "ATT&amp;CK Tactic", "ATT&amp;CK Technique", "Data Needed", "Enrichment",
              "Trigger", "Severity Level", "False Positives", "Development Status", "References", "Author"]

# A GFM-like parser: tables and strikethrough on, raw HTML allowed (as on GitHub).
MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


class _Cells(HTMLParser):
    """Text of every <td>/<th> in rendered HTML; <br> counts as a newline."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(markdown: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(MD.render(markdown))
    return parser.rows


def scrcons() -> Rule:
    return load(SCRCONS)[0]


def escu_like_rule() -> Rule:
    """The ESCU analytic of seed 002 as the ESCU reader is expected to model it."""
    text = (RULES / "escu" / "script_execution_via_wmi.yml").read_text(encoding="utf-8")
    return Rule(
        id="aa73f80d-d728-4077-b226-81ea0c8be589",
        title="Script Execution via WMI",
        detection=Match("process_name", Op.EQUALS, (Pattern.literal("scrcons.exe"),)),
        logsource=LogSource(product="windows", category="process_creation"),
        description="The following analytic detects the execution of scripts via WMI.",
        status="production",
        authors=("Rico Valdez", "Michael Haag", "Splunk"),
        falsepositives=("Although unlikely, administrators may use wmi to launch scripts.",),
        references=("https://redcanary.com/blog/child-processes/",),
        techniques=(Technique("T1047"),),
        origin=Origin("rules/escu/script_execution_via_wmi.yml", 1, format="escu"),
        extras={"data_source": ["Sysmon EventID 1", "Windows Event Log Security 4688",
                                "CrowdStrike ProcessRollup2"]},
        source_text=text,
    )


def card(rule: Rule, **options: object) -> str:
    return AtcBackend(**options).convert(rule).text


def fenced_blocks(markdown: str) -> dict[str, str]:
    """Heading (### ...) -> content of the fenced block under it, via markdown-it tokens."""
    blocks: dict[str, str] = {}
    heading = None
    tokens = MD.parse(markdown)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h3":
            heading = tokens[i + 1].content
        elif token.type == "fence" and heading is not None:
            blocks[heading] = token.content
    return blocks


def spl_string_values(query: str) -> list[str]:
    """Values of SPL double-quoted strings, unescaped the way Splunk reads them
    (backslash escapes the next character). Independent of the backend's escaper."""
    values = []
    for raw in re.findall(r'"((?:[^"\\]|\\.)*)"', query):
        values.append(re.sub(r"\\(.)", r"\1", raw))
    return values


# ---------------------------------------------------------------------------
# Markdown escapers
# ---------------------------------------------------------------------------

CELL_CASES = [
    ("a | b", "a | b"),
    ("line one\nline two", "line one\nline two"),
    ("windows\r\nline", "windows\nline"),
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
    ("C:\\WINDOWS\\system32\\wbem\\scrcons.exe", "C:\\WINDOWS\\system32\\wbem\\scrcons.exe"),
    ("*not emphasis* and _not_ either", "*not emphasis* and _not_ either"),
    ("`code` [link](x) ~~gone~~", "`code` [link](x) ~~gone~~"),
    ("AT&T &amp; &lt;", "AT&T &amp; &lt;"),
    ("  padded  ", "padded"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "shown"), CELL_CASES)
def test_md_cell_shows_exact_text_in_a_table(text: str, shown: str) -> None:
    rows = table_rows(f"| k | v |\n|---|---|\n| x | {md_cell(text)} |\n")
    assert len(rows) == 2 and len(rows[1]) == 2, rows
    assert rows[1] == ["x", shown]


def test_md_cell_output_has_no_raw_cell_or_row_breakers() -> None:
    escaped = md_cell("a|b\nc<d>e")
    assert "\n" not in escaped and "<d>" not in escaped
    assert re.search(r"(?<!\\)\|", escaped) is None


_CELL_TEXT = st.text(alphabet=st.sampled_from([*"ab |\\*_`[]()<>&#~!-=:;'\"\n\t/.", "é", "€"]),
                     max_size=40)


@settings(max_examples=100_000 if os.environ.get("SIGMA_WMI_LONG") else 300, deadline=None)
@given(_CELL_TEXT)
def test_md_cell_round_trips_through_markdown_it(text: str) -> None:
    rows = table_rows(f"| k | v |\n|---|---|\n| x | {md_cell(text)} |\n")
    expected = "\n".join(line.strip() for line in re.split(r"\r\n|\r|\n", text.strip()))
    assert rows[1][0] == "x" and len(rows[1]) == 2
    # markdown-it turns tabs inside text into spaces only at line starts; we strip those.
    assert rows[1][1] == expected


@pytest.mark.parametrize("url", [
    "https://example.com/a b",
    "https://example.com/wiki/Foo_(bar)",
    "https://example.com/?q=a|b&x=<y>",
    "https://www.eideon.com/2018-03-02-THL03-WMIBackdoors/",
])
def test_md_url_keeps_the_link_intact(url: str) -> None:
    tokens = MD.parseInline(f"[t]({md_url(url)})")[0].children or []
    links = [t for t in tokens if t.type == "link_open"]
    assert len(links) == 1
    from urllib.parse import unquote
    assert unquote(str(links[0].attrs["href"])) == url


@pytest.mark.parametrize("text", ["plain", "has ``` inside", "````four", "ends with `\n"])
def test_fence_content_round_trips(text: str) -> None:
    tokens = [t for t in MD.parse(fence(text) + "\nafter\n") if t.type == "fence"]
    assert len(tokens) == 1
    assert tokens[0].content == (text if text.endswith("\n") else text + "\n")


# ---------------------------------------------------------------------------
# Data Needed
# ---------------------------------------------------------------------------

def _rule(detection: Match | And, **kw: object) -> Rule:
    return Rule(id="x", title="x", detection=detection, **kw)  # type: ignore[arg-type]


def _eq(field: str, value: str | int) -> Match:
    return Match(field, Op.EQUALS, (Pattern.literal(value) if isinstance(value, str) else value,))


PROC = LogSource(product="windows", category="process_creation")


@pytest.mark.parametrize(("rule", "expected"), [
    (lambda: scrcons(), ["DN_0002_4688_windows_process_creation_with_commandline",
                         "DN_0003_1_windows_sysmon_process_creation"]),
    (lambda: _rule(_eq("process_path", "C:\\x.exe"), logsource=PROC),
     ["DN_0001_4688_windows_process_creation", "DN_0003_1_windows_sysmon_process_creation"]),
    (lambda: _rule(_eq("process_name", "x.exe"), logsource=PROC),  # derived from the path
     ["DN_0001_4688_windows_process_creation", "DN_0003_1_windows_sysmon_process_creation"]),
    (lambda: _rule(_eq("command_line", "x"), logsource=PROC),
     ["DN_0002_4688_windows_process_creation_with_commandline", "DN_0003_1_windows_sysmon_process_creation"]),
    (lambda: _rule(_eq("original_file_name", "x"), logsource=PROC), ["DN_0003_1_windows_sysmon_process_creation"]),
    (lambda: _rule(_eq("wmi_destination", "x"), logsource=LogSource("windows", "wmi_event")),
     ["DN_0023_20_windows_sysmon_WmiEvent"]),
    (lambda: _rule(_eq("wmi_consumer", "x"), logsource=LogSource("windows", "wmi_event")),
     ["DN_0024_21_windows_sysmon_WmiEvent"]),
    (lambda: _rule(And((_eq("event_id", 5861), _eq("wmi_activity_possible_cause", "x"))),
                   logsource=LogSource("windows", service="wmi")), ["DN_0081_5861_wmi_activity"]),
    (lambda: _rule(_eq("CommandLine", "x"), logsource=LogSource("linux", "process_creation")), []),
    (lambda: escu_like_rule(), ["DN_0002_4688_windows_process_creation_with_commandline",
                                "DN_0003_1_windows_sysmon_process_creation"]),
])
def test_data_needed_from_log_source_and_fields(rule: object, expected: list[str]) -> None:
    found, _ = data_needed(rule())  # type: ignore[operator]
    assert [d.id for d in found] == expected


def test_data_needed_when_no_record_has_the_fields() -> None:
    rule = _rule(_eq("NoSuchField", "x"), logsource=PROC)
    found, diagnostics = data_needed(rule)
    assert [d.id for d in found] == ["DN_0002_4688_windows_process_creation_with_commandline",
                                     "DN_0003_1_windows_sysmon_process_creation"]
    assert [d.code for d in diagnostics] == ["data-needed"]


def test_data_needed_catalog_is_consistent() -> None:
    entries = data_needed_catalog().entries
    assert len({d.id for d in entries}) == len(entries) >= 20
    numbers = []
    for d in entries:
        number, event = re.fullmatch(r"DN_(\d{4})_(\d+)_\w+", d.id).groups()  # type: ignore[union-attr]
        numbers.append(number)
        assert int(event) == d.event_id, d.id
        assert d.fields and d.description and d.how_to_collect, d.id
    assert len(set(numbers)) == len(numbers)


# Fields later Sysmon versions added; the recorded captures predate them.
NEWER_SYSMON_FIELDS = {"User", "CallTrace", "SourceUser", "TargetUser"}


def test_data_needed_fields_exist_in_recorded_events() -> None:
    events_dir = shared_path("data", "events")
    seen: dict[tuple[str, int], set[str]] = {}
    for path in sorted(events_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            keys = seen.setdefault((event.get("Channel"), event.get("EventID")), set())
            keys.update(event)
            # nxlog keeps some WMI-Activity fields only inside Message ("Name = value; ...").
            keys.update(re.findall(r"(\w+) ?= ", str(event.get("Message", ""))))
    checked = 0
    for dn in data_needed_catalog().entries:
        keys = seen.get((dn.channel, dn.event_id))
        if keys is None or dn.event_id == 5861:  # 5861 arrives as an unparsed Message only
            continue
        checked += 1
        assert dn.fields - keys <= NEWER_SYSMON_FIELDS, (dn.id, sorted(dn.fields - keys))
    assert checked >= 10


# ---------------------------------------------------------------------------
# Cards
# ---------------------------------------------------------------------------

def test_scrcons_card_has_seed_layout_and_current_metadata() -> None:
    text = card(scrcons())
    rows = table_rows(text)
    labels = [row[0] for row in rows]
    assert [label.replace("&", "&amp;") for label in labels] == ROW_LABELS
    assert all(len(row) == 2 for row in rows)
    values = {row[0]: row[1] for row in rows}
    assert values["Title"] == "WMI Persistence - Script Event Consumer"
    assert values["Severity Level"] == "medium"
    assert values["Development Status"] == "test"
    assert values["Author"] == "Thomas Patzke"
    assert "[TA0003: Persistence](https://attack.mitre.org/tactics/TA0003)" in text
    assert "[TA0004: Privilege Escalation](https://attack.mitre.org/tactics/TA0004)" in text
    assert ("[T1546.003: Windows Management Instrumentation Event Subscription]"
            "(https://attack.mitre.org/techniques/T1546/003)") in text
    assert ("[DN_0002_4688_windows_process_creation_with_commandline]"
            "(../Data_Needed/DN_0002_4688_windows_process_creation_with_commandline.md)") in text
    assert "[DN_0003_1_windows_sysmon_process_creation](../Data_Needed/DN_0003_1_windows_sysmon_process_creation.md)" in text
    assert "[T1546.003: Windows Management Instrumentation Event Subscription](../Triggers/T1546.003.md)" in text
    assert values["Enrichment"] == "Data for this Detection Rule doesn't require any Enrichments."
    headings = re.findall(r"^#{2,3} .*$", text, re.M)
    assert headings[:3] == ["## Detection Rules", "### Sigma rule", "### splunk"]


def test_scrcons_card_source_block_is_the_rule_file() -> None:
    blocks = fenced_blocks(card(scrcons()))
    assert blocks["Sigma rule"] == SCRCONS.read_text(encoding="utf-8")


def test_splunk_block_is_escaped_exactly_once() -> None:
    rule = scrcons()
    blocks = fenced_blocks(card(rule))
    query = blocks["splunk"].rstrip("\n")
    assert query == compile_rule(rule, "splunk").text
    assert 'Image="C:\\\\WINDOWS\\\\system32\\\\wbem\\\\scrcons.exe"' in query
    assert "\\\\\\\\" not in query  # seed 000's double escaping is not reproduced
    # Read back the way Splunk reads quoted strings: the rule's own values come out.
    values = spl_string_values(query)
    assert "C:\\WINDOWS\\system32\\wbem\\scrcons.exe" in values
    assert "C:\\Windows\\System32\\svchost.exe" in values


def test_seed_000_layout_matches() -> None:
    seed = next(shared_path("seeds").glob("000_*.txt")).read_text(encoding="utf-8")
    def labels(text: str) -> list[str]:
        table = text.split("## Detection Rules")[0]
        return [line.split("|")[1].strip() for line in table.splitlines()
                if line.startswith("|") and not line.startswith("|:")]

    seed_labels, ours = labels(seed), labels(card(scrcons()))
    assert ours == seed_labels
    # The seed's Splunk block shows the original tool's double escaping; ours has half as many.
    seed_query = seed.split("### splunk", 1)[1]
    assert "C:\\\\\\\\WINDOWS" in seed_query
    ours_query = fenced_blocks(card(scrcons()))["splunk"]
    assert "C:\\\\WINDOWS" in ours_query and "C:\\\\\\\\WINDOWS" not in ours_query


def test_card_is_deterministic() -> None:
    assert card(scrcons()) == card(scrcons())


def test_escu_like_rule_gets_a_card() -> None:
    rule = escu_like_rule()
    output = AtcBackend().convert(rule)
    rows = {row[0]: row[1] for row in table_rows(output.text)}
    assert rows["Title"] == "Script Execution via WMI"
    assert "[TA0002: Execution](https://attack.mitre.org/tactics/TA0002)" in output.text
    assert "[T1047: Windows Management Instrumentation](https://attack.mitre.org/techniques/T1047)" in output.text
    assert "DN_0003_1_windows_sysmon_process_creation" in rows["Data Needed"]
    blocks = fenced_blocks(output.text)
    assert blocks["ESCU analytic"] == rule.source_text
    assert "### Sigma rule" not in output.text


def test_real_escu_analytic_gets_a_card() -> None:
    rules = load(RULES / "escu")
    text = card(rules[0])
    rows = {row[0]: row[1] for row in table_rows(text)}
    assert rows["Title"] == "Script Execution via WMI"
    assert "T1047" in rows["ATT&CK Technique"]
    assert "### ESCU analytic" in text


def test_hostile_metadata_stays_inside_its_cells() -> None:
    rule = Rule(id="h", title="a | b\nc", detection=_eq("process_path", "x"), logsource=PROC,
                description="<script>alert('x')</script>\nsecond | line",
                falsepositives=("one|two",), authors=("Eve <eve@example.com>",),
                references=("javascript:alert(1)", "https://example.com/a (b)"),
                source_text="title: x\n```\nnot a fence end\n")
    text = card(rule)
    rows = table_rows(text)
    assert all(len(row) == 2 for row in rows)
    values = {row[0]: row[1] for row in rows}
    assert values["Title"] == "a | b\nc"
    assert values["Description"] == "<script>alert('x')</script>\nsecond | line"
    assert values["Author"] == "Eve <eve@example.com>"
    assert "<script>" not in text
    assert "](javascript:" not in text  # a non-web reference is text, not a link
    assert fenced_blocks(text)["Sigma rule"] == rule.source_text


def test_revoked_technique_is_replaced_with_a_warning() -> None:
    rule = Rule(id="r", title="old", detection=_eq("process_path", "x"), logsource=PROC,
                techniques=(Technique("T1084"),), origin=Origin("old.yml", 3))
    output = AtcBackend(targets="splunk").convert(rule)
    assert "[T1546.003: Windows Management Instrumentation Event Subscription]" in output.text
    assert "T1084" not in output.text
    revoked = [d for d in output.diagnostics if d.code == "revoked-technique"]
    assert len(revoked) == 1 and revoked[0].level is Level.WARNING
    assert "T1546.003" in revoked[0].message and str(revoked[0].origin) == "old.yml:3"


def test_unsupported_target_gets_a_note_and_unloadable_target_is_left_out() -> None:
    rule = _rule(_eq("wmi_consumer", "x"), logsource=LogSource("windows", "wmi_event"),
                 related=(RelatedRule("y", "similar"),))
    compiler = QueryCompiler(["splunk", "no-such-target"])
    assert "no-such-target" in compiler.unavailable
    blocks = {b.label: b for b in compiler.compile(rule)}
    assert blocks["splunk"].text is not None
    assert blocks["splunk tstats"].text is None and "CIM" in (blocks["splunk tstats"].note or "")
    text = card(rule, targets="splunk")
    assert "### splunk tstats" in text and "not expressible for splunk tstats" in text


def test_card_uses_every_available_target() -> None:
    compiler = QueryCompiler()
    text = card(scrcons())
    for name in compiler.backends:
        if name != "sigma":  # the Sigma source is already on the card
            assert f"### {name}" in text
    assert "### atc" not in text


def test_bad_format_is_a_usage_error() -> None:
    with pytest.raises(SigmaWmiError):
        AtcBackend().convert(scrcons(), "html")


def test_atc_target_through_the_registry(tmp_path: Path) -> None:
    assert compile_rule(scrcons(), "atc").text == card(scrcons())
