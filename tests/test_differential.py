"""Differential check: for every pack rule and every event, three independent routes agree.

1. our evaluator on the canonical event (the reference semantics);
2. the compiled EQL, parsed and run by the `eql` package's engine on the event mapped to ECS;
3. the compiled Splunk search, read back by our SPL reader and evaluated on the canonical event
   (process_creation rules compile once per raw profile, Sysmon and Security 4688, and the
   Splunk answer is either search hitting).

A disagreement is a bug in one of the three; the assertion message names rule and events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, RULES, SHARED

from sigma_wmi import load
from sigma_wmi.catalog import catalog
from sigma_wmi.errors import UnsupportedError
from sigma_wmi.evaluate import compile_expr, compile_rule
from sigma_wmi.events import canonical_event, read_events, to_ecs
from sigma_wmi.model import LogSource, Rule

eql = pytest.importorskip("eql")

PACK = sorted((RULES / "sigma").glob("*.yml"))
LOCAL = sorted((REPO / "tests" / "data" / "events").glob("*.jsonl"))


@dataclass(frozen=True)
class Sample:
    name: str  # file:line, for messages
    raw: dict[str, Any]
    canonical: dict[str, Any]
    ecs: dict[str, Any]


def _samples(paths: list[Path]) -> list[Sample]:
    out = []
    for path in paths:
        for raw in read_events(path):
            out.append(Sample(f"{path.name}:{raw['@line']}", raw, canonical_event(raw), to_ecs(raw)))
    return out


_CACHE: dict[str, list[Sample]] = {}


def local_samples() -> list[Sample]:
    if "local" not in _CACHE:
        _CACHE["local"] = _samples(LOCAL)
    return _CACHE["local"]


def shared_samples() -> list[Sample]:
    root = SHARED / "data"
    if not root.is_dir():
        pytest.skip(f"shared material not available: {root}")
    if "shared" not in _CACHE:
        _CACHE["shared"] = _samples(sorted((root / "events").glob("*.jsonl")) + sorted((root / "evtx").glob("*.evtx")))
    return _CACHE["shared"]


def pack_rules() -> list[Rule]:
    return [rule for path in PACK for rule in load(path)]


def _compile(rule: Rule, target: str, **options: Any) -> str:
    """Compiled text for a target; every target here is built in, so failing to load is a failure."""
    from sigma_wmi import convert

    return convert(rule, target, **options)


# ---- EQL through the eql engine ----

def _single_valued(doc: Any) -> Any:
    """The Python eql engine compares a list as one value, while Elasticsearch matches a
    multi-valued field when any value matches. Lists (only classic PowerShell `Data` in our
    events) are joined with line breaks, which agrees with any-value semantics for the
    `contains` conditions the pack uses on them."""
    if isinstance(doc, dict):
        return {k: _single_valued(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return "\n".join(str(v) for v in doc)
    return doc


def eql_hits(query_text: str, samples: list[Sample]) -> set[int]:
    with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions:
        query = eql.parse_query(query_text)
    engine = eql.PythonEngine()
    found: set[int] = set()
    engine.add_query(query)

    def collect(output: Any) -> None:  # an Event, or an AnalyticOutput wrapping events
        for event in getattr(output, "events", None) or [output]:
            found.add(event.data["sigma_wmi_index"])

    engine.add_output_hook(collect)
    events = []
    for index, sample in enumerate(samples):
        data = dict(_single_valued(sample.ecs), sigma_wmi_index=index)
        category = (sample.ecs.get("event") or {}).get("category") or "unknown"
        events.append(eql.Event(category, 0, data))
    engine.stream_events(events)
    return found


def _eql(rule: Rule) -> str:
    """EQL on Elastic Defend (ecs); Defend records no PowerShell or WMI logs, so those rules
    compile for winlogbeat, whose names agree with `to_ecs` for the fields they use."""
    try:
        return _compile(rule, "eql")
    except UnsupportedError as err:
        if err.code != "no-index":
            raise
        return _compile(rule, "eql", profile="winlogbeat")


# ---- Splunk through our SPL reader ----

def splunk_predicates(rule: Rule) -> tuple[Callable[[dict[str, Any]], bool], set[str]]:
    """The Splunk answer as a predicate, and the channels it cannot speak for: a profile
    the backend refuses (UnsupportedError, e.g. OriginalFileName on Security 4688) leaves
    that channel's events out of the comparison."""
    from sigma_wmi.readers.spl import parse_splunk_search

    cat = catalog()
    info = cat.logsource(rule.logsource)
    if not (info.security_event_ids and info.sysmon_event_ids):
        profile = info.raw_profile or "sysmon"
        only = compile_expr(parse_splunk_search(_compile(rule, "splunk"), profile))
        return only, set()
    predicates = []
    uncovered: set[str] = set()
    for profile, service in (("sysmon", "sysmon"), ("security", "security")):
        try:
            text = _compile(rule, "splunk", profile=profile)
        except UnsupportedError:
            channel = cat.logsource(LogSource(product="windows", service=service)).channel
            uncovered.add(str(channel).lower())
            continue
        predicates.append(compile_expr(parse_splunk_search(text, profile)))
    return (lambda event: any(p(event) for p in predicates)), uncovered


