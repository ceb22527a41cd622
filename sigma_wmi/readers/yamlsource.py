"""Reading rule files safely: special files, size and encoding checks, strict and bounded
YAML (no duplicate or merge keys, no alias bombs), line numbers on demand."""

from __future__ import annotations

import functools
import math
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import yaml

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.limits import (
    MAX_ALIASES,
    MAX_FILE_BYTES,
    MAX_INT_BITS,
    MAX_YAML_CHARS,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)

__all__ = ["MAX_FILE_BYTES", "decode_rule_bytes", "display_path", "line_of", "load_documents", "load_nodes", "locate", "read_bounded",
           "read_inputs", "read_text", "regular_file_error", "split_documents", "yaml_lines"]

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
# What YAML (and so every line number it reports) counts as a line break.
_YAML_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_YAML_LINE_KEEPENDS = re.compile(r"[^\r\n\x85\u2028\u2029]*(?:\r\n|[\r\n\x85\u2028\u2029])|[^\r\n\x85\u2028\u2029]+$")


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML this project refuses (duplicate key, merge key, alias bomb, huge number)."""

    def __init__(self, problem: str, mark: Any, code: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.code = code


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that keeps dates as text (an impossible date like 2020-13-45 is then a
    validation error with a line, not a crash inside the YAML constructor) and refuses what
    would silently change or blow up a rule: a repeated key (YAML says keys are unique; PyYAML
    lets the last one win), a `<<` merge key (not YAML 1.2, and it hides where keys come from),
    a document whose aliases expand beyond the limits, numbers no target can hold."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }

    # Set per load: without aliases the document is a tree, and one cheap count bounds it. (The
    # count is safe on any graph too: it stops after MAX_YAML_NODES visits, a cycle at the depth
    # limit; the memoized walk only reports alias trouble more precisely.)
    may_share_nodes = True

    def construct_document(self, node: Any) -> Any:
        if self.may_share_nodes:
            _check_expanded_size(node, self)
            return super().construct_document(node)
        try:
            return _build_tree(node, self)
        finally:  # the state the library's construct_document resets
            self.constructed_objects: dict[Any, Any] = {}
            self.recursive_objects: dict[Any, Any] = {}
            self.state_generators: list[Any] = []
            self.deep_construct = False

    def construct_yaml_int(self, node: Any) -> int:
        try:
            value: int = super().construct_yaml_int(node)
        except ValueError as err:  # Python's 4300-digit int-string limit
            raise _Refused(f"bad int value: {err}", node.start_mark, "yaml-value") from None
        if abs(value) >= 2**MAX_INT_BITS:
            raise _Refused(f"integer out of range (more than {MAX_INT_BITS} bits)", node.start_mark, "yaml-value")
        return value

    def construct_yaml_float(self, node: Any) -> float:
        try:
            value: float = super().construct_yaml_float(node)
        except (ValueError, OverflowError) as err:
            raise _Refused(f"bad float value: {err}", node.start_mark, "yaml-value") from None
        if not math.isfinite(value):
            raise _Refused(f"number '{node.value}' is not finite", node.start_mark, "yaml-value")
        return value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def _check_keys(node: Any, loader: Any) -> None:
    """Refuse a mapping's merge key before it is flattened and a repeated key before the
    last one silently wins. Run inside the size walk, so each mapping is visited once; a
    plain-text key is compared as text, any other key as the object it constructs to."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        tag = key_node.tag
        if tag == _STR_TAG:
            key = key_node.value
        elif tag == _MERGE_TAG:
            raise _Refused("merge key '<<' is not allowed (write the keys out)", key_node.start_mark,
                           "yaml-merge-key")
        else:
            key = loader.construct_object(key_node, deep=True)  # memoized: built once
        try:  # Python's equality on purpose: `1`, `1.0` and `true` would be one dict key
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: the base constructor reports it with its line
        if first is None:
            seen[key] = key_node.start_mark.line + 1
        else:
            raise _Refused(f"duplicate key '{key}' (first at line {first}; YAML keys are unique)",
                           key_node.start_mark, "yaml-duplicate-key")


