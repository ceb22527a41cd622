"""Splunk target facts from Splunk's ESCU content (`../shared/corpora/escu`).

Writes, with provenance:

* `data/schemas/splunk_<source>.json`: the raw fields of one Splunk source (a sourcetype and
  source pair), the union of the `fields:` of every ESCU data source read from it, each with
  the Windows event ids ESCU saw it in (`events`);
* `data/schemas/cim_<model>_<node>.json`: the fields of one CIM data set (`Endpoint.Processes`),
  from the data sources' `field_mappings` and the `Node.field` names ESCU
  detections search; its `split_by` key is the split-by list ESCU detections use most;
* `data/splunk_sources.json`: per Sigma log source, the sourcetype / source / event separator
  to search and the schema of its events, naming the ESCU data source and macros behind them;
  and the definitions of the macros tstats searches call, for `-O expand_macros=true`.
  Windows channels come from `logsources.yaml` (their one home); this file only maps each
  channel to the schema of `XmlWinEventLog:<channel>`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sigma_wmi.generate import write_json

# Which ESCU data source stands for a non-Windows Sigma log source: the judgement this
# script adds to the upstream data. Keys are Sigma (product, category, service).
NON_WINDOWS: Mapping[tuple[str, str | None, str | None], tuple[str, ...]] = {
    ("linux", "process_creation", None): ("Sysmon for Linux EventID 1",),
    ("linux", "file_event", None): ("Sysmon for Linux EventID 11",),
    ("linux", None, "auditd"): ("Linux Auditd Syscall", "Linux Auditd Execve", "Linux Auditd Path",
                                "Linux Auditd Proctitle"),
    ("aws", None, "cloudtrail"): ("AWS CloudTrail",),
    ("azure", None, "activitylogs"): ("Azure Monitor Activity",),
    ("azure", None, "auditlogs"): ("Azure Active Directory",),
    ("azure", None, "signinlogs"): ("Azure Active Directory Sign-in activity",),
    ("okta", None, "okta"): ("Okta",),
    ("github", None, "audit"): ("GitHub Enterprise Audit Logs",),
    ("kubernetes", None, "audit"): ("Kubernetes Audit",),
    ("kubernetes", "application", "audit"): ("Kubernetes Audit",),
    ("m365", None, "audit"): ("O365",),
    ("gcp", None, "google_workspace.login"): ("Google Workspace",),
    ("zeek", None, "dns"): ("Bro dns",),
    ("zeek", None, "http"): ("Bro http",),
    ("zeek", None, "conn"): ("Zeek Conn",),
}

# Split-by fields for data sets no ESCU detection in the corpus searches with tstats.
FALLBACK_SPLIT_BY: Mapping[str, tuple[str, ...]] = {
    "Network_Resolution.DNS": ("src", "query", "answer"),
}

# The root data set of a CIM data model, which `from datamodel=Change` (no node) searches: CIM's
# own structure (Splunk_SA_CIM's data model JSON), not in the ESCU content.
CIM_ROOT_DATASETS: Mapping[str, str] = {
    "Authentication": "Authentication",
    "Change": "All_Changes",
    "Endpoint": "Processes",
    "Network_Resolution": "DNS",
    "Network_Traffic": "All_Traffic",
    "Risk": "All_Risk",
}

# Fields Splunk indexes for every event, so every data set's tstats can search and split by them.
INDEXED_FIELDS = ("host", "index", "source", "sourcetype")

# Macros tstats searches call, written out for Splunk without ESCU (`-O expand_macros=true`).
EXPANDED_MACROS = ("security_content_summariesonly", "security_content_ctime")
# Ships with Splunk's CIM app (Splunk_SA_CIM), not with ESCU: (arguments, definition).
CIM_APP_MACROS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "drop_dm_object_name": (("object",), "rename $object$.* as *"),
}

_WINDOWS_SOURCE = re.compile(r"^(?:Xml)?WinEventLog:(?P<channel>.+)$")
_NOT_APPLICABLE = {"", "not_applicable", "None"}


@dataclass(frozen=True)
class DataSource:
    name: str
    file: str
    source: str
    sourcetype: str
    separator: str | None
    separator_value: str | None
    fields: tuple[str, ...]
    mappings: tuple[tuple[str, tuple[str, ...]], ...]  # (data set, CIM field names with node prefix)

    @property
    def key(self) -> tuple[str, str]:
        return self.sourcetype, self.source


def build(shared: Path, data: Path,
          non_windows: Mapping[tuple[str, str | None, str | None], tuple[str, ...]] = NON_WINDOWS) -> list[Path]:
    """Write the Splunk fact files into `data` from `shared`'s ESCU corpus; return their paths.
    `non_windows` says which ESCU data sources stand for which non-Windows Sigma log sources."""
    escu = shared / "corpora" / "escu"
    sources = _read_data_sources(escu / "data_sources")
    macros = _read_macros(escu / "macros")
    detections = list(_read_searches(escu / "detections"))
    logsources = yaml.safe_load((data / "logsources.yaml").read_text(encoding="utf-8"))
    version = _escu_version(escu)
    provenance = {"source": "Splunk ESCU security_content (Apache-2.0)", "version": version,
                  "generated_by": "python -m sigma_wmi.generate (sigma_wmi/generate/splunk.py)"}
    written: list[Path] = []

    # ---- log sources: Windows channels, then the non-Windows table ----
    # (the sysmon and security services name the channels of Sysmon and 4688 events)
    channels = sorted({str(entry["channel"]) for group in ("categories", "services")
                       for entry in (logsources.get(group) or {}).values() if entry.get("channel")})
    used: dict[tuple[str, str], list[DataSource]] = {}
    channel_schemas: dict[str, dict[str, Any]] = {}
    for channel in channels:
        matched = [s for s in sources.values() if _channel(s.source) == channel and s.source.startswith("Xml")]
        if matched:
            used.setdefault(matched[0].key, []).extend(matched)
            channel_schemas[channel] = {"schema": _schema_name(matched[0]),
                                        "data_sources": sorted(s.name for s in matched)}
    entries = []
    for (product, category, service), names in sorted(non_windows.items(), key=lambda kv: str(kv[0])):
        chosen = [sources[name] for name in names]
        first = chosen[0]
        conditions: dict[str, str] = {}
        if first.sourcetype not in _NOT_APPLICABLE:
            conditions["sourcetype"] = first.sourcetype
        mentions = sorted(m for m, (_, definition) in macros.items()
                          if _searches(definition, "sourcetype", first.sourcetype)
                          or _searches(definition, "source", first.source))
        # the source is deployment-specific unless an ESCU macro searches for it
        if first.source not in _NOT_APPLICABLE and any(_searches(macros[m][1], "source", first.source)
                                                       for m in mentions):
            conditions["source"] = first.source
        if len(chosen) == 1 and first.separator and first.separator_value:
            conditions[first.separator] = first.separator_value
        for source in chosen:
            used.setdefault(source.key, []).append(source)
        entries.append({"product": product, "category": category, "service": service,
                        "conditions": conditions, "schema": _schema_name(first),
                        "data_sources": list(names), "macros": mentions})

    for key, members in sorted(used.items()):
        same = [s for s in sources.values() if s.key == key]  # every data source of that Splunk source
        name = _schema_name(members[0])
        document = {"provenance": {**provenance, "data_sources": sorted(s.name for s in same),
                                   "sourcetype": key[0], "splunk_source": key[1]},
                    "fields": _fields_by_event(same)}
        path = data / "schemas" / f"{name}.json"
        write_json(path, document)
        written.append(path)

    # ---- CIM data sets ----
    cim_names = {str(e["cim"]) for e in (logsources.get("categories") or {}).values() if e.get("cim")}
    full_name = {n.split(".")[-1]: n for n in cim_names}
    searched = Counter(_dataset(m.group(1)) for text in detections
                       for m in re.finditer(r"datamodel\s*=\s*\"?(\w+(?:\.\w+)?)", text))
    full_name.update({n.split(".")[-1]: n for n in searched})
    cim_fields: dict[str, set[str]] = {}
    origins: dict[str, set[str]] = {}
    for source in sources.values():
        for data_set, mapped in source.mappings:
            dataset = full_name.get(data_set.split(".")[-1], data_set)
            node = dataset.split(".")[-1]
            # only mapping targets: a source's output_fields mix its own raw names in (4104)
            cim_fields.setdefault(dataset, set()).update(_without_node(f, node) for f in mapped)
            origins.setdefault(dataset, set()).add(source.name)
    for text in detections:
        for found in re.finditer(r"datamodel\s*=\s*\"?(\w+(?:\.\w+)?)", text):
            dataset = _dataset(found.group(1))
            node = dataset.split(".")[-1]
            # dotted CIM fields too (Risk's annotations.mitre_attack.mitre_tactic)
            cim_fields.setdefault(dataset, set()).update(
                m.group(1) for m in re.finditer(rf"\b{node}\.((?:\w+\.)*\w+)", text))
    splits = _split_by(detections)
    for dataset, known in sorted(cim_fields.items()):
        if dataset not in cim_names and not searched[dataset]:
            continue  # only data sets our log sources use or ESCU searches
        document = {"provenance": {**provenance, "data_sources": sorted(origins.get(dataset, ())),
                                   "detections_searching": searched[dataset], "data_set": dataset},
                    "split_by": list(splits.get(dataset) or FALLBACK_SPLIT_BY.get(dataset, ("dest",))),
                    "fields": {f: {} for f in sorted(known | set(INDEXED_FIELDS)) if f}}
        path = data / "schemas" / f"cim_{_slug(dataset)}.json"
        write_json(path, document)
        written.append(path)

    expanded: dict[str, Any] = {
        name: {"arguments": list(macros[name][0]), "definition": _expand(macros[name][1], macros),
               "from": f"ESCU macros/{name}.yml"} for name in EXPANDED_MACROS}
    expanded.update({name: {"arguments": list(arguments), "definition": definition, "from": "Splunk_SA_CIM"}
                     for name, (arguments, definition) in CIM_APP_MACROS.items()})
    index = data / "splunk_sources.json"
    write_json(index, {"provenance": provenance, "channels": channel_schemas, "logsources": entries,
                       "macros": expanded, "cim_root_datasets": dict(CIM_ROOT_DATASETS)})
    written.append(index)
    return written


def _dataset(name: str) -> str:
    """`Change` → `Change.All_Changes` (its root data set); a `Model.Node` name as it is."""
    return name if "." in name else f"{name}.{CIM_ROOT_DATASETS.get(name, name)}"


def _fields_by_event(sources: list[DataSource]) -> dict[str, dict[str, Any]]:
    """Fields of one Splunk source; `events` lists the event ids (EventCode/EventID values)
    ESCU saw a field in, when every data source naming it is one event's."""
    events: dict[str, set[str] | None] = {}
    for source in sources:
        for field in source.fields:
            seen = events.setdefault(field, set())
            if seen is not None and source.separator_value and source.separator in ("EventCode", "EventID"):
                seen.add(source.separator_value)
            else:
                events[field] = None  # seen without an event id: any event may have it
    return {field: ({"events": sorted(ids, key=lambda i: (len(i), i))} if ids else {})
            for field, ids in sorted(events.items())}


