"""Splunk SPL: raw event search, CIM `tstats` data-model search, savedsearches.conf.

Matches that the search language can express exactly go into the search; the rest
(regular expressions, case-sensitive strings, field references) go into a trailing
`| where` in eval syntax, so an OR that mixes both is still an OR.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sigma_wmi.backends.base import Backend, OptionSpec, Output, info
from sigma_wmi.backends.query import Fragment, QueryGenerator
from sigma_wmi.backends.splunk_data import (
    EVENT_ID_FIELDS,
    SplunkSource,
    SplunkSources,
    cim_fields,
    cim_split_by,
    data_source_names,
    event_fields,
    macro,
    raw_fields,
)
from sigma_wmi.backends.splunk_es import es_content, filter_macro_name, with_search
from sigma_wmi.catalog import Catalog, LogSourceInfo, UnknownField, to_profile, without_absent_fields
from sigma_wmi.errors import Diagnostic, Level, Origin, UnsupportedError, add_once
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    And,
    Expr,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Regex,
    Rule,
    Step,
    Temporal,
    Value,
    Wildcard,
    any_of,
    format_timespan,
    full_pattern,
    map_matches,
    matches,
    pattern_regex,
    walk,
)
from sigma_wmi.readers.spl import search_pattern

# ---------------------------------------------------------------------------
# Escaping: SPL double-quoted strings know exactly two escapes, \\ and \".
# ---------------------------------------------------------------------------
_SPL_QUOTED = str.maketrans({"\\": "\\\\", '"': '\\"'})


def spl_string(text: str) -> str:
    """`text` as an SPL double-quoted string literal."""
    return '"' + text.translate(_SPL_QUOTED) + '"'


_SIMPLE_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-{}]*")


# Words the search and eval languages read as operators or literals (case-insensitively
# to be safe: `and` is AND in eval, and quoting a field costs nothing).
_SEARCH_WORDS = frozenset({"and", "or", "not", "in", "by", "as", "over"})
_EVAL_WORDS = frozenset({"and", "or", "not", "xor", "like", "in", "true", "false", "null"})


def search_field(name: str) -> str:
    """A field name on the left of `=` in a search; quoted when it is not a plain word."""
    plain = _SIMPLE_FIELD.fullmatch(name) and name.lower() not in _SEARCH_WORDS
    return name if plain else spl_string(name)


def eval_field(name: str) -> str:
    """A field name in an eval expression: single quotes unless it is a plain identifier."""
    # fullmatch: `$` would accept a trailing newline
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.lower() not in _EVAL_WORDS:
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SplunkSearch(QueryGenerator):
    """The search-command language: `field="value"`, implicit AND, OR binding tighter."""

    AND = " "
    OR = " OR "
    NOT = "NOT "
    target = "splunk"

    def searchable(self, expr: Expr) -> bool:
        """Can the search language express this subtree exactly?"""
        return not any(
            isinstance(node, Match)
            and (node.op in (Op.REGEX, Op.FIELDREF) or (node.case_sensitive and node.op.is_string))
            for node in walk(expr))

    def value(self, pattern: Pattern) -> str:
        # `*` is SPL's only wildcard and cannot be escaped: `exact_wildcards` has moved values
        # with a literal `*` or a one-character wildcard into `| where match(...)`.
        return spl_string("".join("*" if part is Wildcard.MANY else str(part) for part in pattern.parts))

    def scalar(self, value: object) -> str:
        if isinstance(value, bool):
            return spl_string(str(value).lower())
        if isinstance(value, (int, float)):
            return str(value)
        return spl_string(str(value))

    def strings(self, match: Match) -> Fragment:
        values = [self.value(full_pattern(match, v)) if isinstance(v, Pattern) else self.scalar(v)
                  for v in match.values]
        if match.field is None:  # keyword search
            return Fragment(values[0]) if len(values) == 1 else Fragment(self.OR.join(values), "or")
        field = search_field(match.field)
        if len(values) == 1:
            return Fragment(f"{field}={values[0]}")
        return Fragment(f"{field} IN ({', '.join(values)})")

    match_equals = match_contains = match_startswith = match_endswith = match_wildcard = strings

    def match_cidr(self, match: Match) -> Fragment:
        return self.strings(match)

    def match_placeholder(self, match: Match) -> Fragment:
        """An unresolved placeholder kept on request: a subsearch over the lookup named like the
        placeholder (one value per row, column `value`, wildcards allowed) returns
        `(field="a") OR (field="b")`, case-insensitive like any search term."""
        name = str(match.values[0])
        if not _LOOKUP_NAME.fullmatch(name):
            raise self.unsupported(f"placeholder %{name}% is not a name a Splunk lookup can have", match)
        field = search_field(self.named(match))
        add_once(self.diagnostics, Diagnostic(
            Level.INFO, "placeholder-lookup", f"splunk: placeholder %{name}% reads the lookup '{name}' (one value "
                                              "per row in a column named value)"))
        return Fragment(f"[| inputlookup {name} | rename value AS {field} | fields {field}]")

    def match_exists(self, match: Match) -> Fragment:
        return Fragment(f"{search_field(self.named(match))}=*")

    def match_null(self, match: Match) -> Fragment:
        return Fragment(f"NOT {search_field(self.named(match))}=*", "not")

    def compare_field(self, match: Match) -> str:
        return search_field(self.named(match))


class SplunkEval(QueryGenerator):
    """Eval-expression syntax for `| where`: exact, regex-capable, case-aware."""

    AND = " AND "
    OR = " OR "
    NOT = "NOT "
    NULL_IS_UNKNOWN = True
    target = "splunk"

    def __init__(self, diagnostics: list[Diagnostic], field_name: Any = None) -> None:
        super().__init__(diagnostics)
        self.field_name = field_name or (lambda name: name)

    def ref(self, match: Match) -> str:
        return eval_field(self.field_name(match.field)) if match.field is not None else "_raw"

    def strings(self, match: Match) -> Fragment:
        field = self.ref(match)
        flags = "" if match.case_sensitive else "(?i)"

        def render(value: object) -> str:
            if isinstance(value, Pattern):
                body = pattern_regex(full_pattern(match, value))
                regex = body if match.field is None else f"^{body}$"  # a keyword is anywhere in _raw
                return f"match({field}, {spl_string(flags + regex)})"
            if isinstance(value, bool):
                return f"{field}=={spl_string(str(value).lower())}"
            return f"{field}=={value}" if isinstance(value, (int, float)) else f"{field}=={spl_string(str(value))}"

        return self.any_value(match, render)

    match_equals = match_contains = match_startswith = match_endswith = match_wildcard = strings

    def match_regex(self, match: Match) -> Fragment:
        field = self.ref(match)

        def render(value: object) -> str:
            assert isinstance(value, Regex)
            inline = "".join(sorted(value.flags))
            prefix = f"(?{inline})" if inline else ""
            return f"match({field}, {spl_string(prefix + value.pattern)})"

        return self.any_value(match, render)

    def match_cidr(self, match: Match) -> Fragment:
        field = self.ref(match)
        return self.any_value(match, lambda v: f"cidrmatch({spl_string(str(v))}, {field})")

    def match_exists(self, match: Match) -> Fragment:
        return Fragment(self.present(match))

    def present(self, match: Match) -> str:
        return f"isnotnull({self.ref(match)})"

    def match_null(self, match: Match) -> Fragment:
        field = self.ref(match)
        return Fragment(f"isnull({field}) OR {field}==\"\"", "or")

    def match_fieldref(self, match: Match) -> Fragment:
        field = self.ref(match)

        def render(other: object) -> str:
            theirs = eval_field(self.field_name(str(other)))
            if match.case_sensitive:
                return f"{field}=={theirs}"
            return f"lower({field})==lower({theirs})"

        return self.any_value(match, render)

    def compare_field(self, match: Match) -> str:
        return self.ref(match)


# ---------------------------------------------------------------------------
# Rewrites: small pure functions of the tree, run in the order a format declares
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pass:
    """What the rewrites of one conversion know: the rule, where its events are, the names."""

    rule: Rule
    catalog: Catalog
    chain: tuple[str, ...]  # profiles whose field names the output uses, first match wins
    unknown: UnknownField  # name for a field the chain lacks (raises when the target cannot take it)
    diagnostics: list[Diagnostic]
    source: SplunkSource = dataclasses.field(default_factory=SplunkSource)  # raw: where the events are
    profile: str = "sysmon"  # raw: the event profile (sysmon, security, wmi_activity)
    datamodel: str | None = None  # tstats: Endpoint.Processes

    def located(self, line: int | None, name: str) -> Origin | None:
        """Where the rule tests the target field `name`: the condition's line when the reader
        kept it, else the first line naming one of the field's Sigma names, else the rule's."""
        if line is None:
            canonical = next((c for profile in self.chain if (c := self.catalog.from_profile(profile, name))), name)
            spec = self.catalog.spec(canonical)
            line = _field_line(self.rule, (*(spec.sigma if spec else ()), canonical, name))
        return _located(self.rule, line)


Rewrite = Callable[[Expr, Pass], Expr]


def drop_absent_fields(expr: Expr, p: Pass) -> Expr:
    """A Sysmon-style rule on 4688 events: tests on fields 4688 lacks can never hold."""
    if p.profile != "security" or p.rule.logsource.service == "security":
        return expr
    cat = p.catalog

    def absent(name: str) -> bool:
        spec = cat.spec(name)
        if spec is None or spec.names.get("security"):
            return False
        return not (spec.derive and cat.name_in("security", spec.derive.source))

    missing = sorted({m.field for m in matches(expr) if m.field and absent(m.field)})
    if not missing:
        return expr
    names = ", ".join(cat.name_in("sigma", f) or f for f in missing)
    decided = without_absent_fields(expr, absent)
    if decided is False:
        raise UnsupportedError(f"splunk: the rule cannot match Security 4688 events, which have no {names}")
    if decided is True:
        raise UnsupportedError(f"splunk: without {names} (absent from Security 4688 events) the rule "
                               "would match every process creation")
    p.diagnostics.append(Diagnostic(Level.WARNING, "absent-field",
                                    f"conditions on {names} dropped: Security 4688 events never have them, "
                                    "so those branches can never match there", target="splunk"))
    return decided


def to_target_names(expr: Expr, p: Pass) -> Expr:
    """Canonical field names → the target's (Sysmon or 4688 event fields, CIM data-set fields)."""
    return to_profile(expr, p.chain, p.unknown, p.diagnostics, p.catalog)


