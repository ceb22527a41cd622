"""The command line in CI: standard input, --fail-on partial, configuration files, --exclude,
the cache folder, validated option values (usage errors that list the choices), -o checks,
--help examples and shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RULES

from sigma_wmi.cli import main
from sigma_wmi.inputs import excluded

SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
RULE = """title: CI rule {n}
id: 6f1f5a55-2a0d-4d8e-9a55-0a4f2b6d9e{n:02d}
status: test
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\x{n}.exe'
    condition: selection
level: low
"""
# KQL can only approximate a regular expression: a partial conversion (a warning), not a failure.
PARTIAL = RULE.format(n=50).replace("Image|endswith: '\\x50.exe'", "CommandLine|re: 'who.mi'")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A detection repository (a .git folder: where the configuration search stops) as the
    current directory, with the user's cache folder redirected into the test's folder."""
    root = tmp_path / "repo"
    (root / "rules" / "deprecated").mkdir(parents=True)
    (root / ".git").mkdir()
    for n in range(3):
        (root / "rules" / f"r{n}.yml").write_text(RULE.format(n=n))
    (root / "rules" / "deprecated" / "old.yml").write_text(RULE.format(n=9))
    monkeypatch.chdir(root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return root


# ---------------------------------------------------------------------------
# standard input
# ---------------------------------------------------------------------------

def test_convert_reads_one_rule_from_stdin() -> None:
    code, out, _ = run("--no-config", "convert", "--no-cache", "-t", "splunk", "-", stdin=SCRCONS.read_text())
    assert code == 0
    assert 'Image="C:\\\\WINDOWS\\\\system32\\\\wbem\\\\scrcons.exe"' in out


def test_stdin_errors_are_labelled_stdin() -> None:
    code, _, err = run("--no-config", "convert", "--no-cache", "-", stdin="title: x\nlogsource: {}\ndetection: [\n")
    assert code == 1
    assert err.startswith("<stdin>:4: error: YAML syntax error")


def test_stdin_and_files_together_and_stdin_only_once(project: Path) -> None:
    code, out, _ = run("convert", "--no-cache", "rules", "-", stdin=SCRCONS.read_text())
    assert code == 0 and len(out.splitlines()) == 5 and "scrcons.exe" in out.splitlines()[-1]
    assert run("convert", "--no-cache", "-", "-", stdin="")[0] == 2


def test_test_command_reads_stdin() -> None:
    code, out, _ = run("--no-config", "test", "-", stdin=RULE.format(n=1))
    assert code == 0 and "[<stdin>]" in out


# ---------------------------------------------------------------------------
# --fail-on partial
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("fail_on", "exit_code"), [("error", 0), ("partial", 1)])
def test_convert_fail_on_partial(tmp_path: Path, fail_on: str, exit_code: int) -> None:
    rule = tmp_path / "partial.yml"
    rule.write_text(PARTIAL)
    code, _, err = run("--no-config", "convert", "--no-cache", "-t", "kql", "--fail-on", fail_on, str(rule))
    assert code == exit_code
    assert "1 partial" in err


# ---------------------------------------------------------------------------
# configuration files
# ---------------------------------------------------------------------------

def test_config_sets_targets_profile_options_mapping_and_output(project: Path) -> None:
    (project / "env").mkdir()
    (project / "env" / "map.yml").write_text("sigma_wmi_mapping: 1\nfields:\n  Image: proc_path\n")
    (project / "sigma-wmi.toml").write_text(
        'target = ["splunk"]\nmapping = ["env/map.yml"]\n'
        '[convert]\nprofile = "sysmon"\noutput = "build/"\noption = {index = "wineventlog"}\n')
    code, _, err = run("convert", "--no-cache", "rules")
    assert code == 0, err
    written = sorted((project / "build" / "splunk-raw").iterdir())
    assert len(written) == 4
    text = written[0].read_text()
    assert text.startswith('index="wineventlog" ') and "proc_path=" in text


