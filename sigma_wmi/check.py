"""`sigma-wmi check`: every problem in a rule file, each with its line, not just the first.

A file is read once into YAML nodes (the marks give line and column) and documents; each
document is linted on its own (metadata, ATT&CK tags, condition references, modifiers,
field names against the catalog), and each selected target's conversion diagnostics are
added. The reader stops at the first problem; its error is kept only where the linter found
no error in that document. Duplicate ids across the tree are found by `duplicate_ids`
once every file is checked. Findings travel as `RuleResult` diagnostics, so `batch.run`
spreads files over workers and caches them exactly as for `convert`.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sigma_wmi.attack import attack
from sigma_wmi.batch import Job, RuleResult, convert_source, convert_text
from sigma_wmi.catalog import Catalog
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import LogSource
from sigma_wmi.readers import ReadOptions, SourceFile
from sigma_wmi.readers.yamlsource import display_path, load_nodes, read_text

SEVERITIES = ("error", "warning", "info")
# --fail-on: which findings fail the run. `partial`: errors, and the warnings of a conversion
# (an output that does not mean exactly what the rule says); lint warnings do not.
FAIL_ON = ("error", "partial", "warning")

_DATE = re.compile(r"^(\d{4})([-/])(\d{2})\2(\d{2})$")
_TAG = re.compile(r"^[a-z0-9_-]+\.[a-z0-9._-]+$")
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")
_ATTACK_OTHER = re.compile(r"^[gs]\d{4}$")  # groups and software
_CONDITION_WORDS = frozenset({"and", "or", "not", "of", "all", "them", "any"})
_POSITION_MODIFIERS = frozenset({"contains", "startswith", "endswith"})
_REGEX_FLAGS = frozenset({"i", "m", "s", "ignorecase", "multiline", "dotall"})
_SIGMA_REQUIRED = ("title", "logsource", "detection")
_CORRELATION_REQUIRED = ("title", "correlation")
_FILTER_REQUIRED = ("title", "logsource", "filter")
_ESCU_REQUIRED = ("name", "id", "search")


@dataclass(frozen=True)
class Finding:
    """One problem: where, how bad, a stable code, and what to do."""

    path: str
    line: int | None
    column: int | None
    severity: str  # error | warning | info
    code: str
    message: str
    rule_id: str = ""
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "column": self.column, "severity": self.severity,
                "code": self.code, "message": self.message, "rule_id": self.rule_id, "target": self.target}

    def __str__(self) -> str:
        where = self.path + "".join(f":{n}" for n in (self.line, self.column if self.line else None) if n)
        target = f"[{self.target}] " if self.target else ""
        return f"{where}: {self.severity}: {target}{self.message} ({self.code})"


@dataclass
class RuleCheck:
    """The findings of one rule (one YAML document, or a file that gave none)."""

    path: str
    id: str = ""
    title: str = ""
    line: int | None = None  # the line of its `id` key, else where the document starts
    findings: list[Finding] = field(default_factory=list)
    start: int = 1  # where the document starts

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "id": self.id, "title": self.title, "line": self.line,
                "findings": [f.to_json() for f in self.findings]}


def query_targets() -> list[str]:
    """The targets that write a query (not a card, not the Sigma writer): `check`'s default."""
    from sigma_wmi.registry import backend_class, target_names

    names = []
    for name in target_names():
        try:
            cls = backend_class(name)
        except SigmaWmiError:
            continue
        if not cls.is_document and cls.echoes_source is None:
            names.append(name)
    return names


def fails(finding: Finding, fail_on: str) -> bool:
    """Whether a finding fails the run under `--fail-on fail_on`."""
    if finding.severity == "error":
        return True
    if fail_on == "warning":
        return finding.severity == "warning"
    return fail_on == "partial" and finding.severity == "warning" and finding.target is not None


# ---------------------------------------------------------------------------
# One file: lint + conversion, as RuleResults (what batch.run carries and caches)
# ---------------------------------------------------------------------------

