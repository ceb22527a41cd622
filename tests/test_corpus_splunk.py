"""SigmaHQ corpus compatibility for the Sigma reader and the Splunk raw backend."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from conftest import shared_path
from spl_tokens import tokenize

from sigma_wmi.backends.splunk import SplunkBackend
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.readers import read_source, rule_files

WMI = re.compile(r"wmi|scrcons|eventconsumer|wmi_event", re.IGNORECASE)


def convert_corpus(format: str) -> tuple[int, list[tuple[Path, str]], list[Path], str]:
    files = rule_files([shared_path("corpora", "sigmahq", "rules")])
    backend = SplunkBackend()
    failures: list[tuple[Path, str]] = []
    wmi_files: list[Path] = []
    sample = ""
    for path in files:
        text = path.read_text(encoding="utf-8")
        if WMI.search(text.split("falsepositives:")[0]):
            wmi_files.append(path)
        source = read_source(path)
        if source.error:
            failures.append((path, f"read: {source.error.message}"))
            continue
        for rule in source.rules:
            try:
                query = backend.convert(rule, format).text
            except SigmaWmiError as err:
                failures.append((path, err.message))
                continue
            tokenize(query)  # every query must tokenize: balanced, terminated strings
            sample = sample or query
    return len(files), failures, wmi_files, sample


def test_sigmahq_to_splunk_raw() -> None:
    total, failures, wmi_files, _ = convert_corpus("raw")
    assert total >= 3000
    reasons = Counter(reason for _, reason in failures)
    assert len(failures) <= total * 0.01, f"{len(failures)} failures: {reasons.most_common(10)}"
    failed_wmi = [str(p) for p, _ in failures if p in set(wmi_files)]
    assert len(wmi_files) > 30 and not failed_wmi, failed_wmi