def _check_expanded_size(root: Any, loader: Any) -> None:
    """Refuse a document whose nodes, with every alias expanded, exceed the limits.

    Aliases share nodes, so the expanded size is summed over the node graph once per
    node (memoized): linear in the file, however large the expansion. The error names the
    innermost collection that is already too large (for nesting: the first one too deep)."""
    sizes: dict[int, tuple[int, int, int]] = {}  # expanded nodes, characters, height
    on_path: set[int] = set()
    stack: list[tuple[Any, bool, int]] = [(root, False, 1)]
    while stack:
        node, children_done, depth = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if not children_done:
            if depth > MAX_YAML_DEPTH:
                raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep", node.start_mark, "yaml-depth")
            if isinstance(node, yaml.MappingNode):
                _check_keys(node, loader)
            on_path.add(key)
            stack.append((node, True, depth))
            for child in children:
                if id(child) in on_path:
                    raise _Refused("recursive alias (a collection contains itself)", child.start_mark,
                                   "yaml-aliases")
                if id(child) not in sizes:
                    stack.append((child, False, depth + 1))
            continue
        on_path.discard(key)
        below = [sizes[id(c)] for c in children]
        nodes = 1 + sum(b[0] for b in below)
        chars = (len(node.value) if isinstance(node, yaml.ScalarNode) else 0) + sum(b[1] for b in below)
        height = 1 + max((b[2] for b in below), default=0)
        if nodes > MAX_YAML_NODES or chars > MAX_YAML_CHARS:
            raise _Refused(f"document expands to more than {MAX_YAML_NODES} nodes or {MAX_YAML_CHARS} characters "
                           "(alias bomb?)", node.start_mark, "yaml-too-large")
        if height > MAX_YAML_DEPTH:  # nesting built from aliases: each piece shallow, the whole deep
            raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep once aliases are expanded",
                           node.start_mark, "yaml-depth")
        sizes[key] = (nodes, chars, height)


