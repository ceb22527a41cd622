"""Sigma correlation rules (`event_count`, `value_count`) → a `Rule` with an `Aggregation`.

A correlation counts the events of the rules it names, per group and time span. The
model holds that as the base rule's detection plus thresholds, so a correlation is read
together with its one base rule, from the same file. Other correlation types (temporal,
value_sum, ...) and correlations over several rules are refused with a clear error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sigma_wmi.catalog import catalog
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import Aggregate, Aggregation, Op, Rule, Threshold, parse_timespan
from sigma_wmi.readers.sigma import metadata_fields
from sigma_wmi.readers.values import DocumentValues
from sigma_wmi.readers.yamlsource import locate

_TYPES = {"event_count": Aggregate.COUNT, "value_count": Aggregate.DISTINCT_COUNT}
# `condition:` keys; the Sigma writer uses the same table the other way round
CONDITIONS = {"gt": Op.GT, "gte": Op.GTE, "lt": Op.LT, "lte": Op.LTE, "eq": Op.EQUALS}
# Metadata the correlation's own keys decide; the base rule fills in what it leaves out.
_OWN_KEYS = ("title", "id", "status", "description", "references", "author", "date", "modified", "tags",
             "falsepositives", "level")


def is_correlation(doc: Any) -> bool:
    return isinstance(doc, dict) and "correlation" in doc


@dataclass
class Correlation:
    """One parsed correlation document, before its base rule is known."""

    doc: dict[str, Any]
    rule_ref: str  # the `name` or `id` of the base rule
    aggregate: Aggregate
    field: str | None  # Sigma field name counted by value_count
    group_by: tuple[str, ...]  # Sigma field names
    window: int
    conditions: tuple[tuple[Op, int], ...]
    generate: bool  # the base rule also alerts on its own
    origin: Origin
    metadata: dict[str, Any]  # `Rule` fields from the correlation's own descriptive keys


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
    if not isinstance(kind, str) or kind not in _TYPES:
        raise fail(f"correlation type '{kind}' is not supported (only event_count and value_count, "
                   "which the model holds as count thresholds)", "type")
    rules = body.get("rules")
    rules = [rules] if isinstance(rules, str) else rules
    if not isinstance(rules, list) or len(rules) != 1 or not isinstance(rules[0], str):
        raise fail("the correlation must name exactly one rule under 'rules' (counts over several rules "
                   "are not supported)", "rules")
    window = parse_timespan(str(body.get("timespan", "")))
    if window is None:
        raise fail(f"timespan '{body.get('timespan')}' is not a number with s, m, h or d", "timespan")
    group_by = body.get("group-by") or []
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise fail("group-by must be a list of field names", "group-by")
    condition = body.get("condition")
    if not isinstance(condition, dict):
        raise fail("condition must be a mapping such as {gte: 10}", "condition")
    counted = condition.get("field")
    if (kind == "value_count") != isinstance(counted, str):
        raise fail("value_count needs condition.field (and event_count takes none)", "condition")
    conditions = []
    for key, value in condition.items():
        if key == "field":
            continue
        if key not in CONDITIONS or type(value) is not int:
            raise fail(f"condition '{key}: {value}' is not gt, gte, lt, lte or eq with an integer", "condition")
        conditions.append((CONDITIONS[key], value))
    if not conditions:
        raise fail("condition has no comparison", "condition")
    if body.get("aliases"):
        raise SigmaWmiError("correlation field aliases are not supported", origin.at(
            locate(text, ("correlation", "aliases")) or origin.line), "unsupported-correlation")
    # Sigma 2.1 puts `generate` at the top level, pySigma reads it under `correlation`: take either
    generate = doc.get("generate", body.get("generate", False))
    if not isinstance(generate, bool):
        raise SigmaWmiError(f"generate must be true or false, not {generate!r}",
                            origin.at(locate(text, ("generate",)) or locate(text, ("correlation", "generate"))
                                      or origin.line), "invalid-correlation")
    own = metadata_fields(DocumentValues({k: doc[k] for k in _OWN_KEYS if k in doc}, text, origin))
    return Correlation(doc, rules[0], _TYPES[kind], counted, tuple(group_by), window, tuple(conditions),
                       generate, origin, own)


def apply_correlations(rules: list[Rule], correlations: list[Correlation]) -> list[Rule]:
    """Each correlation becomes its base rule with thresholds; base rules it consumes are dropped
    (Sigma's default: a rule a correlation uses does not alert on its own unless `generate: true`)."""
    cat = catalog()
    by_ref: dict[str, Rule] = {}
    for rule in rules:
        for ref in (rule.extras.get("name"), rule.id):
            if isinstance(ref, str) and ref:
                by_ref[ref] = rule
    consumed: set[int] = set()
    kept: set[int] = set()  # a base rule alerts on its own if any correlation over it says so
    combined: list[Rule] = []
    for corr in correlations:
        base = by_ref.get(corr.rule_ref)
        if base is None:
            raise SigmaWmiError(f"the correlation refers to rule '{corr.rule_ref}', which is not in this file",
                                corr.origin, "invalid-correlation")
        (kept if corr.generate else consumed).add(id(base))

        def canonical(name: str, base: Rule = base) -> str:
            return cat.canonical(name, base.logsource)

        counted = canonical(corr.field) if corr.field else None
        aggregation = Aggregation(
            tuple(Threshold(corr.aggregate, op, value, counted) for op, value in corr.conditions),
            tuple(canonical(g) for g in corr.group_by), corr.window)
        combined.append(_merged(base, corr, aggregation))
    return [r for r in rules if id(r) not in consumed or id(r) in kept] + combined


def _merged(base: Rule, corr: Correlation, aggregation: Aggregation) -> Rule:
    extras = {**base.extras, "correlation": corr.doc["correlation"]}
    return dataclasses.replace(base, **corr.metadata, aggregation=aggregation, origin=corr.origin, extras=extras,
                               source_text=base.source_text)
