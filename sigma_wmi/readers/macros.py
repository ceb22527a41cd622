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

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.limits import MAX_MACRO_DEPTH, MAX_MACRO_EXPANSION_CHARS
from sigma_wmi.readers.yamlsource import display_path, load_documents, locate, read_text, regular_file_error

# Macros every ESCU search uses; they shape output, they select nothing.
STANDARD_MACROS = frozenset({"security_content_summariesonly", "drop_dm_object_name", "security_content_ctime"})

_CALL = re.compile(r"`\s*([A-Za-z0-9_\-.:]+)\s*(?:\((.*?)\))?\s*`", re.S)


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
    for path in (directory / f"{name}.yml", directory / f"{name}.yaml"):
        if path.exists() or path.is_symlink():
            macro = _read_macro(path)  # the macro's own file: any problem with it is the error
            if len(macro.arguments) == arity:
                return macro
    # File names usually equal macro names; fall back to a scan for the rest.
    for macro in _all_macros(directory):
        if macro.name == name and len(macro.arguments) == arity:
            return macro
    return None


def _all_macros(directory: Path) -> tuple[Macro, ...]:
    if not directory.is_dir():  # a wrong --macros path: every call is then an unknown macro, named as such
        return ()
    return _all_macros_at(directory, directory.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _all_macros_at(directory: Path, _stamp: int) -> tuple[Macro, ...]:
    found = []
    for path in sorted(directory.glob("*.y*ml")):
        try:
            found.append(_read_macro(path))
        except SigmaWmiError:
            continue  # another macro's broken file; a call to that macro reports it (by file name)
    return tuple(found)


def _read_macro(path: Path) -> Macro:
    """The macro defined in `path`; `SigmaWmiError` (with the macro file's line) when the file is
    not a regular file, too large, not strict YAML or not a macro definition."""
    refused = regular_file_error(path)  # before any open: a FIFO would block, a device never end
    if refused is not None:
        raise refused
    stat = path.stat()
    # cached by modification stamp: a long-lived process (a server, a test run) sees edits
    return _read_macro_at(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _read_macro_at(path: Path, _mtime: int, _size: int) -> Macro:
    shown = display_path(path)
    text = read_text(path)
    documents = load_documents(text, shown)
    doc = documents[0] if len(documents) == 1 else None
    if not isinstance(doc, dict) or not isinstance(doc.get("definition"), str):
        raise SigmaWmiError("not a macro: expected one mapping with a 'definition' string", Origin(shown, 1),
                            "invalid-macro")
    arguments = doc.get("arguments") or []
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise SigmaWmiError("macro 'arguments' must be a list of names",
                            Origin(shown, locate(text, ("arguments",)) or 1), "invalid-macro")
    name = doc.get("name")
    return Macro(name if isinstance(name, str) and name else path.stem, doc["definition"], tuple(arguments))


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
    # unknown macros left in place because each is a whole pipeline stage (`| `name``), when asked
    unknown_stages: list[str] = field(default_factory=list)


def expand(text: str, library: MacroLibrary, origin: Origin | None = None,
           keep: Callable[[str], bool] = is_standard, keep_unknown_stages: bool = False) -> Expansion:
    """Replace every macro call in `text` by its definition, recursively.

    Calls for which `keep(name)` is true stay in the text untouched, and so do backticks
    inside a double-quoted SPL string (Splunk expands no macro there). With
    `keep_unknown_stages`, an unknown macro of `text` itself that is a whole pipeline stage
    (after a `|`, before the next one) stays too and is listed in `unknown_stages`: the
    stages before it still mean what they say, so a caller can import them and name the
    stage it could not read. Otherwise (and anywhere else) an unknown macro raises
    `SigmaWmiError` for an unknown macro (code `unknown-macro`), a wrong number of
    arguments, a cycle (`macro-cycle`), nesting deeper than MAX_MACRO_DEPTH (`macro-depth`)
    or expansions producing more than MAX_MACRO_EXPANSION_CHARS (`macro-too-large`).
    """
    result = Expansion(text)
    expander = _Expander(library, origin, keep, result.calls)
    expander.unknown_stages = result.unknown_stages if keep_unknown_stages else None
    result.text = expander.run(text, ())
    return result


class _Expander:
    """One expansion, with one budget: every character a definition adds is counted, so a
    macro calling another ten times, twenty deep, stops at the limit instead of at 10**20."""

    def __init__(self, library: MacroLibrary, origin: Origin | None, keep: Callable[[str], bool],
                 calls: list[MacroCall]) -> None:
        self.library = library
        self.origin = origin
        self.keep = keep
        self.calls = calls
        self.spent = 0
        self.unknown_stages: list[str] | None = None  # where unknown whole-stage macros go, if kept

    def run(self, text: str, stack: tuple[str, ...]) -> str:
        if len(stack) > MAX_MACRO_DEPTH:
            raise SigmaWmiError(f"macros nest deeper than {MAX_MACRO_DEPTH}: {' -> '.join(stack)}", self.origin,
                                "macro-depth")
        pieces: list[str] = []
        position = 0
        for found in unquoted_calls(text):
            pieces.append(text[position:found.start()])
            if not stack and self.unknown_stages is not None and not self.keep(found.group(1)) \
                    and _is_stage(text, found) and self.library.get(found.group(1), len(_call_args(found))) is None:
                self.calls.append(MacroCall(found.group(1), _call_args(found)))
                self.unknown_stages.append(found.group(1))
                pieces.append(found.group(0))
            else:
                pieces.append(self.replace(found, stack))
            position = found.end()
        pieces.append(text[position:])
        return "".join(pieces)

    def replace(self, found: re.Match[str], stack: tuple[str, ...]) -> str:
        name = found.group(1)
        args = _call_args(found)
        self.calls.append(MacroCall(name, args))
        if self.keep(name):
            return found.group(0)
        if name in stack:
            raise SigmaWmiError(f"macro cycle: {' -> '.join((*stack, name))}", self.origin, "macro-cycle")
        macro = self.library.get(name, len(args))
        if macro is None:
            directory = self.library.directory
            where = (" (no macros directory found)" if directory is None else f" in {directory}" if directory.is_dir()
                     else f" (macros directory {directory} does not exist)")
            arity = f" with {len(args)} argument(s)" if args else ""
            raise SigmaWmiError(f"unknown macro `{name}`{arity}{where}", self.origin, "unknown-macro")
        body = macro.definition
        for param, value in zip(macro.arguments, args, strict=True):
            body = body.replace(f"${param}$", value)
        self.spent += len(body) + 1  # + 1: even an empty definition costs its call
        if self.spent > MAX_MACRO_EXPANSION_CHARS:
            raise SigmaWmiError(f"macro expansion exceeds {MAX_MACRO_EXPANSION_CHARS} characters "
                                f"(at `{name}`, {' -> '.join(stack) or 'the search'})", self.origin, "macro-too-large")
        return self.run(body, (*stack, name))


def _call_args(found: re.Match[str]) -> tuple[str, ...]:
    return split_args(found.group(2)) if found.group(2) is not None else ()


def _is_stage(text: str, found: re.Match[str]) -> bool:
    """Is the call a whole pipeline stage: a `|` before it, and the next `|` or the end after it?"""
    after = text[found.end():].lstrip()
    return text[:found.start()].rstrip().endswith("|") and (not after or after.startswith("|"))


def unquoted_calls(text: str) -> list[re.Match[str]]:
    """Macro calls in `text` outside double-quoted strings (`\\"` escapes a quote inside one)."""
    found: list[re.Match[str]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == '"':
            position = _string_end(text, position)
        elif char == "`" and (call := _CALL.match(text, position)) is not None:
            found.append(call)
            position = call.end()
        else:
            position += 1
    return found


def _string_end(text: str, start: int) -> int:
    """Index after the double-quoted string opening at `start` (the end of text if unclosed)."""
    position = start + 1
    while position < len(text):
        if text[position] == "\\":
            position += 2
        elif text[position] == '"':
            return position + 1
        else:
            position += 1
    return len(text)
