"""Which log source a raw-event ESCU search reads, and the model names of its fields.

A raw ESCU search starts with a data-source macro (`` `sysmon` ``, `` `wineventlog_security` ``,
`` `linux_auditd` `` ...) that expands to `source=` / `sourcetype=` / `eventtype=` terms. Those
terms, with the event-id terms beside them (`EventCode=20`), decide the Sigma log source, all
from data:

* a Windows source `(Xml)WinEventLog:<channel>` names a channel; `logsources.yaml` says which
  service has that channel and which category an event id of it belongs to
  (`Catalog.logsource_of_event`: Sysmon 20 → wmi_event, Security 4688 → process_creation);
* any other source or sourcetype is matched against the ESCU data sources that stand for a
  Sigma log source (`data/splunk_sources.json`, generated: `auditd` → linux/auditd).

An event-id term that only says what the category already says (Sysmon `EventCode=1` for
process_creation) is part of the log source; a narrower one (`EventCode=20` of wmi_event's
19/20/21) stays a condition, as a Sigma rule would write it. Our own raw Splunk output
(`source="XmlWinEventLog:..." EventCode IN (...)`) reads back the same way.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from sigma_wmi.backends.splunk_data import (
    EVENT_ID_FIELDS,
    channel_schema,
    cim_nodes,
    logsource_entries,
    raw_fields,
)
from sigma_wmi.catalog import Catalog, to_profile
from sigma_wmi.errors import Diagnostic
from sigma_wmi.model import And, Expr, LogSource, Match, Op, Or, Pattern, map_matches, matches

# Fields that say where events are (index, sourcetype...), not what is in them (lower case).
SELECTOR_FIELDS = frozenset({"index", "source", "sourcetype", "eventtype", "channel"})
_WINDOWS_SOURCE = re.compile(r"^(?:Xml)?WinEventLog:(?P<channel>.+)$", re.I)


@dataclass(frozen=True)
class RawSource:
    """Where a raw search reads: the Sigma log source and how its events name fields."""

    logsource: LogSource
    profile: str | None  # the catalog profile its events are read in (`Catalog.event_profile`)
    schema: str | None  # the Splunk source's field list (data/schemas/splunk_*.json)
    described: str  # the Splunk source, for messages
    event_ids: tuple[int, ...] = ()  # the ids the search selects, when they chose the log source
    written: str | None = None  # the profile our raw Splunk output writes it in, when not `profile`
    others: tuple[str, ...] = ()  # other sources the terms also name (`sysmon` includes Linux Sysmon)


def is_selector(expr: Expr) -> bool:
    """Is the conjunct only about where events are (`source=... OR eventtype=...`)?"""
    return all(m.field is not None and m.field.lower() in SELECTOR_FIELDS for m in matches(expr)) \
        and not any(m.op not in (Op.EQUALS, Op.EXISTS) for m in matches(expr)) and not _has_not(expr)


def _has_not(expr: Expr) -> bool:
    if isinstance(expr, Match):
        return False
    if isinstance(expr, (And, Or)):
        return any(_has_not(item) for item in expr.items)
    return True


def event_ids(expr: Expr, is_event_id: Callable[[str], bool]) -> frozenset[int] | None:
    """The event ids a conjunct allows when it is only `EventCode=n` / `IN (...)` / ORs of them."""
    if isinstance(expr, Match) and expr.field is not None and is_event_id(expr.field) and expr.op is Op.EQUALS:
        ids = [_event_id(v) for v in expr.values]
        return frozenset(i for i in ids if i is not None) if None not in ids else None
    if isinstance(expr, Or):
        found = [event_ids(item, is_event_id) for item in expr.items]
        if all(ids is not None for ids in found):
            return frozenset().union(*(ids for ids in found if ids is not None))
    return None


def _event_id(value: object) -> int | None:
    """An event id as written: `4688` or `"4688"`."""
    if type(value) is int:
        return value
    if isinstance(value, Pattern) and not value.has_wildcards and value.text.isdigit():
        return int(value.text)
    return None


def is_event_id_name(cat: Catalog, name: str) -> bool:
    return name in EVENT_ID_FIELDS or cat.from_profile("splunk", name) == "event_id" \
        or name == "event_id"


def resolve(selectors: list[Expr], ids: frozenset[int] | None, cat: Catalog) -> RawSource | None:
    """The log source the selector terms and the event ids stand for; None when no data knows it."""
    values: list[tuple[str, str]] = []
    for expr in selectors:
        for match in matches(expr):
            for value in match.values:
                if isinstance(value, Pattern) and not value.has_wildcards and match.field:
                    values.append((match.field.lower(), value.text))
    found: RawSource | None = None
    same: str = ""  # the chosen channel or sourcetype: other spellings of it are not other sources
    for field, value in values:  # a Windows channel first: it names the service and the event kinds
        channel = _channel(field, value)
        service = cat.service_of_channel(channel) if channel else None
        if channel and service:
            found, same = _windows(cat, service, channel, ids), channel.lower()
            break
    for field, value in values if found is None else ():
        entry = next((e for e in logsource_entries() if e["conditions"].get(field) == value), None)
        if entry is not None:
            logsource = LogSource(product=entry["product"], category=entry["category"], service=entry["service"])
            found = RawSource(logsource, cat.event_profile(logsource, None), entry.get("schema"),
                              f"{field}={value}", written=plain_profile(cat, logsource))
            same = value.lower()
            break
    if found is None:
        return None
    others = tuple(dict.fromkeys(f"{f}={v}" for f, v in values if f in ("source", "sourcetype")
                                 and (_channel(f, v) or v).lower() != same))
    return dataclasses.replace(found, others=others)


def plain_profile(cat: Catalog, logsource: LogSource) -> str:
    """The profile our raw Splunk output writes a log source in (`SplunkBackend.raw_profile`'s
    choice for `-p auto`)."""
    return cat.logsource(logsource).raw_profile or "sysmon"


def _channel(field: str, value: str) -> str | None:
    if field in ("source", "sourcetype"):  # older add-ons put the channel in the sourcetype
        found = _WINDOWS_SOURCE.match(value)
        return found.group("channel") if found else None
    return value if field == "channel" else None


def _windows(cat: Catalog, service: str, channel: str, ids: frozenset[int] | None) -> RawSource:
    logsource = LogSource(product="windows", service=service)
    channel = cat.logsource(logsource).channel or channel  # as the log-source table spells it
    if ids:
        kinds = {cat.logsource_of_event(channel, i) for i in ids}
        if len(kinds) == 1:
            logsource = kinds.pop()
    info = cat.logsource(logsource)
    # read as `sigma-wmi test` reads the channel's events; written as our raw Splunk output writes
    # the log source (a Security service rule in Security's names, a category in its raw profile)
    profile = cat.event_profile(logsource, channel)
    written = "security" if service == "security" and not logsource.category else plain_profile(cat, logsource)
    # the event ids that only restate the category are part of it (Sysmon 1 is process_creation)
    own = (info.sysmon_event_ids if service == "sysmon" else info.security_event_ids
           if service == "security" else info.event_ids)
    implied = tuple(sorted(own)) if logsource.category else ()
    return RawSource(logsource, profile, channel_schema(channel), f"XmlWinEventLog:{channel}", implied, written)


class FieldNames:
    """Raw-search field names → canonical names for one Splunk source.

    The Splunk add-on's names first (EventCode), then the events' own names in the source's
    profile (Image, NewProcessName), then CIM names the add-on also extracts (process_name).
    A name none of them knows stays as written when the Splunk source has it (ESCU lists
    the fields of each data source, as a Sigma rule of the service names the channel's
    fields); otherwise it is reported through `unknown`.
    """

    def __init__(self, cat: Catalog, source: RawSource, unknown: Callable[[str, str], None],
                 unlisted: Callable[[str], None] = lambda name: None) -> None:
        self.catalog = cat
        self.source = source
        self.unknown = unknown
        self.unlisted = unlisted
        self.fields = raw_fields(source.schema) or {}

    def __call__(self, name: str) -> str:
        return self.resolve(name, report=True)

    def resolve(self, name: str, report: bool) -> str:
        cat, logsource, profile = self.catalog, self.source.logsource, self.source.profile
        written = self.source.written or profile
        found = cat.from_profile("splunk", name)
        if found:
            return found
        if profile:
            canonical = cat.resolve_event_name(profile, name, logsource)
            spec = cat.spec(canonical)
            if spec is not None and canonical == name and written \
                    and (logsource.category is None or not cat.applies(spec, logsource)) \
                    and cat.name_in(written, canonical) != name:
                # an add-on alias (`user`, `process_name`) that is also a catalog field, in a log
                # source the catalog does not define it for: the add-on fills it per event (4663's
                # process_name comes from ProcessName), the catalog's name is another field
                if report:
                    target = cat.name_in(written, canonical)
                    shown = target or (f"derived from {spec.derive.source}" if spec.derive else "none")
                    self.unknown(name, f"is the add-on's per-event alias of a catalog field that {logsource.key()} "
                                       f"does not define (the catalog's {written} name: {shown})")
                return name
            if spec is not None:
                return canonical
            # a raw name of the profile, in a log source its catalog entry does not list
            # (Sysmon's ProcessId in an image load): the backend writes it the same way
            found = cat.from_profile(profile, name)
            if found and cat.name_in(profile, found) == name:  # the same spelling: Splunk names are cased
                return found
        if profile and logsource.category:
            # a CIM name, also as a tstats-style macro writes it inside a raw search (Processes.process_name)
            node, _, bare = name.partition(".")
            cim = cat.from_profile("cim", bare if bare and node in cim_nodes() else name)
            if cim:
                return cim
        if name in self.fields or name.lower() in SELECTOR_FIELDS:  # Splunk field names are case-sensitive
            return name
        if not report:
            return name
        if logsource.service is not None and logsource.category is None:
            # Sigma rules of a service name its events' own fields, and ESCU's field
            # lists come from sample events: an unlisted name is most likely a field they missed
            self.unlisted(name)
        else:
            self.unknown(name, f"is neither in the field catalog nor a field ESCU lists for {self.source.described}")
        return name

    def in_event_names(self, expr: Expr, diagnostics: list[Diagnostic]) -> Expr:
        """The condition as the source's events can test it: a canonical field the events do not
        carry (process_name in Sysmon) on the field it comes from (Image ends with it), read back
        into canonical names, exactly as our raw Splunk output of it reads back."""
        written = self.source.written or self.source.profile
        if not written:
            return expr
        renamed = to_profile(expr, ("splunk", written), lambda name: name, diagnostics, self.catalog)

        def back(match: Match) -> Expr:
            if match.field is None:
                return match
            return Match(self.resolve(match.field, report=False), match.op, match.values, match.case_sensitive,
                         match.line)

        return map_matches(renamed, back)