def ours(rule: Rule, samples: list[Sample]) -> set[int]:
    predicate = compile_rule(rule)
    return {i for i, s in enumerate(samples) if predicate(s.canonical)}


def describe(samples: list[Sample], indexes: set[int]) -> list[str]:
    return [samples[i].name for i in sorted(indexes)][:10]


def check(rule: Rule, samples: list[Sample], route: str) -> None:
    expected = ours(rule, samples)
    if route == "eql":
        got = eql_hits(_eql(rule), samples)
    else:
        predicate, uncovered = splunk_predicates(rule)
        covered = {i for i, s in enumerate(samples) if str(s.canonical.get("channel", "")).lower() not in uncovered}
        got = {i for i in covered if predicate(samples[i].canonical)}
        expected &= covered
    assert got == expected, (
        f"{rule.origin.path}: {route} disagrees with the evaluator; "
        f"only {route}: {describe(samples, got - expected)}; only evaluator: {describe(samples, expected - got)}")


RULE_IDS = [Path(p).stem for p in PACK]


@pytest.mark.parametrize("route", ["eql", "splunk"])
@pytest.mark.parametrize("rule", pack_rules(), ids=RULE_IDS)
def test_synthetic_events_agree(rule: Rule, route: str) -> None:
    assert ours(rule, local_samples()), "the synthetic events give every rule something to agree on"
    check(rule, local_samples(), route)


@pytest.mark.parametrize("route", ["eql", "splunk"])
@pytest.mark.parametrize("rule", pack_rules(), ids=RULE_IDS)
def test_shared_events_agree(rule: Rule, route: str) -> None:
    check(rule, shared_samples(), route)


NOT_ON_MISSING = r"""
title: not on a missing field
logsource: {product: windows, category: process_creation}
detection:
    sel: {Image|endswith: '\x.exe'}
    filter: {ParentCommandLine|contains: 'y'}
    condition: sel and not filter
"""


def test_not_on_a_missing_field_agrees() -> None:
    """Security 4688 events have no ParentCommandLine; `not filter` must still hold for them."""
    from sigma_wmi.readers import read_text_rules

    rule = read_text_rules(NOT_ON_MISSING, "not_on_missing.yml")[0]
    raw = {"EventID": 4688, "Channel": "Security", "NewProcessName": r"C:\x.exe", "@line": 1}
    sample = Sample("memory:1", raw, canonical_event(raw), to_ecs(raw))
    assert ours(rule, [sample]) == {0}
    check(rule, [sample], "splunk")
    check(rule, [sample], "eql")
