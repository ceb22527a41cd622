"""Markdown for the ATC cards and the site's Markdown pages: the escapers (the only
places Markdown is escaped) and the Jinja2 environment whose `finalize` applies them."""

from __future__ import annotations

import functools
import re
import urllib.parse
from typing import Any

import jinja2
from markupsafe import Markup

from sigma_wmi.docs.text import paragraphs

# ---------------------------------------------------------------------------
# Markdown escaping (pure functions; the only places Markdown is escaped)
# ---------------------------------------------------------------------------

# Inside a table cell: HTML-significant characters become entities, Markdown
# punctuation that could start emphasis, code, links or end the cell is
# backslash-escaped, so the cell shows exactly the text it was given.
_MD_CELL = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;",
    "\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
    "~": "\\~", "#": "\\#",  # `#` anywhere: a heading's closing `#`s would vanish
})
# What starts a block (list item, setext underline, thematic break, ordered list) when it
# opens a line; the same text is safe once its first character is backslash-escaped.
_BLOCK_START = re.compile(r"^(?:[-+=]|\d{1,9}(?=[.)]))")
_NEWLINES = re.compile(r"\r\n|\r|\n")
# Characters that would end or break a Markdown link destination `(...)`.
_URL_SAFE = "!#$%&*+,-./:;=?@[]^_{}~'"
LINK_SCHEMES = ("http://", "https://", "ftp://", "mailto:")


def md_cell(text: object) -> str:
    """Text for one Markdown table cell, list item, heading or paragraph: no `|` ends the
    cell, no newline ends the row, no HTML is interpreted, nothing at the start opens a
    block (heading, list, rule, quote, code); line breaks become `<br>`."""
    lines = _NEWLINES.split(str(text).strip())
    return "<br>".join(_BLOCK_START.sub(_escape_block_start, line.strip().translate(_MD_CELL)) for line in lines)


def _escape_block_start(found: re.Match[str]) -> str:
    text = found.group()
    return text + "\\" if text[0].isdigit() else "\\" + text  # `1\.`, `\-`


def md_url(url: str) -> str:
    """A URL for a Markdown link destination: spaces, parentheses, `<>`, `|`, quotes
    and control characters percent-encoded; nothing else changes."""
    return urllib.parse.quote(url.strip(), safe=_URL_SAFE).replace("|", "%7C")


def is_link(url: str) -> bool:
    """Only web and mail links are rendered as links (never `javascript:`)."""
    return url.strip().lower().startswith(LINK_SCHEMES)


_IDENT = re.compile(r"[A-Za-z0-9_.\-]+")


def ident(value: object) -> Markup:
    """An identifier from our own data (DN_0003_..., TA0003, T1546.003) written as is:
    it is checked to hold nothing Markdown or HTML would interpret."""
    text = str(value)
    if not _IDENT.fullmatch(text):
        return Markup(md_cell(text))
    return Markup(text)


def fence(text: str, info: str = "") -> str:
    """A fenced code block that the text cannot close early: the fence is longer
    than the longest run of backticks inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{info}\n{body}{ticks}"


def _finalize(value: Any) -> Any:
    """Every `{{ }}` in a Markdown template is cell-escaped unless it is already Markup."""
    if isinstance(value, Markup):
        return value
    return md_cell("" if value is None else value)


@functools.cache
def markdown_environment() -> jinja2.Environment:
    """Jinja2 for Markdown output: autoescape is HTML's, so it is off; `finalize`
    escapes for Markdown table cells instead, and `raw_block` marks fenced code."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sigma_wmi.templates", ""),
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fence"] = lambda text, info="": Markup(fence(str(text), info))
    env.filters["url"] = lambda url: Markup(md_url(str(url)))
    env.filters["is_link"] = is_link
    env.filters["ident"] = ident
    env.filters["paragraphs"] = paragraphs
    env.filters["list_lines"] = lambda text: "\n".join("- " + line for line in str(text).split("\n"))
    return env
