"""Injection, fuzzing and determinism for the core (Sigma reader, Splunk output).

Long mode: SIGMA_WMI_LONG=1 runs 100,000 examples per property (bench/long_properties.sh runs them all).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import yaml
from conftest import RULES
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from spl_tokens import Token, tokenize

from sigma_wmi.backends.splunk import SplunkBackend
from sigma_wmi.catalog import catalog
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import And, LogSource, Match, Op, Or, Pattern, Regex, Rule, Wildcard
from sigma_wmi.readers import read_text_rules

LONG = os.environ.get("SIGMA_WMI_LONG") == "1"
EXAMPLES = 100_000 if LONG else 200
PROFILE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
no_star = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="*"))


def _raw(expr: Match | And | Or) -> str:
    rule = Rule(id="x", title="t", detection=expr, logsource=LogSource(product="linux"))
    return SplunkBackend().convert(rule, "raw").text


@PROFILE
@given(no_star, no_star)
def test_spl_values_cannot_break_out(a: str, b: str) -> None:
    """Two values in an IN list and an injected-looking third condition stay three literals."""
    query = _raw(And((Match("f", Op.EQUALS, (Pattern.literal(a), Pattern.literal(b))),
                      Match("g", Op.CONTAINS, (Pattern.literal(b),)))))
    tokens = tokenize(query)
    strings = [t.text for t in tokens if t.kind == "string"]
    assert strings == [a, b, f"*{b}*"]
    assert [t for t in tokens if t.kind == "pipe"] == []  # nothing escaped into a new command


@PROFILE
@given(text)
def test_spl_field_names_cannot_break_out(name: str) -> None:
    assume(catalog().spec(name) is None)  # catalog names are renamed on purpose (channel → Channel)
    query = _raw(Match(name, Op.EQUALS, (Pattern.literal("v"),)))
    tokens = tokenize(query)
    assert tokens[-1] == Token("string", "v") and tokens[-2] == Token("op", "=")
    assert len(tokens) == 3 and tokens[0].text == name


@PROFILE
@given(text, text)
def test_spl_where_clause_cannot_break_out(pattern: str, value: str) -> None:
    """Regex and case-sensitive values live in `| where` eval strings; still one string each."""
    query = _raw(Or((Match("f", Op.REGEX, (Regex(pattern),), True),
                     Match("g", Op.EQUALS, (Pattern.literal(value),), True))))
    tokens = tokenize(query)
    assert [t.kind for t in tokens].count("pipe") == 1
    strings = [t.text for t in tokens if t.kind == "string"]
    assert strings[0] == pattern and len(strings) == 2


@PROFILE
@given(st.lists(st.one_of(no_star, st.just(Wildcard.MANY)), min_size=1, max_size=6))
def test_spl_wildcards_survive_as_wildcards(parts: list[str | Wildcard]) -> None:
    pattern = Pattern(tuple(parts))
    query = _raw(Match("f", Op.WILDCARD, (pattern,)))
    assert tokenize(query)[-1] == Token("string", pattern.text)


# ---- fuzzing the Sigma reader: only SigmaWmiError may escape ----

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)
modifiers = st.sampled_from(["", "|contains", "|endswith", "|startswith", "|re", "|cidr", "|all", "|lt",
                             "|exists", "|base64offset|contains", "|windash", "|cased", "|fieldref", "|bogus",
                             "|re|i", "|expand", "|gte"])


@st.composite
def sigma_documents(draw: st.DrawFn) -> dict[str, object]:
    selection = draw(st.dictionaries(st.tuples(st.sampled_from(["Image", "CommandLine", "x", ""]), modifiers)
                                     .map("".join), yaml_values, max_size=3))
    detection: dict[str, object] = {"sel": selection,
                                    "condition": draw(st.one_of(text, st.sampled_from(
                                        ["sel", "not sel", "1 of sel*", "sel and", "all of them"])))}
    doc: dict[str, object] = {"title": draw(st.one_of(text, yaml_values)), "logsource": draw(st.one_of(
        st.fixed_dictionaries({"product": st.just("windows"), "category": st.sampled_from(
            ["process_creation", "wmi_event", "x"])}), yaml_values)), "detection": detection}
    for key in draw(st.lists(st.sampled_from(["id", "tags", "level", "status", "date", "related",
                                              "falsepositives"]), max_size=3)):
        doc[key] = draw(yaml_values)
    return doc


@PROFILE
@given(sigma_documents())
def test_sigma_reader_fuzz(doc: dict[str, object]) -> None:
    try:
        rendered = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        rules = read_text_rules(rendered, "fuzz.yml")
    except SigmaWmiError as err:
        assert err.origin is not None and err.origin.path == "fuzz.yml"
        return
    for rule in rules:
        with contextlib.suppress(SigmaWmiError):  # unsupported content is fine; a crash is not
            SplunkBackend().convert(rule, "raw")


@PROFILE
@given(text)
def test_sigma_reader_fuzz_raw_text(source: str) -> None:
    with contextlib.suppress(SigmaWmiError):  # any other exception fails the test
        read_text_rules(source, "fuzz.yml")


# ---- determinism across processes (hash seeds differ) ----

def test_output_is_byte_identical_across_processes(tmp_path: Path) -> None:
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}.conf"
        subprocess.run([sys.executable, "-m", "sigma_wmi", "convert", "--no-cache", "-q", "-f", "savedsearches",
                        "-o", str(out), str(RULES / "sigma")],
                       env={**os.environ, "PYTHONHASHSEED": seed}, check=False, capture_output=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0]


# ---- Markdown table cells and HTML pages ----

def _markdown_table_cells(markdown: str) -> list[list[str]]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    rows: list[list[str]] = []
    for token in tokens:
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and rows:
            # the only HTML a cell may carry is the line break md_cell writes for a newline
            html = [c.content for c in token.children or [] if c.type in ("html_inline", "html_block")]
            assert all(re.fullmatch(r"<br\s*/?>", tag) for tag in html), html
            rows[-1].append(token.content)
    return rows


@PROFILE
@given(text)
def test_markdown_cells_cannot_break_out(value: str) -> None:
    from sigma_wmi.docs.markdown import md_cell

    rows = _markdown_table_cells(f"| k | v |\n|---|---|\n| x | {md_cell(value)} |\n")
    assert len(rows) == 2 and len(rows[1]) == 2 and rows[1][0] == "x"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[tuple[str, tuple[str, ...]]] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add((tag, tuple(sorted(name for name, _ in attrs))))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _rule_page(title: str, description: str) -> tuple[_Tags, str]:
    from sigma_wmi.docs.site import SiteBuilder

    rule = Rule(id="11111111-2222-3333-4444-555555555555", title=title, description=description,
                detection=Match("process_path", Op.EQUALS, (Pattern.literal(description),)),
                logsource=LogSource("windows", "process_creation"))
    pages = SiteBuilder([rule], [], ("splunk",)).render()
    parser = _Tags()
    parser.feed(pages["rules/11111111-2222-3333-4444-555555555555.html"])
    return parser, pages["assets/search-index.js"]


# Control characters are shown as marked-up symbols in code blocks, by design.
BASELINE_TAGS = _rule_page("Title", "First paragraph.\n\n- a list item\n\nSecond\x08 paragraph.")[0].tags  # lists are reflowed into <ul>


@PROFILE
@given(text.filter(lambda s: s.strip()), text.filter(lambda s: s.strip()))
def test_html_pages_cannot_break_out(title: str, description: str) -> None:
    """Hostile titles and descriptions add no element or attribute the page does not have anyway,
    and the search index stays one JSON document (no `</script>`, no raw U+2028)."""
    parser, index = _rule_page(title, description)
    assert parser.tags <= BASELINE_TAGS
    prefix = "window.SIGMA_WMI_INDEX = "
    assert index.startswith(prefix) and "</" not in index
    document = json.loads(index[len(prefix):].rstrip().rstrip(";"))
    assert document["rows"][0][1] == title


# ---- the SPL parser and the ESCU reader: only their own error type escapes ----

# SPL-shaped text: tokens joined by nothing or spaces, so keywords and operators collide
spl_text = st.lists(st.sampled_from([*'abcfx_.=!<>()"\\*, |`$[]', "NOT ", " OR ", " AND ", " IN ", "where ",
                                     "search ", "tstats ", "match(", "like("]), max_size=25).map("".join)


@PROFILE
@given(st.one_of(text, spl_text))
def test_spl_parser_fuzz(source: str) -> None:
    from sigma_wmi.readers.spl import parse_splunk_search

    with contextlib.suppress(SigmaWmiError):
        parse_splunk_search(source)


@PROFILE
@given(st.one_of(text, spl_text), st.one_of(st.none(), yaml_values))
def test_escu_reader_fuzz(where: str, extra: object) -> None:
    from sigma_wmi.readers.escu import read_escu

    doc = {"name": "fuzz", "id": "00000000-0000-0000-0000-000000000000", "tags": extra,
           "search": "| tstats count from datamodel=Endpoint.Processes where " + where
                     + " by Processes.dest | `drop_dm_object_name(Processes)`"}
    with contextlib.suppress(SigmaWmiError):
        read_escu(doc, "", "fuzz.yml")
