"""`sigma-wmi check` reports: text (one line per finding), JSON, JUnit XML (one testcase per
rule, one failure per finding) and SARIF 2.1.0 (code-scanning annotations)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sigma_wmi.check import Finding, RuleCheck, fails

FORMATS = ("text", "json", "junit", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def summary(rules: list[RuleCheck], fail_on: str) -> dict[str, int]:
    findings = [f for r in rules for f in r.findings]
    counts = Counter(f.severity for f in findings)
    return {"rules": len(rules), "findings": len(findings), "errors": counts["error"],
            "warnings": counts["warning"], "info": counts["info"],
            "failing": sum(fails(f, fail_on) for f in findings)}


def render(rules: list[RuleCheck], format: str, fail_on: str, version: str) -> str:
    return {"text": text_report, "json": json_report, "junit": junit_report, "sarif": sarif_report}[format](
        rules, fail_on, version)


def text_report(rules: list[RuleCheck], fail_on: str, version: str) -> str:
    lines = [str(f) for r in rules for f in r.findings]
    return "".join(line + "\n" for line in lines)


def json_report(rules: list[RuleCheck], fail_on: str, version: str) -> str:
    document = {"tool": {"name": "sigma-wmi", "version": version}, "fail_on": fail_on,
                "summary": summary(rules, fail_on), "rules": [r.to_json() for r in rules]}
    return _json(document)


def junit_report(rules: list[RuleCheck], fail_on: str, version: str) -> str:
    """One testcase per rule (classname: its file), one <failure> per finding that fails the
    run under `fail_on`; the others are listed in the testcase's <system-out>."""
    total = summary(rules, fail_on)
    suites = ET.Element("testsuites", name="sigma-wmi check", tests=str(len(rules)),
                        failures=str(sum(any(fails(f, fail_on) for f in r.findings) for r in rules)))
    suite = ET.SubElement(suites, "testsuite", name="sigma-wmi check", tests=str(total["rules"]),
                          failures=suites.get("failures", "0"), errors="0", skipped="0")
    for rule in rules:
        case = ET.SubElement(suite, "testcase", classname=rule.path,
                             name=rule.title or rule.id or Path(rule.path).name, file=rule.path,
                             line=str(rule.line or 1))
        quiet = []
        for finding in rule.findings:
            if fails(finding, fail_on):
                failure = ET.SubElement(case, "failure", type=finding.code, message=finding.message)
                failure.text = str(finding)
            else:
                quiet.append(str(finding))
        if quiet:
            ET.SubElement(case, "system-out").text = "\n".join(quiet)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def sarif_report(rules: list[RuleCheck], fail_on: str, version: str) -> str:
    """SARIF 2.1.0: a reporting descriptor per finding code, a result per finding located by
    a URI relative to the current directory (`%SRCROOT%`) where the file lies under it."""
    findings = [f for r in rules for f in r.findings]
    codes = sorted({f.code for f in findings})
    index = {code: n for n, code in enumerate(codes)}
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "sigma-wmi", "version": version,
            "rules": [{"id": code, "name": code, "shortDescription": {"text": _describe(code, findings)}}
                      for code in codes],
        }},
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri() + "/"}},
        "results": [_sarif_result(f, index[f.code]) for f in findings],
        "columnKind": "unicodeCodePoints",
    }
    return _json({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]})


def _sarif_result(finding: Finding, rule_index: int) -> dict[str, Any]:
    region: dict[str, int] = {"startLine": finding.line or 1}
    if finding.line and finding.column:
        region["startColumn"] = finding.column
    location: dict[str, Any] = {"physicalLocation": {"artifactLocation": _artifact(finding.path), "region": region}}
    result: dict[str, Any] = {"ruleId": finding.code, "ruleIndex": rule_index, "level": _SARIF_LEVEL[finding.severity],
                              "message": {"text": finding.message}, "locations": [location]}
    properties = {k: v for k, v in (("ruleId", finding.rule_id), ("target", finding.target)) if v}
    if properties:
        result["properties"] = {"sigma": properties}
    return result


def _artifact(path: str) -> dict[str, str]:
    absolute = Path(path).resolve() if not path.startswith("<") else None
    if absolute is None:
        return {"uri": quote(path)}  # <stdin>: no file, but a URI reference all the same
    try:
        relative = absolute.relative_to(Path.cwd().resolve())
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": quote(relative.as_posix()), "uriBaseId": "%SRCROOT%"}


def _describe(code: str, findings: list[Finding]) -> str:
    example = next(f for f in findings if f.code == code)
    return f"{code.replace('-', ' ')} (e.g. {example.message})"[:1000]


def _json(document: dict[str, Any]) -> str:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # A file name that was not UTF-8 holds lone surrogates: written as JSON's \udcXX escapes.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def default_format(output: str | None) -> str:
    """The format an output file's name asks for (.json, .xml, .sarif), else text."""
    suffix = os.path.splitext(output or "")[1].lower()
    return {".json": "json", ".xml": "junit", ".sarif": "sarif"}.get(suffix, "text")
