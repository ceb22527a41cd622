"""The generated site in a real headless Chromium: no console errors; search and facets
narrow one list with counts that match the data ("mimikatz" finds every rule whose
description, values or queries say it, checked against a scan of the sources); Copy puts
the CLI's exact query on the clipboard; the ATT&CK matrix scrolls inside itself at 1280 px;
axe-core (vendored in tests/vendor/axe-core) finds no serious or critical violation.

Needs Debian's `chromium` and the `playwright` Python package (its driver only; no
browser download). Skips when either is missing.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sigma_wmi.api import compile_rule, load, load_all
from sigma_wmi.cli import main as cli_main
from sigma_wmi.docs.queries import QueryCompiler, attack_info
from sigma_wmi.docs.site import build_site, page_slug
from sigma_wmi.model import LogSource, Match, Op, Pattern, Rule, matches
from tests.conftest import RULES, shared_path

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

SCRCONS_ID = "ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e"
SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000


def control_rule() -> Rule:
    """A value with characters HTML cannot carry raw (vertical tab, CR, NUL)."""
    value = Pattern.literal("a\x0bb\r\nc\x00d")
    return Rule(id="control-chars", title="Control characters", logsource=LogSource("windows", "process_creation"),
                detection=Match("process_path", Op.EQUALS, (value,)), source_text="title: x\n")


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "site"
    rules, errors = load_all([RULES])
    build_site([*rules, control_rule()], out, errors=errors)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """The same site over HTTP on localhost (a secure context for the clipboard API)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))


def open_page(browser: Any, url: str, **context_options: Any) -> tuple[Any, Any, Console]:
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    console = Console(page)
    page.goto(url)
    return context, page, console


def test_no_console_errors_on_any_kind_of_page(browser: Any, site: Path) -> None:
    pages = ["index.html", "tactics.html", "techniques.html", "logsources.html", "matrix.html",
             f"rules/{SCRCONS_ID}.html"]
    pages += [f"rules/{p.name}" for p in sorted((site / "rules").glob("*.html"))[:5]]
    for relative in pages:
        context, page, console = open_page(browser, (site / relative).as_uri())
        page.wait_for_load_state("load")
        context.close()
        assert console.errors == [], (relative, console.errors)


def visible_rules(page: Any) -> list[str]:
    """Slugs of the rules the index list shows, in list order."""
    hrefs = page.eval_on_selector_all("#rule-list tbody tr:not([hidden]) a",
                                      "links => links.map(a => a.getAttribute('href'))")
    return [h.rsplit("/", 1)[-1].removesuffix(".html") for h in hrefs]


def search(page: Any, query: str) -> list[str]:
    page.fill("#search-box", query)
    page.wait_for_function(
        "q => location.hash.includes('q=' + encodeURIComponent(q).replace(/%20/g, '+'))"
        " || (q === '' && !location.hash.includes('q='))", arg=query)
    return visible_rules(page)


def test_search_finds_the_scrcons_rule_from_file_url(browser: Any, site: Path) -> None:
    context, page, console = open_page(browser, (site / "index.html").as_uri())
    page.wait_for_selector("html[data-index-ready]")
    for query in ("scrcons", "script event consumer", SCRCONS_ID[:8], "t1546.003", "svchost"):
        assert SCRCONS_ID in search(page, query), query
    assert search(page, "no such rule anywhere") == []
    assert page.inner_text("#search-count").startswith("0 rules")
    search(page, "scrcons")
    page.locator(f'#rule-list a[href="./rules/{SCRCONS_ID}.html"]').click()
    page.wait_for_url(f"**/rules/{SCRCONS_ID}.html")
    assert page.locator("h1").inner_text() == "WMI Persistence - Script Event Consumer"
    assert console.errors == []
    context.close()


def test_header_search_carries_the_query(browser: Any, site: Path) -> None:
    context, page, console = open_page(browser, (site / "rules" / f"{SCRCONS_ID}.html").as_uri())
    page.fill("header input[name=q]", "scrcons")
    page.press("header input[name=q]", "Enter")
    page.wait_for_url("**/index.html*")
    page.wait_for_function("location.hash === '#q=scrcons' && location.search === ''")
    assert page.input_value("#search-box") == "scrcons"
    assert SCRCONS_ID in visible_rules(page)
    search(page, "")  # a cleared search stays cleared on reload: ?q= seeded only the first view
    page.reload()
    page.wait_for_selector("html[data-index-ready]")
    assert page.input_value("#search-box") == "" and SCRCONS_ID in visible_rules(page)
    assert console.errors == []
    context.close()


def click_copy(page: Any, code_id: str) -> str:
    """Click the copy button of a code element and return what the clipboard holds."""
    page.locator(f'button.copy[data-copy="{code_id}"]').click()
    page.wait_for_function(
        "id => document.querySelector(`button.copy[data-copy=\"${id}\"]`).dataset.copied === 'true'",
        arg=code_id)
    return str(page.evaluate("navigator.clipboard.readText()"))


