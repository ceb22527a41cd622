"""The model's canonical forms: equivalent inputs must give equal trees."""

from __future__ import annotations

import pytest

from sigma_wmi.model import (
    And,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Wildcard,
    full_pattern,
    normalize,
    patterns_match,
    string_match,
)

M = Wildcard.MANY
ONE = Wildcard.ONE


@pytest.mark.parametrize(("parts", "op", "core"), [
    (("abc",), Op.EQUALS, ("abc",)),
    ((M, "abc", M), Op.CONTAINS, ("abc",)),
    (("abc", M), Op.STARTSWITH, ("abc",)),
    ((M, "abc"), Op.ENDSWITH, ("abc",)),
    ((M, "a", M, "b"), Op.WILDCARD, (M, "a", M, "b")),
    (("a", ONE, "b"), Op.WILDCARD, ("a", ONE, "b")),
    ((M,), Op.WILDCARD, (M,)),
    ((M, M), Op.WILDCARD, (M, M)),
    ((), Op.EQUALS, ()),
])
def test_string_match_shapes(parts: tuple[object, ...], op: Op, core: tuple[object, ...]) -> None:
    match = string_match("f", Pattern(parts))  # type: ignore[arg-type]
    assert match.op is op and match.values == (Pattern(core),)  # type: ignore[arg-type]
    assert full_pattern(match, Pattern(core)) == Pattern(parts)  # type: ignore[arg-type]


def test_pattern_merges_adjacent_text() -> None:
    assert Pattern(("a", "", "b", M, "c")) == Pattern(("ab", M, "c"))


def test_patterns_group_by_operator() -> None:
    expr = patterns_match("f", [Pattern((M, "a")), Pattern((M, "b")), Pattern(("c",))])
    assert expr == Or((Match("f", Op.ENDSWITH, (Pattern.literal("a"), Pattern.literal("b"))),
                       Match("f", Op.EQUALS, (Pattern.literal("c"),))))


def test_normalize_flattens_merges_and_drops_double_negation() -> None:
    a = Match("f", Op.EQUALS, (Pattern.literal("a"),))
    b = Match("f", Op.EQUALS, (Pattern.literal("b"),))
    c = Match("g", Op.EQUALS, (1,))
    tree = And((Or((a, Or((b, a)))), Not(Not(c))))
    assert normalize(tree) == And((Match("f", Op.EQUALS, (Pattern.literal("a"), Pattern.literal("b"))), c))


def test_normalize_keeps_int_and_bool_apart() -> None:
    tree = Or((Match("f", Op.EQUALS, (1,)), Match("f", Op.EQUALS, (True,))))
    merged = normalize(tree)
    assert isinstance(merged, Match) and merged.values == (1, True)


def test_exists_beside_a_test_on_the_same_field_is_implied() -> None:
    test = Match("f", Op.CONTAINS, (Pattern.literal("x"),))
    assert normalize(Not(And((Match("f", Op.EXISTS), test)))) == Not(test)
    # but not beside a negated test: `f != x` needs f to exist
    differs = And((Match("f", Op.EXISTS), Not(test)))
    assert normalize(differs) == differs
