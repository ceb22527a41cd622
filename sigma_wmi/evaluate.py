"""The model's meaning, executed: does a rule match a canonical event?

This is the reference semantics every backend is checked against:
- strings compare case-insensitively unless the match is case-sensitive;
- `*` and `?` are wildcards (they also span line breaks); the model holds no escapes;
- a field with several values (a list) matches when any value does;
- a missing field matches nothing, so `not field=x` holds for an event without it;
- `null` holds when the field is missing or empty, `exists` when it is present;
- numbers match numbers and their decimal text; lt/gt compare numbers only;
- regexes search (unanchored) with their own flags (i, m, s); Python's `re` syntax;
- a keyword (field None) is searched as a substring of every event value
  except "@" provenance keys.

`compile_expr` turns a tree into nested closures once (precompiled regexes, lower-
cased literal sets) so a rule can be run over many events fast.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    And,
    Expr,
    LogSource,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Regex,
    Rule,
    Temporal,
    Threshold,
    Wildcard,
    full_pattern,
    matches,
    pattern_regex,
)
from sigma_wmi.readers.yamlsource import yaml_lines

Event = Mapping[str, Any]
Predicate = Callable[[Event], bool]
_StrTest = Callable[[str], bool]

_COMPARE: dict[Op, Callable[[float, float], bool]] = {
    Op.LT: lambda a, b: a < b,
    Op.LTE: lambda a, b: a <= b,
    Op.GT: lambda a, b: a > b,
    Op.GTE: lambda a, b: a >= b,
    Op.NEQ: lambda a, b: a != b,
}


def _never(_: Event) -> bool:
    return False


def _always(_: Event) -> bool:
    return True


# ---------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------

def compile_expr(expr: Expr) -> Predicate:
    """A predicate over canonical events for an expression tree (cached per tree)."""
    # The cache key carries the value types: True == 1 == 1.0 in Python, not in an event.
    return _compile_cached(expr, tuple(type(v) for m in matches(expr) for v in m.values))


@functools.lru_cache(maxsize=4096)
def _compile_cached(expr: Expr, _types: tuple[type, ...]) -> Predicate:
    if isinstance(expr, Match):
        return _compile_match(expr)
    if isinstance(expr, Not):
        inner = compile_expr(expr.item)
        return lambda event: not inner(event)
    if isinstance(expr, (And, Or)):
        items = tuple(compile_expr(item) for item in expr.items)
        return _all(items) if isinstance(expr, And) else _any(items)
    raise SigmaWmiError(f"cannot evaluate node {type(expr).__name__}", code="bad-model")


def _all(items: tuple[Predicate, ...]) -> Predicate:
    if not items:
        return _always
    if len(items) == 2:  # the common selection-of-two case without a loop
        first, second = items
        return lambda event: first(event) and second(event)

    def run(event: Event) -> bool:
        for item in items:  # noqa: SIM110 - a plain loop is ~2x faster than all(generator)
            if not item(event):
                return False
        return True
    return run


def _any(items: tuple[Predicate, ...]) -> Predicate:
    if not items:
        return _never
    if len(items) == 2:
        first, second = items
        return lambda event: first(event) or second(event)

    def run(event: Event) -> bool:
        for item in items:  # noqa: SIM110 - a plain loop is ~2x faster than any(generator)
            if item(event):
                return True
        return False
    return run


def evaluate(expr: Expr, event: Event) -> bool:
    return compile_expr(expr)(event)


# ---------------------------------------------------------------------------
# Rules: the log source is part of the meaning
# ---------------------------------------------------------------------------

def logsource_predicate(logsource: LogSource, cat: Catalog | None = None) -> Predicate:
    """Which events a Sigma log source covers, from the catalog's log-source table:
    Sysmon/Security event ids of a category, or a service's channel (and event ids).
    An event without a channel is judged by its event id alone. A log source the
    table does not constrain covers every event. `cat`: a catalog with an environment
    mapping (its new log sources), else the packaged one."""
    cat = cat or catalog()
    info = cat.logsource(logsource)
    sysmon = cat.logsource(LogSource(product="windows", service="sysmon")).channel or ""
    security = cat.logsource(LogSource(product="windows", service="security")).channel or ""
    clauses: list[tuple[str, frozenset[int] | None]] = []
    if info.sysmon_event_ids:
        clauses.append((sysmon.lower(), frozenset(info.sysmon_event_ids)))
    if info.security_event_ids:
        clauses.append((security.lower(), frozenset(info.security_event_ids)))
    if info.channel:
        clauses.append((info.channel.lower(), frozenset(info.event_ids) or None))
    if not clauses:
        return _always
    any_ids = frozenset().union(*(ids for _, ids in clauses if ids is not None))
    any_channel = any(ids is None for _, ids in clauses)
    table = dict(clauses)

    def run(event: Event) -> bool:
        channel = event.get("channel")
        event_id = event.get("event_id")
        if isinstance(channel, str):
            key = channel.lower()
            if key not in table:
                return False
            ids = table[key]
            return ids is None or event_id in ids
        return any_channel or event_id in any_ids
    return run


def compile_rule(rule: Rule, with_logsource: bool = True, cat: Catalog | None = None) -> Predicate:
    """The rule as a predicate over canonical events: log source and detection. With a
    mapped catalog, the rule is first mapped as the backends map it (`Catalog.map_rule`),
    so it names the fields that events of the mapped environment resolve to. A regex the
    evaluator refuses is a `SigmaWmiError` at the rule's line that holds it."""
    if rule.steps:  # a correlation of several rules: an event any selects, each with its own log source
        steps = [compile_rule(step.rule, with_logsource, cat) for step in rule.steps]
        return lambda event: any(step(event) for step in steps)
    if cat is not None:
        rule = cat.map_rule(rule)
    try:
        detection = compile_expr(rule.detection)
    except RegexError as err:
        line = _line_holding(rule.source_text, err.pattern)
        err.origin = rule.origin.at(line or rule.origin.line)
        raise
    if not with_logsource:
        return detection
    source = logsource_predicate(rule.logsource, cat)
    if source is _always:
        return detection
    return lambda event: source(event) and detection(event)


