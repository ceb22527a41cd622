"""Batch safety on the output side (issue #13): what a batch writes keeps one identity per
rule, means what the rules say, lands where it was asked to and nowhere else, and every
failure to write is one located line, not a traceback.

The CLI-level bad-case corpus is tests/test_bad_cli.py; this module holds the unit tables
and the savedsearches.conf property read back with Splunk's own conf parser.
Long mode: SIGMA_WMI_LONG=1 runs 100,000 examples per property."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import read_conf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from sigma_wmi import batch, cli
from sigma_wmi.backends.atc import AtcBackend
from sigma_wmi.backends.splunk import SplunkBackend
from sigma_wmi.cli import main
from sigma_wmi.docs.markdown import md_cell
from sigma_wmi.docs.site import build_site, page_slug
from sigma_wmi.errors import Level
from sigma_wmi.model import LogSource, Match, Op, Origin, Pattern, Rule
from sigma_wmi.output import (
    TEMP_MARK,
    UniqueNames,
    is_device_name,
    is_temporary,
    remove_stale_temporaries,
    write_atomic,
    write_tree,
)
from sigma_wmi.readers import rule_files
from sigma_wmi.readers.yamlsource import display_path
from sigma_wmi.terminal import safe

LONG = os.environ.get("SIGMA_WMI_LONG") == "1"
PROFILE = settings(max_examples=100_000 if LONG else 200, deadline=None, suppress_health_check=list(HealthCheck))

# Everything a .conf reader might take for structure, and every str.splitlines() break.
CONF_HOSTILE = [*"\\#;*[]=: \t\n\r\x00\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029\"'", "rem ", "default", "DEFAULT"]
hostile_text = st.lists(st.one_of(st.sampled_from(CONF_HOSTILE), st.text(max_size=4)), max_size=8).map("".join)

KEYS = ["description", "search", "cron_schedule", "dispatch.earliest_time", "dispatch.latest_time", "enableSched",
        "counttype", "relation", "quantity", "alert.track", "alert.severity"]


def _rule(title: str, description: str = "", value: str = "v", rule_id: str = "", path: str = "r.yml",
          field: str = "f") -> Rule:
    logsource = LogSource(product="windows", category="process_creation") if field == "process_path" \
        else LogSource(product="linux")
    return Rule(id=rule_id, title=title, description=description, logsource=logsource,
                detection=Match(field, Op.EQUALS, (Pattern.literal(value),)), origin=Origin(path, 1))


def _result(rule: Rule, job: batch.Job) -> batch.RuleResult:
    output = job.backend().convert(rule, job.format)
    return batch.RuleResult(rule.origin.path if rule.origin else "", rule.id, rule.title,
                            outputs={job.key: output.text}, line=1)


def _tab_value(value: str) -> str:
    """What TABConfigParser makes of a one-line value: it strips it, reads `""` as empty and,
    unlike splunkd, cuts it at a `;` that follows whitespace (an inline comment)."""
    at = value.find(";")
    if at > 0 and value[at - 1].isspace():
        value = value[:at]
    value = value.strip()
    return "" if value == '""' else value


def _one_line(text: str) -> str:
    """Control and whitespace characters as single spaces, stated independently of the writer."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", text).split())


def _intended_stanza(title: str) -> str:
    """The stanza a title should give: one line, brackets as parentheses."""
    return _one_line(title.replace("[", "(").replace("]", ")"))


def _intended_description(text: str) -> str:
    """One line, without the trailing backslash that would continue it onto the next key."""
    return _one_line(text).rstrip("\\ ")


@PROFILE
@example(titles=["Same [x]", "Same (x)", "same (x)"], descriptions=["a\\", "#b\n# c", "x\u2028y"],
         values=["a\nb", "c\\", "\\"])
@example(titles=["default", "DEFAULT", "x"], descriptions=["", "\\\n[evil]\nsearch = *", "rem x"],
         values=["\x85", "x\x1c", ";y"])
@given(titles=st.lists(hostile_text, min_size=1, max_size=4),
       descriptions=st.lists(hostile_text, min_size=4, max_size=4), values=st.lists(hostile_text, min_size=4, max_size=4))
