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

