"""`python -m sigma_wmi.generate [SHARED]`: rebuild the generated fact files in `sigma_wmi/data/`."""

from __future__ import annotations

import sys
from pathlib import Path

from sigma_wmi.generate import DATA, elastic, splunk

# Each has `build(shared, data) -> list[Path]`; splunk reads logsources.yaml from `data`.
GENERATORS = (elastic, splunk)


def main(argv: list[str]) -> int:
    shared = Path(argv[0]) if argv else Path(__file__).resolve().parents[2].parent / "shared"
    if not (shared / "schemas").is_dir():
        print(f"{shared}: no schemas/ folder; pass the shared folder as the argument", file=sys.stderr)
        return 2
    for module in GENERATORS:
        for path in module.build(shared, DATA):
            print(path.relative_to(DATA.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
