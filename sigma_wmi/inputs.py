"""What the command line reads: rule files under its paths less the `--exclude` globs, and
one rule file from standard input (`-`), labelled `<stdin>` in every diagnostic and report."""

from __future__ import annotations

import dataclasses
import sys
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.limits import MAX_FILE_BYTES
from sigma_wmi.output import is_temporary
from sigma_wmi.readers import ReadOptions, rule_files
from sigma_wmi.readers.sigma_correlation import rules_elsewhere
from sigma_wmi.readers.sigma_filters import MetaFilter, filters_among, without_repeats
from sigma_wmi.readers.yamlsource import decode_rule_bytes, read_inputs

STDIN = "-"
STDIN_LABEL = "<stdin>"


def is_stdin(path: Path | str) -> bool:
    return str(path) == STDIN


def excluded(relative: str, globs: tuple[str, ...]) -> bool:
    """Whether a path (relative to the input folder it was found under, `/`-separated)
    matches an exclude glob, as in .gitignore: a glob without `/` matches a file or folder
    name at any depth (`deprecated` leaves out every folder of that name), one with `/` the
    path from the input folder or one of its folders (`deprecated/*`); `*` crosses folders
    and a leading `**/` also matches at the top."""
    path = PurePosixPath(relative)
    folders = [p for p in path.parents if p.as_posix() != "."]
    names = [path.name, *(p.name for p in folders)]
    prefixes = [relative, *(p.as_posix() for p in folders)]
    for glob in globs:
        pattern = glob.replace("\\", "/").rstrip("/")
        patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        candidates = names if "/" not in pattern else prefixes
        if any(fnmatchcase(candidate, p) for candidate in candidates for p in patterns):
            return True
    return False


def input_files(paths: tuple[Path, ...], excludes: tuple[str, ...] = ()) -> list[Path]:
    """The rule files under `paths` (standard input left out), less those `excludes` match.
    A missing path raises `SigmaWmiError` (code `usage`)."""
    files = [p for p in paths if not is_stdin(p)]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise SigmaWmiError(f"no such file or directory: {', '.join(missing)}", code="usage")
    found: list[Path] = []
    for root in files:
        for file in rule_files([root]):
            if is_temporary(file):
                continue
            if excludes:
                relative = file.relative_to(root).as_posix() if root.is_dir() else file.as_posix()
                if excluded(relative, excludes):
                    continue
            found.append(file)
    return found


def stdin_count(paths: tuple[Path, ...]) -> int:
    return sum(is_stdin(p) for p in paths)


def read_stdin(stream: BinaryIO | None = None) -> str:
    """One rule file's text from standard input, bounded and checked like a file."""
    handle = stream if stream is not None else sys.stdin.buffer  # (click 8.5 deprecates get_binary_stream)
    try:
        data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise SigmaWmiError(f"cannot read standard input: {err.strerror or err}", Origin(STDIN_LABEL),
                            "unreadable") from None
    return decode_rule_bytes(data, Origin(STDIN_LABEL))


def with_batch_documents(options: ReadOptions, files: list[Path]) -> tuple[ReadOptions, tuple[MetaFilter, ...]]:
    """`options` completed with what the batch's files hold for other files: filter documents
    (applied as sigma-cli applies them; those `options` already has are not added twice) and
    the rules correlations name from other files. One read of every file serves both scans; a
    broken file is reported when the reader reads it. Also returns the filters found."""
    raws = read_inputs(files)
    found = without_repeats(options.filters, filters_among(files, raws)[0])
    options = dataclasses.replace(options, filters=options.filters + found)
    return dataclasses.replace(options, elsewhere=rules_elsewhere(files, options, raws)), found
