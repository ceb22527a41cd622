"""Finding backends: the `sigma_wmi.backends` entry-point group, built-ins included."""

from __future__ import annotations

import difflib
import functools
from importlib.metadata import EntryPoint, entry_points

from sigma_wmi.backends.base import Backend
from sigma_wmi.errors import SigmaWmiError

GROUP = "sigma_wmi.backends"


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


def target_names() -> list[str]:
    return list(_entry_points())


@functools.cache
def backend_class(name: str) -> type[Backend]:
    """The backend class registered for a target name; loaded on first use."""
    entries = _entry_points()
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SigmaWmiError(f"unknown target '{name}'{hint} (targets: {', '.join(entries)})", code="usage")
    entry = entries[name]
    try:
        cls = entry.load()
    except Exception as err:  # a broken plugin must not take the other targets down
        raise SigmaWmiError(f"target '{name}' ({entry.value}) failed to load: {err}", code="plugin") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise SigmaWmiError(f"target '{name}' ({entry.value}) is not a sigma_wmi Backend", code="plugin")
    return cls
