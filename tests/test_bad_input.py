"""The bad-input corpus: every case gives one located SigmaWmiError (or reads fine when
listed as ok), nothing else escapes, and a batch containing all of them still converts
the good rules and exits 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import RULES

from sigma_wmi.cli import main
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.readers import read_file, read_text_rules
from sigma_wmi.readers.yamlsource import MAX_FILE_BYTES

BAD = Path(__file__).parent / "bad"
EXPECTED: dict[str, dict[str, object]] = yaml.safe_load((BAD / "expected.yaml").read_text())
SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"


def test_every_case_file_has_an_expectation() -> None:
    files = {p.relative_to(BAD).as_posix() for p in BAD.rglob("*.yml")}
    assert files == set(EXPECTED)
    assert len(files) >= 40


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case(case: str) -> None:
    expected = EXPECTED[case]
    path = BAD / case
    if expected.get("ok"):
        assert read_file(path)
        return
    with pytest.raises(SigmaWmiError) as info:
        read_file(path)
    err = info.value
    assert err.origin is not None and err.origin.path == str(path)
    assert err.origin.line == expected["line"], str(err)
    assert err.code == expected["code"], str(err)
    assert str(expected["words"]).lower() in err.message.lower(), err.message
    assert "\n" not in str(err)  # one line


# ---- generated cases: too large or too hostile to keep as files ----

def _generated(tmp_path: Path) -> dict[str, bytes]:
    deep_yaml = b"title: deep\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image: " \
        + b"[" * 5000 + b"]" * 5000 + b"\n  condition: sel\n"
    deep_condition = ("title: deep\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image: a\n"
                      "  condition: " + "not " * 3000 + "sel\n").encode()
    nested_parens = ("title: deep\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image: a\n"
                     "  condition: " + "(" * 400 + "sel" + ")" * 400 + "\n").encode()
    bomb_lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 12):
        bomb_lines.append(f"{chr(97 + n)}: &{chr(97 + n)} [" + ", ".join([f"*{chr(96 + n)}"] * 10) + "]")
    bomb = ("title: bomb\nlogsource: {product: windows}\ndetection:\n  condition: sel\n"
            + "\n".join(bomb_lines) + "\n").encode()
    return {
        "huge.yml": b"title: huge\n" + b"# padding\n" * (MAX_FILE_BYTES // 10 + 1),
        "binary.yml": bytes(range(256)) * 40,
        "latin1.yml": "title: caf\u00e9\nlogsource: {product: windows}\n".encode("latin-1"),
        "utf16.yml": "title: x\n".encode("utf-16"),
        "deep_yaml.yml": deep_yaml,
        "deep_condition.yml": deep_condition,
        "nested_parens.yml": nested_parens,
        "alias_bomb.yml": bomb,
    }


# Issue #13 class of each generated case (see expected.yaml).
GENERATED_CLASSES = {"huge.yml": 2, "alias_bomb.yml": 2, "binary.yml": 8, "latin1.yml": 8, "utf16.yml": 8,
                     "deep_yaml.yml": 3, "deep_condition.yml": 3, "nested_parens.yml": 3}

GENERATED_CODES = {
    "huge.yml": ("file-too-large", None),
    "binary.yml": ("binary", 1),
    "latin1.yml": ("encoding", 1),
    "utf16.yml": ("binary", 1),
}


@pytest.mark.parametrize("name", [*sorted(GENERATED_CODES), "deep_yaml.yml", "deep_condition.yml",
                                  "nested_parens.yml", "alias_bomb.yml"])
def test_generated_case(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_generated(tmp_path)[name])
    try:
        read_file(path)
    except SigmaWmiError as err:
        assert err.origin is not None and err.origin.path == str(path)
        if name in GENERATED_CODES:
            code, line = GENERATED_CODES[name]
            assert err.code == code and err.origin.line == line, str(err)
        return
    # A deeply nested but valid rule may also simply read; it must then convert or fail cleanly.
    assert name in ("deep_condition.yml", "nested_parens.yml")


def test_a_batch_of_every_bad_case_still_converts_the_good_rules(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    shutil.copytree(BAD, folder)
    for name, data in _generated(tmp_path).items():
        (folder / name).write_bytes(data)
    shutil.copy(SCRCONS, folder / "good.yml")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["convert", "--no-cache", "-o", str(out), "--report", str(report),
                                       str(folder)], catch_exceptions=False)
    assert result.exit_code == 1
    document = json.loads(report.read_text())
    by_path = {Path(r["path"]).name: r for r in document["rules"]}
    assert by_path["good.yml"]["status"] == "ok"
    written = [p.name for p in out.rglob("*.spl")]
    assert "ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e.spl" in written
    for line in result.stderr.splitlines():
        if ": error: " in line:
            assert line.split(":")[0].startswith(str(folder))
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".spl"} == {
        p: b for p, b in before.items()}


def test_duplicate_ids_in_a_batch_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "dups"
    folder.mkdir()
    shutil.copy(SCRCONS, folder / "a.yml")
    shutil.copy(SCRCONS, folder / "b.yml")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["convert", "--no-cache", "--report", str(report), str(folder)],
                                catch_exceptions=False)
    rules = json.loads(report.read_text())["rules"]
    assert [r["status"] for r in rules] == ["ok", "failed"]
    assert rules[1]["diagnostics"][0]["code"] == "duplicate-id"
    assert "a.yml" in rules[1]["diagnostics"][0]["message"]
    assert result.exit_code == 1


@pytest.mark.parametrize("text", ["", "- ", "{", "title: [", "\t", "a: *b", "!!python/object:os.system {}",
                                  "? a\n: b", "title: x\ndetection: {condition: [1, 2]}\nlogsource: {}"])
def test_text_api_raises_only_its_own_error(text: str) -> None:
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "t.yml")
    assert info.value.origin is not None and info.value.origin.path == "t.yml"
