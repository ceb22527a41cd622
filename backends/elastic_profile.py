"""Where a rule's events live on an Elastic profile, and the rewrites that make a query true
to that place's schema.

`place(rule, profile)` reads `data/elastic_targets.yaml`: the index patterns that hold the
rule's log source, the generated schema of those indexes (`sigma_wmi.schema`), the catalog
profile that names fields and the event layout whose event-kind conditions apply
(`logsources.yaml` `elastic.<layout>`). A log source without an index is `no-index`.

The rewrites below are small pure `Expr -> Expr` functions over one `Target` (the placed
rule plus the diagnostics list they report into). Each Elastic backend lists the ones it
applies, in order (`ElasticBackend.TRANSFORMS`), the way sqlglot's dialects list theirs.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

from sigma_wmi import schema as schemas
from sigma_wmi.catalog import Catalog, catalog, to_profile, without_absent_fields
from sigma_wmi.errors import Diagnostic, Level, Origin, UnsupportedError, add_once
from sigma_wmi.model import (
    And,
    Expr,
    LogSource,
    Match,
    Not,
    Op,
    Pattern,
    Regex,
    Rule,
    Value,
    Wildcard,
    full_pattern,
    map_matches,
    patterns_match,
)
from sigma_wmi.schema import FieldInfo, Schema


@functools.cache
def targets() -> dict[str, Any]:
    """The packaged `elastic_targets.yaml`, loaded once."""
    text = (resources.files("sigma_wmi") / "data" / "elastic_targets.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def profiles() -> tuple[str, ...]:
    return tuple(targets()["profiles"])


@dataclass(frozen=True)
class Placement:
    """Where one rule's events are on one profile."""

    profile: str
    index: tuple[str, ...]
    schema: Schema
    names: str  # catalog profile of field names
    layout: str  # event-kind conditions: defend or sysmon
    event_data: str | None  # prefix of Windows fields the catalog does not name
    note: str | None = None  # why the index is a guess


def _table_entry(spec: Mapping[str, Any], source: LogSource, cat: Catalog) -> Mapping[str, Any] | None:
    """A profile's table entry for a log source: category first, then service, then default."""
    # Without a product, a log source the table knows (a Windows category or channel) is Windows.
    product = source.product or ("windows" if cat.logsource_entry(source) else None)
    if product not in spec.get("products", ()):
        return None
    categories = spec.get("categories", {})
    services = spec.get("services", {})
    if source.category and source.category in categories:
        entry: Mapping[str, Any] | None = categories[source.category]
    elif source.category and spec.get("sysmon_categories") and cat.logsource_entry(source).get("sysmon_event_ids"):
        entry = spec["sysmon_categories"]
    elif source.service and source.service in services:
        entry = services[source.service]
    elif source.category or source.service or spec.get("default"):
        entry = spec.get("default")
    else:
        entry = None
    return entry


def place(rule: Rule, profile: str, cat: Catalog | None = None, index: tuple[str, ...] = ()) -> Placement:
    """The index and schema of a rule's log source, or `UnsupportedError` (`no-index`).
    `index` (the backend's `index` option) names the team's index outright."""
    spec = targets()["profiles"][profile]
    cat = cat or catalog()
    source = rule.logsource
    entry = _table_entry(spec, source, cat)
    # A team's own index for the log source (-O index, --mapping) places the rule even where the
    # profile's table has no index for it; the profile's schema still decides its fields.
    mapped_index = index or tuple(cat.source_conditions("elastic", source).get("index", ()))
    if entry is None and mapped_index:
        entry = {}
    if entry is None:
        elsewhere = [name for name, other in targets()["profiles"].items()
                     if name != profile and _table_entry(other, source, cat) is not None]
        hint = f"; profile {' or '.join(elsewhere)} has one" if elsewhere else ""
        raise UnsupportedError(
            f"no index of profile {profile} holds {source.key()} events ({spec['title']}){hint}",
            rule.origin, code="no-index")
    # A mapped index the table does not know is described by the profile's schema, or ECS.
    schema = schemas.load(entry.get("schema") or spec.get("schema") or "ecs")
    return Placement(
        profile=profile,
        index=mapped_index or tuple(entry.get("index") or (schema.provenance["index"],)),
        schema=schema,
        names=spec["names"],
        layout=spec["layout"],
        event_data=cat.event_data_prefixes[0] if spec.get("event_data") else None,
        note=None if mapped_index else entry.get("note"),  # the table's guess is not the team's index
    )


