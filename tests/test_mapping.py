"""Environment mappings (--mapping): the user's field names, conditions and log sources.

Outputs are read back with independent parsers (tests/spl_tokens.py for SPL, json for
Kibana NDJSON); the pySigma pipeline test compares with sigma-cli's own conversion.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, RULES, shared_path
from helpers import sigma_rule
from spl_tokens import Token, tokenize

from sigma_wmi import rule_tests
from sigma_wmi.api import compile_rule
from sigma_wmi.batch import Cache, make_jobs, run
from sigma_wmi.catalog import catalog
from sigma_wmi.cli import main
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.evaluate import compile_rule as predicate
from sigma_wmi.evaluate import hits
from sigma_wmi.events import canonical_event
from sigma_wmi.mapping import load_mapping, mapped_catalog
from sigma_wmi.model import LogSource
from sigma_wmi.readers import ReadOptions, read_text_rules
from sigma_wmi.rule_tests import EventCache

DATA = REPO / "tests" / "data" / "mapping"
ENV = DATA / "corp_env.yml"
PIPELINE = DATA / "corp_pipeline.yml"
SYSMON = "Microsoft-Windows-Sysmon/Operational"


def spl_pairs(query: str) -> list[tuple[str, str]]:
    """(field, value) of every `field=value` / `field IN (...)` test in an SPL search, and
    the fields of `match(field, ...)`-style eval tests (value "")."""
    return _pairs(tokenize(query))


def _pairs(tokens: list[Token]) -> list[tuple[str, str]]:
    pairs = []
    for index, token in enumerate(tokens[:-2]):
        if token.kind == "word" and tokens[index + 1].kind == "op" and tokens[index + 1].text == "=":
            pairs.append((token.text, tokens[index + 2].text))
        elif token.kind == "word" and token.text in ("match", "like", "isnotnull", "isnull") \
                and tokens[index + 1].kind == "lparen" and tokens[index + 2].kind == "word":
            pairs.append((tokens[index + 2].text, ""))  # an eval test in `| where`
        elif token.kind == "word" and tokens[index + 1].kind == "word" and tokens[index + 1].text == "IN":
            end = next(i for i in range(index + 2, len(tokens)) if tokens[i].kind == "rparen")
            pairs += [(token.text, t.text) for t in tokens[index + 3:end] if t.kind in ("string", "word")]
    return pairs


def fields_of(query: str) -> set[str]:
    """Event fields an SPL search tests. Fields a `| rex` or `| eval` stage makes up (as
    pySigma does for some regular expressions) are not event fields; `rex field=X` tests X."""
    fields: set[str] = set()
    made_up: set[str] = set()
    stage: list[Token] = []
    for token in [*tokenize(query), Token("pipe", "|")]:
        if token.kind != "pipe":
            stage.append(token)
            continue
        command = stage[0].text if stage and stage[0].kind == "word" else ""
        if command == "rex":
            fields.update(value for key, value in _pairs(stage) if key == "field")
            made_up.update(re.findall(r"\(\?<(\w+)>", " ".join(t.text for t in stage if t.kind == "string")))
        elif command == "eval" and len(stage) > 1:
            made_up.add(stage[1].text)
        else:
            fields.update(field for field, _ in _pairs(stage))
        stage = []
    return fields - made_up


PROCESS = """
    sel:
        Image|endswith: '\\wmic.exe'
        CommandLine|contains: 'shadowcopy'
    filter:
        User: 'NT AUTHORITY\\SYSTEM'
        ParentImage|endswith: '\\svchost.exe'
    condition: sel and not filter
