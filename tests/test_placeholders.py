"""`%name%` placeholders (`|expand`): values from `--placeholders FILE`, one located error per rule
when a placeholder has none."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

from sigma_wmi.api import compile_rule
from sigma_wmi.batch import Cache
from sigma_wmi.cli import main
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.readers import ReadOptions, read_text_rules
from sigma_wmi.readers.placeholders import load_placeholders

DATA = REPO / "tests" / "data" / "placeholders"
VALUES = DATA / "admin_tools.yml"
RULE = DATA / "remote_admin_tool.yml"


def _rule(detection: str, **values: tuple[str, ...]) -> str:
    text = ("title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n"
            + "".join(f"    {line}\n" for line in detection.strip().splitlines()))
    (rule,) = read_text_rules(text, "r.yml", ReadOptions(placeholders=values))
    return compile_rule(rule, "splunk").text


@pytest.mark.parametrize(("expanded", "explicit", "values"), [
    # each value of the placeholder, as if the rule listed them
    ("sel: {Image|expand: '%tools%'}", "sel: {Image: ['*\\a.exe', 'C:\\b.exe']}", {"tools": ("*\\a.exe", "C:\\b.exe")}),
    # inside a longer value, with a modifier
    ("sel: {CommandLine|contains|expand: 'x %d% y'}", "sel: {CommandLine|contains: ['x 1 y', 'x 2 y']}",
     {"d": ("1", "2")}),
    # two placeholders: every combination
    ("sel: {CommandLine|expand: '%a%-%b%'}", "sel: {CommandLine: ['1-3', '1-4', '2-3', '2-4']}",
     {"a": ("1", "2"), "b": ("3", "4")}),
    # a value's own wildcard stays a wildcard, its escaped `\*` a literal star
    ("sel: {Image|expand: '%p%'}", "sel: {Image: ['*\\x?.exe', 'lit\\*']}", {"p": ("*\\x?.exe", "lit\\*")}),
])
def test_expand_equals_the_explicit_list(expanded: str, explicit: str, values: dict[str, tuple[str, ...]]) -> None:
    assert _rule(expanded + "\ncondition: sel", **values) == _rule(explicit + "\ncondition: sel")


def test_without_the_modifier_percent_is_literal() -> None:
    assert 'CommandLine="%tools%"' in _rule("sel: {CommandLine: '%tools%'}\ncondition: sel", tools=("x",))


@pytest.mark.parametrize(("values", "words"), [
    ({}, "placeholder %tools% has no values (give values with --placeholders FILE) (field 'Image')"),
    ({"other": ("x",)}, "placeholder %tools% has no values; known: other (field 'Image')"),
    ({"tools": ()}, "placeholder %tools% has an empty value list (field 'Image')"),
])
def test_unresolved_placeholder_is_a_located_rule_error(values: dict[str, tuple[str, ...]], words: str) -> None:
    text = ("title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n"
            "    sel:\n        Image|expand: '%tools%'\n    condition: sel\n")
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "r.yml", ReadOptions(placeholders=values))
    assert info.value.message == words
    assert info.value.code == "unresolved-placeholder"
    assert info.value.origin is not None and info.value.origin.line == 5


def test_placeholder_file(tmp_path: Path) -> None:
    assert load_placeholders([VALUES]) == {"admin_tools": ("*\\psexec.exe", "*\\paexec.exe"),
                                           "share_dirs": ("127.0.0.1\\ADMIN$", "127.0.0.1\\C$")}
    later = tmp_path / "later.yml"
    later.write_text("admin_tools: '*\\psexec64.exe'\nports: [445, 139]\n", encoding="utf-8")
    merged = load_placeholders([VALUES, later])
    assert merged["admin_tools"] == ("*\\psexec64.exe",) and merged["ports"] == ("445", "139")


@pytest.mark.parametrize(("text", "line", "words"), [
    ("- a\n- b\n", 1, "one YAML mapping"),
    ("ok: [a]\nbad: {x: 1}\n", 2, "list of strings"),
    ("'%x%': [a]\n", 1, "without '%'"),
    ("ok: [a]\nflag: [true]\n", 2, "list of strings"),
])
def test_bad_placeholder_files_are_located(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "p.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SigmaWmiError) as info:
        load_placeholders([path])
    assert words in info.value.message and info.value.origin is not None and info.value.origin.line == line


def test_cli_placeholders() -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["convert", "-q", "--no-cache", str(RULE)])
    assert missing.exit_code == 1
    assert f"{RULE}:9: error: placeholder %admin_tools% has no values" in missing.stderr
    assert "(unresolved-placeholder)" in missing.stderr
    given = runner.invoke(main, ["convert", "-q", "--no-cache", "-t", "splunk,eql", "--placeholders", str(VALUES),
                                 str(RULE)])
    assert given.exit_code == 0, given.output
    assert 'Image IN ("*\\\\psexec.exe", "*\\\\paexec.exe")' in given.stdout
    assert 'process.command_line : ("*127.0.0.1\\\\ADMIN$*", "*127.0.0.1\\\\C$*")' in given.stdout
    bad = runner.invoke(main, ["convert", "-q", "--no-cache", "--placeholders", str(RULE), str(RULE)])
    assert bad.exit_code == 2 and "(invalid-placeholders)" in bad.stderr


def test_sigma_wmi_test_takes_placeholders(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", '
                      '"Image": "C:\\\\T\\\\PsExec.exe", "CommandLine": "x \\\\\\\\127.0.0.1\\\\admin$ y"}\n',
                      encoding="utf-8")
    result = CliRunner().invoke(main, ["test", str(RULE), "--events", str(events), "--placeholders", str(VALUES)])
    assert result.exit_code == 0, result.output
    assert "1 hits" in result.output


def test_cache_key_follows_placeholder_values(tmp_path: Path) -> None:
    def salt(**values: tuple[str, ...]) -> str:
        return Cache(tmp_path, [], ReadOptions(placeholders=values)).salt

    assert salt(a=("1",)) == salt(a=("1",))
    assert len({salt(), salt(a=("1",)), salt(a=("2",)), salt(b=("1",))}) == 4



def test_native_form_on_request(tmp_path: Path) -> None:
    """Splunk reads a lookup named like the placeholder; the Sigma writer keeps `|expand`;
    Elastic query text has no value-list reference, so the rule fails there saying why."""
    from sigma.collection import SigmaCollection
    from sigma.types import Placeholder

    out = tmp_path / "out"
    shares = tmp_path / "shares.yml"  # admin_tools stays unresolved
    shares.write_text("share_dirs: ['127.0.0.1\\ADMIN$']\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "-q", "--no-cache", "-t", "splunk,eql,sigma", "--placeholders",
                                       str(shares), "--unresolved-placeholders", "native", "-o", str(out), str(RULE)])
    assert result.exit_code == 0, result.output  # partial: one target failed, two converted
    rule_id = "2f6c1d3e-9a8b-4c7d-8e5f-1a2b3c4d5e6f"
    splunk = (out / "splunk-raw" / f"{rule_id}.spl").read_text(encoding="utf-8")
    assert "[| inputlookup admin_tools | rename value AS Image | fields Image]" in splunk
    assert 'CommandLine="*127.0.0.1\\\\ADMIN$*"' in splunk  # a placeholder with values is expanded
    assert f"{RULE}:1: error: [eql] eql: placeholder %admin_tools% has no values, and Elastic query text cannot " \
        "refer to a value list" in result.stderr
    assert not (out / "eql-query").exists()
    written = (out / "sigma-yaml" / f"{rule_id}.yml").read_text(encoding="utf-8")
    (again,) = SigmaCollection.from_yaml(written).rules
    values = [item.value[0] for d in again.detection.detections.values() for item in d.detection_items]
    assert any(isinstance(part, Placeholder) and part.name == "admin_tools" for v in values for part in v.s)


def test_native_needs_a_whole_value(tmp_path: Path) -> None:
    rule = tmp_path / "r.yml"
    rule.write_text(RULE.read_text(encoding="utf-8"), encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", "-q", "--no-cache", "--unresolved-placeholders", "native",
                                       str(rule)])
    assert result.exit_code == 1
    assert f"{rule}:11: error: placeholder %share_dirs% has no values, and a target-native list holds whole " \
        "field values only" in result.stderr


def test_unresolved_mode_is_validated() -> None:
    result = CliRunner().invoke(main, ["convert", "--unresolved-placeholders", "maybe", str(RULE)])
    assert result.exit_code == 2
    assert "'maybe' is not one of 'error', 'native'" in result.output


def test_a_backslash_before_a_placeholder_is_a_located_warning() -> None:
    """pySigma reads `\\%name%` as an escaped percent sign: the placeholder is literal text and the
    backslash is gone. A path separator before a placeholder is the common slip; say so."""
    text = ("title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n"
            "    sel:\n        Image|expand: '*\\%tools%'\n        CommandLine|expand: '%tools%'\n"
            "    condition: sel\n")
    (rule,) = read_text_rules(text, "r.yml", ReadOptions(placeholders={"tools": ("a.exe",)}))
    assert [(d.code, d.origin.line if d.origin else None) for d in rule.diagnostics] == [("escaped-placeholder", 5)]
    assert "'%tools%' is literal text" in rule.diagnostics[0].message
    assert 'Image="*%tools%"' in compile_rule(rule, "splunk").text  # what pySigma makes of it, said out loud


def test_check_takes_placeholder_values(tmp_path: Path) -> None:
    runner = CliRunner()
    without = runner.invoke(main, ["--no-config", "check", "--no-cache", "-t", "splunk", str(RULE)])
    assert without.exit_code == 1 and "unresolved-placeholder" in without.stdout
    given = runner.invoke(main, ["--no-config", "check", "--no-cache", "-t", "splunk", "--placeholders", str(VALUES),
                                 str(RULE)])
    assert given.exit_code == 0 and "unresolved-placeholder" not in given.stdout, given.output
