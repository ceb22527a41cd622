"""Sigma meta filters: documents that narrow other rules without editing them.

A filter (Sigma specification, "meta filters") has a `logsource`, a `filter:` section with
`rules:` (ids or names, or `any`), selections and a `condition`. It applies to every rule whose
log source it contains (each field the filter sets equals the rule's) and that `rules` names;
as in pySigma, the rule's detection becomes `(detection) and (filter condition)`, so a filter
written `condition: not selection` removes the events its selection matches. Filters apply
before correlations are built, so a correlation sees its rules filtered. The filter's
selections are read per rule, against the rule's log source, so field names resolve as in the
rule itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigma_wmi.errors import Diagnostic, Level, Origin, SigmaWmiError
from sigma_wmi.model import And, Expr, LogSource, Rule, normalize
from sigma_wmi.readers.yamlsource import (
    display_path,
    load_documents,
    locate,
    read_inputs,
    read_text,
    split_documents,
)

FILTER_CODE = "filter-applied"  # the info diagnostic on each rule a filter narrowed


def is_filter(doc: Any) -> bool:
    """A meta filter document: a `filter:` section and no `detection:`."""
    return isinstance(doc, dict) and "filter" in doc and "detection" not in doc and "correlation" not in doc


@dataclass(frozen=True)
class MetaFilter:
    """One filter document, validated, with the text its line numbers refer to."""

    origin: Origin  # the file and the line of its `title` (or first line)
    title: str
    id: str
    logsource: LogSource
    rules: tuple[str, ...] | None  # ids or names; None: any rule of the log source
    selections: tuple[tuple[str, Any], ...]  # name -> selection body, in order
    condition: str
    text: str  # this document's text, with `filter:` read as `detection:` (same lines)

    @property
    def label(self) -> str:
        return f"'{self.title}' ({self.origin})"

    def applies_to(self, rule: Rule) -> bool:
        if not _logsource_contains(self.logsource, rule.logsource):
            return False
        if self.rules is None:
            return True
        name = rule.extras.get("name")
        return rule.id in self.rules or (isinstance(name, str) and name in self.rules)

    def expression(self, logsource: LogSource) -> Expr:
        """The filter's condition with fields resolved for a rule of `logsource`."""
        key = (self.origin.path, self.origin.line, self.text, logsource)
        if key not in _COMPILED:
            from sigma_wmi.readers.sigma import read_sigma

            doc = {"title": self.title or "filter", "logsource": _logsource_dict(logsource),
                   "detection": {**dict(self.selections), "condition": self.condition}}
            try:
                _COMPILED[key] = read_sigma(doc, self.text, self.origin.path).detection
            except SigmaWmiError as err:
                raise SigmaWmiError(f"filter '{self.title}': {err.message}", err.origin, err.code) from None
        return _COMPILED[key]


_COMPILED: dict[tuple[Any, ...], Expr] = {}


def _logsource_contains(outer: LogSource, inner: LogSource) -> bool:
    """pySigma's containment: every field the filter sets equals the rule's (compared
    case-insensitively, as Sigma compares log source names)."""
    return all(want is None or (have is not None and want.lower() == have.lower())
               for want, have in ((outer.product, inner.product), (outer.category, inner.category),
                                  (outer.service, inner.service)))


def _logsource_dict(logsource: LogSource) -> dict[str, str]:
    return {k: v for k, v in (("product", logsource.product), ("category", logsource.category),
                              ("service", logsource.service)) if v}


_DETECTION_KEY = re.compile(r"^filter(\s*:)", re.MULTILINE)


def read_filter(doc: dict[str, Any], text: str, path: str) -> MetaFilter:
    """Validate one filter document; a problem is a `SigmaWmiError` at its line."""
    origin = Origin(path, locate(text, ("title",)) or 1)

    def fail(message: str, *keys: str) -> SigmaWmiError:
        return SigmaWmiError(message, origin.at(locate(text, keys) or origin.line), "invalid-filter")

    body = doc.get("filter")
    if not isinstance(body, dict):
        raise fail("filter must be a mapping with rules, selections and a condition", "filter")
    logsource = doc.get("logsource")
    if not isinstance(logsource, dict) or not logsource:
        raise fail("a filter needs a logsource (the rules it may apply to)", "logsource")
    condition = body.get("condition")
    if not isinstance(condition, str) or not condition.strip():
        raise fail("filter condition must be one string, such as 'not selection'", "filter", "condition")
    if "rules" not in body:
        raise fail("filter needs 'rules': rule ids or names, or 'any' for every rule of its log source", "filter")
    rules = body["rules"]
    refs: tuple[str, ...] | None
    if rules == [] or (isinstance(rules, str) and rules.lower() == "any"):
        refs = None
    elif isinstance(rules, str):
        refs = (rules,)
    elif isinstance(rules, list) and all(isinstance(r, str) and r for r in rules):
        refs = tuple(rules)
    else:
        raise fail("filter rules must be 'any', a rule id or name, or a list of them", "filter", "rules")
    selections = tuple((str(k), v) for k, v in body.items() if k not in ("rules", "condition"))
    if not selections:
        raise fail("filter has no selection", "filter")
    title = doc.get("title")
    result = MetaFilter(origin, str(title or ""), str(doc.get("id") or ""),
                        LogSource(*(_text(logsource.get(k)) for k in ("product", "category", "service"))),
                        refs, selections, condition, _DETECTION_KEY.sub(r"detection\1", text))
    result.expression(result.logsource)  # selections and condition are valid (the rule's fields may differ)
    return result


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def read_filter_text(text: str, path: str) -> tuple[list[MetaFilter], int]:
    """The filter documents of one file, and how many other documents it has."""
    filters: list[MetaFilter] = []
    others = 0
    documents = load_documents(text, path)
    pieces = split_documents(text) if len(documents) > 1 or "---" in text else [(0, text)]
    for doc, (offset, piece) in zip(documents, pieces, strict=False):
        if not is_filter(doc):
            others += 1
            continue
        try:
            found = read_filter(doc, piece, path)
        except SigmaWmiError as err:
            if err.origin is not None and err.origin.line is not None:
                err.origin = err.origin.at(err.origin.line + offset)
            raise
        filters.append(dataclasses.replace(found, origin=found.origin.at((found.origin.line or 1) + offset)))
    return filters, others


