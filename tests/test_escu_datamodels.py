"""Every CIM data model ESCU's tstats searches use: its fields are generated data, its analytics
import and read back from our tstats output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigma_wmi.api import compile_rule
from sigma_wmi.backends.splunk_data import cim_dataset, cim_fields
from sigma_wmi.generate.splunk import INDEXED_FIELDS, build
from sigma_wmi.model import And, Match, Op, Pattern, Rule, Wildcard, string_match
from sigma_wmi.readers.escu import is_partial, read_escu


def escu(search: str) -> Rule:
    return read_escu({"name": "T", "id": "00000000-0000-4000-8000-000000000000", "search": search}, "", "t.yml",
                     Path("/nonexistent"))


@pytest.mark.parametrize(("written", "dataset"), [
    ("Change", "Change.All_Changes"), ("Network_Traffic", "Network_Traffic.All_Traffic"),
    ("Authentication", "Authentication.Authentication"), ("Risk", "Risk.All_Risk"),
    ("Endpoint.Registry", "Endpoint.Registry"),
])
def test_a_bare_data_model_searches_its_root_data_set(written: str, dataset: str) -> None:
    assert cim_dataset(written) == dataset


@pytest.mark.parametrize("dataset", ["Endpoint.Processes", "Endpoint.Registry", "Endpoint.Filesystem",
                                     "Network_Traffic.All_Traffic", "Authentication.Authentication",
                                     "Change.All_Changes", "Risk.All_Risk"])
def test_every_data_set_escu_searches_has_its_fields_as_data(dataset: str) -> None:
    fields = cim_fields(dataset)
    assert fields is not None and set(INDEXED_FIELDS) <= set(fields.keys())


# (search, detection): each data set's analytics import exactly and read back from our tstats output
SEARCHES = [
    ('| tstats count from datamodel=Change where All_Changes.result_id="4794" by All_Changes.dest',
     string_match("result_id", Pattern.literal("4794"))),
    ('| tstats count from datamodel=Risk.All_Risk where All_Risk.analyticstories="AD Lateral Movement" '
     "All_Risk.risk_object_type=system by All_Risk.risk_object All_Risk.annotations.mitre_attack.mitre_tactic",
     And((string_match("analyticstories", Pattern.literal("AD Lateral Movement")),
          string_match("risk_object_type", Pattern.literal("system"))))),
    ("| tstats count from datamodel=Endpoint.Filesystem where Filesystem.file_name=*.lnk "
     "Filesystem.file_path=*\\\\Temp\\\\* by Filesystem.dest Filesystem.file_acl",
     And((string_match("file_name", Pattern((Wildcard.MANY, ".lnk"))),
          string_match("target_filename", Pattern((Wildcard.MANY, "\\Temp\\", Wildcard.MANY)))))),
    ("| tstats count from datamodel=Network_Traffic where All_Traffic.dest_port=9389 by All_Traffic.dest",
     Match("destination_port", Op.EQUALS, (9389,))),
]


@pytest.mark.parametrize(("search", "detection"), SEARCHES)
def test_data_set_analytics_import_and_read_back(search: str, detection: Any) -> None:
    rule = escu(search)
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    assert rule.detection == detection
    again = escu(compile_rule(rule, "splunk", "tstats").text)
    assert (again.detection, again.logsource) == (rule.detection, rule.logsource)


def test_generator_writes_bare_and_dotted_data_sets(tmp_path: Path) -> None:
    escu_dir = tmp_path / "shared" / "corpora" / "escu"
    for folder in ("data_sources", "macros", "detections/endpoint"):
        (escu_dir / folder).mkdir(parents=True)
    for name in ("security_content_summariesonly", "security_content_ctime"):
        (escu_dir / "macros" / f"{name}.yml").write_text(yaml.safe_dump({"name": name, "definition": "x"}))
    (escu_dir / "detections" / "endpoint" / "d.yml").write_text(yaml.safe_dump({"search": (
        "| tstats count from datamodel=Change where All_Changes.result_id=1 "
        "by All_Changes.annotations.mitre_attack.mitre_tactic")}))
    data = tmp_path / "data"
    data.mkdir()
    (data / "logsources.yaml").write_text(yaml.safe_dump({"categories": {}, "services": {}}))
    build(tmp_path / "shared", data, {})
    document = json.loads((data / "schemas" / "cim_change_all_changes.json").read_text(encoding="utf-8"))
    assert set(document["fields"]) == {"result_id", "annotations.mitre_attack.mitre_tactic", *INDEXED_FIELDS}
    sources = json.loads((data / "splunk_sources.json").read_text(encoding="utf-8"))
    assert sources["cim_root_datasets"]["Change"] == "All_Changes"
