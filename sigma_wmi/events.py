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

# Where a WMI-Activity message names a field differently from its EventData (5861).
_MESSAGE_KEYS = {"Eventfilter": "ESS", "Consumer": "CONSUMER", "ClientProcessID": "ClientProcessId"}
_MESSAGE_FIELD = re.compile(r"(?:^|[;,.]\s*)([A-Za-z][A-Za-z]*)\s*=\s?")
_REFER_SUFFIX = re.compile(r"\s*\(refer to its activate eventid:\d+\)\s*$")
# The Sigma service (logsources.yaml gives its channel) whose nxlog exports keep fields in `Message`.
_MESSAGE_FIELDS_SERVICE = "wmi"

_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")

# System fields an event's own data may also name; the System value then goes under the
# Sigma taxonomy's name for it, which the catalog resolves like the rule's.
_SYSTEM_SIGMA_NAMES = {"Provider": "Provider_Name"}


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
    """A JSON document (object or list), or a stream of objects: one per line, several
    per line, or pretty-printed across lines, with evtx_dump's `Record N` headers between
    them. evtx-shaped objects ({"Event": {"System": ...}}) are flattened as EVTX records are."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SigmaWmiError(f"cannot read events: {err}", Origin(str(path)), "bad-events") from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped[:1] in ("[", "{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # a stream of objects after all
        except RecursionError:
            raise _too_deep(path, 1) from None
        except ValueError as err:  # a number beyond Python's int-string limit
            raise _bad_number(path, 1, err) from None
        if doc is not None:
            items = doc if isinstance(doc, list) else [doc]
            for index, item in enumerate(items, 1):
                yield _tagged(_json_object(item, path, 1), path, index)
            return
    for line, item in _json_stream(text, path):
        yield _tagged(_json_object(item, path, line), path, line)


_RECORD_HEADER = re.compile(r"Record \d+[ \t]*(?:\r?\n|$)")
_decoder = json.JSONDecoder()


def _json_stream(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """(line where it starts, value) for each JSON value in a stream."""
    position, line, length = 0, 1, len(text)
    while True:
        start = position
        while position < length and text[position] in " \t\r\n":
            position += 1
        line += text.count("\n", start, position)
        if position >= length:
            return
        header = _RECORD_HEADER.match(text, position)
        if header:
            line += text.count("\n", position, header.end())
            position = header.end()
            continue
        # JSON lines end at \n only: U+2028 or \x1c inside a JSON string is text, not a line break
        end_of_line = text.find("\n", position)
        if (end_of_line if end_of_line >= 0 else length) - position > MAX_EVENT_LINE_BYTES:
            raise SigmaWmiError(f"event line longer than {MAX_EVENT_LINE_BYTES} characters", Origin(str(path), line),
                                "bad-events")
        try:
            item, end = _decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            if text[err.pos:].strip():
                where, column = err.lineno, err.colno
            else:  # cut off at the end: the event that never closes is the one to name
                where, column = line, 1
            raise SigmaWmiError(f"invalid JSON event: {err.msg} (column {column})",
                                Origin(str(path), where, column), "bad-events") from None
        except RecursionError:
            raise _too_deep(path, line) from None
        except ValueError as err:
            raise _bad_number(path, line, err) from None
        if end - position > MAX_EVENT_LINE_BYTES:  # a pretty-printed event is bounded as a whole
            raise SigmaWmiError(f"event longer than {MAX_EVENT_LINE_BYTES} characters", Origin(str(path), line),
                                "bad-events")
        yield line, item
        line += text.count("\n", position, end)
        position = end


def _json_object(item: Any, path: Path, line: int) -> Event:
    if not isinstance(item, dict):
        raise SigmaWmiError(f"an event must be a JSON object, got {type(item).__name__}",
                            Origin(str(path), line), "bad-events")
    if _deeper_than(item, MAX_EVENT_DEPTH):  # flattening recurses once per level
        raise _too_deep(path, line)
    # Elasticsearch exports wrap the document in _source.
    source = item.get("_source")
    if isinstance(source, dict) and "_index" in item:
        return dict(source)
    if is_evtx_record(item):  # the evtx crate's / evtx_dump's JSON of one record
        return flatten_evtx_record(item)
    return dict(item)


def is_evtx_record(item: Mapping[str, Any]) -> bool:
    root = item.get("Event")
    return isinstance(root, dict) and isinstance(root.get("System"), dict)


def known_shape(event: Mapping[str, Any], names: Iterable[str]) -> bool:
    """Does a raw event look like something the catalog can map: does it carry one of
    `names`, the catalog's names of the event id and channel (`Catalog.identity_names`:
    EventID, Channel, event.code, winlog.channel and what a team's mapping calls them),
    flat or as a nested ECS/winlogbeat document?"""
    if any(key in event for key in names):
        return True
    nested = event.get("event")
    winlog = event.get("winlog")
    return (isinstance(nested, dict) and "code" in nested) or (isinstance(winlog, dict) and "channel" in winlog)


def _bad_number(path: Path, line: int, err: ValueError) -> SigmaWmiError:
    return SigmaWmiError(f"invalid JSON event: {err}", Origin(str(path), line), "bad-events")


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
    provider = _attributes(system, "Provider")
    if provider.get("Name") is not None:
        event["Provider"] = provider["Name"]
    created = _attributes(system, "TimeCreated")
    if created.get("SystemTime") is not None:
        event["TimeCreated"] = created["SystemTime"]
    if system.get("EventRecordID") is not None:
        event["EventRecordID"] = _scalar(system["EventRecordID"])
    payload: Event = {}
    data = root.get("EventData")
    if isinstance(data, dict):
        _merge_data(payload, data)
    user_data = root.get("UserData")
    if isinstance(user_data, dict):
        # UserData wraps its fields in one provider-specific element.
        for inner in user_data.values():
            if isinstance(inner, dict):
                _merge_data(payload, {k: v for k, v in inner.items() if k != "#attributes"})
    for key, sigma_name in _SYSTEM_SIGMA_NAMES.items():
        if key in payload and key in event:  # WMI-Activity's own `Provider`: the System one steps aside
            event[sigma_name] = event.pop(key)
    for key, value in payload.items():
        event.setdefault(key, value)
    return event


def _attributes(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """An element's XML attributes in either JSON form: {"X": {"#attributes": {...}}}
    (evtx_dump's default) or {"X_attributes": {...}} (the crate's separate attributes)."""
    value = parent.get(key)
    attributes = value.get("#attributes") if isinstance(value, dict) else None
    if not isinstance(attributes, dict):
        attributes = parent.get(f"{key}_attributes")
    return attributes if isinstance(attributes, dict) else {}


def _named_data(value: Any) -> dict[str, Any] | None:
    """`<Data Name="x">v</Data>` elements as a list of {"#attributes": {"Name": ...}, "#text": ...}
    (or "@Name", as xmltodict writes them): {name: value}; None when they are unnamed."""
    items = value if isinstance(value, list) else [value]
    named: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        attributes = item.get("#attributes")
        name = attributes.get("Name") if isinstance(attributes, dict) else item.get("@Name")
        if not isinstance(name, str):
            return None
        named[name] = item.get("#text")
    return named


def _merge_data(event: Event, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if key == "#attributes" or key.endswith("_attributes"):
            continue
        named = _named_data(value) if key == "Data" else None
        if named:
            _merge_data(event, named)
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

def event_logsource(event: Mapping[str, Any], cat: Catalog | None = None) -> LogSource:
    """The log source a raw or flat event belongs to, by its channel and event id."""
    cat = cat or catalog()
    channel = _channel(event, cat)
    return cat.logsource_of_event(channel,
                                  _event_id(event.get("EventID") or event.get("event.code")))


def _channel(event: Mapping[str, Any], cat: Catalog) -> str | None:
    """A flat raw event's channel, under its Windows or its winlogbeat name (catalog)."""
    for profile in ("sysmon", "winlogbeat"):
        name = cat.name_in(profile, "channel")
        value = event.get(name) if name else None
        if isinstance(value, str):
            return value
    return None