"""


# ---- the sigma-wmi mapping format ----

def test_renames_and_conditions_per_log_source() -> None:
    rule = sigma_rule(PROCESS)
    query = compile_rule(rule, "splunk", mapping=(str(ENV),)).text
    pairs = spl_pairs(query)
    assert ("index", "edr_win") in pairs and ("sourcetype", "corp:edr:process") in pairs
    assert fields_of(query) == {"index", "sourcetype", "proc_path", "proc_cmdline", "User", "ParentImage"}
    assert "source" not in fields_of(query) and "EventCode" not in fields_of(query)  # the EDR's own data
    # without the mapping, nothing of it leaks: the packaged catalog is unchanged
    plain = compile_rule(rule, "splunk").text
    assert {"Image", "CommandLine", "source", "EventCode"} <= fields_of(plain)
    assert catalog().name_in("sysmon", "process_path") == "Image"


def test_a_rename_scoped_to_a_log_source_stays_there() -> None:
    image_load = sigma_rule("sel:\n    Hashes|contains: 'SHA256=AB'\ncondition: sel", category="image_load")
    process = sigma_rule("sel:\n    Hashes|contains: 'SHA256=AB'\ncondition: sel")
    assert "file_hashes" in fields_of(compile_rule(image_load, "splunk", mapping=(str(ENV),)).text)
    assert "Hashes" in fields_of(compile_rule(process, "splunk", mapping=(str(ENV),)).text)


def test_an_index_alone_keeps_the_channel_conditions() -> None:
    rule = sigma_rule("sel:\n    EventType: WmiBindingEvent\ncondition: sel", category="wmi_event")
    pairs = spl_pairs(compile_rule(rule, "splunk", mapping=(str(ENV),)).text)
    assert ("index", "wineventlog") in pairs and ("index", "sysmon") in pairs
    assert ("source", f"XmlWinEventLog:{SYSMON}") in pairs


def test_a_new_log_source() -> None:
    rule = sigma_rule("sel:\n    EventID: 4100\n    Employee: mallory\ncondition: sel",
                      category="", service="payroll")
    pairs = spl_pairs(compile_rule(rule, "splunk", mapping=(str(ENV),)).text)
    assert ("index", "payroll") in pairs and ("source", "XmlWinEventLog:Corp-Payroll/Operational") in pairs
    cat = mapped_catalog((str(ENV),))
    assert cat.logsource(LogSource("windows", service="payroll")).event_ids == (4100, 4101)
    event = canonical_event({"Channel": "Corp-Payroll/Operational", "EventID": 4100, "Employee": "mallory"},
                            rule.logsource, cat)
    assert hits(rule, [event]) == [event]
    # only the mapped catalog knows the payroll channel: it keeps other channels' events out
    assert predicate(rule, cat=cat)(event) and not predicate(rule, cat=cat)({**event, "channel": "Security"})
    assert predicate(rule)({**event, "channel": "Security"})


def test_elastic_index_from_the_mapping() -> None:
    rule = sigma_rule(PROCESS)
    doc = json.loads(compile_rule(rule, "kql", "ndjson", mapping=(str(ENV),)).text.splitlines()[0])
    assert doc["index"] == ["logs-edr-*"]
    plain = json.loads(compile_rule(rule, "kql", "ndjson").text.splitlines()[0])
    assert plain["index"] != ["logs-edr-*"]


def test_profile_fields_rename_one_profile_only() -> None:
    rule = sigma_rule("sel:\n    CommandLine|contains: vssadmin\ncondition: sel", category="file_event")
    kql = compile_rule(rule, "kql", mapping=(str(ENV),)).text
    assert "process.command_line.text" in kql
    assert "CommandLine" in fields_of(compile_rule(rule, "splunk", mapping=(str(ENV),)).text)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("sigma_wmi_mapping: 1\nfields:\n  Image: x\nfeilds:\n  User: y\n", 4, "unknown key"),
    ("sigma_wmi_mapping: 1\nlogsources:\n  - category: process_creation\n    condition:\n      splunk: {}\n",
     4, "unknown key"),
    ("sigma_wmi_mapping: 1\nconditions:\n  splunk:\n    indexes: main\n", 4, "unknown key"),
    ("sigma_wmi_mapping: 1\nfields:\n  Image: 3\n", 3, "not of type 'string'"),
    ("fields:\n  Image: x\n", 1, "sigma_wmi_mapping"),
    ("sigma_wmi_mapping: 1\nlogsources:\n  - fields: {Image: x}\n", 3, "valid"),
])
def test_bad_mapping_files_name_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "env.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SigmaWmiError, match=message) as info:
        load_mapping(path)
    assert info.value.origin is not None and (info.value.origin.path, info.value.origin.line) == (str(path), line)


def test_cli_reports_a_bad_mapping_as_one_located_line(tmp_path: Path) -> None:
    path = tmp_path / "env.yml"
    path.write_text("sigma_wmi_mapping: 1\nfields:\n  Image: x\nfeilds: {}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "--mapping", str(path), str(RULES / "sigma")])
    assert result.exit_code == 2
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith(f"{path}:4: error: ") and "feilds" in line


def test_workers_and_cache_see_the_mapping(tmp_path: Path) -> None:
    env = tmp_path / "env.yml"
    env.write_text(ENV.read_text(encoding="utf-8"), encoding="utf-8")
    files = sorted((RULES / "sigma").glob("*.yml"))
    jobs = make_jobs(["splunk"], None, {"mapping": (str(env),)})
    serial = [r.outputs for batch in run(files, jobs, workers=1) for r in batch]
    parallel = [r.outputs for batch in run(files, jobs, workers=2) for r in batch]
    assert serial == parallel and any("proc_path" in o.get("splunk:raw", "") for o in serial)
    before = Cache(tmp_path / "cache", jobs, ReadOptions()).salt
    env.write_text(ENV.read_text(encoding="utf-8").replace("proc_path", "proc_image"), encoding="utf-8")
    assert Cache(tmp_path / "cache", jobs, ReadOptions()).salt != before


# ---- pySigma processing pipelines ----

def _sigma_cli() -> str:
    found = shutil.which("sigma")
    if not found:
        pytest.skip("sigma-cli is not installed")
    return found


def test_pipeline_matches_sigma_cli(tmp_path: Path) -> None:
    """The same rules, the same pipeline: sigma-wmi and sigma-cli name the same fields and
    add the same conditions (values may be written differently; they are not compared)."""
    cli = _sigma_cli()
    rules = sorted(p for p in (RULES / "sigma").glob("*.yml")
                   if "category: process_creation" in p.read_text(encoding="utf-8"))
    assert len(rules) >= 4
    compared = renamed = 0
    for path in rules:
        (rule,) = read_text_rules(path.read_text(encoding="utf-8"), str(path))
        ours = compile_rule(rule, "splunk", mapping=(str(PIPELINE),)).text
        result = subprocess.run([cli, "convert", "-t", "splunk", "-p", str(PIPELINE), str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        theirs = result.stdout.strip().splitlines()[-1]
        assert fields_of(ours) == fields_of(theirs), (path.name, ours, theirs)
        conditions = {"index", "sourcetype"}
        assert {p for p in spl_pairs(ours) if p[0] in conditions} == \
               {p for p in spl_pairs(theirs) if p[0] in conditions} == {("index", "edr_win"),
                                                                        ("sourcetype", "corp:edr:process")}
        compared += 1
        renamed += len(fields_of(ours) & {"proc_path", "proc_cmdline", "parent_path", "acct_name",
                                          "pe_original_name"})
    assert compared == len(rules) and renamed >= 5


def test_pipeline_matches_sigma_cli_on_sigmahq(tmp_path: Path) -> None:
    """Every tenth SigmaHQ process_creation rule, one sigma-cli run: same fields, same conditions."""
    cli = _sigma_cli()
    corpus = shared_path("corpora", "sigmahq", "rules", "windows", "process_creation")
    sample = tmp_path / "rules"
    sample.mkdir()
    for path in sorted(corpus.glob("*.yml"))[::10]:
        shutil.copy(path, sample / path.name)
    out = tmp_path / "sigma-cli"
    result = subprocess.run([cli, "convert", "-t", "splunk", "-p", str(PIPELINE), str(sample), "-od", str(out),
                             "-ot", "{stem}.spl"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    compared, differ = 0, []
    for path in sorted(sample.glob("*.yml")):
        theirs_path = out / f"{path.stem}.spl"
        if not theirs_path.exists():
            continue  # sigma-cli could not convert it
        theirs = theirs_path.read_text(encoding="utf-8")
        for rule in read_text_rules(path.read_text(encoding="utf-8"), str(path)):
            ours = compile_rule(rule, "splunk", mapping=(str(PIPELINE),)).text
            conditions = {p for p in spl_pairs(ours) if p[0] in ("index", "sourcetype")}
            expected = {_raw_splunk_name(f) for f in fields_of(theirs)}
            if fields_of(ours) != expected or conditions != {p for p in spl_pairs(theirs)
                                                             if p[0] in ("index", "sourcetype")}:
                differ.append((path.name, sorted(fields_of(ours) ^ expected)))
            compared += 1
    assert compared >= 100 and not differ, (compared, differ)


def _raw_splunk_name(sigma_cli_field: str) -> str:
    """Where the pipeline renames nothing, pySigma keeps the Sigma name while our raw Splunk
    search uses the Windows add-on's (Provider_Name is `Provider`): compare like with like."""
    cat = catalog()
    canonical = cat.canonical(sigma_cli_field, LogSource("windows", "process_creation"))
    return cat.first_name(("splunk", "sysmon"), canonical) or sigma_cli_field