def _line_holding(text: str, needle: str) -> int | None:
    """1-based line of `text` (YAML line breaks) on which `needle` first appears."""
    return next((number for number, line in enumerate(yaml_lines(text), 1) if needle and needle in line), None)


def hits(rule: Rule, events: Iterable[Event]) -> list[Event]:
    """Events the rule's conditions select (a threshold rule counts these; see `alerting`)."""
    predicate = compile_rule(rule)
    return [event for event in events if predicate(event)]


def alerting(rule: Rule, events: Iterable[Event], predicate: Predicate | None = None,
             cat: Catalog | None = None) -> list[Event]:
    """Events the rule alerts on: the selected events, or for a rule with a threshold the
    selected events of every group that meets it. As in Splunk's `stats ... by`, an event
    missing a group-by field is in no group and a multi-valued one is in a group per value; with a
    time window, events are bucketed by Sysmon's `UtcTime`, else `TimeCreated`, else `@timestamp`
    (a time without a zone is taken as UTC), and an event without a time is in none. A temporal
    correlation: see `temporal_alerting` (`cat`: the mapped catalog its steps are read through)."""
    if rule.temporal is not None:
        return temporal_alerting(rule.temporal, events, cat)
    aggregation = rule.aggregation
    if aggregation is not None and aggregation.steps:
        selected, views = _step_views(aggregation, events, cat)
    else:
        predicate = predicate or compile_rule(rule)
        selected = [event for event in events if predicate(event)]
        views = selected
    if aggregation is None:
        return selected
    groups: dict[tuple[Any, ...], list[Event]] = {}
    originals = {id(view): event for view, event in zip(views, selected, strict=True)}
    for event in views:
        values = [_group_values(event.get(name)) for name in aggregation.group_by]
        if aggregation.window:
            seconds = event_time(event)
            values.append([int(seconds) // aggregation.window] if seconds is not None else [])
        for key in itertools.product(*values):  # no key when a value is missing
            groups.setdefault(key, []).append(event)
    alerts: set[int] = set()  # an event in several alerting groups is one alert event
    for members in groups.values():
        if all(_threshold_holds(t, members) for t in aggregation.thresholds):
            alerts.update(id(originals[id(view)]) for view in members)
    return [event for event in selected if id(event) in alerts]


def _step_views(aggregation: Aggregation, events: Iterable[Event], cat: Catalog | None
                ) -> tuple[list[Event], list[Event]]:
    """The events any step selects, and for each a view naming its group-by and aggregated fields
    as the correlation does, read through the first step that selects it."""
    predicates = [compile_rule(step.rule, cat=cat) for step in aggregation.steps]
    counted = {t.field for t in aggregation.thresholds if t.field}
    selected: list[Event] = []
    views: list[Event] = []
    for event in events:
        step = next((s for s, p in zip(aggregation.steps, predicates, strict=True) if p(event)), None)
        if step is None:
            continue
        view = {**event, **{name: event.get(field) for name, field in zip(aggregation.group_by, step.group_fields,
                                                                            strict=True)}}
        view.update({name: event.get(step.value_field) if step.value_field else None for name in counted})
        selected.append(event)
        views.append(view)
    return selected, views


def event_time(event: Event) -> float | None:
    """The event's time in seconds since the epoch: Sysmon's `UtcTime`, else `TimeCreated`,
    else `@timestamp` (a time without a zone is UTC); None without one."""
    value = event.get("UtcTime") or event.get("TimeCreated") or event.get("@timestamp")
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def temporal_alerting(temporal: Temporal, events: Iterable[Event], cat: Catalog | None = None) -> list[Event]:
    """Events of every alerting group of a temporal correlation, each once, in input order.

    Events are taken in time order (ties in input order); an event without a time, or missing
    a group-by field, is in no group. Per group, `temporal` alerts on each event that completes,
    within the window, `min_steps` distinct steps seen in the window before it (a sliding
    window, as Splunk's `streamstats time_window=`); `temporal_ordered` on each event of the last
    step that ends a chain of different events, one per step, in order (each at or after the previous one),
    whose first event is at most the window earlier (as EQL's `sequence ... with maxspan=`). The
    alert holds the events of that window or chain."""
    predicates = [compile_rule(step.rule, cat=cat) for step in temporal.steps]
    timeline: list[tuple[float, int, int, tuple[Any, ...], Event]] = []  # time, position, step, group, event
    for position, event in enumerate(events):
        moment = event_time(event)
        if moment is None:
            continue
        for index, (step, predicate) in enumerate(zip(temporal.steps, predicates, strict=True)):
            if predicate(event):
                values = [_group_values(event.get(name)) for name in step.group_fields]
                for key in itertools.product(*values):  # no key when a value is missing
                    timeline.append((moment, position, index, key, event))
    # one event selected by several steps fills the later step first, so it can complete a chain
    # that earlier events began but never stands for two steps of one chain (as EQL's sequences)
    timeline.sort(key=lambda item: (item[0], item[1], -item[2]))
    by_group: dict[tuple[Any, ...], list[tuple[float, int, Event]]] = {}
    for moment, _, index, key, event in timeline:
        by_group.setdefault(key, []).append((moment, index, event))
    alerts: dict[int, Event] = {}
    for members in by_group.values():
        found = _ordered_chains(members, temporal) if temporal.ordered else _windows(members, temporal)
        for chain in found:
            alerts.update((id(event), event) for event in chain)
    ordered = sorted(((moment, position, event) for moment, position, _, _, event in timeline
                      if id(event) in alerts), key=lambda item: (item[0], item[1]))
    return list({id(event): event for _, _, event in ordered}.values())


def _windows(members: list[tuple[float, int, Event]], temporal: Temporal) -> list[list[Event]]:
    """The events of each window (ending at an event) holding `min_steps` distinct steps; a
    sliding window, linear in the group's events (the alerting events are gathered once)."""
    start = 0
    counts: dict[int, int] = {}
    alerting = [False] * len(members)
    reach = -1  # members[:reach + 1] already marked
    for end, (moment, index, _) in enumerate(members):
        counts[index] = counts.get(index, 0) + 1
        while moment - members[start][0] > temporal.window:
            gone = members[start][1]
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
            start += 1
        if len(counts) >= temporal.min_steps:
            for i in range(max(start, reach + 1), end + 1):
                alerting[i] = True
            reach = end
    return [[event for (_, _, event), hit in zip(members, alerting, strict=True) if hit]]


def _ordered_chains(members: list[tuple[float, int, Event]], temporal: Temporal) -> list[list[Event]]:
    """Each in-order chain of one event per step within the window, keeping for every step the
    chain with the latest start (it has the most room left)."""
    best: list[list[tuple[float, Event]] | None] = [None] * len(temporal.steps)
    found = []
    for moment, index, event in members:
        if index == 0:
            chain: list[tuple[float, Event]] | None = [(moment, event)]
        else:
            before = best[index - 1]
            chain = [*before, (moment, event)] if before and before[-1][1] is not event \
                and moment - before[0][0] <= temporal.window else None
        if chain is None:
            continue
        if index == len(temporal.steps) - 1:
            found.append([e for _, e in chain])
        else:
            current = best[index]
            if current is None or chain[0][0] >= current[0][0]:
                best[index] = chain
    return found


def _group_values(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    return list(dict.fromkeys(v for v in items if v is not None and v != ""))


def _threshold_holds(threshold: Threshold, members: list[Event]) -> bool:
    if threshold.aggregate is Aggregate.COUNT:
        amount: float = len(members)
    elif threshold.aggregate is Aggregate.DISTINCT_COUNT:
        # distinct values, counted as they are grouped: each value of a list, no empty ones
        amount = len({v for event in members for v in _group_values(event.get(threshold.field or ""))})
    else:
        value = _value_aggregate(threshold, [n for event in members
                                             for n in _numbers(event.get(threshold.field or ""))])
        if value is None:  # no numeric value in the group: Splunk's aggregate is null, the test false
            return False
        amount = value
    if threshold.op is Op.EQUALS:
        return amount == threshold.value
    return _COMPARE[threshold.op](amount, threshold.value)


def _numbers(value: Any) -> list[float]:
    """The numeric values of a field (numbers, and text that reads as one), as Splunk's
    sum/avg/perc take them; anything else is skipped."""
    found = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, bool) or item is None:
            continue
        try:
            found.append(float(item))
        except (TypeError, ValueError):
            continue
    return found


def _value_aggregate(threshold: Threshold, values: list[float]) -> float | None:
    if not values:
        return None
    if threshold.aggregate is Aggregate.SUM:
        return sum(values)
    if threshold.aggregate is Aggregate.AVERAGE:
        return sum(values) / len(values)
    ordered = sorted(values)
    share = 50 if threshold.aggregate is Aggregate.MEDIAN else threshold.percentile or 50
    # the nearest-rank percentile (Splunk's perc<n> interpolates only for large groups)
    rank = max(1, -(-share * len(ordered) // 100))
    return ordered[int(rank) - 1]


# ---------------------------------------------------------------------------
# Matches
# ---------------------------------------------------------------------------

def _compile_match(match: Match) -> Predicate:
    op = match.op
    if match.field is None:
        return _keyword(match)
    field = match.field
    if op is Op.EXISTS:
        return lambda event: event.get(field) is not None
    if op is Op.NULL:
        return lambda event: _is_empty(event.get(field))
    if op is Op.FIELDREF:
        return _fieldref(field, match)
    if op is Op.PLACEHOLDER:
        raise SigmaWmiError(f"placeholder %{match.values[0]}% has no values to evaluate (give them with "
                            "--placeholders FILE)", code="unresolved-placeholder")
    value_test = _value_test(match)

    def run(event: Event) -> bool:
        value = event.get(field)
        if value is None:
            return False
        return value_test(value)
    return run


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _value_test(match: Match) -> Callable[[Any], bool]:
    """A test of one field value (str, number, bool or a list of them)."""
    op = match.op
    if op is Op.REGEX:
        scalar = _regex_test(match)
    elif op is Op.CIDR:
        scalar = _cidr_test(match)
    elif op in _COMPARE:
        scalar = _compare_test(match)
    else:
        scalar = _equality_test(match)

    def test(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return any(item is not None and scalar(item) for item in value)
        return scalar(value)
    return test


def _equality_test(match: Match, keyword: bool = False) -> Callable[[Any], bool]:
    """String operators and literal numbers/booleans, OR across the match's values."""
    fold = not match.case_sensitive
    patterns: list[Pattern] = []
    numbers: set[float] = set()
    for value in match.values:
        if isinstance(value, Pattern):
            whole = full_pattern(match, value)
            patterns.append(Pattern((Wildcard.MANY, *whole.parts, Wildcard.MANY)) if keyword else whole)
        elif isinstance(value, bool):
            text = "true" if value else "false"
            patterns.append(Pattern((Wildcard.MANY, text, Wildcard.MANY)) if keyword else Pattern.literal(text))
        elif isinstance(value, (int, float)):
            if keyword:  # a keyword is text anywhere in the event, numbers too
                patterns.append(Pattern((Wildcard.MANY, _number_text(value), Wildcard.MANY)))
                continue
            numbers.add(float(value))
            patterns.append(Pattern.literal(_number_text(value)))
        elif isinstance(value, str):
            patterns.append(Pattern.literal(value))
        else:
            raise SigmaWmiError(f"cannot compare with {type(value).__name__} for {match.op.value}",
                                code="bad-model")
    text_test = _pattern_test(patterns, fold)

    def test(value: Any) -> bool:
        if isinstance(value, str):
            if text_test(value.lower() if fold else value):
                return True
            return bool(numbers) and _as_number(value) in numbers
        if isinstance(value, bool):
            return text_test("true" if value else "false")
        if isinstance(value, (int, float)):
            return float(value) in numbers or text_test(_number_text(value))
        return False
    return test


def _number_text(value: int | float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _as_number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _pattern_test(patterns: list[Pattern], fold: bool) -> _StrTest:
    """One test for OR-ed wildcard patterns, sorted into exact/prefix/suffix/substring
    lookups (C-speed str methods) and one regex for whatever else remains."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    needles: list[str] = []
    others: list[str] = []
    match_all = False
    for pattern in patterns:
        parts = [p.lower() if fold and isinstance(p, str) else p for p in pattern.parts]
        kind = _shape(parts)
        if kind == "all":
            match_all = True
        elif kind == "exact":
            exact.add(parts[0] if parts else "")  # type: ignore[arg-type]
        elif kind == "prefix":
            prefixes.append(parts[0])  # type: ignore[arg-type]
        elif kind == "suffix":
            suffixes.append(parts[1])  # type: ignore[arg-type]
        elif kind == "contains":
            needles.append(parts[1])  # type: ignore[arg-type]
        else:
            others.append(pattern_regex(Pattern(tuple(parts))))
    if match_all:
        return lambda text: True
    tests: list[_StrTest] = []
    if exact:
        frozen = frozenset(exact)
        tests.append(lambda text: text in frozen)
    if prefixes:
        starts = tuple(prefixes)
        tests.append(lambda text: text.startswith(starts))
    if suffixes:
        ends = tuple(suffixes)
        tests.append(lambda text: text.endswith(ends))
    if len(needles) == 1:
        needle = needles[0]
        tests.append(lambda text: needle in text)
    elif needles:
        found = re.compile("|".join(re.escape(n) for n in needles)).search
        tests.append(lambda text: found(text) is not None)
    if others:
        tests.append(_wildcard_fullmatch(others))
    if not tests:
        return lambda text: False
    if len(tests) == 1:
        return tests[0]
    return lambda text: any(t(text) for t in tests)


def _shape(parts: list[Any]) -> str:
    """exact, prefix, suffix, contains, all (just `*`), or other, for a pattern's parts."""
    many = Wildcard.MANY
    if all(p is many for p in parts) and parts:
        return "all"
    if not any(isinstance(p, Wildcard) for p in parts):
        return "exact"
    if len(parts) == 2 and isinstance(parts[0], str) and parts[1] is many:
        return "prefix"
    if len(parts) == 2 and parts[0] is many and isinstance(parts[1], str):
        return "suffix"
    if len(parts) == 3 and parts[0] is many and isinstance(parts[1], str) and parts[2] is many:
        return "contains"
    return "other"


def _regex_test(match: Match) -> Callable[[Any], bool]:
    searches = []
    for value in match.values:
        if not isinstance(value, Regex):
            raise SigmaWmiError(f"regex match with a non-regex value {value!r}", code="bad-model")
        searches.append(_linear_search(value))

    def test(value: Any) -> bool:
        text = value if isinstance(value, str) else _text_of(value)
        return any(search(text) for search in searches)
    return test


class RegexError(SigmaWmiError):
    """A rule's regular expression the evaluator cannot run; `pattern` locates it in the rule."""

    def __init__(self, message: str, pattern: str, code: str) -> None:
        super().__init__(message, code=code)
        self.pattern = pattern


def _linear_search(regex: Regex) -> Callable[[str], bool]:
    """A search in time linear in the text (RE2: no backtracking), so `(a+)+$` over a long
    event value returns at once. Sigma regexes are PCRE; what RE2 cannot run in linear time
    (backreferences, lookarounds, possessive quantifiers, verbose mode) is refused, never run
    with a backtracking engine on untrusted events."""
    unsupported = set(regex.flags) - set(_RE2_FLAGS) - {"x"}
    if unsupported:
        raise RegexError(f"regex flag(s) {', '.join(sorted(unsupported))} cannot be evaluated", regex.pattern,
                         "regex-unsupported")
    inline = "".join(_RE2_FLAGS[f] for f in sorted(regex.flags) if f in _RE2_FLAGS)
    body = _without_verbose_layout(regex.pattern) if "x" in regex.flags else regex.pattern
    try:
        compiled = re2.compile(f"(?{inline}){body}" if inline else body, _re2_options())
    except re2.error as err:
        detail = _re2_detail(err)
        shown = _shown(regex.pattern)
        try:
            re.compile(regex.pattern)
        except re.error:
            raise RegexError(f"invalid regular expression {shown}: {detail}", regex.pattern, "bad-regex") from None
        if "too large" in detail:
            raise RegexError(f"regular expression {shown} is too large for the linear-time engine ({detail})",
                             regex.pattern, "regex-too-large") from None
        raise RegexError(f"regular expression {shown} needs a backtracking engine ({detail}); "
                         "the evaluator only runs linear-time regexes", regex.pattern, "regex-unsupported") from None
    search = compiled.search
    return lambda text: search(text) is not None


# Sigma's regex flags as RE2 inline flags; RE2 has no verbose (x) mode: see below.
_RE2_FLAGS = {"i": "i", "m": "m", "s": "s"}


def _without_verbose_layout(pattern: str) -> str:
    """A verbose-mode (x) pattern without its layout: whitespace and `#` comments outside
    character classes dropped, escapes kept as written (RE2 has no verbose mode)."""
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if in_class:
            # a `]` first in a class (`[]a]`, `[^]a]`) is a literal, not the end
            in_class = char != "]" or out[-1] == "[" or (out[-1] == "^" and out[-2] == "[")
            out.append(char)
        elif char == "[":
            in_class = True
            out.append(char)
        elif char == "#":
            end = pattern.find("\n", index)
            index = len(pattern) if end < 0 else end
            continue
        elif not char.isspace():
            out.append(char)
        index += 1
    return "".join(out)


@functools.cache
def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is our error, not a line on stderr
    return options


def _wildcard_fullmatch(regexes: list[str]) -> Callable[[str], bool]:
    """Full match of OR-ed wildcard patterns (already regex text) in linear time. Compiled in
    chunks: RE2 bounds each program's memory, and a union of thousands of patterns exceeds it."""
    options = re2.Options()
    options.log_errors = False
    options.dot_nl = True  # a wildcard matches any character, line breaks included
    matchers = []
    for start in range(0, len(regexes), _UNION_CHUNK):
        union = "|".join(f"(?:{o})" for o in regexes[start:start + _UNION_CHUNK])
        try:
            matchers.append(re2.compile(union, options).fullmatch)
        except re2.error as err:
            raise RegexError(f"wildcard patterns too large for the linear-time engine ({_re2_detail(err)})", "",
                             "regex-too-large") from None
    return lambda text: any(full(text) is not None for full in matchers)


_UNION_CHUNK = 256  # wildcard patterns per RE2 program


def _re2_detail(err: Exception) -> str:
    detail = err.args[0] if err.args else err
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def _shown(pattern: str) -> str:
    """A pattern for a one-line message: quoted, escaped, at most about 60 characters."""
    return repr(pattern) if len(pattern) <= 60 else repr(pattern[:57]) + "..."


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_text(value)
    return str(value)


def _cidr_test(match: Match) -> Callable[[Any], bool]:
    networks = []
    for value in match.values:
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise SigmaWmiError(f"invalid CIDR network {value!r}", code="bad-cidr") from None

    def test(value: Any) -> bool:
        try:
            address = ipaddress.ip_address(str(value).strip())
        except ValueError:
            return False
        return any(address.version == net.version and address in net for net in networks)
    return test


def _compare_test(match: Match) -> Callable[[Any], bool]:
    compare = _COMPARE[match.op]
    bounds = []
    for value in match.values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SigmaWmiError(f"{match.op.value} needs a number, got {value!r}", code="bad-model")
        bounds.append(float(value))

    def test(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        number = float(value) if isinstance(value, (int, float)) else (
            _as_number(value) if isinstance(value, str) else None)
        return number is not None and any(compare(number, bound) for bound in bounds)
    return test


def _fieldref(field: str, match: Match) -> Predicate:
    fold = not match.case_sensitive
    others = tuple(str(v) for v in match.values)

    def norm(value: Any) -> Any:
        text = _text_of(value)
        return text.lower() if fold else text

    def run(event: Event) -> bool:
        value = event.get(field)
        if value is None:
            return False
        mine = {norm(v) for v in (value if isinstance(value, list) else [value]) if v is not None}
        for other in others:
            theirs = event.get(other)
            if theirs is None:
                continue
            if mine & {norm(v) for v in (theirs if isinstance(theirs, list) else [theirs]) if v is not None}:
                return True
        return False
    return run


def _keyword(match: Match) -> Predicate:
    """A keyword: found as a substring of any value of the event (not of "@" keys)."""
    if match.op is Op.REGEX:
        test = _value_test(match)
    elif match.op.is_string:
        scalar = _equality_test(match, keyword=True)

        def test(value: Any) -> bool:
            if isinstance(value, (list, tuple)):
                return any(item is not None and scalar(item) for item in value)
            return scalar(value)
    else:
        raise SigmaWmiError(f"keyword search cannot use {match.op.value}", code="bad-model")

    def run(event: Event) -> bool:
        for key, value in event.items():
            if value is not None and not key.startswith("@") and test(value):
                return True
        return False
    return run
