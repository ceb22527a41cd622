"""Reading rule files safely: size and encoding checks, fast YAML, line numbers on demand."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import yaml

from sigma_wmi.errors import Origin, SigmaWmiError

MAX_FILE_BYTES = 2 * 1024 * 1024  # real rules are a few KB; anything this large is a mistake
MAX_ALIASES = 100  # YAML anchors/aliases; more is an alias bomb, not a rule

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that keeps dates as text: an impossible date like 2020-13-45 is then a
    validation error with a line, not a crash inside the YAML constructor."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


def read_text(path: Path) -> str:
    """The file's text, or a `SigmaWmiError` naming what is wrong with it."""
    origin = Origin(str(path))
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SigmaWmiError(f"file is {size} bytes; rule files larger than {MAX_FILE_BYTES} are refused",
                                origin, "file-too-large")
        data = path.read_bytes()
    except OSError as err:
        raise SigmaWmiError(f"cannot read file: {err.strerror or err}", origin, "unreadable") from None
    if b"\x00" in data:
        raise SigmaWmiError("binary file (contains NUL bytes)", origin.at(data[: data.index(b'\x00')].count(b"\n") + 1),
                            "binary")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SigmaWmiError(f"not valid UTF-8 (byte 0x{data[err.start]:02x})", origin.at(line),
                            "encoding") from None
    return text


def load_documents(text: str, path: str) -> list[Any]:
    """All YAML documents in `text`, or a `SigmaWmiError` with the line of the syntax error."""
    origin = Origin(path)
    # An alias needs an anchor: only texts with both `&` and `*` are worth the event scan.
    if "&" in text and "*" in text and _alias_count(text) > MAX_ALIASES:
        raise SigmaWmiError(f"more than {MAX_ALIASES} YAML aliases (alias bomb?)", origin.at(1), "yaml-aliases")
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = err.problem or err.context or "invalid YAML"
        raise SigmaWmiError(f"YAML syntax error: {problem}", origin.at(line, column), "yaml-syntax") from None
    except yaml.YAMLError as err:
        raise SigmaWmiError(f"YAML error: {err}", origin, "yaml-syntax") from None
    except RecursionError:
        raise SigmaWmiError("YAML nesting too deep", origin, "yaml-depth") from None
    except (ValueError, TypeError, OverflowError) as err:  # constructor errors carry no mark
        raise SigmaWmiError(f"YAML value error: {err}", origin, "yaml-value") from None


def _alias_count(text: str) -> int:
    try:
        return sum(1 for event in yaml.parse(text, Loader=_Loader) if isinstance(event, yaml.AliasEvent))
    except yaml.YAMLError:
        return 0  # the real load reports the syntax error with its line


def locate(text: str, keys: tuple[str, ...]) -> int | None:
    """1-based line of the mapping key path `keys` in the first document, if present."""
    if len(keys) == 1:  # a top-level key: a text scan is enough and much cheaper than composing
        prefix = keys[0] + ":"
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith(prefix):
                return number
    return _locate_cached(text, keys)


def split_documents(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each YAML document, so errors in the second rule of a
    multi-document file name its own lines."""
    try:
        starts = [node.start_mark.line for node in yaml.compose_all(text, Loader=_Loader)]
    except yaml.YAMLError:
        return [(0, text)]
    lines = text.splitlines(keepends=True)
    bounds = [*starts[1:], len(lines)]
    pieces = []
    for start, end in zip(starts, bounds, strict=True):
        # a document's node starts after its `---`; keep the separator line out of the slice
        pieces.append((start, "".join(lines[start:end]).rsplit("\n---", 1)[0] + "\n"))
    return pieces


@functools.lru_cache(maxsize=64)
def _locate_cached(text: str, keys: tuple[str, ...]) -> int | None:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    except Exception:  # compose of multi-document text raises ComposerError (a YAMLError) or worse
        return None
    line: int | None = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return line
    return line