def test_command_line_overrides_config(project: Path) -> None:
    (project / "sigma-wmi.toml").write_text('[convert]\ntarget = "eql"\n')
    assert "process where" in run("convert", "--no-cache", "rules")[1]
    assert "Image=" in run("convert", "--no-cache", "-t", "splunk", "rules")[1]
    assert "Image=" in run("--no-config", "convert", "--no-cache", "rules")[1]


def test_config_in_pyproject_found_from_a_subfolder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "env").mkdir()
    (project / "env" / "map.yml").write_text("sigma_wmi_mapping: 1\nprofile_fields:\n  ecs: {Image: edr.image}\n")
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.sigma-wmi.convert]\ntargets = ["kql"]\n'
                                            'exclude = ["deprecated"]\nmapping = "env/map.yml"\n')
    monkeypatch.chdir(project / "rules")  # paths in the file are relative to the file, not to here
    code, out, err = run("convert", "--no-cache", ".")
    assert code == 0, err
    assert out.count("edr.image") == 3


def test_explicit_config_file_and_the_search_stops_at_the_repository_root(project: Path, tmp_path: Path) -> None:
    (tmp_path / "sigma-wmi.toml").write_text('[convert]\ntarget = "eql"\n')  # above the repository: not used
    assert "Image=" in run("convert", "--no-cache", "rules")[1]
    explicit = project / "ci.toml"
    explicit.write_text('[convert]\ntarget = "kql"\n')
    assert "process.executable" in run("--config", str(explicit), "convert", "--no-cache", "rules")[1]
    assert "process.executable" in run("convert", "--config", str(explicit), "--no-cache", "rules")[1]


@pytest.mark.parametrize(("text", "message"), [
    ('[convert]\nbogus = 1\n', "[convert] has no option 'bogus'; options: "),
    ('[nosuch]\ntarget = "eql"\n', "no command nosuch"),
    ('[convert]\ntarget = "splnuk"\n', "unknown target 'splnuk'"),
    ('[convert]\noption = {expand_macros = "maybe"}\n', "true, false"),
    ('[convert\n', "sigma-wmi.toml:1: TOML syntax error"),
])
def test_bad_config_is_a_usage_error(project: Path, text: str, message: str) -> None:
    (project / "sigma-wmi.toml").write_text(text)
    code, _, err = run("convert", "--no-cache", "rules")
    assert code == 2
    assert message in err


def test_config_reaches_the_commands_of_list(project: Path) -> None:
    (project / "env").mkdir()
    (project / "env" / "map.yml").write_text("sigma_wmi_mapping: 1\nfields:\n  Image: proc_path\n")
    (project / "sigma-wmi.toml").write_text('mapping = ["env/map.yml"]\n[list.fields]\nprofile = ["sysmon"]\n')
    code, out, err = run("list", "fields")
    assert code == 0, err
    assert out.splitlines()[0].split("\t") == ["field", "sigma", "where", "sysmon"]
    assert "proc_path" in out
    (project / "sigma-wmi.toml").write_text('[list.nosuch]\nprofile = "x"\n')
    assert "[list] has no command nosuch" in run("list", "fields")[2]


def test_check_section_sets_fail_on_and_format(project: Path) -> None:
    (project / "rules" / "partial.yml").write_text(PARTIAL)
    (project / "sigma-wmi.toml").write_text('[check]\ntarget = ["kql"]\nfail-on = "partial"\nformat = "json"\n')
    code, out, _ = run("check", "--no-cache", "rules")
    assert code == 1 and json.loads(out)["fail_on"] == "partial"


# ---------------------------------------------------------------------------
# --exclude, the cache folder
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "glob", "hit"), [
    ("deprecated/old.yml", "deprecated", True), ("deprecated/old.yml", "deprecated/", True),
    ("a/deprecated/old.yml", "deprecated", True), ("deprecated/old.yml", "deprecated/*", True),
    ("x/old.yml", "*old.yml", True), ("x/old.yml", "**/old.yml", True), ("old.yml", "**/old.yml", True),
    ("x/new.yml", "old.yml", False), ("deprecatedness/a.yml", "deprecated", False), ("x/y.yml", "x/z*", False),
])
def test_exclude_globs(path: str, glob: str, hit: bool) -> None:
    assert excluded(path, (glob,)) is hit


