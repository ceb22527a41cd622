"""SigmaHQ rules through the Splunk backend: how many convert exactly, partially, or fail.

    python bench/splunk_coverage.py [RULES_DIR] [-v]

Exact: no warning or error diagnostic (from the reader or the backend); partial: converted
with a warning; failed: no output. Printed per format (raw, tstats); `-v` adds the most common
diagnostic codes (rules per code; `info:` codes do not make a rule partial), so a change to the
Splunk target can be measured before and after.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from sigma_wmi.backends.base import convert_safely
from sigma_wmi.backends.splunk import SplunkBackend
from sigma_wmi.errors import Diagnostic, Level
from sigma_wmi.readers import read_source, rule_files

DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "sigmahq" / "rules"


def main(argv: list[str]) -> None:
    folder = Path(next((a for a in argv if not a.startswith("-")), DEFAULT))
    rules = [rule for path in rule_files([folder]) for rule in read_source(path).rules]
    backend = SplunkBackend()
    for format in ("raw", "tstats"):
        status: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        for rule in rules:
            out = convert_safely(backend, rule, format)
            if isinstance(out, Diagnostic):
                status["failed"] += 1
                codes[f"failed:{out.code}"] += 1
                continue
            noted = [d for d in [*rule.diagnostics, *out.diagnostics] if d.level is not Level.INFO]
            status["partial" if noted else "exact"] += 1
            codes.update(f"partial:{code}" for code in sorted({d.code for d in noted}))
            codes.update(f"info:{code}" for code in sorted({d.code for d in out.diagnostics
                                                            if d.level is Level.INFO}))
        print(f"{format:7} rules={len(rules)} exact={status['exact']} partial={status['partial']} "
              f"failed={status['failed']}")
        if "-v" in argv:
            for code, count in sorted(codes.items(), key=lambda item: (-item[1], item[0]))[:15]:
                print(f"    {count:5} {code}")


if __name__ == "__main__":
    main(sys.argv[1:])
