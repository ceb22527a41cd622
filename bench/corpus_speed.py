"""Corpus conversion speed against sigma-cli, measured in the same run.

    pip install -e '.[test,bench]'
    python bench/corpus_speed.py [RULES_DIR]     # default: ../shared/corpora/sigmahq/rules

Prints wall times and ratios (ours / sigma-cli single-target Splunk), each with the CPU
seconds of the run's whole process tree (user + system) and their ratio: on a loaded machine
the wall ratio of a parallel run swings with the load, the CPU ratio much less. Runs:
cold single target, cold four targets, warm rebuild after touching one rule,
library latency per rule (p50), peak RSS of the whole process tree, and whether
the parallel cached output is byte-identical to a serial uncached run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RULES = REPO.parent / "shared" / "corpora" / "sigmahq" / "rules"
BIN = Path(sys.executable).parent


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


@dataclass
class Run:
    seconds: float  # wall
    cpu: float  # user + system seconds of the command and every process it waited for
    peak_kib: int  # peak resident memory of the process tree
    returncode: int


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> Run:
    """Run a command, sampling the RSS of its process tree."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kib(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    process.communicate()
    done.set()
    sampler.join()
    return Run(time.perf_counter() - started, children_cpu() - cpu_before, peak, process.returncode)


def library_p50(rules: Path) -> float:
    from sigma_wmi.backends.splunk import SplunkBackend
    from sigma_wmi.errors import SigmaWmiError
    from sigma_wmi.readers import read_source, rule_files

    backend = SplunkBackend()
    latencies = []
    for path in rule_files([rules]):
        started = time.perf_counter()
        source = read_source(path)
        for rule in source.rules:
            with contextlib.suppress(SigmaWmiError):  # failures are timed too
                backend.convert(rule, "raw")
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rules", nargs="?", type=Path, default=DEFAULT_RULES)
    args = parser.parse_args()
    if not args.rules.is_dir():
        print(f"no rules directory at {args.rules}", file=sys.stderr)
        return 2
    sigma_cli = shutil.which("sigma", path=str(BIN)) or shutil.which("sigma")
    ours = str(BIN / "sigma-wmi")
    if not sigma_cli:
        print("sigma-cli not found: pip install -e '.[bench]'", file=sys.stderr)
        return 2

    # An installed package (sigma-cli's, ours from `pip install .`) is byte-compiled at install
    # time; an editable one where PYTHONDONTWRITEBYTECODE is set would compile its sources on
    # every run. Compile ours as installing does, so both start alike.
    import sigma_wmi

    for package in {Path(sigma_wmi.__file__).parent, (Path(sigma_wmi.__file__).parent / "backends").resolve()}:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=False,
                       stdout=subprocess.DEVNULL)

    work = Path(tempfile.mkdtemp(prefix="sigma-wmi-bench-"))
    try:
        corpus = work / "rules"
        shutil.copytree(args.rules, corpus)
        count = sum(1 for _ in corpus.rglob("*.yml"))
        print(f"corpus: {count} rules, {os.cpu_count()} cores, python {sys.version.split()[0]}")

        base = timed([sigma_cli, "convert", "-t", "splunk", "-p", "splunk_windows",
                      "--skip-unsupported", str(corpus), "-o", str(work / "sigmacli.spl")])
        print(f"{'sigma-cli splunk (single-threaded):':44s}{base.seconds:7.2f} s  cpu {base.cpu:6.2f} s  "
              f"peak RSS {base.peak_kib / 1024:6.0f} MiB  (exit {base.returncode})")

        rows: list[tuple[str, Run]] = []
        rows.append(("sigma-wmi cold splunk", timed([ours, "convert", "-q", "--no-cache", "-t", "splunk", str(corpus),
                                                     "-o", str(work / "ours.spl")])))
        rows.append(("sigma-wmi cold splunk+eql+kql+lucene",
                     timed([ours, "convert", "-q", "--no-cache", "-t", "splunk,eql,kql,lucene", str(corpus),
                            "-o", str(work / "four")])))

        cache = work / "cache"
        timed([ours, "convert", "-q", "--cache-dir", str(cache), "-t", "splunk", str(corpus),
               "-o", str(work / "warm.spl")])
        victim = sorted(corpus.rglob("*.yml"))[len(list(corpus.rglob("*.yml"))) // 2]
        victim.write_text(victim.read_text(encoding="utf-8").replace("title: ", "title: Touched ", 1),
                          encoding="utf-8")
        rows.append(("sigma-wmi warm rebuild, one rule touched",
                     timed([ours, "convert", "-q", "--cache-dir", str(cache), "-t", "splunk", str(corpus),
                            "-o", str(work / "warm.spl")])))

        # exit 1 means some rules failed (listed in the report), 2 means the run itself did not happen
        for label, run in rows:
            print(f"{label + ':':44s}{run.seconds:7.2f} s  cpu {run.cpu:6.2f} s  peak RSS {run.peak_kib / 1024:6.0f} MiB"
                  f"  ratio {run.seconds / base.seconds:5.2f}x  cpu ratio {run.cpu / base.cpu:5.2f}x"
                  f"  (exit {run.returncode})")

        serial = timed([ours, "convert", "-q", "--no-cache", "-j", "1", "-t", "splunk", str(corpus),
                        "-o", str(work / "serial.spl")])
        identical = (work / "serial.spl").read_bytes() == (work / "warm.spl").read_bytes()
        print(f"serial uncached run: {serial.seconds:.2f} s (cpu {serial.cpu:.2f} s); "
              f"parallel cached output byte-identical: {identical}")
        p50 = library_p50(corpus)
        print(f"library latency per rule, splunk raw (p50): {p50 * 1000:.2f} ms "
              f"(sigma-cli average per rule: {base.seconds / count * 1000:.2f} ms)")
        return 0 if identical and all(run.returncode in (0, 1) for _, run in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