def _build_tree(root: Any, loader: Any) -> Any:
    """The Python value of a document without aliases, built in one pass that also enforces
    what `_check_expanded_size` does for shared nodes: the node, character and depth limits
    (every node is visited once, so no memo and no cycle check; the error names the node where
    a limit is crossed) and the key checks. The plain tags a rule uses are built here, as the
    library's safe constructor builds them (our int and float checks included); any other tag
    goes to the library's constructor. (Shared nodes are built once per use, so on a graph the
    count is of expanded nodes and still stops at the limits.)"""
    counts = [0, 0]  # nodes, characters

    def too_large(node: Any) -> _Refused:
        return _Refused(f"document has more than {MAX_YAML_NODES} nodes or {MAX_YAML_CHARS} characters",
                        node.start_mark, "yaml-too-large")

    def build(node: Any, depth: int) -> Any:
        counts[0] += 1
        value = node.value
        tag = node.tag
        if isinstance(value, str):  # a scalar
            counts[1] += len(value)
            if counts[0] > MAX_YAML_NODES or counts[1] > MAX_YAML_CHARS:
                raise too_large(node)
            if tag == _STR_TAG:
                return value
            if tag == _NULL_TAG:
                return None
            if tag == _BOOL_TAG:
                return loader.bool_values[value.lower()]
            if tag == _INT_TAG:
                return loader.construct_yaml_int(node)
            if tag == _FLOAT_TAG:
                return loader.construct_yaml_float(node)
            return loader.construct_object(node, deep=True)
        if depth > MAX_YAML_DEPTH:
            raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep", node.start_mark, "yaml-depth")
        if counts[0] > MAX_YAML_NODES:
            raise too_large(node)
        if isinstance(node, yaml.SequenceNode):
            items = [build(child, depth + 1) for child in value]
            return items if tag == _SEQ_TAG else loader.construct_object(node, deep=True)
        _check_keys(node, loader)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in value:
            key = build(key_node, depth + 1)
            try:
                hash(key)
            except TypeError:  # reported as the library reports it
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found unhashable key", key_node.start_mark) from None
            mapping[key] = build(value_node, depth + 1)
        return mapping if tag == _MAP_TAG else loader.construct_object(node, deep=True)

    return build(root, 1)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printable text even when its name is not UTF-8 (bytes shown as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def regular_file_error(path: Path, origin: Origin | None = None) -> SigmaWmiError | None:
    """Why `path` must not be opened, or None for a regular file. Checked with `stat`
    before any open: opening a FIFO blocks, and a device (/dev/zero) never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return SigmaWmiError(f"cannot read file: {err.strerror or err}", origin or Origin(display_path(path)),
                             "unreadable")
    if stat.S_ISREG(mode):
        return None
    origin = origin or Origin(display_path(path))
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return SigmaWmiError(f"refused: {kind}, not a regular file", origin, "not-a-file")


def line_of(data: bytes | str, offset: int) -> int:
    """1-based line of `offset` in `data`, counting line breaks as YAML does (CR LF, CR, LF,
    NEL, U+2028, U+2029), so a file with CR line ends is not all on line 1."""
    head = data[:offset]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return len(_YAML_BREAK.findall(text)) + 1


def yaml_lines(text: str) -> list[str]:
    """`text` split where YAML sees line breaks (not `str.splitlines`, which also breaks at
    \\v, \\f, \\x1c-\\x1e: characters that are plain text inside a YAML value)."""
    return _YAML_BREAK.split(text)


def read_text(path: Path) -> str:
    """The file's text, or a `SigmaWmiError` naming what is wrong with it."""
    origin = Origin(display_path(path))
    refused = regular_file_error(path, origin)
    if refused is not None:
        raise refused
    try:
        data = read_bounded(path)
    except OSError as err:
        raise SigmaWmiError(f"cannot read file: {err.strerror or err}", origin, "unreadable") from None
    return decode_rule_bytes(data, origin)


def read_inputs(paths: Iterable[Path]) -> dict[Path, bytes]:
    """The bytes of every regular file among `paths` that can be read (`read_bounded`), for the
    scans that need the whole batch before conversion (filters, correlations across files).
    Special and unreadable files are left out: the reader reports them when it reads them."""
    raws: dict[Path, bytes] = {}
    for path in paths:
        if regular_file_error(path) is None:  # a FIFO or device is never opened here
            try:
                raws[path] = read_bounded(path)
            except OSError:
                continue
    return raws


def read_bounded(path: Path) -> bytes:
    """At most MAX_FILE_BYTES + 1 bytes of a regular file (one more than allowed tells the
    caller it is too large). The size is checked on what is read, not on stat: a file may
    grow between the two. The stat size only sizes the first read (a read of the whole
    limit would allocate the limit's bytes for every small rule file)."""
    with path.open("rb") as handle:
        expected = min(os.fstat(handle.fileno()).st_size, MAX_FILE_BYTES)
        data = handle.read(expected + 1)
        if len(data) > expected:
            data += handle.read(MAX_FILE_BYTES + 1 - len(data))
    return data


def decode_rule_bytes(data: bytes, origin: Origin) -> str:
    """Rule text from bytes read (at most MAX_FILE_BYTES + 1 of them), or a located
    `SigmaWmiError`: too large, binary, not UTF-8. Standard input is checked the same way."""
    if len(data) > MAX_FILE_BYTES:
        raise SigmaWmiError(f"file is larger than {MAX_FILE_BYTES} bytes; rule files this large are refused",
                            origin, "file-too-large")
    if b"\x00" in data:
        raise SigmaWmiError("binary file (contains NUL bytes)", origin.at(line_of(data, data.index(b"\x00"))),
                            "binary")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SigmaWmiError(f"not valid UTF-8 (byte 0x{data[err.start]:02x})", origin.at(line_of(data, err.start)),
                            "encoding") from None
    return text


def load_documents(text: str, path: str) -> list[Any]:
    """All YAML documents in `text`, or a `SigmaWmiError` with the line of the syntax error."""
    return [document for _, document in _load(text, path) if document is not None]


def load_nodes(text: str, path: str) -> list[tuple[yaml.Node, Any]]:
    """Like `load_documents` (same limits and errors), with each document's node tree: the
    marks of its keys and values give the line and column of every part (the linter's need)."""
    return [(node, document) for node, document in _load(text, path) if document is not None]


def _load(text: str, path: str) -> list[tuple[yaml.Node, Any]]:
    origin = Origin(path)
    # An alias needs an anchor: only texts with both `&` and `*` are worth the event scan.
    if "&" in text and "*" in text and _alias_count(text) > MAX_ALIASES:
        raise SigmaWmiError(f"more than {MAX_ALIASES} YAML aliases (alias bomb?)", origin.at(1), "yaml-aliases")
    if _nesting_bound(text) > _SAFE_COMPOSE_DEPTH:  # only then is the event scan worth its time
        line = _deep_line(text)
        if line is not None:
            raise SigmaWmiError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", origin.at(line), "yaml-depth")
    loader = _Loader(text)
    loader.may_share_nodes = "&" in text and "*" in text  # an alias `*a` needs an anchor `&a`
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            documents.append((node, loader.construct_document(node)))
        return documents
    except _Refused as err:
        where = origin.at(err.problem_mark.line + 1, err.problem_mark.column + 1) if err.problem_mark else origin
        raise SigmaWmiError(err.problem or "refused YAML", where, err.code) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = err.problem or err.context or "invalid YAML"
        if "nesting depth" in problem:  # PyYAML 6.0.4 and later bound nesting in the scanner
            raise SigmaWmiError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", origin.at(line, column),
                                "yaml-depth") from None
        raise SigmaWmiError(f"YAML syntax error: {problem}", origin.at(line, column), "yaml-syntax") from None
    except yaml.reader.ReaderError as err:  # a character YAML forbids; it has an offset, not a mark
        raise SigmaWmiError(f"YAML syntax error: control character U+{err.character:04X} is not allowed "
                            "(write it escaped in a double-quoted string)", origin.at(line_of(text, err.position)),
                            "yaml-syntax") from None
    except yaml.YAMLError as err:
        raise SigmaWmiError(f"YAML error: {' '.join(str(err).split())}", origin, "yaml-syntax") from None
    except RecursionError:
        raise SigmaWmiError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", origin.at(_deep_line(text)),
                            "yaml-depth") from None
    except (ValueError, TypeError, OverflowError) as err:  # constructor errors carry no mark
        raise SigmaWmiError(f"YAML value error: {err}", origin, "yaml-value") from None
    finally:
        loader.dispose()


