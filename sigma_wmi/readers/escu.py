"""Splunk ESCU / security_content analytics → model (SPL where-clause parsed into conditions).

Both published schemas are read: 5.x (`rba`, `date`) and the 4.x seed era
(`tags.confidence/impact/risk_score/observable`). Every key of the analytic is kept:
the ones the model has a place for become `Rule` fields, all others stay in
`Rule.extras` under their own names, and what the search import learned (data
model, split-by fields, macros, pipeline stages) is in `extras["spl"]`.

The search is imported as: macros expanded (and ```comments``` dropped) → pipeline split →

* a `| tstats ... from datamodel=X where ...` search: the where-clause parsed with the SPL
  grammar, CIM field names mapped through the catalog, the log source from the data set;
* a raw-event search (it starts with search terms, usually a data-source macro such as
  `` `sysmon` ``): its source terms and event ids pick the log source (`escu_sources.py`), the
  other terms are conditions on the events' fields, `| stats` groups;

→ the filter stages after it (`| where`, `| search`, `| regex`, tests of `| eval`/`| rex` fields
and of `| stats` by-fields, thresholds on counts) added as conditions. The `<name>_filter`
tuning macro is ignored. A stage that changes or joins the results (eventstats, lookup, join,
...) cannot be expressed; it is named in a `partial-import` warning and the rule is partial.
Nothing is dropped silently.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from sigma_wmi.attack import attack
from sigma_wmi.backends.splunk_data import cim_dataset, cim_fields
from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import Diagnostic, Level, Origin, SigmaWmiError, add_once
from sigma_wmi.limits import MAX_SEARCH_CHARS
from sigma_wmi.model import (
    COMPARE_OPS,
    Aggregate,
    Aggregation,
    And,
    Expr,
    LogSource,
    Match,
    Op,
    Or,
    Pattern,
    Regex,
    Rule,
    Technique,
    Threshold,
    all_of,
    map_matches,
    matches,
    normalize,
    parse_timespan,
)
from sigma_wmi.readers import escu_lookups
from sigma_wmi.readers import escu_sources as sources
from sigma_wmi.readers import macros as macro_lib
from sigma_wmi.readers.spl import (
    SUBSEARCH,
    Capture,
    LookupOutput,
    SplError,
    Stage,
    decode_entities,
    extract_subsearches,
    find_keyword,
    parse_eval,
    parse_regex_command,
    parse_search,
    parse_where,
    split_pipeline,
    split_regex,
    strip_comments,
    unquote,
)
from sigma_wmi.readers.values import DocumentValues
from sigma_wmi.readers.yamlsource import locate

PARTIAL = "partial-import"


def is_escu(doc: dict[str, Any]) -> bool:
    return "search" in doc and "name" in doc and "detection" not in doc


def is_partial(rule: Rule) -> bool:
    """Did the import leave out part of the analytic's logic?"""
    return any(d.code == PARTIAL for d in rule.diagnostics)


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------

@dataclass
class SearchImport:
    """What the import of one ESCU search produced."""

    detection: Expr
    datamodel: str
    logsource: LogSource
    by: tuple[str, ...]  # split-by fields, canonical
    where_exact: bool  # the tstats where-clause was imported without loss
    aggregation: Aggregation | None = None  # `| where count >= n` and the like after the tstats
    diagnostics: list[Diagnostic] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return any(d.code == PARTIAL for d in self.diagnostics)


_DATAMODEL = re.compile(r"^\s*datamodel\s*=\s*\"?([\w.]+)\"?", re.I)
_AGGREGATE = re.compile(r"(\w+)\(([^()]*)\)(?:\s+as\s+(\"[^\"]+\"|[\w.]+))?", re.I)
_MACRO_STAGE = re.compile(r"^`\s*([\w\-.:]+)\s*(?:\((.*)\))?\s*`$", re.S)
_SPAN = re.compile(r"\bspan\s*=\s*([^\s,]+)", re.I)
# Search-time modifiers: they bound the time range searched, they test no event field.
_TIME_MODIFIERS = frozenset({"earliest", "latest", "_index_earliest", "_index_latest", "starttime", "endtime",
                             "starttimeu", "endtimeu", "starthoursago", "endhoursago", "startdaysago",
                             "enddaysago", "startminutesago", "endminutesago"})
_NODENAME = re.compile(r"\(\s*nodename\s*=\s*\"?([\w.]+)\"?\s*\)|\bnodename\s*=\s*\"?([\w.]+)\"?", re.I)
# `count`, not `count(...)`, with its alias if it has one
_BARE_COUNT = re.compile(r"(?<![\w(.])count(?![\w(])(?:\s+as\s+(\"[^\"]+\"|[\w.]+))?", re.I)
# An aggregate a threshold can test, as a field name no event has (a later filter names it by alias).
_AGGREGATE_MARK = "\0aggregate:"
_DISTINCT_COUNTS = frozenset({"dc", "distinct_count"})
_RENAME = re.compile(r"(\"[^\"]+\"|\S+)\s+as\s+(\"[^\"]+\"|\S+?)(?:\s*,|\s+|$)", re.I)


