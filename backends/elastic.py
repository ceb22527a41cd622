"""Elastic: EQL, Kibana KQL and Lucene query_string, plus Kibana/detection-rules exports.

One generator per language on the shared walk in `query.py`; the languages differ in
their escaping (one pure function per context below), their operators and how they
keep Sigma's case-insensitive matching:

- EQL: `:` (and `like~`, `regex~`) are case-insensitive, so every string match keeps
  Sigma's semantics. Values with a literal `*` or `?` go through `regex~` because `:`
  and `like` have no escape for wildcard characters.
- KQL and Lucene: keyword fields compare case-sensitively. Where the index's schema has a
  `.caseless` (lower-case normalized) sub-field, the query uses it with a lower-cased value;
  elsewhere Lucene folds case into a regex (`[cC]`) and KQL, which has no regex, lists the
  field in one per-rule `case-sensitive` warning.

Where the events are, and what the query may name, is data: `elastic_profile.place` finds
the index and the generated schema of the rule's log source on the profile (`ecs`: Elastic
Defend; `elastic_agent`: the Windows/System integrations; `winlogbeat`), and each backend's
`TRANSFORMS` rewrite the rule to that schema's fields, types and event kinds before the
generator writes it. A field the index lacks fails the rule (`field-not-in-schema`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from sigma_wmi.backends import elastic_profile
from sigma_wmi.backends.base import Backend, OptionSpec, Output
from sigma_wmi.backends.elastic_regex import (
    RegexError,
    lucene_pattern_regex,
    lucene_regex,
    regex_wildcards,
)
from sigma_wmi.backends.query import Fragment, QueryGenerator
from sigma_wmi.errors import Diagnostic, Level, UnsupportedError, add_once
from sigma_wmi.model import (
    Aggregate,
    Expr,
    Match,
    Not,
    Op,
    Pattern,
    PatternPart,
    Regex,
    Rule,
    Temporal,
    Wildcard,
    describe_aggregation,
    describe_threshold,
    format_timespan,
    full_pattern,
    matches,
    patterns_match,
)

# ---------------------------------------------------------------------------
# Escaping, one pure function per language and context
# ---------------------------------------------------------------------------

# EQL "..." strings (Elasticsearch grammar): \\ \" and the usual control escapes;
# other control characters as \u{XX} (2-8 hex digits). Raw CR/LF are not allowed.
_EQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def eql_string(text: str) -> str:
    """`text` as an EQL double-quoted string literal."""
    out = []
    for char in text:
        if char in _EQL_ESCAPES:
            out.append(_EQL_ESCAPES[char])
        elif ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029":
            out.append(f"\\u{{{ord(char):02X}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_EQL_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_EQL_KEYWORDS = frozenset({
    "and", "any", "by", "false", "in", "join", "like", "maxspan", "not", "null", "of", "or", "regex",
    "runs", "sample", "sequence", "true", "until", "where", "with",
})


def eql_field(name: str) -> str:
    """A field reference; backquoted unless every dotted segment is a plain identifier."""
    segments = name.split(".")
    if all(_EQL_IDENT.match(s) and s.lower() not in _EQL_KEYWORDS for s in segments):
        return name
    if any(c in name for c in "`\r\n") or not name:
        raise UnsupportedError(f"eql: field name {name!r} cannot be written in EQL")
    return f"`{name}`"


# Kibana KQL (kuery grammar). Quoted strings know only \\ and \" (an unescaped
# backslash before t, r, n or u would start an escape, so every backslash is escaped).
def kql_quoted(text: str) -> str:
    """`text` as a KQL quoted string: an exact phrase, `*` is literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_KQL_SPECIAL = frozenset('\\():<>"*{}')
_KQL_SPACE = frozenset(" \u00a0")  # the grammar's Space, minus \t \r \n which we always escape
_KQL_WS_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}
# What JavaScript's String.trim() removes: Kibana trims every unquoted literal.
JS_WHITESPACE = frozenset("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
                          + "".join(chr(c) for c in range(0x2000, 0x200B)))


