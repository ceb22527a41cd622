"""Recorded Windows events → canonical events (catalog field names) and ECS documents.

Input is JSON lines (one flat object per line with the original Windows names, as
in ../shared/data/events), a JSON file holding one object or a list, or an EVTX
file read with the `evtx` package. Nested documents (ECS / winlogbeat) are accepted
too: their dotted paths are mapped back through the catalog's ecs and winlogbeat
names.

Keys starting with "@" carry provenance (file, line, source dataset); they are kept
out of matching, so a keyword search never hits a file name.
"""

from __future__ import annotations

import functools
import json
import ntpath
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.limits import MAX_EVENT_DEPTH, MAX_EVENT_LINE_BYTES
from sigma_wmi.model import LogSource
from sigma_wmi.readers.yamlsource import regular_file_error

Event = dict[str, Any]

# Collector bookkeeping, not event data: moved under "@" names so it never matches.
_META_KEYS = {
    "source": "@source",
    "source_format": "@source_format",
    "also_in": "@also_in",
    "_fields_recovered_from_Message": "@recovered_from_message",
    "nxlog_EventType": "@nxlog_EventType",
}

# Services whose channel selects a raw field profile (logsources.yaml `raw_profile`).
_PROFILE_SERVICES = ("sysmon", "security", "wmi")
# PowerShell and other channels carry Sysmon-style plain names (logsources.yaml ps_* categories).
_DEFAULT_PROFILE = "sysmon"

# Where a WMI-Activity message names a field differently from its EventData (5861).
_MESSAGE_KEYS = {"Eventfilter": "ESS", "Consumer": "CONSUMER", "ClientProcessID": "ClientProcessId"}
_MESSAGE_FIELD = re.compile(r"(?:^|[;,.]\s*)([A-Za-z][A-Za-z]*)\s*=\s?")
_REFER_SUFFIX = re.compile(r"\s*\(refer to its activate eventid:\d+\)\s*$")
_WMI_ACTIVITY_CHANNEL = "Microsoft-Windows-WMI-Activity/Operational"

_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------

def read_events(path: str | Path) -> Iterator[Event]:
    """Raw events from a JSON-lines, JSON or EVTX file, each tagged with "@file" and "@line"
    (the JSON line, or the EVTX record number). Bad input raises `SigmaWmiError`."""
    path = Path(path)
    if not path.exists():
        raise SigmaWmiError(f"event file not found: {path}", Origin(str(path)), "no-events")
    refused = regular_file_error(path)  # before any open: a FIFO blocks, /dev/zero never ends
    if refused is not None:
        raise refused
    if path.suffix.lower() == ".evtx":
        yield from _read_evtx(path)
    elif path.suffix.lower() in _JSON_SUFFIXES:
        yield from _read_json(path)
    else:
        raise SigmaWmiError(f"unknown event file type '{path.suffix}' (expected .jsonl, .json or .evtx)",
                            Origin(str(path)), "no-events")