def name_field_references(expr: Expr, p: Pass) -> Expr:
    """`|fieldref` values are canonical names too: the compared field gets the target's name."""
    if not any(m.op is Op.FIELDREF for m in matches(expr)):
        return expr

    def named(match: Match) -> Match:
        if match.op is not Op.FIELDREF:
            return match
        values = tuple(p.catalog.first_name(p.chain, str(v)) or p.unknown(str(v)) or str(v) for v in match.values)
        return dataclasses.replace(match, values=values)

    return map_matches(expr, named)


def _field_names(match: Match) -> list[str]:
    """Every field a match reads: its own and, for a field reference, the other one."""
    names = [match.field] if match.field else []
    return names + ([str(v) for v in match.values] if match.op is Op.FIELDREF else [])


def check_raw_fields(expr: Expr, p: Pass) -> Expr:
    """Fields the events of this Splunk source are not known to have (ESCU's field lists
    come from sample data, so an absent name is worth saying, not proof of absence)."""
    known = raw_fields(p.source.schema)
    if known is None:
        return expr
    events = frozenset(v for f in EVENT_ID_FIELDS for v in p.source.conditions.get(f, ()))
    which = f" event {'/'.join(sorted(events, key=lambda e: (len(e), e)))}" if events else ""

    def listed(name: str) -> bool:  # Splunk field names are case-sensitive
        return name in known and (not known[name] or not events or bool(known[name] & events))

    for match in matches(expr):
        for name in [n for n in _field_names(match) if not listed(n)]:
            add_once(p.diagnostics, Diagnostic(
                Level.INFO, "field-not-in-schema",
                f"field '{name}' is not among the fields ESCU lists for {p.source.provenance}{which}",
                p.located(match.line, name), "splunk"))
    return expr


