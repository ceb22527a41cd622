"""Injection, fuzzing and determinism for the core (Sigma reader, Splunk output).

Long mode: SIGMA_WMI_LONG=1 runs 100,000 examples per property (see bench/robustness.sh).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import RULES
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from spl_tokens import Token, tokenize

from sigma_wmi.backends.splunk import SplunkBackend
from sigma_wmi.catalog import catalog
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import And, LogSource, Match, Op, Or, Pattern, Regex, Rule, Wildcard
from sigma_wmi.readers import read_text_rules

LONG = os.environ.get("SIGMA_WMI_LONG") == "1"
EXAMPLES = 100_000 if LONG else 200
PROFILE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
no_star = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="*"))


def _raw(expr: Match | And | Or) -> str:
    rule = Rule(id="x", title="t", detection=expr, logsource=LogSource(product="linux"))
    return SplunkBackend().convert(rule, "raw").text


@PROFILE
@given(no_star, no_star)
def test_spl_values_cannot_break_out(a: str, b: str) -> None:
    """Two values in an IN list and an injected-looking third condition stay three literals."""
    query = _raw(And((Match("f", Op.EQUALS, (Pattern.literal(a), Pattern.literal(b))),
                      Match("g", Op.CONTAINS, (Pattern.literal(b),)))))
    tokens = tokenize(query)
    strings = [t.text for t in tokens if t.kind == "string"]
    assert strings == [a, b, f"*{b}*"]
    assert [t for t in tokens if t.kind == "pipe"] == []  # nothing escaped into a new command


@PROFILE
@given(text)
def test_spl_field_names_cannot_break_out(name: str) -> None:
    assume(catalog().spec(name) is None)  # catalog names are renamed on purpose (channel → Channel)
    query = _raw(Match(name, Op.EQUALS, (Pattern.literal("v"),)))
    tokens = tokenize(query)
    assert tokens[-1] == Token("string", "v") and tokens[-2] == Token("op", "=")
    assert len(tokens) == 3 and tokens[0].text == name


@PROFILE
@given(text, text)
def test_spl_where_clause_cannot_break_out(pattern: str, value: str) -> None:
    """Regex and case-sensitive values live in `| where` eval strings; still one string each."""
    query = _raw(Or((Match("f", Op.REGEX, (Regex(pattern),), True),
                     Match("g", Op.EQUALS, (Pattern.literal(value),), True))))
    tokens = tokenize(query)
    assert [t.kind for t in tokens].count("pipe") == 1
    strings = [t.text for t in tokens if t.kind == "string"]
    assert strings[0] == pattern and len(strings) == 2


@PROFILE
@given(st.lists(st.one_of(no_star, st.just(Wildcard.MANY)), min_size=1, max_size=6))
def test_spl_wildcards_survive_as_wildcards(parts: list[str | Wildcard]) -> None:
    pattern = Pattern(tuple(parts))
    query = _raw(Match("f", Op.WILDCARD, (pattern,)))
    assert tokenize(query)[-1] == Token("string", pattern.text)


# ---- fuzzing the Sigma reader: only SigmaWmiError may escape ----

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)
modifiers = st.sampled_from(["", "|contains", "|endswith", "|startswith", "|re", "|cidr", "|all", "|lt",
                             "|exists", "|base64offset|contains", "|windash", "|cased", "|fieldref", "|bogus",
                             "|re|i", "|expand", "|gte"])


@st.composite
def sigma_documents(draw: st.DrawFn) -> dict[str, object]:
    selection = draw(st.dictionaries(st.tuples(st.sampled_from(["Image", "CommandLine", "x", ""]), modifiers)
                                     .map("".join), yaml_values, max_size=3))
    detection: dict[str, object] = {"sel": selection,
                                    "condition": draw(st.one_of(text, st.sampled_from(
                                        ["sel", "not sel", "1 of sel*", "sel and", "all of them"])))}
    doc: dict[str, object] = {"title": draw(st.one_of(text, yaml_values)), "logsource": draw(st.one_of(
        st.fixed_dictionaries({"product": st.just("windows"), "category": st.sampled_from(
            ["process_creation", "wmi_event", "x"])}), yaml_values)), "detection": detection}
    for key in draw(st.lists(st.sampled_from(["id", "tags", "level", "status", "date", "related",
                                              "falsepositives"]), max_size=3)):
        doc[key] = draw(yaml_values)
    return doc


@PROFILE
@given(sigma_documents())
def test_sigma_reader_fuzz(doc: dict[str, object]) -> None:
    try:
        rendered = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        rules = read_text_rules(rendered, "fuzz.yml")
    except SigmaWmiError as err:
        assert err.origin is not None and err.origin.path == "fuzz.yml"
        return
    for rule in rules:
        with contextlib.suppress(SigmaWmiError):  # unsupported content is fine; a crash is not
            SplunkBackend().convert(rule, "raw")


@PROFILE
@given(text)
def test_sigma_reader_fuzz_raw_text(source: str) -> None:
    with contextlib.suppress(SigmaWmiError):  # any other exception fails the test
        read_text_rules(source, "fuzz.yml")


# ---- determinism across processes (hash seeds differ) ----

def test_output_is_byte_identical_across_processes(tmp_path: Path) -> None:
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}.conf"
        subprocess.run([sys.executable, "-m", "sigma_wmi", "convert", "--no-cache", "-q", "-f", "savedsearches",
                        "-o", str(out), str(RULES / "sigma")],
                       env={**os.environ, "PYTHONHASHSEED": seed}, check=False, capture_output=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0]