class _Importer:
    """Imports one search. Tables of what each pipeline command means for the model."""

    FILTERS: ClassVar[frozenset[str]] = frozenset({"where", "search", "regex"})
    # Commands that change how results look, not which events match. (`fillnull` only fills
    # empty columns: a later test of a filled field against the fill value is the one case it
    # would change, and ESCU writes none.)
    PRESENTATION: ClassVar[frozenset[str]] = frozenset({"table", "fields", "sort", "convert", "rename",
                                                        "fillnull"})
    # Commands that add or rewrite result columns, or drop duplicate rows, but leave a result
    # whenever there was one: harmless when nothing after them selects results.
    COLUMNS: ClassVar[frozenset[str]] = frozenset({
        "eval", "rex", "lookup", "bucket", "bin", "xmlkv", "spath", "mvexpand", "replace", "makemv", "strcat",
        "eventstats", "streamstats", "iplocation", "addinfo", "dedup", "head", "tail", "uniq", "reverse"})
    TIME_BUCKETS: ClassVar[frozenset[str]] = frozenset({"bucket", "bin"})
    # Aggregates whose value is an event field's value (one event field per group).
    EVENT_VALUED: ClassVar[frozenset[str]] = frozenset({"values"})

    def __init__(self, library: macro_lib.MacroLibrary, origin: Origin, cat: Catalog) -> None:
        self.library = library
        self.origin = origin
        self.catalog = cat
        self.diagnostics: list[Diagnostic] = []
        self.unknown_macros: frozenset[str] = frozenset()  # whole-stage macros the library lacks
        self.unknown_fields: list[str] = []
        self.node = ""
        self.datamodel = ""  # the tstats data set, `Model.DataSet`
        self.dataset_events = False  # `| from datamodel`: every field a filter tests is a field of the data set
        self.renamed: dict[str, str] = {}  # new name -> name before the rename
        self.results: set[str] = set()  # fields a tstats result row has (bare CIM names)
        self.aggregates: set[str] = set()
        # result fields `values(f) as f` collects: a filter on one tests whether ANY value of the group
        # matches, which per event is the same test only where the filter asks for one value (see
        # `_any_value_test`)
        self.multivalued: set[str] = set()
        # alias -> what it counts, for the aggregates a threshold can test (count, dc(field))
        self.countable: dict[str, tuple[Aggregate, str | None]] = {}
        self.time_split = False  # `by _time`: groups per time bucket
        self.span: str | None = None  # `span=` as written
        self.window: int | None = None  # the bucket size, seconds
        self.thresholds: list[Threshold] = []
        self.computed: dict[str, Any] = {}  # fields `| eval` defined: their expressions
        self.opaque: dict[str, str] = {}  # fields `| eval` defined in a way the import cannot read: why
        # raw event searches: where the events are, their field names, whether rows are still events
        self.raw_source: sources.RawSource | None = None
        self.field_names: sources.FieldNames | None = None
        self.raw_events = False  # before a `| stats`: every event field is a result field
        self.raw_by: tuple[str, ...] = ()  # the `| stats ... by` fields, as written
        # ESCU's lookup tables sit beside its macros
        self.lookups_dir = library.directory.parent / "lookups" if library.directory else None

    # ---- diagnostics ----
    def partial(self, stage: str, why: str) -> None:
        shown = " ".join(stage.split())
        shown = shown if len(shown) <= 70 else shown[:67] + "..."
        self.diagnostics.append(Diagnostic(Level.WARNING, PARTIAL, f"stage `| {shown}` not imported: {why}",
                                           self.origin))

    def note(self, code: str, message: str) -> None:
        add_once(self.diagnostics, Diagnostic(Level.INFO, code, message, self.origin))

    # ---- fields ----
    def cim_field(self, name: str) -> str:
        """A CIM field (with or without the data-model node prefix) as a canonical name."""
        bare = name[len(self.node) + 1:] if self.node and name.startswith(self.node + ".") else name
        canonical = self.catalog.from_profile("cim", bare)
        if canonical:
            return canonical
        if self.catalog.spec(bare) is not None:  # a canonical name that means something else
            bare = f"{self.node}.{bare}"
        if bare not in self.unknown_fields:
            self.unknown_fields.append(bare)
            self.note("unknown-cim-field", f"CIM field '{bare}' is not in the field catalog; kept as '{bare}'")
        return bare

    def where_field(self, name: str) -> str:
        """A field the tstats where-clause tests, as a canonical name. A field the data set lacks
        (a misspelt node, `Processs.process_name`, or a field of another data model) matches no
        event there, and our own tstats output could not name it: the import is not exact."""
        canonical = self.cim_field(name)
        fields = cim_fields(self.datamodel)
        bare = name[len(self.node) + 1:] if self.node and name.startswith(self.node + ".") else name
        if fields is None:
            why = f"data model {self.datamodel} is not in the CIM data, so its fields cannot be checked"
        elif bare not in fields:
            why = f"field '{name}' is not a field of the CIM data set {self.datamodel}"
        else:
            return canonical
        add_once(self.diagnostics, Diagnostic(Level.WARNING, PARTIAL, f"{why}; kept as written", self.origin))
        return canonical

    def result_field(self, name: str) -> str:
        """A field of a tstats result row, as used by a later stage, as a canonical name."""
        original = self.renamed.get(name, name)
        if original in self.opaque:
            raise _NotEventField(self.opaque[original])
        if original in self.computed:  # reached only where no expression can stand in (| regex, rename)
            raise _NotEventField(f"field '{name}' is computed by `| eval` or `| rex`, not an event field")
        if self.raw_events:
            return self.event_field(original)
        bare = original[len(self.node) + 1:] if self.node and original.startswith(self.node + ".") else original
        if bare not in self.results:
            split = "the `| stats`" if self.field_names is not None else "the tstats"
            reason = "an aggregate" if bare in self.aggregates else f"not a split-by field of {split}"
            raise _NotEventField(f"field '{name}' is {reason}")
        return self.event_field(bare)

    # ---- the whole search ----
    def run(self, search: str) -> SearchImport:
        expansion = macro_lib.expand(search, self.library, self.origin, keep_unknown_stages=True)
        self.unknown_macros = frozenset(expansion.unknown_stages)
        if len(expansion.text) > MAX_SEARCH_CHARS:  # parsing cost grows with it; real searches are a few KB
            raise SigmaWmiError(f"the search is longer than {MAX_SEARCH_CHARS} characters (macros expanded)",
                                self.origin, "search-too-large")
        calls = expansion.calls
        stages = split_pipeline(strip_comments(expansion.text))
        macros = [c.name + (f"({', '.join(c.args)})" if c.args else "") for c in calls]
        if stages and not expansion.text.lstrip().startswith("|"):
            return self.run_raw(stages, macros)
        dataset = _dataset_search(stages[0]) if stages else None
        if dataset is not None:
            return self.run_dataset(dataset, stages, macros)
        if not stages or stages[0].command != "tstats":
            first = stages[0].command if stages else "nothing"
            raise SigmaWmiError(f"only tstats data-model searches and raw event searches are imported; this "
                                f"search starts with '| {first}'", self.origin, "unsupported-search")
        where, datamodel, by, where_exact = self.tstats(stages[0])
        conditions: list[Expr] = [where] if where is not None else []
        metadata: dict[str, Any] = {
            "datamodel": datamodel,
            "by": list(by),
            "aggregates": sorted(self.aggregates),
            "macros": macros,
            "stages": [],
        }
        self.post_stages(stages[1:], conditions, metadata)
        if not conditions:
            raise SigmaWmiError("the search has no condition the model can express", self.origin,
                                "no-conditions")
        by_fields = tuple(self.cim_field(f) for f in by)
        aggregation = Aggregation(tuple(self.thresholds), by_fields, self.window) if self.thresholds else None
        logsource = self.catalog.datamodel_logsource(datamodel)
        if logsource is None:
            self.note("unknown-datamodel", f"data model {datamodel} has no Sigma log source in the catalog")
            logsource = LogSource(definition=f"Splunk CIM data model {datamodel}")
        detection = normalize(all_of(conditions))
        self.check_regexes(detection)
        return SearchImport(detection, datamodel, logsource, by_fields, where_exact,
                            aggregation, self.diagnostics, metadata)

    # ---- the events of a data set: `| from datamodel X.Y`, `| datamodel X Y search` ----
    def run_dataset(self, dataset: str, stages: list[Stage], macros: list[str]) -> SearchImport:
        """Every event of a CIM data set, as rows: its later filters are the conditions, on CIM fields
        (with or without the data-set prefix); a `| stats` groups as in a raw search."""
        self.datamodel = cim_dataset(dataset)
        self.node = self.datamodel.split(".")[-1]
        self.raw_events = self.dataset_events = True
        if cim_fields(self.datamodel) is None:
            self.partial(stages[0].text, f"data model {self.datamodel} is not in the CIM data, so its fields "
                                         "cannot be checked")
        conditions: list[Expr] = []
        metadata: dict[str, Any] = {"datamodel": self.datamodel, "by": [], "macros": macros, "stages": []}
        self.post_stages(stages[1:], conditions, metadata)
        metadata["by"] = list(self.raw_by)
        metadata["aggregates"] = sorted(self.aggregates)
        if not conditions:
            raise SigmaWmiError("the search has no condition the model can express", self.origin, "no-conditions")
        by_fields = tuple(dict.fromkeys(self.cim_field(f) for f in self.raw_by if f != "_time"))
        aggregation = Aggregation(tuple(self.thresholds), by_fields, self.window) if self.thresholds else None
        logsource = self.catalog.datamodel_logsource(self.datamodel)
        if logsource is None:
            self.note("unknown-datamodel", f"data model {self.datamodel} has no Sigma log source in the catalog")
            logsource = LogSource(definition=f"Splunk CIM data model {self.datamodel}")
        detection = normalize(all_of(conditions))
        self.check_regexes(detection)
        return SearchImport(detection, self.datamodel, logsource, by_fields, True, aggregation,
                            self.diagnostics, metadata)

    # ---- raw event searches ----
    def run_raw(self, stages: list[Stage], macros: list[str]) -> SearchImport:
        """A search over raw events: its source terms pick the log source, its other terms and the
        filter stages are the conditions, a `| stats` groups (and a later filter may threshold)."""
        first = stages[0]
        text = first.args if first.command == "search" else first.text
        body, subsearches = extract_subsearches(text)
        try:
            parsed = parse_search(body)
        except SplError as err:
            raise SigmaWmiError(f"search: {err.message}", self.origin, err.code) from None
        conjuncts: list[Expr] = list(parsed.items) if isinstance(parsed, And) else [parsed] if parsed is not None else []
        times = [c for c in conjuncts if isinstance(c, Match) and c.field and c.field.lower() in _TIME_MODIFIERS]
        if times:  # `earliest=-24h`: the time range the search covers, which the schedule sets
            conjuncts = [c for c in conjuncts if c not in times]
            self.note("time-range", f"time modifiers {', '.join(sorted({str(c.field) for c in times}))} set the "
                                    "time range, not a condition; left to the schedule")
        selectors = [c for c in conjuncts if sources.is_selector(c)]
        is_id = functools.partial(sources.is_event_id_name, self.catalog)
        id_sets = [ids for c in conjuncts if (ids := sources.event_ids(c, is_id)) is not None]
        ids = functools.reduce(frozenset.intersection, id_sets) if id_sets else None
        source = sources.resolve(selectors, ids, self.catalog)
        rest: list[Expr] = [c for c in conjuncts if c not in selectors]
        if source is None:  # a source no Sigma log source stands for: its terms stay conditions
            described = " ".join(str(m.field) + "=" + "|".join(str(v) for v in m.values)
                                 for c in selectors for m in matches(c))
            self.note("no-logsource", f"no Sigma log source stands for the search's source ({described or 'none'});"
                                      " its source terms are kept as conditions")
            unknown = LogSource(definition=f"Splunk raw events: {described or 'any'}")
            source = sources.RawSource(unknown, self.catalog.event_profile(unknown, None), None, described or "any",
                                       written=sources.plain_profile(self.catalog, unknown))
            rest = conjuncts
        elif source.event_ids:
            rest = [c for c in rest if sources.event_ids(c, is_id) != frozenset(source.event_ids)]
        if source.others:
            self.note("other-sources", f"the search's source terms also name {', '.join(source.others)}; "
                                       f"imported as {source.logsource.key()} ({source.described})")
        self.raw_source = source
        self.field_names = sources.FieldNames(self.catalog, source, self.unknown_raw_field, self.unlisted_raw_field)
        self.raw_events = True
        conditions: list[Expr] = []
        if rest:
            where = normalize(all_of(rest))
            conditions.append(map_matches(where, self.renamed_match))
        where_exact = True
        if subsearches:
            kept = self.drop_subsearches(all_of(conditions) if conditions else None, subsearches)
            conditions = [kept] if kept is not None else []
            where_exact = False
        metadata: dict[str, Any] = {
            "source": source.described,
            "logsource": source.logsource.key(),
            "by": [],
            "macros": macros,
            "stages": [],
        }
        self.post_stages(stages[1:], conditions, metadata)
        metadata["by"] = list(self.raw_by)
        metadata["aggregates"] = sorted(self.aggregates)
        if not conditions and source.event_ids:  # `sysmon EventCode=1 | stats ...`: the event kind is the test
            conditions.append(Match("event_id", Op.EQUALS, source.event_ids))
        if not conditions:
            raise SigmaWmiError("the search has no condition the model can express", self.origin,
                                "no-conditions")
        detection = normalize(self.field_names.in_event_names(normalize(all_of(conditions)), self.diagnostics))
        self.check_regexes(detection)
        silent = sources.FieldNames(self.catalog, source, lambda name, why: None)
        def computed(name: str) -> bool:
            """A field a stage computed, other than one the catalog derives the same way (our raw
            output computes `file_name` from TargetFilename before grouping by it)."""
            spec = self.catalog.spec(silent(name))
            return (name in self.computed or name in self.opaque) and not (spec and spec.derive)

        # a field a stage computed (`| rex` capture) is a result column, not the event field of that name
        by_fields = tuple(dict.fromkeys(f if computed(f) else silent(f) for f in self.raw_by if f != "_time"))
        computed_by = [f for f in self.raw_by if computed(f)]
        if self.thresholds and computed_by:  # the model groups by event fields only
            self.partial(f"stats ... by {' '.join(self.raw_by)}",
                         f"the threshold's groups include {', '.join(computed_by)}, which a stage computed")
            self.thresholds.clear()
        aggregation = Aggregation(tuple(self.thresholds), by_fields, self.window) if self.thresholds else None
        return SearchImport(detection, "", source.logsource, by_fields, where_exact, aggregation,
                            self.diagnostics, metadata)

    def renamed_match(self, match: Match) -> Expr:
        if match.field is None:
            return match
        return Match(self.event_field(match.field), match.op, match.values, match.case_sensitive, match.line)

    def unknown_raw_field(self, name: str, why: str) -> None:
        if name in self.unknown_fields:
            return
        self.unknown_fields.append(name)
        self.diagnostics.append(Diagnostic(Level.WARNING, PARTIAL, f"field '{name}' {why}; kept as written",
                                           self.origin))

    def unlisted_raw_field(self, name: str) -> None:
        source = self.raw_source.described if self.raw_source else "the source"
        self.note("unlisted-field", f"field '{name}' is not in ESCU's field list for {source} "
                                    "(ESCU lists fields seen in sample events); kept as written")

    def event_field(self, name: str) -> str:
        """A field of the events (raw search) or of the data set (tstats) as a canonical name."""
        if self.field_names is not None:
            return self.field_names(name)
        return self.where_field(name) if self.dataset_events else self.cim_field(name)

    def check_regexes(self, detection: Expr) -> None:
        """Regexes must mean the same on every target: RE2's syntax (Splunk's PCRE, Elastic's
        Lucene regexes and Python all read it the same way) is the check."""
        for match in matches(detection):
            for value in match.values if match.op is Op.REGEX else ():
                if isinstance(value, Regex):
                    try:
                        re2.compile(value.pattern, _RE2_QUIET)
                    except re2.error as err:
                        self.diagnostics.append(Diagnostic(
                            Level.WARNING, PARTIAL, f"regex '{value.pattern[:60]}' is not RE2 syntax ({err}); "
                            "targets may read it differently", self.origin))

    # ---- | tstats ----
    def tstats(self, stage: Stage) -> tuple[Expr | None, str, tuple[str, ...], bool]:
        args = stage.args
        start = find_keyword(args, "from")
        found = _DATAMODEL.match(args[start + 4:]) if start is not None else None
        if start is None or found is None:
            raise SigmaWmiError("tstats without 'from datamodel=...' is not imported", self.origin,
                                "unsupported-search")
        rest = args[start + 4 + found.end():]
        # `where nodename=All_Changes` names the data set inside the data model (tstats' older spelling)
        nodename = _NODENAME.search(rest)
        model = found.group(1)
        if nodename is not None:  # one the data lacks stays a test of a field no data set has: partial
            node = (nodename.group(1) or nodename.group(2)).split(".")[-1]
            if "." not in model and cim_fields(f"{model}.{node}") is not None:
                model = f"{model}.{node}"
                rest = rest[:nodename.start()] + " " + rest[nodename.end():]
        datamodel = cim_dataset(model)  # `datamodel=Change` searches its root data set
        self.datamodel = datamodel
        self.node = datamodel.split(".")[-1]
        self.aggregates_of(args[:start])
        by_at = find_keyword(rest, "by")
        clause, by_text = (rest[:by_at], rest[by_at + 2:]) if by_at is not None else (rest, "")
        by_words = _SPAN.sub(" ", by_text).replace(",", " ").split()
        by = tuple(w for w in by_words if "=" not in w and w != "_time")
        self.time_split = "_time" in by_words
        span = _SPAN.search(by_text)
        self.span = span.group(1) if span and self.time_split else None
        self.window = parse_timespan(self.span) if self.span else None
        self.results = {self.bare(f) for f in by} | {"_time"}
        self.multivalued -= self.results  # a split-by field has one value per group, whatever values() says
        clause = clause.strip()
        if clause and find_keyword(clause, "where") != 0:
            raise SigmaWmiError(f"unexpected text after the data model: '{clause[:40]}'", self.origin,
                                "spl-syntax")
        if not clause:
            return None, datamodel, by, True
        where, exact = self.where_clause(clause[len("where"):])
        return where, datamodel, by, exact

    def bare(self, name: str) -> str:
        return name[len(self.node) + 1:] if name.startswith(self.node + ".") else name

    def aggregates_of(self, text: str) -> None:
        for function, argument, alias in _AGGREGATE.findall(text):
            name = alias.strip('"') if alias else f"{function}({argument})"
            if function.lower() in self.EVENT_VALUED and self.bare(argument.strip()) == name:
                self.results.add(name)
                self.multivalued.add(name)
            self.aggregates.add(name)
            if function.lower() in _DISTINCT_COUNTS and argument.strip():
                self.countable[name] = (Aggregate.DISTINCT_COUNT, self.event_field(argument.strip()))
        for alias in _BARE_COUNT.findall(text):
            name = alias.strip('"') or "count"
            self.aggregates.add(name)
            self.countable[name] = (Aggregate.COUNT, None)

    def where_clause(self, text: str) -> tuple[Expr | None, bool]:
        """The where-clause as a condition, and whether it was imported without loss."""
        body, subsearches = extract_subsearches(text)
        try:
            expr = parse_search(body, self.where_field)
        except SplError as err:
            raise SigmaWmiError(f"tstats where-clause: {err.message}", self.origin, err.code) from None
        if subsearches:
            return self.drop_subsearches(expr, subsearches), False
        return expr, True

    def drop_subsearches(self, expr: Expr | None, subsearches: list[str]) -> Expr | None:
        """Top-level `[subsearch]` conjuncts are left out (broader, partial); nested ones fail."""
        placeholders = {Pattern.literal(SUBSEARCH.format(i)) for i in range(len(subsearches))}

        def is_placeholder(item: Expr) -> bool:
            return isinstance(item, Match) and item.field is None and bool(placeholders & set(item.values))

        items = list(expr.items) if isinstance(expr, And) else [expr] if expr is not None else []
        kept = [item for item in items if not is_placeholder(item)]
        if any(is_placeholder(m) for item in kept for m in matches(item)):
            raise SigmaWmiError("a subsearch inside a boolean expression of the where-clause cannot be "
                                "imported", self.origin, "unsupported-subsearch")
        for sub in subsearches:
            self.partial(f"[{sub.strip()}]", "subsearch in the tstats where-clause (the import is broader)")
        return all_of(kept) if kept else None

    # ---- stages after tstats ----
    def post_stages(self, stages: list[Stage], conditions: list[Expr], metadata: dict[str, Any]) -> None:
        blocked: str | None = None  # the first stage that changed the results; later filters see its output
        for at, stage in enumerate(stages):
            if stage.command in self.COLUMNS and all(self.passive(later) for later in stages[at + 1:]):
                # nothing after it selects results, so its columns cannot change which ones alert
                self.note("columns-only", f"`| {stage.command}` does not change whether the search has results "
                                          "(nothing after it selects them); kept as metadata")
                metadata["stages"].append({"text": stage.text, "kind": "presentation", "imported": True})
                continue
            kind, imported = self.post_stage(stage, conditions, blocked)
            metadata["stages"].append({"text": stage.text, "kind": kind, "imported": imported})
            if kind == "other" and blocked is None:
                blocked = stage.command

    def passive(self, stage: Stage) -> bool:
        """Does the stage leave the set of results alone (columns, order, standard macros)?"""
        macro = _MACRO_STAGE.match(stage.text)
        if macro:
            return macro.group(1) not in self.unknown_macros  # an unknown one may filter
        return stage.command in self.PRESENTATION | self.COLUMNS

    def post_stage(self, stage: Stage, conditions: list[Expr], blocked: str | None) -> tuple[str, bool]:
        macro = _MACRO_STAGE.match(stage.text)
        if macro:
            kind = self.macro_stage(macro.group(1), macro.group(2) or "")
            return kind, kind != "other"
        command = stage.command
        if command == "stats" and self.raw_events and blocked is None:
            return "aggregation", self.stats(stage)
        if command in self.TIME_BUCKETS and self.raw_events and blocked is None:
            return "presentation", self.time_bucket(stage)
        if command == "rex" and blocked is None:
            return "computed", self.rex(stage)
        if command == "lookup" and blocked is None:
            return self.lookup(stage)
        if command == "rename":
            return "presentation", self.rename(stage.args)
        if command == "eval" and blocked is None:
            return "computed", self.eval(stage)
        if command in self.PRESENTATION:
            return "presentation", True
        if command in self.FILTERS:
            if blocked is not None:
                self.partial(stage.text, f"filters the output of `| {blocked}`, which was not imported")
                return "filter", False
            try:
                condition = self.filter(command, stage.args)
            except (SplError, _NotEventField) as err:
                self.partial(stage.text, str(err.message if isinstance(err, SplError) else err))
                return "filter", False
            if condition is not None:
                conditions.append(condition)
            return "filter", True
        self.partial(stage.text, f"`{command}` changes or joins the results")
        return "other", False

    def filter(self, command: str, args: str) -> Expr | None:
        """The stage's condition on event fields; thresholds on aggregates go to `self.thresholds`."""
        if "[" in args and extract_subsearches(args)[1]:
            raise SplError("subsearch in a filter")
        collected: dict[str, str] = {}  # canonical name -> name as written, of multivalued fields tested
        resolve = self.result_field if command == "regex" else self.filter_field  # `| regex` tests no aggregate

        def field_of(name: str) -> str:
            canonical = resolve(name)
            if self.renamed.get(name, name) in self.multivalued:
                collected[canonical] = name
            return canonical

        if command == "where":
            expr: Expr | None = parse_where(args, field_of, self.computed)
        elif command == "regex":
            expr = parse_regex_command(args, field_of, self.computed)
        else:
            expr = parse_search(args, field_of, self.computed)
        if expr is None:
            raise SplError("empty search")
        if collected and not _any_value_test(expr, frozenset(collected)):
            names = ", ".join(f"'{n}'" for n in collected.values())
            raise _NotEventField(f"it tests {names}, every value `values()` collected for a group, in a way "
                                 "no single event's test matches (an AND of values, or a negation)")
        return self.take_thresholds(expr) if command != "regex" else expr

    def eval(self, stage: Stage) -> bool:
        """Remember what the fields mean; a filter that tests them later decides whether it imports."""
        try:
            assignments = parse_eval(stage.args, self.result_field, self.computed)
        except SplError as err:
            self.partial(stage.text, err.message)
            return False
        for name, operand in assignments:
            if isinstance(operand, SplError):
                self.computed.pop(name, None)
                self.opaque[name] = f"`| eval {name}=...` was not imported ({operand.message})"
            else:
                self.opaque.pop(name, None)
                self.computed[name] = operand
        return True

    def stats(self, stage: Stage) -> bool:
        """The first `| stats` of a raw search: its by-fields and value passthroughs stay event
        fields for later filters, its counts can be thresholds. (Splunk makes no row for an event
        that lacks a by-field; like the tstats import, the model does not count that as a filter.)"""
        args = stage.args
        by_at = find_keyword(args, "by")
        head, by_text = (args[:by_at], args[by_at + 2:]) if by_at is not None else (args, "")
        by_words = [w for w in by_text.replace(",", " ").split() if "=" not in w]
        self.raw_events = False
        self.results = set(by_words)
        self.aggregates_of(head)
        self.multivalued -= set(by_words)  # a split-by field has one value per group, whatever values() says
        self.raw_by = tuple(by_words)
        self.time_split = "_time" in by_words
        return True

    def time_bucket(self, stage: Stage) -> bool:
        """`| bucket _time span=1h` before the stats: the window a threshold counts in."""
        span = _SPAN.search(stage.args)
        if span and "_time" in stage.args.split():
            self.span = span.group(1)
            self.window = parse_timespan(self.span)
        return True

    def rex(self, stage: Stage) -> bool:
        """`| rex field=f "(?<x>...)"`: x has a value exactly where the regex matches f, so
        `isnotnull(x)` (or `x=*`) is that regex condition and `isnull(x)` its negation."""
        found = _REX.match(stage.args)
        options = (found.group("options") + found.group("more")).replace(" ", "") if found else ""
        if not found or "mode=sed" in options:
            for name in _NAMED_GROUP.findall(stage.args):
                self.opaque[name] = f"`| rex` extracting '{name}' was not imported"
            return False
        field_name = unquote(found.group("field")) if found.group("field") else "_raw"
        text = decode_entities(unquote(found.group("regex")))
        try:
            subject = None if field_name == "_raw" else self.result_field(field_name)
        except _NotEventField as err:
            for name in _NAMED_GROUP.findall(text):
                self.opaque[name] = str(err)
            return False
        regex = split_regex(_NAMED_GROUP.sub("(", text))
        for found_group in _NAMED_GROUP.finditer(text):
            name = found_group.group(1)
            prefix, stop = _last_greedy_group(text, found_group)
            self.opaque.pop(name, None)
            self.computed[name] = Capture(subject, regex, prefix, stop)
        return True

    def lookup(self, stage: Stage) -> tuple[str, bool]:
        """`| lookup table key AS field OUTPUT out`: a later test of `out` is an IN-list of the
        table's keys on `field` (see `escu_lookups`). Without the table, tests of its outputs are
        partial; when the outputs are not named either, every later filter is."""
        parsed = escu_lookups.parse_stage(stage.args)
        name = parsed.name if parsed else (stage.args.split() or ["?"])[0]
        table = escu_lookups.load(self.lookups_dir, name) if parsed else "cannot read its arguments"
        if isinstance(table, str):
            self.partial(stage.text, f"lookup {name}: {table}")
            if parsed is None or not parsed.outputs:
                return "other", False
            for _, alias in parsed.outputs:
                self.computed.pop(alias, None)
                self.opaque[alias] = f"`| lookup {name}` was not imported ({table})"
            return "computed", False
        assert parsed is not None
        outputs = parsed.outputs or tuple((c, c) for c in table.columns if c not in dict(parsed.inputs))
        try:
            if len(parsed.inputs) != 1:
                raise _NotEventField(f"lookup {name} on {len(parsed.inputs)} fields")
            column, event_name = parsed.inputs[0]
            subject = self.result_field(event_name)
        except _NotEventField as err:
            for _, alias in outputs:
                self.computed.pop(alias, None)
                self.opaque[alias] = str(err)
            return "computed", False
        for output, alias in outputs:
            keys = tuple((table.key_pattern(column, row[column]), row.get(output) or "")
                         for row in table.rows if row.get(column))
            self.opaque.pop(alias, None)
            self.computed[alias] = LookupOutput(subject, keys, table.caseless)
        return "computed", True

    def filter_field(self, name: str) -> str:
        """A result field for a filter: an event field, or a countable aggregate (marked)."""
        original = self.renamed.get(name, name)
        if original in self.countable and not ({original, name} & (self.results | set(self.computed) | set(self.opaque))):
            return _AGGREGATE_MARK + original
        return self.result_field(name)

    def take_thresholds(self, expr: Expr) -> Expr | None:
        """Top-level `aggregate <op> integer` conjuncts become thresholds; the rest is returned.

        Conjuncts on split-by fields are the same for every event of a group, so testing
        them before counting (as the model does) selects the same groups.
        """
        conjuncts = list(expr.items) if isinstance(expr, And) else [expr]
        rest: list[Expr] = []
        found: list[Threshold] = []
        for item in conjuncts:
            marked = [m for m in matches(item) if m.field and m.field.startswith(_AGGREGATE_MARK)]
            if not marked:
                rest.append(item)
                continue
            alias = marked[0].field[len(_AGGREGATE_MARK):] if marked[0].field else ""
            if not (isinstance(item, Match) and (item.op in COMPARE_OPS or item.op is Op.EQUALS)
                    and len(item.values) == 1 and type(item.values[0]) is int):
                raise _NotEventField(f"the test on aggregate '{alias}' is not `{alias} <op> <integer>` "
                                     "in an AND")
            if self.time_split and self.window is None:
                raise _NotEventField(f"'{alias}' counts per `_time` value without a span" if self.span is None
                                     else f"span '{self.span}' is not a number of s, m, h, d or w")
            aggregate, counted = self.countable[alias]
            found.append(Threshold(aggregate, item.op, item.values[0], counted))
        self.thresholds.extend(found)
        return normalize(all_of(rest)) if rest else None

    def macro_stage(self, name: str, args: str) -> str:
        if name == "drop_dm_object_name":
            return "drop_dm_object_name"
        if name in self.unknown_macros:
            where = f"in {self.library.directory}" if self.library.directory else "(no macros directory found)"
            self.partial(f"`{name}`", f"macro `{name}` is not defined {where}: what it keeps is unknown "
                                      "(the import is broader)")
            return "other"
        if name.endswith("_filter"):
            return "filter_macro"
        return "presentation"  # security_content_ctime and other kept standard macros

    def rename(self, args: str) -> bool:
        pairs = _RENAME.findall(args)
        if not pairs:
            return False
        for old, new in pairs:
            old, new = old.strip('"'), new.strip('"')
            if old == f"{self.node}.*" and new == "*":
                continue  # drop_dm_object_name written out
            if "*" in old or "*" in new:
                self.results.clear()  # later filters cannot be traced to event fields
                return False
            if self.bare(self.renamed.get(old, old)) in self.results:
                self.results.add(new)
            self.renamed[new] = self.renamed.get(old, old)
        return True


