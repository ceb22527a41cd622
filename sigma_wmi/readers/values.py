"""Typed access to a rule document's descriptive keys: a value of the wrong shape is a
located `SigmaWmiError` (code `invalid-type`), never a traceback and never a silent change
(a string read as a list of its characters, a list printed as its Python repr)."""

from __future__ import annotations

import datetime
from typing import Any

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.readers.yamlsource import locate

_SCALARS = (str, int, float, datetime.date)


class DocumentValues:
    """The keys of one document (`text` is its source, for the line of a bad value)."""

    def __init__(self, doc: dict[str, Any], text: str, origin: Origin) -> None:
        self.doc = doc
        self.text = text
        self.origin = origin

    def error(self, keys: tuple[str, ...], expected: str, value: Any) -> SigmaWmiError:
        line = locate(self.text, keys) or locate(self.text, keys[:1]) or self.origin.line
        return SigmaWmiError(f"'{'.'.join(keys)}' must be {expected}, not {_shape(value)}", self.origin.at(line),
                             "invalid-type")

    def get(self, *keys: str) -> Any:
        value: Any = self.doc
        for index, key in enumerate(keys):
            if value is None:
                return None  # a missing parent: the key is absent
            if not isinstance(value, dict):
                raise self.error(keys[:index], "a mapping", value)
            value = value.get(key)
        return value

    def text_value(self, *keys: str) -> str | None:
        """A scalar as text (a number or date is written as it reads); None when absent or null."""
        value = self.get(*keys)
        if value is None or isinstance(value, bool):
            return None if value is None else str(value).lower()
        if isinstance(value, datetime.date):
            return value.isoformat()
        if isinstance(value, _SCALARS):
            return str(value)
        raise self.error(keys, "text", value)

    def text_list(self, *keys: str, single: bool = False) -> tuple[str, ...]:
        """A list of scalars as texts; `single`: one string is a list of one."""
        value = self.get(*keys)
        if value is None:
            return ()
        if single and isinstance(value, str):
            return (value,)
        if not isinstance(value, list):
            raise self.error(keys, "a list of texts", value)
        found = []
        for item in value:
            if item is None:
                continue
            if isinstance(item, bool) or not isinstance(item, _SCALARS):
                raise self.error(keys, "a list of texts", item)
            found.append(item.isoformat() if isinstance(item, datetime.date) else str(item))
        return tuple(found)

    def mapping(self, *keys: str) -> dict[str, Any]:
        value = self.get(*keys)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(keys, "a mapping", value)
        return value


def _shape(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return "a single text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