def field_info(schema: Schema, name: str) -> FieldInfo | None:
    """A field of the schema by exact name, or under a dynamic object (`winlog.event_data.*`)."""
    info = schema.get(name)
    if info is not None:
        return info
    # A multi-field by its own name (a team's mapping may name `process.command_line.text`).
    parent_name, _, sub = name.rpartition(".")
    parent = schema.get(parent_name)
    if parent is not None and sub == "text" and parent.text:
        return FieldInfo(name, type="match_only_text")
    if parent is not None and sub == "caseless" and parent.caseless:
        return FieldInfo(name, type="keyword", ignore_above=parent.ignore_above)
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        pattern = schema.get(".".join(parts[:end]) + ".*")
        if pattern is not None:
            return replace(pattern, name=name)
    return None


@dataclass
class Target:
    """What the rewrites know: the rule, where its events are, and where to report."""

    rule: Rule
    placement: Placement
    diagnostics: list[Diagnostic]
    catalog: Catalog
    backend: str
    # target field name -> the Sigma name and line it came from (for located errors)
    sources: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def info(self, name: str) -> FieldInfo | None:
        info = field_info(self.placement.schema, name)
        if info is None and self.catalog.declared_by_mapping(self.placement.names, name):
            return FieldInfo(name)  # the team's own field: a keyword without sub-fields
        return info

    def sigma_name(self, canonical: str) -> str:
        spec = self.catalog.spec(canonical)
        return (spec.names.get("sigma") if spec else None) or canonical

    def origin(self, line: int | None) -> Origin:
        return self.rule.origin.at(line) if line is not None else self.rule.origin

    def sigma_for(self, field_name: str | None) -> str:
        """The Sigma name a target field came from (the name itself if none is recorded)."""
        return self.sources.get(field_name or "", (field_name or "", None))[0]

    def fail(self, code: str, message: str, field_name: str | None = None,
             line: int | None = None) -> UnsupportedError:
        """A located error: the match's line, else the line the field first came from."""
        if line is None:
            line = self.sources.get(field_name or "", ("", None))[1]
        return UnsupportedError(f"{self.backend}: {message}", self.origin(line), code=code)

    def warn(self, code: str, message: str, level: Level = Level.WARNING) -> None:
        add_once(self.diagnostics, Diagnostic(level, code, f"{self.backend}: {message}"))


Transform = Callable[[Expr, Target], Expr]


# ---------------------------------------------------------------------------
# The rewrites
# ---------------------------------------------------------------------------

def keywords_contain(expr: Expr, target: Target) -> Expr:
    """Sigma keywords match anywhere in the event: `evil` is `*evil*` on whatever field holds it."""
    return map_matches(expr, _keyword_contains)


def _keyword_contains(expr: Match) -> Expr:
    if expr.field is not None or not expr.op.is_string:
        return expr
    many = Pattern((Wildcard.MANY,))
    patterns = []
    for value in expr.values:
        if not isinstance(value, (Pattern, str)):
            value = Pattern.literal(scalar_text(value))
        full = full_pattern(expr, value) if isinstance(value, Pattern) else Pattern.literal(value)
        lead = bool(full.parts) and full.parts[0] is Wildcard.MANY
        trail = bool(full.parts) and full.parts[-1] is Wildcard.MANY
        patterns.append((Pattern(()) if lead else many) + full + (Pattern(()) if trail else many))
    return patterns_match(None, patterns, expr.case_sensitive, expr.line)


def keywords_in_message(expr: Expr, target: Target) -> Expr:
    """EQL cannot search the whole event: keywords look in the catalog's event text field."""
    def move(node: Match) -> Expr:
        if node.field is not None:
            return node
        target.warn("keyword-field", "keyword search written as a search in the event message", Level.INFO)
        return replace(node, field="event_message")
    return map_matches(expr, move)


