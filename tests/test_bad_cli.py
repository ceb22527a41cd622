"""The CLI-level bad-case harness (issue #13): every bad case, the reader cases of
tests/bad/expected.yaml and the output-side cases of tests/bad/cli.yaml, run through
`sigma-wmi` in a fresh folder beside good rules. For every case: the expected exit code,
a one-line `path[:line]: error: ...` (or warning) naming the case, no traceback, no raw
control character on the terminal, no output for a failed rule while every other rule's
output is written, and inputs byte-identical."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from addonfactory_splunk_conf_parser_lib import TABConfigParser
from click.testing import CliRunner
from markdown_it import MarkdownIt

from sigma_wmi.cli import main
from sigma_wmi.terminal import safe

BAD = Path(__file__).parent / "bad"
READER_CASES: dict[str, dict[str, Any]] = yaml.safe_load((BAD / "expected.yaml").read_text(encoding="utf-8"))
CLI_CASES: dict[str, dict[str, Any]] = yaml.safe_load((BAD / "cli.yaml").read_text(encoding="utf-8"))["cases"]
CLASSES = range(1, 9)
MIN_CASES, MIN_PER_CLASS = 100, 3

GOOD = """title: Good {n}
id: 00000000-0000-0000-0000-00000000000{n}
logsource: {{product: windows, category: process_creation}}
detection:
  sel:
    Image|endswith: '\\\\good{n}.exe'
  condition: sel
"""
DEFAULT_RULE: dict[str, Any] = {
    "title": "Case", "status": "test",
    "logsource": {"product": "windows", "category": "process_creation"},
    "detection": {"sel": {"Image|endswith": "\\case.exe"}, "condition": "sel"},
}
DEFAULT_ARGS = ["convert", "--no-cache", "-o", "{out}", "--report", "{report}", "{in}"]
# What a terminal would act on: C0 (but tab and the line feed ending each line), DEL, C1, bidi.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass
class Case:
    name: str
    klass: int | None
    files: dict[str, bytes]
    spec: dict[str, Any] = field(default_factory=dict)


def _rule_text(fields: dict[str, Any], key: str) -> bytes:
    """A Sigma rule: the default with the case's fields; its id is unique per case file."""
    rule = {**DEFAULT_RULE, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)), **fields}
    rule = {k: v for k, v in rule.items() if v is not None}
    return yaml.safe_dump(rule, allow_unicode=True, sort_keys=False).encode("utf-8")


def reader_cases() -> list[Case]:
    """The reader's bad files (tests/bad/expected.yaml), each beside the good rules."""
    cases = []
    for relative, expected in sorted(READER_CASES.items()):
        if expected.get("ok"):
            continue
        name = Path(relative).name
        line = expected.get("line")
        where = "{case}" + (f":{line}" if line is not None else "")
        spec: dict[str, Any] = {"error": where + r": error: .*\(" + re.escape(str(expected["code"])) + r"\)"}
        macros = _macros_for(BAD / relative)
        if macros is not None:  # ESCU cases: their macros/ folder, given outside the input tree
            spec["macros"] = macros
            spec["args"] = [*DEFAULT_ARGS[:-1], "--macros", "{macros}", "{in}"]
        cases.append(Case(relative, expected.get("class"), {name: (BAD / relative).read_bytes()}, spec))
    return cases


def _macros_for(case: Path) -> Path | None:
    """The `macros/` folder an ESCU case would find next to or above it inside tests/bad."""
    for folder in case.parents:
        if (folder / "macros").is_dir():
            return folder / "macros"
        if folder == BAD:
            break
    return None


def cli_cases() -> list[Case]:
    cases = []
    for name, spec in sorted(CLI_CASES.items()):
        files = {file: _rule_text(fields or {}, f"{name}/{file}") for file, fields in (spec.get("rules") or {}).items()}
        files.update({file: text.encode("utf-8") for file, text in (spec.get("files") or {}).items()})
        cases.append(Case(name, spec["class"], files, spec))
    return cases


