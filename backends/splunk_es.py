"""A rule as Splunk Enterprise Security content: analytic type, risk and threat objects,
scores, notable, annotations and drilldowns, the ESCU name and tuning macro.

An analytic read from ESCU keeps what its YAML says (`rba`, `tags`, `drilldown_searches`, or
the 4.x `tags.observable`/`risk_score`); a Sigma rule gets them derived from its level, tags,
ATT&CK techniques and the fields its Splunk search returns, through the policy and the
contentctl conventions in `data/splunk_es.yaml`. The savedsearches.conf format of the Splunk
target and the `escu` target both read this one description.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from sigma_wmi.attack import attack
from sigma_wmi.model import Rule

# contentctl's longest analytic name (ES must be able to clone "<domain> - ESCU - <name> - Rule").
MAX_NAME_CHARS = 67


@functools.cache
def conventions() -> dict[str, Any]:
    """`data/splunk_es.yaml`, loaded once."""
    text = (resources.files("sigma_wmi") / "data" / "splunk_es.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

def escu_name(title: str) -> str:
    """A rule title as an ESCU analytic name: the characters contentctl turns into a file and
    macro name (letters, digits, space, `-`, `.`, `/`, `_`), runs of anything else as one
    space, at most `MAX_NAME_CHARS` (cut at a word)."""
    kept = re.sub(r"[^A-Za-z0-9 _\-./]+", " ", title)
    name = " ".join(kept.split()).strip(" -./")
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS + 1].rsplit(" ", 1)[0].strip(" -./") or name[:MAX_NAME_CHARS]
    return name or "sigma-wmi rule"


def file_stem(name: str) -> str:
    """contentctl's file name for an analytic name (without `.yml`): lower case, space `-` `.` `/`
    as `_`; on an `escu_name` that is every character outside `[a-z0-9_]`."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def filter_macro_name(title: str) -> str:
    """The ESCU tuning macro of a rule titled `title`: `<file stem>_filter`."""
    return file_stem(escu_name(title)) + "_filter"


# ---------------------------------------------------------------------------
# The ES description of one rule
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RiskObject:
    field: str
    type: str  # system, user, other
    score: int


@dataclass(frozen=True)
class ThreatObject:
    field: str
    type: str


@dataclass(frozen=True)
class Drilldown:
    name: str
    search: str  # may hold the `%original_detection_search%` placeholder
    earliest_offset: str
    latest_offset: str


@dataclass(frozen=True)
class EsContent:
    """What ES and ESCU need to know about a rule beyond its search."""

    name: str
    type: str  # TTP, Anomaly, Hunting, Correlation
    risk_objects: tuple[RiskObject, ...]
    threat_objects: tuple[ThreatObject, ...]
    risk_message: str
    analytic_stories: tuple[str, ...]
    security_domain: str
    asset_type: str
    products: tuple[str, ...]
    mitre_attack: tuple[str, ...]
    kill_chain_phases: tuple[str, ...]
    drilldowns: tuple[Drilldown, ...]
    from_escu: bool  # the metadata is the analytic's own, not derived

    @property
    def risk(self) -> bool:
        """Does the analytic send risk events (ESCU: TTP and Anomaly with a risk object)?"""
        return bool(conventions()["alerting"].get(self.type, {}).get("risk")) and bool(self.risk_objects)

    @property
    def notable(self) -> bool:
        return bool(conventions()["alerting"].get(self.type, {}).get("notable"))

    @property
    def risk_score(self) -> int | None:
        return max((o.score for o in self.risk_objects), default=None)

    @property
    def severity(self) -> str:
        """contentctl's rule: from the highest risk score; `high` without one."""
        score = self.risk_score
        if score is None:
            return "high"
        return next((band["severity"] for band in conventions()["severity_bands"] if score <= band["max"]),
                    "critical")

    @property
    def cis20(self) -> tuple[str, ...]:
        table = conventions()["cis20"]
        return (table.get(self.security_domain, table["default"]),)

    @property
    def nist(self) -> tuple[str, ...]:
        table = conventions()["nist"]
        return (table.get(self.type, table["default"]),)

    def annotations(self, data_sources: Sequence[str]) -> dict[str, Any]:
        """`action.correlationsearch.annotations` as contentctl writes it (keys sorted)."""
        found: dict[str, Any] = {
            "analytic_story": list(self.analytic_stories),
            "cis20": list(self.cis20),
            "data_source": list(data_sources),
            "kill_chain_phases": list(self.kill_chain_phases),
            "mitre_attack": list(self.mitre_attack),
            "nist": list(self.nist),
            "type": self.type,
            "type_list": [self.type],
        }
        return {key: found[key] for key in sorted(found) if found[key] != []}

    def risk_entries(self) -> list[dict[str, Any]]:
        """`action.risk.param._risk`: risk objects, then threat objects."""
        return ([{"risk_object_field": o.field, "risk_object_type": o.type, "risk_score": o.score}
                 for o in self.risk_objects]
                + [{"threat_object_field": o.field, "threat_object_type": o.type} for o in self.threat_objects])


