"""Validating `escu` outputs with Splunk's own `contentctl` (PyPI, 5.6), as an independent check.

contentctl pins its dependencies (pydantic < 2.10, setuptools 83, ...) against ours, so it lives
in its own environment and is run as a program: `SIGMA_WMI_CONTENTCTL` names the `contentctl`
executable, else `.cc/bin/contentctl` in the project (`python3.11 -m venv .cc &&
.cc/bin/pip install 'contentctl==5.6.*'`), else one on PATH; without any, tests skip.

An analytic is checked the way contentctl checks a security_content repository: a skeleton
app from `contentctl init`, the ESCU data sources and macros it may name (from the shared ESCU
corpus), a story for each analytic story it names (stories are not ours to check), the analytic
in `detections/endpoint/`, then `contentctl validate`. Errors are reported per file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from conftest import REPO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FILE = re.compile(r"File: (\S+)")
_ISSUE = re.compile(r"❌ (.*)")


def contentctl() -> str | None:
    """The contentctl executable to use, or None."""
    for candidate in (os.environ.get("SIGMA_WMI_CONTENTCTL"), str(REPO / ".cc" / "bin" / "contentctl"),
                      shutil.which("contentctl")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _story(name: str) -> dict[str, object]:
    return {
        "name": name, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "sigma-wmi-story:" + name)), "version": 1,
        "date": "2024-01-01", "author": "sigma-wmi test", "status": "production",
        "description": f"Placeholder story {name} for validating analytics.",
        "narrative": "Stories are not what this check is about.", "references": [],
        "tags": {"category": ["Adversary Tactics"], "product": ["Splunk Enterprise", "Splunk Enterprise Security",
                                                                  "Splunk Cloud"], "usecase": "Advanced Threat Detection"},
    }


def validate(analytics: Mapping[str, str], escu_corpus: Path, workdir: Path) -> dict[str, list[str]]:
    """contentctl's errors per analytic file name (`name.yml` → messages); files not in the result passed.
    Raises when contentctl fails without naming a file (the check itself is broken)."""
    program = contentctl()
    assert program is not None
    app = workdir / "app"
    app.mkdir(parents=True)
    subprocess.run([program, "init"], cwd=app, check=True, capture_output=True, timeout=300)
    for sample in (*app.glob("detections/*/*.yml"), *app.glob("stories/*.yml")):
        sample.unlink()
    for folder in ("data_sources", "macros"):
        for path in (escu_corpus / folder).glob("*.yml"):
            shutil.copyfile(path, app / folder / path.name)
    stories: set[str] = set()
    for file_name, text in analytics.items():
        (app / "detections" / "endpoint" / file_name).write_text(text, encoding="utf-8")
        stories.update(_names(yaml.safe_load(text).get("tags", {}).get("analytic_story", ())))
    for name in sorted(stories):  # contentctl names a file after its content, as it does analytics
        file_name = re.sub(r"[ \-./]", "_", name).lower() + ".yml"
        (app / "stories" / file_name).write_text(yaml.safe_dump(_story(name), sort_keys=False),
                                                             encoding="utf-8")
    result = subprocess.run([program, "validate"], cwd=app, capture_output=True, text=True, timeout=3000)
    output = _ANSI.sub("", result.stdout + result.stderr)
    errors: dict[str, list[str]] = {}
    current: str | None = None
    for line in output.splitlines():
        if found := _FILE.search(line):
            current = Path(found.group(1)).name
            errors[current] = []
        elif (issue := _ISSUE.search(line)) and current is not None:
            errors[current].append(issue.group(1).strip())
    if result.returncode != 0 and not errors:
        raise AssertionError(f"contentctl validate failed without naming a file:\n{output[-3000:]}")
    return errors


def _names(value: object) -> Iterable[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
