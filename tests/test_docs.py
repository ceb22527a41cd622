"""The documentation site: well-formed pages, escaping, safe file names, related rules,
Navigator layer, search index, determinism, atomic replacement, corpus speed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sigma_wmi.api import compile_rule, load, load_all
from sigma_wmi.attack import attack
from sigma_wmi.docs import site as docs
from sigma_wmi.docs.site import MARKER, build_site, page_slug
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import LogSource, Match, Op, Pattern, RelatedRule, Rule, Technique
from sigma_wmi.output import inside as safe_join
from tests.conftest import RULES, shared_path

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