def check_file(path: Path, jobs: list[Job], read_options: ReadOptions) -> list[RuleResult]:
    """Every finding of one file, one `RuleResult` per document. Never raises for bad input."""
    label = display_path(path)
    try:
        text = read_text(path)
    except SigmaWmiError as err:  # unreadable: the reader's error is the one finding
        return convert_source(SourceFile(path, error=err), label, jobs)
    return check_text(text, label, jobs, read_options)


def check_text(text: str, label: str, jobs: list[Job], read_options: ReadOptions) -> list[RuleResult]:
    """`check_file` for text read already (a file's, or standard input's labelled `label`).
    The YAML is loaded once, for the lint (nodes) and the conversion (documents)."""
    try:
        nodes: list[tuple[yaml.Node, Any]] | None = load_nodes(text, label)
    except SigmaWmiError:
        nodes = None  # the conversion's reader reports why, with its line
    documents = [document for _, document in nodes] if nodes is not None else None
    converted = convert_text(text, label, jobs, read_options, documents)
    return check_converted(label, nodes, converted)


def check_converted(name: str, nodes: list[tuple[yaml.Node, Any]] | None, converted: list[RuleResult]
                    ) -> list[RuleResult]:
    """Lint findings per document, each conversion diagnostic added to the document it is in."""
    if nodes is None or not nodes:
        for result in converted:
            result.outputs = {}
        return converted
    # The reader accepted every detection item when it converted the file: pySigma need not
    # be asked again, item by item (only a file it refused needs to know every reason).
    refused = any(r.status == "failed" and not any(d.get("target") for d in r.diagnostics) for r in converted)
    checks = [lint_document(name, node, doc, ask_pysigma=refused) for node, doc in nodes]
    starts = [c.start for c in checks]
    for result in converted:
        # conversion diagnostics belong to the document they point into
        for diagnostic in result.diagnostics:
            line = diagnostic.get("line") or result.line or 1
            index = max((i for i, start in enumerate(starts) if start <= line), default=0)
            check = checks[index]
            if diagnostic.get("target") is None and _explained(check):
                continue  # the reader's first error: the lint's errors say it, each on its own line
            check.findings.append(Finding(str(diagnostic.get("path") or name), diagnostic.get("line"), None,
                                          str(diagnostic["level"]), str(diagnostic["code"]),
                                          str(diagnostic["message"]), check.id,
                                          str(diagnostic["target"]) if diagnostic.get("target") else None))
    return [_as_result(c) for c in checks]


def _explained(check: RuleCheck) -> bool:
    """Whether the lint found errors in the document: the reader stops at the first of them
    (and may place it less well: a pySigma error names no line), so its error adds nothing.
    Without a lint error, the reader's error is the finding that says why the rule fails."""
    return any(f.severity == "error" for f in check.findings)


def _as_result(check: RuleCheck) -> RuleResult:
    unique = sorted(dict.fromkeys(check.findings), key=lambda f: (f.line or 0, f.column or 0))
    status = ("failed" if any(f.severity == "error" for f in unique)
              else "partial" if any(f.severity == "warning" for f in unique) else "ok")
    # as batch diagnostics (level, code, message, path, line, target) plus the column
    diagnostics = [{"level": f.severity, "code": f.code, "message": f.message, "path": f.path, "line": f.line,
                    "column": f.column, "target": f.target} for f in unique]
    return RuleResult(check.path, check.id, check.title, status, diagnostics, {}, line=check.line)


# Conversion findings that say the target environment has no place for the rule's events (Elastic
# Defend holds no cloud logs), not that the rule is wrong: with the default targets, which the user
# did not choose, they are information; a target named with -t keeps them as errors.
_ENVIRONMENT_GAPS = frozenset({"no-index"})