def check_cim_fields(expr: Expr, p: Pass) -> Expr:
    """A tstats search naming a field its data set lacks never fires: fail with a located error."""
    assert p.datamodel is not None
    known = cim_fields(p.datamodel)
    if known is None:
        return expr
    for match in matches(expr):
        for name in _field_names(match):
            if name not in known:
                raise UnsupportedError(f"splunk tstats: data set {p.datamodel} has no field '{name}'",
                                       p.located(match.line, name), code="field-not-in-schema")
    return expr


def _needs_regex(value: object) -> bool:
    """SPL search values know `*` only as a wildcard and have no one-character wildcard."""
    if not isinstance(value, Pattern):
        return False
    return any(part is Wildcard.ONE or (part is not Wildcard.MANY and "*" in part) for part in value.parts)


def exact_wildcards(expr: Expr, p: Pass) -> Expr:
    """Values with a literal `*` or a `?` wildcard are tested exactly by an anchored
    case-insensitive regex (`| where match(...)`), after a broader search term that lets
    Splunk's index narrow the events first: `f="*a*b*" | where match(f, "(?i)^.*a\\*b.*$")`."""
    def applies(match: Match) -> bool:
        return match.op.is_string and not match.case_sensitive and any(_needs_regex(v) for v in match.values)

    if not any(applies(m) for m in matches(expr)):
        return expr  # the common case: the tree stays as it is

    def exact(match: Match) -> Expr:
        if not applies(match):
            return match
        kept = tuple(v for v in match.values if not _needs_regex(v))
        regexes = []
        for value in match.values:
            if _needs_regex(value):
                assert isinstance(value, Pattern)
                body = pattern_regex(full_pattern(match, value))
                regexes.append(Regex(body if match.field is None else f"^{body}$", frozenset("i")))
        broader = kept + tuple(_broadened(v) for v in match.values if _needs_regex(v))
        tests: list[Expr] = [dataclasses.replace(match, values=kept)] if kept else []
        tests.append(Match(match.field, Op.REGEX, tuple(regexes), False, match.line))
        return And((dataclasses.replace(match, values=tuple(dict.fromkeys(broader))), any_of(tests)))

    return _flat_and(map_matches(expr, exact))


def _flat_and(expr: Expr) -> Expr:
    """Ands directly inside Ands inlined, so a search term a rewrite added stays a top-level
    conjunct (and in the search, not the `| where`)."""
    if isinstance(expr, Not):
        return Not(_flat_and(expr.item))
    if isinstance(expr, Or):
        return Or(tuple(_flat_and(i) for i in expr.items))
    if isinstance(expr, And):
        items = [_flat_and(i) for i in expr.items]
        return And(tuple(x for i in items for x in (i.items if isinstance(i, And) else (i,))))
    return expr


def _broadened(value: object) -> Pattern:
    """The SPL search pattern that matches at least what `value` does: a literal `*` and a
    one-character wildcard both become `*`."""
    assert isinstance(value, Pattern)
    parts: list[str | Wildcard] = []
    for part in value.parts:
        pieces = _split_stars(part) if isinstance(part, str) else [Wildcard.MANY]
        for piece in pieces:
            if not (piece is Wildcard.MANY and parts and parts[-1] is Wildcard.MANY):
                parts.append(piece)
    return Pattern(tuple(parts))


def _split_stars(text: str) -> list[str | Wildcard]:
    pieces: list[str | Wildcard] = []
    for number, piece in enumerate(text.split("*")):
        if number:
            pieces.append(Wildcard.MANY)
        if piece:
            pieces.append(piece)
    return pieces


def add_source_conditions(expr: Expr, p: Pass) -> Expr:
    """`index=... sourcetype=... source=... EventCode=...` in front of the detection."""
    conditions = [_condition(name, values) for name, values in p.source.conditions.items()]
    if not conditions:
        p.diagnostics.append(info("no-logsource-condition",
                                  f"no Splunk source known for log source {p.rule.logsource.key()}; "
                                  "the search has no source condition"))
        return expr
    return And((*conditions, *(expr.items if isinstance(expr, And) else (expr,))))


def _condition(name: str, values: tuple[str, ...]) -> Match:
    """A search-language condition from data: digits are numbers, `*` is a wildcard."""
    parsed: tuple[Value, ...] = tuple(int(v) if re.fullmatch(r"0|[1-9][0-9]*", v) else search_pattern(v)
                                      for v in values)
    return Match(name, Op.EQUALS, parsed)


def prefix_node(expr: Expr, p: Pass) -> Expr:
    """Data-model fields carry their node name (`Processes.process_name`), field references too."""
    assert p.datamodel is not None
    prefix = p.datamodel.split(".")[-1] + "."

    def prefixed(match: Match) -> Match:
        if match.field is None:
            return match
        values = tuple(prefix + str(v) for v in match.values) if match.op is Op.FIELDREF else match.values
        return Match(prefix + match.field, match.op, values, match.case_sensitive, match.line)

    return map_matches(expr, prefixed)


def _located(rule: Rule, line: int | None) -> Origin | None:
    if not rule.origin.path:
        return None
    return rule.origin.at(line) if line is not None else rule.origin


