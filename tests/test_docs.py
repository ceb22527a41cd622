"""The documentation site: well-formed pages, escaping, safe file names, related rules,
Navigator layer, search index, determinism, atomic replacement, corpus speed."""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_wmi.api import compile_rule, load, load_all
from sigma_wmi.attack import attack
from sigma_wmi.docs import heatmap
from sigma_wmi.docs import pretty as pretty_module
from sigma_wmi.docs import site as docs
from sigma_wmi.docs import site as site_module
from sigma_wmi.docs.queries import QueryCompiler
from sigma_wmi.docs.site import MARKER, build_site, page_slug
from sigma_wmi.docs.text import Paragraph, paragraphs
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import And, LogSource, Match, Not, Op, Or, Pattern, RelatedRule, Rule, Technique
from sigma_wmi.output import inside as safe_join
from tests.conftest import REPO, RULES, SHARED, shared_path

SCRCONS_ID = "ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e"
SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
PROC = LogSource(product="windows", category="process_creation")


def _match(value: str) -> Match:
    return Match("process_path", Op.EQUALS, (Pattern.literal(value),))


def hostile() -> Rule:
    return Rule(id="", title="../../x", detection=_match("x"), logsource=PROC,
                description="Shows <script>alert('owned')</script> & more",
                references=("javascript:alert(1)",), techniques=(Technique("T1546.003"),),
                source_text="title: <b>bold</b>\n")


def sibling() -> Rule:
    """Same technique and log source as scrcons, and a Sigma `related` link to it."""
    return Rule(id="../../sibling", title="Sibling rule", detection=_match("y"), logsource=PROC,
                techniques=(Technique("T1084"),), related=(RelatedRule(SCRCONS_ID, "derived"),),
                origin=Origin("sibling.yml", 1))


def small_rules() -> list[Rule]:
    return [*load(SCRCONS), hostile(), sibling()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, docs.SiteReport]:
    out = tmp_path_factory.mktemp("docs") / "site"
    errors = [SigmaWmiError("bad <yaml>", Origin("broken.yml", 7))]
    return out, build_site(small_rules(), out, errors=errors, targets=("splunk",))


def parse_xml(path: Path) -> ET.Element:
    """Our HTML is XHTML-compatible, so a strict XML parser proves it well-formed."""
    return ET.fromstring(path.read_text(encoding="utf-8"))


def by_id(root: ET.Element, element_id: str) -> ET.Element:
    found = [e for e in root.iter() if e.get("id") == element_id]
    assert len(found) == 1, element_id
    return found[0]


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext())


def test_pages_and_report(site: tuple[Path, docs.SiteReport]) -> None:
    out, report = site
    assert report.rules == 3
    for name in ("index.html", "tactics.html", "techniques.html", "logsources.html", "matrix.html",
                 "errors.html", f"rules/{SCRCONS_ID}.html", f"rules/{SCRCONS_ID}.md"):
        assert (out / name).is_file(), name
        assert name in report.pages
    assert (out / "attack-navigator-layer.json").is_file()
    assert (out / "assets" / "search-index.js").is_file() and (out / MARKER).is_file()
    codes = {d.code for d in report.warnings}
    assert "revoked-technique" in codes and "error" in codes  # T1084 on the sibling, the broken file