_REX = re.compile(r'^\s*(?P<options>(?:(?!field\b)\w+\s*=\s*[^\s"]+\s+)*)'
                  r'(?:field\s*=\s*(?P<field>"[^"]+"|[^\s"]+)\s+)?'
                  r'(?P<more>(?:\w+\s*=\s*[^\s"]+\s+)*)(?P<regex>"(?:[^"\\]|\\.)*")\s*$', re.S)
# A PCRE named group `(?<name>` or `(?P<name>`; not a lookbehind `(?<=`, `(?<!`.
_NAMED_GROUP = re.compile(r"(?<!\\)\(\?P?<([A-Za-z_]\w*)>")


_GREEDY_NEGATED = re.compile(r"\[\^((?:[^\]\\]|\\.)+)\]\+")


_FROM_DATAMODEL = re.compile(r'^\s*datamodel\s*[:=]?\s*"?([\w.]+)"?\s*$', re.I)
_DATAMODEL_COMMAND = re.compile(r"^\s*(\w+)\s+(\w+)(?:\s+search)?\s*$", re.I)


def _dataset_search(stage: Stage) -> str | None:
    """`Model.DataSet` when the first stage reads a data set's events (`| from datamodel:"X.Y"`,
    `| from datamodel X.Y`, `| datamodel X Y search`); None for any other first stage."""
    found = (_FROM_DATAMODEL.match(stage.args) if stage.command == "from"
             else _DATAMODEL_COMMAND.match(stage.args) if stage.command == "datamodel" else None)
    if found is None:
        return None
    return ".".join(found.groups())


