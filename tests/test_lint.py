"""ruff and mypy stay clean. mypy runs on the installed layout (backends/ as sigma_wmi.backends)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return str(path)


def test_ruff_clean() -> None:
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "sigma_wmi", "backends", "tests", "bench"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean(tmp_path: Path) -> None:
    package = tmp_path / "sigma_wmi"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "sigma_wmi", package, ignore=ignore)
    shutil.copytree(REPO / "backends", package / "backends", ignore=ignore)
    result = subprocess.run(
        [_tool("mypy"), "-p", "sigma_wmi", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache")],
        cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