def es_content(rule: Rule, result_fields: Sequence[str]) -> EsContent:
    """The ES description of `rule`, whose Splunk search returns `result_fields`."""
    if rule.source_format == "escu":
        return _from_escu(rule, result_fields)
    return _derived(rule, result_fields)


def _derived(rule: Rule, result_fields: Sequence[str]) -> EsContent:
    data = conventions()
    level = rule.level if rule.level in data["levels"] else data["default_level"]
    policy = data["levels"][level]
    hunting = any(tag.lower() in data["hunting_tags"] for tag in rule.tags)
    kind = "Hunting" if hunting else str(policy["type"])
    present = list(dict.fromkeys(result_fields))
    # the first present field of each risk object type: one host and one account, as ESCU scores
    chosen: dict[str, str] = {}
    for field, kind_of in data["risk_objects"].items():
        if field in present:
            chosen.setdefault(kind_of, field)
    risks = tuple(RiskObject(f, t, int(policy["risk_score"])) for t, f in chosen.items())
    if not risks and kind != "Hunting":
        kind = "Hunting"  # nothing to score: ESCU keeps such searches for hunting
    threats = tuple(ThreatObject(f, t) for f, t in data["threat_objects"].items() if f in present)
    domain = data["domains"]["products"].get(rule.logsource.product or "", data["domains"]["default"])
    name = escu_name(rule.title)
    # ESCU names a technique or its sub-techniques, not both (contentctl refuses the overlap)
    ids = [t.id for t in rule.techniques]
    techniques = tuple(t for t in ids if not any(o.startswith(t + ".") for o in ids))
    return EsContent(
        name=name, type=kind, risk_objects=risks, threat_objects=threats,
        risk_message=_risk_message(name, risks),
        analytic_stories=_stories(rule), security_domain=str(domain["security_domain"]),
        asset_type=str(domain["asset_type"]), products=tuple(data["products"]),
        mitre_attack=techniques, kill_chain_phases=_kill_chain(rule),
        drilldowns=_drilldowns(risks, kind), from_escu=False)


def _risk_message(name: str, risks: Sequence[RiskObject]) -> str:
    targets = " by ".join(f"${o.field}$" for o in risks)
    return f"{name} on {targets}" if targets else name


def _stories(rule: Rule) -> tuple[str, ...]:
    """A Sigma rule's analytic stories: the names of its ATT&CK techniques (ESCU stories are
    themes; a technique is the theme a Sigma rule states)."""
    table = attack()
    names = []
    for technique in rule.techniques:
        known = table.technique(technique.id)
        if known is not None and known.name not in names:
            names.append(known.name)
    return tuple(names)


def _kill_chain(rule: Rule) -> tuple[str, ...]:
    table = conventions()["kill_chain_phases"]
    tactics = list(rule.tactics)
    for technique in rule.techniques:
        known = attack().technique(technique.id)
        for tactic_id in known.tactics if known else ():
            tactic = attack().tactic(tactic_id)
            if tactic and tactic.shortname not in tactics:
                tactics.append(tactic.shortname)
    return tuple(sorted({table[t] for t in tactics if t in table}))