def test_exclude_leaves_files_out(project: Path) -> None:
    code, out, _ = run("convert", "--no-cache", "--exclude", "deprecated", "--exclude", "r0.yml", "rules")
    assert code == 0 and out.count("Image=") == 2
    assert run("convert", "--no-cache", "--exclude", "*.yml", "rules")[0] == 2


def test_cache_goes_to_the_user_cache_folder_not_the_working_directory(project: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert run("convert", "rules")[0] == 0
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert any((tmp_path / "user-cache" / "sigma-wmi").rglob("*.json"))
    own = tmp_path / "own-cache"
    assert run("convert", "--cache-dir", str(own), "rules")[0] == 0
    assert any(own.rglob("*.json"))


# ---------------------------------------------------------------------------
# every option value validated: usage errors (exit 2) that list the valid values
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "listed"), [
    (["-t", "splunk", "-O", "expand_macros=maybe"], "true, false"),
    (["-t", "splunk", "-O", "search_format=json"], "raw, tstats"),
    (["-t", "splunk", "-O", "cron_schedule"], "is not NAME=VALUE"),
    (["-t", "splunk", "-O", "nosuch=1"], "options: by, cron_schedule, earliest, es, expand_macros, filter_macro"),
    (["-t", "eql", "-O", "expand_macros=true"], "options: index, interval, lookback, mapping, profile"),
    (["-t", "splunk", "-p", "bogus"], "profiles: auto, sysmon, security"),
    (["-t", "eql", "-p", "sysmon"], "profiles: ecs, elastic_agent, winlogbeat"),
    (["-t", "sigma", "-p", "ecs"], "no selected target (sigma) takes a profile"),
    (["-t", "splunk", "-f", "ndjson"], "formats: raw, tstats, savedsearches"),
    (["-t", "splunk,eql", "-f", "yaml"], "formats: raw, tstats, savedsearches, query, ndjson, toml"),
    (["-t", "splnuk"], "did you mean 'splunk'"),
    (["-t", "splunk,nosuch"], "targets: atc, eql, escu, kql, lucene, sigma, splunk"),
])
@pytest.mark.parametrize("command", ["convert", "check"])
def test_bad_option_values_list_the_choices(command: str, args: list[str], listed: str) -> None:
    if command == "check" and "-f" in args:
        args = ["--target-format" if a == "-f" else a for a in args]
    code, out, err = run("--no-config", command, "--no-cache", *args, str(SCRCONS))
    assert code == 2, err
    assert listed in err and "Usage:" in err and not out


def test_a_choice_needs_one_target_that_has_it() -> None:
    code, out, err = run("--no-config", "convert", "--no-cache", "-t", "splunk,eql", "-O", "profile=winlogbeat",
                         str(SCRCONS))
    assert code == 0, err
    assert out == run("--no-config", "convert", "--no-cache", "-t", "splunk,eql", "-p", "winlogbeat", str(SCRCONS))[1]
    code, _, err = run("--no-config", "convert", "--no-cache", "-t", "splunk,eql", "-O", "profile=nosuch", str(SCRCONS))
    assert code == 2 and "takes auto, sysmon, security" in err


def test_good_option_values_pass() -> None:
    code, out, _ = run("--no-config", "convert", "--no-cache", "-t", "splunk", "-f", "tstats", "-O", "expand_macros=true",
                       "-p", "sysmon", str(SCRCONS))
    assert code == 0 and "tstats" in out and "`" not in out


def test_output_file_with_several_targets_is_a_usage_error_and_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    code, _, err = run("--no-config", "convert", "--no-cache", "-t", "splunk,eql", "-o", str(out), str(SCRCONS))
    assert code == 2 and "a folder is needed" in err and "out/" in err
    assert list(tmp_path.iterdir()) == []
    code, _, _ = run("--no-config", "convert", "--no-cache", "-t", "splunk,eql", "-o", f"{tmp_path}/out/", str(SCRCONS))
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eql-query", "splunk-raw"]


