"""Schema-true Elastic targets: the generated schemas, the index per profile and log source,
and the rewrites that keep a query to its index's fields, types and sub-fields."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RULES, shared_path
from helpers import sigma_rule
from kql_grammar import parse as parse_kql

from sigma_wmi import schema
from sigma_wmi.api import compile_rule, load
from sigma_wmi.backends.elastic import EqlBackend, KqlBackend, LuceneBackend
from sigma_wmi.backends.elastic_profile import Target, field_info, place, profiles, typed_literals
from sigma_wmi.catalog import catalog
from sigma_wmi.errors import Diagnostic, Level, UnsupportedError
from sigma_wmi.generate import DATA, elastic
from sigma_wmi.model import Match, Op, Pattern

# ---------------------------------------------------------------------------
# The generated schemas
# ---------------------------------------------------------------------------


def test_committed_schemas_are_what_the_generator_builds(tmp_path: Path) -> None:
    shared = shared_path("schemas").parent
    written = elastic.build(shared, tmp_path)
    assert {p.name for p in written} >= {"ecs.json", "defend_process.json", "defend_registry.json",
                                         "winlogbeat.json", "elastic_agent.json"}
    for path in written:
        committed = DATA / "schemas" / path.name
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python -m sigma_wmi.generate"
    again = elastic.build(shared, tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]  # deterministic


def test_generate_command_refuses_a_folder_without_schemas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sigma_wmi.generate.__main__ import main

    assert main([str(tmp_path)]) == 2
    assert "no schemas/ folder" in capsys.readouterr().err


def _defend_field(stream: str, name: str) -> dict[str, Any]:
    """A field of a Defend data stream read straight from upstream's nested fields.yml
    (a node's name may itself hold dots: `code_signature.trusted` inside `dll`)."""
    def find(nodes: list[dict[str, Any]], rest: str) -> dict[str, Any] | None:
        for node in nodes:
            own = str(node["name"])
            if rest == own and "fields" not in node:
                return node
            if rest.startswith(own + ".") and "fields" in node:
                found = find(node["fields"], rest[len(own) + 1:])
                if found is not None:
                    return found
        return None

    nodes = yaml.safe_load(shared_path("schemas", "elastic-endpoint", stream, "fields.yml").read_text())
    found = find(nodes, name)
    assert found is not None, name
    return found


@pytest.mark.parametrize(("stream", "name"), [
    ("registry", "registry.path"), ("registry", "process.executable"), ("library", "dll.path"),
    ("library", "dll.code_signature.trusted"), ("process", "process.command_line"),
    ("file", "file.path"), ("network", "network.direction"),
])
def test_defend_schema_agrees_with_upstream(stream: str, name: str) -> None:
    upstream = _defend_field(stream, name)
    info = schema.load(f"defend_{stream}")[name]
    subs = {m["name"] for m in upstream.get("multi_fields", ())}
    assert info.type == upstream["type"]
    assert info.caseless == ("caseless" in subs)
    assert info.text == ("text" in subs)


@pytest.mark.parametrize(("name", "field", "expected"), [
    ("defend_registry", "registry.path", {"caseless": False, "type": "keyword", "ignore_above": 1024}),
    ("defend_library", "dll.path", {"caseless": False}),
    ("defend_process", "process.executable", {"caseless": True, "ignore_above": 1024}),
    ("defend_library", "dll.code_signature.trusted", {"type": "boolean"}),
    ("winlogbeat", "winlog.event_data.LogonType", {"type": "keyword"}),
    ("elastic_agent", "winlog.event_data.AnythingAtAll", {"type": "keyword"}),  # a dynamic keyword object
    ("winlogbeat", "powershell.file.script_block_text", {"type": "text"}),
    ("ecs", "event.type", {"allowed": ("access", "admin", "allowed", "change", "connection", "creation",
                                       "deletion", "denied", "device", "end", "error", "group", "indicator",
                                       "info", "installation", "protocol", "start", "user")}),
])
def test_schema_facts(name: str, field: str, expected: dict[str, Any]) -> None:
    info = field_info(schema.load(name), field)
    assert info is not None
    for key, value in expected.items():
        assert getattr(info, key) == value


def test_every_schema_says_where_it_came_from() -> None:
    for name in ("ecs", "defend_process", "winlogbeat", "elastic_agent"):
        provenance = schema.load(name).provenance
        assert provenance["generated_by"] == "sigma_wmi.generate.elastic"
        assert provenance["source"] and provenance["version"]
    assert "derived" in schema.load("elastic_agent").provenance


# ---------------------------------------------------------------------------
# Index per profile and log source
# ---------------------------------------------------------------------------

INDEXES = {  # (profile, category or service) -> index
    ("ecs", "process_creation"): ("logs-endpoint.events.process-*",),
    ("ecs", "registry_set"): ("logs-endpoint.events.registry-*",),
    ("ecs", "image_load"): ("logs-endpoint.events.library-*",),
    ("ecs", "file_delete"): ("logs-endpoint.events.file-*",),
    ("ecs", "dns_query"): ("logs-endpoint.events.network-*",),
    ("elastic_agent", "process_creation"): ("logs-windows.sysmon_operational-*", "logs-system.security-*"),
    ("elastic_agent", "wmi_event"): ("logs-windows.sysmon_operational-*",),
    ("elastic_agent", "process_access"): ("logs-windows.sysmon_operational-*",),
    ("elastic_agent", "ps_script"): ("logs-windows.powershell_operational-*",),
    ("elastic_agent", "ps_module"): ("logs-windows.powershell_operational-*",),
    ("elastic_agent", "ps_classic_script"): ("logs-windows.powershell-*",),
    ("elastic_agent", "security"): ("logs-system.security-*",),
    ("elastic_agent", "system"): ("logs-system.system-*",),
    ("elastic_agent", "taskscheduler"): ("logs-windows.forwarded-*",),
    ("winlogbeat", "ps_script"): ("winlogbeat-*",),
    ("winlogbeat", "security"): ("winlogbeat-*",),
    ("ecs", "wmi_event"): None, ("ecs", "ps_script"): None, ("ecs", "security"): None,
    ("ecs", "process_access"): None, ("ecs", "create_stream_hash"): None,
}


@pytest.mark.parametrize(("profile", "source"), list(INDEXES))
def test_index_per_profile_and_log_source(profile: str, source: str) -> None:
    service = source in ("security", "system", "taskscheduler")
    rule = sigma_rule("sel: {CommandLine: x}\ncondition: sel", category="" if service else source,
                      service=source if service else None)
    expected = INDEXES[(profile, source)]
    if expected is None:
        with pytest.raises(UnsupportedError) as raised:
            place(rule, profile)
        assert raised.value.code == "no-index" and raised.value.origin == rule.origin
    else:
        assert place(rule, profile).index == expected


@pytest.mark.parametrize("profile", ["ecs", "elastic_agent", "winlogbeat"])
@pytest.mark.parametrize("product", ["aws", "linux"])
def test_non_windows_logs_have_no_index_outside_defend(profile: str, product: str) -> None:
    rule = sigma_rule("sel: {eventName: x}\ncondition: sel", category="", service="cloudtrail", product=product)
    with pytest.raises(UnsupportedError, match="no index"):
        place(rule, profile)


@pytest.mark.parametrize("profile", profiles())
@pytest.mark.parametrize("format", ["ndjson", "toml"])
def test_pack_exports_name_the_index_that_holds_their_events(profile: str, format: str) -> None:
    for rule in load(RULES / "sigma"):
        category = rule.logsource.category
        for target in ("eql", "kql", "lucene"):
            try:
                text = compile_rule(rule, target, format, profile=profile).text
            except UnsupportedError as err:
                # Defend records process, file, registry, library and network events only
                assert profile == "ecs" and err.code == "no-index" and rule.logsource.key() in (
                    "windows/wmi_event/-", "windows/ps_script/-", "windows/ps_module/-",
                    "windows/ps_classic_script/-", "windows/-/wmi"), err
                continue
            index = json.loads(text)["index"] if format == "ndjson" else tomllib.loads(text)["rule"]["index"]
            if profile == "ecs":
                assert index == ["logs-endpoint.events.process-*"]
            elif profile == "winlogbeat":
                assert index == ["winlogbeat-*"]
            elif category == "process_creation":
                assert index == ["logs-windows.sysmon_operational-*", "logs-system.security-*"]
            elif category == "wmi_event":
                assert index == ["logs-windows.sysmon_operational-*"]
            elif category in ("ps_script", "ps_module"):
                assert index == ["logs-windows.powershell_operational-*"]
            elif category == "ps_classic_script":
                assert index == ["logs-windows.powershell-*"]
            else:  # WMI-Activity/Operational: collected only as forwarded events
                assert rule.logsource.service == "wmi" and index == ["logs-windows.forwarded-*"]


def test_index_option_still_overrides() -> None:
    rule = sigma_rule("sel: {CommandLine: x}\ncondition: sel")
    text = compile_rule(rule, "kql", "ndjson", profile="ecs", index="my-*,other-*").text
    assert json.loads(text)["index"] == ["my-*", "other-*"]


# ---------------------------------------------------------------------------
# Fields, literals and sub-fields as the schema says
# ---------------------------------------------------------------------------

def _query(detection: str, target: str = "eql", **kwargs: Any) -> str:
    profile = kwargs.pop("profile", "ecs")
    return compile_rule(sigma_rule(detection, **kwargs), target, profile=profile).text


@pytest.mark.parametrize(("target", "profile", "category", "detection", "expected_end"), [
    # Sigma's string 'false' on a boolean field is a boolean
    ("eql", "ecs", "image_load", "Signed: 'false'", "dll.code_signature.trusted == false"),
    ("kql", "ecs", "image_load", "Signed: 'true'", "dll.code_signature.trusted:true"),
    # Sysmon's Initiated is ECS's network.direction from the host's side (a fact in elastic_targets.yaml)
    ("eql", "ecs", "network_connection", "Initiated: 'true'", 'network.direction == "egress"'),
    ("lucene", "ecs", "network_connection", "Initiated: 'false'", 'network.direction:"ingress"'),
    ("eql", "winlogbeat", "network_connection", "Initiated: 'true'", 'winlog.event_data.Initiated : "true"'),
    # a number on a keyword field is a string; a string of digits on a numeric field a number
    ("eql", "winlogbeat", "", "LogonType: 9", 'winlog.event_data.LogonType : "9"'),
    ("eql", "ecs", "network_connection", "DestinationPort: '4444'", "destination.port == 4444"),
    # .caseless only where the index has it
    ("kql", "ecs", "registry_set", "TargetObject|contains: 'Run'", "registry.path:*Run*"),
    ("kql", "ecs", "image_load", "ImageLoaded|endswith: '\\A.dll'", "dll.path:*\\\\A.dll"),
    ("kql", "ecs", "image_load", "Image|endswith: '\\A.exe'", "process.executable.caseless:*\\\\a.exe"),
    ("lucene", "ecs", "registry_set", "Image|endswith: '\\A.exe'", "process.executable.caseless:*\\\\a.exe"),
    # no .caseless on registry.path: Lucene folds case into a regex instead
    ("lucene", "ecs", "registry_set", "TargetObject|contains: 'R\\x'", "registry.path:/.*[Rr]\\\\[xX].*/"),
])
def test_schema_true_emission(target: str, profile: str, category: str, detection: str, expected_end: str) -> None:
    service = "security" if not category else None
    text = _query(f"sel: {{{detection}}}\ncondition: sel", target, profile=profile, category=category,
                  service=service)
    assert text.endswith(expected_end), text


@pytest.mark.parametrize(("target", "profile", "category", "detection", "code", "named"), [
    ("eql", "ecs", "network_connection", "Initiated: 'maybe'", "value-not-allowed", "Initiated"),
    ("kql", "ecs", "image_load", "Signed: 'perhaps'", "literal-type", "Signed"),
    ("eql", "ecs", "network_connection", "DestinationPort: 'http'", "literal-type", "DestinationPort"),
    ("eql", "ecs", "network_connection", "DestinationPort|contains: '44'", "literal-type", "DestinationPort"),
    ("lucene", "ecs", "registry_set", "EventType: SetValue", "field-not-in-schema", "EventType"),
    ("kql", "ecs", "process_creation", "GrantedAccess: '0x10'", "field-not-in-schema", "GrantedAccess"),
    ("lucene", "ecs", "network_connection", "DestinationIp|startswith: '10.'", "literal-type", "DestinationIp"),
    ("eql", "winlogbeat", "network_connection", "DestinationIp: '-'", "value-not-allowed", "DestinationIp"),
])
def test_what_the_index_cannot_hold_fails_with_a_located_reason(target: str, profile: str, category: str,
                                                                detection: str, code: str, named: str) -> None:
    rule = sigma_rule(f"sel:\n  {detection}\ncondition: sel", category=category)
    with pytest.raises(UnsupportedError) as raised:
        compile_rule(rule, target, profile=profile)
    assert raised.value.code == code
    assert f"'{named}'" in raised.value.message
    assert raised.value.origin is not None and raised.value.origin.line is not None


def test_an_allowed_value_list_keeps_the_values_a_field_can_hold() -> None:
    rule = sigma_rule("sel: {DestinationPort: 80}\ncondition: sel", category="network_connection")
    diagnostics: list[Diagnostic] = []
    target = Target(rule, place(rule, "ecs"), diagnostics, catalog(), "kql")
    match = Match("network.direction", Op.EQUALS, (Pattern.literal("EGRESS"), Pattern.literal("sideways")))
    assert typed_literals(match, target) == replace(match, values=(Pattern.literal("EGRESS"),))
    assert [d.code for d in diagnostics] == ["value-not-allowed"]
    with pytest.raises(UnsupportedError) as raised:
        typed_literals(replace(match, values=(Pattern.literal("sideways"),)), target)
    assert raised.value.code == "value-not-allowed"


@pytest.mark.parametrize(("detection", "expected"), [
    # a filter on a field Defend never has never excludes anything
    ("sel: {CommandLine: a}\nfilter: {LogonId: '0x3e7'}\ncondition: sel and not filter",
     'process.command_line : "a"'),
    # `null` on a field that is never there always holds: the OR is decided
    ("sel: {CommandLine: a}\nopt: {LogonId: null}\nother: {Image: b}\ncondition: sel and (opt or other)",
     'process.command_line : "a"'),
])
def test_absent_fields_are_decided_exactly_and_named(detection: str, expected: str) -> None:
    out = compile_rule(sigma_rule(detection), "eql")
    assert out.text == 'process where event.type == "start" and ' + expected
    (note,) = out.diagnostics
    assert note.code == "absent-field" and "LogonId" in note.message


def test_a_rule_decided_entirely_by_an_absent_field_fails() -> None:
    with pytest.raises(UnsupportedError, match=r"'LogonId'.*match every event") as raised:
        compile_rule(sigma_rule("filter: {LogonId: '0x3e7'}\ncondition: not filter"), "eql")
    assert raised.value.code == "field-not-in-schema"


def test_values_longer_than_ignore_above_are_diagnosed() -> None:
    long = "A" * 1100
    out = compile_rule(sigma_rule(f"sel: {{CommandLine|contains: '{long}', Image: 'x{long}'}}\ncondition: sel"),
                       "kql")
    notes = [d for d in out.diagnostics if d.code == "ignore-above"]
    assert all(n.level is Level.WARNING for n in notes)
    # both .caseless sub-fields (the KQL query's fields) index at most 1024 characters
    assert sorted(n.message.split(" of ")[1].split(" ")[0] for n in notes) == [
        "process.command_line", "process.executable"]


def test_wildcards_on_text_fields_are_diagnosed() -> None:
    out = compile_rule(sigma_rule("sel: {ScriptBlockText|contains: 'New-Object Net.WebClient'}\ncondition: sel",
                                  category="ps_script"), "kql", profile="elastic_agent")
    assert "powershell.file.script_block_text:" in out.text
    assert "text-field" in {d.code for d in out.diagnostics}
    parse_kql(out.text)


# ---------------------------------------------------------------------------
# Rewrites as data
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", [EqlBackend, KqlBackend, LuceneBackend])
def test_each_backend_lists_its_rewrites(backend: type[EqlBackend]) -> None:
    names = [t.__name__ for t in backend.TRANSFORMS]
    assert names.index("target_names") < names.index("absent_fields") < names.index("typed_literals")
    assert ("keywords_in_message" in names) == (backend is EqlBackend)


def test_conversion_leaves_the_rule_alone_and_is_repeatable() -> None:
    rule = sigma_rule("sel: {Initiated: 'true', DestinationPort: '80'}\ncondition: sel", category="network_connection")
    before = rule.detection
    first = [compile_rule(rule, t, profile=p).text for t in ("eql", "kql") for p in ("ecs", "winlogbeat")]
    assert rule.detection == before
    assert first == [compile_rule(rule, t, profile=p).text for t in ("eql", "kql") for p in ("ecs", "winlogbeat")]


def test_the_index_option_places_a_rule_the_profile_has_no_index_for() -> None:
    rule = sigma_rule("sel:\n    TargetObject|contains: '\\Run\\'\ncondition: sel", category="registry_rename")
    with pytest.raises(UnsupportedError) as info:
        KqlBackend().convert(rule, "ndjson")
    assert info.value.code == "no-index"
    output = KqlBackend(index="corp-registry-*").convert(rule, "ndjson")
    assert json.loads(output.text)["index"] == ["corp-registry-*"]
    assert not [d for d in output.diagnostics if d.code == "index-guess"]
