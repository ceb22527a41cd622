"""The `escu` target's analytics through Splunk's contentctl: how many does it accept?

    python bench/escu_contentctl.py [RULES_DIR] [-v]

Converts RULES_DIR (default: SigmaHQ's windows/process_creation rules) with
`sigma-wmi convert -t escu -O search_format=tstats` (so exactly the rules that convert to a
CIM tstats search are written), then validates every written analytic with `contentctl
validate` in a skeleton app (tests/contentctl_check.py: contentctl from SIGMA_WMI_CONTENTCTL,
`.cc/bin/contentctl` or PATH). Prints converted / accepted; `-v` adds the most common errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DEFAULT = SHARED / "corpora" / "sigmahq" / "rules" / "windows" / "process_creation"
sys.path.insert(0, str(ROOT / "tests"))

from contentctl_check import contentctl, validate  # noqa: E402


def main(argv: list[str]) -> int:
    folder = Path(next((a for a in argv if not a.startswith("-")), DEFAULT))
    if contentctl() is None:
        print("contentctl not found (SIGMA_WMI_CONTENTCTL, .cc/bin/contentctl or PATH)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out, report = Path(tmp) / "out", Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "sigma_wmi", "convert", "-t", "escu", "-O", "search_format=tstats",
                        "-o", str(out), "--report", str(report), "--no-cache", str(folder)],
                       capture_output=True, check=False)
        results = json.loads(report.read_text(encoding="utf-8"))
        rules = results["rules"] if isinstance(results, dict) else results
        analytics = {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*/*.yml"))}
        errors = validate(analytics, SHARED / "corpora" / "escu", Path(tmp) / "cc")
    accepted = len(analytics) - len(errors)
    share = 100 * accepted / len(analytics) if analytics else 0.0
    print(f"rules={len(rules)} converted_to_tstats={len(analytics)} contentctl_accepted={accepted} ({share:.1f} %)")
    if "-v" in argv:
        for message, count in Counter(m.split(":")[0][:100] for ms in errors.values() for m in ms).most_common(10):
            print(f"    {count:5} {message}")
        for name, messages in sorted(errors.items())[:20]:
            print(f"  {name}: {messages[0][:160] if messages else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