def load_filters(paths: Iterable[Path | str]) -> tuple[MetaFilter, ...]:
    """Every filter of `--filter` files and directories (searched for *.yml/*.yaml), in order.
    A file that holds something else than filters is an error: a rule passed as a filter
    would otherwise be silently ignored."""
    from sigma_wmi.readers import rule_files

    found: list[MetaFilter] = []
    for path in rule_files(paths):
        shown = display_path(path)
        filters, others = read_filter_text(read_text(path), shown)
        if others:
            raise SigmaWmiError("not a Sigma filter (a filter has 'logsource' and 'filter', no 'detection')",
                                Origin(shown, 1), "invalid-filter")
        found.extend(filters)
    return tuple(found)


_FILTER_LINE = re.compile(rb"^filter\s*:", re.MULTILINE)


def filters_among(paths: Iterable[Path], raws: Mapping[Path, bytes] | None = None
                  ) -> tuple[tuple[MetaFilter, ...], list[SigmaWmiError]]:
    """Filter documents found among rule files (sigma-cli applies those too). Only files with a
    top-level `filter:` line are parsed; a broken one is an error of that file, reported by
    the reader again when it reads the file, so here it is returned, not raised. `raws`: the
    files' bytes when the caller has read them already (`read_inputs`)."""
    raws = read_inputs(paths) if raws is None else raws
    found: list[MetaFilter] = []
    errors: list[SigmaWmiError] = []
    for path, raw in raws.items():
        if b"filter" not in raw or not _FILTER_LINE.search(raw):  # the substring test is the cheap reject
            continue
        try:
            filters, _ = read_filter_text(read_text(path), display_path(path))
        except (OSError, SigmaWmiError) as err:
            if isinstance(err, SigmaWmiError):
                errors.append(err)
            continue
        found.extend(filters)
    return tuple(found), errors


def without_repeats(given: Iterable[MetaFilter], found: Iterable[MetaFilter]) -> tuple[MetaFilter, ...]:
    """The filters of `found` (among the inputs) that `given` (--filter) does not already hold."""
    seen = {(Path(f.origin.path).resolve(), f.origin.line) for f in given}
    return tuple(f for f in found if (Path(f.origin.path).resolve(), f.origin.line) not in seen)


def apply_filters(rules: list[Rule], filters: Iterable[MetaFilter]) -> list[Rule]:
    """Each rule narrowed by every filter that applies to it, with an info diagnostic per filter
    (which also lets a batch tell which filters selected no rule)."""
    filters = tuple(filters)
    if not filters:
        return rules
    result = []
    for rule in rules:
        for meta in filters:
            if not meta.applies_to(rule):
                continue
            narrowed = normalize(And((rule.detection, meta.expression(rule.logsource))))
            note = Diagnostic(Level.INFO, FILTER_CODE, f"filter {meta.label} applied", rule.origin)
            rule = dataclasses.replace(rule, detection=narrowed, diagnostics=(*rule.diagnostics, note))
        result.append(rule)
    return result


def unused_by(filters: Iterable[MetaFilter], rules: Iterable[Rule]) -> list[Diagnostic]:
    """A warning for each filter none of `rules` was narrowed by."""
    return unused_filters(filters, (d.message for r in rules for d in r.diagnostics if d.code == FILTER_CODE))


def unused_filters(filters: Iterable[MetaFilter], applied_messages: Iterable[str]) -> list[Diagnostic]:
    """A warning for each filter no rule of the batch was narrowed by."""
    used = set(applied_messages)
    return [Diagnostic(Level.WARNING, "filter-unused", f"filter {meta.label} selects no rule of this batch",
                       meta.origin) for meta in filters if f"filter {meta.label} applied" not in used]