def mapped_values(expr: Expr, target: Target) -> Expr:
    """Sigma values the profile writes differently (`Initiated: 'true'` → `egress`), by the
    profile's `value_maps` (canonical field → lower-case Sigma value → profile value)."""
    maps: Mapping[str, Mapping[str, str]] = targets()["profiles"][target.placement.profile].get("value_maps", {})

    def rewrite(match: Match) -> Expr:
        table = maps.get(match.field or "")
        if not table or match.op is not Op.EQUALS:
            return match
        values = []
        for value in match.values:
            text = value.text if isinstance(value, Pattern) else scalar_text(value)
            if text.lower() not in table:
                raise target.fail("value-not-allowed", f"value {text!r} of field "
                                  f"'{target.sigma_name(match.field or '')}' has no {target.placement.profile} "
                                  f"equivalent (known: {', '.join(table)})", None, match.line)
            values.append(Pattern.literal(table[text.lower()]))
        return replace(match, values=tuple(values), case_sensitive=True)
    return map_matches(expr, rewrite)


def target_names(expr: Expr, target: Target) -> Expr:
    """Canonical fields in the profile's names (catalog), Windows fields the catalog does not
    know under the profile's event-data object. A field with no name stays canonical and is
    then absent from the schema."""
    placement = target.placement
    windows = target.rule.logsource.product in (None, "windows")

    def unknown(name: str) -> str | None:
        if placement.event_data and windows:
            return placement.event_data + target.sigma_name(name)
        return None

    def rename(match: Match) -> Expr:
        mapped = to_profile(match, placement.names, unknown, target.diagnostics, target.catalog)
        for node in _matches(mapped):
            if node.field is not None and match.field is not None:
                target.sources.setdefault(node.field, (target.sigma_name(match.field), match.line))
        return mapped
    return map_matches(expr, rename)


def absent_fields(expr: Expr, target: Target) -> Expr:
    """Tests on fields the index's schema lacks, decided exactly as `without_absent_fields`
    does for Splunk's 4688: such a test is never true (`null` always is). Branches that
    decision removes are named in an `absent-field` warning; a rule it decides entirely
    (never true, or true for every event) fails with `field-not-in-schema`, naming the Sigma
    field and its line."""
    absent = [m for m in _matches(expr) if m.field is not None and target.info(m.field) is None]
    if not absent:
        return expr
    decided = without_absent_fields(expr, lambda name: target.info(name) is None)
    if isinstance(decided, bool):
        first = absent[0]
        assert first.field is not None
        raise target.fail(
            "field-not-in-schema",
            f"field '{target.sigma_for(first.field)}' is '{first.field}' on profile {target.placement.profile}, "
            f"which index {', '.join(target.placement.index)} does not have"
            + ("" if not decided else "; without it the rule would match every event"),
            first.field, first.line)
    names = sorted({target.sigma_for(m.field) for m in absent if m.field is not None})
    target.warn("absent-field", f"tests on fields index {', '.join(target.placement.index)} does not have "
                f"were decided (never true there) and dropped: {', '.join(names)}")
    return decided


def source_conditions(expr: Expr, target: Target) -> Expr:
    """The log source's event-kind conditions (ECS category and type, the layout's
    `elastic` conditions, or a channel and event ids), in the profile's names, before the
    detection."""
    return _with_source_conditions(expr, target, with_category=True)


def source_conditions_but_category(expr: Expr, target: Target) -> Expr:
    """`source_conditions` for EQL, whose `<category> where` already tests event.category."""
    return _with_source_conditions(expr, target, with_category=False)


