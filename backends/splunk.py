"""Splunk SPL: raw event search, CIM `tstats` data-model search, savedsearches.conf.

Matches that the search language can express exactly go into the search; the rest
(regular expressions, case-sensitive strings, field references) go into a trailing
`| where` in eval syntax, so an OR that mixes both is still an OR.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar

from sigma_wmi.backends.base import Backend, OptionSpec, Output, info
from sigma_wmi.backends.query import Fragment, QueryGenerator
from sigma_wmi.catalog import Catalog, LogSourceInfo, catalog, to_profile, without_absent_fields
from sigma_wmi.errors import Diagnostic, Level, UnsupportedError
from sigma_wmi.model import (
    Aggregate,
    Aggregation,
    And,
    Expr,
    Match,
    Op,
    Pattern,
    Regex,
    Rule,
    Wildcard,
    format_timespan,
    full_pattern,
    map_matches,
    matches,
    pattern_regex,
    walk,
)

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
        """Can the search language express this subtree exactly (up to wildcard diagnostics)?"""
        return not any(
            isinstance(node, Match)
            and (node.op in (Op.REGEX, Op.FIELDREF) or (node.case_sensitive and node.op.is_string))
            for node in walk(expr))

    def value(self, pattern: Pattern) -> str:
        out = []
        for part in pattern.parts:
            if part is Wildcard.MANY:
                out.append("*")
            elif part is Wildcard.ONE:
                self.warn("single-wildcard", "SPL has no single-character wildcard; '?' became '*' (broader)")
                out.append("*")
            else:
                assert isinstance(part, str)
                if "*" in part:
                    self.warn("literal-wildcard",
                              "SPL cannot escape '*'; a literal '*' in a value matches as a wildcard (broader)")
                out.append(part)
        return spl_string("".join(out))

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
# The backend
# ---------------------------------------------------------------------------

# ESCU's standard macros and what they expand to for users without ESCU installed.
ESCU_MACROS = {
    "security_content_summariesonly": "summariesonly=false allow_old_summaries=true fillnull_value=null",
    "drop_dm_object_name": "rename {node}.* as *",
    "security_content_ctime": 'convert timeformat="%Y-%m-%dT%H:%M:%S" ctime({field})',
}

DEFAULT_BY = {
    "Processes": ("dest", "user", "parent_process_name", "parent_process", "process_name", "process",
                  "process_id", "parent_process_id"),
    "Filesystem": ("dest", "user", "process_guid", "process_id", "file_path", "file_name"),
    "Registry": ("dest", "user", "process_guid", "process_id", "registry_path", "registry_value_data"),
    "All_Traffic": ("dest", "src", "dest_port", "transport"),
    "DNS": ("src", "query", "answer"),
}

_LEVEL_SEVERITY = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


class SplunkBackend(Backend):
    name = "splunk"
    description = "Splunk SPL: raw event search, CIM tstats data-model search, savedsearches.conf"
    formats = ("raw", "tstats", "savedsearches")
    extensions: ClassVar[Mapping[str, str]] = {"raw": ".spl", "tstats": ".spl", "savedsearches": ".conf"}
    combined_formats = frozenset({"savedsearches"})
    options = (
        OptionSpec("profile", "raw-event field names: sysmon, security (4688), or auto from the log source",
                   "auto", ("auto", "sysmon", "security")),
        OptionSpec("source_template", "log-source condition for a Windows channel ({channel} is replaced)",
                   'source="XmlWinEventLog:{channel}"'),
        OptionSpec("expand_macros", "tstats: write ESCU macros out in full (for Splunk without ESCU)", False),
        OptionSpec("by", "tstats: comma-separated split-by fields (default: per data model)", ()),
        OptionSpec("cron_schedule", "savedsearches: cron schedule", "*/15 * * * *"),
        OptionSpec("earliest", "savedsearches: dispatch.earliest_time", "-20m"),
        OptionSpec("latest", "savedsearches: dispatch.latest_time", "now"),
        OptionSpec("search_format", "savedsearches: which query goes into search =", "raw", ("raw", "tstats")),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.catalog: Catalog = catalog()

    def convert(self, rule: Rule, format: str | None = None) -> Output:
        chosen = self.check_format(format)
        diagnostics: list[Diagnostic] = []
        if chosen == "raw":
            text = self.raw(rule, diagnostics)
        elif chosen == "tstats":
            text = self.tstats(rule, diagnostics)
        else:
            text = self.savedsearch(rule, diagnostics)
        return Output(text, diagnostics)

    # ---- raw event search ----
    def raw_profile(self, rule: Rule, source: LogSourceInfo) -> str:
        chosen: str = self.settings["profile"]
        if chosen != "auto":
            return chosen
        if rule.logsource.service == "security":
            return "security"
        return source.raw_profile or "sysmon"

    def raw(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        source = self.catalog.logsource(rule.logsource)
        profile = self.raw_profile(rule, source)
        detection = self._drop_absent(rule, profile, diagnostics)
        detection = to_profile(detection, ("splunk", profile), self._unknown_raw(rule, profile), diagnostics,
                               self.catalog)
        prefix = self.source_condition(rule, source, profile, diagnostics)
        query = self.search_and_where(detection, prefix, diagnostics)
        if rule.aggregation is not None:
            query += self.raw_stats(rule.aggregation, ("splunk", profile), self._unknown_raw(rule, profile))
        return query

    def raw_stats(self, aggregation: Aggregation, chain: tuple[str, ...], unknown: Any) -> str:
        """`| stats ... by ... | where count >= n` over raw events. A field the events only
        have inside another (process name in the image path) is computed first."""
        evals: list[str] = []

        def event_field(canonical: str) -> str:
            name = self.catalog.first_name(chain, canonical)
            if name:
                return name
            spec = self.catalog.spec(canonical)
            if spec and spec.derive and spec.derive.how == "basename":
                source = event_field(spec.derive.source)
                # everything after the last backslash (the whole value when there is none)
                evals.append(f"eval {eval_field(canonical)}=replace({eval_field(source)}, {_UP_TO_BACKSLASH}, {_EMPTY})")
                return canonical
            return str(unknown(canonical) or canonical)

        group = [event_field(f) for f in aggregation.group_by]
        counted = {t.field: event_field(t.field) for t in aggregation.thresholds if t.field}
        return _stats_tail(aggregation, group, counted, evals)

    def _drop_absent(self, rule: Rule, profile: str, diagnostics: list[Diagnostic]) -> Expr:
        """A Sysmon-style rule on 4688 events: tests on fields 4688 lacks can never hold."""
        if profile != "security" or rule.logsource.service == "security":
            return rule.detection

        def absent(name: str) -> bool:
            spec = self.catalog.spec(name)
            if spec is None or spec.names.get("security"):
                return False
            return not (spec.derive and self.catalog.name_in("security", spec.derive.source))

        missing = sorted({m.field for m in matches(rule.detection) if m.field and absent(m.field)})
        if not missing:
            return rule.detection
        names = ", ".join(self.catalog.name_in("sigma", f) or f for f in missing)
        decided = without_absent_fields(rule.detection, absent)
        if decided is False:
            raise UnsupportedError(f"splunk: the rule cannot match Security 4688 events, which have no {names}")
        if decided is True:
            raise UnsupportedError(f"splunk: without {names} (absent from Security 4688 events) the rule "
                                   "would match every process creation")
        diagnostics.append(Diagnostic(Level.WARNING, "absent-field",
                                      f"conditions on {names} dropped: Security 4688 events never have them, "
                                      "so those branches can never match there", target="splunk"))
        return decided

    def _unknown_raw(self, rule: Rule, profile: str) -> Any:
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

    def source_condition(self, rule: Rule, source: LogSourceInfo, profile: str,
                         diagnostics: list[Diagnostic]) -> list[str]:
        if rule.logsource.product not in (None, "windows") or (
                not source.channel and not source.sysmon_event_ids and not source.security_event_ids):
            diagnostics.append(info("no-logsource-condition",
                                    f"no Splunk source known for log source {rule.logsource.key()}; "
                                    "the search has no source condition"))
            return []
        template: str = self.settings["source_template"]
        if profile == "security" and source.security_event_ids:
            return [template.format(channel="Security"), _event_codes(source.security_event_ids)]
        if profile == "sysmon" and source.sysmon_event_ids:
            return [template.format(channel="Microsoft-Windows-Sysmon/Operational"),
                    _event_codes(source.sysmon_event_ids)]
        parts = [template.format(channel=source.channel)] if source.channel else []
        if source.event_ids:
            parts.append(_event_codes(source.event_ids))
        return parts

    def search_and_where(self, detection: Expr, prefix: list[str], diagnostics: list[Diagnostic]) -> str:
        searchable, rest = _split(detection, diagnostics)
        parts = list(prefix)
        if searchable:
            search = SplunkSearch(diagnostics)
            fragment = search.join([search.node(c) for c in searchable], "and")
            # A top-level OR after the prefix must be grouped: `a b OR c` is `a AND (b OR c)` in SPL,
            # which is right, but explicit parentheses keep every reader from doubting it.
            text = fragment.text if fragment.kind != "or" or not parts else f"({fragment.text})"
            parts.append(text)
        return (" ".join(parts) if parts else "*") + _where(rest, diagnostics)

    # ---- CIM data model (tstats) ----
    def tstats(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        source = self.catalog.logsource(rule.logsource)
        if not source.cim:
            raise UnsupportedError(
                f"splunk tstats: no CIM data model for log source {rule.logsource.key()}")
        node = source.cim.split(".")[-1]

        def unknown(name: str) -> str:
            raise UnsupportedError(f"splunk tstats: field '{name}' has no CIM equivalent in {source.cim}")

        detection = to_profile(rule.detection, "cim", unknown, diagnostics, self.catalog)
        prefixed = _prefix_fields(detection, node + ".")
        where_parts, post = _split(prefixed, diagnostics)
        search = SplunkSearch(diagnostics)
        condition = search.join([search.node(c) for c in where_parts], "and").text if where_parts else ""
        aggregation = rule.aggregation

        def cim_name(canonical: str) -> str:
            return self.catalog.name_in("cim", canonical) or unknown(canonical)

        if aggregation is not None:
            if self.settings["by"]:
                diagnostics.append(info("by-ignored", "option by is ignored: the rule's threshold decides the "
                                                      "split-by fields"))
            by = [cim_name(f) for f in aggregation.group_by]
        else:
            by = list(self.settings["by"] or DEFAULT_BY.get(node, ("dest",)))
        # A `| where` after tstats only sees fields the search split by: add the ones it tests.
        for conjunct in post:
            for match in matches(conjunct):
                names = [match.field] + ([str(v) for v in match.values] if match.op is Op.FIELDREF else [])
                for name in names:
                    bare = name.split(".", 1)[1] if name and name.startswith(node + ".") else name
                    if bare and bare not in by:
                        if aggregation is not None:
                            raise UnsupportedError(f"splunk tstats: the `| where` test on {bare} would need it "
                                                   "as a split-by field, which changes the threshold's groups")
                        by.append(bare)
        macros = self.settings["expand_macros"]
        summaries = ESCU_MACROS["security_content_summariesonly"] if macros else "`security_content_summariesonly`"
        counted = {t.field: cim_name(t.field) for t in aggregation.thresholds if t.field} if aggregation else {}
        distinct = "".join(dict.fromkeys(f" dc({node}.{counted[t.field]}) as {_alias(t)}"
                                         for t in aggregation.thresholds if t.field)) if aggregation else ""
        split = [f"{node}.{f}" for f in by]
        if aggregation and aggregation.window:
            split.append(f"_time span={format_timespan(aggregation.window)}")
        query = (f"| tstats {summaries} count{distinct} min(_time) as firstTime max(_time) as lastTime "
                 f"from datamodel={source.cim}" + (f" where {condition}" if condition else "")
                 + (" by " + " ".join(split) if split else ""))
        if macros:
            query += " | " + ESCU_MACROS["drop_dm_object_name"].format(node=node)
            for field in ("firstTime", "lastTime"):
                query += " | " + ESCU_MACROS["security_content_ctime"].format(field=field)
        else:
            query += f" | `drop_dm_object_name({node})`"
            query += " | `security_content_ctime(firstTime)` | `security_content_ctime(lastTime)`"
        # after drop_dm_object_name the fields have lost their node prefix
        query += _where(post, diagnostics, lambda name: name.split(".", 1)[1] if name.startswith(node + ".") else name)
        return query + (" | where " + _thresholds(aggregation) if aggregation else "")

    # ---- savedsearches.conf ----
    def savedsearch(self, rule: Rule, diagnostics: list[Diagnostic]) -> str:
        search = self.tstats(rule, diagnostics) if self.settings["search_format"] == "tstats" \
            else self.raw(rule, diagnostics)
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
        return "\n".join(lines) + "\n"

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
        return text.replace(f"\n[{identity}]\n", f"\n[{new}]\n", 1), new


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


def _split(detection: Expr, diagnostics: list[Diagnostic]) -> tuple[list[Expr], list[Expr]]:
    """Top-level conjuncts the search language expresses, and the rest (for `| where`)."""
    search = SplunkSearch(diagnostics)
    conjuncts = list(detection.items) if isinstance(detection, And) else [detection]
    return [c for c in conjuncts if search.searchable(c)], [c for c in conjuncts if not search.searchable(c)]


def _where(conjuncts: list[Expr], diagnostics: list[Diagnostic], field_name: Any = None) -> str:
    if not conjuncts:
        return ""
    where = SplunkEval(diagnostics, field_name)
    return " | where " + where.join([where.node(c) for c in conjuncts], "and").text


# the regex `^.*[\\]` (everything through the last backslash) as an eval string
_UP_TO_BACKSLASH = spl_string(r"^.*[\\]")
_EMPTY = spl_string("")
_COMPARE_SYMBOL = {Op.EQUALS: "==", **SplunkEval.COMPARE_SYMBOLS}


def _alias(threshold: Any) -> str:
    """The result column of one threshold's aggregate."""
    return "count" if threshold.aggregate is Aggregate.COUNT else f"dc_{threshold.field}"