def kql_unquoted(parts: Sequence[str | Wildcard]) -> str:
    """Text and `Wildcard.MANY` tokens as one unquoted KQL literal.

    Escapes the special characters and the keywords the grammar would read as
    operators: `or`/`and` after a space, `not` before a space or at the end. A
    lower-case `\\not` would read as `\\n` + `ot`, so its `n` is written `\\u006e`.
    The caller keeps whitespace off the literal's edges (Kibana trims it).
    """
    chars: list[str | None] = []  # None is a wildcard
    for part in parts:
        if isinstance(part, Wildcard):
            if part is not Wildcard.MANY:
                raise ValueError("KQL has only the '*' wildcard")
            chars.append(None)
        else:
            chars.extend(part)
    out: list[str] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if char is None:
            out.append("*")
            i += 1
            continue
        word = _kql_keyword_at(chars, i) if char in "oaONnA" else None
        if word:
            out.append("\\u006e" + word[1:] if word[0] == "n" else "\\" + word)
            i += len(word)
            continue
        if char in _KQL_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(_KQL_WS_ESCAPES.get(char, char))
        i += 1
    return "".join(out)


# Unquoted literals the kuery grammar reads as values or operators, in any letter case.
_KQL_WORDS = frozenset({"null", "true", "false", "and", "or", "not"})


def kql_field(name: str) -> str:
    """A field name before `:`: quoted when unquoted it would read as a keyword or a
    value (`null`, `true`), else an unquoted literal (where `*` would be a field pattern)."""
    return kql_quoted(name) if name.lower() in _KQL_WORDS else kql_unquoted([name])


def _kql_keyword_at(chars: list[str | None], i: int) -> str | None:
    def text(start: int, length: int) -> str:
        window = chars[start:start + length]
        return "" if None in window else "".join(c for c in window if c is not None)

    def space_or_end(at: int) -> bool:
        return at >= len(chars) or chars[at] in _KQL_SPACE

    for word in ("or", "and", "not"):
        candidate = text(i, len(word))
        if candidate.lower() != word or not space_or_end(i + len(word)):
            continue
        if word == "not" or (i > 0 and chars[i - 1] in _KQL_SPACE):
            return candidate
    return None


# Lucene query_string (classic query parser): a backslash escapes any character, so
# escaping one more than needed is harmless; `'` starts a string in some Lucene readers.
_LUCENE_RESERVED = frozenset('+-=&|><!(){}[]^"~*?:\\/\'')


def lucene_term(parts: Sequence[str | Wildcard]) -> str:
    """Text and wildcard tokens as an unquoted Lucene term."""
    out = []
    for part in parts:
        if isinstance(part, Wildcard):
            out.append(part.value)
            continue
        for char in part:
            out.append("\\" + char if char in _LUCENE_RESERVED or char.isspace() else char)
    return "".join(out)


