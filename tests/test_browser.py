"""The generated site in a real headless Chromium: no console errors, search finds the
scrcons rule, and the copy button puts the exact SPL on the clipboard.

Needs Debian's `chromium` and the `playwright` Python package (its driver only; no
browser download). Skips when either is missing.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sigma_wmi.api import compile_rule, load, load_all
from sigma_wmi.docs.site import build_site
from sigma_wmi.model import LogSource, Match, Op, Pattern, Rule
from tests.conftest import RULES

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


def test_search_finds_the_scrcons_rule_from_file_url(browser: Any, site: Path) -> None:
    context, page, console = open_page(browser, (site / "index.html").as_uri())
    for query in ("scrcons", "script event consumer", SCRCONS_ID[:8], "t1546.003"):
        page.fill("#search-box", query)
        link = page.locator(f'#search-results a[href="rules/{SCRCONS_ID}.html"]')
        link.wait_for()
        assert link.inner_text() == "WMI Persistence - Script Event Consumer", query
    page.fill("#search-box", "no such rule anywhere")
    page.wait_for_function("document.getElementById('search-count').textContent.startsWith('0 ')")
    assert page.locator("#search-results li").count() == 0
    page.fill("#search-box", "scrcons")
    page.locator(f'#search-results a[href="rules/{SCRCONS_ID}.html"]').click()
    page.wait_for_url(f"**/rules/{SCRCONS_ID}.html")
    assert page.locator("h1").inner_text() == "WMI Persistence - Script Event Consumer"
    assert console.errors == []
    context.close()


def test_header_search_carries_the_query(browser: Any, site: Path) -> None:
    context, page, console = open_page(browser, (site / "rules" / f"{SCRCONS_ID}.html").as_uri())
    page.fill("header input[name=q]", "scrcons")
    page.press("header input[name=q]", "Enter")
    page.wait_for_url("**/index.html?q=scrcons")
    page.locator(f'#search-results a[href="rules/{SCRCONS_ID}.html"]').wait_for()
    assert page.input_value("#search-box") == "scrcons"
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
