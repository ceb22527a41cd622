"""Benchmark: build the documentation site for rules/ plus the SigmaHQ corpus.

    .venv/bin/python bench/docs_build.py [--corpus ../shared/corpora/sigmahq/rules] [--budget 12] [--max-mb 120]

Loads the rules (timed apart: that is the readers' work), then builds the whole site
with one worker per core and prints the build's wall and CPU time (this process and its
workers), the machine's load average (a shared machine slows the wall time, not the CPU
time), rule and page counts and the size on disk. Exits 1 when the build takes longer
than the budget or the site is larger than --max-mb.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from sigma_wmi.api import load_all
from sigma_wmi.docs.site import build_site

REPO = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpora" / "sigmahq" / "rules")
    parser.add_argument("--budget", type=float, default=12.0, help="seconds allowed for the build")
    parser.add_argument("--max-mb", type=float, default=120.0, help="megabytes (10^6 bytes) allowed on disk")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None, help="keep the site here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    rules, errors = load_all([REPO / "rules", args.corpus])
    loaded = time.perf_counter()
    cpu_before = cpu_seconds()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "site"
        report = build_site(rules, out, errors=errors, workers=args.jobs)
        built = time.perf_counter()
        cpu = cpu_seconds() - cpu_before
        files = [p for p in out.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        blocks = sum(-(-p.stat().st_size // 4096) * 4096 for p in files)  # what `du` counts, in 4 KiB blocks
    build = built - loaded
    megabytes = size / 1e6
    targets = sorted({d.target for d in report.warnings if d.code == "target-unavailable" and d.target})
    print(f"rules: {len(rules)} loaded, {len(errors)} files failed")
    print(f"pages: {len(report.pages)}, {len(files)} files, {megabytes:.1f} MB ({blocks / 1e6:.1f} MB in 4 KiB blocks)"
          f" = {megabytes / args.max_mb:.2f} x the {args.max_mb:.0f} MB budget")
    print(f"load:  {loaded - start:6.2f} s")
    print(f"build: {build:6.2f} s wall, {cpu:6.2f} s CPU with {args.jobs} workers"
          f" = {build / args.budget:.2f} x the {args.budget:.0f} s budget")
    print(f"load average while building: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    if targets:
        print(f"targets left out (failed to load): {', '.join(targets)}")
    return 0 if build <= args.budget and megabytes <= args.max_mb else 1


if __name__ == "__main__":
    raise SystemExit(main())