def _pipeline(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pipe.yml"
    path.write_text("name: t\npriority: 10\ntransformations:\n" + body, encoding="utf-8")
    return path


def test_pipeline_prefix_drop_state_and_logsource_change(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, """\
  - type: change_logsource
    product: windows
    service: sysmon
    rule_conditions:
      - type: logsource
        category: process_creation
  - type: drop_detection_item
    field_name_conditions:
      - type: include_fields
        fields: [User]
  - type: field_name_prefix
    prefix: "event."
  - type: set_state
    key: index
    val: [corp-sysmon-*]
""")
    rule = sigma_rule(PROCESS)
    mapped = mapped_catalog((str(path),)).map_rule(rule)
    assert mapped.logsource == LogSource("windows", service="sysmon")
    query = compile_rule(rule, "splunk", mapping=(str(path),)).text
    assert fields_of(query) >= {"event.Image", "event.CommandLine", "event.ParentImage"}
    assert not any(f.endswith("User") for f in fields_of(query))
    # Sysmon events are not Elastic Defend's: on winlogbeat's layout the state's index replaces winlogbeat-*
    doc = json.loads(compile_rule(rule, "kql", "ndjson", mapping=(str(path),), profile="winlogbeat")
                     .text.splitlines()[0])
    assert doc["index"] == ["corp-sysmon-*"]


@pytest.mark.parametrize(("body", "line", "message"), [
    ("  - type: field_name_suffix\n    suffix: .keyword\n", 4, "'field_name_suffix' is not supported"),
    ("  - type: field_name_mapping\n    mapping: {Image: x}\n    rule_conditions:\n"
     "      - type: processing_item_applied\n        processing_item_id: y\n", 7, "'processing_item_applied'"),
    ("  - type: add_condition\n    conditions: {EventID: 1}\n", 5, "not log-source conditions"),
    ("  - type: field_name_mapping\n    mapping: {Image: [a, b]}\n", 5, "maps to 2 fields"),
])
def test_unsupported_pipeline_parts_are_located_errors(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = _pipeline(tmp_path, body)
    with pytest.raises(SigmaWmiError, match=message) as info:
        load_mapping(path)
    assert info.value.origin is not None and info.value.origin.line == line


# ---- the same mapping for `sigma-wmi test` ----

def test_events_of_the_mapped_environment_hit(tmp_path: Path) -> None:
    rule = sigma_rule("sel:\n    Image|endswith: '\\wmic.exe'\ncondition: sel")
    events = tmp_path / "edr.jsonl"
    events.write_text(json.dumps({"Channel": SYSMON, "EventID": 1, "EventRecordID": 7,
                                  "proc_path": r"C:\Windows\System32\wbem\WMIC.exe"}) + "\n", encoding="utf-8")
    (mapped,) = rule_tests.test_rules([rule], [events], cache=EventCache(mapped_catalog((str(ENV),))))
    (plain,) = rule_tests.test_rules([rule], [events])
    assert mapped.hits[str(events)] == ["7"] and plain.hits[str(events)] == []


def test_cli_test_takes_a_mapping(tmp_path: Path) -> None:
    events = tmp_path / "edr.jsonl"
    events.write_text(json.dumps({"Channel": SYSMON, "EventID": 1, "EventRecordID": 9,
                                  "proc_path": r"C:\Windows\System32\wbem\wmic.exe",
                                  "proc_cmdline": "wmic /namespace:\\\\root\\subscription PATH __EventFilter create "
                                                  "Name=x"}) + "\n", encoding="utf-8")
    rule = RULES / "sigma" / "proc_creation_win_wmic_event_subscription.yml"
    if not rule.exists():
        rule = next(p for p in sorted((RULES / "sigma").glob("*wmic*.yml")))
    args = ["test", str(rule), "--events", str(events)]
    plain = CliRunner().invoke(main, args)
    mapped = CliRunner().invoke(main, [*args, "--mapping", str(ENV)])
    assert "    0 hits" in plain.stdout and "    1 hits" in mapped.stdout, (plain.stdout, mapped.stdout)


# ---- sigma-wmi list, after --mapping ----

def _lines(*args: str) -> list[list[str]]:
    result = CliRunner().invoke(main, ["list", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_list_fields_shows_the_effective_names() -> None:
    plain = {row[0]: row for row in _lines("fields", "-p", "sysmon", "-p", "ecs")}
    assert plain["field"] == ["field", "sigma", "where", "sysmon", "ecs"]
    assert plain["process_path"][1:] == ["Image", "*", "Image", "process.executable"]
    mapped = {row[0]: row for row in _lines("fields", "-p", "sysmon", "--mapping", str(ENV))}
    assert mapped["process_path@-/process_creation/-"][2:] == ["-/process_creation/-", "proc_path"]
    assert mapped["host"][3] == "host_fqdn"
    assert "process_path@-/process_creation/-" not in plain


def test_list_logsources_and_profiles() -> None:
    plain = {row[1]: row for row in _lines("logsources")[1:]}
    mapped = {row[1]: row for row in _lines("logsources", "--mapping", str(ENV))[1:]}
    assert "payroll" not in plain and mapped["payroll"][2:4] == ["Corp-Payroll/Operational", "4100,4101"]
    assert plain["process_creation"][6] == "-"
    assert mapped["process_creation"][6] == "splunk:index=edr_win splunk:sourcetype=corp:edr:process elastic:index=logs-edr-*"
    profiles = {row[0]: row[1] for row in _lines("profiles")}
    assert set(profiles) == set(catalog().profiles()) and profiles["sysmon"].endswith("fields")


def test_the_readme_example_is_a_valid_mapping(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Mapping your environment", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "env.yml"
    path.write_text(example, encoding="utf-8")
    mapping = load_mapping(path)
    assert {r.target for r in mapping.renames} >= {"host_fqdn", "proc_path", "process.command_line.text"}
    assert [n.name for n in mapping.new_logsources] == ["payroll"]


def test_docs_pages_show_mapped_queries(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = CliRunner().invoke(main, ["docs", str(RULES / "sigma"), "-o", str(site), "-t", "splunk", "-q",
                                       "--mapping", str(ENV)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pages = [p.read_text(encoding="utf-8") for p in site.rglob("*.md")]
    assert any("proc_path" in page for page in pages)
    assert not any("proc_path" in p.read_text(encoding="utf-8") for p in RULES.rglob("*.yml"))  # inputs untouched


def test_renames_leave_the_cim_data_model_alone() -> None:
    rule = sigma_rule(PROCESS)
    tstats = compile_rule(rule, "splunk", "tstats", mapping=(str(PIPELINE),)).text
    assert "Processes.process_path" in tstats and "proc_path" not in tstats


def test_a_rename_for_one_profile_leaves_the_profiles_derived_from_it(tmp_path: Path) -> None:
    # winlogbeat names follow the ecs names unless given: an ecs-only rename must not move them
    path = tmp_path / "ecs_only.yml"
    path.write_text("sigma_wmi_mapping: 1\nprofile_fields:\n  ecs: {Image: process.name}\n")
    rule = sigma_rule(PROCESS)
    assert "process.name" in compile_rule(rule, "eql", mapping=(str(path),)).text
    for profile in ("winlogbeat", "elastic_agent"):
        text = compile_rule(rule, "eql", mapping=(str(path),), profile=profile).text
        assert "process.executable" in text and "process.name" not in text


@pytest.mark.parametrize("fields", ["fields:\n  EventID: evt_code\n",
                                    "logsources:\n  - category: wmi_event\n    fields: {EventID: evt_code, Channel: chan}\n"])
def test_log_source_conditions_use_the_mapped_names(tmp_path: Path, fields: str) -> None:
    # The channel and event-id conditions a backend adds name fields as the mapped detection
    # does: one event cannot carry both EventCode and the team's evt_code.
    path = tmp_path / "env.yml"
    path.write_text("sigma_wmi_mapping: 1\n" + fields)
    rule = sigma_rule("sel:\n    EventID: 19\ncondition: sel", category="wmi_event")
    splunk = fields_of(compile_rule(rule, "splunk", mapping=(str(path),)).text)
    assert "evt_code" in splunk and "EventCode" not in splunk
    eql = compile_rule(rule, "eql", mapping=(str(path),), profile="winlogbeat").text
    assert "evt_code :" in eql and "event.code" not in eql
    assert ("chan :" in eql) == ("chan" in fields)


def test_events_in_the_mapped_names_are_recognised_and_hit(tmp_path: Path) -> None:
    # `convert --mapping` queries evt_code/chan; `test --mapping` must read events named so
    mapping = tmp_path / "env.yml"
    mapping.write_text("sigma_wmi_mapping: 1\nfields:\n  EventID: evt_code\n  Channel: chan\n")
    rule = tmp_path / "r.yml"
    rule.write_text("title: w\nlogsource: {product: windows, category: wmi_event}\n"
                    "detection:\n  sel:\n    EventID: 19\n  condition: sel\n")
    events = tmp_path / "e.jsonl"
    events.write_text('{"evt_code": 19, "chan": "Microsoft-Windows-Sysmon/Operational", "EventRecordID": 5}\n'
                      '{"evt_code": 20, "chan": "Microsoft-Windows-Sysmon/Operational", "EventRecordID": 6}\n')
    result = CliRunner().invoke(main, ["test", str(rule), "--events", str(events), "--mapping", str(mapping)])
    assert result.exit_code == 0, result.output
    assert "1 hits" in result.output
