"""The internal rule model every reader produces and every backend consumes.

Values are never escaped here: a string value is a `Pattern`, a tuple of literal
text and explicit `Wildcard` tokens. Field names are canonical names from the
field catalog (or, when the catalog does not know a field, the source's own name).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sigma_wmi.errors import Diagnostic, Origin


class Wildcard(enum.Enum):
    """A wildcard token inside a pattern: `MANY` is any run of characters, `ONE` exactly one."""

    MANY = "*"
    ONE = "?"

    def __repr__(self) -> str:
        return f"Wildcard.{self.name}"


PatternPart = str | Wildcard


@dataclass(frozen=True, slots=True)
class Pattern:
    """Literal text interleaved with wildcard tokens. Adjacent text parts are merged."""

    parts: tuple[PatternPart, ...]

    def __post_init__(self) -> None:
        merged: list[PatternPart] = []
        for part in self.parts:
            if isinstance(part, str):
                if not part:
                    continue
                if merged and isinstance(merged[-1], str):
                    merged[-1] = merged[-1] + part
                    continue
            merged.append(part)
        object.__setattr__(self, "parts", tuple(merged))

    @classmethod
    def literal(cls, text: str) -> Pattern:
        return cls((text,))

    @property
    def has_wildcards(self) -> bool:
        return any(isinstance(p, Wildcard) for p in self.parts)

    @property
    def text(self) -> str:
        """The literal text; only meaningful when `has_wildcards` is false."""
        return "".join(p if isinstance(p, str) else p.value for p in self.parts)

    def __str__(self) -> str:  # human-readable, wildcards shown as * and ?
        return self.text

    def __add__(self, other: Pattern) -> Pattern:
        return Pattern(self.parts + other.parts)


class Op(enum.Enum):
    """What a `Match` tests. String operators carry `Pattern` values."""

    EQUALS = "equals"
    CONTAINS = "contains"
    STARTSWITH = "startswith"
    ENDSWITH = "endswith"
    WILDCARD = "wildcard"  # a pattern with inner wildcards
    REGEX = "regex"
    CIDR = "cidr"
    EXISTS = "exists"  # field present (values empty)
    NULL = "null"  # field absent or empty (values empty)
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    FIELDREF = "fieldref"  # equal to another field's value (values are canonical field names)
    # equal to a value of a list the target holds (values are placeholder names): an unresolved
    # Sigma `%name%` kept on request, for a target-native form (a Splunk lookup)
    PLACEHOLDER = "placeholder"
    NEQ = "neq"  # only in a correlation threshold (Sigma's `condition: {neq: n}`)

    @property
    def is_string(self) -> bool:
        return self in STRING_OPS


STRING_OPS = frozenset({Op.EQUALS, Op.CONTAINS, Op.STARTSWITH, Op.ENDSWITH, Op.WILDCARD})
COMPARE_OPS = frozenset({Op.LT, Op.LTE, Op.GT, Op.GTE})


@dataclass(frozen=True, slots=True)
class Regex:
    """A regular expression in Python/PCRE syntax, with Sigma's flags (i, m, s)."""

    pattern: str
    flags: frozenset[str] = frozenset()


Value = Pattern | int | float | bool | Regex | str


@dataclass(frozen=True, slots=True)
class Match:
    """`field <op> value` for any of `values` (OR across values).

    `field` is None for a keyword search over the whole event. Numbers and booleans
    appear as `int`/`float`/`bool` values with `Op.EQUALS`; CIDR values are strings.
    """

    field: str | None
    op: Op
    values: tuple[Value, ...] = ()
    case_sensitive: bool = False
    line: int | None = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = And | Or | Not | Match


def string_match(field_name: str | None, pattern: Pattern, case_sensitive: bool = False,
                 line: int | None = None) -> Match:
    """Build the canonical `Match` for a string pattern.

    `*abc*` becomes CONTAINS "abc", `abc*` STARTSWITH, `*abc` ENDSWITH, a pattern
    with no wildcard EQUALS, anything else WILDCARD with the whole pattern. Every
    reader goes through here, so equivalent inputs give equal models.
    """
    parts = pattern.parts
    lead = bool(parts) and parts[0] is Wildcard.MANY
    trail = len(parts) > 1 and parts[-1] is Wildcard.MANY
    core = Pattern(parts[int(lead): len(parts) - int(trail)])
    if core.has_wildcards or (lead and not core.parts):
        op, value = Op.WILDCARD, pattern
    elif lead and trail:
        op, value = Op.CONTAINS, core
    elif lead:
        op, value = Op.ENDSWITH, core
    elif trail:
        op, value = Op.STARTSWITH, core
    else:
        op, value = Op.EQUALS, pattern
    return Match(field_name, op, (value,), case_sensitive, line)


