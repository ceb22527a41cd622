"""The Sigma YAML backend: escaping proven through pySigma, the seed analytic, corpus parse-back."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule
from sigma.types import SigmaString, SpecialChars

from sigma_wmi.api import compile_rule
from sigma_wmi.backends.sigma import SigmaBackend, sigma_regex, sigma_string
from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError, UnsupportedError
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    LogSource,
    Match,
    Op,
    Pattern,
    Regex,
    Rule,
    Threshold,
    Wildcard,
    string_match,
)
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
    converted = correlated = 0
    for path in sorted(glob.glob(str(directory / "*.yml"))):
        if "datamodel=Endpoint.Processes" not in Path(path).read_text(encoding="utf-8"):
            continue
        try:
            (rule,) = read_file(path)
        except SigmaWmiError:
            continue
        try:
            text = compile_rule(rule, "sigma").text
        except UnsupportedError as err:  # one correlation tests one count
            assert rule.aggregation is not None and len(rule.aggregation.thresholds) > 1, err
            continue
        if rule.aggregation is None:
            SigmaRule.from_yaml(text)
        else:
            collection = SigmaCollection.from_yaml(text)
            collection.resolve_rule_references()
            assert len(collection.rules) == 2
            correlated += 1
        (back,) = read_text_rules(text, "back.yml")
        assert back.logsource == rule.logsource
        assert (back.aggregation is None) == (rule.aggregation is None)
        converted += 1
    assert converted > 400
    assert correlated >= 9


# ---- count thresholds: a base rule and a correlation ----

def _threshold_rule(**aggregation: object) -> Rule:
    settings = {"thresholds": (Threshold(Aggregate.DISTINCT_COUNT, Op.GTE, 8, "command_line"),),
                "group_by": ("host", "user"), "window": 1800, **aggregation}
    return Rule(id="3d6a1c5e-4a1b-4d7e-9a51-0c8b7b0f5e11", title="Many sc.exe command lines",
                detection=string_match("process_path", Pattern((MANY, "\\sc.exe"))),
                logsource=LogSource(product="windows", category="process_creation"), level="medium",
                tags=("attack.t1489",), aggregation=Aggregation(**settings))  # type: ignore[arg-type]


def test_threshold_round_trips_through_a_correlation() -> None:
    rule = _threshold_rule()
    text = compile_rule(rule, "sigma").text
    base, correlation = yaml.safe_load_all(text)
    assert correlation["id"] == rule.id  # the correlation alerts: it keeps the rule's id
    assert correlation["correlation"] == {
        "type": "value_count", "rules": [base["name"]], "group-by": ["Computer", "User"], "timespan": "30m",
        "condition": {"field": "CommandLine", "gte": 8}}
    assert "detection" in base and "detection" not in correlation
    collection = SigmaCollection.from_yaml(text)
    collection.resolve_rule_references()
    (back,) = read_text_rules(text, "back.yml")
    assert (back.id, back.title, back.level) == (rule.id, rule.title, rule.level)
    assert (back.detection, back.aggregation) == (rule.detection, rule.aggregation)


def test_a_range_is_refused_because_pysigma_reads_one_comparison() -> None:
    """pySigma 1.5: "Sigma correlation condition must have exactly one condition item"; a
    condition {gt: 2, lte: 9} would be a file sigma-cli cannot load."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaCorrelationConditionError

    rule = _threshold_rule(thresholds=(Threshold(Aggregate.COUNT, Op.GT, 2), Threshold(Aggregate.COUNT, Op.LTE, 9)))
    with pytest.raises(UnsupportedError, match="one comparison"):
        compile_rule(rule, "sigma")
    with pytest.raises(SigmaCorrelationConditionError, match="exactly one condition item"):
        SigmaCollection.from_yaml("title: r\nname: r\nlogsource: {product: windows}\ndetection: {s: {a: 1}, "
                                  "condition: s}\n---\ntitle: c\ncorrelation: {type: event_count, rules: r, "
                                  "timespan: 1h, condition: {gt: 2, lte: 9}}\n")


