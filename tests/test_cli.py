"""`sigma-wmi` end to end: exit codes, outputs, report, cache, determinism, safe writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RULES

from sigma_wmi.cli import main
from sigma_wmi.output import safe_name, write_tree

SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
GOOD = "title: Good {n}\nid: 00000000-0000-0000-0000-00000000000{n}\nlogsource:\n  product: windows\n" \
       "  category: process_creation\ndetection:\n  sel:\n    Image|endswith: '\\\\x{n}.exe'\n  condition: sel\n"
BAD = "title: Bad\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image|bogus: a\n  condition: sel\n"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    (folder / "sub").mkdir(parents=True)
    for n in range(3):
        (folder / f"good{n}.yml").write_text(GOOD.format(n=n))
    (folder / "sub" / "bad.yml").write_text(BAD)
    return folder


def test_convert_scrcons_prints_query() -> None:
    code, out, _ = run("convert", "--target", "splunk", "--no-cache", str(SCRCONS))
    assert code == 0
    assert out.strip().endswith(r'Image="C:\\WINDOWS\\system32\\wbem\\scrcons.exe" '
                                r'ParentImage="C:\\Windows\\System32\\svchost.exe"')


def test_batch_goes_on_after_a_bad_rule(batch_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, out, err = run("convert", "--no-cache", "--report", str(report), str(batch_dir))
    assert code == 1
    assert out.count("Image=") == 3
    bad_lines = [line for line in err.splitlines() if "bad.yml" in line]
    assert len(bad_lines) == 1 and "bad.yml:6: error:" in bad_lines[0] and "bogus" in bad_lines[0]
    document = json.loads(report.read_text())
    statuses = {Path(r["path"]).name: r["status"] for r in document["rules"]}
    assert statuses == {"good0.yml": "ok", "good1.yml": "ok", "good2.yml": "ok", "bad.yml": "failed"}
    assert document["summary"] == {"rules": 4, "ok": 3, "partial": 0, "failed": 1}
    assert all({"path", "id", "title", "status", "diagnostics"} <= set(r) for r in document["rules"])


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("convert", "--no-cache", str(tmp_path / "missing"))[0] == 2
    assert run("convert", "--no-cache", "--target", "splnuk", str(SCRCONS))[0] == 2
    assert "did you mean 'splunk'" in run("convert", "--no-cache", "-t", "splnuk", str(SCRCONS))[2]
    assert run("convert", "--no-cache", "-f", "nope", str(SCRCONS))[0] == 2
    assert run("convert", "--no-cache", "-O", "nosuch=1", str(SCRCONS))[0] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("convert", "--no-cache", str(empty))[0] == 2


def test_output_directory_one_file_per_rule(batch_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, _ = run("convert", "--no-cache", "-o", str(out), str(batch_dir))
    assert code == 1
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [f"splunk-raw/00000000-0000-0000-0000-00000000000{n}.spl" for n in range(3)]


def test_output_file_and_savedsearches(tmp_path: Path) -> None:
    out = tmp_path / "savedsearches.conf"
    code, _, _ = run("convert", "--no-cache", "-f", "savedsearches", "-o", str(out), str(SCRCONS))
    assert code == 0
    assert "[WMI Persistence - Script Event Consumer]" in out.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_parallel_equals_serial_and_inputs_untouched(batch_dir: Path) -> None:
    before = {p: p.read_bytes() for p in batch_dir.rglob("*.yml")}
    serial = run("convert", "--no-cache", "-j", "1", str(batch_dir))
    parallel = run("convert", "--no-cache", "-j", "2", str(batch_dir))
    assert serial[1] == parallel[1] and serial[0] == parallel[0]
    assert {p: p.read_bytes() for p in batch_dir.rglob("*.yml")} == before


def test_cache_recompiles_only_changed_rule(batch_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    report = tmp_path / "r.json"
    first = run("convert", "--cache-dir", str(cache), str(batch_dir))
    run("convert", "--cache-dir", str(cache), "--report", str(report), str(batch_dir))
    assert all(r["cached"] for r in json.loads(report.read_text())["rules"])
    (batch_dir / "good1.yml").write_text(GOOD.format(n=1).replace("x1.exe", "changed.exe"))
    third = run("convert", "--cache-dir", str(cache), "--report", str(report), str(batch_dir))
    fresh = [Path(r["path"]).name for r in json.loads(report.read_text())["rules"] if not r["cached"]]
    assert fresh == ["good1.yml"]
    assert "changed.exe" in third[1] and first[1] != third[1]


def test_failed_rules_leave_no_output_file(tmp_path: Path) -> None:
    folder = tmp_path / "only_bad"
    folder.mkdir()
    (folder / "bad.yml").write_text(BAD)
    out = tmp_path / "out"
    code, _, _ = run("convert", "--no-cache", "-o", str(out), str(folder))
    assert code == 1
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.parametrize("hostile", ["../../../escape", "/etc/passwd", "..", ".hidden", "a/b\\c", "", "\x00"])
def test_hostile_ids_make_safe_names(hostile: str) -> None:
    name = safe_name(hostile, "")
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")


def test_write_tree_refuses_paths_outside_root(tmp_path: Path) -> None:
    root = tmp_path / "out"
    written, errors = write_tree(root, {"ok.txt": "x", "../escape.txt": "y"})
    assert [e.code for e in errors] == ["unsafe-path"] and "outside" in errors[0].message
    assert not (tmp_path / "escape.txt").exists()
    assert written == [(root / "ok.txt").resolve()]  # one refused output costs only itself


def test_same_file_names_without_ids_do_not_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    for sub, exe in (("x", "one.exe"), ("y", "two.exe")):
        (folder / sub).mkdir(parents=True)
        text = GOOD.format(n=1).replace("id: 00000000-0000-0000-0000-000000000001\n", "")
        (folder / sub / "a.yml").write_text(text.replace("x1.exe", exe))
    out = tmp_path / "out"
    assert run("convert", "--no-cache", "-o", str(out), str(folder))[0] == 0
    written = sorted(p.name for p in out.rglob("*.spl"))
    assert written == ["a-2.spl", "a.spl"]
    assert "two.exe" in (out / "splunk-raw" / "a-2.spl").read_text()


def test_list_targets_shows_splunk() -> None:
    code, out, _ = run("list", "targets")
    assert code == 0 and "splunk:" in out and "savedsearches" in out


def test_bundled_rules_convert(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    code, out, err = run("convert", "--no-cache", "-t", "splunk", str(rules / "sigma"))
    assert code == 0, err
    assert "scrcons.exe" in out


def test_docs_command_builds_site(tmp_path: Path) -> None:
    out = tmp_path / "site"
    code, _, err = run("docs", str(SCRCONS), "-o", str(out))
    assert code == 0, err
    assert (out / "index.html").is_file()
    assert any("ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e" in p.name for p in out.rglob("*.html"))


def test_docs_command_reports_bad_files(batch_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("docs", str(batch_dir), "-o", str(tmp_path / "site"))
    assert code == 1
    assert "bad.yml:6: error:" in err


def test_test_command_runs_pack_rules_on_synthetic_events() -> None:
    code, out, err = run("test", str(RULES / "sigma"), "--shared", str(RULES / "no-shared-here"))
    assert code == 0, out + err


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "q.spl"
    old = os.umask(0o022)
    try:
        assert run("convert", "--no-cache", "-o", str(out), str(SCRCONS))[0] == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_cache_notices_macro_edits_and_survives_foreign_entries(tmp_path: Path) -> None:
    root = tmp_path / "content"
    (root / "detections").mkdir(parents=True)
    (root / "macros").mkdir()
    (root / "macros" / "my_proc.yaml").write_text("name: my_proc\ndefinition: Processes.process_name=first.exe\n")
    (root / "detections" / "d.yml").write_text(
        "name: Macro user\nid: 5d1f0c5e-1111-4222-8333-944444444444\nsearch: '| tstats count from "
        "datamodel=Endpoint.Processes where `my_proc` by Processes.dest | `drop_dm_object_name(Processes)`'\n")
    cache = tmp_path / "cache"
    first = run("convert", "--cache-dir", str(cache), str(root / "detections"))
    assert "first.exe" in first[1], first
    (root / "macros" / "my_proc.yaml").write_text("name: my_proc\ndefinition: Processes.process_name=second.exe\n")
    assert "second.exe" in run("convert", "--cache-dir", str(cache), str(root / "detections"))[1]
    for entry in cache.rglob("*.json"):
        entry.write_text('{"not": "a list of results"}')
    assert "second.exe" in run("convert", "--cache-dir", str(cache), str(root / "detections"))[1]


def test_docs_parallel_build_equals_serial(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(120):
        text = GOOD.format(n=1).replace("00000000-0000-0000-0000-000000000001", f"00000000-0000-0000-0000-{n:012d}")
        (folder / f"r{n}.yml").write_text(text.replace("Good 1", f"Good {n}").replace("x1.exe", f"x{n}.exe"))
    sites = []
    for jobs in ("1", "2"):
        out = tmp_path / f"site{jobs}"
        assert run("docs", "-j", jobs, "-t", "splunk,eql", "-o", str(out), str(folder))[0] == 0
        sites.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert sites[0] == sites[1] and len(sites[0]) > 240
