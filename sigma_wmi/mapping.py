"""Environment mappings: the user's own field names, indexes, sourcetypes and log sources.

`--mapping FILE` (repeatable) reads either of two formats into one `EnvironmentMapping`,
which `Catalog.with_mapping` merges into a new immutable catalog:

* sigma-wmi's mapping YAML (README, "Mapping your environment"), validated against
  `MAPPING_SCHEMA`; an unknown key is a located `path:line` error;
* a pySigma processing pipeline (`transformations:`), for the transformations that say
  something about an environment: field_name_mapping, field_name_prefix, add_condition,
  change_logsource, drop_detection_item and set_state, each optionally limited by
  `rule_conditions` of type logsource. Anything else is a located error naming it.

A mapped catalog is built once per process for a set of files (`mapped_catalog`), so
worker processes given the same paths build the same catalog.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import LogSource

# Targets whose log-source conditions a mapping can set, and the condition keys each takes.
CONDITION_KEYS = {"splunk": ("index", "sourcetype", "source"), "elastic": ("index",)}
# Profiles a mapping can rename fields in (not "sigma": the Sigma writer keeps the taxonomy's names).
TARGET_PROFILES = ("sysmon", "security", "wmi_activity", "cim", "ecs", "winlogbeat", "splunk")
# Where a rename without a profile applies: the event profiles. Splunk CIM data-model fields
# are fixed by the data model; rename them only through `profile_fields: {cim: ...}`.
EVENT_PROFILES = tuple(p for p in TARGET_PROFILES if p != "cim")


@dataclass(frozen=True)
class LogSourceFilter:
    """Which rules an entry applies to: every given part must equal the rule's."""

    product: str | None = None
    category: str | None = None
    service: str | None = None

    def matches(self, logsource: LogSource) -> bool:
        return all(want is None or want == have for want, have in (
            (self.product, logsource.product), (self.category, logsource.category),
            (self.service, logsource.service)))

    def logsource(self) -> LogSource:
        return LogSource(self.product, self.category, self.service)

    def key(self) -> str:
        return "/".join(x or "-" for x in (self.product, self.category, self.service))


EVERY_RULE = LogSourceFilter()


@dataclass(frozen=True)
class Rename:
    """A field (Sigma or canonical name) → the environment's name, in some profiles."""

    name: str
    target: str
    scope: LogSourceFilter = EVERY_RULE
    profiles: tuple[str, ...] = EVENT_PROFILES


@dataclass(frozen=True)
class Prefix:
    """Every field name of the scope's rules gets a prefix (pySigma field_name_prefix)."""

    prefix: str
    scope: LogSourceFilter = EVERY_RULE


@dataclass(frozen=True)
class Conditions:
    """Extra log-source conditions for a target (Splunk index/sourcetype/source, Elastic index)."""

    target: str
    values: tuple[tuple[str, tuple[str, ...]], ...]
    scope: LogSourceFilter = EVERY_RULE


@dataclass(frozen=True)
class NewLogSource:
    """A log source the packaged table lacks, in logsources.yaml's own terms."""

    kind: str  # "categories" or "services"
    name: str
    entry: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class LogSourceChange:
    """Rules of `scope` are read as rules of another log source (pySigma change_logsource)."""

    scope: LogSourceFilter
    to: LogSourceFilter


@dataclass(frozen=True)
class Drop:
    """Conditions on these fields are left out of the scope's rules (drop_detection_item)."""

    fields: tuple[str, ...]
    scope: LogSourceFilter = EVERY_RULE


@dataclass(frozen=True)
class EnvironmentMapping:
    renames: tuple[Rename, ...] = ()
    prefixes: tuple[Prefix, ...] = ()
    conditions: tuple[Conditions, ...] = ()
    new_logsources: tuple[NewLogSource, ...] = ()
    changes: tuple[LogSourceChange, ...] = ()
    drops: tuple[Drop, ...] = ()
    sources: tuple[str, ...] = field(default=())

    def __add__(self, other: EnvironmentMapping) -> EnvironmentMapping:
        return EnvironmentMapping(*(a + b for a, b in zip(self._parts(), other._parts(), strict=True)))

    def _parts(self) -> tuple[tuple[Any, ...], ...]:
        return (self.renames, self.prefixes, self.conditions, self.new_logsources, self.changes,
                self.drops, self.sources)


# ---------------------------------------------------------------------------
# sigma-wmi mapping YAML
# ---------------------------------------------------------------------------