@pytest.mark.parametrize(("aggregation", "words"), [
    ({"window": None}, "time span"),
    ({"thresholds": (Threshold(Aggregate.COUNT, Op.GT, 2),
                     Threshold(Aggregate.DISTINCT_COUNT, Op.GT, 2, "user"))}, "one count"),
])
def test_thresholds_a_correlation_cannot_hold(aggregation: dict[str, object], words: str) -> None:
    with pytest.raises(UnsupportedError, match=words):
        compile_rule(_threshold_rule(**aggregation), "sigma")


def test_group_by_a_name_sigma_lacks_uses_the_path_and_says_so() -> None:
    output = compile_rule(_threshold_rule(group_by=("process_name",)), "sigma")
    assert list(yaml.safe_load_all(output.text))[1]["correlation"]["group-by"] == ["Image"]
    assert [d.code for d in output.diagnostics] == ["group-by-path"]


@pytest.mark.parametrize(("edit", "base_kept"), [
    (("  type: value_count", "  type: value_count\n  generate: true"), True),  # where pySigma reads it
    (("correlation:", "generate: true\ncorrelation:"), True),  # where Sigma 2.1 puts it
    (("", ""), False),
])
def test_base_rule_alerts_too_with_generate(edit: tuple[str, str], base_kept: bool) -> None:
    text = compile_rule(_threshold_rule(), "sigma").text.replace(*edit)
    rules = read_text_rules(text, "back.yml")
    assert [r.aggregation is None for r in rules] == ([True] if base_kept else []) + [False]


@pytest.mark.parametrize(("edit", "words"), [
    (("  type: value_count", "  type: value_count\n  generate: 'false'"), "true or false"),
    (("  group-by:", "  aliases: {u: {base: User}}\n  group-by:"), "aliases"),
])
def test_correlation_keys_not_taken_silently(edit: tuple[str, str], words: str) -> None:
    with pytest.raises(SigmaWmiError, match=words):
        read_text_rules(compile_rule(_threshold_rule(), "sigma").text.replace(*edit), "back.yml")


# ---- found in review ----

def test_diagnostics_in_the_header_cannot_inject_yaml() -> None:
    rule = Rule(id="x", title="t", detection=Match("process_path", Op.EQUALS, (Pattern.literal("a"),)),
                logsource=LogSource("windows", "process_creation"),
                diagnostics=(Diagnostic(Level.WARNING, "partial-import", "line one\ninjected: true #"),))
    text = SigmaBackend().convert(rule).text
    assert "injected" not in yaml.safe_load(text)
    assert text.splitlines()[0] == "# warning: line one injected: true #"


def test_keyword_regex_is_written_as_a_modifier_key() -> None:
    rule = Rule(id="5d1f0c5e-1111-4222-8333-944444444444", title="t",
                detection=Match(None, Op.REGEX, (Regex("evil.*payload"),), True),
                logsource=LogSource("windows", "process_creation"))
    text = SigmaBackend().convert(rule).text
    assert SigmaCollection.from_yaml(text).rules[0].title == "t"
    assert "'|re': evil.*payload" in text


def test_field_names_with_pipes_are_refused() -> None:
    rule = Rule(id="x", title="t", detection=Match("x|re", Op.EQUALS, (Pattern.literal("a"),)),
                logsource=LogSource("windows", "process_creation"))
    with pytest.raises(UnsupportedError, match=r"contains '\|'"):
        SigmaBackend().convert(rule)


def test_regex_values_keep_their_own_flags() -> None:
    rule = Rule(id="x", title="t", detection=Match("command_line", Op.REGEX,
                                                   (Regex("a.b", frozenset("s")), Regex("c.d")), True),
                logsource=LogSource("windows", "process_creation"))
    detection = yaml.safe_load(SigmaBackend().convert(rule).text)["detection"]
    keys = sorted(k for body in detection.values() if isinstance(body, dict) for k in body)
    assert keys == ["CommandLine|re", "CommandLine|re|s"]