def _field_line(rule: Rule, names: tuple[str, ...]) -> int | None:
    """The first line of the rule's text with a detection key on one of `names` (`Image|endswith:`)."""
    keys = tuple(f"{n}{end}" for n in names for end in ("|", ":"))
    for number, text in enumerate(rule.source_text.splitlines(), rule.origin.line or 1):
        if text.strip().lstrip("- ").startswith(keys):
            return number
    return None


def _no_cim_field(rule: Rule, datamodel: str, cat: Catalog) -> UnknownField:
    """tstats cannot name a field the CIM lacks: a located `field-not-in-schema` error. A field
    the catalog has no canonical name for but the data set has (an ESCU analytic's `file_acl`)
    is written as it is."""
    known = cim_fields(datamodel)
    node = datamodel.split(".")[-1]

    def unknown(name: str) -> str:
        bare = name[len(node) + 1:] if name.startswith(node + ".") else name
        if known is not None and cat.spec(name) is None and bare in known:
            return bare
        line = next((m.line for m in matches(rule.detection) if name in (m.field, *map(str, m.values))), None)
        if line is None:
            spec = cat.spec(name)
            line = _field_line(rule, (*(spec.sigma if spec else ()), name))
        raise UnsupportedError(f"splunk tstats: field '{name}' has no CIM equivalent in {datamodel}",
                               _located(rule, line), code="field-not-in-schema")
    return unknown


# ---------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------

_LEVEL_SEVERITY = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