def _with_source_conditions(expr: Expr, target: Target, with_category: bool) -> Expr:
    cat = target.catalog
    source = cat.logsource(target.rule.logsource)
    entry = cat.logsource_entry(target.rule.logsource)
    conditions: list[Expr] = []
    names = target.placement.names

    def named(canonical: str) -> str:
        name = cat.name_in(names, cat.scoped_field(canonical, target.rule.logsource))
        assert name is not None, canonical
        return name

    if source.ecs_category:
        if with_category:
            conditions.append(Match(named("event_category"), Op.EQUALS, (Pattern.literal(source.ecs_category),),
                                    True))
        if source.ecs_type:
            conditions.append(Match(named("event_type"), Op.EQUALS, (Pattern.literal(source.ecs_type),), True))
        for field_name, values in (entry.get("elastic") or {}).get(target.placement.layout, {}).items():
            conditions.append(Match(field_name, Op.EQUALS, tuple(Pattern.literal(str(v)) for v in values), True))
    elif target.rule.logsource.product in (None, "windows"):
        # No ECS category (Sysmon WMI events, PowerShell logs): the Windows channel and event ids.
        sysmon = cat.logsource(LogSource(product="windows", service="sysmon")).channel
        channel = source.channel or (sysmon if source.sysmon_event_ids else None)
        event_ids = source.event_ids or source.sysmon_event_ids
        if channel:
            conditions.append(Match(named("channel"), Op.EQUALS, (Pattern.literal(channel),), False))
            if event_ids:
                conditions.append(Match(named("event_id"), Op.EQUALS, event_ids))
    if not conditions:
        return expr
    for condition in conditions:
        assert isinstance(condition, Match) and condition.field is not None
        if target.info(condition.field) is None:
            raise target.fail("field-not-in-schema", f"log-source condition field '{condition.field}' is not "
                              f"in the schema of {', '.join(target.placement.index)}")
    return And((*conditions, expr))


def typed_literals(expr: Expr, target: Target) -> Expr:
    """Values as the schema types the field: numbers on numeric fields, booleans on boolean
    fields (Sigma's `'false'` string included), strings on keyword fields (`LogonType: 9` is
    `"9"`), only allowed values on fields with an allowed list."""
    expected: Mapping[str, list[str]] = targets()["profiles"][target.placement.profile].get("expected_values", {})

    def typed(match: Match) -> Expr:
        if match.field is None or match.op in (Op.EXISTS, Op.NULL, Op.FIELDREF):
            return match
        info = target.info(match.field)
        if info is None:
            return match
        if (info.is_number or info.is_boolean) and match.op not in (Op.EQUALS, Op.LT, Op.LTE, Op.GT, Op.GTE):
            raise target.fail("literal-type", f"'{target.sigma_for(match.field)}' is '{match.field}', a "
                              f"{info.type} field, which has no '{match.op.value}' match", match.field, match.line)
        if info.type == "ip":
            return _ip(match, target)
        if info.is_number:
            return replace(match, values=tuple(_number(v, match, target) for v in match.values))
        if info.is_boolean:
            return replace(match, values=tuple(_boolean(v, match, target) for v in match.values),
                           case_sensitive=False)
        if match.op is not Op.EQUALS:
            return match
        values = tuple(Pattern.literal(scalar_text(v)) if isinstance(v, (int, float)) else v
                       for v in match.values)
        allowed = info.allowed or tuple(expected.get(match.field, ()))
        if allowed:
            values = _allowed(values, allowed, match, target)
        return replace(match, values=values)
    return map_matches(expr, typed)


def _number(value: Value, match: Match, target: Target) -> Value:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = value.text if isinstance(value, Pattern) and not value.has_wildcards else None
    if text is not None:
        try:
            return int(text.strip())
        except ValueError:
            pass
    raise target.fail("literal-type", f"value {_shown(value)} of '{target.sigma_for(match.field)}' is not a "
                      f"number, and '{match.field}' is numeric ({target.placement.schema.name})",
                      match.field, match.line)