def _event_id(value: Any) -> int | None:
    parsed = _parse_int(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, int) and not isinstance(parsed, bool) else None


def raw_profile(event: Mapping[str, Any], logsource: LogSource | None = None) -> str:
    """The catalog profile whose names a raw event uses when read for rules of `logsource`
    (default: the event's own log source), chosen by its channel."""
    cat = catalog()
    logsource = logsource or event_logsource(event, cat)
    return cat.event_profile(logsource, _channel(event, cat))


def canonical_event(raw: Mapping[str, Any], logsource: LogSource | None = None,
                    cat: Catalog | None = None) -> Event:
    """The event with the names rules of `logsource` give its fields (default: the log
    source the event itself belongs to): each name resolves through the same catalog
    lookup as a rule's Sigma names (`Catalog.resolve_event_name`), so a field a rule
    keeps under its Sigma name in that log source keeps its raw name here too.
    Derived fields are filled in, numbers become ints and WMI-Activity fields are
    recovered from `Message` where missing. Spaces in names are dropped (Defender's
    `Source Name` is Sigma's `SourceName`). Unknown fields keep their raw names."""
    cat = cat or catalog()
    flat = _flatten(raw)
    logsource = logsource or event_logsource(flat, cat)
    channel = _channel(flat, cat)
    profile = cat.event_profile(logsource, channel)
    numbers = _number_fields(cat)
    if channel and cat.service_of_channel(channel) == _MESSAGE_FIELDS_SERVICE:
        _recover_from_message(flat)
    out: Event = {}
    for key, value in flat.items():
        if key in _META_KEYS:
            out[_META_KEYS[key]] = value
            continue
        if key.startswith("@"):
            out[key] = value
            continue
        name = _canonical_name(key, profile, logsource, cat)
        if out.get(name) is None:  # the first non-null value wins (nested and flat copies)
            out[name] = _parse_int(value) if name in numbers and isinstance(value, str) else value
    for name, source in _derivations(cat):
        if out.get(name) is None:
            path = out.get(source)
            if isinstance(path, str) and path:
                out[name] = ntpath.basename(path)
    return out


