"""ESCU lookup tables for `| lookup` stages: `lookups/<name>.csv` beside the `macros/` folder.

A `| lookup NAME key AS field OUTPUT out` followed by a test of `out` (`isnotnull(out)`,
`out="x"`) selects the events whose `field` is one of the table's keys with such an output: an
IN-list on `field` (`spl.LookupOutput`). ESCU describes each table in `lookups/<name>.yml`
(`filename`, `match_type: WILDCARD(key)`, `case_sensitive_match`); without that file the
keys are literal and matched case-insensitively, as ESCU's tables are configured.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from sigma_wmi.limits import MAX_FILE_BYTES, MAX_VALUES_PER_ITEM
from sigma_wmi.model import Pattern
from sigma_wmi.readers.spl import search_pattern
from sigma_wmi.readers.yamlsource import load_documents

_WILDCARD_FIELDS = re.compile(r"WILDCARD\(\s*([^)]+?)\s*\)", re.I)
# lookup [option=value ...] NAME key [AS field] [, key2 ...] [OUTPUT|OUTPUTNEW out [AS alias] ...]
_OPTION = re.compile(r"^\s*\w+\s*=\s*\S+\s+")
_FIELD = r'(?:"[^"]+"|[^\s,"]+)'
_PAIR = re.compile(rf"({_FIELD})(?:\s+as\s+({_FIELD}))?\s*,?\s*", re.I)


@dataclass(frozen=True)
class LookupStage:
    """A parsed `| lookup` command."""

    name: str
    inputs: tuple[tuple[str, str], ...]  # (table column, event field)
    outputs: tuple[tuple[str, str], ...]  # (table column, result field); empty: every other column


@dataclass(frozen=True)
class LookupTable:
    name: str
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    wildcard: frozenset[str]  # columns whose `*` is a wildcard
    caseless: bool

    def key_pattern(self, column: str, text: str) -> Pattern:
        return search_pattern(text) if column in self.wildcard else Pattern.literal(text)


def parse_stage(args: str) -> LookupStage | None:
    """The parts of a `| lookup` command's arguments, None when they are not that shape."""
    text = args
    while (option := _OPTION.match(text)) is not None:
        text = text[option.end():]
    words = text.split(None, 1)
    if len(words) != 2:
        return None
    name, rest = words
    found = re.search(r"\bOUTPUT(?:NEW)?\b", rest, re.I)
    head, tail = (rest[:found.start()], rest[found.end():]) if found else (rest, "")
    inputs = _pairs(head)
    outputs = _pairs(tail)
    return LookupStage(name, inputs, outputs) if inputs else None


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        found = _PAIR.match(text, position)
        if found is None or found.end() == position:
            return ()
        column = found.group(1).strip('"')
        pairs.append((column, (found.group(2) or column).strip('"')))
        position = found.end()
    return tuple(pairs)


def load(directory: Path | None, name: str) -> LookupTable | str:
    """The table `name` from an ESCU `lookups/` folder, or why it cannot be used."""
    if directory is None or not directory.is_dir():
        return "CSV not available"
    described = directory / f"{name}.yml"
    meta: dict[str, object] = {}
    if described.is_file():
        documents = load_documents(described.read_text(encoding="utf-8"), str(described))
        meta = documents[0] if documents and isinstance(documents[0], dict) else {}
    filename = str(meta.get("filename") or f"{name}.csv")
    path = directory / Path(filename).name  # a name, never a path out of the folder
    if not path.is_file():
        return "CSV not available"
    if path.stat().st_size > MAX_FILE_BYTES:
        return f"CSV larger than {MAX_FILE_BYTES} bytes"
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        rows = tuple(dict(row) for row in reader)
    except (UnicodeDecodeError, csv.Error) as err:
        return f"CSV cannot be read ({err})"
    if len(rows) > MAX_VALUES_PER_ITEM:
        return f"CSV has more than {MAX_VALUES_PER_ITEM} rows"
    wildcard = frozenset(f.strip() for found in _WILDCARD_FIELDS.finditer(str(meta.get("match_type") or ""))
                         for f in found.group(1).split(","))
    caseless = str(meta.get("case_sensitive_match", "false")).lower() != "true"
    return LookupTable(name, tuple(reader.fieldnames or ()), rows, wildcard, caseless)
