"""ESCU search macros: find them, expand them textually, recognize the standard ones.

A macro call is `` `name` `` or `` `name(arg1, arg2)` ``; its definition (ESCU
`macros/<name>.yml`: `name`, `definition`, optional `arguments`) replaces the call,
with `$arg$` replaced by the argument. Expansion is recursive, detects cycles and
names unknown macros. The standard pipeline macros (summaries-only, dropping the
data-model prefix, time formatting, per-detection `*_filter` hooks) are not
conditions: they are left in place for the ESCU reader to record as metadata.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sigma_wmi.errors import Origin, SigmaWmiError

# Macros every ESCU search uses; they shape output, they select nothing.
STANDARD_MACROS = frozenset({"security_content_summariesonly", "drop_dm_object_name", "security_content_ctime"})
MAX_DEPTH = 20  # definitions nest two or three deep in practice

_CALL = re.compile(r"`\s*([A-Za-z0-9_\-.:]+)\s*(?:\((.*?)\))?\s*`", re.S)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def is_standard(name: str) -> bool:
    """A macro the reader keeps as metadata rather than expanding into conditions."""
    return name in STANDARD_MACROS or name.endswith("_filter")


@dataclass(frozen=True)
class Macro:
    name: str
    definition: str
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class MacroCall:
    """One macro call as written in a search (after expansion of its parents)."""

    name: str
    args: tuple[str, ...]


class MacroLibrary:
    """Macros from an ESCU `macros/` directory (loaded lazily, one file per macro)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def get(self, name: str, arity: int) -> Macro | None:
        if self.directory is None:
            return None
        return _load_macro(self.directory, name, arity)


def _load_macro(directory: Path, name: str, arity: int) -> Macro | None:
    candidates = [directory / f"{name}.yml", directory / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            macro = _read_macro(path)
            if macro is not None and len(macro.arguments) == arity:
                return macro
    # File names usually equal macro names; fall back to a scan for the rest.
    for macro in _all_macros(directory):
        if macro.name == name and len(macro.arguments) == arity:
            return macro
    return None


def _all_macros(directory: Path) -> tuple[Macro, ...]:
    return _all_macros_at(directory, directory.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _all_macros_at(directory: Path, _stamp: int) -> tuple[Macro, ...]:
    found = []
    for path in sorted(directory.glob("*.y*ml")):
        macro = _read_macro(path)
        if macro is not None:
            found.append(macro)
    return tuple(found)


def _read_macro(path: Path) -> Macro | None:
    # cached by modification stamp: a long-lived process (a server, a test run) sees edits
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_macro_at(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _read_macro_at(path: Path, _mtime: int, _size: int) -> Macro | None:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # a broken macro file is reported as an unknown macro where it is used
    if not isinstance(doc, dict) or "definition" not in doc:
        return None
    name = str(doc.get("name") or path.stem)
    args = tuple(str(a) for a in doc.get("arguments") or ())
    return Macro(name, str(doc["definition"]), args)


def find_macros_dir(rule_path: str | Path) -> Path | None:
    """The `macros/` directory of an ESCU checkout holding `rule_path`: next to the
    rule's directory or in any directory above it."""
    path = Path(rule_path).resolve()
    for parent in path.parents:
        candidate = parent / "macros"
        if candidate.is_dir():
            return candidate
    return None


def split_args(text: str) -> tuple[str, ...]:
    """Macro arguments: commas outside double quotes separate them."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    args.append("".join(current).strip())
    return tuple(args) if any(args) or len(args) > 1 else ()


@dataclass
class Expansion:
    """The expanded text and every macro call met on the way (standard ones included)."""

    text: str
    calls: list[MacroCall] = field(default_factory=list)


def expand(text: str, library: MacroLibrary, origin: Origin | None = None,
           keep: Callable[[str], bool] = is_standard) -> Expansion:
    """Replace every macro call in `text` by its definition, recursively.

    Calls for which `keep(name)` is true stay in the text untouched. Raises
    `SigmaWmiError` for an unknown macro (code `unknown-macro`), a wrong number of
    arguments, or a cycle (`macro-cycle`).
    """
    result = Expansion(text)
    result.text = _expand(text, library, origin, keep, (), result.calls)
    return result


def _expand(text: str, library: MacroLibrary, origin: Origin | None, keep: Callable[[str], bool],
            stack: tuple[str, ...], calls: list[MacroCall]) -> str:
    if len(stack) > MAX_DEPTH:
        raise SigmaWmiError(f"macros nest deeper than {MAX_DEPTH}: {' -> '.join(stack)}", origin, "macro-depth")

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        args = split_args(found.group(2)) if found.group(2) is not None else ()
        calls.append(MacroCall(name, args))
        if keep(name):
            return found.group(0)
        if name in stack:
            raise SigmaWmiError(f"macro cycle: {' -> '.join((*stack, name))}", origin, "macro-cycle")
        macro = library.get(name, len(args))
        if macro is None:
            where = f" in {library.directory}" if library.directory else " (no macros directory found)"
            arity = f" with {len(args)} argument(s)" if args else ""
            raise SigmaWmiError(f"unknown macro `{name}`{arity}{where}", origin, "unknown-macro")
        body = macro.definition
        for param, value in zip(macro.arguments, args, strict=True):
            body = body.replace(f"${param}$", value)
        return _expand(body, library, origin, keep, (*stack, name), calls)

    return _CALL.sub(replace, text)
