"""Sigma correlation rules → a `Rule` with an `Aggregation` or a `Temporal`.

Every type pySigma 1.5 reads. `event_count`, `value_count`, `value_sum`, `value_avg`,
`value_percentile` and `value_median` aggregate events per group and time span: over one rule
the model holds that as the rule's detection plus thresholds, over several as thresholds over
`Step`s (each rule keeps its own detection and log source). `temporal` and `temporal_ordered`
wait for events of several rules (`Temporal` steps). A correlation is read together with the
rules it names: from the same file, or (as sigma-cli resolves them over the whole collection)
from the other input files (`rules_elsewhere`); correlations of correlations are refused with a
clear error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sigma_wmi.catalog import catalog
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    Op,
    Rule,
    Step,
    Temporal,
    Threshold,
    any_of,
    parse_timespan,
)
from sigma_wmi.readers.sigma import metadata_fields
from sigma_wmi.readers.values import DocumentValues
from sigma_wmi.readers.yamlsource import (
    display_path,
    load_documents,
    locate,
    read_inputs,
    read_text,
    split_documents,
)

if TYPE_CHECKING:
    from sigma_wmi.readers import ReadOptions

_TYPES = {"event_count": Aggregate.COUNT, "value_count": Aggregate.DISTINCT_COUNT, "value_sum": Aggregate.SUM,
          "value_avg": Aggregate.AVERAGE, "value_percentile": Aggregate.PERCENTILE, "value_median": Aggregate.MEDIAN}
# the Sigma writer uses the same table the other way round
TYPE_NAMES = {aggregate: name for name, aggregate in _TYPES.items()}
_TEMPORAL = {"temporal": False, "temporal_ordered": True}  # type -> ordered
CORRELATION_TYPES = (*_TYPES, *_TEMPORAL)
# `condition:` keys; the Sigma writer uses the same table the other way round
CONDITIONS = {"gt": Op.GT, "gte": Op.GTE, "lt": Op.LT, "lte": Op.LTE, "eq": Op.EQUALS, "neq": Op.NEQ}
# Metadata the correlation's own keys decide; the base rule fills in what it leaves out.
_OWN_KEYS = ("title", "id", "status", "description", "references", "author", "date", "modified", "tags",
             "falsepositives", "level")


def is_correlation(doc: Any) -> bool:
    return isinstance(doc, dict) and "correlation" in doc


@dataclass
class Correlation:
    """One parsed correlation document, before the rules it names are known."""

    doc: dict[str, Any]
    rule_refs: tuple[str, ...]  # the `name` or `id` of each rule, in order
    aggregate: Aggregate | None  # None for temporal types
    ordered: bool  # temporal_ordered
    field: str | None  # Sigma field name a value_* type aggregates
    percentile: int | None
    group_by: tuple[str, ...]  # Sigma field names or alias names
    aliases: dict[str, dict[str, str]]  # alias -> rule reference -> Sigma field
    window: int
    conditions: tuple[tuple[Op, int], ...]
    generate: bool  # the base rules also alert on their own
    origin: Origin
    metadata: dict[str, Any]  # `Rule` fields from the correlation's own descriptive keys
    text: str = ""  # the correlation document's source
    rules_at: int = 0  # lines from `origin` to the key that names the rules (for errors about them)

    @property
    def temporal(self) -> bool:
        return self.aggregate is None


def read_correlation(doc: dict[str, Any], text: str, path: str) -> Correlation:
    origin = Origin(path, locate(text, ("title",)) or 1, format="sigma")
    body = doc.get("correlation")

    def fail(message: str, *keys: str) -> SigmaWmiError:
        line = locate(text, ("correlation", *keys)) if keys else None
        return SigmaWmiError(message, origin.at(line or locate(text, ("correlation",)) or origin.line),
                             "unsupported-correlation" if "type" in keys else "invalid-correlation")

    if not isinstance(body, dict):
        raise fail("correlation must be a mapping")
    kind = body.get("type")
    if not isinstance(kind, str) or (kind not in _TYPES and kind not in _TEMPORAL):
        raise fail(f"correlation type '{kind}' is not supported (types: {', '.join([*_TYPES, *_TEMPORAL])})", "type")
    temporal = kind in _TEMPORAL
    condition = body.get("condition")
    rules = body.get("rules")
    if rules is None and temporal and isinstance(condition, str):
        rules = _condition_rules(condition, fail)  # pySigma: the extended condition names the rules
    rules = [rules] if isinstance(rules, str) else rules
    if not isinstance(rules, list) or not rules or not all(isinstance(r, str) for r in rules):
        raise fail("'rules' must name the correlated rules (a name or id, or a list of them)", "rules")
    if temporal and len(rules) < 2:
        raise fail(f"a {kind} correlation needs at least two rules", "rules")
    if len(set(rules)) != len(rules):
        raise fail("'rules' names a rule twice", "rules")
    if body.get("timespan") is None:
        raise fail("correlation has no timespan (such as 30s, 5m, 1h, 1d)")
    window = parse_timespan(str(body["timespan"]))
    if window is None:
        months = re.fullmatch(r"\s*\d+\s*[My]\s*", str(body["timespan"]))
        raise fail(f"timespan '{body['timespan']}' is not a number with s, m, h, d or w"
                   + (" (months and years have no fixed length: give days)" if months else ""), "timespan")
    group_by = body.get("group-by") or []
    group_by = [group_by] if isinstance(group_by, str) else group_by
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise fail("group-by must be a list of field names", "group-by")
    aliases = _aliases(body.get("aliases"), rules, fail)
    counted: str | None = None
    percentile: int | None = None
    conditions: list[tuple[Op, int]] = []
    if temporal:
        conditions = _temporal_conditions(condition, rules, fail)
        if kind == "temporal_ordered" and conditions[0][1] != len(rules):
            raise fail("temporal_ordered needs every rule, in order (a condition below the number of rules "
                       "has no order to keep)", "condition")
    else:
        if not isinstance(condition, dict):
            raise fail("condition must be a mapping such as {gte: 10}", "condition")
        counted = condition.get("field")
        if (kind != "event_count") != isinstance(counted, str):
            raise fail(f"{kind} needs condition.field (and event_count takes none)" if kind != "event_count"
                       else "event_count takes no condition.field", "condition")
        percentile = condition.get("percentile")
        if (kind == "value_percentile") != (percentile is not None) or (
                percentile is not None and (type(percentile) is not int or not 0 < percentile < 100)):
            raise fail("value_percentile needs condition.percentile, an integer from 1 to 99 (other types take "
                       "none)", "condition")
        for key, value in condition.items():
            if key in ("field", "percentile"):
                continue
            if key not in CONDITIONS or type(value) is not int:
                raise fail(f"condition '{key}: {value}' is not gt, gte, lt, lte, eq or neq with an integer", "condition")
            conditions.append((CONDITIONS[key], value))
        if not conditions:
            raise fail("condition has no comparison", "condition")
    # Sigma 2.1 puts `generate` at the top level, pySigma reads it under `correlation`: take either
    generate = doc.get("generate", body.get("generate", False))
    if not isinstance(generate, bool):
        raise SigmaWmiError(f"generate must be true or false, not {generate!r}",
                            origin.at(locate(text, ("generate",)) or locate(text, ("correlation", "generate"))
                                      or origin.line), "invalid-correlation")
    own = metadata_fields(DocumentValues({k: doc[k] for k in _OWN_KEYS if k in doc}, text, origin))
    named_at = locate(text, ("correlation", "rules")) or locate(text, ("correlation", "condition")) \
        or origin.line or 1
    return Correlation(doc, tuple(rules), None if temporal else _TYPES[kind], _TEMPORAL.get(kind, False), counted,
                       percentile, tuple(group_by), aliases, window, tuple(conditions), generate, origin, own, text,
                       named_at - (origin.line or 1))


_CONDITION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _condition_rules(condition: str, fail: Any) -> list[str]:
    """The rules an extended temporal condition names; only `a and b and ...` (every rule, as
    without a condition) is supported."""
    words = condition.split()
    names = words[0::2]
    if not words or any(w.lower() != "and" for w in words[1::2]) or len(words) % 2 == 0 \
            or not all(_CONDITION_NAME.fullmatch(n) and n.lower() not in ("and", "or", "not") for n in names):
        raise fail(f"the temporal condition '{condition}' is not supported: only 'a and b and ...' (every rule), "
                   "or {gte: n}", "condition")
    return names


def _temporal_conditions(condition: Any, rules: list[str], fail: Any) -> list[tuple[Op, int]]:
    """How many distinct rules must be seen: all by default (Sigma's `gte: <number of rules>`)."""
    if condition is None:
        return [(Op.GTE, len(rules))]
    if isinstance(condition, str):
        named = _condition_rules(condition, fail)
        if sorted(named) != sorted(rules):
            raise fail("the temporal condition must name exactly the rules under 'rules'", "condition")
        return [(Op.GTE, len(rules))]
    if not isinstance(condition, dict) or set(condition) - {"gte", "gt"} or len(condition) != 1:
        raise fail("a temporal condition is {gte: n} (at least n of the rules) or 'a and b ...'", "condition")
    (key, value), = condition.items()
    if type(value) is not int:
        raise fail(f"condition '{key}: {value}' needs an integer", "condition")
    needed = value + (key == "gt")
    if not 1 <= needed <= len(rules):
        raise fail(f"condition '{key}: {value}' asks for {needed} of {len(rules)} rules", "condition")
    return [(Op.GTE, needed)]


def _aliases(raw: Any, rules: list[str], fail: Any) -> dict[str, dict[str, str]]:
    """`aliases: {alias: {rule: field}}`: the field each rule groups by under one name."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise fail("aliases must map an alias to {rule: field}", "aliases")
    aliases: dict[str, dict[str, str]] = {}
    for alias, per_rule in raw.items():
        if not isinstance(per_rule, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in per_rule.items()):
            raise fail(f"alias '{alias}' must map rule names to field names", "aliases")
        unknown = sorted(set(per_rule) - set(rules))
        if unknown:
            raise fail(f"aliases: '{alias}' names rule {', '.join(unknown)}, which the correlation does not use",
                       "aliases")
        aliases[str(alias)] = dict(per_rule)
    return aliases


@dataclass(frozen=True)
class RulesElsewhere:
    """Rules that correlations name from other input files than their own, read with the run's
    filters and placeholders. `generate` says, per reference, whether the rule still alerts on
    its own (true if any correlation naming it says `generate: true`): its own file drops it
    otherwise, as it would drop a rule a correlation in the same file uses."""

    rules: Mapping[str, Rule] = field(default_factory=dict)  # rule `name` or `id` -> rule
    generate: Mapping[str, bool] = field(default_factory=dict)

    def fingerprint(self) -> list[Any]:
        """What the results of every file depend on (for the cache key)."""
        return sorted([ref, self.generate.get(ref, False), rule.origin.path, rule.source_text]
                      for ref, rule in self.rules.items())

    def hide_used(self, rules: list[Rule]) -> list[Rule]:
        """`rules` without those a correlation in another file uses without `generate: true`."""
        if not self.rules:
            return rules
        return [r for r in rules if not any(
            isinstance(ref, str) and ref in self.rules and not self.generate.get(ref, False)
            and self.rules[ref].origin.path == r.origin.path for ref in (r.extras.get("name"), r.id))]


_CORRELATION_LINE = re.compile(rb"^correlation\s*:", re.MULTILINE)


def rules_elsewhere(paths: Iterable[Path], options: ReadOptions,
                    raws: Mapping[Path, bytes] | None = None) -> RulesElsewhere:
    """The rules that correlations among `paths` name but their own file does not hold, found in
    the other files (only files with a top-level `correlation:` line are parsed first; only files
    whose text holds a wanted name or id are read). Broken files are skipped here: the reader
    reports them when it reads them. `raws`: the files' bytes when already read (`read_inputs`)."""
    from sigma_wmi.readers import read_file  # the package reader, which imports this module

    raws = read_inputs(paths) if raws is None else raws
    wanted: dict[str, bool] = {}  # reference -> generate
    for path, raw in raws.items():
        if b"correlation" not in raw or not _CORRELATION_LINE.search(raw):  # the substring test is the cheap reject
            continue
        try:
            text = read_text(path)
            documents = load_documents(text, display_path(path))
        except (OSError, SigmaWmiError):
            continue
        own = {d.get(key) for d in documents if isinstance(d, dict) and not is_correlation(d)
               for key in ("name", "id")}
        for doc, (_, piece) in zip(documents, split_documents(text), strict=False):
            if not is_correlation(doc):
                continue
            try:
                corr = read_correlation(doc, piece, display_path(path))
            except SigmaWmiError:
                continue
            for ref in corr.rule_refs:
                if ref not in own:
                    wanted[ref] = wanted.get(ref, False) or corr.generate
    found: dict[str, Rule] = {}
    for path, raw in raws.items():
        if not wanted or not any(ref.encode() in raw for ref in wanted if ref not in found):
            continue
        try:
            rules = read_file(path, options)
        except SigmaWmiError:
            continue
        for rule in rules:
            for name in (rule.extras.get("name"), rule.id):
                if isinstance(name, str) and name in wanted and name not in found and rule.aggregation is None \
                        and rule.temporal is None:
                    found[name] = rule
    return RulesElsewhere(found, {ref: wanted[ref] for ref in found})


def apply_correlations(rules: list[Rule], correlations: list[Correlation],
                       elsewhere: RulesElsewhere | None = None) -> list[Rule]:
    """Each correlation becomes a rule (its base rule with thresholds, or a temporal rule over its
    steps); rules a correlation uses are dropped (Sigma's default: a rule a correlation uses
    does not alert on its own unless `generate: true`). A name not in this file is looked up in
    `elsewhere` (the other input files)."""
    by_ref: dict[str, Rule] = dict(elsewhere.rules) if elsewhere else {}
    for rule in rules:
        for ref in (rule.extras.get("name"), rule.id):
            if isinstance(ref, str) and ref:
                by_ref[ref] = rule
    consumed: set[int] = set()
    kept: set[int] = set()  # a base rule alerts on its own if any correlation over it says so
    combined: list[Rule] = []
    for corr in correlations:
        used = []
        for ref in corr.rule_refs:
            base = by_ref.get(ref)
            if base is None:
                names = {c.doc.get("name") for c in correlations} | {c.metadata.get("id") for c in correlations}
                why = " (a correlation of correlations is not supported)" if ref in names else ""
                where = "neither in this file nor in the other input files" if elsewhere is not None \
                    else "not in this file"
                raise SigmaWmiError(f"the correlation refers to rule '{ref}', which is {where}{why}",
                                    corr.origin.at((corr.origin.line or 1) + corr.rules_at), "invalid-correlation")
            (kept if corr.generate else consumed).add(id(base))
            used.append(base)
        if corr.temporal:
            combined.append(_temporal_rule(corr, used))
        elif len(used) == 1:
            combined.append(_aggregated_rule(corr, used[0]))
        else:
            combined.append(_aggregated_rules(corr, used))
    return [r for r in rules if id(r) not in consumed or id(r) in kept] + combined


def _aggregated_rule(corr: Correlation, base: Rule) -> Rule:
    cat = catalog()

    def canonical(name: str) -> str:
        return cat.canonical(name, base.logsource)

    ref = corr.rule_refs[0]

    def own(name: str) -> str:  # an alias stands for the field it names in this rule
        return corr.aliases.get(name, {}).get(ref, name)

    counted = canonical(own(corr.field)) if corr.field else None
    assert corr.aggregate is not None
    aggregation = Aggregation(
        tuple(Threshold(corr.aggregate, op, value, counted, corr.percentile) for op, value in corr.conditions),
        tuple(canonical(own(g)) for g in corr.group_by), corr.window)
    return _merged(base, corr, aggregation=aggregation)


def _steps(corr: Correlation, used: list[Rule]) -> tuple[Step, ...]:
    """Each rule with the fields that stand for the group-by names (an alias, else the same Sigma
    field) and for the aggregated field, resolved in its own log source."""
    cat = catalog()
    steps = []
    for ref, rule in zip(corr.rule_refs, used, strict=True):
        if rule.aggregation is not None or rule.temporal is not None:
            raise SigmaWmiError(f"rule '{ref}' is itself a correlation (not supported inside another)",
                                corr.origin, "unsupported-correlation")
        fields = tuple(cat.canonical(corr.aliases.get(g, {}).get(ref, g), rule.logsource) for g in corr.group_by)
        value = cat.canonical(corr.aliases.get(corr.field, {}).get(ref, corr.field), rule.logsource) \
            if corr.field else None
        steps.append(Step(ref, rule, fields, value))
    return tuple(steps)


def _over_steps(corr: Correlation, used: list[Rule], **changes: Any) -> Rule:
    """The correlation as a rule over several rules: the first one's log source, the OR of their
    detections (for readers of the tree that do not know correlations), every document as source."""
    first = used[0]
    source = "---\n".join(t if t.endswith("\n") else t + "\n" for t in [*(r.source_text for r in used), corr.text])
    return _merged(first, corr, detection=any_of([r.detection for r in used]),
                   tags=corr.metadata.get("tags", first.tags), source_text=source, **changes)


def _temporal_rule(corr: Correlation, used: list[Rule]) -> Rule:
    temporal = Temporal(_steps(corr, used), corr.group_by, corr.window, corr.ordered, corr.conditions[0][1])
    return _over_steps(corr, used, temporal=temporal)


def _aggregated_rules(corr: Correlation, used: list[Rule]) -> Rule:
    assert corr.aggregate is not None
    aggregation = Aggregation(
        tuple(Threshold(corr.aggregate, op, value, corr.field, corr.percentile) for op, value in corr.conditions),
        corr.group_by, corr.window, _steps(corr, used))
    return _over_steps(corr, used, aggregation=aggregation)


def _merged(base: Rule, corr: Correlation, **changes: Any) -> Rule:
    # the correlation's own extra keys (x_sigma_wmi_tests, ...) win over its base rule's
    own = {k: v for k, v in corr.doc.items() if k not in _OWN_KEYS and k not in ("correlation", "generate", "name")}
    extras = {**base.extras, **own, "correlation": corr.doc["correlation"]}
    return dataclasses.replace(base, **{"source_text": base.source_text, **corr.metadata, **changes},
                               origin=corr.origin, extras=extras)