def test_every_html_page_is_well_formed(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    pages = sorted(out.rglob("*.html"))
    assert len(pages) >= 9
    for page in pages:
        root = parse_xml(page)
        assert root.tag == "html", page
        scripts = [e for e in root.iter("script")]
        assert all(s.get("src") and not (s.text or "").strip() for s in scripts), page  # no inline code


def test_files_are_named_from_ids_and_stay_inside(site: tuple[Path, docs.SiteReport]) -> None:
    out, report = site
    written = [p.resolve() for p in out.rglob("*")]
    assert all(p.is_relative_to(out.resolve()) for p in written)
    assert not (out.parent / "x.html").exists() and not any(p.name == "x.html" for p in written)
    rule_pages = sorted(p.name for p in (out / "rules").glob("*.html"))
    hashed = page_slug(hostile())
    assert hashed.startswith("rule-") and len(hashed) == 21
    assert rule_pages == sorted([f"{SCRCONS_ID}.html", f"{hashed}.html", "sibling.html"])
    assert all(p.startswith("rules/") or "/" not in p for p in report.pages)


@pytest.mark.parametrize(("rule_id", "slug"), [
    (SCRCONS_ID, SCRCONS_ID), ("../../etc/passwd", "etc-passwd"), ("A B/C", "a-b-c"), ("..", None), ("", None),
])
def test_page_slug(rule_id: str, slug: str | None) -> None:
    rule = Rule(id=rule_id, title="../../x", detection=_match("x"))
    got = page_slug(rule)
    assert got == slug if slug else got.startswith("rule-")
    assert "/" not in got and not got.startswith(".")


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "rules/a.html") == (tmp_path / "rules" / "a.html").resolve()
    for bad in ("../x.html", "rules/../../x.html", "/etc/passwd", "."):
        with pytest.raises(SigmaWmiError):
            safe_join(tmp_path, bad)