def _any_value_test(expr: Expr, multivalued: frozenset[str]) -> bool:
    """Is a filter on fields holding every value of a group (`values(f) as f`) the same test as
    keeping the events that pass it? Splunk tests such a field against each of its values and keeps
    the row when one matches, so a single positive test, or an OR of them, selects exactly the
    groups with such an event; an AND of two such tests may be met by two different events, and a
    negation asks about all of them. Tests of other fields (split-by values, the same for the whole
    group) may be ANDed with one such test."""
    def mentions(item: Expr) -> bool:
        return any(m.field in multivalued for m in matches(item))

    if not mentions(expr):
        return True
    if isinstance(expr, Match):
        return True
    if isinstance(expr, Or):
        return all(_any_value_test(item, multivalued) for item in expr.items)
    if isinstance(expr, And):
        holding = [item for item in expr.items if mentions(item)]
        return len(holding) == 1 and _any_value_test(holding[0], multivalued)
    return False  # a negation: no value may match, a test of every event of the group


def _last_greedy_group(text: str, group: re.Match[str]) -> tuple[str | None, str | None]:
    """(regex before the group, the class's characters) when the named group ends the regex and
    is `[^...]+`; (None, None) otherwise (see `Capture`)."""
    body = _GREEDY_NEGATED.match(text, group.end())
    if body is None or text[body.end():] != ")":
        return None, None
    inline = _INLINE_FLAGS.match(text)
    prefix = _NAMED_GROUP.sub("(", text[inline.end() if inline else 0:group.start()])
    return prefix, body.group(1)


