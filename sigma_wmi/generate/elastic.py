"""Build the Elastic target schemas (`data/schemas/{ecs,defend_*,winlogbeat,elastic_agent}.json`).

Sources (all under `../shared/schemas/`, see its README for upstream and license):

- `ecs/ecs_flat.yml`: every ECS field, flat, with type, `ignore_above`, `allowed_values`
  and multi-fields (`.text`).
- `elastic-endpoint/<stream>/fields.yml` + `manifest.yml`: one Elastic Defend data stream
  (`logs-endpoint.events.<stream>-*`); nested groups are flattened, `multi_fields` give the
  `.caseless` and `.text` sub-fields.
- `winlogbeat/winlogbeat_v9.5.0_fields.json`: Winlogbeat's own fields (`winlog.*`, module
  fields); a Winlogbeat index template holds every ECS field as well, so the winlogbeat
  schema is ECS + these. The Elastic Agent Windows integration (`logs-windows.*`,
  `logs-system.*`) ships the same `winlog.*` layout on top of ECS, so its schema is
  derived from the same two sources (provenance says so).

Only what the backends need is kept: type (omitted when keyword), sub-fields, `ignore_above`,
allowed values. An object field whose sub-fields are dynamic (`winlog.event_data`, typed by
`object_type`) or a `flattened` field is written as a pattern entry `name.*`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sigma_wmi.generate import write_json

GENERATOR = "sigma_wmi.generate.elastic"
DEFEND_STREAMS = ("api", "file", "library", "network", "process", "registry", "security")
# Container types: their sub-fields are listed separately (or are dynamic, see above).
_CONTAINERS = frozenset({"group", "object", "nested", "array", "alias"})
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def build(shared: Path, data: Path) -> list[Path]:
    """Write every Elastic schema file into `data/schemas/`; return the paths written."""
    root = shared / "schemas"
    readme = (root / "README.md").read_text(encoding="utf-8")
    ecs = ecs_fields(root / "ecs" / "ecs_flat.yml")
    ecs_version = (root / "ecs" / "VERSION").read_text(encoding="utf-8").strip()
    written = [_write(data, "ecs", ecs, {
        "source": "elastic/ecs generated/ecs/ecs_flat.yml",
        "version": f"{ecs_version} ({_upstream_commit(readme, 'ecs/')})"})]
    endpoint_commit = _upstream_commit(readme, "elastic-endpoint/")
    for stream in DEFEND_STREAMS:
        folder = root / "elastic-endpoint" / stream
        manifest = yaml.load((folder / "manifest.yml").read_text(encoding="utf-8"), Loader=_LOADER)
        fields = defend_fields(folder / "fields.yml", ecs)
        written.append(_write(data, f"defend_{stream}", fields, {
            "source": f"elastic/endpoint-package package/endpoint/data_stream/{stream}",
            "version": endpoint_commit,
            "index": f"logs-{manifest.get('dataset', 'endpoint.events.' + stream)}-*",
            "title": manifest.get("title", stream)}))
    beats_file = root / "winlogbeat" / "winlogbeat_v9.5.0_fields.json"
    beats = dict(ecs)
    beats.update(winlogbeat_fields(beats_file))
    beats_source = "elastic/detection-rules detection_rules/etc/beats_schemas/v9.5.0.json.gz (winlogbeat) + ECS"
    written.append(_write(data, "winlogbeat", beats, {
        "source": beats_source, "version": f"winlogbeat 9.5.0, ECS {ecs_version}"}))
    written.append(_write(data, "elastic_agent", beats, {
        "source": beats_source,
        "version": f"winlogbeat 9.5.0, ECS {ecs_version}",
        "derived": "The Elastic Agent Windows and System integrations (logs-windows.*, logs-system.*) "
                   "write Winlogbeat's winlog.* layout on top of ECS; no separate upstream definition "
                   "is in ../shared, so this schema is the winlogbeat one under the integration's name."}))
    return written


def _write(data: Path, name: str, fields: Mapping[str, dict[str, Any]], provenance: dict[str, Any]) -> Path:
    path = data / "schemas" / f"{name}.json"
    write_json(path, {"provenance": {**provenance, "generated_by": GENERATOR},
                      "fields": {k: fields[k] for k in sorted(fields)}})
    return path


def _upstream_commit(readme: str, folder: str) -> str:
    """The upstream commit the shared README records for a folder (`commit b85f757`)."""
    for line in readme.splitlines():
        if line.startswith(f"| `{folder}"):
            found = re.search(r"commit ([0-9a-f]{7,40})", line)
            if found:
                return f"commit {found.group(1)}"
    return "unknown"


def _entry(type_: str, *, caseless: bool = False, text: bool = False, ignore_above: Any = None,
           allowed: list[str] | None = None) -> dict[str, Any]:
    """The compact per-field record (see `sigma_wmi.schema`)."""
    entry: dict[str, Any] = {}
    if type_ != "keyword":
        entry["type"] = type_
    if caseless:
        entry["caseless"] = True
    if text:
        entry["text"] = True
    if isinstance(ignore_above, int):
        entry["ignore_above"] = ignore_above
    if allowed:
        entry["allowed"] = sorted(allowed)
    return entry


def ecs_fields(path: Path) -> dict[str, dict[str, Any]]:
    flat = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    fields: dict[str, dict[str, Any]] = {}
    for name, spec in flat.items():
        type_ = str(spec.get("type", "keyword"))
        if type_ == "flattened":
            fields[f"{name}.*"] = _entry("keyword")
        if type_ in _CONTAINERS:
            continue
        subs = {m.get("name") for m in spec.get("multi_fields") or ()}
        fields[name] = _entry(type_, caseless="caseless" in subs, text="text" in subs,
                              ignore_above=spec.get("ignore_above"),
                              allowed=[a["name"] for a in spec.get("allowed_values") or ()])
    return fields


def _walk_defend(nodes: list[dict[str, Any]], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for node in nodes:
        name = prefix + str(node["name"])
        if node.get("fields"):
            yield from _walk_defend(node["fields"], name + ".")
        if node.get("type", "keyword") != "group":
            yield name, node


def defend_fields(path: Path, ecs: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One Defend data stream: its own types and sub-fields, ECS's allowed values."""
    nodes = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    fields: dict[str, dict[str, Any]] = {}
    for name, node in _walk_defend(nodes):
        type_ = str(node.get("type", "keyword"))
        if type_ == "flattened":
            fields[f"{name}.*"] = _entry("keyword")
        if type_ in _CONTAINERS:
            continue
        subs = {str(m.get("name")): m for m in node.get("multi_fields") or ()}
        caseless = subs.get("caseless", {})
        fields[name] = _entry(type_, caseless="caseless" in subs, text="text" in subs,
                              # the caseless sub-field's own limit decides what a caseless query can find
                              ignore_above=caseless.get("ignore_above", node.get("ignore_above")),
                              allowed=ecs.get(name, {}).get("allowed"))
    return fields


