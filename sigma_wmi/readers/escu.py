"""Splunk ESCU / security_content analytics → model (SPL where-clause parsed into conditions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import Rule


def is_escu(doc: dict[str, Any]) -> bool:
    return "search" in doc and "name" in doc and "detection" not in doc


def read_escu(doc: dict[str, Any], text: str, path: str, macros_dir: Path | None = None) -> Rule:
    raise SigmaWmiError("ESCU analytics are not readable yet", Origin(path, 1, format="escu"), "unsupported")