def test_copy_button_copies_the_exact_spl(browser: Any, server: str) -> None:
    expected = compile_rule(load(SCRCONS)[0], "splunk").text
    context, page, console = open_page(browser, f"{server}/rules/{SCRCONS_ID}.html")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    copied = click_copy(page, "code-splunk")
    assert copied == expected
    assert 'Image="C:\\\\WINDOWS\\\\system32\\\\wbem\\\\scrcons.exe"' in copied
    assert page.locator('button.copy[data-copy="code-splunk"]').inner_text() == "Copied"
    assert console.errors == []
    context.close()


def test_copy_button_restores_characters_html_cannot_carry(browser: Any, server: str) -> None:
    expected = compile_rule(control_rule(), "splunk").text
    context, page, console = open_page(browser, f"{server}/rules/control-chars.html")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    assert click_copy(page, "code-splunk") == expected
    assert console.errors == []
    context.close()


# ---------------------------------------------------------------------------
# A SigmaHQ subset: every rule file mentioning mimikatz plus every 40th file (the full
# 3,141-rule build is bench/docs_build.py's job)
# ---------------------------------------------------------------------------

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
TERM = "mimikatz"


@dataclass
class Subset:
    out: Path
    rules: list[Rule]
    queries: dict[str, list[str]]  # slug -> every compiled query text

    def slug_of(self, rule: Rule) -> str:
        return page_slug(rule)


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Subset:
    corpus = shared_path("corpora", "sigmahq", "rules")
    files = sorted(corpus.rglob("*.yml"))
    chosen = [f for i, f in enumerate(files)
              if i % 40 == 0 or TERM in f.read_text(encoding="utf-8", errors="replace").lower()]
    rules, _ = load_all(chosen)
    out = tmp_path_factory.mktemp("subset") / "site"
    build_site(rules, out)
    compiler = QueryCompiler()
    queries = {page_slug(r): [b.text for b in compiler.compile(r) if b.text] for r in rules}
    return Subset(out, rules, queries)


def mentions(subset: Subset, rule: Rule) -> bool:
    """The scan the search must agree with: the rule's description, any value its
    detection tests, or any compiled query holds the term (case-insensitively)."""
    texts = [rule.description, *(str(v) for m in matches(rule.detection) for v in m.values),
             *subset.queries[page_slug(rule)]]
    return any(TERM in text.lower() for text in texts)


def test_mimikatz_search_finds_every_rule_that_mentions_it(browser: Any, subset: Subset) -> None:
    expected = {page_slug(r) for r in subset.rules if mentions(subset, r)}
    anywhere = {page_slug(r) for r in subset.rules
                if TERM in (r.source_text + " ".join(subset.queries[page_slug(r)])).lower()}
    assert len(expected) >= 25 and len(subset.rules) > len(anywhere) + 50
    context, page, console = open_page(browser, (subset.out / "index.html").as_uri())
    page.wait_for_selector("html[data-index-ready]")
    found = set(search(page, TERM))
    assert expected <= found, sorted(expected - found)
    assert found <= anywhere, sorted(found - anywhere)  # nothing found that does not say it
    assert set(search(page, "MimiKatz")) == found
    assert console.errors == []
    context.close()


def facet_counts_shown(page: Any, key: str) -> dict[str, int]:
    return dict(page.eval_on_selector_all(
        f'#facets input[name="{key}"]',
        "inputs => inputs.map(i => [i.value, parseInt(i.parentNode.querySelector('.count').textContent, 10)])"))


