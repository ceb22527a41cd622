"""Reading recorded events and mapping them to canonical fields and ECS."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from conftest import REPO, shared_path

from sigma_wmi.catalog import catalog
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.events import (
    canonical_event,
    flatten_evtx_record,
    parse_message_fields,
    raw_profile,
    read_events,
    to_ecs,
)
from sigma_wmi.model import LogSource

SYNTHETIC = REPO / "tests" / "data" / "events" / "wmi_pack_synthetic.jsonl"
SYSMON = "Microsoft-Windows-Sysmon/Operational"


def by_record(path: Path) -> dict[str, dict]:
    return {str(e["EventRecordID"]): e for e in read_events(path)}


# ---- reading ----

def test_jsonl_events_carry_file_and_line() -> None:
    events = list(read_events(SYNTHETIC))
    assert len(events) == 28
    assert events[0]["@file"] == str(SYNTHETIC) and events[0]["@line"] == 1
    assert events[-1]["@line"] == 28


def test_json_file_with_a_list(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(json.dumps([{"EventID": 1}, {"EventID": 2}]), encoding="utf-8")
    assert [e["EventID"] for e in read_events(path)] == [1, 2]


@pytest.mark.parametrize(("name", "content", "line"), [
    ("bad.jsonl", '{"EventID": 1}\n{"EventID": \n', 2),
    ("list.jsonl", '{"EventID": 1}\n\n[1, 2]\n', 3),
])
def test_bad_json_names_file_and_line(tmp_path: Path, name: str, content: str, line: int) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SigmaWmiError) as info:
        list(read_events(path))
    assert info.value.origin is not None
    assert info.value.origin.path == str(path) and info.value.origin.line == line


@pytest.mark.parametrize(("name", "content"), [
    ("events.csv", b"a,b\n"),
    ("broken.evtx", b"ElfFile\x00 not really an event log" * 10),
    ("binary.jsonl", b"\xff\xfe\x00garbage"),
])
def test_unreadable_files_raise_sigma_wmi_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SigmaWmiError):
        list(read_events(path))


def test_missing_file() -> None:
    with pytest.raises(SigmaWmiError, match="not found"):
        list(read_events(REPO / "no" / "such.jsonl"))


# ---- canonical names ----

def test_profile_follows_the_channel_and_log_source() -> None:
    """Security events are translated to Sysmon-style names for a category (4688 →
    process_creation) and keep their own names for `service: security` rules."""
    assert raw_profile({"Channel": "Security", "EventID": 4688}) == "security"
    assert raw_profile({"Channel": "Security", "EventID": 4624}) == "sysmon"
    assert raw_profile({"Channel": "Security", "EventID": 4688}, LogSource("windows", service="security")) == "sysmon"
    assert raw_profile({"Channel": "Security"}, LogSource("windows", "process_creation")) == "security"
    assert raw_profile({"Channel": SYSMON.upper()}) == "sysmon"
    assert raw_profile({"Channel": "Microsoft-Windows-WMI-Activity/Operational"}) == "wmi_activity"
    assert raw_profile({"Channel": "Windows PowerShell"}) == "sysmon"
    assert raw_profile({}) == "sysmon"


def test_process_ids_differ_between_sysmon_and_security() -> None:
    """4688's ProcessId is the parent; Sysmon's is the new process. Hex and text become ints."""
    events = by_record(SYNTHETIC)
    sysmon = canonical_event(events["3901"])
    security = canonical_event(events["3902"])
    assert sysmon["process_id"] == 4901 and sysmon["parent_process_id"] == 612
    assert security["process_id"] == 0x1000 + 902 and security["parent_process_id"] == 0x264
    assert security["process_path"].lower().endswith(r"\scrcons.exe")


def test_derived_names_and_provenance() -> None:
    event = canonical_event(by_record(SYNTHETIC)["3803"])
    assert event["process_name"] == "payload.exe"
    assert event["parent_process_name"] == "SCRCONS.EXE"
    assert event["@source_format"] == "evtx" and "source" not in event and "@source" in event
    assert event["event_id"] == 1 and event["channel"] == SYSMON


def test_wmi_activity_fields_recovered_from_message() -> None:
    event = canonical_event(by_record(SYNTHETIC)["3101"])
    assert event["wmi_activity_ess"] == "UpdCheck"
    assert event["wmi_activity_consumer"] == 'ActiveScriptEventConsumer="UpdCheck"'
    assert event["wmi_activity_namespace"] == "//./root/subscription"
    assert event["wmi_activity_possible_cause"].startswith("Binding EventFilter:")


def test_message_parser_keeps_possible_cause_whole() -> None:
    fields = parse_message_fields("Namespace = ROOT\\CIMV2; NotificationQuery = SELECT a; "
                                  "ClientProcessID = 8, ClientMachine = WS; PossibleCause = x = 1; y")
    assert fields == {"Namespace": "ROOT\\CIMV2", "NotificationQuery": "SELECT a", "ClientProcessID": "8",
                      "ClientMachine": "WS", "PossibleCause": "x = 1; y"}


def test_sysmon_19_to_21_and_powershell_names() -> None:
    events = by_record(SYNTHETIC)
    consumer = canonical_event(events["3002"])
    assert consumer["wmi_consumer_type"] == "Script" and consumer["wmi_event_type"] == "WmiConsumerEvent"
    assert canonical_event(events["3501"])["ps_payload"].startswith("CommandInvocation(New-CimInstance)")
    assert canonical_event(events["3601"])["ps_data"][0].startswith("Set-WmiInstance")


def test_nested_winlogbeat_and_ecs_documents() -> None:
    doc = {
        "winlog": {"channel": "Security", "event_data": {"NewProcessName": r"C:\a\wmic.exe", "ProcessId": "0x10"}},
        "event": {"code": "4688"},
        "process": {"command_line": "wmic x"},
    }
    event = canonical_event(doc)
    assert event["event_id"] == 4688 and event["channel"] == "Security"
    assert event["process_path"] == r"C:\a\wmic.exe" and event["parent_process_id"] == 16
    assert event["command_line"] == "wmic x" and event["process_name"] == "wmic.exe"


def test_evtx_record_flattening() -> None:
    record = {"Event": {"System": {"EventID": {"#attributes": {"Qualifiers": "0"}, "#text": "800"},
                                   "Channel": "Windows PowerShell", "Computer": "h",
                                   "Provider": {"#attributes": {"Name": "PowerShell"}},
                                   "EventRecordID": 7, "TimeCreated": {"#attributes": {"SystemTime": "t"}}},
                        "EventData": {"Data": {"#text": ["a", "b"]}},
                        "UserData": {"Op": {"#attributes": {}, "ESS": "f"}}}}
    event = flatten_evtx_record(record)
    assert event == {"EventID": 800, "Channel": "Windows PowerShell", "Computer": "h", "Provider": "PowerShell",
                     "TimeCreated": "t", "EventRecordID": 7, "Data": ["a", "b"], "ESS": "f"}


# ---- ECS ----

def test_to_ecs_nests_catalog_names() -> None:
    doc = to_ecs(by_record(SYNTHETIC)["3901"])
    assert doc["process"]["executable"] == r"c:\windows\system32\wbem\SCRCONS.EXE"
    assert doc["process"]["parent"]["name"] == "svchost.exe"
    assert doc["process"]["pid"] == 4901
    assert doc["event"] == {"code": "1", "category": "process", "type": "start"}
    assert doc["winlog"]["channel"] == SYSMON
    assert "@file" not in doc


def _unique_ecs_fields() -> set[str]:
    """Canonical fields whose ECS name no other field shares (those round-trip exactly)."""
    cat = catalog()
    names = collections.Counter(cat.name_in("ecs", f) for f in cat.fields)
    return {f for f in cat.fields if names[cat.name_in("ecs", f)] == 1}


def _assert_round_trip(raw: dict) -> None:
    event = canonical_event(raw)
    back = canonical_event(to_ecs(raw))
    for name in _unique_ecs_fields() & set(event):
        if event[name] is not None:
            assert back.get(name) == event[name], (name, raw.get("@file"), raw.get("@line"))


def test_ecs_round_trip_synthetic() -> None:
    for raw in read_events(SYNTHETIC):
        _assert_round_trip(raw)


def test_ecs_round_trip_shared() -> None:
    root = shared_path("data", "events")
    for path in sorted(root.glob("*.jsonl")):
        for raw in read_events(path):
            _assert_round_trip(raw)


def test_shared_evtx_files() -> None:
    root = shared_path("data", "evtx")
    counts = {p.name: len(list(read_events(p))) for p in sorted(root.glob("*.evtx"))}
    assert counts["ID800-4103-4104-WMI_registration_via_PowerLurk.evtx"] == 10
    assert counts["ID19-20-WMI_registration_via_PowerLurk.evtx"] == 3
    events = [canonical_event(e) for e in read_events(root / "ID19-20-WMI_registration_via_PowerLurk.evtx")]
    assert {e["event_id"] for e in events} == {19, 20}
    assert all(isinstance(e["EventRecordID"], int) for e in events)


def test_shared_positives_map_to_the_same_process() -> None:
    path = shared_path("data", "events", "wmi_persistence_positives_process.jsonl")
    sysmon, security = (canonical_event(e) for e in read_events(path))
    for name in ("process_path", "parent_process_path", "command_line", "process_id", "parent_process_id",
                 "process_name", "parent_process_name"):
        assert sysmon[name] == security[name], name


# ---- evtx_dump / evtx-crate JSON and spaced EventData names ----

DEFENDER_RULE = r"""
title: Defender real-time detection in a PowerShell process
logsource: {product: windows, service: windefend}
detection:
    sel:
        EventID: 1116
        SourceName: Real-Time Protection
        ProcessName|endswith: '\powershell.exe'
    condition: sel