def _thresholds(aggregation: Aggregation) -> str:
    return " AND ".join(f"{_alias(t)} {_COMPARE_SYMBOL[t.op]} {t.value}" for t in aggregation.thresholds)


def _stats_tail(aggregation: Aggregation, group: list[str], counted: dict[str, str], evals: list[str]) -> str:
    """`| bin | stats | where` for a threshold over events whose fields are already named."""
    stages = list(dict.fromkeys(evals))
    by = [search_field(name) for name in group]
    if aggregation.window:
        stages.append(f"bin _time span={format_timespan(aggregation.window)}")
        by.append("_time")
    aggregates = ["count"] + [f"dc({search_field(counted[t.field])}) as {_alias(t)}"
                              for t in aggregation.thresholds if t.field]
    stages.append("stats " + " ".join(dict.fromkeys(aggregates)) + (" by " + " ".join(by) if by else ""))
    stages.append("where " + _thresholds(aggregation))
    return "".join(" | " + stage for stage in stages)


def _event_codes(ids: tuple[int, ...]) -> str:
    if len(ids) == 1:
        return f"EventCode={ids[0]}"
    return "EventCode IN (" + ", ".join(str(i) for i in ids) + ")"


def _prefix_fields(expr: Expr, prefix: str) -> Expr:
    """Data-model fields carry their node name (`Processes.process_name`), field references too."""
    def prefixed(match: Match) -> Match:
        if match.field is None:
            return match
        values = tuple(prefix + str(v) for v in match.values) if match.op is Op.FIELDREF else match.values
        return Match(prefix + match.field, match.op, values, match.case_sensitive, match.line)

    return map_matches(expr, prefixed)