def test_savedsearches_read_back_by_splunk_conf_parser(titles: list[str], descriptions: list[str],
                                                       values: list[str], tmp_path: Path) -> None:
    job = batch.Job("splunk", "savedsearches")
    rules = [_rule(title, descriptions[i], values[i], path=f"r{i}.yml") for i, title in enumerate(titles)]
    results, searches = [], []
    for rule in rules:
        try:
            results.append(_result(rule, job))
        except Exception as err:
            assert getattr(err, "code", None) == "conf-value", err
            continue
        searches.append(SplunkBackend().convert(rule, "raw").text)
    batch.unique_identities(results, [job])
    text = SplunkBackend().combine([r.outputs[job.key] for r in results], "savedsearches")
    parser = read_conf(text, tmp_path)  # one folder for every example: the file is rewritten each time

    sections = parser.sections()
    assert len(sections) == len(results)  # nothing merged, nothing injected
    assert len({s.casefold() for s in sections}) == len(sections)
    assert not parser.defaults() and not parser.fields_outside_stanza
    for section, result, search in zip(sections, results, searches, strict=True):
        assert list(parser.item_dict()[section])[:len(KEYS)] == KEYS  # then ES keys (test_savedsearches_es.py)
        stanza = _intended_stanza(result.title)
        renamed = any(d["code"] == "renamed-output" for d in result.diagnostics)
        if stanza.casefold() == "default" or not stanza:
            assert section.startswith(stanza or "sigma-wmi rule")
        elif renamed:
            assert re.fullmatch(re.escape(stanza) + r" \(\d+\)", section), (section, stanza)
        else:
            assert section == stanza
        assert parser.get(section, "search") == _tab_value(search)
        rule = next(r for r in rules if r.title == result.title and r.origin and r.origin.path == result.path)
        assert parser.get(section, "description") == _tab_value(_intended_description(rule.description or rule.title))


def test_search_values_a_conf_line_cannot_hold_fail_that_rule_only() -> None:
    job = batch.Job("splunk", "savedsearches")
    for value in ("a\nb", "a\rb", "a\x00b"):
        out = batch.convert_safely(job.backend(), _rule("t", value=value), "savedsearches")
        assert out.code == "conf-value" and out.level is Level.ERROR  # type: ignore[union-attr]
    for value in ("a\u2028b", "a\x85b", "a\x0bb", "a\x1cb"):  # literal to splunkd: kept as they are
        text = job.backend().convert(_rule("t", value=value), "savedsearches").text
        assert f'f="{value}"' in text


@pytest.mark.parametrize(("titles", "expected", "renamed"), [
    (["Same [x]", "Same (x)"], ["Same (x)", "Same (x) (2)"], [False, True]),
    (["A", "a", "A (2)"], ["A", "a (2)", "A (2) (2)"], [False, True, True]),
    (["x  y", "x\ty", "x\u2028y"], ["x y", "x y (2)", "x y (3)"], [False, True, True]),
    (["default", "[DEFAULT]"], ["default (rule)", "(DEFAULT)"], [False, False]),
    (["t\\", "t"], ["t\\", "t"], [False, False]),  # `[t\]` ends in `]`: no continuation
])
def test_stanza_names_stay_unique(titles: list[str], expected: list[str], renamed: list[bool]) -> None:
    job = batch.Job("splunk", "savedsearches")
    results = [_result(_rule(t, path=f"r{i}.yml"), job) for i, t in enumerate(titles)]
    batch.unique_identities(results, [job])
    assert [job.backend().identity(r.outputs[job.key], "savedsearches") for r in results] == expected
    for result, flag in zip(results, renamed, strict=True):
        warnings = [d for d in result.diagnostics if d["code"] == "renamed-output"]
        assert bool(warnings) == flag
        assert all(d["level"] == "warning" and d["line"] == 1 for d in warnings)
        assert result.status == ("partial" if flag else "ok")


