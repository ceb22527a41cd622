"""Writing results safely: names derived from rule ids stay inside the output folder and
unique on every file system, and every file appears whole or not at all (temporary file
+ rename). Temporary files carry the writer's process id, so a later run removes the
ones a killed run left behind and never mistakes them for outputs or rules."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sigma_wmi.errors import SigmaWmiError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows reserves for devices in every folder, whatever the extension (`con.txt`).
_DEVICE_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(10)),
                           *(f"LPT{n}" for n in range(10))})
TEMP_MARK = ".sigma-wmi-tmp-"  # in every temporary file name, and nowhere else
_TEMP_NAME = re.compile(r"^\..*" + re.escape(TEMP_MARK) + r"(\d+)-[^.]*\.tmp$")


def safe_name(*candidates: str, fallback: str = "rule") -> str:
    """A file-name stem from the first usable candidate (rule id, then file stem).

    Only letters, digits, `.`, `_` and `-` survive; leading dots are dropped so
    nothing becomes hidden or a `..` component. Empty results fall back to a hash.
    """
    for candidate in candidates:
        stem = _UNSAFE.sub("_", candidate or "").strip("._-")[:120]
        if stem:
            return stem
    return fallback + "-" + hashlib.sha256("|".join(candidates).encode()).hexdigest()[:12]


def is_device_name(name: str) -> bool:
    """Whether Windows reads `name` (with any extension) as a device, not a file."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _DEVICE_NAMES


class UniqueNames:
    """File names that stay distinct on case-insensitive file systems and are never a
    Windows device name. `claim` returns the name to use and why it differs, if it does."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def claim(self, stem: str, extension: str) -> tuple[str, str | None]:
        reason = None
        if is_device_name(stem):
            device, dot, rest = stem.partition(".")
            stem, reason = f"{device}_{dot}{rest}", f"'{device}' is a Windows device name"
        name, n = stem, 1
        while (name + extension).casefold() in self.used:
            n += 1
            name = f"{stem}-{n}"
        if n > 1:
            reason = f"another output of this batch is already named '{stem}{extension}'"
        self.used.add((name + extension).casefold())
        return name + extension, reason


def inside(root: Path, relative: str | Path) -> Path:
    """`root / relative` for a file, refusing anything that would resolve outside `root`
    (or to `root` itself), through `..` or a symbolic link."""
    base = root.resolve()
    target = (base / relative).resolve()
    if base not in target.parents:
        raise SigmaWmiError(f"refusing to write outside the output folder: {relative}", code="unsafe-path")
    return target


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs are for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def is_temporary(path: Path) -> bool:
    """Whether `path` is a temporary file of `write_atomic` (never an output or a rule)."""
    return _TEMP_NAME.match(path.name) is not None


def remove_stale_temporaries(root: Path, recursive: bool = True) -> list[Path]:
    """Delete temporary files (and staging folders) under `root`, or directly in it, whose
    writing process no longer runs (a killed run); a live concurrent writer keeps its own.
    Only names `write_atomic` and the docs build make are touched. Returns what was removed."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    pattern = f"*{TEMP_MARK}*.tmp"
    for path in sorted(root.rglob(pattern) if recursive else root.glob(pattern)):
        match = _TEMP_NAME.match(path.name)
        if match is None or path.is_symlink() or _process_alive(int(match.group(1))):
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # someone else removed it, or it cannot be: the next run tries again
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class WriteError:
    """An output that could not be written: its path and a one-line reason."""

    path: str
    message: str
    code: str


def describe_os_error(err: OSError) -> str:
    """An OS error as one line without the path (the caller puts the path first)."""
    reason = err.strerror or (errno.errorcode.get(err.errno or 0) if err.errno else None) or type(err).__name__
    return " ".join(str(reason).split())


def write_tree(root: Path, files: dict[str, str]) -> tuple[list[Path], list[WriteError]]:
    """Write several files under `root`. A file that would land outside `root` or cannot be
    written is reported, not raised, and the others are still written."""
    remove_stale_temporaries(root)
    written: list[Path] = []
    errors: list[WriteError] = []
    for relative, text in sorted(files.items()):
        try:
            path = inside(root, relative)
        except SigmaWmiError as err:
            errors.append(WriteError(str(root / relative), err.message, err.code))
            continue
        try:
            write_atomic(path, text)
        except OSError as err:
            errors.append(WriteError(str(root / relative), f"cannot write: {describe_os_error(err)}", "os-error"))
            continue
        written.append(path)
    return written, errors


def first_overlapping(place: Path, sources: list[Path]) -> Path | None:
    """The first of `sources` that `place` is, holds or lies in (after resolving links). A batch has thousands
    of files in a few folders: each folder is resolved once, and a file by its folder's
    resolved path unless it is itself a link."""
    target = os.path.realpath(place)
    folders: dict[str, str] = {}

    def resolved(source: Path) -> str:
        text = os.fspath(source)
        folder, name = os.path.split(text)
        if name in ("", ".", "..") or os.path.islink(text):
            return os.path.realpath(text)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder or ".")
        return os.path.join(folders[folder], name)

    for source in sources:
        real = resolved(source)
        if real == target or _inside(real, target) or _inside(target, real):
            return source
    return None


def _inside(path: str, folder: str) -> bool:
    """Whether `path` lies inside `folder` (both resolved, absolute)."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def first_not_directory(path: Path) -> Path | None:
    """The first existing ancestor of `path` (or `path` itself) that is not a directory."""
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None
