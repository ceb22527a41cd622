"""Sigma YAML → model: metadata, modifiers, canonical fields and located errors."""

from __future__ import annotations

import pytest
from helpers import sigma_rule

import sigma_wmi
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import (
    And,
    LogSource,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Regex,
    Technique,
    Wildcard,
)
from sigma_wmi.readers import read_text_rules
from sigma_wmi.readers.sigma import parse_attack_tags


def test_scrcons_rule_metadata(scrcons_rule_path) -> None:
    (rule,) = sigma_wmi.load(scrcons_rule_path)
    assert rule.id == "ec1d5e28-8f3b-4188-a6f8-6e8df81dc28e"
    assert rule.title == "WMI Persistence - Script Event Consumer"
    assert (rule.status, rule.level) == ("test", "medium")
    assert rule.tactics == ("persistence", "privilege-escalation")
    assert rule.techniques == (Technique("T1546.003"),)
    assert rule.logsource == LogSource("windows", "process_creation")
    assert rule.date == "2018-03-07" and rule.modified == "2022-10-11"
    assert rule.authors == ("Thomas Patzke",)
    assert len(rule.falsepositives) == 2 and len(rule.references) == 2
    assert rule.origin.path.endswith(".yml") and rule.origin.line == 1
    assert rule.detection == And((
        Match("process_path", Op.EQUALS, (Pattern.literal(r"C:\WINDOWS\system32\wbem\scrcons.exe"),)),
        Match("parent_process_path", Op.EQUALS, (Pattern.literal(r"C:\Windows\System32\svchost.exe"),)),
    ))


@pytest.mark.parametrize("tags", [("attack.privilege-escalation",), ("attack.privilege_escalation",)])
def test_tactic_tag_spellings(tags: tuple[str, ...]) -> None:
    assert parse_attack_tags(tags)[0] == ("privilege-escalation",)


def test_attack_tags_skip_groups_and_software() -> None:
    assert parse_attack_tags(("attack.g0016", "attack.s0002", "attack.t1047", "cve.2021-1")) == (
        (), (Technique("T1047"),))


MODIFIERS = [
    ("Image|endswith: '\\a.exe'", Match("process_path", Op.ENDSWITH, (Pattern.literal("\\a.exe"),))),
    ("Image|startswith: 'C:\\x'", Match("process_path", Op.STARTSWITH, (Pattern.literal("C:\\x"),))),
    ("CommandLine|contains: evil", Match("command_line", Op.CONTAINS, (Pattern.literal("evil"),))),
    ("CommandLine: 'a*b?c'", Match("command_line", Op.WILDCARD,
                                   (Pattern(("a", Wildcard.MANY, "b", Wildcard.ONE, "c")),))),
    # an escaped wildcard is a literal character
    ("CommandLine: 'a\\*b'", Match("command_line", Op.EQUALS, (Pattern.literal("a*b"),))),
    ("CommandLine|re: '^a.*'", Match("command_line", Op.REGEX, (Regex("^a.*"),), True)),
    ("CommandLine|re|i: 'x'", Match("command_line", Op.REGEX, (Regex("x", frozenset("i")),), False)),
    ("CommandLine|cased: AbC", Match("command_line", Op.EQUALS, (Pattern.literal("AbC"),), True)),
    ("DestinationIp|cidr: 10.0.0.0/8", Match("destination_ip", Op.CIDR, ("10.0.0.0/8",))),
    ("ProcessId|lt: 5", Match("process_id", Op.LT, (5,))),
    ("ProcessId: 5", Match("process_id", Op.EQUALS, (5,))),
    ("CommandLine|exists: true", Match("command_line", Op.EXISTS)),
    ("CommandLine: null", Match("command_line", Op.NULL)),
    ("CommandLine|fieldref: ParentCommandLine", Match("command_line", Op.FIELDREF, ("parent_command_line",))),
    ("UnknownField: v", Match("UnknownField", Op.EQUALS, (Pattern.literal("v"),))),
]


@pytest.mark.parametrize(("item", "expected"), MODIFIERS)
def test_modifier_maps_to_model(item: str, expected: Match) -> None:
    assert sigma_rule(f"sel:\n  {item}\ncondition: sel").detection == expected


def test_exists_false_is_negation() -> None:
    rule = sigma_rule("sel:\n  CommandLine|exists: false\ncondition: sel")
    assert rule.detection == Not(Match("command_line", Op.EXISTS))