@functools.lru_cache(maxsize=16384)
def _canonical_name(key: str, profile: str, logsource: LogSource, cat: Catalog) -> str:
    return _lookup_name(key, profile, logsource, cat)


def _lookup_name(key: str, profile: str, logsource: LogSource, cat: Catalog) -> str:
    for prefix in cat.event_data_prefixes:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    else:
        if "." in key:
            for nested in ("ecs", "winlogbeat"):
                name = cat.resolve_event_name(nested, key, logsource)
                if name != key:
                    return name
            return key
    key = key.replace(" ", "")
    return cat.resolve_event_name(profile, key, logsource)


@functools.cache
def _number_fields(cat: Catalog) -> frozenset[str]:
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
def _derivations(cat: Catalog) -> tuple[tuple[str, str], ...]:
    """(derived field, path field) for every basename derivation in the catalog."""
    return tuple((name, spec.derive.source) for name, spec in cat.fields.items()
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

def to_ecs(raw: Mapping[str, Any], cat: Catalog | None = None) -> dict[str, Any]:
    """A nested ECS document for a raw (or canonical) event, names from the catalog's
    `ecs` profile; fields it lacks go under winlog.event_data. `event.category` and
    `event.type` come from the log-source table; `event.code` is a string, as in ECS.
    `cat`: a catalog with an environment mapping, else the packaged one."""
    cat = cat or catalog()
    event = raw if _is_canonical(raw) else canonical_event(raw, cat=cat)
    doc: dict[str, Any] = {}
    for name, value in event.items():
        if name.startswith("@") or value is None:
            continue
        if name == "event_id":
            _put(doc, "event.code", str(value))
            continue
        path = cat.name_in("ecs", name) or (name if "." in name else f"{cat.event_data_prefixes[0]}{name}")
        _put(doc, path, value)
    event_id = event.get("event_id")
    if isinstance(event_id, int):
        channel = event.get("channel")
        info = cat.logsource(cat.logsource_of_event(channel if isinstance(channel, str) else None, event_id))
        if info.ecs_category:
            _put(doc, "event.category", info.ecs_category)
        if info.ecs_type:
            _put(doc, "event.type", info.ecs_type)
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
