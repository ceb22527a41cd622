"""Benchmark: build the documentation site for rules/ plus the SigmaHQ corpus.

    .venv/bin/python bench/docs_build.py [--corpus ../shared/corpora/sigmahq/rules] [--budget 30]

Prints load and build times, rule and page counts, and the ratio to the budget;
exits 1 when the whole run (load + build) takes longer than the budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from sigma_wmi.api import load_all
from sigma_wmi.docs.site import build_site

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpora" / "sigmahq" / "rules")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds allowed for load + build")
    parser.add_argument("--out", type=Path, default=None, help="keep the site here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    rules, errors = load_all([REPO / "rules", args.corpus])
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "site"
        report = build_site(rules, out, errors=errors, workers=os.cpu_count() or 1)
        built = time.perf_counter()
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    total = built - start
    targets = sorted({d.target for d in report.warnings if d.code == "target-unavailable" and d.target})
    print(f"rules: {len(rules)} loaded, {len(errors)} files failed")
    print(f"pages: {len(report.pages)} ({size / 1e6:.1f} MB)")
    print(f"load:  {loaded - start:6.2f} s")
    print(f"build: {built - loaded:6.2f} s")
    print(f"total: {total:6.2f} s  = {total / args.budget:.2f} x the {args.budget:.0f} s budget")
    if targets:
        print(f"targets left out (failed to load): {', '.join(targets)}")
    return 0 if total <= args.budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