@pytest.mark.parametrize("target", ["eql", "kql", "lucene"])
@pytest.mark.parametrize("format_", ["ndjson", "toml"])
def test_kibana_rule_ids_stay_unique(target: str, format_: str) -> None:
    job = batch.Job(target, format_)
    rules = [_rule("Same title", path="a/r.yml", field="process_path"), _rule("Same title", path="b/r.yml", field="process_path"),
             _rule("Same title", path="c/other.yml", field="process_path"),
             _rule("Other", rule_id="x-1", path="d.yml", field="process_path")]
    results = [_result(rule, job) for rule in rules]
    batch.unique_identities(results, [job])

    def rule_id(text: str) -> str:
        return json.loads(text)["rule_id"] if format_ == "ndjson" else tomllib.loads(text)["rule"]["rule_id"]

    ids = [rule_id(r.outputs[job.key]) for r in results]
    assert len(set(ids)) == len(ids) and ids[3] == "x-1"
    assert [bool([d for d in r.diagnostics if d["code"] == "renamed-output"]) for r in results] == \
        [False, True, False, False]  # same title and file name: only the second needed a new id
    again = [_result(r, job) for r in rules]
    batch.unique_identities(again, [job])
    assert [rule_id(r.outputs[job.key]) for r in again] == ids  # deterministic


@pytest.mark.parametrize(("stems", "expected"), [
    (["a", "A", "a"], ["a.spl", "A-2.spl", "a-3.spl"]),
    (["CON", "con", "nul", "Aux", "COM1", "lpt9", "prn"], ["CON_.spl", "con_-2.spl", "nul_.spl", "Aux_.spl",
                                                          "COM1_.spl", "lpt9_.spl", "prn_.spl"]),
    (["con.foo", "console", "com10", "x-2", "x", "x"], ["con_.foo.spl", "console.spl", "com10.spl", "x-2.spl",
                                                         "x.spl", "x-3.spl"]),
])
def test_file_names_unique_on_every_file_system(stems: list[str], expected: list[str]) -> None:
    names = UniqueNames()
    got = [names.claim(stem, ".spl") for stem in stems]
    assert [name for name, _ in got] == expected
    assert all((why is not None) == (name != stem + ".spl") for (name, why), stem in zip(got, stems, strict=True))
    assert len({n.casefold() for n in expected}) == len(expected)
    assert not any(is_device_name(n) for n in expected)


# ---- where outputs land ----

GOOD = """title: Good {n}
id: 00000000-0000-0000-0000-00000000000{n}
logsource: {{product: windows, category: process_creation}}
detection:
  sel:
    Image|endswith: '\\\\x{n}.exe'
  condition: sel
"""


def _rules(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(1, count + 1):
        path = folder / f"good{n}.yml"
        path.write_text(GOOD.format(n=n))
        paths.append(path)
    return paths


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, ["convert", "--no-cache", *args])


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", ["output-is-input", "report-is-input", "output-in-input-tree", "input-in-output",
                                  "output-is-file-dir-needed", "report-is-dir", "output-is-dir-file-needed",
                                  "report-is-output", "parent-is-file"])
