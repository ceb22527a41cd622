"""Field names escape nowhere: for every query target, a condition on any field name, a
reserved word or a string of special characters, reads back through an independent parser
(eql, luqum, tests/kql_grammar.py, our SPL reader) as one condition on exactly that field,
or the target refuses the name with UnsupportedError.

Long mode: SIGMA_WMI_LONG=1 fuzzes 100,000 names per target."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kql_grammar import parse as kql_parse
from luqum.parser import parser as lucene_parser
from luqum.tree import Phrase, SearchField, Word
from test_eql import parse as eql_parse

from sigma_wmi.backends.elastic import EqlGenerator, KqlGenerator, LuceneGenerator
from sigma_wmi.backends.splunk import SplunkEval, SplunkSearch
from sigma_wmi.errors import UnsupportedError
from sigma_wmi.model import Match, Op, Pattern, Regex
from sigma_wmi.readers.spl import parse_search, parse_where

EXAMPLES = 100_000 if os.environ.get("SIGMA_WMI_LONG") == "1" else 200
PROFILE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# Words some target reads as an operator, a literal or a special field, in several cases.
RESERVED = ["AND", "OR", "NOT", "TO", "XOR", "LIKE", "IN", "BY", "AS", "null", "true", "false", "exists",
            "_exists_", "where", "sequence", "any", "of", "in", "not", "and", "or", "like", "regex", "NULL",
            "True", "earliest", "index", "search", "eval", "default", "sample", "join", "until", "with",
            "maxspan", "runs", "by", "_index", "_id", "_source", "*", "?", "-", "+", "!"]
names = st.one_of(
    st.sampled_from(RESERVED),
    st.text(min_size=1),
    st.lists(st.one_of(st.sampled_from(RESERVED), st.sampled_from(list(' .:"\'\\=()[]{}|*?`<>!-#$\n\t'))),
             min_size=1, max_size=6).map("".join),
)
VALUE = Pattern.literal("v")


def _lucene(name: str) -> str:
    tree = lucene_parser.parse(LuceneGenerator([], lambda n: False).generate(Match(name, Op.EQUALS, (VALUE,))))
    assert isinstance(tree, SearchField), repr(tree)
    assert isinstance(tree.expr, Word | Phrase) and tree.expr.value.strip('"') == "v", repr(tree)
    return re.sub(r"\\(.)", r"\1", tree.name, flags=re.S)


def _kql(name: str) -> str:
    node = kql_parse(KqlGenerator([], lambda n: False).generate(Match(name, Op.EQUALS, (VALUE,))))
    assert node[0] == "is" and node[2] == "v", node
    field: Any = node[1]
    assert isinstance(field, str), node  # not None/True/False: an unquoted null/true/false
    return field


def _eql(name: str) -> str:
    node = eql_parse("any where " + EqlGenerator([]).generate(Match(name, Op.EQUALS, (VALUE,)))).first.query
    left = node.arguments[0] if type(node).__name__ == "FunctionCall" else node.left  # `:` is wildcard()
    assert type(left).__name__ == "Field", repr(node)
    return ".".join([left.base, *map(str, left.path)])


def _splunk_search(name: str) -> str:
    expr = parse_search(SplunkSearch([]).generate(Match(name, Op.EQUALS, (VALUE,))))
    assert isinstance(expr, Match) and expr.values == (VALUE,), expr
    return str(expr.field)


def _splunk_eval(name: str) -> str:
    expr = parse_where(SplunkEval([]).generate(Match(name, Op.REGEX, (Regex("v"),))))
    matches = [expr] if isinstance(expr, Match) else [i for i in getattr(expr, "items", ()) if isinstance(i, Match)
                                                     and i.op is Op.REGEX]
    assert len(matches) == 1, expr
    return str(matches[0].field)


READ_BACK: dict[str, Callable[[str], str]] = {
    "lucene": _lucene, "kql": _kql, "eql": _eql, "splunk-search": _splunk_search, "splunk-eval": _splunk_eval,
}


def _check(target: str, name: str) -> None:
    try:
        read = READ_BACK[target](name)
    except UnsupportedError:
        return  # refusing a name the target cannot hold is allowed; escaping it wrongly is not
    assert read == name, f"{target}: {name!r} read back as {read!r}"


@pytest.mark.parametrize("target", sorted(READ_BACK))
@pytest.mark.parametrize("name", [*RESERVED, "a b", "a:b", "process.name", "a\\", "é", "AND OR", "x=y"])
def test_reserved_and_special_names(target: str, name: str) -> None:
    _check(target, name)


@pytest.mark.parametrize("generator", [LuceneGenerator([], lambda n: False), KqlGenerator([], lambda n: False),
                                       EqlGenerator([]), SplunkSearch([]), SplunkEval([])], ids=type)
@pytest.mark.parametrize("name", ["Image", "process.executable", "CommandLine", "notes", "order"])
def test_plain_names_stay_plain(generator: Any, name: str) -> None:
    """Escaping only what needs it: common names, even ones starting with a keyword, stay bare."""
    match = Match(name, Op.REGEX, (Regex("v"),)) if isinstance(generator, SplunkEval) else \
        Match(name, Op.EQUALS, (VALUE,))
    query = generator.generate(match)
    if isinstance(generator, SplunkEval) and "." in name:  # `.` concatenates in eval
        assert f"'{name}'" in query
        return
    assert re.search(rf"(?<![\\'\"`]){re.escape(name)}(?![\\'\"`])", query), query


@PROFILE
@example("AND")
@given(names)
def test_lucene_field_names_read_back(name: str) -> None:
    _check("lucene", name)


@PROFILE
@example("null")
@given(names)
def test_kql_field_names_read_back(name: str) -> None:
    _check("kql", name)


@PROFILE
@example("exists")
@given(names)
def test_eql_field_names_read_back(name: str) -> None:
    _check("eql", name)


@PROFILE
@example("NOT")
@given(names)
def test_splunk_search_field_names_read_back(name: str) -> None:
    _check("splunk-search", name)


@PROFILE
@example("XOR")
@given(names)
def test_splunk_eval_field_names_read_back(name: str) -> None:
    _check("splunk-eval", name)