def patterns_match(field_name: str | None, patterns: list[Pattern], case_sensitive: bool = False,
                   line: int | None = None) -> Expr:
    """OR of string patterns on one field, grouped into as few canonical `Match`es as possible."""
    groups: dict[Op, list[Value]] = {}
    for pattern in patterns:
        single = string_match(field_name, pattern, case_sensitive, line)
        groups.setdefault(single.op, []).extend(single.values)
    return any_of([Match(field_name, op, tuple(vals), case_sensitive, line) for op, vals in groups.items()])


def full_pattern(match: Match, value: Pattern) -> Pattern:
    """The wildcard pattern a string match value stands for (`contains x` → `*x*`)."""
    many = (Wildcard.MANY,)
    if match.op is Op.CONTAINS:
        return Pattern(many + value.parts + many)
    if match.op is Op.STARTSWITH:
        return Pattern(value.parts + many)
    if match.op is Op.ENDSWITH:
        return Pattern(many + value.parts)
    return value


def pattern_regex(pattern: Pattern) -> str:
    """The body of a Python/PCRE regex matching exactly what a wildcard pattern does
    (unanchored; callers anchor or fullmatch)."""
    return "".join(".*" if p is Wildcard.MANY else "." if p is Wildcard.ONE else re.escape(p)
                   for p in pattern.parts)


def any_of(items: list[Expr]) -> Expr:
    return items[0] if len(items) == 1 else Or(tuple(items))


def all_of(items: list[Expr]) -> Expr:
    return items[0] if len(items) == 1 else And(tuple(items))


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of the tree, parents before children (an explicit stack: every rewrite and
    check walks the tree, and nested generators cost a frame per level per node)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (And, Or)):
            stack.extend(reversed(node.items))
        elif isinstance(node, Not):
            stack.append(node.item)


def map_matches(expr: Expr, fn: Callable[[Match], Expr]) -> Expr:
    """A new tree with every `Match` replaced by `fn(match)`; the structure is kept."""
    if isinstance(expr, Match):
        return fn(expr)
    if isinstance(expr, Not):
        return Not(map_matches(expr.item, fn))
    if isinstance(expr, And):
        return And(tuple(map_matches(i, fn) for i in expr.items))
    return Or(tuple(map_matches(i, fn) for i in expr.items))


def matches(expr: Expr) -> Iterator[Match]:
    """Every `Match` of the tree, in `walk` order."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Match):
            yield node
        elif isinstance(node, (And, Or)):
            stack.extend(reversed(node.items))
        elif isinstance(node, Not):
            stack.append(node.item)


@dataclass(frozen=True, slots=True)
class LogSource:
    product: str | None = None
    category: str | None = None
    service: str | None = None
    definition: str | None = None

    def key(self) -> str:
        return "/".join(x or "-" for x in (self.product, self.category, self.service))


@dataclass(frozen=True, slots=True)
class Technique:
    """An ATT&CK technique or sub-technique id as written in the rule (e.g. T1546.003)."""

    id: str


@dataclass(frozen=True, slots=True)
class RelatedRule:
    id: str
    type: str  # derived, obsoletes, merged, renamed, similar


class Aggregate(enum.Enum):
    """What a threshold counts in one group of matching events."""

    COUNT = "count"  # events
    DISTINCT_COUNT = "distinct_count"  # distinct values of a field
    SUM = "sum"  # of a numeric field (Sigma value_sum)
    AVERAGE = "avg"  # mean of a numeric field (value_avg)
    PERCENTILE = "percentile"  # the `Threshold.percentile`th percentile of a numeric field (value_percentile)
    MEDIAN = "median"  # of a numeric field (value_median)

    @property
    def of_values(self) -> bool:
        """Aggregates the values of one field (`Threshold.field`), not the events."""
        return self is not Aggregate.COUNT


@dataclass(frozen=True, slots=True)
class Threshold:
    """`count op value`, or `<aggregate>(field) op value`, for one group."""

    aggregate: Aggregate
    op: Op  # EQUALS or one of COMPARE_OPS
    value: int
    field: str | None = None  # canonical; set for every aggregate but COUNT
    percentile: int | None = None  # 1..99; set for PERCENTILE only


@dataclass(frozen=True, slots=True)
class Aggregation:
    """Alert on groups of matching events, not on single events (Sigma `event_count` /
    `value_count` correlations, Splunk `stats ... | where count >= n`).

    Matching events are grouped by the values of `group_by` and, when `window` is set,
    by fixed time buckets of that many seconds; a group alerts when every threshold holds.

    With `steps` (a Sigma correlation over several rules), the events of any step's rule are
    aggregated: `group_by` and the thresholds' `field` are then the correlation's own names,
    and each step says which of its rule's fields stands for them (an event several steps
    select counts once, as the first of them reads it).
    """

    thresholds: tuple[Threshold, ...]
    group_by: tuple[str, ...] = ()  # canonical field names (the correlation's names with steps)
    window: int | None = None  # seconds; None: the whole time range the search runs over
    steps: tuple[Step, ...] = ()


def parse_timespan(text: str) -> int | None:
    """`30s`, `1m`, `2h`, `1d`, `1w` (Splunk span and Sigma timespan syntax) in seconds; None if not
    one (months and years have no fixed length)."""
    found = re.fullmatch(r"\s*(\d+)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|week|weeks)\s*", text)
    if not found or int(found.group(1)) == 0:
        return None
    unit = found.group(2)[0]  # lower case only: Sigma's `M` is months
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def format_timespan(seconds: int) -> str:
    """The shortest exact `<n><unit>` form: 60 → `1m`, 90 → `90s`."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_OP_TEXT = {Op.EQUALS: "=", Op.NEQ: "!=", Op.LT: "<", Op.LTE: "<=", Op.GT: ">", Op.GTE: ">="}


