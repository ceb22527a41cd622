"""Kibana detection-rule NDJSON and Elastic detection-rules TOML for one compiled query.

ATT&CK names and URLs come from the offline table (`sigma_wmi.attack`); nothing here
touches the network. Output is deterministic: sorted JSON keys, fixed TOML order.
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from sigma_wmi.attack import Attack, Technique, attack
from sigma_wmi.errors import Diagnostic
from sigma_wmi.model import Rule, format_timespan

# Sigma level → (Kibana severity, risk score); Kibana's own defaults per severity.
SEVERITY = {
    "informational": ("low", 21),
    "low": ("low", 21),
    "medium": ("medium", 47),
    "high": ("high", 73),
    "critical": ("critical", 99),
}
# Sigma status → detection-rules maturity.
MATURITY = {"stable": "production", "test": "production", "experimental": "development",
            "deprecated": "deprecated", "unsupported": "development"}
_RULE_NAMESPACE = uuid.UUID("0c3a6d2e-5b0e-4f5e-9a54-6b1f4d6c2a11")  # for rules without an id


def threat(rule: Rule, diagnostics: list[Diagnostic], table: Attack | None = None) -> list[dict[str, Any]]:
    """Kibana's `threat` array: one entry per tactic, its techniques and sub-techniques."""
    table = table or attack()
    techniques: list[Technique] = []
    for ref in rule.techniques:
        found, note = table.resolve(ref.id)
        if note is not None and note not in diagnostics:
            diagnostics.append(note)
        if found is not None and found not in techniques:
            techniques.append(found)
    tactic_ids: list[str] = []
    for name in rule.tactics:
        tactic = table.tactic(name)
        if tactic and tactic.id not in tactic_ids:
            tactic_ids.append(tactic.id)
    if not tactic_ids:  # no tactic tag: every tactic of the tagged techniques
        for technique in techniques:
            tactic_ids.extend(t for t in technique.tactics if t not in tactic_ids)
    entries = []
    for tactic_id in tactic_ids:
        tactic = table.tactics[tactic_id]
        by_parent: dict[str, dict[str, Any]] = {}
        for technique in techniques:
            if tactic_id not in technique.tactics:
                continue
            parent = table.technique(technique.parent) if technique.parent else technique
            if parent is None:
                continue
            entry = by_parent.setdefault(parent.id, _ref(parent.id, parent.name, parent.url))
            if technique.parent:
                subs = entry.setdefault("subtechnique", [])
                sub = _ref(technique.id, technique.name, technique.url)
                if sub not in subs:
                    subs.append(sub)
        entries.append({
            "framework": "MITRE ATT&CK",
            "tactic": _ref(tactic.id, tactic.name, tactic.url),
            "technique": list(by_parent.values()),
        })
    return entries


def _ref(ident: str, name: str, url: str) -> dict[str, Any]:
    return {"id": ident, "name": name, "reference": url + "/"}


@dataclass
class RuleExport:
    """One rule with its compiled query, written as a Kibana rule or a TOML file."""

    rule: Rule
    query: str
    language: str  # eql, kuery, lucene
    rule_type: str  # eql, query
    index: Sequence[str]
    interval: str
    lookback: str
    diagnostics: list[Diagnostic]
    # A Kibana threshold rule: {"field": [...], "value": n, "cardinality": [...]}, and its window (s)
    threshold: dict[str, Any] | None = field(default=None)
    window: int | None = None

    def rule_id(self) -> str:
        return self.rule.id or derived_rule_id(self.rule)

    def kibana(self) -> dict[str, Any]:
        severity, risk = SEVERITY.get(self.rule.level or "", SEVERITY["medium"])
        body: dict[str, Any] = {
            "rule_id": self.rule_id(),
            "name": self.rule.title,
            "description": " ".join(self.rule.description.split()) or self.rule.title,
            "type": "threshold" if self.threshold else self.rule_type,
            "language": self.language,
            "query": self.query,
            "index": list(self.index),
            "severity": severity,
            "risk_score": risk,
            "interval": self.interval,
            "from": f"now-{_add_durations(self.interval, self.lookback)}",
            "enabled": False,
            "author": list(self.rule.authors),
            "references": list(self.rule.references),
            "false_positives": list(self.rule.falsepositives),
            "tags": list(self.rule.tags),
            "threat": threat(self.rule, self.diagnostics),
            "max_signals": 100,
            "version": 1,
        }
        if self.threshold:
            body["threshold"] = self.threshold
        if self.rule.temporal is not None:  # a sequence that began just before the look-back is still seen
            body["from"] = "now-" + _add_durations(_add_durations(self.interval, self.lookback),
                                                   format_timespan(self.rule.temporal.window))
        if self.threshold and self.window:  # each run counts the last window, runs one window apart
            body["interval"] = format_timespan(self.window)
            body["from"] = f"now-{format_timespan(self.window)}"
        return body

    def ndjson(self) -> str:
        return json.dumps(self.kibana(), sort_keys=True, ensure_ascii=False) + "\n"

    def toml(self) -> str:
        rule = self.kibana()
        dropped = ("enabled", "max_signals", "version") + (() if self.threshold and self.window else ("interval",))
        for key in dropped:  # the threshold's window decides how often the rule runs
            rule.pop(key)
        metadata = {
            "creation_date": _toml_date(self.rule.date) or "1970/01/01",
            "maturity": MATURITY.get(self.rule.status or "", "development"),
            "updated_date": _toml_date(self.rule.modified or self.rule.date) or "1970/01/01",
        }
        return toml_dumps({"metadata": metadata, "rule": rule})