def _read_data_sources(folder: Path) -> dict[str, DataSource]:
    found: dict[str, DataSource] = {}
    for path in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        mappings = tuple((str(m.get("data_set")), tuple(str(v) for v in (m.get("mapping") or {}).values()))
                         for m in doc.get("field_mappings") or () if m.get("data_model") == "cim")
        found[str(doc["name"])] = DataSource(
            name=str(doc["name"]), file=path.name, source=str(doc.get("source") or ""),
            sourcetype=str(doc.get("sourcetype") or ""), separator=doc.get("separator"),
            separator_value=None if doc.get("separator_value") is None else str(doc["separator_value"]),
            fields=tuple(str(f) for f in doc.get("fields") or ()), mappings=mappings)
    return found


def _read_macros(folder: Path) -> dict[str, tuple[tuple[str, ...], str]]:
    """ESCU macros by name: (argument names, definition)."""
    macros = {}
    for path in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if doc.get("name") and doc.get("definition") is not None:
            macros[str(doc["name"])] = (tuple(str(a) for a in doc.get("arguments") or ()), str(doc["definition"]))
    return macros


def _expand(definition: str, macros: Mapping[str, tuple[tuple[str, ...], str]], depth: int = 0) -> str:
    """A definition with the argument-less macros it calls written out (`summariesonly_config`)."""
    if depth > 10:
        raise ValueError(f"macro nesting too deep in {definition!r}")

    def inline(found: re.Match[str]) -> str:
        name = found.group(1)
        if name in macros and not macros[name][0]:
            return _expand(macros[name][1], macros, depth + 1)
        return found.group(0)

    return re.sub(r"`([\w]+)`", inline, definition)


