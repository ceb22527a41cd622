"""The SPL grammars: search language (Splunk precedence), eval `| where`, `| regex`, pipelines."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sigma_wmi.backends.splunk import SplunkBackend, spl_string
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.evaluate import evaluate
from sigma_wmi.model import And, Match, Not, Op, Or, Pattern, Regex, Wildcard, normalize, string_match
from sigma_wmi.readers.spl import (
    SplError,
    SplUnsupported,
    extract_subsearches,
    parse_eval,
    parse_regex_command,
    parse_search,
    parse_splunk_search,
    parse_where,
    regex_as_pattern,
    split_pipeline,
    unquote,
)
from tests.helpers import sigma_rule

MANY = Wildcard.MANY


def eq(field: str, text: str, cased: bool = False) -> Match:
    return string_match(field, Pattern.literal(text), cased)


def exists(field: str) -> Match:
    return Match(field, Op.EXISTS)


A, B, C = eq("a", "x"), eq("b", "y"), eq("c", "z")

# (search text, expected model) — the first block changes meaning under conventional precedence.
PRECEDENCE = [
    ("a=x b=y OR c=z", And((A, Or((B, C))))),
    ("a=x AND b=y OR c=z", And((A, Or((B, C))))),
    ("a=x OR b=y c=z", And((Or((A, B)), C))),
    ("a=x OR b=y AND c=z", And((Or((A, B)), C))),
    ("NOT a=x OR b=y", Or((Not(A), B))),
    ("NOT (a=x OR b=y) c=z", And((Not(Or((A, B))), C))),
    ("(a=x b=y) OR c=z", Or((And((A, B)), C))),
]


@pytest.mark.parametrize(("text", "expected"), PRECEDENCE)
def test_splunk_precedence(text: str, expected: object) -> None:
    assert parse_search(text) == normalize(expected)  # type: ignore[arg-type]


def test_precedence_differs_from_conventional() -> None:
    conventional = Or((And((A, B)), C))
    assert parse_search("a=x b=y OR c=z") != conventional


VALUES = [
    ('a="x"', eq("a", "x")),
    ("a = x", eq("a", "x")),
    ('"a"=x', eq("a", "x")),  # quoted field name
    ('a="*x*"', string_match("a", Pattern((MANY, "x", MANY)))),
    ("a=x*", string_match("a", Pattern(("x", MANY)))),
    ("a=*\\\\x", string_match("a", Pattern((MANY, "\\x")))),
    ('a="C:\\\\Windows\\\\*"', string_match("a", Pattern(("C:\\Windows\\", MANY)))),
    ('a="C:\\Windows"', eq("a", "C:\\Windows")),  # an unknown escape keeps its backslash
    ('a="say \\"hi\\""', eq("a", 'say "hi"')),
    ("a=what?", eq("a", "what?")),  # SPL has no single-character wildcard
    ('a="2&gt;&amp;1"', eq("a", "2>&1")),
    ("a=4", Match("a", Op.EQUALS, (4,))),
    ('a="4"', eq("a", "4")),
    ("a=*", exists("a")),
    ("a>=10", Match("a", Op.GTE, (10,))),
    ("a<2.5", Match("a", Op.LT, (2.5,))),
    ("a=*GetCurrent()*", string_match("a", Pattern((MANY, "GetCurrent()", MANY)))),
    ("a IN (x, y)", Match("a", Op.EQUALS, (Pattern.literal("x"), Pattern.literal("y")))),
    ('a IN ("x" "y",)', Match("a", Op.EQUALS, (Pattern.literal("x"), Pattern.literal("y")))),
    ("a IN (x*, *y)", Or((string_match("a", Pattern(("x", MANY))), string_match("a", Pattern((MANY, "y")))))),
    ("a!=x", And((exists("a"), Not(A)))),
    ("NOT a=x", Not(A)),
    ("a=x ANDROID=y", And((A, eq("ANDROID", "y")))),
    ("or", string_match(None, Pattern.literal("or"))),  # lower case is a term, not an operator
]


@pytest.mark.parametrize(("text", "expected"), VALUES)
def test_values_and_comparisons(text: str, expected: object) -> None:
    assert parse_search(text) == normalize(expected)  # type: ignore[arg-type]


def test_not_equal_and_not_differ_on_missing_fields() -> None:
    assert parse_search("a!=x") != parse_search("NOT a=x")


def test_field_map_applies_to_every_name() -> None:
    assert parse_search("P.x=1 OR P.y IN (2)", lambda n: n.upper()) == Or((
        Match("P.X", Op.EQUALS, (1,)), Match("P.Y", Op.EQUALS, (2,))))


def test_empty_search_is_none() -> None:
    assert parse_search("   ") is None


@pytest.mark.parametrize("text", ["(a=x", "a=x)", "a=x OR", "a IN ()", "a=", "= x", 'a="x', "NOT", "a<b"])
def test_bad_search_raises_spl_error(text: str) -> None:
    with pytest.raises(SplError):
        parse_search(text)


def test_syntax_error_names_column() -> None:
    with pytest.raises(SplError) as info:
        parse_search("a=x )")
    assert info.value.column == 5


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab=!()" \\*,<>NOTRIAD', max_size=30))
def test_any_input_gives_a_model_or_spl_error(text: str) -> None:
    try:
        result = parse_search(text)
    except SplError as err:
        assert err.code in ("spl-syntax", "spl-unsupported")
        return
    assert result is None or isinstance(result, (And, Or, Not, Match))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet=st.characters(blacklist_characters="*&\x00"), min_size=1),
                          st.just(MANY)), min_size=1, max_size=5))
def test_backend_quoting_reads_back(parts: list[object]) -> None:
    """What the Splunk backend quotes, the parser unquotes to the same pattern."""
    pattern = Pattern(tuple(parts))  # type: ignore[arg-type]
    value = "".join("*" if p is MANY else str(p) for p in pattern.parts)
    expected = exists("f") if pattern.parts == (MANY,) else string_match("f", pattern)
    assert parse_search("f=" + spl_string(value)) == expected


@pytest.mark.parametrize(("token", "text"), [('"a\\\\b"', "a\\b"), ('"a\\"b"', 'a"b'), ("a\\b", "a\\b"),
                                             ("'x\\'y'", "x'y"), ('""', "")])
def test_unquote(token: str, text: str) -> None:
    assert unquote(token) == text


# ---- eval (`| where`) ----

WHERE = [
    ('x="a" OR y="b" AND z="c"', Or((eq("x", "a", True), And((eq("y", "b", True), eq("z", "c", True)))))),
    ('x=="a"', eq("x", "a", True)),
    ('x!="a"', And((exists("x"), Not(eq("x", "a", True))))),
    ("x > 5 or 3 >= y", Or((Match("x", Op.GT, (5,)), Match("y", Op.LTE, (3,))))),
    ('like(x, "a%b_")', string_match("x", Pattern(("a", MANY, "b", Wildcard.ONE)), True)),
    ('match(x, "(?i)^ab.*$")', string_match("x", Pattern(("ab", MANY)))),
    ('match(x, "^a\\\\.b$")', eq("x", "a.b", True)),
    ('match(x, "\\d+")', Match("x", Op.REGEX, (Regex("\\d+"),), case_sensitive=True)),
    # eval's NOT of a test on a missing field is null, which `| where` drops: x must exist
    ('NOT match(x, "(?i)a|b")', And((exists("x"), Not(Match("x", Op.REGEX, (Regex("a|b", frozenset("i")),)))))),
    ('NOT (isnotnull(x) AND match(x, "a"))', Not(Match("x", Op.REGEX, (Regex("a"),), True))),
    ('upper(x)=="ABC"', Match("x", Op.EQUALS, (Pattern.literal("ABC"),))),
    ("isnull(x) AND isnotnull(y)", And((Not(exists("x")), exists("y")))),
    ("x != y", And((exists("x"), exists("y"), Not(Match("x", Op.FIELDREF, ("y",), True))))),
    ("lower(x)==lower(y)", Match("x", Op.FIELDREF, ("y",))),
    ('lower(x)="cmd.exe"', eq("x", "cmd.exe")),
    ("'odd name'=1", Match("odd name", Op.EQUALS, (1,))),
    ('cidrmatch("10.0.0.0/8", ip)', Match("ip", Op.CIDR, ("10.0.0.0/8",))),
    # IN and in() compare like ==: exact and cased, unless the field is case-folded
    ('x IN ("a", "b")', Or((eq("x", "a", True), eq("x", "b", True)))),
    ('in(x, "a", "b")', Or((eq("x", "a", True), eq("x", "b", True)))),
    ('lower(x) in ("a.exe")', eq("x", "a.exe")),
    ("x IN (1, 2)", Match("x", Op.EQUALS, (1, 2))),
    ('NOT x IN ("a")', And((exists("x"), Not(eq("x", "a", True))))),
    # searchmatch() is the search language, caseless with wildcards
    ('searchmatch("x=a* y")', And((string_match("x", Pattern(("a", MANY))), string_match(None, Pattern.literal("y"))))),
]


@pytest.mark.parametrize(("text", "expected"), WHERE)
def test_where(text: str, expected: object) -> None:
    assert parse_where(text) == normalize(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ['len(x) != 5', 'mvcount(x) > 5', 'x + 1 > 2', 'substr(x, 2, 3) == "abc"',
                                  'substr(x, -3) == "ab"', 'substr(x, 0, 2) == "ab"', 'if(x == "a", 1, 1) == 1', 'if(x == "a", 1, 0) == 0', 'match(x, "a".y)', 'x > "abc"', 'lower(x)="ABC"',
                                  "x", 'relative_time(now(), "-1d") > x'])
def test_where_unsupported_or_invalid(text: str) -> None:
    with pytest.raises(SplError):
        parse_where(text)


def test_where_unsupported_is_the_unsupported_kind() -> None:
    with pytest.raises(SplUnsupported):
        parse_where("mvcount(x) > 5")


# ---- | regex ----

@pytest.mark.parametrize(("args", "expected"), [
    ('process="(?i)(regasm\\.exe.{0,4}$)"',
     Match("process", Op.REGEX, (Regex("(regasm\\.exe.{0,4}$)", frozenset("i")),))),
    ('process!="^a$"', Not(eq("process", "a", True))),
    ('"\\\\x{202E}"', Match(None, Op.REGEX, (Regex("\\x{202E}"),), case_sensitive=True)),
])
def test_regex_command(args: str, expected: object) -> None:
    assert parse_regex_command(args) == expected


@pytest.mark.parametrize(("regex", "pattern"), [
    ("^abc$", Pattern.literal("abc")), ("^a.*b.$", Pattern(("a", MANY, "b", Wildcard.ONE))),
    ("^C:\\\\x\\ y$", Pattern.literal("C:\\x y")), ("abc", None), ("^a+$", None), ("^\\d$", None),
    ("^a\\$", None),
])
def test_regex_as_pattern(regex: str, pattern: Pattern | None) -> None:
    assert regex_as_pattern(regex) == pattern


# ---- pipelines ----

def test_split_pipeline_respects_quotes_macros_and_subsearches() -> None:
    stages = split_pipeline('| tstats where a="x|y" by b | `m(a|b)` | search [x | y] | where z')
    assert [s.text for s in stages] == ['tstats where a="x|y" by b', "`m(a|b)`", "search [x | y]", "where z"]
    assert [s.command for s in stages] == ["tstats", "`m(a|b)`", "search", "where"]


def test_extract_subsearches_nested() -> None:
    text, found = extract_subsearches('a=1 [| x [y] | z "]"] b=2')
    assert found == ['| x [y] | z "]"']
    assert parse_search(text) == And((Match("a", Op.EQUALS, (1,)), string_match(None, Pattern.literal(
        "__subsearch_0__")), Match("b", Op.EQUALS, (2,))))


# ---- raw searches as the Splunk backend writes them ----

def test_parse_splunk_search_reads_backend_output_back() -> None:
    rule = sigma_rule("""
        selection:
            Image|endswith: '\\scrcons.exe'
            ParentImage: ['C:\\Windows\\System32\\svchost.exe', 'C:\\Windows\\System32\\wbem\\WmiPrvSE.exe']
        filter:
            CommandLine|contains: '"quoted" \\\\share'
        condition: selection and not filter
    """)
    text = SplunkBackend().convert(rule, "raw").text
    parsed = parse_splunk_search(text)
    assert parsed == normalize(And((
        Match("channel", Op.EQUALS, (Pattern.literal("Microsoft-Windows-Sysmon/Operational"),)),
        Match("event_id", Op.EQUALS, (1,)), rule.detection)))


def test_parse_splunk_search_where_and_security_profile() -> None:
    text = ('source="XmlWinEventLog:Security" EventCode=4688 NewProcessName="*\\\\wmic.exe" '
            '| where match(CommandLine, "^.*Create.*$")')
    assert parse_splunk_search(text, "security") == And((
        eq("channel", "Security"), Match("event_id", Op.EQUALS, (4688,)),
        string_match("process_path", Pattern((MANY, "\\wmic.exe"))),
        string_match("command_line", Pattern((MANY, "Create", MANY)), True)))


def test_parse_splunk_search_rejects_transforming_stages() -> None:
    with pytest.raises(SigmaWmiError):
        parse_splunk_search("a=1 | eval b=2")


@pytest.mark.parametrize("text", ['upper(x)=="abc"', 'like(lower(x), "%ABC%")', 'lower(x)=="Abc"'])
def test_folded_fields_compared_with_impossible_text_are_refused(text: str) -> None:
    # upper(x) can never equal "abc": reading it as a case-insensitive match would be wrong
    with pytest.raises(SigmaWmiError, match=r"not (upper|lower) case"):
        parse_where(text)


@pytest.mark.parametrize("text", ["match()", "like(x)", "cidrmatch(x)", 'isnull(x, "y")'])
def test_wrong_argument_counts_are_errors_not_crashes(text: str) -> None:
    # found by the fuzz property: `| where match()` raised a TypeError
    with pytest.raises(SigmaWmiError, match="arguments"):
        parse_where(text)


# ---- functions of a field compared with a literal, and `| eval` fields ----

_COMPARE = {"==": lambda a, b: a == b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=12), symbol=st.sampled_from(sorted(_COMPARE)), n=st.integers(0, 10))
@example(value="abcde\n", symbol="<=", n=5).via("review: `$` matches before a final newline")
@example(value="abcde\n", symbol="==", n=5).via("review")
def test_len_comparison_means_what_splunk_len_does(value: str, symbol: str, n: int) -> None:
    """Checked by evaluating the model on an event against Python's len (characters, as Splunk's)."""
    try:
        condition = parse_where(f"len(x) {symbol} {n}")
    except SplUnsupported:
        assert symbol == "<" and n == 0  # never true: refused rather than written as a regex
        return
    assert evaluate(condition, {"x": value}) is _COMPARE[symbol](len(value), n)
    assert evaluate(condition, {}) is False  # len(null) is null: no match


@settings(max_examples=300, deadline=None)
@given(value=st.text(alphabet="aAbB.", max_size=8), suffix=st.text(alphabet="aAbB.", min_size=1, max_size=4))
def test_substr_comparisons_are_cased_suffix_and_prefix_tests(value: str, suffix: str) -> None:
    n = len(suffix)
    ends = parse_where(f'substr(x, -{n}) == "{suffix}"')
    starts = parse_where(f'substr(x, 1, {n}) == "{suffix}"')
    assert evaluate(ends, {"x": value}) is value.endswith(suffix)
    assert evaluate(starts, {"x": value}) is value.startswith(suffix)


def test_if_compared_with_its_true_value_is_the_test() -> None:
    assert parse_where('if(match(x, "^a"), 1, 0) == 1') == parse_where('match(x, "^a")')
    assert parse_where('if(x == "a", "yes", "no") = "yes"') == eq("x", "a", True)


def test_eval_fields_stand_in_for_their_expressions() -> None:
    computed = dict(parse_eval('n = len(name), is_exe = if(substr(name, -4) == ".exe", 1, 0), '
                               'lowered = lower(name), odd = name + 1'))
    assert isinstance(computed.pop("odd"), SplError)  # kept as unreadable, not dropped
    where = parse_where("n = 5 AND is_exe = 1", computed=computed)
    search = parse_search("n=5 is_exe=1", computed=computed)
    assert where == search
    assert evaluate(where, {"name": "a.exe"}) and not evaluate(where, {"name": "ab.exe"})
    assert not evaluate(where, {"name": "A.EXE"})  # eval's == is cased
    assert parse_where('lowered == "cmd.exe"', computed=computed) == eq("name", "cmd.exe")
    # search matches caselessly, with wildcards, on lower(name) as on name itself
    assert parse_search("lowered=CMD*.exe", computed=computed) == parse_search("name=CMD*.exe")
    with pytest.raises(SplUnsupported):
        parse_search("n=abc", computed=computed)  # text against len(): no event field stands in


def test_later_eval_sees_earlier_ones() -> None:
    computed = dict(parse_eval("a = lower(x), b = if(a == \"y\", 1, 0)"))
    assert parse_where("b == 1", computed=computed) == eq("x", "y")



@pytest.mark.parametrize(("where", "same"), [
    ('x LIKE "a%"', 'like(x, "a%")'),
    ('x like "%a_b"', 'like(x, "%a_b")'),
    ('NOT x LIKE "a%" AND y = 1', 'NOT like(x, "a%") AND y = 1'),
    ('lower(x) LIKE "a%"', 'like(lower(x), "a%")'),
])
def test_the_like_operator_is_like(where: str, same: str) -> None:
    assert parse_where(where) == parse_where(same)


@pytest.mark.parametrize(("text", "network"), [
    ("src=10.0.0.0/8", "10.0.0.0/8"), ('src="192.168.1.0/24"', "192.168.1.0/24"), ("src=fe80::/10", "fe80::/10"),
])
def test_a_subnet_value_in_search_is_a_cidr_test(text: str, network: str) -> None:
    assert parse_search(text) == Match("src", Op.CIDR, (network,))
    assert parse_search(text) == parse_where(f'cidrmatch("{network}", src)')


@pytest.mark.parametrize("text", ["src=10.0.0.*/8", "src=10.0.0.300/8", "path=a/b", "src=10.0.0.1"])
def test_values_that_are_not_subnets_stay_text(text: str) -> None:
    assert parse_search(text).op is not Op.CIDR  # type: ignore[union-attr]


@pytest.mark.parametrize(("where", "expected"), [
    ('match(_raw, "Foo\\\\.exe")', string_match(None, Pattern.literal("Foo.exe"), case_sensitive=True)),
    ('match(_raw, "(?i)foo bar")', string_match(None, Pattern.literal("foo bar"))),
    ('match(_raw, "a\\\\d+")', Match(None, Op.REGEX, (Regex("a\\d+"),), case_sensitive=True)),
])
def test_match_on_the_event_text_is_a_keyword_test(where: str, expected: Match) -> None:
    assert parse_where(where, lambda name: f"mapped_{name}") == expected
    if expected.op is Op.EQUALS:  # what `CASE(...)` / a bare term reads as
        keyword = parse_search("CASE(Foo.exe)" if expected.case_sensitive else '"foo bar"')
        assert keyword == expected
