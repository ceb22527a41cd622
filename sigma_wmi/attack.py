"""Offline MITRE ATT&CK Enterprise facts: technique and tactic names, URLs, revocations.

The table ships as `data/attack.json`. Regenerate it (no network) from the curated
table or from a STIX bundle with:

    python -m sigma_wmi.attack SOURCE.json [--out sigma_wmi/data/attack.json]
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sigma_wmi.errors import Diagnostic, Level

ATTACK_URL = "https://attack.mitre.org"


@dataclass(frozen=True, slots=True)
class Tactic:
    id: str  # TA0003
    name: str  # Persistence
    shortname: str  # persistence

    @property
    def url(self) -> str:
        return f"{ATTACK_URL}/tactics/{self.id}"


@dataclass(frozen=True, slots=True)
class Technique:
    id: str  # T1546.003
    name: str
    tactics: tuple[str, ...]  # tactic ids

    @property
    def url(self) -> str:
        return f"{ATTACK_URL}/techniques/{self.id.replace('.', '/')}"

    @property
    def parent(self) -> str | None:
        return self.id.split(".")[0] if "." in self.id else None


class Attack:
    def __init__(self, table: dict[str, Any]) -> None:
        self.version: str = str(table["attack_version"])
        self.tactics = {tid: Tactic(tid, t["name"], t["shortname"]) for tid, t in table["tactics"].items()}
        self._by_shortname = {t.shortname: t for t in self.tactics.values()}
        self.techniques = {
            tid: Technique(tid, t["name"], tuple(t["tactics"])) for tid, t in table["techniques"].items()
        }
        self.revoked_by: dict[str, str] = dict(table.get("revoked_by", {}))
        # The Enterprise matrix's tactic columns, left to right (STIX x-mitre-matrix tactic_refs).
        self.matrix: tuple[str, ...] = tuple(t for t in table.get("matrix", ()) if t in self.tactics)

    def matrix_tactics(self) -> list[Tactic]:
        """Every tactic in matrix order; tactics the matrix does not place follow by id."""
        order = [*self.matrix, *sorted(set(self.tactics) - set(self.matrix))]
        return [self.tactics[t] for t in order]

    def tactic(self, key: str) -> Tactic | None:
        """A tactic by id (TA0003) or short name (persistence, privilege_escalation)."""
        key = key.strip()
        if key.upper() in self.tactics:
            return self.tactics[key.upper()]
        return self._by_shortname.get(key.lower().replace("_", "-").replace(" ", "-"))

    def technique(self, technique_id: str) -> Technique | None:
        return self.techniques.get(technique_id.strip().upper())

    def resolve(self, technique_id: str) -> tuple[Technique | None, Diagnostic | None]:
        """The current technique for an id, following revocations, and what to tell the user."""
        key = technique_id.strip().upper()
        if key in self.revoked_by:  # checked first: the table may still name a revoked id
            new = self.revoked_by[key]
            return self.techniques.get(new), Diagnostic(
                Level.WARNING, "revoked-technique",
                f"ATT&CK technique {key} is revoked; use {new} ({self.techniques[new].name})"
                if new in self.techniques else f"ATT&CK technique {key} is revoked by {new}")
        if key in self.techniques:
            return self.techniques[key], None
        return None, Diagnostic(Level.WARNING, "unknown-technique",
                                f"{key} is not a technique in the offline ATT&CK {self.version} table (newer "
                                "releases may have it: `python -m sigma_wmi.attack <STIX bundle>` updates it)")


@functools.cache
def attack() -> Attack:
    text = (resources.files("sigma_wmi") / "data" / "attack.json").read_text(encoding="utf-8")
    return Attack(json.loads(text))


# ---------------------------------------------------------------------------
# Regenerating data/attack.json
# ---------------------------------------------------------------------------

def build_table(source: dict[str, Any]) -> dict[str, Any]:
    """The shipped table from the curated table format or a STIX 2 bundle."""
    if source.get("type") == "bundle":
        return _from_stix(source)
    table: dict[str, Any] = {
        "attack_version": str(source["attack_version"]),
        "tactics": {k: {"name": v["name"], "shortname": v["shortname"]}
                    for k, v in sorted(source["tactics"].items())},
        "techniques": {k: {"name": v["name"], "tactics": list(v["tactics"])}
                       for k, v in sorted(source["techniques"].items())},
        "revoked_by": dict(sorted(source.get("revoked_by", {}).items())),
    }
    if source.get("matrix"):
        table["matrix"] = list(source["matrix"])
        table["matrix_source"] = str(source.get("matrix_source", "the source table's matrix"))
    return table


def _external_id(obj: dict[str, Any]) -> str | None:
    for ref in obj.get("external_references", ()):
        if ref.get("source_name") == "mitre-attack":
            return str(ref.get("external_id"))
    return None


def _from_stix(bundle: dict[str, Any]) -> dict[str, Any]:
    objects = bundle["objects"]
    version = next((o.get("x_mitre_version") for o in objects if o.get("type") == "x-mitre-collection"), "?")
    tactics: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("type") == "x-mitre-tactic" and not obj.get("revoked"):
            tid = _external_id(obj)
            if tid:
                tactics[tid] = {"name": obj["name"], "shortname": obj["x_mitre_shortname"]}
    by_shortname = {v["shortname"]: k for k, v in tactics.items()}
    stix_tactics = {o["id"]: _external_id(o) for o in objects if o.get("type") == "x-mitre-tactic"}
    matrix = next(([stix_tactics[r] for r in o.get("tactic_refs", ()) if stix_tactics.get(r)]
                   for o in objects if o.get("type") == "x-mitre-matrix" and not o.get("revoked")), [])
    techniques: dict[str, dict[str, Any]] = {}
    stix_to_id: dict[str, str] = {}
    revoked: list[dict[str, Any]] = []
    for obj in objects:
        if obj.get("type") != "attack-pattern":
            continue
        tid = _external_id(obj)
        if not tid:
            continue
        stix_to_id[obj["id"]] = tid
        if obj.get("revoked"):
            revoked.append(obj)
            continue
        if obj.get("x_mitre_deprecated"):
            continue
        phases = [p["phase_name"] for p in obj.get("kill_chain_phases", ())
                  if p.get("kill_chain_name") == "mitre-attack"]
        techniques[tid] = {"name": obj["name"], "tactics": [by_shortname[p] for p in phases if p in by_shortname]}
    revoked_by: dict[str, str] = {}
    for obj in objects:
        if obj.get("type") == "relationship" and obj.get("relationship_type") == "revoked-by":
            old, new = stix_to_id.get(obj["source_ref"]), stix_to_id.get(obj["target_ref"])
            if old and new:
                revoked_by[old] = new
    return build_table({"attack_version": version, "tactics": tactics, "techniques": techniques,
                        "revoked_by": revoked_by, "matrix": matrix,
                        "matrix_source": f"STIX x-mitre-matrix tactic_refs, ATT&CK {version}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate sigma_wmi/data/attack.json")
    parser.add_argument("source", type=Path, help="curated attack table JSON or a STIX 2 bundle")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "attack.json")
    args = parser.parse_args(argv)
    table = build_table(json.loads(args.source.read_text(encoding="utf-8")))
    if "matrix" not in table:
        # The curated table has no column order: keep the packaged file's (see its matrix_source).
        shipped = json.loads((resources.files("sigma_wmi") / "data" / "attack.json").read_text(encoding="utf-8"))
        if shipped.get("matrix"):
            table["matrix"], table["matrix_source"] = shipped["matrix"], shipped.get("matrix_source", "")
            print(f"kept the packaged matrix column order ({table['matrix_source']})")
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: ATT&CK {table['attack_version']}, {len(table['techniques'])} techniques, "
          f"{len(table['tactics'])} tactics, {len(table['revoked_by'])} revoked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