def _drilldowns(risks: Sequence[RiskObject], kind: str) -> tuple[Drilldown, ...]:
    if not risks or kind == "Hunting":
        return ()
    data = conventions()
    words = {
        "objects": " and ".join(f'"${o.field}$"' for o in risks),
        "terms": " ".join(f'{o.field} = "${o.field}$"' for o in risks),
        "values": ", ".join(f'"${o.field}$"' for o in risks),
    }
    offsets = data["drilldown_offsets"]
    return tuple(Drilldown(d["name"].format(**words), " ".join(d["search"].format(**words).split()),
                           offsets["earliest_offset"], offsets["latest_offset"]) for d in data["drilldowns"])


# ---- ESCU-origin analytics keep their own metadata ----

def _from_escu(rule: Rule, result_fields: Sequence[str]) -> EsContent:
    extras = rule.extras
    found = extras.get("tags")
    tags: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    derived = _derived(rule, result_fields)
    risks, threats, message = _escu_rba(extras, tags, derived)
    kind = str(extras.get("type") or derived.type)
    drilldowns = tuple(
        Drilldown(str(d.get("name", "")), str(d.get("search", "")), str(d.get("earliest_offset", "")),
                  str(d.get("latest_offset", "")))
        for d in extras.get("drilldown_searches") or () if isinstance(d, Mapping)) or derived.drilldowns
    stories = tuple(str(s) for s in _as_list(tags.get("analytic_story"))) or derived.analytic_stories
    products = tuple(str(p) for p in _as_list(tags.get("product"))) or derived.products
    return EsContent(
        name=rule.title, type=kind, risk_objects=risks, threat_objects=threats, risk_message=message,
        analytic_stories=stories,
        security_domain=str(tags.get("security_domain") or derived.security_domain),
        asset_type=str(tags.get("asset_type") or derived.asset_type), products=products,
        mitre_attack=tuple(str(t) for t in _as_list(tags.get("mitre_attack_id"))) or derived.mitre_attack,
        kill_chain_phases=derived.kill_chain_phases, drilldowns=drilldowns, from_escu=True)


def _escu_rba(extras: Mapping[str, Any], tags: Mapping[str, Any],
              derived: EsContent) -> tuple[tuple[RiskObject, ...], tuple[ThreatObject, ...], str]:
    """5.x `rba:`; else the 4.x `tags.observable` (Victim role: risk object scored
    `tags.risk_score`; other roles: threat object); else what a Sigma rule would get."""
    rba = extras.get("rba")
    if isinstance(rba, Mapping):
        risks = tuple(RiskObject(str(o.get("field")), str(o.get("type", "other")), int(o.get("score", 0)))
                      for o in _as_list(rba.get("risk_objects")) if isinstance(o, Mapping))
        threats = tuple(ThreatObject(str(o.get("field")), str(o.get("type")))
                        for o in _as_list(rba.get("threat_objects")) if isinstance(o, Mapping))
        return risks, threats, str(rba.get("message") or derived.risk_message)
    observables = [o for o in _as_list(tags.get("observable")) if isinstance(o, Mapping)]
    if observables:
        score = int(tags.get("risk_score") or 0)
        kinds = {"Hostname": "system", "IP Address": "system", "Endpoint": "system", "User": "user",
                 "User Name": "user"}
        risks = tuple(RiskObject(str(o.get("name")), kinds.get(str(o.get("type")), "other"), score)
                      for o in observables if "Victim" in _as_list(o.get("role")))
        threats = tuple(ThreatObject(str(o.get("name")), _threat_type(str(o.get("name"))))
                        for o in observables if "Victim" not in _as_list(o.get("role")))
        return risks, threats, str(tags.get("message") or derived.risk_message)
    return derived.risk_objects, derived.threat_objects, derived.risk_message


def _threat_type(field: str) -> str:
    return str(conventions()["threat_objects"].get(field, field))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def with_search(drilldowns: Sequence[Drilldown], search: str) -> list[dict[str, str]]:
    """Drilldowns as ES stores them: the placeholder replaced by the analytic's search."""
    placeholder = conventions()["drilldown_placeholder"]
    return [{"name": d.name, "search": d.search.replace(placeholder, search),
             "earliest_offset": d.earliest_offset, "latest_offset": d.latest_offset} for d in drilldowns]