def derived_rule_id(rule: Rule) -> str:
    """A stable `rule_id` for a rule without an id: from its title and file name (not the
    folder, so the id does not depend on where the tool runs). Rules equal in both are told
    apart by the batch (`export_with_identity`)."""
    file_name = PurePath(rule.origin.path).name if rule.origin else ""
    return str(uuid.uuid5(_RULE_NAMESPACE, f"{rule.title}\x00{file_name}"))


def export_identity(text: str, format: str) -> str:
    """The `rule_id` of one exported rule (NDJSON line or TOML document)."""
    document = json.loads(text) if format == "ndjson" else tomllib.loads(text)["rule"]
    return str(document["rule_id"])


def export_with_identity(text: str, format: str, identity: str, n: int) -> tuple[str, str]:
    """The exported rule under a new `rule_id` derived from `identity` and `n`, and that id."""
    new = str(uuid.uuid5(_RULE_NAMESPACE, f"{identity}\x00{n}"))
    if format == "ndjson":
        document = json.loads(text)
        document["rule_id"] = new
        return json.dumps(document, sort_keys=True, ensure_ascii=False) + "\n", new
    old_line, new_line = f"rule_id = {toml_string(identity)}\n", f"rule_id = {toml_string(new)}\n"
    if old_line not in text:
        raise ValueError("TOML export without its rule_id line")
    return text.replace(old_line, new_line, 1), new


def _toml_date(date: str | None) -> str | None:
    return date.replace("-", "/") if date else None


_DURATION = re.compile(r"(\d+)([smhd])\Z")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _add_durations(first: str, second: str) -> str:
    """`5m` + `1m` → `360s` (Kibana date math); other spellings are joined as written."""
    a, b = _DURATION.match(first), _DURATION.match(second)
    if not (a and b):
        return first
    total = int(a.group(1)) * _SECONDS[a.group(2)] + int(b.group(1)) * _SECONDS[b.group(2)]
    for unit in ("d", "h", "m"):
        if total % _SECONDS[unit] == 0:
            return f"{total // _SECONDS[unit]}{unit}"
    return f"{total}s"


# ---------------------------------------------------------------------------
# A small TOML writer: strings, numbers, booleans, arrays of scalars, tables and
# arrays of tables — what detection-rules files use.
# ---------------------------------------------------------------------------

_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def toml_string(text: str) -> str:
    """`text` as a TOML basic string."""
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)


def toml_dumps(document: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _toml_table(document, [], lines, header=None)
    return "\n".join(lines).strip("\n") + "\n"


def _toml_table(table: Mapping[str, Any], path: list[str], lines: list[str], header: str | None) -> None:
    if header is not None:
        lines.extend(["", header])
    nested = []
    for key, value in table.items():
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
            raise TypeError("an array mixing tables and values has no TOML form")
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in nested:
        sub = [*path, toml_key(key)]
        if isinstance(value, Mapping):
            _toml_table(value, sub, lines, "[" + ".".join(sub) + "]")
        else:
            for item in value:
                _toml_table(item, sub, lines, "[[" + ".".join(sub) + "]]")