def _read_searches(folder: Path) -> Iterable[str]:
    for path in sorted(folder.rglob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(doc, dict) and isinstance(doc.get("search"), str):
            yield doc["search"]


def _split_by(searches: list[str]) -> dict[str, tuple[str, ...]]:
    """The split-by list ESCU's tstats detections use most often, per data set."""
    lists: dict[str, Counter[tuple[str, ...]]] = {}
    for text in searches:
        found = re.search(r"\|\s*tstats\b.*?datamodel=(\w+)\.(\w+).*?\bby\b(.*?)(?:\||$)", text, re.S)
        if not found:
            continue
        node = found.group(2)
        fields = tuple(_without_node(f, node) for f in found.group(3).split() if f.startswith(node + "."))
        if fields:
            lists.setdefault(f"{found.group(1)}.{node}", Counter())[fields] += 1
    return {dataset: counter.most_common(1)[0][0] for dataset, counter in lists.items()}


def _escu_version(escu: Path) -> str:
    readme = escu.parent.parent / "README.md"
    found = re.search(r"ESCU content (\d+(?:\.\d+)+)", readme.read_text(encoding="utf-8")) if readme.exists() else None
    return found.group(1) if found else "unknown"


def _searches(definition: str, field: str, value: str) -> bool:
    """Does a macro definition search `field=value` (quoted or not)?"""
    return bool(value) and re.search(rf'\b{field}\s*=\s*"?{re.escape(value)}"?(?=[\s)]|$)', definition) is not None


def _channel(source: str) -> str | None:
    found = _WINDOWS_SOURCE.match(source)
    return found.group("channel") if found else None


def _without_node(field: str, node: str) -> str:
    return field.split(".", 1)[1] if field.startswith(node + ".") else field


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _schema_name(source: DataSource) -> str:
    kind, where = _slug(source.sourcetype), _slug(source.source)
    if where in ("", "not_applicable") or where == kind:
        return f"splunk_{kind}"
    return f"splunk_{where}" if where.startswith(kind) else f"splunk_{kind}_{where}"