"""


def _hit_ids(rule_text: str, path: Path) -> list[str]:
    from sigma_wmi.evaluate import alerting
    from sigma_wmi.readers import read_text_rules
    from sigma_wmi.rule_tests import EventCache, record_id

    (rule,) = read_text_rules(rule_text, "probe.yml")
    return [record_id(e) for e in alerting(rule, EventCache().get(path, logsource=rule.logsource))]


def test_spaced_defender_names_are_reachable_by_sigma_names() -> None:
    data = REPO / "tests" / "data" / "events"
    assert _hit_ids(DEFENDER_RULE, data / "defender_1116_evtx_dump.json") == ["41"]
    assert _hit_ids(DEFENDER_RULE, data / "defender_1116_flat.jsonl") == ["41"]
    strip = ("@file", "@line", "TimeCreated")  # the flat copy carries no time
    dump, flat = ([{k: v for k, v in canonical_event(e).items() if k not in strip} for e in read_events(path)]
                  for path in (data / "defender_1116_evtx_dump.json", data / "defender_1116_flat.jsonl"))
    assert dump == flat
    assert dump[1]["SourceName"] == "Downloads and attachments"


def _evtx_dump_files(evtx_path: Path, out: Path) -> dict[str, Path]:
    """The records of an EVTX file as the `evtx` package renders them, written the three
    ways evtx_dump and friends do: `-o json` (pretty, `Record N` headers), `-o jsonl`, and
    several objects on one line."""
    import evtx

    records = list(evtx.PyEvtxParser(str(evtx_path)).records_json())
    docs = [json.loads(r["data"]) for r in records]
    files = {"json": out / "dump.json", "jsonl": out / "dump.jsonl", "packed": out / "packed.jsonl"}
    files["json"].write_text("".join(f"Record {r['event_record_id']}\n{json.dumps(d, indent=2)}\n"
                                     for r, d in zip(records, docs, strict=True)), encoding="utf-8")
    files["jsonl"].write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    files["packed"].write_text(" ".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    return files


def test_evtx_dump_json_reads_as_the_evtx_file(tmp_path: Path) -> None:
    from sigma_wmi.api import load_all
    from sigma_wmi.rule_tests import test_rules

    root = shared_path("data", "evtx")
    rules, errors = load_all([REPO / "rules"])
    assert not errors
    total = 0
    for evtx_path in sorted(root.glob("*.evtx")):
        strip = ("@file", "@line", "@source_format")
        native = [{k: v for k, v in canonical_event(e).items() if k not in strip} for e in read_events(evtx_path)]
        files = _evtx_dump_files(evtx_path, tmp_path)
        for kind, path in files.items():
            dumped = [{k: v for k, v in canonical_event(e).items() if k not in strip} for e in read_events(path)]
            assert dumped == native, (evtx_path.name, kind)
        reports = test_rules(rules, [evtx_path, *files.values()])
        for report in reports:
            expected = report.hits[str(evtx_path)]
            total += len(expected)
            for path in files.values():
                assert report.hits[str(path)] == expected, (report.rule.title, evtx_path.name, path.name)
    assert total > 0  # the pack's rules do fire on these captures


def test_a_file_without_known_events_is_an_error(tmp_path: Path) -> None:
    from sigma_wmi.rule_tests import EventCache

    path = tmp_path / "inventory.jsonl"
    path.write_text('{"hostname": "a", "os": "win"}\n{"hostname": "b"}\n', encoding="utf-8")
    with pytest.raises(SigmaWmiError, match="no event of a known shape") as info:
        EventCache().get(path)
    assert info.value.origin is not None and info.value.origin.path == str(path)


def test_a_declared_test_on_unknown_events_fails(tmp_path: Path) -> None:
    from sigma_wmi.readers import read_text_rules
    from sigma_wmi.rule_tests import Roots, test_rules

    (tmp_path / "inventory.jsonl").write_text('{"hostname": "a"}\n', encoding="utf-8")
    text = DEFENDER_RULE + "x_sigma_wmi_tests:\n  - events: inventory.jsonl\n    hits: 0\n"
    (rule,) = read_text_rules(text, str(tmp_path / "r.yml"))
    (report,) = test_rules([rule], roots=Roots(project=tmp_path))
    (case,) = report.cases
    assert case.status == "fail" and "no event of a known shape" in case.message