_INLINE_FLAGS = re.compile(r"^\(\?[imsx]+\)")
_RE2_QUIET = re2.Options()
_RE2_QUIET.log_errors = False  # the refusal is reported as a diagnostic, not on stderr


class _NotEventField(Exception):
    """A later stage filters on something that is not an event field."""


# ---------------------------------------------------------------------------
# The analytic
# ---------------------------------------------------------------------------

# Keys that become `Rule` fields; every other key stays in `extras` as it is.
_RULE_KEYS = frozenset({"name", "id", "description", "status", "author", "date", "creation_date",
                        "modification_date", "references"})


def read_escu(doc: dict[str, Any], text: str, path: str, macros_dir: Path | None = None) -> Rule:
    """Build a `Rule` from one parsed ESCU analytic (`text` is its source, for line numbers)."""
    origin = Origin(path, locate(text, ("name",)) or 1, format="escu")
    search = doc.get("search")
    if not isinstance(search, str) or not search.strip():
        raise SigmaWmiError("'search' must be a non-empty string", origin.at(locate(text, ("search",)) or 1),
                            "invalid-escu")
    if not isinstance(doc.get("name"), str) or not doc["name"].strip():
        raise SigmaWmiError("'name' must be a non-empty string", origin, "invalid-escu")
    directory = macros_dir if macros_dir is not None else macro_lib.find_macros_dir(path)
    search_origin = origin.at(locate(text, ("search",)) or origin.line)
    imported = import_search(search, macro_lib.MacroLibrary(directory), search_origin)

    values = DocumentValues(doc, text, origin)
    techniques, tactics, attack_notes = _attack(values.text_list("tags", "mitre_attack_id", single=True), origin)
    for key in ("data_source", "data_sources"):  # read by the ATC cards
        values.text_list(key, single=True)
    values.text_value("how_to_implement")  # printed by the docs pages
    extras = {key: value for key, value in doc.items() if key not in _RULE_KEYS}
    extras["spl"] = dict(imported.metadata, where_exact=imported.where_exact, partial=imported.partial)
    extras["import_status"] = "partial" if imported.partial else "ok"
    false_positives = values.text_value("known_false_positives")
    return Rule(
        id=values.text_value("id") or "",
        title=doc["name"].strip(),
        detection=imported.detection,
        logsource=imported.logsource,
        description=(values.text_value("description") or "").strip(),
        status=values.text_value("status"),
        authors=tuple(a.strip() for a in (values.text_value("author") or "").split(",") if a.strip()),
        date=_date(values.text_value("date") or values.text_value("creation_date")),
        modified=_date(values.text_value("modification_date")),
        references=tuple(r for r in values.text_list("references") if r),
        falsepositives=(false_positives.strip(),) if false_positives else (),
        tags=tuple(f"attack.{t}" for t in tactics) + tuple(f"attack.{t.id.lower()}" for t in techniques),
        tactics=tactics,
        techniques=techniques,
        fields=imported.by,
        aggregation=imported.aggregation,
        tuning_macro=next((m for m in imported.metadata["macros"] if m.endswith("_filter")), None),
        origin=origin,
        extras=extras,
        diagnostics=tuple(imported.diagnostics + attack_notes),
        source_text=text,
    )