def test_misplaced_outputs_are_usage_errors_before_anything_is_written(case: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    first, _ = _rules(rules)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    args = {
        "output-is-input": ["-o", str(first), str(rules)],
        "report-is-input": ["--report", str(first), str(rules)],
        "output-in-input-tree": ["-o", str(rules / "out"), str(rules)],
        "input-in-output": ["-o", str(tmp_path), str(rules)],
        "output-is-file-dir-needed": ["-t", "splunk,eql", "-o", str(tmp_path / "afile"), str(rules)],
        "report-is-dir": ["--report", str(tmp_path / "adir"), str(rules)],
        "output-is-dir-file-needed": ["-o", str(tmp_path / "adir"), str(rules)],
        "report-is-output": ["-o", str(tmp_path / "o.spl"), "--report", str(tmp_path / "o.spl"), str(rules)],
        "parent-is-file": ["-o", str(tmp_path / "afile" / "out.spl"), str(rules)],
    }[case]
    before = _snapshot(tmp_path)
    result = _run(*args)
    if case == "output-is-dir-file-needed":  # an existing folder simply means directory mode
        assert result.exit_code == 0 and (tmp_path / "adir" / "splunk-raw").is_dir()
        return
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert _snapshot(tmp_path) == before


def test_trailing_slash_means_a_directory(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules)
    out = tmp_path / "out.d"  # a suffix would otherwise mean one file
    assert _run("-o", str(out) + "/", str(rules)).exit_code == 0
    assert sorted(p.name for p in (out / "splunk-raw").iterdir()) == [
        "00000000-0000-0000-0000-000000000001.spl", "00000000-0000-0000-0000-000000000002.spl"]


def _fail_on(monkeypatch: pytest.MonkeyPatch, name: str, code: int, needle: str) -> None:
    real = getattr(os, name)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if needle in str(args[1] if name == "replace" else args[0]):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize(("name", "code"), [("replace", errno.ENOSPC), ("replace", errno.EBUSY),
                                            ("open", errno.EACCES), ("open", errno.EROFS)])
def test_os_errors_are_one_line_per_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                           code: int) -> None:
    rules = tmp_path / "rules"
    _rules(rules)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    # os.open is how mkstemp creates the temporary file: a read-only folder refuses it (also as root).
    _fail_on(monkeypatch, name, code, "0001")
    result = _run("-o", str(out), "--report", str(report), str(rules))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(str(out / "splunk-raw" / "00000000-0000-0000-0000-000000000001"))
    assert os.strerror(code) in errors[0] and "Traceback" not in result.output
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert written == ["00000000-0000-0000-0000-000000000002.spl"]  # the other output, whole; no temp file left
    statuses = [r["status"] for r in json.loads(report.read_text())["rules"]]
    assert statuses == ["failed", "ok"]


def test_single_output_file_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules"
    _rules(rules)
    _fail_on(monkeypatch, "replace", errno.ENOSPC, "all.spl")
    result = _run("-o", str(tmp_path / "all.spl"), str(rules))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count(f"{tmp_path / 'all.spl'}: error: cannot write: No space left on device") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules"]


def test_report_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules"
    _rules(rules)
    _fail_on(monkeypatch, "replace", errno.EBUSY, "report.json")
    result = _run("-o", str(tmp_path / "out"), "--report", str(tmp_path / "report.json"), str(rules))
    assert result.exit_code == 1 and f"{tmp_path / 'report.json'}: error: cannot write the report" in result.stderr


def test_symlink_inside_the_output_pointing_out_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    (out / "splunk-raw").mkdir(parents=True)
    (out / "splunk-raw" / "00000000-0000-0000-0000-000000000001.spl").symlink_to(outside / "victim.spl")
    result = _run("-o", str(out), str(rules))
    assert result.exit_code == 1 and "refusing to write outside the output folder" in result.stderr
    assert not (outside / "victim.spl").exists()
    assert (out / "splunk-raw" / "00000000-0000-0000-0000-000000000002.spl").is_file()


def test_output_folder_that_is_a_file_inside_the_tree(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules)
    out = tmp_path / "out"
    out.mkdir()
    (out / "splunk-raw").write_text("a file where a folder goes")
    result = _run("-o", str(out), str(rules))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if ": error: " in line]) == 2


# ---- temporary files ----

def test_temporary_files_are_recognisable_and_cleaned_after_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = ("import os, sys, tempfile; tempfile.mkstemp(prefix='.x.spl" + TEMP_MARK
            + "' + str(os.getpid()) + '-', suffix='.tmp', dir=sys.argv[1]); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)  # a run that died mid-write
    stale = list(out.iterdir())
    assert len(stale) == 1 and is_temporary(stale[0])
    live = out / f".y.spl{TEMP_MARK}{os.getpid()}-abc.tmp"  # a concurrent run still writing
    live.write_text("")
    unrelated = out / ".notes.tmp"
    unrelated.write_text("")
    assert remove_stale_temporaries(out) == stale
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, unrelated.name])
    assert not is_temporary(unrelated)


