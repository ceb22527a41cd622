"""Shared fixtures. Tests that need ../shared (recorded events, corpora) skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
SHARED = Path(os.environ.get("SIGMA_WMI_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the calling test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material not available: {path}")
    return path


@pytest.fixture
def scrcons_rule_path() -> Path:
    return RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