def lucene_phrase(text: str) -> str:
    """`text` as a quoted Lucene phrase; on keyword fields an exact term."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Words the classic query parser reads as operators wherever a term may stand.
_LUCENE_OPERATORS = frozenset({"AND", "OR", "NOT", "TO"})


def lucene_field(name: str) -> str:
    """A field name before `:`; an operator word gets its first letter escaped (`\\AND`).
    `_exists_` is refused: Elasticsearch unescapes field names before it tests for it; so
    are control characters, which no real field holds and not every Lucene reader unescapes."""
    if not name or name == "_exists_" or any(unicodedata.category(c) == "Cc" for c in name):
        raise UnsupportedError(f"lucene: field name {name!r} cannot be written in a query_string")
    if name in _LUCENE_OPERATORS:
        return "\\" + name
    return lucene_term([name])


# ---------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------

def _text_has(pattern: Pattern, chars: str) -> bool:
    return any(isinstance(p, str) and any(c in p for c in chars) for p in pattern.parts)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


class EqlGenerator(QueryGenerator):
    """EQL conditions. String values group by operator: `:` (case-insensitive, wildcards),
    `regex~` (literal `*`/`?`), and `==`/`like`/`regex` for Sigma's `cased` values."""

    AND = " and "
    OR = " or "
    NOT = "not "
    COMPARE = "{field} {op} {value}"
    NULL_IS_UNKNOWN = True
    target = "eql"

    def strings(self, match: Match) -> Fragment:
        field = eql_field(self.named(match))
        groups: dict[str, list[str]] = {}
        scalars: list[str] = []
        for value in match.values:  # typed by the schema already (elastic_profile.typed_literals)
            if not isinstance(value, (Pattern, str)):
                scalars.append(f"{field} == {_scalar(value)}")
                continue
            pattern = full_pattern(match, value if isinstance(value, Pattern) else Pattern.literal(value))
            if _text_has(pattern, "*?"):  # `:`/`like` cannot escape them; a regex can
                regex = lucene_pattern_regex(pattern)
                groups.setdefault("regex" if match.case_sensitive else "regex~", []).append(eql_string(regex))
            elif not match.case_sensitive:
                groups.setdefault(":", []).append(eql_string(pattern.text))
            else:
                groups.setdefault("like" if pattern.has_wildcards else "==", []).append(eql_string(pattern.text))
        texts = [self.operator(field, op, values) for op, values in groups.items()] + scalars
        return Fragment(texts[0]) if len(texts) == 1 else Fragment(self.OR.join(texts), "or")

    match_equals = match_contains = match_startswith = match_endswith = match_wildcard = strings

    @staticmethod
    def operator(field: str, op: str, values: list[str]) -> str:
        if len(values) == 1:
            return f"{field} {op} {values[0]}"
        if op == "==":
            return f"{field} in ({', '.join(values)})"
        return f"{field} {op} ({', '.join(values)})"

    def match_regex(self, match: Match) -> Fragment:
        field = eql_field(self.named(match))
        ops: dict[str, list[str]] = {}
        for value in match.values:
            assert isinstance(value, Regex)
            try:  # EQL's regex~ folds case itself; Lucene syntax otherwise
                text = lucene_regex(value, caseless=False)
            except RegexError as err:
                raise self.unsupported(f"regular expression /{value.pattern}/: {err}", match) from None
            caseless = "i" in value.flags or value.pattern.startswith("(?i")
            ops.setdefault("regex~" if caseless else "regex", []).append(eql_string(text))
        texts = [self.operator(field, op, values) for op, values in ops.items()]
        return Fragment(texts[0]) if len(texts) == 1 else Fragment(self.OR.join(texts), "or")

    def match_cidr(self, match: Match) -> Fragment:
        field = eql_field(self.named(match))
        return Fragment(f"cidrMatch({field}, {', '.join(eql_string(str(v)) for v in match.values)})")

    def match_exists(self, match: Match) -> Fragment:
        return Fragment(self.present(match))

    def present(self, match: Match) -> str:
        return f"{eql_field(self.named(match))} != null"

    def match_null(self, match: Match) -> Fragment:
        field = eql_field(self.named(match))
        return Fragment(f"{field} == null or {field} == \"\"", "or")

    def compare_field(self, match: Match) -> str:
        return eql_field(self.named(match))

    def number(self, value: object) -> str:
        return _scalar(value)

    def named(self, match: Match) -> str:
        if match.field is None:
            raise self.unsupported("EQL has no search without a field", match)
        return match.field


class _KeywordQuery(QueryGenerator):
    """What KQL and Lucene share: `.caseless` subfields, case bookkeeping, value lists."""

    LIST: ClassVar[str] = "{field}:({values})"
    COMPARE = "{field} {op} {value}"
    case_sensitive_fields: list[str]

    def __init__(self, diagnostics: list[Diagnostic], caseless: Callable[[str], bool],
                 foldable: Callable[[str], bool] | None = None) -> None:
        super().__init__(diagnostics)
        self.caseless = caseless
        # keyword fields (whole-value terms) where a case-folded regex may stand in for `.caseless`
        self.foldable = foldable or (lambda name: False)
        self.case_sensitive_fields = []

    # per target
    def quoted(self, text: str) -> str:
        raise NotImplementedError

    def wildcard(self, pattern: Pattern) -> str:
        raise NotImplementedError

    def field_name(self, name: str) -> str:
        raise NotImplementedError

    def string_field(self, match: Match) -> tuple[str | None, bool]:
        """(field to query, lower-case the values?) for a string comparison."""
        texts = any(isinstance(v, (Pattern, str)) for v in match.values)
        if match.field is None:
            if texts and not match.case_sensitive:
                self.note_case("<keyword search>")
            return None, False
        if match.case_sensitive or not texts:
            return match.field, False
        if self.caseless(match.field):
            return match.field + ".caseless", True
        self.note_case(match.field)
        return match.field, False

    def note_case(self, field: str) -> None:
        if field not in self.case_sensitive_fields:
            self.case_sensitive_fields.append(field)

    def strings(self, match: Match) -> Fragment:
        field, lower = self.string_field(match)
        values: list[str] = []
        for value in match.values:
            if not isinstance(value, (Pattern, str)):
                values.append(_scalar(value))
                continue
            pattern = full_pattern(match, value if isinstance(value, Pattern) else Pattern.literal(value))
            if lower:
                pattern = Pattern(tuple(p.lower() if isinstance(p, str) else p for p in pattern.parts))
            values.append(self.wildcard(pattern) if pattern.has_wildcards else self.quoted(pattern.text))
        return self.values(field, values)

    match_equals = match_contains = match_startswith = match_endswith = match_wildcard = strings

    def values(self, field: str | None, values: list[str]) -> Fragment:
        if field is None:
            return Fragment(values[0]) if len(values) == 1 else Fragment(self.OR.join(values), "or")
        name = self.field_name(field)
        if len(values) == 1:
            return Fragment(f"{name}:{values[0]}")
        return Fragment(self.LIST.format(field=name, values=self.OR.join(values)))

    def match_cidr(self, match: Match) -> Fragment:
        return self.values(self.named(match), [self.quoted(str(v)) for v in match.values])


