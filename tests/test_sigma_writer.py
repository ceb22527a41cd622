"""The Sigma YAML backend: escaping proven through pySigma, the seed analytic, corpus parse-back."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sigma.rule import SigmaRule
from sigma.types import SigmaString, SpecialChars

from sigma_wmi.api import compile_rule
from sigma_wmi.backends.sigma import sigma_regex, sigma_string
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import Pattern, Wildcard, string_match
from sigma_wmi.readers import read_file, read_text_rules
from tests.conftest import RULES, shared_path

MANY, ONE = Wildcard.MANY, Wildcard.ONE


@pytest.mark.parametrize(("pattern", "text"), [
    (Pattern.literal("C:\\Windows\\x.exe"), "C:\\Windows\\x.exe"),
    (Pattern((MANY, "\\scrcons.exe")), "*\\scrcons.exe"),
    (Pattern.literal("a*b?c"), "a\\*b\\?c"),
    (Pattern(("dir\\", MANY)), "dir\\\\*"),
    (Pattern.literal("end\\"), "end\\\\"),
    (Pattern.literal("a\\\\b"), "a\\\\\\b"),
    (Pattern(("a", ONE, "b")), "a?b"),
])
def test_sigma_string_table(pattern: Pattern, text: str) -> None:
    assert sigma_string(pattern) == text


@pytest.mark.parametrize(("pcre", "python"), [("\\x{202E}", "\\U0000202e"), ("a.{0,4}$", "a.{0,4}$")])
def test_sigma_regex(pcre: str, python: str) -> None:
    assert sigma_regex(pcre) == python


def _from_pysigma(value: SigmaString) -> Pattern:
    tokens = {SpecialChars.WILDCARD_MULTI: MANY, SpecialChars.WILDCARD_SINGLE: ONE}
    return Pattern(tuple(tokens[p] if isinstance(p, SpecialChars) else p for p in value.s))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet="ab\\*?: ", min_size=1), st.sampled_from([MANY, ONE])),
                min_size=1, max_size=6))
def test_sigma_string_reads_back_through_pysigma(parts: list[object]) -> None:
    pattern = Pattern(tuple(parts))  # type: ignore[arg-type]
    assert _from_pysigma(SigmaString(sigma_string(pattern))) == pattern


def test_seed_analytic_as_sigma() -> None:
    (rule,) = read_file(RULES / "escu" / "script_execution_via_wmi.yml")
    text = compile_rule(rule, "sigma").text
    doc = yaml.safe_load(text)
    assert doc["detection"]["selection_1"] == {"Image|endswith": "\\scrcons.exe"}
    assert doc["tags"] == ["attack.execution", "attack.t1047"]
    assert doc["related"] == [{"id": rule.id, "type": "derived"}]
    assert doc["logsource"] == {"product": "windows", "category": "process_creation"}
    assert doc["id"] != rule.id and doc["status"] == "stable"
    parsed = SigmaRule.from_yaml(text)
    assert str(parsed.related.related[0].id) == rule.id
    # Our own Sigma reader sees the same condition on the path the name was derived to.
    (back,) = read_text_rules(text, "back.yml")
    assert back.detection == string_match("process_path", Pattern((MANY, "\\scrcons.exe")))


def test_sigma_rule_round_trip(scrcons_rule_path: Path) -> None:
    (rule,) = read_file(scrcons_rule_path)
    text = compile_rule(rule, "sigma").text
    (back,) = read_text_rules(text, "back.yml")
    assert back.detection == rule.detection
    assert yaml.safe_load(text)["id"] == rule.id


def test_partial_rule_says_so_in_a_comment() -> None:
    (rule,) = read_file(Path(__file__).parent / "data" / "escu" / "detections" / "endpoint"
                        / "scrcons_with_lookup.yml")
    text = compile_rule(rule, "sigma").text
    assert text.startswith("# warning: stage `| lookup")
    SigmaRule.from_yaml(text)


def test_unknown_field_is_a_warning() -> None:
    (rule,) = read_file(Path(__file__).parent / "data" / "escu" / "detections" / "endpoint"
                        / "wmi_script_host_child.yml")
    output = compile_rule(rule, "sigma")
    assert not [d for d in output.diagnostics if d.code == "no-sigma-field"]


def test_corpus_converts_and_pysigma_parses_back() -> None:
    directory = shared_path("corpora", "escu", "detections", "endpoint")
    converted = 0
    for path in sorted(glob.glob(str(directory / "*.yml"))):
        if "datamodel=Endpoint.Processes" not in Path(path).read_text(encoding="utf-8"):
            continue
        try:
            (rule,) = read_file(path)
        except SigmaWmiError:
            continue
        text = compile_rule(rule, "sigma").text
        SigmaRule.from_yaml(text)
        (back,) = read_text_rules(text, "back.yml")
        assert back.logsource == rule.logsource
        converted += 1
    assert converted > 400
