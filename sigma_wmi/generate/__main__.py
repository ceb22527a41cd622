"""`python -m sigma_wmi.generate [SHARED]`: rebuild the generated fact files in `sigma_wmi/data/`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from sigma_wmi.generate import DATA

# Each module has `build(shared, data) -> list[Path]`.
GENERATORS = ("sigma_wmi.generate.elastic", "sigma_wmi.generate.splunk")


def main(argv: list[str]) -> int:
    shared = Path(argv[0]) if argv else Path(__file__).resolve().parents[2].parent / "shared"
    if not (shared / "schemas").is_dir():
        print(f"{shared}: no schemas/ folder; pass the shared folder as the argument", file=sys.stderr)
        return 2
    status = 0
    for name in GENERATORS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            print(f"{name}: not present in this checkout; its files were not rebuilt", file=sys.stderr)
            status = 1
            continue
        for path in module.build(shared, DATA):
            print(path.relative_to(DATA.parent.parent))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