def test_rule_discovery_never_reads_temporary_files(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules, 1)
    (rules / f".good9.yml{TEMP_MARK}123-ab.tmp").write_text(GOOD.format(n=9))
    assert [p.name for p in rule_files([rules]) if is_temporary(p)] == []  # .tmp is no rule suffix
    assert _run("--report", str(tmp_path / "r.json"), str(rules)).exit_code == 0
    titles = [r["title"] for r in json.loads((tmp_path / "r.json").read_text())["rules"]]
    assert titles == ["Good 1"]


def test_write_atomic_leaves_no_temporary_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on(monkeypatch, "replace", errno.ENOSPC, "x.txt")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "x.txt", "data")
    assert list(tmp_path.iterdir()) == []
    written, errors = write_tree(tmp_path / "t", {"a/x.txt": "1", "b.txt": "2"})
    assert [e.code for e in errors] == ["os-error"] and [p.name for p in written] == ["b.txt"]


# ---- the terminal ----

@pytest.mark.parametrize(("text", "shown"), [
    ("plain/path.yml", "plain/path.yml"),
    ("a\nb", "a\\nb"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("back\rspace", "back\\rspace"),
    ("\x9b2J", "\\x9b2J"),  # C1 CSI
    ("evil\u202egnp.yml", "evil\\u202egnp.yml"),
    ("line\u2028sep", "line\\u2028sep"),
    ("caf\u00e9 \u4e2d", "caf\u00e9 \u4e2d"),
    ("bad\udcffbyte", "bad\\xffbyte"),
    ("\x00\x7f", "\\x00\\x7f"),
])
def test_terminal_text_is_safe(text: str, shown: str) -> None:
    assert safe(text) == shown


@PROFILE
@given(st.text())
def test_terminal_text_never_holds_a_control_character(text: str) -> None:
    shown = safe(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                   for c in shown)
    shown.encode("utf-8")  # no lone surrogate left to crash the write


def test_hostile_file_names_are_printed_escaped(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules, 1)
    (rules / "evil\x1b]0;pwned\x07\nname.yml").write_text("title: [unclosed\n")
    result = _run(str(rules))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "\\x1b]0;pwned\\x07\\nname.yml:2: error:" in errors[0]
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


# ---- Markdown: rule text never becomes structure ----

MD_HOSTILE = ["# ", "## ", "---", "***", "___", "===", "> ", "- ", "+ ", "* ", "1. ", "2) ", "```", "~~~", "    ",
              "<div>", "<!--", "|", "| a | b |", "\n", "\n\n", "#", "[x]: http://e", "![i](j)", "\\"]
md_text = st.lists(st.one_of(st.sampled_from(MD_HOSTILE), st.text(alphabet="ab -#=\n", max_size=3)),
                   max_size=8).map("".join)


def _blocks(markdown: str) -> list[str]:
    return [t.type for t in MarkdownIt("commonmark").enable("table").parse(markdown) if t.level == 0]


@PROFILE
@example(title="Title ##", description="intro\n# Heading\n---\n=== \n> quote\n- item\n1. one\n```\ncode",
         item="# x\n| a |")
@given(title=md_text, description=md_text, item=md_text)
def test_markdown_text_cannot_create_structure(title: str, description: str, item: str) -> None:
    """A heading, a paragraph and a list item built from any text keep exactly that shape,
    and the text reads back unchanged (line breaks as <br>)."""
    document = f"# {md_cell(title)}\n\n{md_cell(description) or 'none'}\n\n- {md_cell(item) or 'none'}\n"
    assert _blocks(document) == ["heading_open", "heading_close", "paragraph_open", "paragraph_close",
                                 "bullet_list_open", "bullet_list_close"]
    assert [t.type for t in MarkdownIt("commonmark").parse(document) if t.level == 1] == ["inline", "inline",
                                                                                       "list_item_open",
                                                                                       "list_item_close"]
    tokens = MarkdownIt("commonmark").parse(document)
    heading = tokens[1].children or []
    shown = "".join("\n" if t.type == "html_inline" else t.content for t in heading)
    expected = "\n".join(line.strip() for line in re.split(r"\r\n|\r|\n", title.strip()))
    assert shown.strip() == expected.strip() or not title.strip()


def test_docs_and_atc_pages_keep_their_structure_with_hostile_text(tmp_path: Path) -> None:
    text = "x\n# Injected heading\n---\n- injected item\n1. injected\n```\nfenced\n<b>html</b> | pipe"
    rule = Rule(id="11111111-2222-3333-4444-555555555555", title="# Hostile ## title", description=text,
                falsepositives=(text,), logsource=LogSource(product="windows", category="process_creation"),
                detection=Match("Image", Op.ENDSWITH, (Pattern.literal("\\x.exe"),)), origin=Origin("r.yml", 1))
    card = AtcBackend().convert(rule).text
    out = tmp_path / "site"
    build_site([rule], out, targets=("splunk",))
    page = (out / "rules" / f"{page_slug(rule)}.md").read_text(encoding="utf-8")
    for markdown in (card, page):
        tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
        headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
        assert not any("Injected" in h or "injected" in h for h in headings), headings
        assert "hr" not in [t.type for t in tokens]
        html = [t.content for t in tokens + [c for t in tokens for c in t.children or []] if "html" in t.type]
        assert not any("<b>" in h for h in html), html  # the template's own <ul>/<br> only
        fences = [t.content for t in tokens if t.type == "fence"]
        assert not any("fenced" in f for f in fences)
    assert "# Hostile ## title" in page.splitlines()[0].replace("\\", "")


def test_file_name_that_is_not_utf8_reaches_the_report_and_the_terminal(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules, 1)
    (rules / os.fsdecode(b"bad\xff.yml")).write_text("title: [unclosed\n")
    for cache in (["--no-cache"], ["--cache-dir", str(tmp_path / "cache")], ["--cache-dir", str(tmp_path / "cache")]):
        result = CliRunner().invoke(main, ["convert", *cache, "--report", str(tmp_path / "r.json"), str(rules)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "bad\\xff.yml:2: error: YAML syntax error" in result.stderr
        paths = [r["path"] for r in json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["rules"]]
        # JSON holds text: a byte that is not UTF-8 is shown as \xff, as on the terminal
        assert paths[0] == display_path(rules / os.fsdecode(b"bad\xff.yml"))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_stale_staging_folder_of_a_killed_docs_build_is_removed(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules, 1)
    stale = tmp_path / f".site{TEMP_MARK}{_dead_pid()}-x.tmp"
    (stale / "rules").mkdir(parents=True)
    (stale / "rules" / "half.md").write_text("# half")
    deeper = tmp_path / "keep" / f".x.spl{TEMP_MARK}{_dead_pid()}-y.tmp"  # not this folder: not its business
    deeper.parent.mkdir()
    deeper.write_text("")
    result = CliRunner().invoke(main, ["docs", "-q", "-t", "splunk", "-o", str(tmp_path / "site"), str(rules)])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and deeper.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "rules", "site"]


def test_single_output_file_cleans_only_its_own_folder(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules, 1)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".all.spl{TEMP_MARK}{_dead_pid()}-z.tmp"
    stale.write_text("half")
    nested = out / "sub" / f".b{TEMP_MARK}{_dead_pid()}-z.tmp"
    nested.parent.mkdir()
    nested.write_text("")
    assert _run("-o", str(out / "all.spl"), str(rules)).exit_code == 0
    assert not stale.exists() and nested.exists() and (out / "all.spl").is_file()


def test_report_may_sit_beside_the_outputs(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _rules(rules, 1)
    out = tmp_path / "out"
    assert _run("-o", str(out), "--report", str(out / "report.json"), str(rules)).exit_code == 0
    assert json.loads((out / "report.json").read_text())["summary"]["ok"] == 1


def test_queries_printed_to_a_terminal_show_control_characters_escaped(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "esc.yml").write_text(GOOD.format(n=1).replace("'\\\\x1.exe'", '"\\e[2J.exe"'))
    piped = _run(str(rules))
    assert piped.exit_code == 0 and "\x1b[2J" in piped.stdout  # redirected output stays exact
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    shown = _run(str(rules)).stdout
    assert "\x1b" not in shown and "\\x1b[2J.exe" in shown
