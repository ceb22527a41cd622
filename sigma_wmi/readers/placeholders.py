"""`--placeholders FILE`: the values of Sigma `%name%` placeholders (the `expand` modifier).

The file is YAML mapping each placeholder name to a list of values (or one value), in
the form sigma-cli's `placeholders` pipelines take. Values are Sigma strings: `*` and `?` are
wildcards, `\\` escapes them. Later files override earlier ones name by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.readers.yamlsource import display_path, load_documents, locate, read_text


def load_placeholders(paths: Iterable[Path | str]) -> dict[str, tuple[str, ...]]:
    values: dict[str, tuple[str, ...]] = {}
    for raw in paths:
        path = Path(raw)
        shown = display_path(path)
        text = read_text(path)
        documents = load_documents(text, shown)
        if len(documents) != 1 or not isinstance(documents[0], dict):
            raise SigmaWmiError("a placeholders file is one YAML mapping: name -> list of values",
                                Origin(shown, 1), "invalid-placeholders")
        for name, items in documents[0].items():
            line = locate(text, (str(name),))
            items = [items] if isinstance(items, (str, int, float)) and not isinstance(items, bool) else items
            if not isinstance(name, str) or not name or "%" in name:
                raise SigmaWmiError(f"placeholder name {name!r} must be text without '%'", Origin(shown, line),
                                    "invalid-placeholders")
            if not isinstance(items, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                      for v in items):
                raise SigmaWmiError(f"placeholder '{name}' must map to a list of strings", Origin(shown, line),
                                    "invalid-placeholders")
            values[name] = tuple(str(v) for v in items)
    return values
