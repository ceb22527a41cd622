"""Schema coverage of the Elastic targets: SigmaHQ rules × (eql, kql, lucene) × every profile.

    python bench/schema_coverage.py [RULES_DIR]   (default: ../shared/corpora/sigmahq/rules)

Per target and profile: exact (converted, no warning), partial (converted with a warning:
case-sensitive, dropped OR branches, ...) and failed, the failures by reason code (no-index,
field-not-in-schema, literal-type, ...) and the most common warnings of partial rules.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

from sigma_wmi.api import load_all
from sigma_wmi.backends.base import convert_safely
from sigma_wmi.backends.elastic_profile import profiles
from sigma_wmi.errors import Diagnostic, Level
from sigma_wmi.registry import backend_class

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "sigmahq" / "rules"
TARGETS = ("eql", "kql", "lucene")


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else DEFAULT
    rules, read_errors = load_all([root])
    print(f"{len(rules)} rules read from {root} ({len(read_errors)} reader failures, not counted)")
    print(f"{'target':7} {'profile':14} {'exact':>6} {'partial':>8} {'failed':>7}  failed by reason; top warnings")
    for target in TARGETS:
        for profile in profiles():
            backend = backend_class(target)(profile=profile)
            started = time.perf_counter()
            exact = partial = 0
            failed: collections.Counter[str] = collections.Counter()
            warnings: collections.Counter[str] = collections.Counter()
            for rule in rules:
                result = convert_safely(backend, rule)
                if isinstance(result, Diagnostic):
                    failed[result.code] += 1
                    continue
                codes = {d.code for d in result.diagnostics if d.level is Level.WARNING}
                if codes:
                    partial += 1
                    warnings.update(codes)
                else:
                    exact += 1
            took = time.perf_counter() - started
            reasons = ", ".join(f"{code} {n}" for code, n in failed.most_common())
            top = ", ".join(f"{code} {n}" for code, n in warnings.most_common(4))
            print(f"{target:7} {profile:14} {exact:6} {partial:8} {sum(failed.values()):7}  "
                  f"[{reasons}]; [{top}] ({took:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