def import_search(search: str, library: macro_lib.MacroLibrary, origin: Origin,
                  cat: Catalog | None = None) -> SearchImport:
    """Import one ESCU search (a tstats data-model search plus filter stages)."""
    importer = _Importer(library, origin, cat or catalog())
    return importer.run(search)


def _attack(ids: tuple[str, ...], origin: Origin) -> tuple[tuple[Technique, ...], tuple[str, ...], list[Diagnostic]]:
    table = attack()
    techniques: list[Technique] = []
    tactics: list[str] = []
    notes: list[Diagnostic] = []
    for raw in ids:
        technique = Technique(raw.strip().upper())
        if technique not in techniques:
            techniques.append(technique)
        known, diagnostic = table.resolve(technique.id)
        if diagnostic is not None:  # the conditions are still exact: worth knowing, not a partial import
            notes.append(Diagnostic(Level.INFO, diagnostic.code, diagnostic.message, origin))
        for tactic_id in known.tactics if known else ():
            tactic = table.tactic(tactic_id)
            if tactic and tactic.shortname not in tactics:
                tactics.append(tactic.shortname)
    return tuple(techniques), tuple(tactics), notes


def _date(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()[:10]
    return str(value)


__all__ = ["PARTIAL", "SearchImport", "import_search", "is_escu", "is_partial", "read_escu"]