class KqlGenerator(_KeywordQuery):
    AND = " and "
    OR = " or "
    NOT = "not "
    target = "kql"

    def quoted(self, text: str) -> str:
        return kql_quoted(text)

    def not_node(self, expr: Not) -> Fragment:
        # The kuery grammar reads `not` before a sub-query, never before another `not`.
        inner = self.node(expr.item)
        text = inner.text if inner.kind == "atom" else self.GROUP.format(inner.text)
        return Fragment(self.NOT + text, "not")

    def field_name(self, name: str) -> str:
        if not name or name[0] in JS_WHITESPACE or name[-1] in JS_WHITESPACE:
            raise self.unsupported(f"field name {name!r} cannot be written in KQL")
        return kql_field(name)

    def wildcard(self, pattern: Pattern) -> str:
        parts = list(pattern.parts)
        if Wildcard.ONE in parts:
            self.warn("single-wildcard", "KQL has no single-character wildcard; '?' became '*' (broader)")
            parts = [Wildcard.MANY if p is Wildcard.ONE else p for p in parts]
        # Kibana trims unquoted literals: whitespace at an edge is kept only behind a '*'.
        if isinstance(parts[0], str) and parts[0][0] in JS_WHITESPACE:
            parts.insert(0, Wildcard.MANY)
            self.warn("trimmed-whitespace", "KQL trims unquoted values; a leading space is matched "
                      "after '*' (broader)")
        if isinstance(parts[-1], str) and parts[-1][-1] in JS_WHITESPACE:
            parts.append(Wildcard.MANY)
            self.warn("trimmed-whitespace", "KQL trims unquoted values; a trailing space is matched "
                      "before '*' (broader)")
        merged: list[PatternPart] = []
        for part in parts:  # '**' is the same as '*'
            if not (part is Wildcard.MANY and merged and merged[-1] is Wildcard.MANY):
                merged.append(part)
        return kql_unquoted(merged)

    def match_exists(self, match: Match) -> Fragment:
        return Fragment(f"{self.field_name(self.named(match))}:*")

    def match_null(self, match: Match) -> Fragment:
        return Fragment(f"not {self.field_name(self.named(match))}:*", "not")

    def compare_field(self, match: Match) -> str:
        return self.field_name(self.named(match))

    def number(self, value: object) -> str:
        return _scalar(value)

    def match_regex(self, match: Match) -> Fragment:
        """KQL has no regular expressions: the closest wildcard patterns, flagged when inexact."""
        patterns: list[Pattern] = []
        exact = True
        for value in match.values:
            assert isinstance(value, Regex)
            try:
                found, same = regex_wildcards(value)
            except RegexError as err:
                raise self.unsupported(f"regular expression /{value.pattern}/: {err}", match) from None
            patterns.extend(found)
            exact = exact and same
        if not exact:
            self.warn("regex-approximated",
                      f"KQL has no regular expressions; the regex on {match.field or 'the event'} became "
                      "wildcard patterns that match more (and, under a negation, fewer) events")
        return self.node(patterns_match(match.field, patterns, match.case_sensitive, match.line))