_NAMES = {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}
_VALUES = {"anyOf": [{"type": "string", "minLength": 1},
                     {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}]}
_CONDITIONS = {
    "type": "object", "additionalProperties": False,
    "properties": {target: {"type": "object", "additionalProperties": False,
                            "properties": {key: _VALUES for key in keys}}
                   for target, keys in CONDITION_KEYS.items()},
}
_PROFILE_FIELDS = {"type": "object", "additionalProperties": False,
                   "properties": {p: _NAMES for p in TARGET_PROFILES}}
_EVENT_IDS = {"type": "array", "items": {"type": "integer"}}

MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sigma_wmi_mapping"],
    "properties": {
        "sigma_wmi_mapping": {"const": 1},
        "description": {"type": "string"},
        "fields": _NAMES,
        "profile_fields": _PROFILE_FIELDS,
        "conditions": _CONDITIONS,
        "logsources": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "anyOf": [{"required": ["category"]}, {"required": ["service"]}, {"required": ["product"]}],
                "properties": {
                    "product": {"type": "string"},
                    "category": {"type": "string"},
                    "service": {"type": "string"},
                    "fields": _NAMES,
                    "profile_fields": _PROFILE_FIELDS,
                    "conditions": _CONDITIONS,
                    "new": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "channel": {"type": "string"},
                            "event_ids": _EVENT_IDS,
                            "sysmon_event_ids": _EVENT_IDS,
                            "security_event_ids": _EVENT_IDS,
                            "raw_profile": {"enum": ["sysmon", "security", "wmi_activity"]},
                            "cim": {"type": "string"},
                            "ecs": {"type": "object", "additionalProperties": False,
                                    "properties": {"category": {"type": "string"}, "type": {"type": "string"}}},
                        },
                    },
                },
            },
        },
    },
}


def _mapping_from_doc(doc: dict[str, Any], source: str) -> EnvironmentMapping:
    renames: list[Rename] = []
    conditions: list[Conditions] = []
    new: list[NewLogSource] = []

    def read_scope(entry: Mapping[str, Any], scope: LogSourceFilter) -> None:
        for name, target in (entry.get("fields") or {}).items():
            renames.append(Rename(str(name), target, scope))
        for profile, names in (entry.get("profile_fields") or {}).items():
            renames.extend(Rename(str(n), t, scope, (profile,)) for n, t in names.items())
        for target, values in (entry.get("conditions") or {}).items():
            conditions.append(Conditions(target, tuple(
                (key, (value,) if isinstance(value, str) else tuple(value)) for key, value in values.items()), scope))

    read_scope(doc, EVERY_RULE)
    for entry in doc.get("logsources") or ():
        scope = LogSourceFilter(entry.get("product"), entry.get("category"), entry.get("service"))
        if "new" in entry:
            kind, name = ("categories", scope.category) if scope.category else ("services", scope.service)
            if name is None:
                raise SigmaWmiError("a new log source needs a category or a service", Origin(source), "bad-mapping")
            new.append(NewLogSource(kind, name, tuple(sorted(entry["new"].items()))))
        read_scope(entry, scope)
    return EnvironmentMapping(renames=tuple(renames), conditions=tuple(conditions), new_logsources=tuple(new))


# ---------------------------------------------------------------------------
# pySigma processing pipelines
# ---------------------------------------------------------------------------

_PIPELINE_KEYS = frozenset({"name", "priority", "vars", "transformations", "postprocessing", "finalizers",
                            "allowed_backends"})
_ITEM_KEYS = frozenset({"id", "type", "rule_conditions", "rule_cond_op", "rule_cond_expr", "rule_cond_not",
                        "field_name_conditions", "field_name_cond_op", "field_name_cond_not"})
_SUPPORTED = ("field_name_mapping", "field_name_prefix", "add_condition", "change_logsource",
              "drop_detection_item", "set_state")


def _is_pipeline(doc: Mapping[str, Any]) -> bool:
    return "transformations" in doc and "sigma_wmi_mapping" not in doc