def test_script_in_description_is_shown_as_text(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    path = out / "rules" / f"{page_slug(hostile())}.html"
    raw = path.read_text(encoding="utf-8")
    assert "<script>alert" not in raw and "&lt;script&gt;alert(" in raw
    root = parse_xml(path)
    description = next(e for e in root.iter("div") if e.get("class") == "description")
    assert text_of(description).strip() == "Shows <script>alert('owned')</script> & more"
    assert "<b>bold</b>" in text_of(by_id(root, "code-source"))
    assert not any((a.get("href") or "").startswith("javascript:") for a in root.iter("a"))
    title = next(root.iter("h1"))
    assert text_of(title) == "../../x"
    md = (out / "rules" / f"{page_slug(hostile())}.md").read_text(encoding="utf-8")
    assert "<script>" not in md.split("```")[0]


def test_rule_page_sections_and_copyable_query(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    root = parse_xml(out / "rules" / f"{SCRCONS_ID}.html")
    headings = [text_of(h) for h in root.iter("h2")]
    for wanted in ("Metadata", "ATT&CK", "Data sources", "How to implement", "False positives",
                   "References", "Queries", "Sigma rule", "Related rules"):
        assert wanted in headings
    rule = load(SCRCONS)[0]
    buttons = [b for b in root.iter("button") if b.get("class") == "copy"]
    targets = {b.get("data-copy") for b in buttons}
    assert {"code-splunk", "code-splunk-tstats", "code-source"} <= targets
    # The button copies the element's text, which is exactly the compiled query.
    assert text_of(by_id(root, "code-splunk")) == compile_rule(rule, "splunk").text
    assert text_of(by_id(root, "code-source")) == rule.source_text
    page_text = text_of(root)
    assert "DN_0002_4688_windows_process_creation_with_commandline" in page_text
    assert "Install Sysmon" in page_text  # how to implement, from the Data Needed records
    hrefs = {a.get("href") for a in root.iter("a")}
    assert "https://attack.mitre.org/techniques/T1546/003" in hrefs
    assert "../techniques.html#T1546.003" in hrefs and "../logsources.html#windows-process_creation" in hrefs


def test_related_rules_by_technique_log_source_and_sigma_related(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    scrcons = parse_xml(out / "rules" / f"{SCRCONS_ID}.html")
    links = {a.get("href"): text_of(a) for a in scrcons.iter("a")}
    assert links.get("../rules/sibling.html") == "Sibling rule"
    assert "derived (by the other rule)" in text_of(scrcons)
    sibling_page = parse_xml(out / "rules" / "sibling.html")
    sibling_links = {a.get("href") for a in sibling_page.iter("a")}
    assert f"../rules/{SCRCONS_ID}.html" in sibling_links
    assert f"../rules/{page_slug(hostile())}.html" in sibling_links  # same technique after T1084 -> T1546.003


def test_index_pages(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    techniques = parse_xml(out / "techniques.html")
    section = by_id(techniques, "T1546.003")
    assert len([a for a in section.iter("a") if (a.get("href") or "").startswith("./rules/")]) == 3
    tactics = parse_xml(out / "tactics.html")
    assert len(list(by_id(tactics, "TA0003").iter("li"))) == 3
    logsources = parse_xml(out / "logsources.html")
    assert len(list(by_id(logsources, "windows-process_creation").iter("li"))) == 3
    matrix = parse_xml(out / "matrix.html")
    covered = {text_of(li).strip(): li for li in matrix.iter("li") if "cell" in (li.get("class") or "")
               and "heat-0" not in (li.get("class") or "")}
    assert list(covered) == ["Event Triggered Execution 3"]  # three rules, T1546.003 counted on its parent
    link = next(covered["Event Triggered Execution 3"].iter("a"))
    assert link.get("href") == "./index.html#technique=T1546"
    assert "bad <yaml>" in text_of(parse_xml(out / "errors.html"))


def test_navigator_layer(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    layer = json.loads((out / "attack-navigator-layer.json").read_text(encoding="utf-8"))
    assert layer["versions"]["layer"] == "4.5" and layer["domain"] == "enterprise-attack"
    assert layer["versions"]["attack"] == attack().version.split(".")[0]
    entries = {e["techniqueID"]: e for e in layer["techniques"]}
    assert set(entries) == {"T1546.003"}
    assert entries["T1546.003"]["score"] == 3 and entries["T1546.003"]["enabled"] is True
    assert layer["gradient"]["maxValue"] == 3
    for key in ("name", "filters", "layout", "legendItems", "metadata", "sorting", "hideDisabled"):
        assert key in layer


def test_search_index_is_a_script_with_every_rule(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    script = (out / "assets" / "search-index.js").read_text(encoding="utf-8")
    prefix = "window.SIGMA_WMI_INDEX = "
    assert script.startswith(prefix) and script.endswith(";\n") and "<" not in script
    index = json.loads(script[len(prefix):-2])
    rows = [dict(zip(index["fields"], row, strict=True)) for row in index["rows"]]
    scrcons = next(r for r in rows if r["id"] == SCRCONS_ID)
    assert scrcons["slug"] == SCRCONS_ID and scrcons["technique"] == ["T1546"]
    assert len(rows) == 3
    index_page = parse_xml(out / "index.html")
    assert any(s.get("src") == "./assets/search-index.js" for s in index_page.iter("script"))


def exact_text(element: ET.Element) -> str:
    """What the copy button copies (site.js exactText): marked control pictures become
    the characters they stand for."""
    out = [element.text or ""]
    for child in element:
        if child.get("class") == "ctl":
            out.append(chr(int(child.get("data-char", "0"))))
        else:
            out.append(exact_text(child))
        out.append(child.tail or "")
    return "".join(out)


def test_control_characters_keep_pages_well_formed_and_copies_exact(tmp_path: Path) -> None:
    value = "a\x0bb\r\nc\x00d\x7fe\x0cf"
    rule = Rule(id="ctl", title="Title with \x0b tab\x1b", detection=_match(value), logsource=PROC,
                description="line\r\nnext\x08", source_text=f"title: x\nvalue: {value}\n")
    out = tmp_path / "site"
    build_site([rule], out, targets=("splunk",))
    root = parse_xml(out / "rules" / "ctl.html")  # raises if any character is not representable
    assert exact_text(by_id(root, "code-splunk")) == compile_rule(rule, "splunk").text
    assert exact_text(by_id(root, "code-source")) == rule.source_text
    assert text_of(next(root.iter("h1"))) == "Title with \u240b tab\u241b"


def test_build_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    build_site(small_rules(), first, targets=("splunk",))
    build_site(list(reversed(small_rules())), second, targets=("splunk",))
    files_a = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_rebuild_replaces_an_old_site_and_refuses_other_folders(tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_site(small_rules(), out, targets=("splunk",))
    (out / "stale.html").write_text("old", encoding="utf-8")
    build_site(small_rules()[:1], out, targets=("splunk",))
    assert not (out / "stale.html").exists() and not (out / "rules" / "sibling.html").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me", encoding="utf-8")
    with pytest.raises(SigmaWmiError):
        build_site(small_rules(), precious, targets=("splunk",))
    assert (precious / "thesis.tex").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "site"]


def test_failed_build_leaves_the_old_site_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "site"
    build_site(small_rules(), out, targets=("splunk",))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(path: Path, relative: str) -> Path:
        if relative.startswith("rules/"):
            raise SigmaWmiError("disk full (simulated)")
        return (path / relative).resolve()

    monkeypatch.setattr(docs, "inside", fail)
    with pytest.raises(SigmaWmiError):
        build_site(small_rules(), out, targets=("splunk",))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary folder left


def test_escu_analytic_page_has_drilldowns_and_how_to_implement(tmp_path: Path) -> None:
    rules = load(RULES / "escu")
    out = tmp_path / "site"
    build_site(rules, out, targets=("splunk",))
    root = parse_xml(out / "rules" / "aa73f80d-d728-4077-b226-81ea0c8be589.html")
    text = text_of(root)
    assert "ESCU analytic" in text and "T1047" in text
    if rules[0].extras.get("drilldown_searches"):
        assert "Drilldown searches" in text and "%original_detection_search%" in text
    if rules[0].extras.get("how_to_implement"):
        assert "Endpoint Detection and Response" in text


# ---------------------------------------------------------------------------
# The SigmaHQ corpus: well-formedness at scale (its speed is bench/docs_build.py's job)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, docs.SiteReport, float, int]:
    corpus = shared_path("corpora", "sigmahq", "rules")
    out = tmp_path_factory.mktemp("corpus") / "site"
    rules, errors = load_all([RULES, corpus])
    report = build_site(rules, out, errors=errors)
    return out, report, 0.0, len(rules)


def test_corpus_site_has_a_page_pair_per_rule(corpus_site: tuple[Path, docs.SiteReport, float, int]) -> None:
    _, report, _, loaded = corpus_site
    assert loaded >= 3142 and report.rules == loaded
    assert len([p for p in report.pages if p.startswith("rules/")]) == 2 * loaded


def test_corpus_site_pages_are_well_formed(corpus_site: tuple[Path, docs.SiteReport, float, int]) -> None:
    out, report, _, _ = corpus_site
    html_pages = [p for p in report.pages if p.endswith(".html")]
    for relative in html_pages:
        parse_xml(out / relative)
    assert len(html_pages) >= 3142



# ---------------------------------------------------------------------------
# Readable queries: the pretty form is the exact query with whitespace moved, so each
# language's independent parser reads both the same way
# ---------------------------------------------------------------------------

def _parsers() -> dict[str, Any]:
    from sigma_wmi.readers.spl import parse_splunk_search
    from tests import kql_grammar, spl_tokens

    luqum_parser = pytest.importorskip("luqum.parser").parser
    eql_parse = pytest.importorskip("tests.test_eql").parse

    def spl(text: str, target_format: str) -> Any:
        tokens = spl_tokens.tokenize(text)
        return (tokens, parse_splunk_search(text)) if target_format == "raw" else tokens

    return {
        "splunk": spl,
        "eql": lambda text, _: eql_parse(text),
        "kql": lambda text, _: kql_grammar.parse(text),
        "lucene": lambda text, _: luqum_parser.parse(text),
    }


def _query_rules() -> list[Rule]:
    """The pack, plus (when ../shared is there) SigmaHQ rules of many shapes: every
    mimikatz rule and every 15th file."""
    rules, _ = load_all([RULES])
    corpus = SHARED / "corpora" / "sigmahq" / "rules"
    if corpus.is_dir():
        files = sorted(corpus.rglob("*.yml"))
        chosen = [f for i, f in enumerate(files) if i % 15 == 0 or "mimikatz" in f.name]
        more, _ = load_all(chosen)
        rules.extend(more)
    return rules


@pytest.mark.parametrize("width", [pretty_module.WIDTH, 24])
def test_pretty_queries_parse_like_the_exact_ones(width: int) -> None:
    parsers = _parsers()
    compiler = QueryCompiler(("splunk", "eql", "kql", "lucene"))
    checked: dict[str, int] = {}
    broken = 0
    for rule in _query_rules():
        for block in compiler.compile(rule):
            if block.text is None:
                continue
            language = pretty_module.QUERY_LANGUAGES[block.target]
            shown = pretty_module.pretty(block.text, language, width)
            assert "".join(shown.split()) == "".join(block.text.split()), (rule.title, block.label)
            if shown == block.text:
                continue
            broken += 1
            assert parsers[block.target](shown, block.format) == parsers[block.target](block.text, block.format), (
                rule.title, block.label, shown)
            checked[block.label] = checked.get(block.label, 0) + 1
    assert broken > 0 and set(checked) >= {"splunk", "eql", "kql", "lucene"}, checked


@pytest.mark.parametrize(("language", "width", "exact", "expected"), [
    ("spl", 30, 'a="1" | where match(b, "(?i)x") | stats count by c',
     'a="1"\n| where match(b, "(?i)x")\n| stats count by c'),
    ("spl", 30, 'x="a|b" | y', 'x="a|b"\n| y'),  # a pipe inside quotes is text
    ("eql", 16, 'process where a == "x" and (b : "y" or c : "z")',
     'process where a == "x"\nand (\n  b : "y"\n  or c : "z"\n)'),
    ("kql", 12, "a:x and b:(c or d)", "a:x\nand b:(\n  c or d\n)"),
    ("lucene", 12, "a:/(x|y) z/ AND b:c", "a:/(x|y) z/\nAND b:c"),  # a regex keeps its brackets and blanks
    ("kql", 12, "a:x\\ and\\ y or b:[z", "a:x\\ and\\ y\nor b:[z"),  # escaped blanks; `[` is KQL value text
    ("spl", 200, 'a="1" | where b', 'a="1"\n| where b'),  # every pipe on its own line, however short
])
def test_pretty_breaks_at_boolean_structure(language: str, width: int, exact: str, expected: str) -> None:
    assert pretty_module.pretty(exact, language, width) == expected


def test_highlighting_changes_no_character() -> None:
    compiler = QueryCompiler(("splunk", "eql", "kql", "lucene"))
    rules, _ = load_all([RULES])
    for rule in rules:
        for block in compiler.compile(rule):
            if block.text is None:
                continue
            language = pretty_module.QUERY_LANGUAGES[block.target]
            shown = pretty_module.pretty(block.text, language)
            spans = pretty_module.highlight_html(shown, language)
            assert spans is not None and "<span" in spans
            assert html.unescape(re.sub(r"<[^>]+>", "", spans)) == shown


def test_rule_page_shows_pretty_query_and_keeps_the_exact_one(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    root = parse_xml(out / "rules" / f"{SCRCONS_ID}.html")
    exact = compile_rule(load(SCRCONS)[0], "splunk", "tstats").text
    hidden = by_id(root, "code-splunk-tstats")
    assert hidden.get("hidden") == "hidden" and exact_text(hidden) == exact
    shown = text_of(by_id(root, "pretty-splunk-tstats"))
    assert shown == pretty_module.pretty(exact, "spl") and shown.count("\n| ") == 3  # one line per pipe
    assert any(e.get("class") == "na" for e in by_id(root, "pretty-splunk-tstats").iter("span"))
    button = next(b for b in root.iter("button") if b.get("data-copy") == "code-splunk-tstats")
    block = next(d for d in root.iter("div") if d.get("class") == "codeblock" and button in list(d))
    assert by_id(root, "code-splunk-tstats") in list(block)  # the button, the query and its copy: one block


# ---------------------------------------------------------------------------
# Index, heatmap, rule-page sections
# ---------------------------------------------------------------------------

def index_document(out: Path) -> dict[str, Any]:
    script = (out / "assets" / "search-index.js").read_text(encoding="utf-8")
    prefix = "window.SIGMA_WMI_INDEX = "
    return dict(json.loads(script[len(prefix):-2]))


def test_static_facet_counts_are_the_rules_counted(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    rules = small_rules()
    expected = {
        "level": Counter(r.level or "(none)" for r in rules),
        "status": Counter(r.status or "(none)" for r in rules),
        "category": Counter(r.logsource.category or "(none)" for r in rules),
        "source": Counter(r.source_format for r in rules),
        "technique": Counter({"T1546": 3}),
    }
    root = parse_xml(out / "index.html")
    for fieldset in root.iter("fieldset"):
        key = fieldset.get("data-facet")
        shown = {label.find("input").get("value"): int(next(s for s in label.iter("span")
                                                           if s.get("class") == "count").text or "0")
                 for label in fieldset.iter("label")}
        if key in expected:
            assert shown == dict(expected[key]), key
    assert len(list(by_id(root, "rule-list").iter("tr"))) == 1 + len(rules)


def test_exactly_converting_targets_facet(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    document = index_document(out)
    rows = {row[0]: dict(zip(document["fields"], row, strict=True)) for row in document["rows"]}
    assert rows[SCRCONS_ID]["target"] == ["splunk", "splunk tstats"]  # this site compiles splunk only
    assert rows[SCRCONS_ID]["tactic"] == ["TA0003", "TA0004"] and rows[SCRCONS_ID]["source"] == ["sigma"]
    text = dict(zip(document["text_fields"], document["text"][list(rows).index(SCRCONS_ID)], strict=True))
    assert "scrcons" in text["values"].split() and "svchost" in text["queries"].split()
    assert ("image" in text["queries"].split() and "parentimage" in text["fields"].split()) or text["fields"]


def test_matrix_columns_follow_the_attack_data_and_link_to_the_filtered_list(
        site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    matrix = parse_xml(out / "matrix.html")
    headings = [h.get("id") for h in matrix.iter("h2") if (h.get("id") or "").startswith("tactic-")]
    assert headings == [f"tactic-{t.id}" for t in attack().matrix_tactics()]
    assert attack().matrix[:3] == ("TA0043", "TA0042", "TA0001")  # reconnaissance first, as ATT&CK draws it
    steps = [heatmap.Cell(attack().techniques["T1059"], n).step for n in (0, 1, 2, 3, 4, 8, 16, 400)]
    assert steps == [0, 1, 2, 2, 3, 4, 5, 5]


def test_descriptions_lose_yaml_line_breaks_but_keep_paragraphs_and_lists() -> None:
    text = "Detects a thing\nthat wraps.\n\n- first item\n  wrapped\n- second\n\nLast paragraph"
    assert paragraphs(text) == [Paragraph("p", ("Detects a thing that wraps.",)),
                                Paragraph("ul", ("first item wrapped", "second")),
                                Paragraph("p", ("Last paragraph",))]


def test_rule_page_reflows_the_description(tmp_path: Path) -> None:
    rule = Rule(id="wrapped", title="Wrapped", detection=_match("x"), logsource=PROC,
                description="One sentence\nbroken by YAML.\n\nA second paragraph.")
    build_site([rule], tmp_path / "site", targets=("splunk",))
    root = parse_xml(tmp_path / "site" / "rules" / "wrapped.html")
    description = next(e for e in root.iter("div") if e.get("class") == "description")
    assert [text_of(p) for p in description.iter("p")] == ["One sentence broken by YAML.", "A second paragraph."]


def test_failed_conversion_reason_is_on_the_rule_page(tmp_path: Path) -> None:
    rule = Rule(id="wmi-only", title="WMI only", detection=_match("x"),
                logsource=LogSource(product="windows", service="wmi"))
    build_site([rule], tmp_path / "site", targets=("splunk", "eql"))
    root = parse_xml(tmp_path / "site" / "rules" / "wmi-only.html")
    failures = by_id(root, "conversion-failures")
    table = next(t for t in root.iter("table") if t.get("class") == "failures")
    reasons = {text_of(tr.find("td")): text_of(tr) for tr in table.iter("tr") if tr.find("td") is not None}
    assert failures is not None and "eql" in reasons and "no-index" in reasons["eql"]
    document = index_document(tmp_path / "site")
    assert "eql" not in document["rows"][0][document["fields"].index("target")]


def test_escu_page_shows_risk_story_and_type(tmp_path: Path) -> None:
    rules = load(RULES / "escu")
    build_site(rules, tmp_path / "site", targets=("splunk",))
    root = parse_xml(tmp_path / "site" / "rules" / f"{page_slug(rules[0])}.html")
    rows = {text_of(tr.find("th")): text_of(tr.find("td")) for tr in root.iter("tr") if tr.find("th") is not None
            and tr.find("td") is not None}
    meta = site_module.escu_metadata(rules[0])
    assert meta is not None and meta["stories"]
    assert rows["Analytic story"] == ", ".join(meta["stories"])
    assert rows["Risk score"] == str(meta["risk_score"] if meta["risk_score"] is not None else "-")
    assert "ESCU analytics carry a risk score" in rows["Level"]


def test_declared_tests_and_their_report_results(tmp_path: Path) -> None:
    from sigma_wmi.rule_tests import CaseResult, RuleReport, declared_tests

    scrcons = load(SCRCONS)[0]
    cases = declared_tests(scrcons)
    assert cases
    results = [CaseResult(case, "pass" if i == 0 else "fail", count=2, message="" if i == 0 else "expected 1")
               for i, case in enumerate(cases)]
    report = tmp_path / "tests.json"
    report.write_text(json.dumps({"rules": [RuleReport(scrcons, results).to_json()], "errors": [], "seconds": 0}))
    build_site([scrcons], tmp_path / "without", targets=("splunk",))
    build_site([scrcons], tmp_path / "with", targets=("splunk",), test_report=report)
    plain = text_of(next(t for t in parse_xml(tmp_path / "without" / "rules" / f"{SCRCONS_ID}.html").iter("table")
                         if t.get("class") == "tests"))
    assert cases[0].events in plain and "Result" not in plain
    table = next(t for t in parse_xml(tmp_path / "with" / "rules" / f"{SCRCONS_ID}.html").iter("table")
                 if t.get("class") == "tests")
    body = [[text_of(td) for td in tr.iter("td")] for tr in table.iter("tr") if tr.find("td") is not None]
    assert len(body) == len(cases) and body[0][2].startswith("pass") and body[0][3] == "2"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(SigmaWmiError, match="not a `sigma-wmi test --report` file"):
        build_site([scrcons], tmp_path / "bad", test_report=bad)


def test_cli_docs_takes_a_test_report(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sigma_wmi.cli import main

    report = tmp_path / "r.json"
    report.write_text(json.dumps({"rules": []}))
    result = CliRunner().invoke(main, ["docs", str(SCRCONS), "-o", str(tmp_path / "site"), "-t", "splunk",
                                       "--test-report", str(report), "-q"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "site" / "rules" / f"{SCRCONS_ID}.html").read_text(encoding="utf-8")
    assert "has no entry for this rule" in page
    result = CliRunner().invoke(main, ["docs", str(SCRCONS), "-o", str(tmp_path / "site2"),
                                       "--test-report", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and not (tmp_path / "site2").exists()


def test_vendored_search_library_is_unchanged_and_licensed(site: tuple[Path, docs.SiteReport]) -> None:
    out, _ = site
    folder = REPO / "templates" / "docs" / "vendor" / "minisearch"
    version = (folder / "VERSION").read_text(encoding="utf-8")
    digest = hashlib.sha256((folder / "minisearch.js").read_bytes()).hexdigest()
    assert version.startswith("minisearch 7.2.0") and version.split()[-1] == digest
    assert "Permission is hereby granted" in (folder / "LICENSE.txt").read_text(encoding="utf-8")
    for name in ("minisearch.js", "LICENSE.txt", "VERSION"):
        assert (out / "assets" / "vendor" / "minisearch" / name).read_bytes() == (folder / name).read_bytes()


def test_pretty_html_is_pretty_highlighted() -> None:
    compiler = QueryCompiler(("splunk", "eql", "kql", "lucene"))
    for rule in load_all([RULES])[0]:
        for block in compiler.compile(rule):
            if block.text is not None:
                language = pretty_module.QUERY_LANGUAGES[block.target]
                shown = pretty_module.pretty(block.text, language)
                assert pretty_module.pretty_html(block.text, language) == (
                    shown, pretty_module.highlight_html(shown, language))


def test_matrix_order_comes_from_a_stix_bundle() -> None:
    from sigma_wmi.attack import build_table

    def tactic(stix_id: str, tid: str, name: str) -> dict[str, Any]:
        return {"type": "x-mitre-tactic", "id": stix_id, "name": name, "x_mitre_shortname": name.lower(),
                "external_references": [{"source_name": "mitre-attack", "external_id": tid}]}

    bundle = {"type": "bundle", "objects": [
        {"type": "x-mitre-collection", "x_mitre_version": "99.0"},
        tactic("x-mitre-tactic--a", "TA0002", "Execution"), tactic("x-mitre-tactic--b", "TA0043", "Reconnaissance"),
        {"type": "x-mitre-matrix", "id": "x-mitre-matrix--m", "tactic_refs": ["x-mitre-tactic--b", "x-mitre-tactic--a"]},
    ]}
    table = build_table(bundle)
    assert table["matrix"] == ["TA0043", "TA0002"] and "x-mitre-matrix" in table["matrix_source"]


# Values made of the characters each language's tokenizer treats specially: a break
# inside a string, a regex or an escaped value would change the query.
_HOSTILE = st.lists(st.sampled_from([*'ab \\"|(),:/[]*?=<>', " OR ", " and ", " AND ", " or "]),
                    min_size=1, max_size=8).map("".join)
_FIELDS = ("process_path", "command_line", "parent_process_path")
_OPS = (Op.EQUALS, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH, Op.REGEX)


@st.composite
def detections(draw: st.DrawFn, depth: int = 0) -> Any:
    if depth >= 3 or draw(st.booleans()):
        op = draw(st.sampled_from(_OPS))
        values = draw(st.lists(_HOSTILE, min_size=1, max_size=4))
        if op is Op.REGEX:
            values = [re.escape(v) for v in values]
        return Match(draw(st.sampled_from(_FIELDS)), op, tuple(Pattern.literal(v) for v in values))
    items = tuple(draw(st.lists(detections(depth + 1), min_size=2, max_size=3)))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return Not(items[0])
    return And(items) if kind == "and" else Or(items)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(detections(), st.sampled_from([12, 30, 60]))
def test_pretty_printing_any_rule_keeps_what_each_parser_reads(detection: Any, width: int) -> None:
    parsers = _parsers()
    rule = Rule(id="p", title="p", detection=detection, logsource=PROC)
    for block in _property_compiler().compile(rule):
        if block.text is None:
            continue
        shown = pretty_module.pretty(block.text, pretty_module.QUERY_LANGUAGES[block.target], width)
        if shown == block.text:
            continue
        try:
            expected = parsers[block.target](block.text, block.format)
        except Exception:  # a query our parsers cannot read is the backends' tests' concern, not this one's
            continue
        assert parsers[block.target](shown, block.format) == expected, (block.label, block.text, shown)


@functools.cache
def _property_compiler() -> QueryCompiler:
    return QueryCompiler(("splunk", "eql", "kql", "lucene"))