class LuceneGenerator(_KeywordQuery):
    AND = " AND "
    OR = " OR "
    NOT = "NOT "
    target = "lucene"
    # Elasticsearch refuses longer regular expressions (index.max_regex_length, default 1000).
    MAX_REGEX_LENGTH: ClassVar[int] = 1000

    def strings(self, match: Match) -> Fragment:
        """Without a `.caseless` sub-field, a keyword field keeps Sigma's case-insensitive
        match through a regex with both cases of every letter (`[cC]\\:`), where it fits."""
        field = match.field
        if field is None or match.case_sensitive or self.caseless(field) or not self.foldable(field) \
                or not all(isinstance(v, (Pattern, str)) for v in match.values):
            return super().strings(match)
        regexes = []
        for value in match.values:
            pattern = full_pattern(match, value if isinstance(value, Pattern) else Pattern.literal(str(value)))
            regex = lucene_pattern_regex(pattern, caseless=True)
            if len(regex) > self.MAX_REGEX_LENGTH:
                return super().strings(match)
            regexes.append("/" + regex + "/")
        return self.values(field, regexes)

    match_equals = match_contains = match_startswith = match_endswith = match_wildcard = strings

    def quoted(self, text: str) -> str:
        return lucene_phrase(text)

    def field_name(self, name: str) -> str:
        return lucene_field(name)

    def wildcard(self, pattern: Pattern) -> str:
        if _text_has(pattern, "\n"):  # a term cannot hold a newline readably; a regex can, exactly
            return "/" + lucene_pattern_regex(pattern) + "/"
        return lucene_term(pattern.parts)

    def join(self, parts: list[Fragment], kind: str) -> Fragment:
        # `a OR NOT b` is `a AND NOT b` to Lucene's boolean clauses: group a negation under OR.
        if kind == "or":
            parts = [Fragment(self.GROUP.format(p.text)) if p.kind == "not" else p for p in parts]
        return super().join(parts, kind)

    def match_exists(self, match: Match) -> Fragment:
        return Fragment(f"_exists_:{self.field_name(self.named(match))}")

    def match_null(self, match: Match) -> Fragment:
        return Fragment(f"NOT _exists_:{self.field_name(self.named(match))}", "not")

    _RANGES: ClassVar[dict[str, str]] = {"lt": "{{* TO {v}}}", "lte": "[* TO {v}]", "gt": "{{{v} TO *}}",
                                         "gte": "[{v} TO *]"}

    def _compare(self, match: Match) -> Fragment:
        field = self.field_name(self.named(match))
        template = self._RANGES[match.op.value]
        return self.any_value(match, lambda v: f"{field}:" + template.format(v=_scalar(v)))

    match_lt = match_lte = match_gt = match_gte = _compare

    def match_regex(self, match: Match) -> Fragment:
        field = self.named(match)
        texts = []
        for value in match.values:
            assert isinstance(value, Regex)
            try:  # query_string has no case-insensitive regex flag: fold case into the classes
                texts.append("/" + lucene_regex(value, caseless="i" in value.flags) + "/")
            except RegexError as err:
                raise self.unsupported(f"regular expression /{value.pattern}/: {err}", match) from None
        return self.values(field, texts)


# ---------------------------------------------------------------------------
# The backends
# ---------------------------------------------------------------------------

# Kibana's threshold rules refuse more group-by fields than this.
_KIBANA_MAX_THRESHOLD_FIELDS = 3