def _mapping_from_pipeline(doc: dict[str, Any], text: str, source: str) -> EnvironmentMapping:
    def fail(message: str, *path: str | int) -> SigmaWmiError:
        return SigmaWmiError(message, Origin(source, _line_of(text, path)), "bad-mapping")

    unknown = sorted(set(map(str, doc)) - _PIPELINE_KEYS)
    if unknown:
        raise fail(f"unknown pipeline key(s) {', '.join(unknown)}", unknown[0])
    for key in ("postprocessing", "finalizers"):
        if doc.get(key):
            raise fail(f"pipeline {key} are not supported by --mapping (they rewrite query text)", key)
    items = doc.get("transformations")
    if not isinstance(items, list):
        raise fail("'transformations' must be a list", "transformations")
    parts: list[EnvironmentMapping] = []
    for index, item in enumerate(items):
        where: tuple[str | int, ...] = ("transformations", index)
        if not isinstance(item, dict):
            raise fail("a transformation must be a mapping", *where)
        kind = item.get("type")
        if kind not in _SUPPORTED:
            raise fail(f"pySigma transformation '{kind}' is not supported by --mapping "
                       f"(supported: {', '.join(_SUPPORTED)})", *where, "type")
        scope = _pipeline_scope(item, fail, where)
        parts.append(_pipeline_item(str(kind), item, scope, fail, where))
    return sum(parts, EnvironmentMapping())


def _pipeline_scope(item: Mapping[str, Any], fail: Any, where: tuple[str | int, ...]) -> LogSourceFilter:
    """A transformation's `rule_conditions`: logsource conditions, ANDed into one filter."""
    for key in ("rule_cond_expr", "rule_cond_not"):
        if item.get(key):
            raise fail(f"'{key}' is not supported by --mapping", *where, key)
    conditions = item.get("rule_conditions") or []
    if not isinstance(conditions, list):
        raise fail("'rule_conditions' must be a list", *where, "rule_conditions")
    if len(conditions) > 1 and item.get("rule_cond_op", "and") != "and":
        raise fail("only 'and' joins several rule_conditions in --mapping", *where, "rule_cond_op")
    parts: dict[str, str] = {}
    for number, condition in enumerate(conditions):
        if not isinstance(condition, dict) or condition.get("type") != "logsource":
            kind = condition.get("type") if isinstance(condition, dict) else condition
            raise fail(f"rule condition '{kind}' is not supported by --mapping (only logsource)",
                       *where, "rule_conditions", number)
        extra = sorted(set(condition) - {"type", "product", "category", "service"})
        if extra:
            raise fail(f"unknown logsource condition key(s) {', '.join(extra)}", *where, "rule_conditions", number)
        for key in ("product", "category", "service"):
            if condition.get(key) is not None:
                parts[key] = str(condition[key])
    return LogSourceFilter(parts.get("product"), parts.get("category"), parts.get("service"))