ALL_CASES = reader_cases() + cli_cases()


# ---------------------------------------------------------------------------
# The corpus itself
# ---------------------------------------------------------------------------

def test_every_output_case_names_its_class() -> None:
    assert all(case.klass in CLASSES for case in cli_cases())
    counts = Counter(case.klass for case in cli_cases())
    assert len(cli_cases()) >= 45 and all(counts[k] >= 5 for k in (1, 4, 5, 6, 7)), counts


def test_the_corpus_holds_enough_cases_of_every_class() -> None:
    # Counted: cases that must fail (exit 1 or 2). Hostile inputs the tool handles exactly (a
    # renamed stanza with a warning, an escaped field name) are checked too, but not counted.
    failing = [case for case in ALL_CASES if case.spec.get("exit", 1) in (1, 2)]
    total, per_class = len(failing), Counter(case.klass for case in failing)
    assert total >= MIN_CASES
    assert all(per_class[k] >= MIN_PER_CLASS for k in CLASSES), per_class


# ---------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------

@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    output: str


def _fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _install_fault(monkeypatch: pytest.MonkeyPatch, fault: dict[str, Any]) -> None:
    call, code, needle = fault["call"], getattr(errno, fault["errno"]), fault["match"]
    real = getattr(os, call)

    def failing(*args: Any, **kwargs: Any) -> Any:
        target = args[1] if call == "replace" else args[0]
        if needle in os.fsdecode(target):
            raise OSError(code, os.strerror(code), os.fsdecode(target))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, call, failing)


def _invoke(args: list[str], as_process: bool, cwd: Path) -> Run:
    if as_process:
        done = subprocess.run([sys.executable, "-m", "sigma_wmi", *args], cwd=cwd, capture_output=True, timeout=120,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8"})
        stdout, stderr = done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
        return Run(done.returncode, stdout, stderr, stdout + stderr)
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the harness shows it whole
    return Run(result.exit_code, result.stdout, result.stderr, result.output)


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = case.spec
    root = tmp_path / "t"
    inputs = root / "in"
    inputs.mkdir(parents=True)
    for n in (1, 2):
        (inputs / f"good{n}.yml").write_text(GOOD.format(n=n), encoding="utf-8")
    for name, data in case.files.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(data)
    first_case = inputs / next(iter(case.files))
    places = {"tmp": str(root), "in": str(inputs), "out": str(root / "out"), "report": str(root / "report.json"),
              "case": str(first_case), "macros": str(root / "macros")}
    if spec.get("macros"):
        shutil.copytree(spec["macros"], root / "macros")
    for step in spec.get("setup") or []:
        if "symlink" in step:
            link = root / step["symlink"]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root / step["to"])
        else:
            (root / step["file"]).parent.mkdir(parents=True, exist_ok=True)
            (root / step["file"]).write_text(step["text"], encoding="utf-8")
    before = _digest(inputs)
    args = [_fill(a, places) for a in spec.get("args") or DEFAULT_ARGS]
    if spec.get("fault"):
        _install_fault(monkeypatch, spec["fault"])
    run = _invoke(args, bool(spec.get("subprocess")), root)
    monkeypatch.undo()

    expected_exit = spec.get("exit", 1)
    assert run.code == expected_exit, run.output
    assert "Traceback" not in run.output
    assert not RAW_CONTROL.search(run.stderr), repr(run.stderr)  # every path and message made safe
    assert _digest(inputs) == before  # inputs byte-identical, nothing added beside them

    shown = {k: re.escape(safe(v)) for k, v in places.items()}
    pattern = _fill(spec.get("error") or "{case}:\\d+: error: ", shown)
    if expected_exit != 0 or "error" in spec:
        lines = run.stderr.splitlines()
        assert any(re.fullmatch(pattern, line) or re.match(pattern + "$", line) for line in lines), \
            f"no line matches {pattern!r}:\n{run.stderr}"
    if expected_exit == 2:
        assert not (root / "out").exists() and not (root / "report.json").exists()
    for wanted in spec.get("stdout_contains") or []:
        assert wanted in run.stdout, (wanted, run.stdout)
    _check_report(case, root, first_case, places)
    _check_outputs(spec, places)