class ElasticBackend(Backend):
    """What the three Elastic languages share: profiles, placement, rewrites, exports."""

    formats = ("query", "ndjson", "toml")
    combined_formats = frozenset({"ndjson"})
    options = (
        OptionSpec("profile", "where the events are: " + "; ".join(
            f"{name}: {spec['title']}" for name, spec in elastic_profile.targets()["profiles"].items()),
            "ecs", elastic_profile.profiles()),
        OptionSpec("index", "ndjson/toml: comma-separated index patterns (default: the profile's index "
                   "for the rule's log source)", ()),
        OptionSpec("interval", "ndjson/toml: how often the rule runs", "5m"),
        OptionSpec("lookback", "ndjson/toml: extra look-back added to the interval", "1m"),
    )
    language: ClassVar[str]  # Kibana's name: eql, kuery, lucene
    rule_type: ClassVar[str]  # Kibana rule type: eql or query
    # The rewrites from the rule's canonical tree to the tree the generator writes, in order.
    TRANSFORMS: ClassVar[tuple[elastic_profile.Transform, ...]] = (
        elastic_profile.keywords_contain,
        elastic_profile.mapped_values,
        elastic_profile.target_names,
        elastic_profile.absent_fields,
        elastic_profile.source_conditions,
        elastic_profile.typed_literals,
        elastic_profile.keyword_limits,
    )

    @property
    def profile(self) -> str:
        return str(self.settings["profile"])

    def target(self, rule: Rule, diagnostics: list[Diagnostic]) -> elastic_profile.Target:
        """The rule placed on the profile (`no-index` when no index holds its events)."""
        placement = elastic_profile.place(rule, self.profile, self.catalog, tuple(self.settings["index"]))
        if placement.note:
            diagnostics.append(Diagnostic(Level.INFO, "index-guess",
                                          f"{self.name}: index {', '.join(placement.index)}: {placement.note}"))
        return elastic_profile.Target(rule, placement, diagnostics, self.catalog, self.name)

    def convert(self, rule: Rule, format: str | None = None) -> Output:
        from sigma_wmi.backends import elastic_export  # the exports need the query, not the reverse

        chosen = self.check_format(format)
        diagnostics: list[Diagnostic] = []
        placeholder = next((m for m in matches(rule.detection) if m.op is Op.PLACEHOLDER), None)
        if placeholder is not None:
            raise UnsupportedError(f"{self.name}: placeholder %{placeholder.values[0]}% has no values, and Elastic "
                                   "query text cannot refer to a value list; give its values with --placeholders "
                                   "FILE", code="unresolved-placeholder")
        if rule.aggregation is not None and rule.aggregation.steps:
            raise UnsupportedError(f"{self.name}: a {describe_aggregation(rule.aggregation)} correlation over several "
                                   "rules reads several log sources, which one Elastic query or threshold rule "
                                   "cannot count together")
        if rule.temporal is not None:
            query, index = self.sequence(rule.temporal, diagnostics)
            target = elastic_profile.Target(rule, replace(self.target(rule.temporal.steps[0].rule, []).placement,
                                                          index=index), diagnostics, self.catalog, self.name)
        else:
            target = self.target(rule, diagnostics)
            query = self.query(elastic_profile.apply(self.TRANSFORMS, rule.detection, target), target)
        threshold = None  # the Kibana threshold rule the export carries
        if rule.aggregation is not None:
            notes: list[Diagnostic] = []
            possible = self.threshold_rule(rule, target, notes)
            if chosen != "query":
                threshold = possible
                for note in notes:
                    add_once(diagnostics, note)
            if threshold is None:
                hint = " (a Kibana threshold rule carries it: --format ndjson or toml)" if possible else ""
                diagnostics.append(Diagnostic(
                    Level.WARNING, "threshold-not-applied",
                    f"{self.name}: the query matches every event the rule counts; its threshold "
                    f"({describe_aggregation(rule.aggregation)}) is not part of it{hint}"))
        if chosen == "query":
            text = query
        else:
            export = elastic_export.RuleExport(rule, query, self.language, self.rule_type,
                                               target.placement.index,
                                               self.settings["interval"], self.settings["lookback"], diagnostics,
                                               threshold, rule.aggregation.window if rule.aggregation else None)
            text = export.ndjson() if chosen == "ndjson" else export.toml()
        origin = rule.origin
        return Output(text, [replace(d, origin=d.origin or origin, target=d.target or self.name)
                             for d in diagnostics])

    def combine(self, outputs: Sequence[str], format: str | None = None) -> str:
        if format == "toml":  # one TOML document per rule cannot share a file
            return "\n".join(o.rstrip("\n") + "\n" for o in outputs)
        return super().combine(outputs, format)  # ndjson and queries: one per line

    def identity(self, text: str, format: str | None = None) -> str | None:
        from sigma_wmi.backends import elastic_export

        return elastic_export.export_identity(text, format) if format in ("ndjson", "toml") else None

    def with_identity(self, text: str, format: str | None, identity: str, n: int) -> tuple[str, str]:
        from sigma_wmi.backends import elastic_export

        return elastic_export.export_with_identity(text, format or "", identity, n)

    # ---- temporal correlations ----
    def sequence(self, temporal: Temporal, diagnostics: list[Diagnostic]) -> tuple[str, tuple[str, ...]]:
        """An EQL `sequence` for a temporal_ordered correlation, and the indexes of its steps."""
        raise UnsupportedError(f"{self.name}: a {temporal.kind} correlation needs events of several rules in one "
                               "alert, which a single query cannot express (the eql target writes temporal_ordered "
                               "as an EQL sequence)")

    # ---- the query ----
    def query(self, expr: Expr, target: elastic_profile.Target) -> str:
        """The query text of the rewritten tree."""
        raise NotImplementedError

    def threshold_rule(self, rule: Rule, target: elastic_profile.Target,
                       diagnostics: list[Diagnostic]) -> dict[str, Any] | None:
        """Kibana's threshold rule for the rule's thresholds, or None with an info why not.

        Kibana alerts when a group's count (and optionally one field's distinct count) is at
        least a value, counted over each run's look-back: `>=` and `>` on integers only."""
        aggregation = rule.aggregation
        assert aggregation is not None

        def why_not(reason: str) -> None:
            diagnostics.append(Diagnostic(Level.INFO, "no-threshold-rule",
                                          f"{self.name}: no Kibana threshold rule: {reason}"))

        if self.rule_type != "query":
            why_not("Kibana threshold rules take KQL or Lucene, not EQL")
            return None
        valued = [t for t in aggregation.thresholds if t.aggregate not in (Aggregate.COUNT, Aggregate.DISTINCT_COUNT)]
        if valued:
            why_not(f"it counts events and distinct values, not a {describe_threshold(valued[0])}")
            return None
        counts = [t for t in aggregation.thresholds if t.aggregate is Aggregate.COUNT]
        distinct = [t for t in aggregation.thresholds if t.aggregate is Aggregate.DISTINCT_COUNT]
        if len(counts) > 1 or len(distinct) > 1 or any(t.op not in (Op.GTE, Op.GT) for t in aggregation.thresholds):
            why_not("it tests 'at least n' events and 'at least n' values of one field; the rule has "
                    f"{describe_aggregation(aggregation)}")
            return None
        if len(aggregation.group_by) > _KIBANA_MAX_THRESHOLD_FIELDS:
            why_not(f"Kibana groups by at most {_KIBANA_MAX_THRESHOLD_FIELDS} fields; the rule groups by "
                    f"{len(aggregation.group_by)}")
            return None
        if distinct and distinct[0].field in aggregation.group_by:
            why_not(f"it counts distinct values of {distinct[0].field}, which it also groups by")
            return None
        names = [self.event_field(target, f)
                 for f in (*aggregation.group_by, *(t.field for t in distinct if t.field))]
        if any(n is None for n in names):
            why_not("a group-by or counted field has no single field name in the index")
            return None
        # "at least 0" holds for every group (a group has an event); Kibana wants at least 1
        spec: dict[str, Any] = {"field": names[:len(aggregation.group_by)],
                                "value": max(counts[0].value + (counts[0].op is Op.GT), 1) if counts else 1}
        if distinct and distinct[0].value + (distinct[0].op is Op.GT) > 0:
            spec["cardinality"] = [{"field": names[-1], "value": distinct[0].value + (distinct[0].op is Op.GT)}]
        if aggregation.window is None:
            diagnostics.append(Diagnostic(Level.INFO, "threshold-window", f"{self.name}: the threshold counts over "
                                          "each run's look-back (options interval and lookback)"))
        else:
            diagnostics.append(Diagnostic(Level.INFO, "threshold-window", f"{self.name}: each run counts the last "
                                          f"{format_timespan(aggregation.window)}; windows follow the schedule, "
                                          "not the clock as Splunk's span does"))
        return spec

    def event_field(self, target: elastic_profile.Target, canonical: str) -> str | None:
        """The name the query uses for one canonical field (None: only derivable, or not in
        the index's schema)."""
        mapped = elastic_profile.target_names(Match(canonical, Op.EXISTS), target)
        if not isinstance(mapped, Match) or mapped.field is None or target.info(mapped.field) is None:
            return None
        return mapped.field