def counted(values: list[list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in values:
        for value in set(row):
            counts[value] = counts.get(value, 0) + 1
    return counts


def test_facets_count_the_data_and_narrow_the_list_with_search(browser: Any, subset: Subset) -> None:
    rules = {page_slug(r): r for r in subset.rules}

    def level(rule: Rule) -> list[str]:
        return [rule.level or "(none)"]

    def tactics(rule: Rule) -> list[str]:
        return [t.id for t in attack_info(rule).tactics]

    context, page, console = open_page(browser, (subset.out / "index.html").as_uri())
    page.wait_for_selector("html[data-index-ready]")
    assert facet_counts_shown(page, "level") == counted([level(r) for r in rules.values()])
    assert {k: v for k, v in facet_counts_shown(page, "tactic").items() if v} == counted(
        [tactics(r) for r in rules.values()])
    assert facet_counts_shown(page, "product") == counted(
        [[r.logsource.product or "(none)"] for r in rules.values()])
    # One level chosen: the list holds exactly its rules; other facets count within it.
    page.check('#facets input[name="level"][value="high"]')
    page.wait_for_function("location.hash.includes('level=high')")
    high = {slug for slug, r in rules.items() if r.level == "high"}
    assert set(visible_rules(page)) == high
    assert page.get_attribute("#search-count", "data-count") == str(len(high))
    assert {k: v for k, v in facet_counts_shown(page, "tactic").items() if v} == counted(
        [tactics(rules[s]) for s in high])
    assert facet_counts_shown(page, "level")["medium"] == sum(r.level == "medium" for r in rules.values())
    # Search and facets narrow the same list, and the state survives a reload from the URL.
    found = set(search(page, TERM))
    url = page.url
    page.uncheck('#facets input[name="level"][value="high"]')
    page.wait_for_function("!location.hash.includes('level=high')")
    everywhere = set(visible_rules(page))
    assert found == everywhere & high and len(everywhere) > len(found) > 0
    assert {s for s in high if mentions(subset, rules[s])} <= found
    assert "level=high" in url and "q=mimikatz" in url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("html[data-index-ready]")
    assert set(visible_rules(page)) == found and page.is_checked('#facets input[name="level"][value="high"]')
    # Sorting by level puts critical first without changing what is listed.
    page.click("#clear-filters")
    page.select_option("#sort", "level")
    page.wait_for_function("location.hash.includes('sort=level')")
    order = visible_rules(page)
    ranks = ["critical", "high", "medium", "low", "informational"]
    keys = [ranks.index(rules[s].level) if rules[s].level in ranks else len(ranks) for s in order]
    assert keys == sorted(keys) and set(order) == set(rules)
    assert console.errors == []
    context.close()


def test_matrix_fits_1280_px_and_cells_open_the_filtered_list(browser: Any, subset: Subset) -> None:
    context, page, console = open_page(browser, (subset.out / "matrix.html").as_uri(),
                                       viewport={"width": 1280, "height": 900})
    page.wait_for_load_state("load")
    page_scroll = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert page_scroll <= 0
    inner = page.evaluate("(() => { const m = document.querySelector('.matrix-scroll');"
                          " return [m.scrollWidth, m.clientWidth]; })()")
    assert inner[0] > inner[1]  # the matrix scrolls inside its own box
    steps = set(page.eval_on_selector_all("li.cell", "cells => cells.map(c => c.className)"))
    assert len(steps) >= 4  # a colour scale, not one colour
    cell = page.locator('li.cell a[href$="#technique=T1059"]')
    count = int(cell.locator(".n").inner_text())
    cell.click()
    page.wait_for_selector("html[data-index-ready]")
    assert len(visible_rules(page)) == count
    assert page.is_checked('#facets input[name="technique"][value="T1059"]')
    assert console.errors == []
    context.close()


def test_copy_gives_the_cli_output_for_every_target(browser: Any, subset: Subset) -> None:
    rule = next(r for r in subset.rules if "mimikatz" in r.title.lower() and r.logsource.category == "process_creation")
    slug = page_slug(rule)
    handler = functools.partial(_QuietHandler, directory=str(subset.out))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        context, page, console = open_page(browser, f"{origin}/rules/{slug}.html")
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
        for target, fmt, code_id in (("splunk", "raw", "code-splunk"), ("splunk", "tstats", "code-splunk-tstats"),
                                     ("eql", None, "code-eql"), ("kql", None, "code-kql"),
                                     ("lucene", None, "code-lucene")):
            cli = CliRunner().invoke(cli_main, ["convert", "-t", target, *(["-f", fmt] if fmt else []),
                                                rule.origin.path])
            assert cli.exit_code == 0, cli.output
            copied = click_copy(page, code_id)
            assert copied == cli.stdout.rstrip("\n"), target
            shown = page.inner_text(f"#pretty-{code_id.removeprefix('code-')}")
            assert "\n" in shown and shown != copied  # the page shows it pretty-printed
        assert console.errors == []
        context.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    # preload off: from file:// axe's stylesheet preload is a refused XHR (a console error of axe's own)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations'], preload: false})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"][:3]]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_violation(browser: Any, subset: Subset, site: Path, scheme: str) -> None:
    if not AXE.is_file():
        pytest.skip("tests/vendor/axe-core/axe.min.js is missing")
    rule = next(r for r in subset.rules if "mimikatz" in r.title.lower())
    escu = next(p.name for p in (site / "rules").glob("*.html") if "ESCU analytic" in p.read_text(encoding="utf-8"))
    pages = [(subset.out, "index.html", "html[data-index-ready]"), (subset.out, f"rules/{page_slug(rule)}.html", "main"),
             (subset.out, "matrix.html", "main"), (site, f"rules/{escu}", "main")]  # the ESCU page: YAML highlighting
    for root, relative, ready in pages:
        context, page, console = open_page(browser, (root / relative).as_uri(), color_scheme=scheme,
                                           viewport={"width": 1280, "height": 900})
        page.wait_for_selector(ready)
        assert axe_violations(page) == [], (relative, scheme)
        assert console.errors == []
        context.close()


def test_theme_toggle_switches_dark_mode(browser: Any, site: Path) -> None:
    context, page, console = open_page(browser, (site / "rules" / f"{SCRCONS_ID}.html").as_uri(),
                                       color_scheme="light")
    background = "getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(background)
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate(background) != light
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert page.evaluate(background) == light
    assert console.errors == []
    context.close()
