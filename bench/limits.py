"""Blow-up classes at growing sizes: time and peak memory stay bounded (issue #13).

    .venv/bin/python bench/limits.py [--max-seconds 2] [--max-mib 300] [--only CLASS]

Each case runs in its own process (so one case's memory is not another's); the parent reads
that process's peak RSS from `os.wait4` and the time of the operation from the child (input
built before the clock starts; interpreter start-up and imports excluded). The last size of
every class is the adversarial input from the issue or larger. Prints one row per case and
exits 1 when any case exceeds the time or memory bound or does not finish.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAD = "title: t\nlogsource: {product: windows, category: process_creation}\n"


# ---- the cases: each builds its input, then returns the operation to time ----

def alias_bomb(levels: int) -> Callable[[], object]:
    from sigma_wmi.readers import read_text_rules

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    text = HEAD + "detection:\n  sel:\n    Image: a\n  condition: sel\n" + "\n".join(lines) + "\n"
    return lambda: read_text_rules(text, "bomb.yml")


def macro_bomb(depth: int) -> Callable[[], object]:
    from sigma_wmi.readers.macros import MacroLibrary, expand

    folder = Path(tempfile.mkdtemp()) / "macros"
    folder.mkdir()
    (folder / "m0.yml").write_text("name: m0\ndefinition: Processes.process_name=x\n")
    for i in range(1, depth + 1):
        calls = " OR ".join([f"`m{i - 1}`"] * 10)
        (folder / f"m{i}.yml").write_text(json.dumps({"name": f"m{i}", "definition": calls}))
    return lambda: expand(f"`m{depth}`", MacroLibrary(folder))


def windash(dashes: int) -> Callable[[], object]:
    from sigma_wmi.readers import read_text_rules

    value = "".join(f" -{chr(97 + i % 26)}" for i in range(dashes))
    text = HEAD + f"detection:\n  sel:\n    CommandLine|windash|contains: '{value}'\n  condition: sel\n"
    return lambda: read_text_rules(text, "windash.yml")


def base64offset(values: int) -> Callable[[], object]:
    from sigma_wmi.readers import read_text_rules

    items = "".join(f"      - value{i}\n" for i in range(values))
    text = HEAD + f"detection:\n  sel:\n    CommandLine|base64offset|contains:\n{items}  condition: sel\n"
    return lambda: read_text_rules(text, "b64.yml")


def sigma_value_list(values: int) -> Callable[[], object]:
    from sigma_wmi.readers import read_text_rules

    per_item = 5000  # under the per-item limit: the rule total is what grows
    body = "".join(f"  s{j}:\n    CommandLine|contains:\n"
                   + "".join(f"      - v{j}_{i}\n" for i in range(min(per_item, values - j * per_item)))
                   for j in range((values + per_item - 1) // per_item))
    text = HEAD + "detection:\n" + body + "  condition: 1 of s*\n"
    return lambda: read_text_rules(text, "values.yml")


def spl_value_list(values: int) -> Callable[[], object]:
    from sigma_wmi.errors import Origin
    from sigma_wmi.readers.escu import import_search
    from sigma_wmi.readers.macros import MacroLibrary

    listed = ",".join(f'"v{i}.exe"' for i in range(values))
    search = f"| tstats count from datamodel=Endpoint.Processes where Processes.process_name IN ({listed}) by Processes.dest"
    return lambda: import_search(search, MacroLibrary(None), Origin("values.yml", 1))


def value_merging(values: int) -> Callable[[], object]:
    from sigma_wmi.model import Match, Op, Or, Pattern, normalize

    tree = Or(tuple(Match("CommandLine", Op.CONTAINS, (Pattern.literal(f"v{i}"),)) for i in range(values)))
    return lambda: normalize(tree)


def regex_backtracking(length: int) -> Callable[[], object]:
    from sigma_wmi.evaluate import evaluate
    from sigma_wmi.model import Match, Op, Regex

    match = Match("CommandLine", Op.REGEX, (Regex("(a+)+$"),), case_sensitive=True)
    event = {"CommandLine": "a" * length + "b"}
    return lambda: evaluate(match, event)


def deep_yaml(depth: int) -> Callable[[], object]:
    from sigma_wmi.readers import read_text_rules

    text = HEAD + "detection:\n  sel:\n    Image: " + "[" * depth + "]" * depth + "\n  condition: sel\n"
    return lambda: read_text_rules(text, "deep.yml")


def deep_spl(depth: int) -> Callable[[], object]:
    from sigma_wmi.errors import Origin
    from sigma_wmi.readers.escu import import_search
    from sigma_wmi.readers.macros import MacroLibrary

    where = "(" * depth + "Processes.process_name=a.exe" + ")" * depth
    search = f"| tstats count from datamodel=Endpoint.Processes where {where} by Processes.dest"
    return lambda: import_search(search, MacroLibrary(None), Origin("deep.yml", 1))


def big_event_line(mib: int) -> Callable[[], object]:
    from sigma_wmi.events import read_events

    path = Path(tempfile.mkdtemp()) / "events.jsonl"
    path.write_text('{"CommandLine": "' + "x" * (mib * 1024 * 1024) + '"}\n', encoding="utf-8")
    return lambda: list(read_events(path))


def deep_event(depth: int) -> Callable[[], object]:
    from sigma_wmi.events import read_events

    path = Path(tempfile.mkdtemp()) / "events.jsonl"
    path.write_text('{"a":' * depth + "1" + "}" * depth + "\n", encoding="utf-8")
    return lambda: list(read_events(path))


CLASSES: dict[str, tuple[Callable[[int], Callable[[], object]], list[int], str]] = {
    "alias bomb": (alias_bomb, [3, 5, 7, 9], "levels of 10 aliases"),
    "macro bomb": (macro_bomb, [2, 4, 6, 10, 20], "macro depth, 10 calls each"),
    "windash": (windash, [2, 5, 6, 10, 30], "dashes in one value"),
    "base64offset": (base64offset, [100, 1000, 3000, 5000], "values"),
    "Sigma value list": (sigma_value_list, [1000, 10_000, 20_000, 25_000, 150_000], "values in one rule"),
    "SPL value list": (spl_value_list, [1000, 5000, 10_000, 150_000], "values in one IN (...)"),
    "value merging": (value_merging, [1000, 10_000, 50_000, 200_000], "OR-ed values"),
    "regex backtracking": (regex_backtracking, [10, 30, 10_000, 1_000_000], "event value length"),
    "deep YAML": (deep_yaml, [10, 60, 100, 1000, 100_000], "nested lists"),
    "deep SPL": (deep_spl, [5, 30, 40, 1000, 100_000], "nested parentheses"),
    "big event line": (big_event_line, [0, 1, 2, 64], "MiB in one JSON line"),
    "deep event": (deep_event, [10, 60, 100, 100_000], "nested objects"),
}


def run_one(name: str, size: int) -> None:
    """Child side: build, time the operation, print one JSON line."""
    from sigma_wmi.errors import SigmaWmiError

    operation = CLASSES[name][0](size)
    started = time.perf_counter()
    try:
        operation()
        outcome = "ok"
    except SigmaWmiError as err:
        outcome = err.code
    print(json.dumps({"seconds": time.perf_counter() - started, "outcome": outcome}))


def measure(name: str, size: int, timeout: float) -> tuple[str, float | None, float]:
    """Parent side: (outcome, seconds or None when it did not finish, peak MiB)."""
    child = subprocess.Popen([sys.executable, __file__, "--one", name, str(size)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            return "timeout", None, usage.ru_maxrss / 1024
        time.sleep(0.02)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.stdout is not None and child.stderr is not None
    output, errors = child.stdout.read(), child.stderr.read()
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    if child.returncode != 0:
        return "crash: " + (errors.strip().splitlines() or ["?"])[-1][:60], None, peak
    result = json.loads(output.strip().splitlines()[-1])
    return str(result["outcome"]), float(result["seconds"]), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=2.0)
    parser.add_argument("--max-mib", type=float, default=300.0)
    parser.add_argument("--only", choices=sorted(CLASSES), help="run one class")
    parser.add_argument("--one", nargs=2, metavar=("CLASS", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]))
        return 0
    failed = 0
    print(f"{'class':20s} {'size':>10s}  {'unit':28s} {'outcome':18s} {'seconds':>8s} {'peak MiB':>9s}")
    for name, (_, sizes, unit) in CLASSES.items():
        if args.only and name != args.only:
            continue
        for size in sizes:
            outcome, seconds, peak = measure(name, size, timeout=max(30.0, 10 * args.max_seconds))
            bad = seconds is None or seconds > args.max_seconds or peak > args.max_mib
            failed += bad
            shown = f"{seconds:8.3f}" if seconds is not None else "       -"
            print(f"{name:20s} {size:>10d}  {unit:28s} {outcome:18s} {shown} {peak:9.1f}{'  OVER' if bad else ''}",
                  flush=True)
    print(f"bounds: {args.max_seconds} s, {args.max_mib} MiB per case; {failed} case(s) over")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
