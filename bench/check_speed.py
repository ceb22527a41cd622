"""`sigma-wmi check` against `sigma-wmi convert` on a corpus, same targets, same workers, no cache.

    python bench/check_speed.py [RULES_DIR] [--targets splunk,eql,kql,lucene] [--jobs N] [--runs 3]

Each command runs `--runs` times, alternating, cold (no cache); the best wall time of each is
compared. The issue's bound: check takes at most 1.5x the time of convert.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RULES = REPO.parent / "shared" / "corpora" / "sigmahq" / "rules"
BIN = Path(sys.executable).parent / "sigma-wmi"
BOUND = 1.5


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rules", nargs="?", type=Path, default=DEFAULT_RULES)
    parser.add_argument("--targets", default="splunk,eql,kql,lucene")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: the tool's)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.rules.is_dir():
        print(f"no rules at {args.rules}", file=sys.stderr)
        return 2
    common = ["--no-cache", "-q", "-t", args.targets] + (["-j", str(args.jobs)] if args.jobs else [])
    with tempfile.TemporaryDirectory() as tmp:
        convert = [str(BIN), "--no-config", "convert", *common, str(args.rules)]
        check = [str(BIN), "--no-config", "check", *common, "--format", "json", "-o", f"{tmp}/check.json",
                 str(args.rules)]
        times: dict[str, list[float]] = {"convert": [], "check": []}
        for _ in range(args.runs):
            times["convert"].append(timed(convert))
            times["check"].append(timed(check))
        findings = Path(f"{tmp}/check.json").read_text(encoding="utf-8").count('"code"')
    files = sum(1 for p in args.rules.rglob("*") if p.suffix in (".yml", ".yaml"))
    best = {name: min(values) for name, values in times.items()}
    ratio = best["check"] / best["convert"]
    print(f"{files} rule files, targets {args.targets}, {args.runs} runs each, best wall time:")
    print(f"  convert  {best['convert']:7.2f} s   (all: {', '.join(f'{t:.2f}' for t in times['convert'])})")
    print(f"  check    {best['check']:7.2f} s   (all: {', '.join(f'{t:.2f}' for t in times['check'])}; "
          f"{findings} findings)")
    print(f"  ratio check/convert = {ratio:.2f} (bound {BOUND})")
    return 0 if ratio <= BOUND else 1


if __name__ == "__main__":
    raise SystemExit(main())