class EqlBackend(ElasticBackend):
    name = "eql"
    description = "Elastic EQL: `<category> where ...`, case-insensitive ':' matching; Kibana/TOML rule export"
    extensions: ClassVar[Mapping[str, str]] = {"query": ".eql", "ndjson": ".ndjson", "toml": ".toml"}
    language = "eql"
    rule_type = "eql"
    TRANSFORMS = (
        elastic_profile.keywords_contain,
        elastic_profile.keywords_in_message,  # EQL has no search over the whole event
        elastic_profile.mapped_values,
        elastic_profile.target_names,
        elastic_profile.absent_fields,
        elastic_profile.source_conditions_but_category,  # `<category> where` tests event.category
        elastic_profile.typed_literals,
        elastic_profile.keyword_limits,
    )

    def sequence(self, temporal: Temporal, diagnostics: list[Diagnostic]) -> tuple[str, tuple[str, ...]]:
        """`sequence by <group> with maxspan=<span> [step 1] [step 2] ...`: EQL's sequences are
        ordered, each stage an event after the previous one's, all within maxspan of the first,
        which is exactly temporal_ordered. Unordered `temporal` has no single sequence."""
        if not temporal.ordered:
            raise UnsupportedError("eql: a temporal (unordered) correlation has no EQL form: a sequence fixes the "
                                   "order of its events; write it as temporal_ordered if the order is known")
        stages: list[str] = []
        keys: list[tuple[str, ...]] = []
        index: list[str] = []
        for step in temporal.steps:
            rule = self.catalog.map_rule(step.rule)
            target = self.target(rule, diagnostics)
            stages.append(self.query(elastic_profile.apply(self.TRANSFORMS, rule.detection, target), target))
            names = []
            for canonical in step.group_fields:
                name = self.event_field(target, canonical)
                if name is None:
                    raise UnsupportedError(f"eql: rule '{step.name}' groups by {canonical}, which has no field in "
                                           f"{', '.join(target.placement.index)}")
                names.append(eql_field(name))
            keys.append(tuple(names))
            index.extend(i for i in target.placement.index if i not in index)
        shared = len(set(keys)) == 1
        head = "sequence" + (f" by {', '.join(keys[0])}" if shared and keys[0] else "")
        head += f" with maxspan={format_timespan(temporal.window)}"
        body = "".join(f"\n  [{stage}]" + (f" by {', '.join(key)}" if not shared and key else "")
                       for stage, key in zip(stages, keys, strict=True))
        return head + body, tuple(index)

    def query(self, expr: Expr, target: elastic_profile.Target) -> str:
        category = self.catalog.logsource(target.rule.logsource).ecs_category or "any"
        if not _EQL_IDENT.match(category):
            category = eql_string(category)
        return f"{category} where {EqlGenerator(target.diagnostics).generate(expr)}"