def describe_threshold(threshold: Threshold) -> str:
    """`count`, `distinct CommandLine`, `sum bytes`, `95th percentile of bytes`."""
    kind = threshold.aggregate
    if kind is Aggregate.COUNT:
        return "count"
    if kind is Aggregate.DISTINCT_COUNT:
        return f"distinct {threshold.field}"
    if kind is Aggregate.PERCENTILE:
        return f"{threshold.percentile}th percentile of {threshold.field}"
    return f"{ {Aggregate.SUM: 'sum', Aggregate.AVERAGE: 'average', Aggregate.MEDIAN: 'median'}[kind]} of {threshold.field}"


def describe_aggregation(aggregation: Aggregation) -> str:
    """One line for people: `count >= 4 per 1m by process_name, host`."""
    tests = " and ".join(f"{describe_threshold(t)} {_OP_TEXT[t.op]} {t.value}" for t in aggregation.thresholds)
    window = f" per {format_timespan(aggregation.window)}" if aggregation.window else ""
    group = f" by {', '.join(aggregation.group_by)}" if aggregation.group_by else ""
    return tests + window + group


@dataclass(frozen=True)
class Step:
    """One rule a temporal correlation waits for: its events, and which of its fields stand for
    each of the correlation's group-by names (Sigma `aliases` let them differ per rule)."""

    name: str  # how the correlation refers to the rule (its `name`, else its id)
    rule: Rule
    group_fields: tuple[str, ...]  # canonical, one per group-by entry of the correlation
    value_field: str | None = None  # canonical: the field a value_* aggregation over several rules reads


@dataclass(frozen=True)
class Temporal:
    """Alert when events of the steps' rules occur within `window` seconds of each other, for one
    value of the group-by fields (Sigma `temporal`; `ordered`: in the steps' order, Sigma
    `temporal_ordered`). At least `min_steps` distinct steps must be seen (all by default)."""

    steps: tuple[Step, ...]
    group_by: tuple[str, ...]  # the correlation's own names (an alias, else the Sigma field)
    window: int
    ordered: bool
    min_steps: int

    @property
    def kind(self) -> str:
        return "temporal_ordered" if self.ordered else "temporal"


def describe_temporal(temporal: Temporal) -> str:
    """One line for people: `a then b within 5m by host`."""
    names = [s.name for s in temporal.steps]
    joined = " then ".join(names) if temporal.ordered else " and ".join(names)
    if temporal.min_steps < len(names):
        joined = f"{temporal.min_steps} of {', '.join(names)}"
    group = f" by {', '.join(temporal.group_by)}" if temporal.group_by else ""
    return f"{joined} within {format_timespan(temporal.window)}{group}"


NO_ORIGIN = Origin("<memory>")