def _ip(match: Match, target: Target) -> Expr:
    """An ip field takes addresses (equals) and networks (cidr): Elasticsearch refuses a
    wildcard or a text that is not an address, so such a value can never match."""
    if match.op is Op.CIDR:
        return match
    texts = [v.text if isinstance(v, Pattern) and not v.has_wildcards else None for v in match.values]
    if match.op is not Op.EQUALS or None in texts:
        raise target.fail("literal-type", f"'{target.sigma_for(match.field)}' is '{match.field}', an ip field: "
                          f"it takes addresses and |cidr networks, not '{match.op.value}' patterns",
                          match.field, match.line)
    kept = []
    for value, text in zip(match.values, texts, strict=True):
        try:
            ipaddress.ip_address(text or "")
        except ValueError:
            target.warn("value-not-allowed", f"{match.field} holds IP addresses only; {text!r} was dropped")
            continue
        kept.append(value)
    if not kept:
        raise target.fail("value-not-allowed", f"'{match.field}' (Sigma '{target.sigma_for(match.field)}') holds IP "
                          f"addresses only; the rule asks for {', '.join(repr(t) for t in texts)}",
                          match.field, match.line)
    return replace(match, values=tuple(kept))


_BOOLEANS = {"true": True, "false": False}


def _boolean(value: Value, match: Match, target: Target) -> Value:
    if isinstance(value, bool):
        return value
    text = value.text.lower() if isinstance(value, Pattern) and not value.has_wildcards else None
    if text in _BOOLEANS:
        return _BOOLEANS[text]
    raise target.fail("literal-type", f"value {_shown(value)} of '{target.sigma_for(match.field)}' is not "
                      f"true/false, and '{match.field}' is boolean ({target.placement.schema.name})",
                      match.field, match.line)


def _allowed(values: tuple[Any, ...], allowed: tuple[str, ...], match: Match, target: Target) -> tuple[Any, ...]:
    """Keep the values a field can hold (compared without case, as Sigma does), written as
    the schema spells them; a value outside the list can never match."""
    by_lower = {a.lower(): a for a in allowed}
    kept: list[Any] = []
    refused: list[str] = []
    for value in values:
        if isinstance(value, Pattern) and not value.has_wildcards:
            known = by_lower.get(value.text.lower())
            if known is None:
                refused.append(value.text)
                continue
            kept.append(Pattern.literal(known) if match.case_sensitive or known == value.text else value)
        else:
            kept.append(value)
    if refused and not kept:
        raise target.fail("value-not-allowed", f"'{match.field}' (Sigma '{target.sigma_for(match.field)}') "
                          f"holds only {', '.join(allowed)}; the rule asks for {', '.join(refused)}",
                          match.field, match.line)
    if refused:
        target.warn("value-not-allowed", f"{match.field} never holds {', '.join(refused)} (allowed: "
                    f"{', '.join(allowed)}); those values were dropped")
    return tuple(kept)


def keyword_limits(expr: Expr, target: Target) -> Expr:
    """Say where a value can never be found: longer than the keyword field's `ignore_above`
    (such values are not indexed), or a wildcard on an analysed text field (it applies to
    one token, not to the whole text)."""
    def check(match: Match) -> Expr:
        if match.field is None or not match.op.is_string:
            return match
        info = target.info(match.field)
        if info is None:
            return match
        for value in match.values:
            if not isinstance(value, Pattern):
                continue
            literal = sum(len(p) for p in value.parts if isinstance(p, str))
            if info.ignore_above is not None and literal > info.ignore_above:
                target.warn("ignore-above", f"a value of {match.field} is {literal} characters; the field "
                            f"indexes at most {info.ignore_above}, so it can never match")
            if info.is_text and (value.has_wildcards or match.op is not Op.EQUALS):
                target.warn("text-field", f"{match.field} is analysed text: a wildcard applies to one token, "
                            "so a pattern spanning words or punctuation may not match")
        return match
    return map_matches(expr, check)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Pattern):
        return value.text
    if isinstance(value, Regex):
        return value.pattern
    return repr(value) if isinstance(value, float) else str(value)


def _shown(value: object) -> str:
    return repr(scalar_text(value))


def _matches(expr: Expr) -> list[Match]:
    if isinstance(expr, Match):
        return [expr]
    if isinstance(expr, Not):
        return _matches(expr.item)
    return [m for item in expr.items for m in _matches(item)]


def apply(transforms: tuple[Transform, ...], expr: Expr, target: Target) -> Expr:
    for transform in transforms:
        expr = transform(expr, target)
    return expr
