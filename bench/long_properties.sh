#!/usr/bin/env bash
# Long mode of the injection and fuzz properties: 100,000 examples per property and target
# (SPL, EQL, KQL, Lucene, Markdown cells, HTML pages; Sigma reader, SPL parser, ESCU reader;
# field names per target, savedsearches.conf through Splunk's conf parser, terminal text).
# Takes the better part of an hour on two cores. Prints hypothesis statistics per property.
set -euo pipefail
cd "$(dirname "$0")/.."
SIGMA_WMI_LONG=1 exec .venv/bin/python -m pytest -q -p no:randomly --hypothesis-show-statistics \
    tests/test_robustness.py tests/test_eql.py tests/test_kql.py tests/test_lucene.py tests/test_atc.py \
    tests/test_identifiers.py tests/test_batch_safety.py \
    -k "break_out or fuzz or round_trip or round_trips or survive or read_back or cannot_create or never_holds" "$@"
