"""Loads the field catalog and log-source table (data/fields.yaml, data/logsources.yaml)
and maps expressions between canonical field names and a target profile's names."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError
from sigma_wmi.model import (
    And,
    Expr,
    LogSource,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Wildcard,
    full_pattern,
    map_matches,
    patterns_match,
)

if TYPE_CHECKING:
    from sigma_wmi.mapping import EnvironmentMapping, LogSourceChange, LogSourceFilter
    from sigma_wmi.model import Rule

# Profiles name a field namespace; "sigma" is the Sigma taxonomy.
# "splunk" holds only the names Splunk's Windows add-on extracts differently (EventCode).
PROFILES = ("sigma", "sysmon", "security", "wmi_activity", "cim", "ecs", "winlogbeat", "splunk")


@dataclass(frozen=True)
class Derivation:
    source: str  # canonical field it is computed from
    how: str  # "basename"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    description: str
    sigma: tuple[str, ...]
    categories: frozenset[str] | None
    names: dict[str, str]  # profile -> field name in that profile
    caseless: bool
    type: str
    derive: Derivation | None


@dataclass(frozen=True)
class LogSourceInfo:
    """What the log-source table knows about one Sigma log source."""

    sysmon_event_ids: tuple[int, ...] = ()
    security_event_ids: tuple[int, ...] = ()
    event_ids: tuple[int, ...] = ()  # for channel-based categories (PowerShell)
    channel: str | None = None
    cim: str | None = None  # "Endpoint.Processes"
    ecs_category: str | None = None
    ecs_type: str | None = None
    raw_profile: str | None = None


class Catalog:
    """The field catalog and log-source table, optionally with an environment mapping
    merged in (`with_mapping` returns a new catalog; none is ever changed in place)."""

    def __init__(self, fields_doc: dict[str, Any], logsources_doc: dict[str, Any]) -> None:
        self._fields_doc = fields_doc
        self._logsources_doc = logsources_doc
        self.mapping: EnvironmentMapping | None = None
        # Fields a mapping renamed for some log sources only: canonical → its scope.
        self._scopes: dict[str, LogSourceFilter] = {}
        # Per scope, a rule's field (canonical or Sigma name) → the scoped field standing for it.
        self._scoped: list[tuple[LogSourceFilter, dict[str, str], str]] = []  # (scope, table, prefix)
        self._changes: tuple[LogSourceChange, ...] = ()
        self._drops: list[tuple[LogSourceFilter, frozenset[str]]] = []
        self.fields: dict[str, FieldSpec] = {}
        # (category or None, sigma name) -> canonical
        self._from_sigma: dict[tuple[str | None, str], str] = {}
        # (profile, lower-cased name) -> canonical
        self._from_profile: dict[tuple[str, str], str] = {}
        # (profile, lower-cased name) -> every canonical field with that name, in file order
        self._profile_candidates: dict[tuple[str, str], list[str]] = {}
        self.event_data_prefixes: tuple[str, ...] = tuple(fields_doc.get("winlogbeat_event_data", ()))
        for name, entry in fields_doc["fields"].items():
            spec = _field_spec(name, entry, self.event_data_prefixes[0])
            self.fields[name] = spec
            for sigma_name in spec.sigma:
                for category in sorted(spec.categories) if spec.categories else [None]:
                    self._from_sigma.setdefault((category, sigma_name), name)
            for profile in PROFILES:
                target = spec.names.get(profile)
                if target:
                    self._from_profile.setdefault((profile, target.lower()), name)
                    self._profile_candidates.setdefault((profile, target.lower()), []).append(name)
        self._categories = logsources_doc.get("categories", {})
        self._services = logsources_doc.get("services", {})
        self._plain_profile: str = logsources_doc.get("plain_profile", "sysmon")

    # ---- names ----
    def canonical(self, sigma_name: str, logsource: LogSource) -> str:
        """The canonical name of a Sigma field in a log source (the Sigma name if unknown)."""
        for context in (logsource.category, logsource.service):
            if context and (context, sigma_name) in self._from_sigma:
                return self._from_sigma[(context, sigma_name)]
        return self._from_sigma.get((None, sigma_name), sigma_name)

    def from_profile(self, profile: str, name: str) -> str | None:
        """The canonical field a profile's field name stands for (case-insensitive)."""
        return self._from_profile.get((profile, name.lower()))

    def applies(self, spec: FieldSpec, logsource: LogSource) -> bool:
        """Does the field exist in the log source (no `categories`, or one names it)?"""
        return spec.categories is None or bool(
            {logsource.category, logsource.service} & spec.categories)

    def resolve_event_name(self, profile: str, name: str, logsource: LogSource) -> str:
        """The name an event field recorded under `profile` has for rules of `logsource`:
        the canonical field whose `profile` name it is *and* that exists in the log
        source (as `canonical` decides for Sigma names), else the name itself. A field
        scoped to its categories wins over a general one, as in `canonical`. A name the
        profile lacks resolves as the same Sigma name in a rule would."""
        candidates = self._profile_candidates.get((profile, name.lower()), ())
        general = None
        for canonical in candidates:
            spec = self.fields[canonical]
            scope = self._scopes.get(canonical)
            if scope is not None:
                if scope.matches(logsource):
                    return canonical
                continue
            if spec.categories is None:
                general = general or canonical
            elif self.applies(spec, logsource):
                return canonical
        # A name the profile does not have may be the field's Sigma name (Provider_Name).
        return general or self.canonical(name, logsource)

    def event_profile(self, logsource: LogSource, channel: str | None) -> str:
        """The profile whose names an event of `channel` uses when it is read for rules of
        `logsource`. A channel's `raw_profile` (logsources.yaml) translates its events into
        the Sigma taxonomy of a category (Security 4688 → process_creation); rules of a
        service marked `rules_use_raw_names` name that channel's own fields, read with the
        plain profile."""
        service = self.service_of_channel(channel) if channel else None
        if service is None:
            return self._plain_profile
        entry = self._services[service]
        profile = entry.get("raw_profile")
        if not profile or (entry.get("rules_use_raw_names") and logsource.category is None):
            return self._plain_profile
        return str(profile)

    def service_of_channel(self, channel: str) -> str | None:
        """The Sigma service whose channel this is (case-insensitive)."""
        return self._service_by_channel.get(channel.lower())

    @functools.cached_property
    def _service_by_channel(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for service, entry in self._services.items():
            channel = entry.get("channel")
            if isinstance(channel, str):
                table.setdefault(channel.lower(), service)
        return table

    def logsource_of_event(self, channel: str | None, event_id: int | None) -> LogSource:
        """The first log source (logsources.yaml order) an event belongs to: a category by
        its channel and event id, else the channel's service."""
        service = self.service_of_channel(channel) if channel else None
        for category, entry in self._categories.items():
            ids: list[int] = []
            if service == "sysmon" or channel is None:
                ids += entry.get("sysmon_event_ids", [])
            if service == "security" or channel is None:
                ids += entry.get("security_event_ids", [])
            own = entry.get("channel")
            if (own and channel and own.lower() == channel.lower()) or (own and channel is None):
                ids += entry.get("event_ids", [])
            if event_id is not None and event_id in ids:
                return LogSource(product="windows", category=category)
        return LogSource(product="windows", service=service)

    def spec(self, canonical: str) -> FieldSpec | None:
        return self.fields.get(canonical)

    def name_in(self, profile: str, canonical: str) -> str | None:
        """The field's name in a profile, or None if the profile has no such field."""
        spec = self.fields.get(canonical)
        if spec is None:
            return None
        return spec.names.get(profile)

    def first_name(self, profiles: tuple[str, ...], canonical: str) -> str | None:
        """The field's name in the first of `profiles` that has it."""
        return next((name for p in profiles if (name := self.name_in(p, canonical))), None)

    # ---- log sources ----
    def logsource(self, logsource: LogSource) -> LogSourceInfo:
        entry: dict[str, Any] = {}
        if logsource.service and logsource.service in self._services:
            entry.update(self._services[logsource.service])
        if logsource.category and logsource.category in self._categories:
            entry.update(self._categories[logsource.category])
        ecs = entry.get("ecs") or {}
        return LogSourceInfo(
            sysmon_event_ids=tuple(entry.get("sysmon_event_ids", ())),
            security_event_ids=tuple(entry.get("security_event_ids", ())),
            event_ids=tuple(entry.get("event_ids", ())),
            channel=entry.get("channel"),
            cim=entry.get("cim"),
            ecs_category=ecs.get("category"),
            ecs_type=ecs.get("type"),
            raw_profile=entry.get("raw_profile"),
        )

    def logsource_entry(self, logsource: LogSource) -> dict[str, Any]:
        """The log-source table's raw entry for a log source (service, then category on top)."""
        entry: dict[str, Any] = {}
        if logsource.service and logsource.service in self._services:
            entry.update(self._services[logsource.service])
        if logsource.category and logsource.category in self._categories:
            entry.update(self._categories[logsource.category])
        return entry

    def categories(self) -> list[str]:
        """Every Sigma log-source category the table describes, in file order."""
        return list(self._categories)

    def datamodel_logsource(self, datamodel: str) -> LogSource | None:
        """The Sigma log source of a CIM data model node (Endpoint.Processes → process_creation)."""
        for category, entry in self._categories.items():
            if entry.get("cim") == datamodel:
                return LogSource(product="windows", category=category)
        return None

    # ---- environment mappings ----
    def with_mapping(self, mapping: EnvironmentMapping) -> Catalog:
        """A new catalog with the mapping's renames, conditions and log sources merged in."""
        from sigma_wmi.mapping import EVENT_PROFILES, EVERY_RULE

        fields_doc = copy.deepcopy(self._fields_doc)
        fields: dict[str, Any] = fields_doc["fields"]
        logsources_doc = copy.deepcopy(self._logsources_doc)
        for new in mapping.new_logsources:
            logsources_doc.setdefault(new.kind, {})[new.name] = dict(new.entry)
        tables: dict[LogSourceFilter, dict[str, str]] = {}
        prefixes: dict[LogSourceFilter, str] = {}
        scopes: dict[str, LogSourceFilter] = {}
        for rename in mapping.renames:
            for canonical in self._rename_targets(rename.name, rename.scope):
                if rename.scope == EVERY_RULE:
                    entry = fields.setdefault(canonical, {"sigma": [canonical]})
                else:
                    table = tables.setdefault(rename.scope, {})
                    key = table.setdefault(canonical, f"{canonical}@{rename.scope.key()}")
                    entry = fields.setdefault(key, _scoped_entry(fields, canonical))
                    scopes[key] = rename.scope
                # winlogbeat names are derived from the ecs or raw names unless given: a rename
                # for another profile must not move them, so pin the name it has now.
                known = self.fields.get(canonical.split("@")[0])
                if "winlogbeat" not in rename.profiles and not entry.get("winlogbeat") \
                        and known is not None and known.names.get("winlogbeat"):
                    entry["winlogbeat"] = known.names["winlogbeat"]
                for profile in rename.profiles:
                    entry[profile] = rename.target
        for prefix in mapping.prefixes:
            prefixes[prefix.scope] = prefix.prefix + prefixes.get(prefix.scope, "")
            table = tables.setdefault(prefix.scope, {})
            for canonical in list(fields):
                if canonical in scopes and scopes[canonical] != prefix.scope:
                    continue
                plain = canonical.split("@")[0]
                key = table.setdefault(plain, f"{plain}@{prefix.scope.key()}")
                entry = fields.setdefault(key, _scoped_entry(fields, plain))
                scopes[key] = prefix.scope
                for profile in EVENT_PROFILES:
                    name = entry.get(profile) or (fields.get(plain, {}).get(profile) if profile != "winlogbeat" else None)
                    if name and not name.startswith(prefix.prefix):
                        entry[profile] = prefix.prefix + name
        mapped = Catalog(fields_doc, logsources_doc)
        mapped.mapping = mapping if self.mapping is None else self.mapping + mapping
        mapped._scopes = {**self._scopes, **scopes}
        mapped._scoped = [*self._scoped, *((scope, table, prefixes.get(scope, "")) for scope, table in tables.items())]
        mapped._changes = (*self._changes, *mapping.changes)
        mapped._drops = [*self._drops, *((d.scope, frozenset(self._drop_targets(d.fields, d.scope)))
                                         for d in mapping.drops)]
        return mapped

    def _rename_targets(self, name: str, scope: LogSourceFilter) -> Iterator[str]:
        """The fields a mapping's name stands for in a scope: a canonical field, the fields
        a Sigma name reads into there (all of them for an unscoped mapping), else the name
        itself (a field the catalog does not know, kept under its Sigma name)."""
        if name in self.fields:
            yield name
            return
        if scope.category is None and scope.service is None:
            found = [c for c, spec in self.fields.items() if name in spec.sigma]
            yield from found
            if not found or any(self.fields[c].categories for c in found):
                yield name  # where no categorised field applies, rules keep the Sigma name
            return
        yield self.canonical(name, scope.logsource())

    def _drop_targets(self, names: tuple[str, ...], scope: LogSourceFilter) -> Iterator[str]:
        for name in names:
            yield from self._rename_targets(name, scope)

    def identity_names(self) -> frozenset[str]:
        """Every name, in any profile or mapping scope, of the fields that say which Windows
        event a record is (event id, channel): how `sigma-wmi test` recognises an event."""
        return frozenset(name for key, spec in self.fields.items() if key.split("@")[0] in ("event_id", "channel")
                         for name in spec.names.values())

    def declared_by_mapping(self, profile: str, name: str) -> bool:
        """Does the environment mapping say events of `profile` carry field `name` (a rename's
        target, or a name under a mapped prefix)? Shipped target schemas cannot know a team's
        own fields: the team's mapping vouches for the names it introduces."""
        if self.mapping is None:
            return False
        if any(r.target == name and profile in r.profiles for r in self.mapping.renames):
            return True
        return any(name.startswith(p.prefix) for p in self.mapping.prefixes)

    def source_conditions(self, target: str, logsource: LogSource) -> dict[str, tuple[str, ...]]:
        """Extra log-source conditions an environment mapping sets for a target ("splunk":
        index, sourcetype, source; "elastic": index), merged over every entry whose log
        source matches (later files and entries win per key). Empty without a mapping:
        the target then uses its own defaults."""
        conditions: dict[str, tuple[str, ...]] = {}
        for entry in self.mapping.conditions if self.mapping else ():
            if entry.target == target and entry.scope.matches(logsource):
                conditions.update(entry.values)
        return conditions

    def map_rule(self, rule: Rule) -> Rule:
        """The rule as the mapped environment sees it (pure): log source changes applied,
        fields renamed for its log source only standing for their scoped fields, dropped
        fields left out. The same rule without a mapping."""
        if not (self._scoped or self._changes or self._drops):
            return rule
        logsource = rule.logsource
        for change in self._changes:
            if change.scope.matches(logsource):
                logsource = LogSource(change.to.product, change.to.category, change.to.service,
                                      logsource.definition)
        table, prefix = self._scoped_table(logsource)
        dropped = frozenset().union(*(f for scope, f in self._drops if scope.matches(logsource)))

        def rename(match: Match) -> Expr:
            if match.field is None:
                return match
            if match.field in table:
                return dataclasses.replace(match, field=table[match.field])
            if prefix and match.field not in self.fields:
                return dataclasses.replace(match, field=prefix + match.field)
            return match

        detection = rule.detection
        if dropped:  # dropped fields are named as the rule names them, so before renaming
            kept = _without_items(detection, dropped)
            if kept is None:
                raise SigmaWmiError("the mapping drops every condition of the rule", rule.origin, "bad-mapping")
            detection = kept
        detection = map_matches(detection, rename)
        return dataclasses.replace(rule, logsource=logsource, detection=detection)

    def _scoped_table(self, logsource: LogSource) -> tuple[dict[str, str], str]:
        """The mapping's scoped fields for a log source (canonical -> scoped entry) and prefix."""
        table: dict[str, str] = {}
        prefix = ""
        for scope, scoped, scope_prefix in self._scoped:
            if scope.matches(logsource):
                table.update(scoped)
                prefix = scope_prefix or prefix
        return table, prefix

    def scoped_field(self, canonical: str, logsource: LogSource) -> str:
        """The field `canonical` stands for in rules of `logsource` once mapped (its scoped entry
        when the mapping renames it there): log-source conditions a backend adds (channel,
        event id) must name fields as the mapped detection does."""
        return self._scoped_table(logsource)[0].get(canonical, canonical)

    def mapped_logsource(self, logsource: LogSource) -> LogSource:
        """The log source a rule of `logsource` is read as after the mapping's changes."""
        for change in self._changes:
            if change.scope.matches(logsource):
                logsource = LogSource(change.to.product, change.to.category, change.to.service,
                                      logsource.definition)
        return logsource

    # ---- tables, for `sigma-wmi list` ----
    def profiles(self) -> tuple[str, ...]:
        return PROFILES

    def logsource_names(self) -> list[tuple[str, str]]:
        """(kind, name) of every log source, categories first, in file order."""
        return [("category", c) for c in self._categories] + [("service", s) for s in self._services]

    def scope_of(self, canonical: str) -> LogSourceFilter | None:
        """The log sources a mapping limited this field to (None: wherever it applies)."""
        return self._scopes.get(canonical)


def _without_items(expr: Expr, dropped: frozenset[str]) -> Expr | None:
    """The tree without tests on `dropped` fields, as pySigma's drop_detection_item leaves a
    detection: the item is gone from its group (None when nothing is left)."""
    if isinstance(expr, Match):
        return None if expr.field in dropped else expr
    if isinstance(expr, Not):
        inner = _without_items(expr.item, dropped)
        return None if inner is None else Not(inner)
    kept = tuple(item for item in (_without_items(i, dropped) for i in expr.items) if item is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else dataclasses.replace(expr, items=kept)


def _scoped_entry(fields: dict[str, Any], canonical: str) -> dict[str, Any]:
    """A copy of a field's entry to rename for some log sources (its scope says where)."""
    entry = copy.deepcopy(fields.get(canonical) or {"sigma": [canonical]})
    entry.pop("categories", None)
    return entry


def _field_spec(name: str, entry: dict[str, Any], event_data_prefix: str) -> FieldSpec:
    names = {p: entry[p] for p in PROFILES if p != "sigma" and entry.get(p)}
    sigma = tuple(entry.get("sigma", ()))
    if sigma:
        names["sigma"] = sigma[0]
    if "winlogbeat" not in names:
        if entry.get("ecs_in_winlogbeat") and "ecs" in names:
            names["winlogbeat"] = names["ecs"]
        else:
            raw = names.get("sysmon") or names.get("security") or names.get("wmi_activity")
            raw = raw or (sigma[0] if sigma else None)
            if raw:
                names["winlogbeat"] = f"{event_data_prefix}{raw}"
    derive = entry.get("derive")
    return FieldSpec(
        name=name,
        description=entry.get("description", ""),
        sigma=sigma,
        categories=frozenset(entry["categories"]) if entry.get("categories") else None,
        names=names,
        caseless=bool(entry.get("caseless", False)),
        type=entry.get("type", "keyword"),
        derive=Derivation(derive["from"], derive["how"]) if derive else None,
    )


@functools.cache
def catalog() -> Catalog:
    """The packaged catalog, loaded once per process."""
    data = resources.files("sigma_wmi") / "data"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    fields_doc = yaml.load((data / "fields.yaml").read_text(encoding="utf-8"), Loader=loader)
    logsources_doc = yaml.load((data / "logsources.yaml").read_text(encoding="utf-8"), Loader=loader)
    return Catalog(fields_doc, logsources_doc)


# ---------------------------------------------------------------------------
# Mapping a canonical tree into a profile's field names
# ---------------------------------------------------------------------------

UnknownField = Callable[[str], str | None]


def to_profile(
    expr: Expr,
    profile: str | tuple[str, ...],
    unknown: UnknownField,
    diagnostics: list[Diagnostic],
    cat: Catalog | None = None,
) -> Expr:
    """Return a new tree whose field names are the profile's.

    A canonical field the profile lacks is expressed through its derivation
    (process_name → path ending in `\\name`) when it has one. With several
    profiles, the first that names the field wins. Fields the catalog
    does not know go through `unknown`, which returns the name to use or None when
    the target cannot take that field (an `UnsupportedError` is the caller's call).
    """
    cat = cat or catalog()
    chain = (profile,) if isinstance(profile, str) else profile

    def rename(match: Match) -> Expr:
        if match.field is None:
            return match
        spec = cat.spec(match.field)
        if spec is None:
            target = unknown(match.field)
            return _renamed(match, target) if target else match
        target = cat.first_name(chain, match.field)
        if target:
            return _renamed(match, target)
        if spec.derive and spec.derive.how == "basename":
            base_name = cat.first_name(chain, spec.derive.source)
            if base_name:
                return _basename_match(match, base_name, diagnostics)
        target = unknown(match.field)
        return _renamed(match, target) if target else match

    return map_matches(expr, rename)


def _renamed(match: Match, name: str) -> Match:
    return dataclasses.replace(match, field=name)


def _basename_match(match: Match, path_field: str, diagnostics: list[Diagnostic]) -> Expr:
    """`name <op> v` on a profile that only has the full path."""
    sep = Pattern.literal("\\")
    many = Pattern((Wildcard.MANY,))
    if match.op in (Op.EXISTS, Op.NULL):
        return _renamed(match, path_field)
    if not match.op.is_string:
        diagnostics.append(Diagnostic(
            Level.WARNING, "derived-field",
            f"{match.field} {match.op.value} has no equivalent on {path_field}; matched on the full path",
        ))
        return _renamed(match, path_field)
    values: list[Pattern] = []
    exact = match.op in (Op.EQUALS, Op.ENDSWITH)
    for value in match.values:
        assert isinstance(value, Pattern)
        if match.op in (Op.EQUALS, Op.ENDSWITH):
            values.append(many + (sep if match.op is Op.EQUALS else Pattern(())) + value)
        else:  # startswith/contains/wildcard: the pattern may also match a directory name
            values.append(many + sep + full_pattern(match, value))
        exact = exact and "\\" not in value.text
    if not exact:
        diagnostics.append(Diagnostic(
            Level.WARNING, "derived-field",
            f"{match.field} is matched on {path_field}; the pattern may also match a directory name",
        ))
    return patterns_match(path_field, values, match.case_sensitive, match.line)


def without_absent_fields(expr: Expr, absent: Callable[[str], bool]) -> Expr | bool:
    """The tree with every test on an `absent` field decided: such a field is never
    present, so a test on it is false (and `null` true). Returns a bool when the whole
    tree is decided. Used where a profile lacks a field the rule names (4688 has no
    OriginalFileName): an OR branch on it can be dropped instead of failing the rule."""
    if isinstance(expr, Match):
        if expr.field is None or not absent(expr.field):
            return expr
        return expr.op is Op.NULL
    if isinstance(expr, Not):
        inner = without_absent_fields(expr.item, absent)
        return (not inner) if isinstance(inner, bool) else Not(inner)
    is_and = isinstance(expr, And)
    kept: list[Expr] = []
    for item in expr.items:
        decided = without_absent_fields(item, absent)
        if isinstance(decided, bool):
            if decided != is_and:  # False in an AND, True in an OR decides the whole group
                return decided
            continue
        kept.append(decided)
    if not kept:
        return is_and
    return kept[0] if len(kept) == 1 else (And(tuple(kept)) if is_and else Or(tuple(kept)))
