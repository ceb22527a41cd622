"""Data Needed: which log records (channel, event id, profile fields) a rule depends on,
from `data/data_needed.yaml` and the field catalog. Shared by ATC cards and the site."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import Diagnostic, Level
from sigma_wmi.model import Op, Pattern, Rule, matches

# ---------------------------------------------------------------------------
# Data Needed: which log records a rule depends on
# ---------------------------------------------------------------------------

SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
SECURITY_CHANNEL = "Security"


@dataclass(frozen=True)
class DataNeeded:
    id: str  # DN_0003_1_windows_sysmon_process_creation
    title: str
    channel: str
    event_id: int
    profile: str | None
    fields: frozenset[str]
    description: str
    how_to_collect: str
    escu_data_source: str | None = None


@dataclass(frozen=True)
class DataNeededCatalog:
    entries: tuple[DataNeeded, ...]
    common_fields: frozenset[str]

    def for_event(self, channel: str, event_id: int) -> list[DataNeeded]:
        """The variants of one event, most basic first (ordered by DN number)."""
        return [d for d in self.entries if d.channel == channel and d.event_id == event_id]

    def for_channel(self, channel: str) -> list[DataNeeded]:
        return [d for d in self.entries if d.channel == channel]

    def by_escu_name(self, name: str) -> DataNeeded | None:
        wanted = name.strip().lower()
        return next((d for d in self.entries if (d.escu_data_source or "").lower() == wanted), None)


@functools.cache
def data_needed_catalog() -> DataNeededCatalog:
    text = (resources.files("sigma_wmi") / "data" / "data_needed.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    entries = tuple(
        DataNeeded(
            id=key, title=entry["title"], channel=entry["channel"], event_id=int(entry["event_id"]),
            profile=entry.get("profile"), fields=frozenset(entry.get("fields", ())),
            description=" ".join(str(entry.get("description", "")).split()),
            how_to_collect=" ".join(str(entry.get("how_to_collect", "")).split()),
            escu_data_source=entry.get("escu_data_source"),
        )
        for key, entry in sorted(doc["data_needed"].items())
    )
    return DataNeededCatalog(entries, frozenset(doc.get("common_fields", ())))


def rule_fields(rule: Rule) -> set[str]:
    """Every field the rule's detection tests or its `fields` list names (canonical names)."""
    used = {m.field for m in matches(rule.detection) if m.field}
    for m in matches(rule.detection):
        if m.op is Op.FIELDREF:
            used.update(str(v) for v in m.values)
    return used | set(rule.fields)


def _event_ids(rule: Rule) -> set[int]:
    """EventIDs a detection pins with an equality (for rules written on a whole channel)."""
    ids: set[int] = set()
    for m in matches(rule.detection):
        if m.field == "event_id" and m.op is Op.EQUALS:
            for value in m.values:
                text = value.text if isinstance(value, Pattern) else str(value)
                if text.strip().isdigit():
                    ids.add(int(text))
    return ids


def _covers(dn: DataNeeded, name: str, cat: Catalog, common: frozenset[str]) -> bool:
    available = dn.fields | common
    spec = cat.spec(name)
    if spec is None:  # not in the catalog: the rule's own name is the event's
        return name in available
    own = cat.name_in(dn.profile, name) if dn.profile else None
    if own and own in available:
        return True
    if spec.derive is not None:
        return _covers(dn, spec.derive.source, cat, common)
    return False


def data_needed(rule: Rule) -> tuple[list[DataNeeded], list[Diagnostic]]:
    """The DN records a rule needs, from its log source and the fields it uses.

    Of several variants of one event (4688 with and without command line) the most
    basic one that carries every field of the rule is chosen; an event none of whose
    variants carries the fields is left out. When no event carries them all, the
    fullest variant of each candidate is listed and an info diagnostic says so.
    """
    dns = data_needed_catalog()
    cat = catalog()
    escu_names = rule.extras.get("data_source") or rule.extras.get("data_sources") or ()
    if isinstance(escu_names, str):
        escu_names = [escu_names]
    from_escu = [d for d in (dns.by_escu_name(str(n)) for n in escu_names) if d is not None]
    if from_escu:  # the analytic names its data sources itself
        return sorted(set(from_escu), key=lambda d: d.id), []

    groups = [dns.for_event(channel, event_id) for channel, event_id in _candidate_events(rule, cat)]
    groups = [g for g in groups if g]
    if not groups:
        return [], []
    fields = sorted(rule_fields(rule))
    chosen: list[DataNeeded] = []
    for variants in groups:
        fit = next((d for d in variants
                    if all(_covers(d, f, cat, dns.common_fields) for f in fields)), None)
        if fit is not None:
            chosen.append(fit)
    diagnostics: list[Diagnostic] = []
    if not chosen:
        chosen = [variants[-1] for variants in groups]
        diagnostics.append(Diagnostic(
            Level.INFO, "data-needed",
            f"no known log record carries all of the rule's fields ({', '.join(fields)}); "
            "listing every record of its log source", rule.origin, "atc"))
    return sorted(set(chosen), key=lambda d: d.id), diagnostics


def _candidate_events(rule: Rule, cat: Catalog) -> list[tuple[str, int]]:
    if rule.logsource.product not in (None, "windows"):
        return []
    info = cat.logsource(rule.logsource)
    events = [(SYSMON_CHANNEL, i) for i in info.sysmon_event_ids]
    events += [(SECURITY_CHANNEL, i) for i in info.security_event_ids]
    if info.channel and not events:
        pinned = _event_ids(rule)
        ids = sorted(set(info.event_ids) & pinned if info.event_ids and pinned
                     else info.event_ids or pinned)
        if ids:
            events += [(info.channel, i) for i in ids]
        else:  # a whole channel: every record we know of it
            events += [(d.channel, d.event_id) for d in data_needed_catalog().for_channel(info.channel)]
    return list(dict.fromkeys(events))
