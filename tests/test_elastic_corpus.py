"""SigmaHQ corpus on every Elastic target and profile: every output parses with its
independent parser, names only fields the schema of the rule's index has (read back from
the parsed query, not from the backend), and every rule that does not convert fails for a
listed reason.

Run with `-s` to see the counts. Reader failures are counted separately (not ours).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import eql
import pytest
from conftest import shared_path
from eql.parser import skip_optimizations
from kql_grammar import parse as parse_kql
from luqum import tree as lt
from luqum.parser import parser as luqum_parser
from test_eql import parse as parse_eql

from sigma_wmi.api import load_all
from sigma_wmi.backends.elastic_profile import field_info, place, profiles
from sigma_wmi.errors import SigmaWmiError, UnsupportedError
from sigma_wmi.model import Rule
from sigma_wmi.registry import backend_class
from sigma_wmi.schema import Schema

# Why a rule may not convert: its events are not in the profile, it names a field the
# index lacks, a value the field cannot hold, or something the languages cannot say.
EXPECTED_CODES = frozenset({"no-index", "field-not-in-schema", "literal-type", "value-not-allowed"})
EXPECTED_UNSUPPORTED = re.compile(
    r"operator 'fieldref' is not supported"  # no field-to-field comparison in EQL, KQL or Lucene
    r"|regular expression /.*/: ")  # regex constructs Lucene's regex syntax lacks (\b, lookaround, inner ^)


def _eql_fields(text: str) -> Iterator[str]:
    with skip_optimizations:  # same grammar and checks, 2.5x faster
        query = parse_eql(text)
    for node in query:
        if isinstance(node, eql.ast.Field):
            yield ".".join([node.base, *map(str, node.path)])


def _kql_fields(text: str) -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        kind = node[0]
        if kind in ("or", "and"):
            for child in node[1]:
                yield from walk(child)
        elif kind == "not":
            yield from walk(node[1])
        elif kind == "nested":
            yield node[1]
            yield from walk(node[2])
        elif node[1] is not None:  # is / range; None is a search over every field
            yield node[1]
    yield from walk(parse_kql(text))


def _lucene_fields(text: str) -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, lt.SearchField):
            if node.name == "_exists_":
                yield str(node.expr)
            else:
                yield node.name
        for child in node.children:
            yield from walk(child)
    for name in walk(luqum_parser.parse(text)):
        yield re.sub(r"\\(.)", r"\1", name)


FIELDS = {"eql": _eql_fields, "kql": _kql_fields, "lucene": _lucene_fields}


def _absent(schema: Schema, name: str) -> bool:
    """Is the field missing from the schema? `x.caseless` needs x with a caseless sub-field."""
    if name.endswith(".caseless"):
        info = field_info(schema, name[:-len(".caseless")])
        return info is None or not info.caseless
    return field_info(schema, name) is None


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Rule], list[SigmaWmiError]]:
    return load_all([shared_path("corpora", "sigmahq", "rules")])


@pytest.mark.parametrize("profile", profiles())
@pytest.mark.parametrize("target", ["eql", "kql", "lucene"])
def test_corpus_queries_parse_and_name_only_schema_fields(
        corpus: tuple[list[Rule], list[SigmaWmiError]], target: str, profile: str) -> None:
    rules, read_errors = corpus
    assert len(rules) >= 3000
    backend = backend_class(target)(profile=profile)
    started = time.perf_counter()
    failures: Counter[str] = Counter()
    unexpected: list[str] = []
    findings: list[str] = []
    converted = 0
    for rule in rules:
        try:
            text = backend.convert(rule).text
        except UnsupportedError as err:
            failures[err.code] += 1
            if err.code not in EXPECTED_CODES and not EXPECTED_UNSUPPORTED.search(err.message):
                unexpected.append(f"{rule.origin.path}: {err}")
            continue
        converted += 1
        schema = place(rule, profile).schema
        try:
            absent = sorted({name for name in FIELDS[target](text) if _absent(schema, name)})
        except Exception as err:  # any parser complaint is a finding
            findings.append(f"{rule.origin.path}: {type(err).__name__}: {str(err)[:200]}\n  {text[:300]}")
            continue
        if absent:
            findings.append(f"{rule.origin.path}: {schema.name} lacks {absent}\n  {text[:300]}")
    print(f"\n{target}/{profile}: {converted}/{len(rules)} converted in {time.perf_counter() - started:.1f}s, "
          f"{len(read_errors)} reader failures (not counted), failed: {dict(failures)}")
    assert not findings, "\n".join(findings[:10])
    assert not unexpected, unexpected[:10]
    assert converted >= 1900  # every profile holds most Windows rules' events
