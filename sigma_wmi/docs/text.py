"""Text for HTML pages: characters HTML cannot carry made visible (and copyable back),
highlighted query markup made safe, and prose reflowed from YAML's hard line breaks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

# ---------------------------------------------------------------------------
# Text that HTML (and XML) cannot carry
# ---------------------------------------------------------------------------

# C0/C1 controls other than tab and newline, lone surrogates and non-characters are
# parse errors in HTML and forbidden in XML, even as character references.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_CODE_SPECIAL = re.compile("[\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _picture(char: str) -> str:
    """A visible stand-in: the Unicode control picture (U+2400 block) where one exists."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"


def visible_text(value: str) -> str:
    """Prose for a page: line ends normalized, unrepresentable characters shown as pictures."""
    if not _CODE_SPECIAL.search(value):  # the usual case (every template value passes here)
        return value
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: _picture(m.group()), text)


def code_markup(text: str) -> Markup:
    """A query or rule for a <code> element, exact to the character: a carriage return
    is written as a reference (parsers would turn a raw one into a newline), any other
    unrepresentable character as a marked picture that the copy button turns back
    into the character (site.js)."""
    def special(match: re.Match[str]) -> str:
        char = match.group()
        if char == "\r":
            return "&#13;"
        return f'<span class="ctl" data-char="{ord(char)}">{_picture(char)}</span>'

    if not _CODE_SPECIAL.search(text):  # the usual case: nothing to mark
        return Markup(escape(text))
    pieces = _CODE_SPECIAL.split(text)
    specials = [special(m) for m in _CODE_SPECIAL.finditer(text)]
    out = [str(escape(pieces[0]))]
    for marker, piece in zip(specials, pieces[1:], strict=True):
        out.append(marker)
        out.append(str(escape(piece)))
    return Markup("".join(out))


def _finalize(value: Any) -> Any:
    """Every `{{ }}` of an HTML template: strings are made representable before
    autoescape escapes them; Markup (already safe, e.g. `code_markup`) passes through."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_text(value)
    return value


def highlighted_markup(text: str, spans: str | None) -> Markup:
    """Highlighted HTML from Pygments for `text`, when the text holds nothing that HTML
    cannot carry (Pygments would write such characters raw); else the plain `code_markup`."""
    if spans is None or _CODE_SPECIAL.search(text):
        return code_markup(text)
    return Markup(spans)


# ---------------------------------------------------------------------------
# Prose: YAML block scalars keep the author's line width; a page reflows it
# ---------------------------------------------------------------------------

_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+")


@dataclass(frozen=True)
class Paragraph:
    kind: str  # "p" or "ul"
    lines: tuple[str, ...]  # one entry for a paragraph, one per item for a list


def paragraphs(text: str | None) -> list[Paragraph]:
    """Blank lines separate paragraphs; lines starting with a list marker are list
    items; every other line break inside a paragraph or item is a space."""
    blocks: list[Paragraph] = []
    for chunk in re.split(r"\n\s*\n", (text or "").replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.strip() for line in chunk.split("\n") if line.strip()]
        if not lines:
            continue
        items: list[str] = []
        prose: list[str] = []
        for line in lines:
            marker = _LIST_ITEM.match(line)
            if marker:
                if prose:
                    blocks.append(Paragraph("p", (" ".join(prose),)))
                    prose = []
                items.append(line[marker.end():])
            elif items:
                items[-1] += " " + line  # a wrapped list item
            else:
                prose.append(line)
        if prose:
            blocks.append(Paragraph("p", (" ".join(prose),)))
        if items:
            blocks.append(Paragraph("ul", tuple(items)))
    return blocks


def reflowed(text: str | None) -> str:
    """One line per paragraph, for search and summaries."""
    return " ".join(" ".join(p.lines) for p in paragraphs(text))