# libyaml's composer recurses in C, unchecked: around 100,000 levels it overflows the stack and
# the process dies. Texts that could nest deeper than this are scanned first (parser events).
_SAFE_COMPOSE_DEPTH = 2000


def _nesting_bound(text: str) -> int:
    """An upper bound of a text's YAML nesting: every level needs a bracket, a `-` or `?`
    indicator, or a line of its own."""
    return sum(text.count(c) for c in "[{-?") + text.count("\n") + text.count("\r") + 1


def _deep_line(text: str) -> int | None:
    """The line where nesting first goes beyond the limit (parser events: no recursion)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH and event.start_mark is not None:
                    return int(event.start_mark.line) + 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as err:
        # PyYAML 6.0.4 and later bound nesting in the scanner itself: the same finding
        if err.problem_mark is not None and "nesting depth" in (err.problem or ""):
            return int(err.problem_mark.line) + 1
        return None
    except yaml.YAMLError:
        return None
    return None


def _alias_count(text: str) -> int:
    try:
        return sum(1 for event in yaml.parse(text, Loader=_Loader) if isinstance(event, yaml.AliasEvent))
    except yaml.YAMLError:
        return 0  # the real load reports the syntax error with its line


def locate(text: str, keys: tuple[str, ...]) -> int | None:
    """1-based line of the mapping key path `keys` in the first document, if present."""
    if len(keys) == 1:  # a top-level key: a text scan is enough and much cheaper than composing
        found = _top_level_key(keys[0]).search(text)
        if found:
            return line_of(text, found.end(1))
    return _locate_cached(text, keys)


@functools.lru_cache(maxsize=64)
def _top_level_key(key: str) -> re.Pattern[str]:
    """`key:` at the start of a line (a YAML line: after any of its line breaks)."""
    return re.compile(rf"(\A|[\r\n\x85\u2028\u2029]){re.escape(key)}:")


def split_documents(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each non-empty YAML document (the ones `load_documents` returns),
    so errors in the second rule of a multi-document file name its own lines."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError:
        return [(0, text)]
    starts = [node.start_mark.line for node in nodes]
    lines = _YAML_LINE_KEEPENDS.findall(text)
    bounds = [*starts[1:], len(lines)]
    pieces = []
    for node, start, end in zip(nodes, starts, bounds, strict=True):
        if node.tag == _NULL_TAG:  # an empty document: `load_documents` leaves it out too
            continue
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