class _KeywordBackend(ElasticBackend):
    generator: ClassVar[type[_KeywordQuery]]

    def query(self, expr: Expr, target: elastic_profile.Target) -> str:
        def caseless(name: str) -> bool:
            info = target.info(name)
            return info is not None and info.caseless

        def foldable(name: str) -> bool:
            info = target.info(name)
            return info is not None and info.is_keyword

        generator = self.generator(target.diagnostics, caseless, foldable)
        text = generator.generate(expr)
        if generator.case_sensitive_fields:
            add_once(target.diagnostics, Diagnostic(
                Level.WARNING, "case-sensitive",
                f"keyword fields compare case-sensitively and {', '.join(target.placement.index)} has no "
                f".caseless sub-field for " + ", ".join(generator.case_sensitive_fields)))
        return text


class KqlBackend(_KeywordBackend):
    name = "kql"
    description = "Kibana KQL (kuery), .caseless sub-fields where the schema has them; Kibana/TOML rule export"
    extensions: ClassVar[Mapping[str, str]] = {"query": ".kql", "ndjson": ".ndjson", "toml": ".toml"}
    language = "kuery"
    rule_type = "query"
    generator = KqlGenerator


class LuceneBackend(_KeywordBackend):
    name = "lucene"
    description = "Elasticsearch Lucene query_string, .caseless sub-fields where the schema has them; Kibana/TOML export"
    extensions: ClassVar[Mapping[str, str]] = {"query": ".lucene", "ndjson": ".ndjson", "toml": ".toml"}
    language = "lucene"
    rule_type = "query"
    generator = LuceneGenerator


__all__ = [
    "EqlBackend", "EqlGenerator", "KqlBackend", "KqlGenerator", "LuceneBackend", "LuceneGenerator",
    "eql_field", "eql_string", "kql_field", "kql_quoted", "kql_unquoted", "lucene_phrase", "lucene_term",
]