def test_output_file_of_another_format_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "rules.ndjson"
    code, _, err = run("--no-config", "convert", "--no-cache", "-t", "eql", "-o", str(out), str(SCRCONS))
    assert code == 2 and "use -f ndjson" in err and not out.exists()
    assert run("--no-config", "convert", "--no-cache", "-t", "eql", "-f", "ndjson", "-o", str(out), str(SCRCONS))[0] == 0
    assert json.loads(out.read_text().splitlines()[0])["type"] == "eql"


# ---------------------------------------------------------------------------
# --help and shell completion
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "example"), [
    ([], "sigma-wmi check rules/ --format sarif"), (["convert"], "sigma-wmi convert -t kql - < rule.yml"),
    (["check"], "--fail-on error: exit 1 on any error finding"),
])
def test_help_shows_examples(args: list[str], example: str) -> None:
    code, out, _ = run(*args, "--help")
    assert code == 0 and "Examples:" in out and example in out


def test_help_documents_shell_completion() -> None:
    assert "_SIGMA_WMI_COMPLETE=bash_source sigma-wmi" in run("--help")[1]


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_SIGMA_WMI_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    script = Path(sys.executable).with_name("sigma-wmi")
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if "," in line]


def test_shell_completion_script_and_values() -> None:
    script = Path(sys.executable).with_name("sigma-wmi")
    if not script.exists():
        pytest.skip("the sigma-wmi script is not installed next to this Python")
    source = subprocess.run([str(script)], env={**os.environ, "_SIGMA_WMI_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60).stdout
    assert "_sigma_wmi_completion" in source and "complete " in source
    assert "check" in _complete("sigma-wmi ch")
    assert _complete("sigma-wmi convert -t spl") == ["splunk"]
    assert _complete("sigma-wmi convert -t splunk,e") == ["splunk,eql", "splunk,escu"]
    assert set(_complete("sigma-wmi convert -p s")) == {"security", "sysmon"}
    assert "expand_macros=" in _complete("sigma-wmi convert -O exp")


def test_check_report_inside_an_input_folder_is_refused(project: Path) -> None:
    code, _, err = run("check", "--no-cache", "-t", "splunk", "-o", "rules/check.json", "rules")
    assert code == 2 and "--output rules/check.json overlaps the input rules" in err
    assert not (project / "rules" / "check.json").exists()


def test_docs_excludes_too(project: Path, tmp_path: Path) -> None:
    code, _, err = run("docs", "--exclude", "deprecated", "-o", str(tmp_path / "site"), "rules")
    assert code == 0 and err.startswith("3 rules,")


def test_test_command_excludes_too(project: Path) -> None:
    code, out, _ = run("test", "--exclude", "deprecated", "--exclude", "r1.yml", "rules")
    assert code == 0 and out.splitlines()[-1].startswith("2 rules,")


def test_config_placeholders_and_filters_reach_check_as_they_reach_convert(project: Path) -> None:
    """A placeholder the config gives values for is no error in `check` either, and a filter the
    config names is applied (and announced) there too."""
    (project / "rules" / "p.yml").write_text(RULE.format(n=7).replace("Image|endswith: '\\x7.exe'",
                                                                      "Image|expand: '%tools%'"))
    (project / "values.yml").write_text("tools: ['*\\\\x7.exe']\n")
    assert "%tools%" in (project / "rules" / "p.yml").read_text()
    (project / "not_dc.yml").write_text("title: Not on DC\nlogsource: {product: windows}\nfilter:\n"
                                        "    rules: any\n    dc: {Computer|startswith: DC}\n    condition: not dc\n")
    (project / "sigma-wmi.toml").write_text('target = ["splunk"]\nplaceholders = ["values.yml"]\n'
                                            'filter = ["not_dc.yml"]\n')
    code, out, err = run("check", "--no-cache", "rules/p.yml")
    assert code == 0 and "unresolved-placeholder" not in out, (out, err)
    assert "filter-applied" in out
    code, out, _ = run("convert", "--no-cache", "rules/p.yml")
    assert code == 0 and 'Image="*\\\\x7.exe"' in out and 'NOT Computer="DC*"' in out
