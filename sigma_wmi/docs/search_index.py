"""The index page's data: one row of facet values per rule and the text MiniSearch (the
vendored `templates/docs/vendor/minisearch`) indexes in the browser.

It is written as a script (`assets/search-index.js`): a `fetch` of JSON fails from
file://. The text fields hold each distinct word once (MiniSearch ranks by presence,
and the site's tokenizer splits on the same non-word characters), which keeps the
3,000-rule index a few megabytes although it covers every compiled query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sigma_wmi.model import Rule, matches

# Facets in the order the index page shows them: (key, label).
FACETS: tuple[tuple[str, str], ...] = (
    ("level", "Level"), ("status", "Status"), ("product", "Product"), ("category", "Category"),
    ("service", "Service"), ("tactic", "Tactic"), ("technique", "Technique"),
    ("target", "Converts exactly to"), ("source", "Source format"),
)
# Row layout of `rows`: the facet keys, then what the list shows and sorts by.
ROW_FIELDS = ("slug", "title", *(key for key, _ in FACETS), "modified", "logsource", "id")
# Searchable text per rule (MiniSearch fields), in `text` rows.
TEXT_FIELDS = ("description", "fields", "values", "queries", "names")
NONE = "(none)"  # the facet value of a rule without one (ESCU analytics carry no level)
_WORD = re.compile(r"[^\W_]+")  # what site.js's tokenizer keeps: letters and digits
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[^\W\d_]+|\d+")  # InvokeMimikatz -> Invoke, Mimikatz


@dataclass(frozen=True)
class IndexEntry:
    """What one rule contributes to the index; computed where its queries are compiled."""

    slug: str
    facets: dict[str, list[str]]  # facet key -> values
    modified: str
    logsource: str
    id: str
    title: str
    text: tuple[str, ...]  # TEXT_FIELDS


def words(texts: Iterable[str]) -> str:
    """Each distinct word of `texts` once, lowercased, in first-seen order; a word written
    in camel case or with digits also adds its parts (`Invoke-Mimikatz` is found by
    either word already, `InvokeMimikatz` needs the parts), since MiniSearch matches
    word prefixes, not infixes."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall(text):
            lower = word.lower()
            if lower in seen:
                continue
            seen[lower] = None
            if word.isdigit() or (word.isalpha() and (word == lower or word.isupper())):
                continue  # one part only
            for part in _PART.findall(word):
                seen.setdefault(part.lower(), None)
    return " ".join(seen)


def rule_values(rule: Rule) -> list[str]:
    """Every value the detection tests, wildcards shown as `*` and `?`."""
    return [str(value) for match in matches(rule.detection) for value in match.values]


def rule_field_names(rule: Rule) -> list[str]:
    return sorted({m.field for m in matches(rule.detection) if m.field} | set(rule.fields))


def script(entries: Sequence[IndexEntry], labels: dict[str, dict[str, str]]) -> str:
    rows: list[list[Any]] = []
    for entry in entries:
        rows.append([entry.slug, entry.title, *(entry.facets.get(key, []) for key, _ in FACETS),
                     entry.modified, entry.logsource, entry.id])
    document = {
        "fields": ROW_FIELDS,
        "facets": FACETS,
        "labels": labels,
        "rows": rows,
        "text_fields": TEXT_FIELDS,
        "text": [list(entry.text) for entry in entries],
    }
    data = json.dumps(document, ensure_ascii=True, separators=(",", ":"))
    # ensure_ascii leaves '<' alone; written as \u003c the index can never close a script element.
    return "window.SIGMA_WMI_INDEX = " + data.replace("<", "\\u003c") + ";\n"
