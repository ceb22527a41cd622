"""Scripts that build the packaged fact files in `sigma_wmi/data/` from upstream sources.

Run `python -m sigma_wmi.generate [SHARED]` (SHARED defaults to `../shared` beside the
project). Nothing here is imported at conversion time; no network is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a generated fact file: sorted keys, one stable layout, so regenerating with
    unchanged upstream input gives a byte-identical file (and a reviewable diff)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