def rule_check(result: RuleResult, chosen_targets: bool = True) -> RuleCheck:
    """A batch result of `check_file` back as findings. `chosen_targets`: the user named the
    targets (-t); otherwise a target's environment gap is an info finding, not an error."""
    findings = []
    for d in result.diagnostics:
        severity, message = str(d["level"]), str(d["message"])
        if not chosen_targets and d.get("target") and d["code"] in _ENVIRONMENT_GAPS and severity == "error":
            severity, message = "info", f"{message} (a default target: -t {d['target']} reports it as an error)"
        findings.append(Finding(str(d.get("path") or result.path), d.get("line"), d.get("column"), severity,
                                str(d["code"]), message, result.id, d.get("target")))
    return RuleCheck(result.path, result.id, result.title, result.line, findings)


# ---------------------------------------------------------------------------
# Duplicate ids across the tree
# ---------------------------------------------------------------------------

class DuplicateIds:
    """The second and later rules with an id an earlier rule in the run already has."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, int | None]] = {}

    def check(self, rule: RuleCheck) -> None:
        key = rule.id.strip().lower()
        if not key:
            return
        line = rule.line
        if key not in self.first:
            self.first[key] = (rule.path, line)
            return
        path, first_line = self.first[key]
        where = f"{path}:{first_line}" if first_line else path
        rule.findings.append(Finding(rule.path, line, None, "error", "duplicate-id",
                                     f"id {rule.id} is already used by {where}", rule.id))


# ---------------------------------------------------------------------------
# Linting one document
# ---------------------------------------------------------------------------

class _Doc:
    """A document's values and the marks of its nodes."""

    def __init__(self, path: str, node: yaml.Node, doc: Any, ask_pysigma: bool) -> None:
        self.path = path
        self.node = node
        self.doc = doc
        self.ask_pysigma = ask_pysigma
        start = node.start_mark.line + 1
        self.check = RuleCheck(path, line=start, start=start)

    def add(self, node: yaml.Node | None, severity: str, code: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else self.check.line
        column = node.start_mark.column + 1 if node is not None else None
        self.check.findings.append(Finding(self.path, line, column, severity, code, message, self.check.id))


def _items(node: yaml.Node | None) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        yield from node.value


def _child(node: yaml.Node | None, key: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) of `key` in a mapping node."""
    for key_node, value_node in _items(node):
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None, None


def _sequence(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else [node] if node is not None else []


def lint_document(path: str, node: yaml.Node, doc: Any, ask_pysigma: bool = True) -> RuleCheck:
    """The findings of one YAML document that do not depend on other files. `ask_pysigma`:
    also apply each detection item's modifiers with pySigma (what the reader does)."""
    d = _Doc(path, node, doc, ask_pysigma)
    if not isinstance(doc, dict):
        d.add(node, "error", "not-a-rule", f"expected a mapping at the top level, got {type(doc).__name__}")
        return d.check
    from sigma_wmi.readers.escu import is_escu

    if is_escu(doc):
        _lint_escu(d)
        return d.check
    kind = "correlation" if "correlation" in doc else "filter" if "filter" in doc and "detection" not in doc \
        else "rule"
    title = doc.get("title")
    d.check.title = title if isinstance(title, str) else ""
    required = {"correlation": _CORRELATION_REQUIRED, "filter": _FILTER_REQUIRED}.get(kind, _SIGMA_REQUIRED)
    for key in required:
        if key not in doc:
            d.add(node, "error", "missing-key", f"missing required key '{key}'")
    _lint_id(d)
    _lint_related(d)
    _lint_dates(d)
    _lint_vocabulary(d)
    _lint_tags(d)
    if kind == "rule":
        _lint_detection(d, "detection", ())
    elif kind == "filter":
        _lint_detection(d, "filter", ("rules",))
    else:
        _lint_correlation(d)
    return d.check


def _lint_correlation(d: _Doc) -> None:
    """Every defect of a correlation's body at its own line (the reader stops at the first)."""
    from sigma_wmi.model import parse_timespan
    from sigma_wmi.readers.sigma_correlation import (
        CONDITIONS,
        CORRELATION_TYPES,
        _aliases,
        _temporal_conditions,
    )

    key_node, body_node = _child(d.node, "correlation")
    body = d.doc.get("correlation")
    if not isinstance(body, dict):
        d.add(body_node or key_node, "error", "invalid-correlation", "correlation must be a mapping")
        return

    def at(key: str, parent: yaml.Node | None = body_node) -> yaml.Node | None:
        found_key, found_value = _child(parent, key)
        return found_value or found_key or parent

    def failure(message: str, *keys: str) -> SigmaWmiError:  # the reader's checks, collected instead of raised
        return SigmaWmiError(message, None, keys[0] if keys else "")

    kind = body.get("type")
    temporal = kind in ("temporal", "temporal_ordered")
    if kind not in CORRELATION_TYPES:
        d.add(at("type"), "error", "unsupported-correlation",
              f"correlation type '{kind}' is not supported (types: {', '.join(CORRELATION_TYPES)})")
    rules = body.get("rules")
    if rules is None and temporal and isinstance(body.get("condition"), str):
        rules = body["condition"].split()[0::2]  # `a and b`: the condition names them
    rules = [rules] if isinstance(rules, str) else rules
    if not isinstance(rules, list) or not rules or not all(isinstance(r, str) for r in rules):
        d.add(at("rules"), "error", "invalid-correlation",
              "'rules' must name the correlated rules (a name or id, or a list of them)")
        rules = []
    timespan = body.get("timespan")
    if timespan is None:
        d.add(body_node, "error", "invalid-correlation", "correlation has no timespan (such as 30s, 5m, 1h, 1d)")
    elif parse_timespan(str(timespan)) is None:
        d.add(at("timespan"), "error", "invalid-correlation",
              f"timespan '{timespan}' is not a number with s, m, h, d or w")
    group_by = body.get("group-by")
    if group_by is not None and not isinstance(group_by, str) and not (
            isinstance(group_by, list) and all(isinstance(g, str) for g in group_by)):
        d.add(at("group-by"), "error", "invalid-correlation", "group-by must be a list of field names")
    try:
        _aliases(body.get("aliases"), rules, failure)
    except SigmaWmiError as err:
        d.add(at("aliases"), "error", "invalid-correlation", err.message)
    condition = body.get("condition")
    if temporal and rules:
        try:
            _temporal_conditions(condition, rules, failure)
        except SigmaWmiError as err:
            d.add(at("condition"), "error", "invalid-correlation", err.message)
    elif kind in CORRELATION_TYPES and not temporal:
        if not isinstance(condition, dict):
            d.add(at("condition"), "error", "invalid-correlation", "condition must be a mapping such as {gte: 10}")
        else:
            _, condition_node = _child(body_node, "condition")
            if not any(key in CONDITIONS for key in condition):
                d.add(condition_node, "error", "invalid-correlation", "condition has no comparison")
            for key, value in condition.items():
                if key not in ("field", "percentile") and (key not in CONDITIONS or type(value) is not int):
                    d.add(at(str(key), condition_node), "error", "invalid-correlation",
                          f"condition '{key}: {value}' is not gt, gte, lt, lte, eq or neq with an integer")
            if (kind != "event_count") != isinstance(condition.get("field"), str):
                d.add(condition_node, "error", "invalid-correlation",
                      f"{kind} needs condition.field" if kind != "event_count" else "event_count takes no "
                      "condition.field")
    for parent, where in ((d.node, d.doc), (body_node, body)):
        if "generate" in where and not isinstance(where["generate"], bool):
            d.add(at("generate", parent), "error", "invalid-correlation",
                  f"generate must be true or false, not {where['generate']!r}")


def _lint_id(d: _Doc) -> None:
    key_node, value_node = _child(d.node, "id")
    if key_node is None:
        d.add(d.node, "warning", "missing-key", "missing key 'id' (a UUID names the rule in every target)")
        return
    value = d.doc.get("id")
    d.check.id = str(value) if isinstance(value, (str, int)) else ""
    d.check.line = key_node.start_mark.line + 1
    if not _is_uuid(value):
        d.add(value_node, "error", "bad-uuid", f"id '{value}' is not a UUID (e.g. {uuid.UUID(int=0)})")


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _lint_related(d: _Doc) -> None:
    _, related = _child(d.node, "related")
    if related is None:
        return
    if not isinstance(related, yaml.SequenceNode):
        d.add(related, "error", "bad-related", "'related' must be a list of {id, type} mappings")
        return
    for item in related.value:
        _, id_node = _child(item, "id")
        if id_node is None or not isinstance(id_node, yaml.ScalarNode) or not _is_uuid(id_node.value):
            d.add(id_node or item, "error", "bad-uuid", "related rule id is not a UUID")


def _lint_dates(d: _Doc) -> None:
    dates: dict[str, datetime.date] = {}
    for key in ("date", "modified"):
        _, node = _child(d.node, key)
        if node is None:
            continue
        text = node.value if isinstance(node, yaml.ScalarNode) else ""
        match = _DATE.match(text)
        try:
            if not match:
                raise ValueError
            dates[key] = datetime.date(int(match[1]), int(match[3]), int(match[4]))
        except ValueError:
            d.add(node, "error", "bad-date", f"{key} '{text}' is not a date written YYYY-MM-DD (or YYYY/MM/DD)")
    if "date" in dates and "modified" in dates and dates["modified"] < dates["date"]:
        d.add(_child(d.node, "modified")[1], "warning", "modified-before-date",
              f"modified {dates['modified']} is before date {dates['date']}")


def _lint_vocabulary(d: _Doc) -> None:
    from sigma.rule import SigmaLevel, SigmaStatus

    for key, vocabulary in (("level", SigmaLevel), ("status", SigmaStatus)):
        _, node = _child(d.node, key)
        if node is None:
            continue
        words = [member.name.lower() for member in vocabulary]
        value = node.value if isinstance(node, yaml.ScalarNode) else None
        if value not in words:
            d.add(node, "error", f"bad-{key}", f"{key} '{value}' is not one of {', '.join(words)}")


def _lint_tags(d: _Doc) -> None:
    _, tags = _child(d.node, "tags")
    table = attack()
    for node in _sequence(tags):
        tag = node.value if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(tag, str) or not _TAG.match(tag):
            d.add(node, "warning", "bad-tag", f"tag '{tag}' is not namespace.name in lower case")
            continue
        namespace, _, name = tag.partition(".")
        if namespace != "attack":
            continue
        if _TECHNIQUE.match(name):
            _, problem = table.resolve(name)
            if problem is not None:
                d.add(node, problem.level.value, problem.code, problem.message)
        elif not _ATTACK_OTHER.match(name) and table.tactic(name) is None:
            d.add(node, "warning", "unknown-tactic",
                  f"'{name}' is not a tactic in the offline ATT&CK {table.version} table (newer ATT&CK releases "
                  "may have it: `python -m sigma_wmi.attack <STIX bundle>` updates the table)")


# ---------------------------------------------------------------------------
# Detection: condition references, modifiers, field names
# ---------------------------------------------------------------------------

def _lint_detection(d: _Doc, section: str, ignored: tuple[str, ...]) -> None:
    _, detection = _child(d.node, section)
    if detection is None:
        return
    if not isinstance(detection, yaml.MappingNode):
        d.add(detection, "error", "invalid-sigma", f"{section} must be a mapping of selections and a condition")
        return
    selections: dict[str, yaml.Node] = {}
    condition: yaml.Node | None = None
    data = d.doc.get(section)
    for key_node, value_node in detection.value:
        name = str(key_node.value)
        if name == "condition":
            condition = value_node
        elif name == "timeframe" or name in ignored:
            continue
        else:
            selections[name] = key_node
            _lint_selection(d, name, key_node, value_node,
                            data.get(key_node.value) if isinstance(data, dict) else None)
    if condition is None:
        d.add(detection, "error", "missing-condition", f"{section} has no 'condition'")
        return
    used: set[str] = set()
    for node in _sequence(condition):
        if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
            d.add(node, "error", "invalid-sigma", "condition must be a string or a list of strings")
            continue
        used |= _lint_condition(d, node, node.value, selections)
    for name, key_node in selections.items():
        if name not in used:
            d.add(key_node, "warning", "unused-selection", f"selection '{name}' is not used by the condition")


def _lint_condition(d: _Doc, node: yaml.ScalarNode, text: str, selections: dict[str, yaml.Node]) -> set[str]:
    """The selections a condition refers to; each reference to none is an error."""
    used: set[str] = set()
    expression, bar, _ = text.partition("|")
    if bar:
        d.add(node, "warning", "deprecated-aggregation",
              "aggregation in the condition ('| count() ...') is deprecated: write a correlation rule")
    for match in re.finditer(r"[^\s()]+", expression):
        word = match.group()
        if word.lower() in _CONDITION_WORDS or word.isdigit():
            continue
        if "*" in word:
            pattern = re.compile(re.escape(word).replace(r"\*", ".*") + r"\Z")
            hits = {name for name in selections if pattern.match(name)}
            if not hits:
                d.add(node, "error", "undefined-selection", f"condition pattern '{word}' matches no selection")
            used |= hits
        elif word in selections:
            used.add(word)
        else:
            d.add(node, "error", "undefined-selection", f"condition refers to '{word}', which is not defined")
    if re.search(r"\bthem\b", expression):
        used |= set(selections)
    return used


def _lint_selection(d: _Doc, name: str, key_node: yaml.Node, body: yaml.Node, data: Any) -> None:
    if isinstance(body, yaml.SequenceNode) and body.value and all(isinstance(v, yaml.ScalarNode)
                                                                  for v in body.value):
        return  # keywords
    # (node, value) of each mapping: the node for lines, the value for pySigma
    maps = [(body, data)] if isinstance(body, yaml.MappingNode) else \
        [(item, value) for item, value in zip(body.value, data, strict=False) if isinstance(item, yaml.MappingNode)] \
        if isinstance(body, yaml.SequenceNode) and isinstance(data, list) else []
    if not maps:
        d.add(key_node, "error", "invalid-sigma", f"selection '{name}' is empty or not a mapping or list")
        return
    for mapping, values in maps:
        for item_key, item_value in mapping.value:
            _lint_item(d, item_key, item_value, values.get(item_key.value) if isinstance(values, dict) else None)


def _lint_item(d: _Doc, key_node: yaml.Node, value_node: yaml.Node, value: Any) -> None:
    from sigma.exceptions import SigmaError
    from sigma.modifiers import modifier_mapping
    from sigma.rule import SigmaDetectionItem

    key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
    field_name, *modifiers = key.split("|")
    unknown = [m for m in modifiers if m not in modifier_mapping]
    for modifier in unknown:
        d.add(key_node, "error", "unknown-modifier", f"unknown modifier '{modifier}' in '{key}'")
    if not unknown:
        combination = _bad_combination(modifiers, value_node)
        if combination:
            d.add(key_node, *combination)
        elif d.ask_pysigma:
            try:  # pySigma applies the chain: a value the modifiers cannot take is found here
                SigmaDetectionItem.from_mapping(key or None, value)
            except SigmaError as err:
                d.add(key_node, "error", "bad-modifier", f"'{key}': {str(err).split(' in /')[0]}")
            except Exception as err:  # pySigma is not hardened against every shape
                d.add(key_node, "error", "bad-modifier", f"'{key}': {type(err).__name__}: {err}")
    if field_name:
        _lint_field(d, key_node, field_name)


def _bad_combination(modifiers: list[str], value: yaml.Node) -> tuple[str, str, str] | None:
    """A modifier chain pySigma accepts but that cannot mean what it says."""
    positions = [m for m in modifiers if m in _POSITION_MODIFIERS]
    if len(positions) > 1:
        return "error", "bad-modifier-combination", f"'{'|'.join(positions)}': a value has one position " \
                                                    "(contains, startswith or endswith)"
    repeated = sorted({m for m in modifiers if modifiers.count(m) > 1})
    if repeated:
        return "warning", "bad-modifier-combination", f"modifier {', '.join(repeated)} is applied twice"
    if "re" in modifiers and (set(modifiers) - {"re"} - _REGEX_FLAGS):
        others = ", ".join(m for m in modifiers if m != "re" and m not in _REGEX_FLAGS)
        return "error", "bad-modifier-combination", f"'re' takes only the flags i, m, s, not {others}"
    if "base64offset" in modifiers and "contains" not in modifiers:
        return "warning", "bad-modifier-combination", "'base64offset' matches inside a value: add '|contains'"
    if "all" in modifiers and not (isinstance(value, yaml.SequenceNode) and len(value.value) > 1):
        return "warning", "bad-modifier-combination", "'all' on a single value changes nothing"
    return None


def _lint_field(d: _Doc, key_node: yaml.Node, field_name: str) -> None:
    cat = _catalog()
    logsource = _logsource(d.doc)
    if logsource is None or not cat.logsource_entry(logsource):
        return  # a log source the catalog does not describe: its fields cannot be judged
    canonical = cat.canonical(field_name, logsource)
    spec = cat.spec(canonical)
    if spec is None or not cat.applies(spec, logsource):
        where = "/".join(x for x in (logsource.product, logsource.category, logsource.service) if x)
        known = _recorded_by(field_name, logsource)
        if known:  # a real event field the catalog does not cover yet, not a typo
            d.add(key_node, "info", "uncatalogued-field", f"field '{field_name}' is not in the catalog for {where}, "
                                                          f"but {known} has it")
            return
        d.add(key_node, "warning", "unknown-field", f"field '{field_name}' is not in the catalog for {where} "
                                                    "nor in a target schema of its events (see `sigma-wmi list fields`)")


def _recorded_by(field_name: str, logsource: LogSource) -> str | None:
    """Which target schema of the log source's raw events has the field: the Splunk source of its
    Windows channel, or Winlogbeat's `winlog.event_data` names (Windows only); None if none."""
    from sigma_wmi.backends.splunk_data import channel_schema

    channel = _catalog().logsource(logsource).channel
    splunk = channel_schema(channel) if channel else None
    if splunk and field_name in _schema_fields(splunk):
        return f"the Splunk schema of {channel} events ({splunk})"
    if logsource.product == "windows" and f"winlog.event_data.{field_name}" in _schema_fields("winlogbeat"):
        return f"Winlogbeat's schema (winlog.event_data.{field_name})"
    return None


@cache
def _schema_fields(name: str) -> frozenset[str]:
    from sigma_wmi import schema

    return frozenset(schema.load(name))


def _logsource(doc: dict[str, Any]) -> LogSource | None:
    raw = doc.get("logsource")
    if not isinstance(raw, dict):
        return None
    values = {k: str(raw[k]) for k in ("product", "category", "service") if isinstance(raw.get(k), str)}
    return LogSource(**values) if values else None


def _catalog() -> Catalog:
    from sigma_wmi.catalog import catalog

    return catalog()


# ---------------------------------------------------------------------------
# ESCU analytics
# ---------------------------------------------------------------------------

def _lint_escu(d: _Doc) -> None:
    name = d.doc.get("name")
    d.check.title = name if isinstance(name, str) else ""
    for key in _ESCU_REQUIRED:
        if key not in d.doc:
            d.add(d.node, "error", "missing-key", f"missing required key '{key}'")
    if "id" in d.doc:
        _lint_id(d)
    _lint_dates(d)
    _, tags = _child(d.node, "tags")
    _, techniques = _child(tags, "mitre_attack_id")
    for node in _sequence(techniques):
        value = node.value if isinstance(node, yaml.ScalarNode) else ""
        _, problem = attack().resolve(str(value))
        if problem is not None:
            d.add(node, problem.level.value, problem.code, problem.message)