def _walk_beats(nodes: list[dict[str, Any]], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for node in nodes:
        name = prefix + str(node.get("name", ""))
        if node.get("fields"):
            yield from _walk_beats(node["fields"], name + "." if name else "")
        if node.get("type") not in (None, "group") or not node.get("fields"):
            yield name, node


def _beats_field_lists(tree: Any) -> Iterator[list[dict[str, Any]]]:
    """Every `fields.yml` list in the nested folder/file layout of the beats schema file."""
    if isinstance(tree, dict):
        for key, value in sorted(tree.items()):
            if key.endswith(".yml") and isinstance(value, list):
                yield value
            else:
                yield from _beats_field_lists(value)


def winlogbeat_fields(path: Path) -> dict[str, dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    fields: dict[str, dict[str, Any]] = {}
    for nodes in _beats_field_lists(document["winlogbeat"]):
        for name, node in _walk_beats(nodes):
            type_ = str(node.get("type", "keyword"))
            if node.get("migration") or type_ == "alias" or not name:
                continue  # 6.x aliases exist only with migration.6_to_7.enable
            if type_ == "object" and node.get("object_type"):
                fields[f"{name}.*"] = _entry(str(node["object_type"]))
                continue
            if type_ in _CONTAINERS:
                continue
            fields[name] = _entry(type_)
    return fields
