"""ruff and mypy stay clean, run the way a developer runs them from the project root."""

from __future__ import annotations

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


def test_mypy_clean() -> None:
    # Exactly what a newcomer runs from a checkout: `mypy` in the project root (pyproject.toml
    # names the files; sigma_wmi/backends links to backends/ as the installed package has it).
    result = subprocess.run([_tool("mypy"), "--cache-dir", "/dev/null"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 0 source files" not in result.stdout