def test_neq_is_negated_equality() -> None:
    rule = sigma_rule("sel:\n  ProcessId|neq: 4\ncondition: sel")
    assert rule.detection == Not(Match("process_id", Op.EQUALS, (4,)))


def test_windash_expands_to_one_match_with_all_dashes() -> None:
    rule = sigma_rule("sel:\n  CommandLine|windash|contains: ' -enc '\ncondition: sel")
    assert isinstance(rule.detection, Match)
    assert rule.detection.op is Op.CONTAINS and len(rule.detection.values) == 5


def test_value_lists_merge_into_one_match() -> None:
    rule = sigma_rule("sel:\n  Image|endswith:\n    - '\\a.exe'\n    - '\\b.exe'\ncondition: sel")
    assert rule.detection == Match("process_path", Op.ENDSWITH,
                                   (Pattern.literal("\\a.exe"), Pattern.literal("\\b.exe")))


def test_one_of_pattern_and_not() -> None:
    rule = sigma_rule("""
        sel_a:
            Image: a
        sel_b:
            Image: b
        filter:
            User: SYSTEM
        condition: 1 of sel_* and not filter
    """)
    assert rule.detection == And((
        Match("process_path", Op.EQUALS, (Pattern.literal("a"), Pattern.literal("b"))),
        Not(Match("user", Op.EQUALS, (Pattern.literal("SYSTEM"),))),
    ))


def test_catalog_names_depend_on_log_source() -> None:
    wmi = sigma_rule("sel:\n  Name|contains: Updater\ncondition: sel", category="wmi_event")
    other = sigma_rule("sel:\n  Name|contains: Updater\ncondition: sel", category="file_event")
    assert isinstance(wmi.detection, Match) and wmi.detection.field == "wmi_name"
    assert isinstance(other.detection, Match) and other.detection.field == "Name"


def test_keywords() -> None:
    rule = sigma_rule("kw:\n  - a\n  - b\ncondition: kw")
    assert rule.detection == Match(None, Op.EQUALS, (Pattern.literal("a"), Pattern.literal("b")))


def test_or_of_different_fields_stays_or() -> None:
    rule = sigma_rule("sel:\n  - Image: a\n  - User: b\ncondition: sel")
    assert isinstance(rule.detection, Or) and len(rule.detection.items) == 2


# ---- errors name the file and the line ----

BAD = [
    ("title: x\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image|nosuchmod: a\n  condition: sel\n",
     6, "nosuchmod"),
    ("title: x\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image: a\n  condition: sel and nope\n",
     7, "nope"),
    ("title: x\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image: a\n", 4, "condition"),
    ("title: x\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image: [a\n  condition: sel\n", None,
     "YAML"),
    ("title: x\nlogsource:\n  product: windows\ndetection:\n  sel:\n    Image|expand: '%foo%'\n  condition: sel\n",
     6, "placeholder"),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD)
def test_errors_are_located(text: str, line: int | None, words: str) -> None:
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(text, "bad.yml")
    err = info.value
    assert err.origin is not None and err.origin.path == "bad.yml"
    if line is not None:
        assert err.origin.line == line
    else:
        assert err.origin.line is not None
    assert words.lower() in err.message.lower()
    assert str(err).startswith("bad.yml:")


_RULE_WITH_BAD_CONDITION = ("title: t\nid: 5b3a0a3e-7c8e-4a47-9b6a-0f1f4d3e2a11\nlogsource:\n  product: windows\n"
                            "  category: process_creation\ndetection:\n  sel:\n    Image: x\n"
                            "  condition: sel and nosuch\n")


@pytest.mark.parametrize("before", ["---\n", "---\n---\n", "--- ~\n---\n", "# c\n---\n---\n"])
def test_empty_documents_before_a_rule_keep_its_lines(before: str) -> None:
    """Empty YAML documents are skipped; the rule's errors still name lines of the file."""
    with pytest.raises(SigmaWmiError) as info:
        read_text_rules(before + _RULE_WITH_BAD_CONDITION, "x.yml")
    assert info.value.origin is not None
    assert info.value.origin.line == before.count("\n") + 9


def test_empty_documents_between_rules_keep_each_rules_lines() -> None:
    first = _RULE_WITH_BAD_CONDITION.replace(" and nosuch", "")
    second = first.replace("2a11", "2a12").replace("title: t", "title: u")
    rules = read_text_rules(first + "---\n---\n" + second, "x.yml")
    assert [(r.title, r.origin.line) for r in rules] == [("t", 1), ("u", 12)]
