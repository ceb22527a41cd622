"""The resource model (sigma_wmi/limits.py) and the input side of batch safety (issue #13):
strict YAML, bounded expansion of aliases, macros and modifiers, linear regex evaluation,
special files refused before they are opened, YAML line counting. Oracles are independent
parsers: PyYAML's own marks, pySigma's own expansion, Python's `re`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RULES
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_wmi import limits
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.evaluate import compile_rule, evaluate
from sigma_wmi.events import read_events
from sigma_wmi.model import Match, Op, Or, Pattern, Regex, Wildcard, normalize
from sigma_wmi.readers import read_file, read_text_rules
from sigma_wmi.readers.macros import MacroLibrary, expand
from sigma_wmi.readers.sigma import _expanded_count
from sigma_wmi.readers.yamlsource import line_of, load_documents

SCRCONS = RULES / "sigma" / "proc_creation_win_scrcons_wmi_script_event_consumer.yml"
SIGMA_HEAD = "title: t\nlogsource: {product: windows, category: process_creation}\n"
EXAMPLES = 2_000 if os.environ.get("SIGMA_WMI_LONG") else 100


# ---- the limits are documented ----

def test_every_limit_is_in_the_readme_table() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Limits", 1)[1].split("\n## ", 1)[0]
    names = [name for name in dir(limits) if name.startswith("MAX_")]
    assert len(names) >= 10
    for name in names:
        row = next((line for line in section.splitlines() if f"`{name}`" in line), None)
        assert row is not None, name
        assert f"{getattr(limits, name):,}".replace(",", " ") in row or str(getattr(limits, name)) in row, row


# ---- strict YAML ----

# Keys that YAML reads as strings (`no`, `on`, `null` are YAML 1.1 booleans and null).
_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: isinstance(yaml.safe_load(k), str))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(_KEYS, min_size=1, max_size=8, unique=True),
       st.data())
def test_a_repeated_key_is_refused_at_its_own_line(keys: list[str], data: st.DataObject) -> None:
    repeated = data.draw(st.sampled_from(keys))
    lines = [f"{key}: {index}" for index, key in enumerate(keys)]
    position = data.draw(st.integers(keys.index(repeated) + 1, len(lines)))
    lines.insert(position, f"{repeated}: again")
    with pytest.raises(SigmaWmiError) as info:
        load_documents("\n".join(lines) + "\n", "k.yml")
    assert info.value.code == "yaml-duplicate-key"
    assert info.value.origin == Origin("k.yml", position + 1, 1)
    assert yaml.safe_load("\n".join(lines))[repeated] == "again"  # what PyYAML alone would silently keep


@pytest.mark.parametrize("text", ["a: &x {b: 1}\nc:\n  <<: *x\n", "<<: {b: 1}\n", "a: {<<: [{b: 1}]}\n"])
def test_merge_keys_are_refused(text: str) -> None:
    with pytest.raises(SigmaWmiError) as info:
        load_documents(text, "m.yml")
    assert info.value.code == "yaml-merge-key"


def test_a_quoted_merge_key_is_an_ordinary_key() -> None:
    assert load_documents('"<<": 1\n', "m.yml") == [{"<<": 1}]


@pytest.mark.parametrize("levels", range(2, 10))
def test_alias_expansion_is_bounded_not_the_alias_count(levels: int) -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    sizes = [11]  # nodes of each list written out: itself and ten copies of the one before
    for _ in range(1, levels):
        sizes.append(1 + 10 * sizes[-1])
    expanded = 1 + sum(1 + size for size in sizes)  # the root mapping, each key and its list
    started = time.perf_counter()
    try:
        load_documents("\n".join(lines) + "\n", "bomb.yml")
        assert expanded <= limits.MAX_YAML_NODES
    except SigmaWmiError as err:
        assert err.code == "yaml-too-large" and expanded > limits.MAX_YAML_NODES
        assert err.origin is not None and err.origin.line is not None
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(("value", "code"), [
    ("9223372036854775808", "yaml-value"), ("-9223372036854775809", "yaml-value"), ("9" * 5000, "yaml-value"),
    ("1.0e+999", "yaml-value"), (".inf", "yaml-value"), ("-.inf", "yaml-value"), (".nan", "yaml-value"),
])
def test_numbers_no_target_can_hold_are_located(value: str, code: str) -> None:
    with pytest.raises(SigmaWmiError) as info:
        load_documents(f"a: 1\nb: {value}\n", "n.yml")
    assert info.value.code == code and info.value.origin is not None and info.value.origin.line == 2


def test_numbers_in_range_still_read() -> None:
    assert load_documents("a: 9223372036854775807\nb: -1.5e+300\n", "n.yml") == [
        {"a": 9223372036854775807, "b": -1.5e300}]


# ---- line numbers: counted as YAML counts them ----

BREAKS = ["\n", "\r\n", "\r", "\x85", "\u2028", "\u2029"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(BREAKS), min_size=1, max_size=30))
def test_line_of_agrees_with_yaml_marks(breaks: list[str]) -> None:
    text = "".join(f"k{index}: v{index}{brk}" for index, brk in enumerate(breaks))
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # the pure-Python parser: an independent count
    for key_node, _ in root.value:
        assert line_of(text, key_node.start_mark.index) == key_node.start_mark.line + 1
        encoded = text.encode()
        assert line_of(encoded, len(text[:key_node.start_mark.index].encode())) == key_node.start_mark.line + 1


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_characters_python_splits_lines_at_do_not_shift_locations(separator: str) -> None:
    text = SIGMA_HEAD + f'description: "a{separator}b"\nlevel: nonsense\n' \
        "detection:\n  sel:\n    Image: a\n  condition: sel\n"
    text = text.replace(f"a{separator}b", "a" + json.dumps(separator)[1:-1] + "b")  # escaped: valid YAML
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "l.yml")
    assert info.value.origin is not None and info.value.origin.line == 4


# ---- modifiers: counted before pySigma expands them ----

@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from(["a", " -x", "/y", "-", " ", "b-c", " --z", "\t/q"]), max_size=5),
       st.sampled_from([["windash"], ["windash", "contains"], ["base64offset", "contains"],
                        ["windash", "base64offset", "contains"], ["contains"]]))
def test_the_value_count_is_what_pysigma_produces(pieces: list[str], modifiers: list[str]) -> None:
    from sigma.rule import SigmaDetectionItem
    from sigma.types import SigmaExpansion

    def leaves(value: object) -> int:
        return sum(leaves(v) for v in value.values) if isinstance(value, SigmaExpansion) else 1

    value = "".join(pieces) or "v"
    item = SigmaDetectionItem.from_mapping("|".join(["CommandLine", *modifiers]), value)
    assert _expanded_count(value, modifiers) == sum(leaves(v) for v in item.value)


def test_a_windash_bomb_fails_before_pysigma_expands_it() -> None:
    text = SIGMA_HEAD + "detection:\n  sel:\n    CommandLine|windash: '" + " -a" * 30 + "'\n  condition: sel\n"
    started = time.perf_counter()
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "w.yml")
    assert info.value.code == "too-many-values" and info.value.origin == Origin("w.yml", 5)
    assert time.perf_counter() - started < 1


def test_value_merging_is_near_linear() -> None:
    values = [Pattern.literal(f"v{i % 150_000}") for i in range(200_000)]
    tree = Or(tuple(Match("f", Op.EQUALS, (v,)) for v in values))
    started = time.process_time()  # CPU time of this process: other jobs on the machine do not count
    merged = normalize(tree)
    assert time.process_time() - started < 2
    assert isinstance(merged, Match) and list(merged.values) == list(dict.fromkeys(values))


# ---- macros ----

def _library(tmp_path: Path, definitions: dict[str, str]) -> MacroLibrary:
    folder = tmp_path / "macros"
    folder.mkdir(exist_ok=True)
    for name, definition in definitions.items():
        (folder / f"{name}.yml").write_text(yaml.safe_dump({"name": name, "definition": definition}))
    return MacroLibrary(folder)


@pytest.mark.parametrize(("search", "expanded"), [
    ("a `m` b", "a X b"),
    ('a="`m`"', 'a="`m`"'),
    ('a="x\\"`m`" `m`', 'a="x\\"`m`" X'),
    ('a="`m`" b="c" `m`', 'a="`m`" b="c" X'),
    ("`n`", '"`m`" X'),
    ('unclosed="`m`', 'unclosed="`m`'),
])
def test_macros_in_quoted_spl_strings_stay_literal(tmp_path: Path, search: str, expanded: str) -> None:
    library = _library(tmp_path, {"m": "X", "n": '"`m`" `m`'})
    assert expand(search, library).text == expanded


def test_a_macro_bomb_stops_at_the_size_limit(tmp_path: Path) -> None:
    definitions = {"m0": "x" * 100}
    definitions |= {f"m{i}": " ".join([f"`m{i - 1}`"] * 10) for i in range(1, 15)}
    library = _library(tmp_path, definitions)
    started = time.perf_counter()
    with pytest.raises(SigmaWmiError) as info:
        expand("`m14`", library, Origin("s.yml", 3))
    assert info.value.code == "macro-too-large" and info.value.origin == Origin("s.yml", 3)
    assert time.perf_counter() - started < 2


def test_a_broken_macro_file_is_named_with_its_line(tmp_path: Path) -> None:
    library = _library(tmp_path, {})
    (tmp_path / "macros" / "m.yml").write_text("name: m\ndefinition: a\ndefinition: b\n")
    with pytest.raises(SigmaWmiError) as info:
        expand("`m`", library)
    assert info.value.code == "yaml-duplicate-key"
    assert info.value.origin == Origin(str(tmp_path / "macros" / "m.yml"), 3, 1)


# ---- regexes in the evaluator: linear time or refused ----

def test_catastrophic_backtracking_returns_at_once() -> None:
    match = Match("f", Op.REGEX, (Regex("(a+)+$"),), case_sensitive=True)
    started = time.perf_counter()
    assert not evaluate(match, {"f": "a" * 100_000 + "b"})
    assert evaluate(match, {"f": "b" + "a" * 100_000})
    assert time.perf_counter() - started < 0.5


REGEX_TABLE = [
    ("ab+c", "", ["abbc", "ac", "xabcx"]),
    ("^cmd\\.exe$", "i", ["CMD.EXE", "cmd.exe ", "xcmd.exe"]),
    ("a.b", "s", ["a\nb", "ab"]),
    ("^b", "m", ["a\nb", "ab"]),
    ("[0-9]{2,3}-x", "", ["12-x", "1-x", "1234-x"]),
    ("(?:foo|bar)baz", "i", ["FOOBAZ", "barbaz", "foobar"]),
    ("\\\\Windows\\\\", "i", ["C:\\windows\\x", "C:/windows/"]),
    ("a b # comment", "x", ["ab", "a b"]),
]


@pytest.mark.parametrize(("pattern", "flags", "texts"), REGEX_TABLE)
def test_linear_regexes_agree_with_python_re(pattern: str, flags: str, texts: list[str]) -> None:
    python_flags = 0
    for flag in flags:
        python_flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[flag]
    match = Match("f", Op.REGEX, (Regex(pattern, frozenset(flags)),), case_sensitive="i" not in flags)
    for text in texts:
        assert evaluate(match, {"f": text}) == (re.search(pattern, text, python_flags) is not None), text


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?<=a)b", "a(?=b)", "(?!x)y", "a++"])
def test_patterns_needing_backtracking_are_refused_at_the_rule_line(tmp_path: Path, pattern: str) -> None:
    path = tmp_path / "r.yml"
    path.write_text(SIGMA_HEAD + "detection:\n  sel:\n    Image: a\n  other:\n"
                    f"    CommandLine|re: '{pattern}'\n  condition: sel and other\n")
    try:
        (rule,) = read_file(path)
    except SigmaWmiError:
        assert pattern == "a++"  # pySigma's own check (Python re) refuses it already
        return
    with pytest.raises(SigmaWmiError) as info:
        compile_rule(rule)
    assert info.value.code == "regex-unsupported"
    assert info.value.origin is not None and info.value.origin.line == 7


# ---- special files: refused before anything opens them ----

def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # a subprocess with a timeout: a regression here would block on the FIFO, not fail
    return subprocess.run([sys.executable, "-m", "sigma_wmi", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_anywhere_are_refused_and_the_batch_goes_on(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yml").write_bytes(SCRCONS.read_bytes())
    os.mkfifo(rules / "pipe.yml")
    (rules / "zero.yml").symlink_to("/dev/zero")
    out = tmp_path / "out"
    result = _cli("convert", "-o", str(out), str(rules), str(rules / "pipe.yml"), cwd=tmp_path,
                  env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert sorted(line.split(": error: ")[0] for line in errors) == sorted(
        [str(rules / "pipe.yml"), str(rules / "pipe.yml"), str(rules / "zero.yml")])
    assert all("not a regular file" in line for line in errors)
    assert "Traceback" not in result.stderr
    assert [p.name for p in out.rglob("*.spl")] == ["ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e.spl"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_macros_is_refused_when_called(tmp_path: Path) -> None:
    library = _library(tmp_path, {"ok": "X"})
    os.mkfifo(tmp_path / "macros" / "m.yml")
    assert expand("`ok`", library).text == "X"  # the scan for other macros skips it, unopened
    with pytest.raises(SigmaWmiError) as info:
        expand("`m`", library)
    assert info.value.code == "not-a-file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_event_files_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "events.jsonl")
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    for name in ("events.jsonl", "zero.jsonl"):
        with pytest.raises(SigmaWmiError) as info:
            list(read_events(tmp_path / name))
        assert info.value.code == "not-a-file"


def test_a_non_utf8_file_name_is_reported_not_a_traceback(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    name = os.fsdecode(b"r\xff.yml")
    (rules / name).write_bytes(SCRCONS.read_bytes())
    report = tmp_path / "report.json"
    result = _cli("convert", "--report", str(report), str(rules), cwd=tmp_path,
                  env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text(encoding="utf-8"))["rules"][0]["path"].endswith("r\\xff.yml")


# ---- events ----

@pytest.mark.parametrize(("line", "code"), [
    ('{"a":' * 100 + "1" + "}" * 100, "bad-events"),
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "bad-events"),
    ('{"a": "' + "x" * (limits.MAX_EVENT_LINE_BYTES + 1) + '"}', "bad-events"),
])
def test_hostile_event_lines_are_located(tmp_path: Path, line: str, code: str) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"ok": 1}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(SigmaWmiError) as info:
        list(read_events(path))
    assert info.value.code == code and info.value.origin == Origin(str(path), 2)


def test_json_lines_break_only_at_newline(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    value = "a\u2028b\x1cc\x0bd\x85e"
    path.write_text(json.dumps({"v": value}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [event["v"] for event in read_events(path)] == [value]


# ---- nesting beyond what the C YAML composer survives ----

@pytest.mark.parametrize("text", ["a: " + "[" * 100_000 + "]" * 100_000, "a:\n" + "- " * 200_000 + "x",
                                  "? " * 200_000 + "x"], ids=["brackets", "dashes", "question-marks"])
def test_nesting_that_would_overflow_the_c_stack_is_refused_first(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yml"
    path.write_text(text + "\n")
    # in a child process: a regression would kill the interpreter (stack overflow), not raise
    code = "import sys; from sigma_wmi.readers import read_source; print(read_source(__import__('pathlib').Path(sys.argv[1])).error)"
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{path}:") and "levels deep" in result.stdout


# ---- long but linear inputs: bounded so a 2 MB file cannot take seconds ----

def test_a_rule_with_too_many_values_overall_is_refused_at_the_item_that_crosses() -> None:
    per_item = limits.MAX_VALUES_PER_ITEM * 2 // 3
    items = limits.MAX_VALUES_PER_RULE // per_item + 1
    body = "".join(f"  s{j}:\n    CommandLine|contains:\n" + "".join(f"      - v{j}_{i}\n" for i in range(per_item))
                   for j in range(items))
    text = SIGMA_HEAD + "detection:\n" + body + "  condition: 1 of s*\n"
    started = time.perf_counter()
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "many.yml")
    crossing = 4 + (items - 1) * (per_item + 2) + 1  # the key line of the last selection
    assert info.value.code == "too-many-values" and info.value.origin == Origin("many.yml", crossing)
    assert time.perf_counter() - started < 2


def test_an_overlong_search_is_refused_before_parsing(tmp_path: Path) -> None:
    values = ",".join(f'"v{i}.exe"' for i in range(limits.MAX_SEARCH_CHARS // 8))
    doc = {"name": "long", "id": "x", "search": "| tstats count from datamodel=Endpoint.Processes "
           f"where Processes.process_name IN ({values}) by Processes.dest"}
    path = tmp_path / "long.yml"
    path.write_text(yaml.safe_dump(doc, width=10**9))
    started = time.perf_counter()
    with pytest.raises(SigmaWmiError) as info:
        read_file(path)
    assert info.value.code == "search-too-large" and info.value.origin is not None
    assert info.value.origin.line == 3  # `search:` (safe_dump sorts keys: id, name, search)
    assert time.perf_counter() - started < 2


def test_the_deepest_rules_the_readers_accept_still_build_docs_and_convert(tmp_path: Path) -> None:
    """The docs site (and every target) recursed past Python's limit on deep trees; with the
    input bounds, the deepest accepted SPL and YAML nesting compile and render."""
    from sigma_wmi.docs.queries import QueryCompiler
    from sigma_wmi.docs.site import build_site

    where = "(Processes.process_name=a.exe OR NOT " * (limits.MAX_SPL_DEPTH // 2) + "Processes.process_name=b.exe" \
        + ")" * (limits.MAX_SPL_DEPTH // 2)
    escu_path = tmp_path / "deep_escu.yml"
    escu_path.write_text(yaml.safe_dump({"name": "deep", "id": "d", "search": (
        f"| tstats count from datamodel=Endpoint.Processes where {where} by Processes.dest")}, width=10**9))
    nested = "[" * (limits.MAX_YAML_DEPTH - 1) + "]" * (limits.MAX_YAML_DEPTH - 1)
    sigma_path = tmp_path / "deep_sigma.yml"
    sigma_path.write_text(SIGMA_HEAD + f"x_custom: {nested}\ndetection:\n  sel:\n    Image: a\n  condition: sel\n")
    rules = [*read_file(escu_path), *read_file(sigma_path)]
    report = build_site(rules, tmp_path / "site")
    assert report.rules == 2
    for rule in rules:
        blocks = QueryCompiler(None).compile(rule)
        assert len(blocks) >= 4
        for block in blocks:  # a query, or a stated reason the target cannot express it
            assert block.text or block.note, block
            assert "recursion" not in f"{block.note} {block.diagnostics}".lower(), block


@pytest.mark.parametrize("order", ["deepest last", "deepest first"])
def test_nesting_built_from_aliases_counts_as_nesting(order: str) -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, limits.MAX_YAML_DEPTH + 5)]
    if order == "deepest first":  # the long chain is reached before its shallow uses
        lines.append("z: [*a0, *a1]")
    with pytest.raises(SigmaWmiError) as info:
        load_documents("\n".join(lines) + "\n", "chain.yml")
    assert info.value.code == "yaml-depth" and info.value.origin is not None and info.value.origin.line


def test_many_wildcard_patterns_stay_in_linear_time_and_agree_with_python_re() -> None:
    patterns = [Pattern((f"a{i}", Wildcard.ONE, "b", Wildcard.MANY)) for i in range(3000)]
    match = Match("f", Op.WILDCARD, tuple(patterns))
    oracle = [re.compile(f"a{i}.b.*", re.S) for i in range(3000)]
    for text in ["a5xb", "a2999\nbzz", "a3000xb", "a12b", "xa5xb", "a5xbx"]:
        assert evaluate(match, {"f": text}) == any(o.fullmatch(text) for o in oracle), text


def test_a_regex_too_large_for_re2_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "r.yml"
    huge = "|".join(f"a{i}.b" for i in range(60_000))
    path.write_text(SIGMA_HEAD + f"detection:\n  sel:\n    CommandLine|re: '{huge}'\n  condition: sel\n")
    (rule,) = read_file(path)
    with pytest.raises(SigmaWmiError) as info:
        compile_rule(rule)
    assert info.value.code == "regex-too-large" and info.value.origin == Origin(str(path), 5)
    assert len(str(info.value)) < 300


def test_a_quoted_macro_call_is_a_literal_value_in_the_model() -> None:
    (rule,) = read_file(REPO / "tests" / "bad" / "escu" / "macro_in_quoted_value.yml")
    assert rule.detection == Match("process_name", Op.EQUALS, (Pattern.literal("`not_a_macro`"),))


# ---- any edit of a real rule: rules, or one located one-line error; never anything else ----

HOSTILE = ["\x00", "\x0b", "\u2028", "\r", "&a ", "*a", "<<: ", "- ", "[", "{", "}", "]", ": ", "|windash",
           "|base64offset", "|re", "`", '"', "\\", "99999999999999999999999", "1.0e+999", "!!binary ", "!!set ",
           "? ", "---\n", "\t", "#", "%", "(", ")"]
SAMPLE_RULES = sorted(p for p in RULES.rglob("*.yml"))


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(st.sampled_from(SAMPLE_RULES), st.lists(st.tuples(st.floats(0, 1), st.sampled_from(HOSTILE)), min_size=1,
                                               max_size=4))
def test_hostile_edits_of_real_rules_read_or_fail_located(path: Path, edits: list[tuple[float, str]]) -> None:
    text = path.read_text(encoding="utf-8")
    for where, snippet in edits:
        cut = int(where * len(text))
        text = text[:cut] + snippet + text[cut:]
    started = time.process_time()
    try:
        read_text_rules(text, "edited.yml")
    except SigmaWmiError as err:
        assert err.origin is not None and err.origin.path == "edited.yml" and err.origin.line, str(err)
        assert "\n" not in str(err), str(err)
    assert time.process_time() - started < 2


@pytest.mark.parametrize("text", [
    "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
              + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]),
    "a: &a [1, *a]",
], ids=["bomb", "cycle"])
def test_the_cheap_tree_count_is_bounded_on_shared_nodes_too(text: str) -> None:
    """The loader uses the memo-free one-pass build when a text has no anchor; should an alias
    ever slip past that test, the build still stops at the limits (visits are expanded nodes)."""
    from sigma_wmi.readers.yamlsource import _build_tree, _Loader

    started = time.process_time()
    with pytest.raises(yaml.MarkedYAMLError) as info:
        loader = _Loader(text)
        try:
            _build_tree(loader.get_single_node(), loader)
        finally:
            loader.dispose()
    assert getattr(info.value, "code", None) in ("yaml-too-large", "yaml-depth")
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_number_beyond_the_int_string_limit_is_a_located_event_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"big{suffix}"
    events = ['{"EventID": 1}', '{"EventID": 1, "x": ' + "1" * 5000 + "}"]
    path.write_text("\n".join(events) + "\n" if suffix == ".jsonl" else "[" + ",\n".join(events) + "]\n")
    with pytest.raises(SigmaWmiError) as info:
        list(read_events(path))
    assert info.value.code == "bad-events" and info.value.origin is not None
    assert info.value.origin.line == (2 if suffix == ".jsonl" else 1)


def test_a_pretty_printed_event_is_bounded_as_a_whole(tmp_path: Path) -> None:
    path = tmp_path / "pretty.jsonl"
    long_line = '  "CommandLine": "' + "a" * 1000 + '",\n'
    path.write_text('Record 1\n{\n' + long_line * (limits.MAX_EVENT_LINE_BYTES // 1000 + 1) + '  "EventID": 1\n}\n')
    with pytest.raises(SigmaWmiError) as info:
        list(read_events(path))
    assert info.value.code == "bad-events" and "longer than" in info.value.message


# ---------------------------------------------------------------------------
# The one-pass builder gives exactly what the library's safe constructor gives
# ---------------------------------------------------------------------------

class _ReferenceLoader(yaml.SafeLoader):
    """PyYAML's own pure-Python safe loader, with dates kept as text as ours keeps them."""

    yaml_implicit_resolvers = {  # noqa: RUF012 - the library's class attribute, replaced
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _reference(text: str) -> list[object]:
    return [d for d in yaml.load_all(text, Loader=_ReferenceLoader) if d is not None]


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                     st.sampled_from(["yes", "No", "on", "~", "0x1F", "0o17", "1_000", "2024-01-02", ".inf", "1e3",
                                      "true", "NULL", "-", "'q'", "a: b", "#x"]))
_KEYS = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.none())
_DOCS = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_DOCS, st.sampled_from([{}, {"default_flow_style": True}, {"default_style": '"'}]))
def test_our_loader_builds_what_the_safe_loader_builds(data: object, style: dict[str, object]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True, **style)  # type: ignore[call-overload]
    assert load_documents(text, "x.yml") == _reference(text)


def test_our_loader_builds_every_corpus_file_as_the_safe_loader_does() -> None:
    from conftest import SHARED

    files = sorted(RULES.rglob("*.yml"))
    corpus = SHARED / "corpora" / "sigmahq" / "rules"
    if corpus.is_dir():
        files += sorted(corpus.rglob("*.yml"))[::7]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert load_documents(text, str(path)) == _reference(text), path
