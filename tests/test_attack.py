"""Offline ATT&CK table: lookups, revocations, and regeneration of the shipped file."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from sigma_wmi.attack import Attack, attack, build_table, main
from sigma_wmi.errors import Level
from tests.conftest import shared_path


def test_revoked_t1084_resolves_to_t1546_003_with_a_warning() -> None:
    technique, diagnostic = attack().resolve("T1084")
    assert technique is not None and technique.id == "T1546.003"
    assert technique.name == "Windows Management Instrumentation Event Subscription"
    assert diagnostic is not None
    assert diagnostic.level is Level.WARNING and diagnostic.code == "revoked-technique"
    assert "T1084" in diagnostic.message and "T1546.003" in diagnostic.message


@pytest.mark.parametrize("written", ["t1546.003", " T1546.003 ", "T1546.003"])
def test_current_technique_resolves_without_diagnostic(written: str) -> None:
    technique, diagnostic = attack().resolve(written)
    assert diagnostic is None
    assert technique is not None and technique.id == "T1546.003"
    assert technique.url == "https://attack.mitre.org/techniques/T1546/003"
    assert technique.parent == "T1546"
    assert "TA0003" in technique.tactics and "TA0004" in technique.tactics


def test_unknown_technique_is_a_warning_not_an_error() -> None:
    technique, diagnostic = attack().resolve("T9999")
    assert technique is None
    assert diagnostic is not None and diagnostic.code == "unknown-technique"
    assert diagnostic.level is Level.WARNING


@pytest.mark.parametrize(("key", "tactic_id"), [
    ("persistence", "TA0003"), ("privilege_escalation", "TA0004"), ("Privilege Escalation", "TA0004"),
    ("ta0002", "TA0002"), ("command-and-control", "TA0011"),
])
def test_tactic_by_id_or_short_name(key: str, tactic_id: str) -> None:
    tactic = attack().tactic(key)
    assert tactic is not None and tactic.id == tactic_id
    assert tactic.url == f"https://attack.mitre.org/tactics/{tactic_id}"


def test_t1047_names_and_tactic() -> None:
    technique = attack().technique("T1047")
    assert technique is not None and technique.name == "Windows Management Instrumentation"
    assert technique.tactics == ("TA0002",)
    assert attack().tactic("TA0002").name == "Execution"  # type: ignore[union-attr]


def test_regeneration_from_the_shared_table_reproduces_the_shipped_file(tmp_path: Path) -> None:
    source = shared_path("attack", "attack_table_v18.1.json")
    out = tmp_path / "attack.json"
    assert main([str(source), "--out", str(out)]) == 0
    shipped = (resources.files("sigma_wmi") / "data" / "attack.json").read_bytes()
    assert out.read_bytes() == shipped


def test_stix_bundle_gives_the_same_shape() -> None:
    def ref(tid: str) -> list[dict[str, str]]:
        return [{"source_name": "mitre-attack", "external_id": tid}]

    bundle = {"type": "bundle", "objects": [
        {"type": "x-mitre-collection", "x_mitre_version": "99.1"},
        {"type": "x-mitre-tactic", "id": "x-mitre-tactic--p", "name": "Persistence",
         "x_mitre_shortname": "persistence", "external_references": ref("TA0003")},
        {"type": "attack-pattern", "id": "attack-pattern--new", "name": "WMI Event Subscription",
         "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "persistence"}],
         "external_references": ref("T1546.003")},
        {"type": "attack-pattern", "id": "attack-pattern--old", "name": "Old WMI", "revoked": True,
         "external_references": ref("T1084")},
        {"type": "attack-pattern", "id": "attack-pattern--gone", "name": "Gone", "x_mitre_deprecated": True,
         "external_references": ref("T1000")},
        {"type": "relationship", "relationship_type": "revoked-by",
         "source_ref": "attack-pattern--old", "target_ref": "attack-pattern--new"},
    ]}
    table = build_table(bundle)
    assert table["attack_version"] == "99.1"
    assert table["techniques"] == {"T1546.003": {"name": "WMI Event Subscription", "tactics": ["TA0003"]}}
    assert table["revoked_by"] == {"T1084": "T1546.003"}
    loaded = Attack(json.loads(json.dumps(table)))
    technique, diagnostic = loaded.resolve("T1084")
    assert technique is not None and technique.id == "T1546.003" and diagnostic is not None


def test_shipped_table_is_consistent() -> None:
    table = attack()
    assert table.version == "18.1"
    for technique in table.techniques.values():
        assert technique.tactics, technique.id
        assert all(t in table.tactics for t in technique.tactics), technique.id
    for old, new in table.revoked_by.items():
        assert new in table.techniques, (old, new)