def _check_report(case: Case, root: Path, first_case: Path, places: dict[str, str]) -> None:
    """Failed rules have no output; every other rule's outputs are there, one file each."""
    report = root / "report.json"
    if not report.exists():
        return
    rules = json.loads(report.read_text(encoding="utf-8"))["rules"]
    inputs = Path(places["in"])
    failing = case.spec.get("failed")
    if failing is None:
        failing = list(case.files) if case.spec.get("exit", 1) == 1 else []
    failing_paths = {str(inputs / name) for name in failing}
    for entry in rules:
        if entry["status"] == "failed":
            assert entry["targets"] == [] or any(d["code"] in ("os-error", "unsafe-path")
                                                  for d in entry["diagnostics"]), entry
        if entry["path"] in failing_paths:
            continue
        assert entry["status"] != "failed" and entry["targets"], entry  # the good rules still convert
    if failing_paths and not case.spec.get("fault") and not case.spec.get("setup"):
        assert any(e["path"] in failing_paths and e["status"] == "failed" for e in rules), rules
    out = Path(places["out"])
    if out.is_dir() and (case.spec.get("args") is None or case.spec.get("macros")) and not case.spec.get("setup"):
        written = sorted(p for p in out.rglob("*") if p.is_file() and not p.is_symlink())
        converted = sum(len(e["targets"]) for e in rules if e["status"] != "failed")
        assert len(written) == converted, (written, rules)


def _check_outputs(spec: dict[str, Any], places: dict[str, str]) -> None:
    for path in spec.get("files_exist") or []:
        assert Path(_fill(path, places)).is_file(), path
    for path in spec.get("files_absent") or []:
        assert not Path(_fill(path, places)).exists(), path
    if spec.get("conf"):
        parser = TABConfigParser()
        parser.read(_fill(spec["conf"]["file"], places), encoding="utf-8")
        stanzas = parser.item_dict()
        assert len(stanzas) == spec["conf"]["stanzas"] and not parser.defaults(), stanzas
        assert not parser.fields_outside_stanza
        # 11 saved-search keys, then only Enterprise Security ones (tests/test_savedsearches_es.py)
        assert all(list(keys)[:2] == ["description", "search"] and len(keys) >= 11
                   and all(k.startswith("action.") or k in ("schedule_window", "alert.digest_mode")
                           for k in list(keys)[11:]) for keys in stanzas.values())
    if spec.get("contains"):
        text = Path(_fill(spec["contains"]["file"], places)).read_text(encoding="utf-8")
        for wanted in spec["contains"]["text"]:
            assert wanted in text, (wanted, text)
    if spec.get("unique_ids"):
        lines = Path(_fill(spec["unique_ids"], places)).read_text(encoding="utf-8").splitlines()
        ids = [json.loads(line)["rule_id"] for line in lines]
        assert len(ids) == len(set(ids)) == 4, ids
    if spec.get("markdown"):
        pages = glob.glob(_fill(spec["markdown"]["file"], places))
        assert pages
        word = spec["markdown"]["not_headings"].lower()
        for page in pages:
            tokens = MarkdownIt("commonmark").enable("table").parse(Path(page).read_text(encoding="utf-8"))
            headings = [tokens[i + 1].content.lower() for i, t in enumerate(tokens) if t.type == "heading_open"]
            assert not any(word in h for h in headings), (page, headings)
            assert "hr" not in [t.type for t in tokens] and "blockquote_open" not in [t.type for t in tokens]
            html = [t.content for t in tokens + [c for t in tokens for c in t.children or []] if "html" in t.type]
            assert not any(word in h.lower() for h in html), html
            items = [tokens[i + 2].content.lower() for i, t in enumerate(tokens) if t.type == "list_item_open"]
            assert not any(item.startswith(word) for item in items), items


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_bad_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)
