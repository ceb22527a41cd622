"""ESCU import coverage: Endpoint.Processes tstats detections of an ESCU checkout.

    python bench/escu_coverage.py [ESCU_DIR]   (default: ../shared/corpora/escu)

Prints exact / partial / failed counts, the where-clause rate, the top reasons a
detection is partial or failed, the tstats round-trip check and the import time.
"""

from __future__ import annotations

import collections
import re
import sys
import time
from pathlib import Path

from sigma_wmi.api import compile_rule
from sigma_wmi.errors import Level, SigmaWmiError
from sigma_wmi.model import Rule
from sigma_wmi.readers import ReadOptions, read_file
from sigma_wmi.readers.escu import is_partial, read_escu

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "escu"


def reason(message: str) -> str:
    """A failure message without its specifics, for counting (stage text, names, columns)."""
    found = re.match(r"stage `\| (\S+).*?` not imported: (.*)", message)
    if found:
        return f"| {found.group(1).strip('`[')}: {re.sub(r'`[^`]*`|.field .*', '...', found.group(2))}"
    return re.sub(r"'[^']*'|`[^`]*`|column \d+", "...", message)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else DEFAULT
    files = [p for p in sorted((root / "detections").rglob("*.yml"))
             if "datamodel=Endpoint.Processes" in p.read_text(encoding="utf-8")]
    options = ReadOptions(root / "macros")
    timings = []
    for _ in range(3):  # best of three: the first run also compiles the grammars and loads the catalog
        started = time.perf_counter()
        rules: list[Rule] = []
        failed: list[SigmaWmiError] = []
        for path in files:
            try:
                rules.extend(read_file(path, options))
            except SigmaWmiError as err:
                failed.append(err)
        timings.append(time.perf_counter() - started)
    elapsed = min(timings)

    partial = [r for r in rules if is_partial(r)]
    exact = len(rules) - len(partial)
    thresholds = sum(1 for r in rules if r.aggregation is not None)
    no_where = sum(1 for e in failed if e.code == "no-conditions")
    clauses = len(files) - no_where
    clauses_exact = sum(1 for r in rules if r.extras["spl"]["where_exact"])
    reasons: collections.Counter[str] = collections.Counter()
    for rule in partial:
        first = next(d for d in rule.diagnostics if d.level is Level.WARNING)
        reasons["partial " + reason(first.message)] += 1
    for err in failed:
        reasons[f"failed {err.code}: {reason(err.message)}"] += 1

    round_trip = 0
    for rule in rules:
        try:
            text = compile_rule(rule, "splunk", "tstats").text
        except SigmaWmiError as err:
            reasons[f"tstats output failed: {reason(err.message)}"] += 1
            continue
        again = read_escu({"name": rule.title, "search": text}, "", "<tstats>")
        round_trip += (again.detection, again.aggregation) == (rule.detection, rule.aggregation)

    total = len(files)
    print(f"ESCU Endpoint.Processes tstats detections: {total}  ({root})")
    print(f"  exact    {exact:4d}  {exact / total:6.1%}  (whole detection, post-filters included)")
    print(f"  partial  {len(partial):4d}  {len(partial) / total:6.1%}")
    print(f"  failed   {len(failed):4d}  {len(failed) / total:6.1%}")
    print(f"  where-clauses imported exactly: {clauses_exact}/{clauses} = {clauses_exact / clauses:.1%} "
          f"({no_where} searches have no where-clause)")
    print(f"  with a count threshold (| where count >= n and the like): {thresholds}")
    print(f"  tstats round trip equal: {round_trip}/{len(rules)}")
    print(f"  import time: {elapsed:.3f} s best of 3, first run {timings[0]:.3f} s "
          f"({elapsed / total * 1000:.2f} ms per detection)")
    print("top reasons:")
    for text, count in reasons.most_common(10):
        print(f"  {count:4d}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
