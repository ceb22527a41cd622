"""Writing results safely: names derived from rule ids stay inside the output folder,
and every file appears whole or not at all (temporary file + rename)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from sigma_wmi.errors import SigmaWmiError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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


def inside(root: Path, relative: str | Path) -> Path:
    """`root / relative` for a file, refusing anything that would resolve outside `root`
    (or to `root` itself)."""
    base = root.resolve()
    target = (base / relative).resolve()
    if base not in target.parents:
        raise SigmaWmiError(f"refusing to write outside the output folder: {relative}", code="unsafe-path")
    return target


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs are for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_tree(root: Path, files: dict[str, str]) -> list[Path]:
    """Write several files under `root`; every path is checked before anything is written."""
    targets = {inside(root, relative): text for relative, text in files.items()}
    for path, text in sorted(targets.items()):
        write_atomic(path, text)
    return sorted(targets)
