"""Every field of every SigmaHQ rule resolves alike in rules and events (one mapping path).

For each rule, an EVTX record (the `evtx` package's JSON) is built from the rule's own
field names, read straight from its YAML (not through our reader): the envelope in
<System>, the rest as event data, on the channel and with an event id of the rule's log
source. The event is mapped through the
events path for that log source, and every field of the rule as our reader modelled it
must be present in it (`field|exists`), with the log source's predicate selecting it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import yaml
from conftest import shared_path

from sigma_wmi.catalog import catalog
from sigma_wmi.evaluate import compile_expr, logsource_predicate
from sigma_wmi.events import canonical_event, flatten_evtx_record
from sigma_wmi.model import LogSource, Match, Op, matches
from sigma_wmi.readers import read_source, rule_files

# Sigma names of the EVTX <System> element's fields; every other field is event data.
SYSTEM = {"EventID", "Channel", "Computer", "Provider_Name"}


def evtx_record(channel: str | None, event_id: int | None, names: set[str]) -> dict[str, Any]:
    """The evtx package's JSON of a record carrying each named field."""
    system: dict[str, Any] = {"Channel": channel, "EventID": event_id} if channel else {}
    for name in sorted(names & SYSTEM):
        if name == "Provider_Name":
            system["Provider"] = {"#attributes": {"Name": "x"}}
        elif name == "EventID":
            system.setdefault(name, 1)
        else:
            system.setdefault(name, "x")
    data = {name: "x" for name in sorted(names - SYSTEM)}
    return {"Event": {"System": system, "EventData": data}}


# Known ambiguity, not drift: WMI-Activity 5859 has a UserData `Provider` (the WMI provider)
# while flat collector exports (nxlog, the shared JSON lines) use `Provider` for the System
# provider, which the catalog's wmi_activity profile follows. The rule's `Provider` keeps its
# Sigma name; in an event the name means the System provider.
AMBIGUOUS = {"windows/-/wmi:Provider"}


def sigma_field_names(detection: Any) -> set[str]:
    """Field names of a Sigma `detection:` block, modifiers stripped."""
    names: set[str] = set()
    if not isinstance(detection, dict):
        return names
    for key, body in detection.items():
        if key in ("condition", "timeframe"):
            continue
        items = body if isinstance(body, list) else [body]
        for item in items:
            if isinstance(item, dict):
                names.update(str(k).split("|")[0] for k in item)
    return names


def recorded_on(logsource: LogSource) -> tuple[str | None, int | None]:
    """A channel and event id under which the log source's events are recorded."""
    cat = catalog()
    info = cat.logsource(logsource)
    sysmon = cat.logsource(LogSource("windows", service="sysmon")).channel
    security = cat.logsource(LogSource("windows", service="security")).channel
    if info.sysmon_event_ids:
        return sysmon, info.sysmon_event_ids[0]
    if info.security_event_ids:
        return security, info.security_event_ids[0]
    if info.channel:
        return info.channel, (info.event_ids[0] if info.event_ids else 1)
    return None, None


def test_every_sigmahq_field_resolves_in_its_events() -> None:
    started = time.process_time()  # CPU time: the bound holds on a busy machine too
    files = rule_files([shared_path("corpora", "sigmahq", "rules")])
    checked = fields = 0
    misses: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for path in files:
        source = read_source(path)
        if source.error:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
        for rule, doc in zip(source.rules, docs, strict=False):
            if rule.aggregation is not None and not doc.get("detection"):
                continue  # a correlation rule: its base rules carry the fields
            channel, event_id = recorded_on(rule.logsource)
            raw = flatten_evtx_record(evtx_record(channel, event_id, sigma_field_names(doc.get("detection"))))
            event = canonical_event(raw, rule.logsource)
            assert logsource_predicate(rule.logsource)(event), (path, rule.logsource, event)
            checked += 1
            for field in {m.field for m in matches(rule.detection) if m.field is not None}:
                fields += 1
                if not compile_expr(Match(field, Op.EXISTS))(event):
                    key = f"{rule.logsource.key()}:{field}"
                    misses[key] += 1
                    examples.setdefault(key, str(path))
    seconds = time.process_time() - started
    assert checked > 3000 and fields > 6000, (checked, fields)
    assert set(misses) <= AMBIGUOUS, [(k, n, examples[k]) for k, n in misses.most_common(20)]
    assert seconds < 30, seconds