class SplunkBackend(Backend):
    name = "splunk"
    description = "Splunk SPL: raw event search, CIM tstats data-model search, savedsearches.conf"
    formats = ("raw", "tstats", "savedsearches")
    extensions: ClassVar[Mapping[str, str]] = {"raw": ".spl", "tstats": ".spl", "savedsearches": ".conf"}
    combined_formats = frozenset({"savedsearches"})
    shown_formats = ("tstats",)
    display_rank = 0  # seed 000's card shows Splunk right after the source rule
    options = (
        OptionSpec("profile", "raw-event field names: sysmon, security (4688), or auto from the log source",
                   "auto", ("auto", "sysmon", "security")),
        OptionSpec("source_template", "log-source condition for a Windows channel ({channel} is replaced)",
                   'source="XmlWinEventLog:{channel}"'),
        OptionSpec("index", "raw: index= condition in front of every search (default: none)", ""),
        OptionSpec("sourcetype", "raw: sourcetype= condition replacing the log source's (default: from data)", ""),
        OptionSpec("source", "raw: source= condition replacing the log source's (default: from data)", ""),
        OptionSpec("expand_macros", "tstats: write ESCU macros out in full (for Splunk without ESCU)", False),
        OptionSpec("by", "tstats: comma-separated split-by fields (default: per data model)", ()),
        OptionSpec("cron_schedule", "savedsearches: cron schedule", "*/15 * * * *"),
        OptionSpec("earliest", "savedsearches: dispatch.earliest_time", "-20m"),
        OptionSpec("latest", "savedsearches: dispatch.latest_time", "now"),
        OptionSpec("search_format", "savedsearches: which query goes into search =", "raw", ("raw", "tstats")),
        OptionSpec("filter_macro", "end a Sigma rule's search with an ESCU tuning macro `<name>_filter` "
                   "(an ESCU analytic always keeps its own)", False),
        OptionSpec("es", "savedsearches: Enterprise Security correlation-search settings (annotations, "
                   "risk, notable, drilldowns)", True),
        OptionSpec("notable", "savedsearches: create notable events: auto (TTP analytics, as ESCU), on or off",
                   "auto", ("auto", "on", "off")),
    )
    # The rewrites each query format applies to a rule's detection, in order.
    REWRITES: ClassVar[Mapping[str, tuple[Rewrite, ...]]] = {
        "raw": (drop_absent_fields, to_target_names, name_field_references, check_raw_fields,
                exact_wildcards, add_source_conditions),
        "tstats": (to_target_names, name_field_references, check_cim_fields, exact_wildcards, prefix_node),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sources = SplunkSources(self.catalog, self.settings["source_template"],
                                     {k: self.settings[k] for k in ("index", "sourcetype", "source")})

    def convert(self, rule: Rule, format: str | None = None) -> Output:
        chosen = self.check_format(format)
        diagnostics: list[Diagnostic] = []
        if chosen == "raw":
            text = self.raw(rule, diagnostics)
        elif chosen == "tstats":
            text = self.tstats(rule, diagnostics)
        else:
            text = self.savedsearch(rule, diagnostics)
        if rule.aggregation and any(t.aggregate is Aggregate.PERCENTILE for t in rule.aggregation.thresholds):
            diagnostics.append(info("percentile-method", "splunk: exactperc's rank method follows limits.conf "
                                                         "[stats] perc_method; sigma-wmi test uses the nearest rank"))
        return Output(text, diagnostics)

    def rewrite(self, format: str, p: Pass) -> Expr:
        detection = p.rule.detection
        for step in self.REWRITES[format]:
            detection = step(detection, p)
        return detection

    # ---- raw event search ----
    def raw_profile(self, rule: Rule, source: LogSourceInfo) -> str:
        # -p sysmon|security chooses between the two logs that both record a category (process
        # creation: Sysmon 1 or Security 4688); any other log source is read in its own names.
        chosen: str = self.settings["profile"]
        if rule.logsource.service == "security":
            return "security"
        if chosen == "security" and source.security_event_ids:
            return "security"
        if chosen == "sysmon" and source.sysmon_event_ids:
            return "sysmon"
        return source.raw_profile or "sysmon"

    def raw(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        return self.raw_search(rule, diagnostics)[0]

    def raw_search(self, rule: Rule, diagnostics: list[Diagnostic]) -> tuple[str, list[str]]:
        """The raw search and the fields its results have (the events' own, or the groups')."""
        if rule.temporal is not None:
            groups = [_group_name(name, n) for n, name in enumerate(rule.temporal.group_by, 1)]
            return self.raw_temporal(rule.temporal, diagnostics) + self.tuning(rule, diagnostics), groups
        if rule.aggregation is not None and rule.aggregation.steps:
            groups = [_group_name(name, n) for n, name in enumerate(rule.aggregation.group_by, 1)]
            return self.raw_aggregated_steps(rule.aggregation, diagnostics) + self.tuning(rule, diagnostics), groups
        profile = self.raw_profile(rule, self.catalog.logsource(rule.logsource))
        chain = ("splunk", profile)
        p = Pass(rule, self.catalog, chain, self._unknown_raw(rule, profile), diagnostics,
                 self.sources.for_logsource(rule.logsource, profile), profile)
        query = self.search_and_where(self.rewrite("raw", p), diagnostics)
        events = frozenset(v for f in EVENT_ID_FIELDS for v in p.source.conditions.get(f, ()))
        fields = list(event_fields(p.source.schema, events))
        if rule.aggregation is not None:
            query += self.raw_stats(rule.aggregation, chain, p.unknown)
            fields = [self.catalog.first_name(chain, f) or f for f in rule.aggregation.group_by]
        return query + self.tuning(rule, diagnostics), fields

    def tuning(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        """` | `<name>_filter``: an ESCU analytic's tuning macro, or with -O filter_macro one named
        for a Sigma rule. Expanded, a tuning macro is empty (ESCU ships each as `search *`, to be
        edited per site), so -O expand_macros leaves it out and says so."""
        name = rule.tuning_macro or (filter_macro_name(rule.title) if self.settings["filter_macro"] else None)
        if name is None:
            return ""
        if self.settings["expand_macros"]:
            diagnostics.append(info("filter-macro-dropped", f"tuning macro `{name}` left out: expanded it is "
                                                            "empty (ESCU ships it as `search *`)"))
            return ""
        return f" | `{name}`"

    def raw_stats(self, aggregation: Aggregation, chain: tuple[str, ...], unknown: Any) -> str:
        """`| stats ... by ... | where count >= n` over raw events. A field the events only
        have inside another (process name in the image path) is computed first."""
        evals: list[str] = []
        group = [self.raw_field(f, chain, unknown, evals) for f in aggregation.group_by]
        counted = {t.field: self.raw_field(t.field, chain, unknown, evals) for t in aggregation.thresholds if t.field}
        return _stats_tail(aggregation, group, counted, evals)

    def raw_field(self, canonical: str, chain: tuple[str, ...], unknown: Any, evals: list[str]) -> str:
        """The raw events' name for a canonical field; one only derivable from another field
        is computed by an `eval` added to `evals`."""
        name = self.catalog.first_name(chain, canonical)
        if name:
            return name
        spec = self.catalog.spec(canonical)
        if spec and spec.derive and spec.derive.how == "basename":
            source = self.raw_field(spec.derive.source, chain, unknown, evals)
            # everything after the last backslash (the whole value when there is none)
            evals.append(f"eval {eval_field(canonical)}=replace({eval_field(source)}, {_UP_TO_BACKSLASH}, {_EMPTY})")
            return canonical
        return str(unknown(canonical) or canonical)

    # ---- correlations over several rules ----
    def multisearch(self, steps: Sequence[Step], columns: list[str], fields: list[tuple[str, ...]],
                    diagnostics: list[Diagnostic]) -> str:
        """`| multisearch [search <step 1's raw search> | eval sigma_step=1, <column>=<its field>, ...] ...`:
        every step's events, each tagged with its step number and, under the correlation's column
        names, the values of its own fields (a field only derivable is computed first)."""
        subsearches = []
        for number, (step, names) in enumerate(zip(steps, fields, strict=True), 1):
            rule = self.catalog.map_rule(step.rule)
            profile = self.raw_profile(rule, self.catalog.logsource(rule.logsource))
            chain = ("splunk", profile)
            query = self.raw(rule, diagnostics)
            evals: list[str] = []
            sources = [self.raw_field(f, chain, self._unknown_raw(rule, profile), evals) for f in names]
            tag = ", ".join([f"sigma_step={number}"] + [f"{eval_field(column)}={eval_field(source)}"
                                                          for column, source in zip(columns, sources, strict=True)
                                                          if column != source])
            derived = "".join(f" | {e}" for e in dict.fromkeys(evals))
            subsearches.append(f"[search {query}{derived} | eval {tag}]")
        return f"| multisearch {' '.join(subsearches)}"

    def raw_aggregated_steps(self, aggregation: Aggregation, diagnostics: list[Diagnostic]) -> str:
        """A threshold over the events of several rules: their `multisearch`, one row per event
        (an event several rules select keeps the first rule's row, as Sigma counts events), then
        the usual `| bin | stats | where` over the correlation's column names."""
        groups = [_group_name(name, n) for n, name in enumerate(aggregation.group_by, 1)]
        value = "sigma_value"
        columns = groups + ([value] if any(s.value_field for s in aggregation.steps) else [])
        fields = [s.group_fields + ((s.value_field,) if s.value_field else ()) for s in aggregation.steps]
        search = self.multisearch(aggregation.steps, columns, fields, diagnostics)
        once = " | eventstats min(sigma_step) as sigma_first by index splunk_server _cd | where sigma_step==sigma_first"
        renamed = dataclasses.replace(aggregation, group_by=tuple(groups), thresholds=tuple(
            dataclasses.replace(t, field=value) if t.field else t for t in aggregation.thresholds))
        return search + once + _stats_tail(renamed, groups, {value: value}, [])

    # ---- temporal correlations ----
    def raw_temporal(self, temporal: Temporal, diagnostics: list[Diagnostic]) -> str:
        """One search over every step's raw search (`multisearch`, each tagged with its step
        number and its group-by values under the correlation's names), in time order.

        temporal: `streamstats time_window=<span> dc(sigma_step)` per group counts the distinct
        steps in the span ending at each event, `where` keeps events that complete enough.
        temporal_ordered, exactly (not `transaction`, which pairs greedily): per step k,
        `sigma_start_k` is the start time of the latest-starting in-order chain of steps 1..k
        ending at this event (`streamstats last()` of step k-1's chain starts, per group, and the
        start must lie within the span); an event of the last step with a start alerts."""
        groups = [_group_name(name, n) for n, name in enumerate(temporal.group_by, 1)]
        by = (" by " + " ".join(search_field(g) for g in groups)) if groups else ""
        present = " AND ".join(f"isnotnull({eval_field(g)})" for g in groups)
        stages = [self.multisearch(temporal.steps, groups, [s.group_fields for s in temporal.steps], diagnostics)]
        if present:
            stages.append(f"where {present}")  # an event missing a group-by field is in no group
        stages.append("sort 0 _time")
        span = temporal.window
        if not temporal.ordered:
            stages.append(f"streamstats time_window={format_timespan(span)} dc(sigma_step) as sigma_steps{by}")
            stages.append(f"where sigma_steps >= {temporal.min_steps}")
            return " | ".join(stages)
        stages.append("eval sigma_start_1=if(sigma_step==1, _time, null())")
        for k in range(2, len(temporal.steps) + 1):
            stages.append(f"streamstats current=f last(sigma_start_{k - 1}) as sigma_before_{k}{by}")
            stages.append(f"eval sigma_start_{k}=if(sigma_step=={k} AND sigma_before_{k}>=_time-{span}, "
                          f"sigma_before_{k}, null())")
        stages.append(f"where isnotnull(sigma_start_{len(temporal.steps)})")
        diagnostics.append(info("temporal-ties", "splunk: events of one group with the same _time are taken in "
                                                 "the order sort returns them, and an event two consecutive steps "
                                                 "select may stand for both"))
        return " | ".join(stages)

    def _unknown_raw(self, rule: Rule, profile: str) -> UnknownField:
        # Rules written against Security-log services already use that log's names; only a
        # Sysmon-style rule translated to 4688 can ask for a field 4688 events lack.
        translated = profile == "security" and rule.logsource.service != "security"

        def unknown(name: str) -> str:
            spec = self.catalog.spec(name)
            if spec is None:
                return name  # not in the catalog: the rule's own field name is the event's
            if translated:
                raise UnsupportedError(f"splunk: field '{spec.names.get('sigma', name)}' is not present "
                                       "in Security 4688 events")
            return spec.names.get("sigma", name)
        return unknown

    def search_and_where(self, detection: Expr, diagnostics: list[Diagnostic]) -> str:
        searchable, rest = _split(detection, diagnostics)
        search = SplunkSearch(diagnostics)
        # Several conjuncts: an OR among them is parenthesized (`a b OR c` is `a AND (b OR c)` in
        # SPL, which is right, but explicit parentheses keep every reader from doubting it).
        fragments = [search.node(c) for c in searchable]
        text = fragments[0].text if len(fragments) == 1 else search.join(fragments, "and").text if fragments else "*"
        return text + _where(rest, diagnostics)

    # ---- CIM data model (tstats) ----
    def tstats(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        return self.tstats_search(rule, diagnostics)[0]

    def tstats_search(self, rule: Rule, diagnostics: list[Diagnostic]) -> tuple[str, list[str]]:
        """The tstats search and the fields of its result rows (the split-by fields)."""
        if rule.temporal is not None:
            raise UnsupportedError(f"splunk tstats: a {rule.temporal.kind} correlation needs each event in time "
                                   "order, which tstats aggregates away; use the raw format")
        if rule.steps:
            raise UnsupportedError("splunk tstats: a correlation over several rules reads several data sets; use "
                                   "the raw format")
        source = self.catalog.logsource(rule.logsource)
        # an ESCU analytic of a data model no Sigma log source stands for (Risk) keeps its own
        datamodel = source.cim or (rule.extras.get("spl") or {}).get("datamodel")
        if not datamodel:
            raise UnsupportedError(
                f"splunk tstats: no CIM data model for log source {rule.logsource.key()}")
        node = datamodel.split(".")[-1]
        p = Pass(rule, self.catalog, ("cim",), _no_cim_field(rule, datamodel, self.catalog), diagnostics,
                 datamodel=datamodel)
        where_parts, post = _split(self.rewrite("tstats", p), diagnostics)
        search = SplunkSearch(diagnostics)
        condition = search.join([search.node(c) for c in where_parts], "and").text if where_parts else ""
        aggregation = rule.aggregation

        def cim_name(canonical: str) -> str:
            return self.catalog.name_in("cim", canonical) or p.unknown(canonical) or canonical

        if aggregation is not None:
            if self.settings["by"]:
                diagnostics.append(info("by-ignored", "option by is ignored: the rule's threshold decides the "
                                                      "split-by fields"))
            by = [cim_name(f) for f in aggregation.group_by]
        else:
            # an ESCU analytic's own split-by fields first (its risk objects, message and drilldowns
            # name them), then the data set's usual ones (contentctl wants its data sources' fields)
            own = self.own_split_by(rule, datamodel)
            by = list(self.settings["by"] or dict.fromkeys([*own, *cim_split_by(datamodel)]))
        # A `| where` after tstats only sees fields the search split by: add the ones it tests.
        for conjunct in post:
            for match in matches(conjunct):
                for name in _field_names(match):
                    bare = name.split(".", 1)[1] if name.startswith(node + ".") else name
                    if bare not in by:
                        if aggregation is not None:
                            raise UnsupportedError(f"splunk tstats: the `| where` test on {bare} would need it "
                                                   "as a split-by field, which changes the threshold's groups")
                        by.append(bare)
        expand = bool(self.settings["expand_macros"])
        summaries = macro("security_content_summariesonly", expand=expand)
        counted = {t.field: cim_name(t.field) for t in aggregation.thresholds if t.field} if aggregation else {}
        distinct = "".join(dict.fromkeys(f" {_function(t)}({node}.{counted[t.field]}) as {_alias(t)}"
                                         for t in aggregation.thresholds if t.field)) if aggregation else ""
        split = [f"{node}.{f}" for f in by]
        if aggregation and aggregation.window:
            split.append(f"_time span={format_timespan(aggregation.window)}")
        query = (f"| tstats {summaries} count{distinct} min(_time) as firstTime max(_time) as lastTime "
                 f"from datamodel={datamodel}" + (f" where {condition}" if condition else "")
                 + (" by " + " ".join(split) if split else ""))
        query += " | " + macro("drop_dm_object_name", node, expand=expand)
        for field in ("firstTime", "lastTime"):
            query += " | " + macro("security_content_ctime", field, expand=expand)
        # after drop_dm_object_name the fields have lost their node prefix
        query += _where(post, diagnostics, lambda name: name.split(".", 1)[1] if name.startswith(node + ".") else name)
        query += " | where " + _thresholds(aggregation) if aggregation else ""
        return query + self.tuning(rule, diagnostics), by
    def own_split_by(self, rule: Rule, datamodel: str) -> list[str]:
        """An ESCU analytic's own split-by fields, when it searched this data set and each is one
        of its fields: its risk objects, drilldowns and data sources name them."""
        spl = rule.extras.get("spl") if rule.source_format == "escu" else None
        if not isinstance(spl, Mapping) or spl.get("datamodel") != datamodel or not rule.fields:
            return []
        known = cim_fields(datamodel)
        names = [self.catalog.name_in("cim", f) for f in rule.fields]
        if known is None or not all(name and name in known for name in names):
            return []
        return [name for name in names if name]

    # ---- savedsearches.conf ----
    def savedsearch(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        tstats = self.settings["search_format"] == "tstats"
        search, fields = self.tstats_search(rule, diagnostics) if tstats else self.raw_search(rule, diagnostics)
        lines = [
            f"# sigma-wmi rule {conf_text(rule.id or 'without id')}",
            f"[{stanza_name(rule.title, rule.id)}]",
            _conf("description", conf_text(rule.description or rule.title)),
            _conf("search", search),
            _conf("cron_schedule", self.settings["cron_schedule"]),
            _conf("dispatch.earliest_time", self.settings["earliest"]),
            _conf("dispatch.latest_time", self.settings["latest"]),
            "enableSched = 1",
            "counttype = number of events",
            "relation = greater than",
            "quantity = 0",
            "alert.track = 1",
            f"alert.severity = {_LEVEL_SEVERITY.get(rule.level or '', 3)}",
        ]
        if self.settings["es"]:
            profiles = ("sysmon", "security") if tstats else \
                (self.raw_profile(rule, self.catalog.logsource(rule.logsource)),)
            lines += self.es_settings(rule, search, fields, data_source_names(self.catalog, rule.logsource, profiles),
                                      diagnostics)
        return "\n".join(lines) + "\n"

    def es_settings(self, rule: Rule, search: str, fields: list[str], data_sources: tuple[str, ...],
                    diagnostics: list[Diagnostic]) -> list[str]:
        """The Enterprise Security correlation-search settings contentctl writes for an analytic:
        annotations, risk (RBA), notable, drilldowns, in contentctl's order."""
        es = es_content(rule, fields)
        annotations = rule.extras.get("data_source") if es.from_escu else None
        sources = [str(s) for s in annotations] if isinstance(annotations, list) else list(data_sources)
        lines = [
            "action.correlationsearch.enabled = 1",
            "action.correlationsearch.detection_type = ebd",
            _conf("action.correlationsearch.label", conf_text(stanza_name(rule.title, rule.id))),
            _conf("action.correlationsearch.annotations", _json(es.annotations(sources))),
            "schedule_window = auto",
            "alert.digest_mode = 1",
        ]
        if es.risk:
            lines += [
                "action.risk = 1",
                _conf("action.risk.param._risk_message", conf_text(es.risk_message)),
                _conf("action.risk.param._risk", _json(es.risk_entries())),
                "action.risk.param._risk_score = 0",
                "action.risk.param.verbose = 0",
            ]
        elif not es.from_escu and es.type == "Hunting" and not es.risk_objects:
            diagnostics.append(info("no-risk-object", "no risk: the search returns none of the fields a risk "
                                                      "object is taken from (dest, user, ...)"))
        wanted = self.settings["notable"]
        if wanted == "on" or (wanted == "auto" and es.notable):
            lines += [
                "action.notable = 1",
                _conf("action.notable.param.rule_title", conf_text(es.name)),
                _conf("action.notable.param.rule_description", conf_text(rule.description or rule.title)),
                _conf("action.notable.param.security_domain", es.security_domain),
                _conf("action.notable.param.severity", es.severity),
                _conf("action.notable.param.nes_fields", ",".join(o.field for o in es.risk_objects) or "dest"),
                _conf("action.notable.param.drilldown_searches", _json(with_search(es.drilldowns, search))),
            ]
        else:
            lines.append("action.notable = 0")
        return lines

    def combine(self, outputs: Any, format: str | None = None) -> str:
        if format == "savedsearches":
            return "\n".join(o.rstrip("\n") + "\n" for o in outputs)
        return super().combine(outputs, format)

    def identity(self, text: str, format: str | None = None) -> str | None:
        if format != "savedsearches":
            return None
        return next(line[1:-1] for line in text.split("\n") if line.startswith("["))

    def with_identity(self, text: str, format: str | None, identity: str, n: int) -> tuple[str, str]:
        new = f"{identity} ({n})"
        text = text.replace(f"\n[{identity}]\n", f"\n[{new}]\n", 1)
        # ES lists correlation searches by label: it follows the stanza
        label = "\naction.correlationsearch.label = "
        return text.replace(f"{label}{conf_text(identity)}\n", f"{label}{conf_text(new)}\n", 1), new


# ---------------------------------------------------------------------------
# savedsearches.conf: a line is `key = value` or `[stanza]`; a line ending in `\` continues
# on the next; a line starting with `#` (also `;` and `*` for some readers) is a comment.
# Only LF and CR end a line there: U+2028, U+0085, \v, \f, \x1c-\x1e are ordinary
# characters to splunkd, so a search keeps them as they are. Every value is written on
# one line: a continuation line would be stripped, and one starting with `#` dropped.
# ---------------------------------------------------------------------------
_CONF_BREAKS = frozenset("\r\n\x00")  # a line end, or the end of a C string
_RESERVED_STANZAS = frozenset({"default"})  # [default] sets every other stanza's defaults


def stanza_name(title: str, rule_id: str = "") -> str:
    """A stanza name from a rule title: one line, control characters and runs of
    whitespace as one space, `[` `]` as `(` `)`; never the `[default]` stanza."""
    name = _one_line(title.replace("[", "(").replace("]", ")")) or _one_line(rule_id) or "sigma-wmi rule"
    return f"{name} (rule)" if name.casefold() in _RESERVED_STANZAS else name


def _one_line(text: str) -> str:
    printable = "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in text)
    return " ".join(printable.split())


def conf_text(text: str) -> str:
    """Prose (a description) as a one-line conf value: whitespace and control characters
    become single spaces; a trailing backslash, which would join the next line, is dropped."""
    return _one_line(text).rstrip("\\ ")


def _conf(key: str, value: str) -> str:
    """A `key = value` line for a value that must arrive exactly (a search, a schedule).
    A line break, NUL or trailing backslash cannot be written exactly, so the rule fails
    for savedsearches with a located error instead of a conf that means something else."""
    value = str(value)
    bad = next((c for c in value if c in _CONF_BREAKS), None)
    if bad is not None:
        raise UnsupportedError(f"savedsearches.conf: the {key} holds {bad!r}, which a .conf value cannot "
                               "hold on one line", code="conf-value")
    if value != value.strip() or value.endswith("\\"):
        raise UnsupportedError(f"savedsearches.conf: the {key} starts or ends with whitespace or ends with "
                               "a backslash, which a .conf reader would change", code="conf-value")
    return f"{key} = {value}"


def _json(value: object) -> str:
    """A JSON conf value: one line (line breaks in strings are escaped by JSON itself)."""
    return json.dumps(value, ensure_ascii=False)


def _split(detection: Expr, diagnostics: list[Diagnostic]) -> tuple[list[Expr], list[Expr]]:
    """Top-level conjuncts the search language expresses, and the rest (for `| where`)."""
    search = SplunkSearch(diagnostics)
    conjuncts = list(detection.items) if isinstance(detection, And) else [detection]
    searchable: list[Expr] = []
    rest: list[Expr] = []
    for conjunct in conjuncts:
        (searchable if search.searchable(conjunct) else rest).append(conjunct)
    return searchable, rest


def _where(conjuncts: list[Expr], diagnostics: list[Diagnostic], field_name: Any = None) -> str:
    if not conjuncts:
        return ""
    where = SplunkEval(diagnostics, field_name)
    return " | where " + where.join([where.node(c) for c in conjuncts], "and").text


# the regex `^.*[\\]` (everything through the last backslash) as an eval string
_UP_TO_BACKSLASH = spl_string(r"^.*[\\]")
_EMPTY = spl_string("")
_COMPARE_SYMBOL = {Op.EQUALS: "==", Op.NEQ: "!=", **SplunkEval.COMPARE_SYMBOLS}


# stats functions per aggregate (exactperc: perc is an approximation in Splunk)
_STATS_FUNCTION = {Aggregate.DISTINCT_COUNT: "dc", Aggregate.SUM: "sum", Aggregate.AVERAGE: "avg",
                   Aggregate.MEDIAN: "median", Aggregate.PERCENTILE: "exactperc"}


def _alias(threshold: Any) -> str:
    """The result column of one threshold's aggregate."""
    if threshold.aggregate is Aggregate.COUNT:
        return "count"
    return f"{_function(threshold)}_{threshold.field}"


def _function(threshold: Any) -> str:
    name = _STATS_FUNCTION[threshold.aggregate]
    return f"{name}{threshold.percentile}" if threshold.aggregate is Aggregate.PERCENTILE else name


def _thresholds(aggregation: Aggregation) -> str:
    return " AND ".join(f"{_alias(t)} {_COMPARE_SYMBOL[t.op]} {t.value}" for t in aggregation.thresholds)


def _stats_tail(aggregation: Aggregation, group: list[str], counted: dict[str, str], evals: list[str]) -> str:
    """`| bin | stats | where` for a threshold over events whose fields are already named."""
    stages = list(dict.fromkeys(evals))
    by = [search_field(name) for name in group]
    if aggregation.window:
        stages.append(f"bin _time span={format_timespan(aggregation.window)}")
        by.append("_time")
    aggregates = ["count"] + [f"{_function(t)}({search_field(counted[t.field])}) as {_alias(t)}"
                              for t in aggregation.thresholds if t.field]
    stages.append("stats " + " ".join(dict.fromkeys(aggregates)) + (" by " + " ".join(by) if by else ""))
    stages.append("where " + _thresholds(aggregation))
    return "".join(" | " + stage for stage in stages)


_LOOKUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def _group_name(name: str, number: int) -> str:
    """The result column of a correlation's group-by name: the name itself when it is a plain
    identifier (`Computer`), else a numbered one."""
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) else f"sigma_group_{number}"