@dataclass(frozen=True)
class Rule:
    """One detection, whatever format it came from."""

    id: str
    title: str
    detection: Expr
    logsource: LogSource = LogSource()
    description: str = ""
    status: str | None = None
    level: str | None = None
    authors: tuple[str, ...] = ()
    date: str | None = None
    modified: str | None = None
    references: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tactics: tuple[str, ...] = ()  # ATT&CK tactic short names, e.g. "privilege-escalation"
    techniques: tuple[Technique, ...] = ()
    related: tuple[RelatedRule, ...] = ()
    fields: tuple[str, ...] = ()  # fields an analyst wants to see in results (canonical names)
    aggregation: Aggregation | None = None  # set: the rule alerts on groups of events, not single events
    # The per-detection tuning macro the source's search ends with (ESCU `<name>_filter`), which
    # Splunk outputs keep so a team's existing tuning still applies. Metadata, not logic.
    tuning_macro: str | None = dataclasses.field(default=None, compare=False)
    # set: the rule alerts on events of several rules close in time (its detection is then
    # the OR of the steps' detections, for readers of the tree that do not know correlations)
    temporal: Temporal | None = None
    origin: Origin = NO_ORIGIN
    # Source-specific content kept losslessly (ESCU how_to_implement, drilldowns, rba, tests...).
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    diagnostics: tuple[Diagnostic, ...] = dataclasses.field(default=(), compare=False)
    source_text: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def source_format(self) -> str:
        return self.origin.format

    @property
    def steps(self) -> tuple[Step, ...]:
        """The rules a correlation over several rules combines, each with its own log source."""
        if self.temporal is not None:
            return self.temporal.steps
        return self.aggregation.steps if self.aggregation is not None else ()


def normalize(expr: Expr) -> Expr:
    """Flatten nested And/Or, drop double negation, and merge an Or's matches that
    differ only in their values into one `Match` (so `a=1 OR a=2` equals `a IN (1,2)`)."""
    if isinstance(expr, Match):
        return expr
    if isinstance(expr, Not):
        inner = normalize(expr.item)
        return inner.item if isinstance(inner, Not) else Not(inner)
    kind = type(expr)
    flat: list[Expr] = []
    for item in expr.items:
        item = normalize(item)
        if type(item) is kind:
            flat.extend(item.items)  # type: ignore[union-attr]
        else:
            flat.append(item)
    flat = _merge_values(flat) if kind is Or else _drop_implied_exists(flat)
    if len(flat) == 1:
        return flat[0]
    return kind(tuple(flat))


def _drop_implied_exists(items: list[Expr]) -> list[Expr]:
    """In an AND, `f exists` next to a test on f says nothing more (a test on a missing
    field is false), so `NOT (isnotnull(f) AND f=x)` and `NOT f=x` read back equal."""
    tested = {item.field for item in items
              if isinstance(item, Match) and item.field is not None and item.op not in (Op.EXISTS, Op.NULL)}
    kept = [item for item in items
            if not (isinstance(item, Match) and item.op is Op.EXISTS and item.field in tested)]
    return kept or items


def _merge_values(items: list[Expr]) -> list[Expr]:
    """Merge an Or's matches that differ only in their values, keeping first-seen order and
    dropping repeated values. Values are collected in lists and each merged `Match` is built
    once: linear in the number of values (200,000 values in a list stay fast)."""
    merged: list[Expr | list[Value]] = []
    slot: dict[tuple[object, ...], int] = {}
    firsts: dict[int, Match] = {}
    seen: dict[int, set[tuple[type, Value]]] = {}  # per slot, for O(1) duplicate checks
    for item in items:
        if isinstance(item, Match) and item.values and item.op is not Op.FIELDREF:
            key = (item.field, item.op, item.case_sensitive)
            index = slot.setdefault(key, len(merged))
            if index == len(merged):
                firsts[index] = item
                seen[index] = set()
                merged.append([])
            values = merged[index]
            assert isinstance(values, list)
            for value in item.values:
                # keyed by type too: 1, 1.0 and True are equal in Python but not as field values
                if (type(value), value) not in seen[index]:
                    seen[index].add((type(value), value))
                    values.append(value)
            continue
        merged.append(item)
    result: list[Expr] = []
    for index, entry in enumerate(merged):
        if isinstance(entry, list):
            first = firsts[index]
            unchanged = len(entry) == len(first.values)
            result.append(first if unchanged else Match(first.field, first.op, tuple(entry), first.case_sensitive,
                                                        first.line))
        else:
            result.append(entry)
    return result