def _pipeline_item(kind: str, item: Mapping[str, Any], scope: LogSourceFilter, fail: Any,
                   where: tuple[str | int, ...]) -> EnvironmentMapping:
    allowed = _ITEM_KEYS | {
        "field_name_mapping": {"mapping"}, "field_name_prefix": {"prefix"},
        "add_condition": {"conditions", "template", "negated"},
        "change_logsource": {"product", "category", "service"},
        "drop_detection_item": set(), "set_state": {"key", "val"},
    }[kind]
    extra = sorted(set(map(str, item)) - allowed)
    if extra:
        raise fail(f"{kind}: unsupported key(s) {', '.join(extra)}", *where, extra[0])
    if item.get("field_name_conditions") and kind != "drop_detection_item":
        raise fail(f"{kind}: field_name_conditions are not supported by --mapping", *where, "field_name_conditions")
    if kind == "field_name_mapping":
        mapping = item.get("mapping")
        if not isinstance(mapping, dict) or not mapping:
            raise fail("field_name_mapping needs a 'mapping' of field names", *where, "mapping")
        renames = []
        for name, target in mapping.items():
            if isinstance(target, list):
                if len(target) != 1:
                    raise fail(f"field_name_mapping: '{name}' maps to {len(target)} fields; --mapping "
                               "takes one name per field", *where, "mapping", str(name))
                target = target[0]
            renames.append(Rename(str(name), str(target), scope))
        return EnvironmentMapping(renames=tuple(renames))
    if kind == "field_name_prefix":
        prefix = item.get("prefix")
        if not isinstance(prefix, str) or not prefix:
            raise fail("field_name_prefix needs a 'prefix'", *where, "prefix")
        return EnvironmentMapping(prefixes=(Prefix(prefix, scope),))
    if kind == "add_condition":
        conditions = item.get("conditions")
        if item.get("template") or item.get("negated"):
            raise fail("add_condition: template and negated conditions are not supported by --mapping", *where)
        if not isinstance(conditions, dict) or not conditions:
            raise fail("add_condition needs 'conditions'", *where, "conditions")
        unknown = sorted(k for k in map(str, conditions) if k not in CONDITION_KEYS["splunk"])
        if unknown:
            raise fail(f"add_condition: condition field(s) {', '.join(unknown)} are not log-source conditions "
                       f"(--mapping takes {', '.join(CONDITION_KEYS['splunk'])})", *where, "conditions", unknown[0])
        pairs = tuple((str(k), _texts(v)) for k, v in conditions.items())
        return EnvironmentMapping(conditions=(Conditions("splunk", pairs, scope),))
    if kind == "change_logsource":
        to = LogSourceFilter(*(None if item.get(k) is None else str(item[k]) for k in ("product", "category", "service")))
        return EnvironmentMapping(changes=(LogSourceChange(scope, to),))
    if kind == "drop_detection_item":
        conditions = item.get("field_name_conditions") or []
        fields: list[str] = []
        for number, condition in enumerate(conditions):
            if not isinstance(condition, dict) or condition.get("type") != "include_fields" \
                    or condition.get("type_") or condition.get("mode", "plain") != "plain":
                raise fail("drop_detection_item: only plain include_fields conditions are supported by --mapping",
                           *where, "field_name_conditions", number)
            fields += [str(f) for f in condition.get("fields") or ()]
        if not fields:
            raise fail("drop_detection_item needs field_name_conditions naming the fields", *where)
        return EnvironmentMapping(drops=(Drop(tuple(fields), scope),))
    # set_state: the one state key a target reads is the Elastic index of exported rules
    if item.get("key") != "index":
        raise fail(f"set_state: key '{item.get('key')}' is not used by any target (only index)", *where, "key")
    return EnvironmentMapping(conditions=(Conditions("elastic", (("index", _texts(item.get("val"))),), scope),))


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(map(str, value)) if isinstance(value, list) else (str(value),)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def load_mapping(path: str | Path) -> EnvironmentMapping:
    """One mapping file, either format. Raises `SigmaWmiError` at the offending line."""
    from sigma_wmi.readers.yamlsource import load_documents, read_text

    path = Path(path)
    text = read_text(path)
    docs = load_documents(text, str(path))
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SigmaWmiError("a mapping file holds one YAML mapping", Origin(str(path), 1), "bad-mapping")
    doc = docs[0]
    if _is_pipeline(doc):
        mapping = _mapping_from_pipeline(doc, text, str(path))
    else:
        import jsonschema  # type: ignore[import-untyped]  # no stubs; imported only when a mapping is read

        validator = jsonschema.Draft202012Validator(MAPPING_SCHEMA)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            error = jsonschema.exceptions.best_match(errors)
            assert error is not None
            where = tuple(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
                where += tuple(extra[:1])  # the unknown key's own line
            raise SigmaWmiError(f"invalid mapping: {_describe(error)}",
                                Origin(str(path), _line_of(text, where)), "bad-mapping")
        mapping = _mapping_from_doc(doc, str(path))
    return dataclasses.replace(mapping, sources=(str(path),))


def _describe(error: Any) -> str:  # a jsonschema.ValidationError
    where = ".".join(map(str, error.absolute_path)) or "top level"
    if error.validator == "additionalProperties":
        return f"{where}: {error.message.replace('Additional properties are not allowed', 'unknown key')}"
    return f"{where}: {error.message}"


def _line_of(text: str, path: Iterable[str | int]) -> int:
    """1-based line of a key path (mapping keys and list indexes) in a YAML text; as deep as exists."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 1
    line = 1
    for step in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(step):
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_mappings(paths: Iterable[str | Path]) -> EnvironmentMapping:
    return sum((load_mapping(p) for p in paths), EnvironmentMapping())


def fingerprint(paths: Iterable[str | Path]) -> str:
    """Content hash of mapping files (for cache keys): renaming a field changes every output."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode())
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            digest.update(b"<unreadable>")
    return digest.hexdigest()


def mapped_catalog(paths: tuple[str, ...] | list[str] | str = ()) -> Catalog:
    """The packaged catalog with these mapping files merged in, built once per process and content."""
    if isinstance(paths, str):
        paths = tuple(p for p in paths.split(",") if p.strip())
    paths = tuple(str(p) for p in paths)
    if not paths:
        return catalog()
    return _mapped_catalog(paths, fingerprint(paths))


@functools.lru_cache(maxsize=16)
def _mapped_catalog(paths: tuple[str, ...], _content: str) -> Catalog:
    return catalog().with_mapping(load_mappings(paths))