def _read_json(path: Path) -> Iterator[Event]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SigmaWmiError(f"cannot read events: {err}", Origin(str(path)), "bad-events") from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped[:1] in ("[", "{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # maybe JSON lines after all
        except RecursionError:
            raise _too_deep(path, 1) from None
        if doc is not None:
            items = doc if isinstance(doc, list) else [doc]
            for index, item in enumerate(items, 1):
                yield _tagged(_json_object(item, path, 1), path, index)
            return
    # JSON lines end at \n only: U+2028 or \x1c inside a JSON string is text, not a line break
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if len(line) > MAX_EVENT_LINE_BYTES:
            raise SigmaWmiError(f"event line longer than {MAX_EVENT_LINE_BYTES} characters", Origin(str(path), number),
                                "bad-events")
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise SigmaWmiError(f"invalid JSON event: {err.msg} (column {err.colno})",
                                Origin(str(path), number, err.colno), "bad-events") from None
        except RecursionError:
            raise _too_deep(path, number) from None
        yield _tagged(_json_object(item, path, number), path, number)


def _json_object(item: Any, path: Path, line: int) -> Event:
    if not isinstance(item, dict):
        raise SigmaWmiError(f"an event must be a JSON object, got {type(item).__name__}",
                            Origin(str(path), line), "bad-events")
    if _deeper_than(item, MAX_EVENT_DEPTH):  # flattening recurses once per level
        raise _too_deep(path, line)
    # Elasticsearch exports wrap the document in _source.
    source = item.get("_source")
    return dict(source) if isinstance(source, dict) and "_index" in item else dict(item)


def _too_deep(path: Path, line: int) -> SigmaWmiError:
    return SigmaWmiError(f"event nested more than {MAX_EVENT_DEPTH} levels deep", Origin(str(path), line),
                         "bad-events")


def _deeper_than(value: Any, limit: int) -> bool:
    """Does `value` nest objects/arrays more than `limit` levels? (iterative: no recursion)"""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _tagged(event: Event, path: Path, line: int) -> Event:
    event.setdefault("@file", str(path))
    event.setdefault("@line", line)
    return event


def _read_evtx(path: Path) -> Iterator[Event]:
    import evtx  # optional dependency: only EVTX input needs it

    try:
        parser = evtx.PyEvtxParser(str(path))
        records = list(parser.records_json())
    except (RuntimeError, OSError, ValueError) as err:
        raise SigmaWmiError(f"cannot read EVTX: {err}", Origin(str(path)), "bad-events") from None
    for record in records:
        assert isinstance(record, dict)
        number = int(record.get("event_record_id") or 0)
        try:
            doc = json.loads(record["data"])
        except (KeyError, json.JSONDecodeError) as err:
            raise SigmaWmiError(f"EVTX record {number} is not valid JSON: {err}",
                                Origin(str(path), number), "bad-events") from None
        event = flatten_evtx_record(doc)
        event.setdefault("source_format", "evtx")
        yield _tagged(event, path, number)


def flatten_evtx_record(doc: Mapping[str, Any]) -> Event:
    """One EVTX record (the `evtx` package's JSON) as a flat event with Windows names."""
    root = doc.get("Event", doc)
    system = root.get("System") or {}
    event: Event = {}
    event_id = _text(system.get("EventID"))
    if event_id is not None:
        event["EventID"] = int(event_id)
    for key in ("Channel", "Computer"):
        if system.get(key) is not None:
            event[key] = _text(system[key])
    provider = system.get("Provider")
    if isinstance(provider, dict):
        event["Provider"] = (provider.get("#attributes") or {}).get("Name")
    created = system.get("TimeCreated")
    if isinstance(created, dict):
        event["TimeCreated"] = (created.get("#attributes") or {}).get("SystemTime")
    if system.get("EventRecordID") is not None:
        event["EventRecordID"] = _scalar(system["EventRecordID"])
    data = root.get("EventData")
    if isinstance(data, dict):
        _merge_data(event, data)
    user_data = root.get("UserData")
    if isinstance(user_data, dict):
        # UserData wraps its fields in one provider-specific element.
        for inner in user_data.values():
            if isinstance(inner, dict):
                _merge_data(event, {k: v for k, v in inner.items() if k != "#attributes"})
    return event


def _merge_data(event: Event, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if key == "#attributes":
            continue
        if key == "Data":
            # Unnamed <Data> elements (classic PowerShell 400/800): keep them as a list, as Sigma's `Data`.
            text = value.get("#text") if isinstance(value, dict) else value
            items = text if isinstance(text, list) else [text]
            event["Data"] = [str(i) if i is not None else "" for i in items]
            continue
        event.setdefault(key, _scalar(value))


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("#text")
    return None if value is None else str(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("#text")
    return value


# ---------------------------------------------------------------------------
# Canonical events
# ---------------------------------------------------------------------------

@functools.cache
def _channel_profiles() -> dict[str, str]:
    cat = catalog()
    table: dict[str, str] = {}
    for service in _PROFILE_SERVICES:
        info = cat.logsource(LogSource(product="windows", service=service))
        if info.channel and info.raw_profile:
            table[info.channel.lower()] = info.raw_profile
    return table


def raw_profile(event: Mapping[str, Any]) -> str:
    """The catalog profile whose names a raw event uses, chosen by its channel."""
    channel = event.get("Channel") or event.get("winlog.channel")
    if not isinstance(channel, str):
        return _DEFAULT_PROFILE
    return _channel_profiles().get(channel.lower(), _DEFAULT_PROFILE)


def canonical_event(raw: Mapping[str, Any]) -> Event:
    """The event with canonical field names (catalog keys), derived fields filled in,
    numbers as ints and WMI-Activity fields recovered from `Message` where missing.
    Fields the catalog does not know keep their raw names."""
    flat = _flatten(raw)
    profile = raw_profile(flat)
    numbers = _number_fields()
    if str(flat.get("Channel", "")).lower() == _WMI_ACTIVITY_CHANNEL.lower():
        _recover_from_message(flat)
    out: Event = {}
    for key, value in flat.items():
        if key in _META_KEYS:
            out[_META_KEYS[key]] = value
            continue
        if key.startswith("@"):
            out[key] = value
            continue
        name = _canonical_name(key, profile)
        if out.get(name) is None:  # the first non-null value wins (nested and flat copies)
            out[name] = _parse_int(value) if name in numbers and isinstance(value, str) else value
    for name, source in _derivations():
        if out.get(name) is None:
            path = out.get(source)
            if isinstance(path, str) and path:
                out[name] = ntpath.basename(path)
    return out


@functools.lru_cache(maxsize=8192)
def _canonical_name(key: str, profile: str) -> str:
    return _lookup_name(key, profile, catalog())


def _lookup_name(key: str, profile: str, cat: Catalog) -> str:
    for prefix in ("winlog.event_data.", "winlog.user_data."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    else:
        if "." in key:
            return cat.from_profile("ecs", key) or cat.from_profile("winlogbeat", key) or key
    return cat.from_profile(profile, key) or key


@functools.cache
def _number_fields() -> frozenset[str]:
    cat = catalog()
    return frozenset(name for name, spec in cat.fields.items() if spec.type == "number") | {"event_id"}


def _parse_int(text: str) -> int | str:
    stripped = text.strip()
    try:
        if stripped.lower().startswith("0x"):
            return int(stripped, 16)
        return int(stripped)
    except ValueError:
        return text


@functools.cache
def _derivations() -> tuple[tuple[str, str], ...]:
    """(derived field, path field) for every basename derivation in the catalog."""
    return tuple((name, spec.derive.source) for name, spec in catalog().fields.items()
                 if spec.derive is not None and spec.derive.how == "basename")


def _recover_from_message(event: Event) -> None:
    """nxlog keeps some WMI-Activity fields only in the rendered `Message`."""
    message = event.get("Message")
    if not isinstance(message, str):
        return
    for key, value in parse_message_fields(message).items():
        key = _MESSAGE_KEYS.get(key, key)
        if event.get(key) in (None, ""):
            event[key] = value


def parse_message_fields(message: str) -> dict[str, str]:
    """`Key = value; Key = value; PossibleCause = rest` from a WMI-Activity message.
    PossibleCause is always last and runs to the end (it holds MOF text with `;` and `=`)."""
    fields: dict[str, str] = {}
    cause = message.find("PossibleCause = ")
    head = message if cause < 0 else message[:cause]
    marks = list(_MESSAGE_FIELD.finditer(head))
    for index, mark in enumerate(marks):
        end = marks[index + 1].start() if index + 1 < len(marks) else len(head)
        value = head[mark.end():end].strip().rstrip(";,").strip()
        fields.setdefault(mark.group(1), _REFER_SUFFIX.sub("", value))
    if cause >= 0:
        fields["PossibleCause"] = message[cause + len("PossibleCause = "):]
    return fields


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> Event:
    if not prefix and not any(isinstance(v, dict) for v in raw.values()):
        return dict(raw)  # the common case: already flat
    flat: Event = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not key.startswith("@"):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def canonical_events(raws: Iterable[Mapping[str, Any]]) -> Iterator[Event]:
    return (canonical_event(raw) for raw in raws)


# ---------------------------------------------------------------------------
# ECS
# ---------------------------------------------------------------------------

@functools.cache
def _ecs_categories() -> dict[tuple[str, int], tuple[str | None, str | None]]:
    """(profile, event id) → (event.category, event.type), from logsources.yaml."""
    cat = catalog()
    table: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    for category in cat.categories():
        info = cat.logsource(LogSource(product="windows", category=category))
        if not info.ecs_category:
            continue
        for profile, ids in (("sysmon", info.sysmon_event_ids), ("security", info.security_event_ids),
                             ("sysmon", info.event_ids)):
            for event_id in ids:
                table.setdefault((profile, event_id), (info.ecs_category, info.ecs_type))
    return table


def to_ecs(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A nested ECS document for a raw (or canonical) event, names from the catalog's
    `ecs` profile; fields it lacks go under winlog.event_data. `event.category` and
    `event.type` come from the log-source table; `event.code` is a string, as in ECS."""
    event = raw if _is_canonical(raw) else canonical_event(raw)
    cat = catalog()
    doc: dict[str, Any] = {}
    for name, value in event.items():
        if name.startswith("@") or value is None:
            continue
        if name == "event_id":
            _put(doc, "event.code", str(value))
            continue
        path = cat.name_in("ecs", name) or (name if "." in name else f"winlog.event_data.{name}")
        _put(doc, path, value)
    event_id = event.get("event_id")
    if isinstance(event_id, int):
        profile = raw_profile({"Channel": event.get("channel")})
        category, kind = _ecs_categories().get((profile, event_id), (None, None))
        if category:
            _put(doc, "event.category", category)
        if kind:
            _put(doc, "event.type", kind)
    return doc


def _is_canonical(event: Mapping[str, Any]) -> bool:
    return "event_id" in event or "channel" in event


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path; a path that collides with an existing leaf or object is skipped,
    and the first value wins (e.g. user.name from TargetUserName over SubjectUserName)."""
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return
        node = child
    if leaf not in node:
        node[leaf] = value
