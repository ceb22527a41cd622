"""Splunk SPL → model expressions.

Three languages meet in an ESCU search and each has its own parser here:

* the search-command language (tstats where-clauses, `| search`, raw searches):
  lark grammar `spl.lark`, Splunk precedence NOT > OR > AND, case-insensitive
  matching, `*` wildcards;
* the eval-expression language of `| where` (`spl_eval.lark`): conventional
  precedence, case-sensitive `==`, `like()`, `match()`, `isnull()`;
* the `| regex field="..."` command.

Values come out unescaped (`Pattern`s) and every string goes through
`model.string_match`, so equal conditions give equal models whatever their
spelling. Field names go through a `FieldMap` the caller supplies (the ESCU reader
maps CIM names, `parse_splunk_search` maps raw Sysmon/Security names).

`f!=v` and `NOT f=v` differ in Splunk when `f` is missing (the first is false,
the second true), so `f!=v` reads as `f exists AND NOT f=v`.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError

from sigma_wmi.catalog import catalog
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.limits import MAX_INT_BITS, MAX_SPL_DEPTH
from sigma_wmi.model import (
    And,
    Expr,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    PatternPart,
    Regex,
    Wildcard,
    all_of,
    any_of,
    map_matches,
    matches,
    normalize,
    pattern_regex,
    patterns_match,
    string_match,
)

FieldMap = Callable[[str], str]

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class SplError(SigmaWmiError):
    """SPL the parser cannot read. `column` is 1-based within the parsed text."""

    def __init__(self, message: str, column: int | None = None, code: str = "spl-syntax") -> None:
        where = f" at column {column}" if column else ""
        super().__init__(message + where, None, code)
        self.column = column


class SplUnsupported(SplError):
    """Valid SPL the model cannot express (a function, an arithmetic expression...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, "spl-unsupported")


# ---------------------------------------------------------------------------
# Values: one small pure function per quoting context.
# ---------------------------------------------------------------------------

# Entities that appear in published ESCU content where a literal character was meant.
_ENTITIES = {"&quot;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">", "&apos;": "'", "&#39;": "'", "&#34;": '"'}
_ENTITY = re.compile("|".join(re.escape(e) for e in _ENTITIES))


def decode_entities(text: str) -> str:
    """Decode the few HTML entities ESCU content uses (`&gt;` → `>`); nothing else."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], text) if "&" in text else text


def unquote(token: str) -> str:
    """The text of an SPL string or term: `\\\\` → `\\`, `\\"` → `"`, any other backslash kept.

    Search and eval strings share this rule; quotes are removed when present.
    """
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        token = token[1:-1]
    if "\\" not in token:
        return token
    out: list[str] = []
    i = 0
    while i < len(token):
        char = token[i]
        if char == "\\" and i + 1 < len(token) and token[i + 1] in "\\\"'":
            out.append(token[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def search_pattern(token: str) -> Pattern:
    """A search-language value as a pattern: `*` is the only wildcard (`?` is literal).

    A backslash cannot escape `*` in SPL, so `\\*` is a literal backslash and a wildcard.
    """
    text = unquote(token)
    parts: list[PatternPart] = []
    for index, chunk in enumerate(text.split("*")):
        if index:
            parts.append(Wildcard.MANY)
        parts.append(decode_entities(chunk))
    return Pattern(tuple(parts))


def like_pattern(text: str) -> Pattern:
    """An eval `like()` pattern: `%` any run, `_` one character."""
    parts: list[PatternPart] = []
    for char in text:
        parts.append(Wildcard.MANY if char == "%" else Wildcard.ONE if char == "_" else char)
    return Pattern(tuple(parts))


_INLINE_FLAGS = re.compile(r"^\(\?([imsx]+)\)")


def split_regex(text: str) -> Regex:
    """A regex with a leading inline flag group `(?i)` moved into `Regex.flags`."""
    found = _INLINE_FLAGS.match(text)
    if not found:
        return Regex(text)
    return Regex(text[found.end():], frozenset(found.group(1)))


def regex_as_pattern(pattern: str) -> Pattern | None:
    """The wildcard pattern an anchored regex stands for, if it is one (`^a\\.b.*$` → `a.b*`).

    Splunk writes case-sensitive wildcard matches as such regexes; reading them back
    as patterns keeps one canonical model for one condition.
    """
    if not (pattern.startswith("^") and pattern.endswith("$")) or pattern.endswith("\\$"):
        return None
    body = pattern[1:-1]
    parts: list[PatternPart] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body) or body[i + 1].isalnum():
                return None  # \d, \w, \x41...: a character class, not a literal
            parts.append(body[i + 1])
            i += 2
        elif body.startswith(".*", i):
            parts.append(Wildcard.MANY)
            i += 2
        elif char == ".":
            parts.append(Wildcard.ONE)
            i += 1
        elif char in "[](){}|+?*^$":
            return None
        else:
            parts.append(char)
            i += 1
    return Pattern(tuple(parts))


def regex_match(field: str | None, regex: Regex) -> Match:
    """A regex condition, as a pattern match when the regex is just an anchored wildcard pattern."""
    caseless = "i" in regex.flags
    pattern = regex_as_pattern(regex.pattern) if regex.flags <= {"i"} else None
    if pattern is not None:
        return string_match(field, pattern, case_sensitive=not caseless)
    return Match(field, Op.REGEX, (regex,), case_sensitive=not caseless)


# A number as SPL writes one: Python's int()/float() would also take `inf`, `nan`, `1_000`, ` 5`.
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_INTEGER = re.compile(r"[-+]?\d+")


def _number(text: str) -> int | float | None:
    """The number `text` spells, None when it is not one; `SplError` when no target can hold it
    (beyond 64 bits, or a float that overflows to infinity)."""
    if not _NUMBER.fullmatch(text):
        return None
    if _INTEGER.fullmatch(text):
        # length first: int() of more than 4300 digits raises, and 20 digits are already too many
        if len(text.lstrip("+-")) > 19 or abs(int(text)) >= 2**MAX_INT_BITS:
            raise SplError(f"number {text[:24]}{'...' if len(text) > 24 else ''} is out of range "
                           f"(more than {MAX_INT_BITS} bits)", code="spl-number")
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise SplError(f"number {text[:24]} is out of range", code="spl-number")
    return value


# Ordering comparisons, the same in the search and eval languages.
_ORDERING = {"<": Op.LT, "<=": Op.LTE, ">": Op.GT, ">=": Op.GTE}


def differs(condition: Expr, fields: list[str]) -> Expr:
    """`NOT condition`, but only where every field exists (SPL `!=` and eval `!=`)."""
    return And((*(Match(f, Op.EXISTS) for f in fields), Not(condition)))


# ---------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------


@functools.cache
def _parser(grammar: str, start: str) -> Lark:
    text = (resources.files("sigma_wmi.readers") / grammar).read_text(encoding="utf-8")
    return Lark(text, start=start, parser="lalr", maybe_placeholders=False, propagate_positions=False)


def _parse(grammar: str, start: str, text: str) -> Tree[Any]:
    _check_depth(text)  # the parse tree and its transformer recurse once per level or more
    try:
        return _parser(grammar, start).parse(text)
    except UnexpectedCharacters as err:
        shown = text[err.pos_in_stream] if err.pos_in_stream is not None else "?"
        raise SplError(f"unexpected character {shown!r}", err.column) from None
    except UnexpectedEOF:
        raise SplError("unexpected end of expression (unbalanced parentheses or a dangling operator?)",
                       len(text) + 1) from None
    except UnexpectedInput as err:
        token = getattr(err, "token", None)
        shown = f"{token.value!r}" if isinstance(token, Token) and token.value else "end of text"
        raise SplError(f"unexpected {shown}", getattr(err, "column", None)) from None
    except LarkError as err:
        raise SplError(f"cannot parse: {err}") from None


def _check_depth(text: str) -> None:
    """Refuse parentheses (outside double-quoted strings) nested deeper than MAX_SPL_DEPTH."""
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':  # skip the string, `\"` included
            index += 1
            while index < len(text) and text[index] != '"':
                index += 2 if text[index] == "\\" else 1
        elif char == "(":
            depth += 1
            if depth > MAX_SPL_DEPTH:
                raise SplError(f"parentheses nested more than {MAX_SPL_DEPTH} levels deep", index + 1, "too-deep")
        elif char == ")":
            depth -= 1
        index += 1


def _transform(transformer: Transformer[Any, Any], tree: Tree[Any]) -> Any:
    try:
        return transformer.transform(tree)
    except VisitError as err:  # lark wraps errors raised inside callbacks
        if isinstance(err.orig_exc, SigmaWmiError):
            raise err.orig_exc from None
        raise SplError(f"cannot read expression: {err.orig_exc}") from None


class Extracted:
    """A field a stage derives from an event field (`| rex`, `| lookup`): later tests of it are
    conditions on that event field."""

    def present(self) -> Expr:
        """The derived field has a value."""
        raise NotImplementedError

    def equals(self, value: Pattern, caseless: bool) -> Expr:
        """The derived field equals `value` (`*` wildcards)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LookupOutput(Extracted):
    """An output column of `| lookup`: `keys` are the table's keys (patterns) with the output
    value each row gives; the field has a value exactly where `field` matches a key."""

    field: str
    keys: tuple[tuple[Pattern, str], ...]
    caseless: bool  # how the table matches its keys

    def _where(self, rows: list[Pattern], what: str) -> Expr:
        if not rows:
            raise SplUnsupported(f"no row of the lookup table {what}")
        return patterns_match(self.field, rows, case_sensitive=not self.caseless)

    def present(self) -> Expr:
        return self._where([key for key, out in self.keys if out != ""], "has this output")

    def equals(self, value: Pattern, caseless: bool) -> Expr:
        test = re.compile(pattern_regex(value), re.S | (re.I if caseless else 0))
        return self._where([key for key, out in self.keys if test.fullmatch(out)], f"outputs '{value.text}'")


@dataclass(frozen=True)
class Capture(Extracted):
    """A field `| rex` extracts: it has a value exactly where `regex` matches `field`
    (None: the raw event text).

    When the group ends the regex and is a greedy run of a negated class (`Consumer =\\s+(?<c>[^;]+)`),
    its text is known too: everything after `prefix` up to a `stop` character or the end, so
    a comparison of the capture with a value is a regex on the field. (rex keeps the first
    match only; the regex tests every match, which differs only when the field repeats the
    prefix.)"""

    field: str | None
    regex: Regex
    prefix: str | None = None  # the regex before the group, other groups unnamed
    stop: str | None = None  # the negated class's characters, as written inside [^...]

    def present(self) -> Expr:
        return regex_match(self.field, self.regex)

    def equals(self, value: Pattern, caseless: bool) -> Expr:
        """The capture equals `value` (`*` a run of capture characters)."""
        if self.prefix is None or self.stop is None or "\\" in self.stop:
            raise SplUnsupported("the text a `| rex` extracted is compared; only a last group that is a "
                                 "greedy run of a negated class `[^...]+` is imported")
        pieces: list[str] = []
        for part in value.parts:
            if isinstance(part, Wildcard):
                pieces.append(f"[^{self.stop}]*" if part is Wildcard.MANY else f"[^{self.stop}]")
                continue
            for char in part:
                if char in self.stop:
                    return _never(self.field)
                upper, lower = char.upper(), char.lower()
                pieces.append(f"[{re.escape(upper)}{re.escape(lower)}]" if caseless and upper != lower
                              and len(upper) == len(lower) == 1 else re.escape(char))
        if not pieces:
            raise SplUnsupported("a `| rex` capture compared with an empty value")
        return regex_match(self.field, Regex(f"{self.prefix}{''.join(pieces)}(?:[{self.stop}]|$)", self.regex.flags))


def _never(field: str | None) -> Expr:
    raise SplUnsupported(f"a `| rex` capture of {field} compared with a value it can never hold")


@dataclass(frozen=True)
class _Computed:
    """A field an earlier `| eval` computed: its expression, with event fields inside."""

    name: str
    operand: Any


def _regex_literal(pattern: str) -> str | None:
    """The text an unanchored regex of plain characters finds (`Foo\\.exe` → `Foo.exe`), else None."""
    text: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1].isalnum():
                return None  # `\d`, `\b`...: a class or an assertion, not a character
            text.append(pattern[i + 1])
            i += 2
            continue
        if char in ".^$*+?()[]{}|":
            return None
        text.append(char)
        i += 1
    return "".join(text)


def _cidr(text: str) -> str | None:
    """`text` when it is an IPv4 or IPv6 network with its prefix length (`10.0.0.0/8`)."""
    if "/" not in text or "*" in text:
        return None
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return text


def _same_text(operand: Any) -> str | None:
    """The event field an `| eval` operand copies, or lower-/upper-cases: for search's caseless
    comparisons the computed field matches exactly where that field does."""
    if isinstance(operand, _Field):
        return operand.name
    if isinstance(operand, _Call) and operand.name in ("lower", "upper") and len(operand.args) == 1 \
            and isinstance(operand.args[0], _Field):
        return operand.args[0].name
    return None


@v_args(inline=True)
class _SearchToModel(Transformer[Token, Any]):
    def __init__(self, field_map: FieldMap, computed: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.field_map = field_map
        self.computed = computed or {}

    def search(self, *conj: Expr) -> Expr | None:
        return conj[0] if conj else None

    def conj(self, *items: Expr) -> Expr:
        return all_of(list(items))

    def disj(self, *items: Expr) -> Expr:
        return any_of(list(items))

    def negate(self, item: Expr) -> Expr:
        return Not(item)

    def name(self, token: Token) -> str | _Computed:
        name = unquote(str(token))
        if name in self.computed:
            return _Computed(name, self.computed[name])
        return self.field_map(name)

    def value(self, token: Token) -> Token:
        return token

    def compare(self, field: str | _Computed, op: Token, value: Token) -> Expr:
        symbol = str(op)
        if isinstance(field, _Computed):
            return self.compare_computed(field, symbol, value)
        if symbol in _ORDERING:
            number = _number(unquote(str(value)))
            if number is None:
                raise SplUnsupported(f"'{field}{symbol}{value}' compares with a non-number")
            return Match(field, _ORDERING[symbol], (number,))
        condition = self.equals(field, value)
        if symbol == "!=":
            if condition == Match(field, Op.EXISTS):
                return Not(condition)  # `f!=*`: no value at all
            return differs(condition, [field])
        return condition

    def compare_computed(self, field: _Computed, symbol: str, value: Token) -> Expr:
        """`x=5` on a computed number is the eval comparison; strings would add search's
        caseless wildcard matching to eval's cased one, so they are not imported."""
        if isinstance(field.operand, Extracted):
            capture = field.operand
            if str(value) in ("*", '"*"') and symbol in ("=", "!="):  # `x=*`: the rex matched
                return capture.present() if symbol == "=" else Not(capture.present())
            if symbol not in ("=", "!="):
                raise SplUnsupported(f"'{field.name}{symbol}{value}' orders the text a `| rex` extracted")
            same = capture.equals(search_pattern(str(value)), caseless=True)  # search compares caselessly
            return same if symbol == "=" else And((capture.present(), Not(same)))
        number = _number(unquote(str(value)))
        source = _same_text(field.operand)
        if number is None and source is not None:  # search compares caselessly: lower(f) matches as f does
            return self.compare(source, Token("CMP", symbol), value)
        if number is None:
            raise SplUnsupported(f"'{field.name}{symbol}{value}' compares a computed field with text")
        # search `!=` is false where the value is null, like eval's: the symbols mean the same
        return _EvalToModel(self.field_map).compare(field.operand, Token("CMP", symbol), _Literal(number))

    def equals(self, field: str, value: Token) -> Expr:
        text = str(value)
        if text in ("*", '"*"'):
            return Match(field, Op.EXISTS)
        if value.type == "WORD" and re.fullmatch(r"-?\d+", text):
            return Match(field, Op.EQUALS, (int(text),))  # unquoted integers stay numbers
        if (network := _cidr(unquote(text))) is not None:  # search matches `ip=10.0.0.0/8` as a subnet
            return Match(field, Op.CIDR, (network,))
        return string_match(field, search_pattern(text))

    def member(self, field: str | _Computed, *values: Token) -> Expr:
        if isinstance(field, _Computed):
            raise SplUnsupported(f"'{field.name} IN (...)' on a computed field")
        if not values:
            raise SplError(f"'{field} IN ()' has no values")
        # one condition per value in the written order, so `IN (a, b)` and `f=a OR f=b` normalize alike
        items = [self.equals(field, v) for v in values]
        if Match(field, Op.EXISTS) in items:
            return Match(field, Op.EXISTS)
        return normalize(any_of(items))

    def term(self, value: Token) -> Expr:
        return string_match(None, search_pattern(str(value)))

    def term_directive(self, token: Token) -> Expr:
        """`TERM(x)` finds x as a whole indexed term, as a bare term x does for the breaker-free
        values ESCU writes; `CASE(x)` is the term with its case."""
        text = str(token)
        return string_match(None, search_pattern(text[5:-1]), case_sensitive=text.startswith("CASE"))


def parse_search(text: str, field_map: FieldMap = lambda name: name,
                 computed: Mapping[str, Any] | None = None) -> Expr | None:
    """A search-language expression (no pipes, no macros) as a normalized model tree.

    `computed` holds the fields earlier `| eval`s defined (see `parse_eval`).
    Returns None for an empty expression. Raises `SplError` with the column of the problem.
    """
    tree = _parse("spl.lark", "search", text)
    expr = _transform(_SearchToModel(field_map, computed), tree)
    return None if expr is None else normalize(expr)


# ---- eval expressions (`| where`) ----

@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Literal:
    value: str | int | float


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]


@v_args(inline=True)
class _EvalToModel(Transformer[Token, Any]):
    """Builds model conditions bottom-up; operands are `_Field`, `_Literal` or `_Call`."""

    def __init__(self, field_map: FieldMap, computed: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.field_map = field_map
        self.computed = computed or {}

    def field(self, token: Token) -> Any:
        name = unquote(str(token))
        if name in self.computed:  # an earlier `| eval` defined it: use its expression
            return self.computed[name]
        if name == "_raw":  # the event's text, no field of any source: a keyword test (see call_match)
            return _Field(name)
        return _Field(self.field_map(name))

    def string(self, token: Token) -> _Literal:
        return _Literal(unquote(str(token)))

    def number(self, token: Token) -> _Literal:
        number = _number(str(token))
        assert number is not None
        return _Literal(number)

    def call(self, name: Token, *args: Any) -> _Call:
        return _Call(str(name).lower(), args)

    def disj(self, *items: Any) -> Expr:
        return any_of([self.condition(i) for i in items])

    def conj(self, *items: Any) -> Expr:
        return all_of([self.condition(i) for i in items])

    def negate(self, item: Any) -> Expr:
        # In eval a test on a missing field is null and `NOT null` is null, which `| where`
        # drops: NOT keeps only events that have the fields, unless the test already says so
        # (`NOT (isnotnull(f) AND ...)`, what our Splunk backend writes for Sigma's `not`).
        condition = self.condition(item)
        tested = sorted({m.field for m in matches(condition)
                         if m.field is not None and m.op not in (Op.EXISTS, Op.NULL)})
        guarded = {m.field for m in (condition.items if isinstance(condition, And) else ())
                   if isinstance(m, Match) and m.op is Op.EXISTS}
        unguarded = [f for f in tested if f not in guarded]
        return differs(condition, unguarded) if unguarded else Not(condition)

    def compare(self, left: Any, op: Token, right: Any) -> Expr:
        symbol = "==" if str(op) == "=" else str(op)
        if isinstance(left, _Literal) and not isinstance(right, _Literal):
            left, right = right, left
            symbol = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(symbol, symbol)
        if isinstance(left, Extracted) and isinstance(right, _Literal) and isinstance(right.value, str) \
                and symbol in ("==", "!="):  # eval compares case-sensitively
            same = left.equals(Pattern.literal(right.value), caseless=False)
            return same if symbol == "==" else And((left.present(), Not(same)))
        if isinstance(left, _Call) and left.name in ("len", "substr", "if") and isinstance(right, _Literal):
            compare_call: Callable[[tuple[Any, ...], str, object], Expr] = getattr(self, f"compare_{left.name}")
            return compare_call(left.args, symbol, right.value)
        ref, fold = self.reference(left)
        if isinstance(right, _Literal):
            return self.compare_literal(ref, symbol, right.value, fold)
        other, other_fold = self.reference(right)
        caseless = fold is not None
        if symbol not in ("==", "!=") or fold != other_fold:
            raise SplUnsupported(f"comparison '{symbol}' between two fields")
        same = Match(ref, Op.FIELDREF, (other,), case_sensitive=not caseless)
        return same if symbol == "==" else differs(same, [ref, other])

    def like_operator(self, subject: Any, pattern: Any) -> Expr:
        """`f LIKE "a%"`: the operator form of like()."""
        return self.call_like(subject, pattern)

    # ---- functions of a field compared with a literal ----
    def compare_len(self, args: tuple[Any, ...], symbol: str, value: object) -> Expr:
        """`len(f) > 5` as tests that the value has at least so many characters. Only `^` anchors
        the regexes: `$` also matches before a final newline (in PCRE as in Python), so "at most n"
        is written "not at least n + 1". No field: len() is null and nothing holds."""
        if len(args) != 1 or type(value) is not int or value < 0 or symbol == "!=":
            raise SplUnsupported(f"len() {symbol} {value!r}")
        field, fold = self.reference(args[0])
        if fold is not None:  # case mapping can change the length of some non-ASCII text
            raise SplUnsupported(f"len({fold}(...))")

        def at_least(n: int) -> Match:
            return Match(field, Op.REGEX, (Regex(f"^.{{{n}}}", frozenset({"s"})),), case_sensitive=True)

        if symbol == "<" and value == 0:
            raise SplUnsupported("len() < 0 never holds")
        # `at least 0` is "has a value": a regex too, so Splunk output keeps it beside the NOT
        # (both in `| where`) and reads back in the same order
        tests: dict[str, Expr] = {
            ">=": at_least(value), ">": at_least(value + 1),
            "<=": And((at_least(0), Not(at_least(value + 1)))), "<": And((at_least(0), Not(at_least(value)))),
            "==": And((at_least(value), Not(at_least(value + 1)))),
        }
        return tests[symbol]

    def compare_substr(self, args: tuple[Any, ...], symbol: str, value: object) -> Expr:
        """`substr(f, -n) == "xyz"` (n = len) ends with, `substr(f, 1, n) == "xyz"` starts with; cased."""
        if symbol not in ("==", "!=") or not isinstance(value, str) or len(args) not in (2, 3) \
                or not all(isinstance(a, _Literal) and type(a.value) is int for a in args[1:]):
            raise SplUnsupported("substr() compared other than with == or != and a string")
        field, fold = self.reference(args[0])
        start, *length = (a.value for a in args[1:])
        if not length and start == -len(value) and value:
            pattern = Pattern((Wildcard.MANY, value))
        elif length == [len(value)] and start == 1 and value:  # eval strings start at 1
            pattern = Pattern((value, Wildcard.MANY))
        else:
            raise SplUnsupported(f"substr({', '.join(str(a.value) for a in args[1:])}) == \"{value}\"")
        caseless = self.folded(field, fold, value)
        condition = string_match(field, pattern, case_sensitive=not caseless)
        return condition if symbol == "==" else differs(condition, [field])

    def compare_if(self, args: tuple[Any, ...], symbol: str, value: object) -> Expr:
        """`if(test, a, b) == a` is the test, when b differs from a."""
        if len(args) != 3 or symbol != "==" or not all(isinstance(a, _Literal) for a in args[1:]) \
                or args[1].value != value or args[2].value == value:
            raise SplUnsupported(f"if() {symbol} {value!r}")
        return self.condition(args[0])

    def reference(self, operand: Any) -> tuple[str, str | None]:
        """A field operand and the case folding applied to it: None, "lower" or "upper"
        (`lower(f)` compared with lower-case text is a case-insensitive test)."""
        if isinstance(operand, _Field):
            return operand.name, None
        if isinstance(operand, _Call) and operand.name in ("lower", "upper") and len(operand.args) == 1 \
                and isinstance(operand.args[0], _Field):
            return operand.args[0].name, operand.name
        raise SplUnsupported(f"expression {_describe(operand)} is not a field")

    @staticmethod
    def folded(field: str, fold: str | None, text: str) -> bool:
        """Is the comparison case-insensitive? Refuses text the folded field can never equal."""
        if fold is None:
            return False
        if text != (text.lower() if fold == "lower" else text.upper()):
            raise SplUnsupported(f"{fold}({field}) compared with '{text}', which is not {fold} case")
        return True

    def compare_literal(self, field: str, symbol: str, value: str | int | float, fold: str | None) -> Expr:
        if symbol in _ORDERING:
            if isinstance(value, str):
                raise SplUnsupported(f"'{field} {symbol} \"{value}\"' compares strings")
            return Match(field, _ORDERING[symbol], (value,))
        if isinstance(value, str):
            caseless = self.folded(field, fold, value)
            condition: Expr = string_match(field, Pattern.literal(value), case_sensitive=not caseless)
        else:
            condition = Match(field, Op.EQUALS, (value,))
        return condition if symbol == "==" else differs(condition, [field])

    def condition(self, item: Any) -> Expr:
        """A boolean operand: a condition already, or a function call that is one."""
        if isinstance(item, (Match, And, Or, Not)):
            return item
        if isinstance(item, _Call) and item.name == "in" and item.args:
            return self.member(*item.args)
        if isinstance(item, _Call):
            method = getattr(self, f"call_{item.name}", None)
            if method is not None:
                arity = len(inspect.signature(method).parameters)
                if len(item.args) != arity:  # found by fuzzing: `| where match()`
                    raise SplUnsupported(f"{item.name}() takes {arity} arguments, not {len(item.args)}")
                result: Expr = method(*item.args)
                return result
            raise SplUnsupported(f"function {item.name}() is not imported")
        raise SplUnsupported(f"{_describe(item)} is not a condition")

    def member(self, subject: Any, *values: Any) -> Expr:
        """`f IN ("a", "b")` (and `in(f, "a", "b")`): f equals one of the values, as `==` does."""
        if not values or not all(isinstance(v, _Literal) for v in values):
            raise SplUnsupported("IN with a value that is not a literal")
        field, fold = self.reference(subject)
        return normalize(any_of([self.compare_literal(field, "==", v.value, fold) for v in values]))

    def call_searchmatch(self, text: Any) -> Expr:
        """`searchmatch("x=1 y")`: the search language's test of the event."""
        if not isinstance(text, _Literal) or not isinstance(text.value, str):
            raise SplUnsupported("searchmatch() with a computed search")
        found = parse_search(text.value, self.field_map, self.computed)
        if found is None:
            raise SplUnsupported("searchmatch() of an empty search")
        return found

    def call_match(self, subject: Any, regex: Any) -> Expr:
        field, fold = self.reference(subject)
        caseless = fold is not None
        if not isinstance(regex, _Literal) or not isinstance(regex.value, str):
            raise SplUnsupported("match() with a computed regular expression")
        parsed = split_regex(regex.value)
        if caseless:
            parsed = Regex(parsed.pattern, parsed.flags | {"i"})
        if field == "_raw":  # the event text: a keyword test (`CASE(Foo.exe)` is `match(_raw, "Foo\.exe")`)
            literal = _regex_literal(parsed.pattern) if parsed.flags <= {"i"} else None
            if literal:
                return string_match(None, Pattern.literal(literal), case_sensitive="i" not in parsed.flags)
            return regex_match(None, parsed)
        return regex_match(field, parsed)

    def call_like(self, subject: Any, pattern: Any) -> Expr:
        field, fold = self.reference(subject)
        if not isinstance(pattern, _Literal) or not isinstance(pattern.value, str):
            raise SplUnsupported("like() with a computed pattern")
        caseless = self.folded(field, fold, pattern.value)
        return string_match(field, like_pattern(pattern.value), case_sensitive=not caseless)

    def call_isnull(self, subject: Any) -> Expr:
        if isinstance(subject, Extracted):
            return Not(subject.present())
        return Not(Match(self.reference(subject)[0], Op.EXISTS))

    def call_isnotnull(self, subject: Any) -> Expr:
        if isinstance(subject, Extracted):
            return subject.present()
        return Match(self.reference(subject)[0], Op.EXISTS)

    def call_cidrmatch(self, cidr: Any, subject: Any) -> Expr:
        if not isinstance(cidr, _Literal) or not isinstance(cidr.value, str):
            raise SplUnsupported("cidrmatch() with a computed network")
        return Match(self.reference(subject)[0], Op.CIDR, (cidr.value,))


def _describe(operand: Any) -> str:
    if isinstance(operand, _Call):
        return f"{operand.name}()"
    if isinstance(operand, _Literal):
        return repr(operand.value)
    if isinstance(operand, _Field):
        return f"field {operand.name}"
    return "a condition"


def parse_where(text: str, field_map: FieldMap = lambda name: name,
                computed: Mapping[str, Any] | None = None) -> Expr:
    """The expression of a `| where` command as a normalized model tree.

    Raises `SplError` for a syntax error and `SplUnsupported` for valid eval
    expressions the model cannot express (arithmetic, string functions, ...).
    """
    tree = _parse("spl_eval.lark", "start", text)
    transformer = _EvalToModel(field_map, computed)
    return normalize(transformer.condition(_transform(transformer, tree)))


def parse_eval(args: str, field_map: FieldMap = lambda name: name,
               computed: Mapping[str, Any] | None = None) -> list[tuple[str, Any]]:
    """The assignments of an `| eval`: (field, expression) in order, or (field, SplError) for an
    expression that cannot be read. Expressions are kept unevaluated; a later filter that tests
    the field decides whether the model can express the test (`len(f) > 5`, `if(match(...),1,0)=1`)."""
    known = dict(computed or {})
    assignments: list[tuple[str, Any]] = []
    for piece in _split_top_level(args, ","):
        found = re.match(r"\s*(\"[^\"]+\"|'[^']+'|[A-Za-z_][\w.]*)\s*=(?!=)(.*)$", piece, re.S)
        if not found:
            raise SplError(f"cannot read eval assignment '{piece.strip()[:40]}'")
        name = unquote(found.group(1))
        try:
            operand = _transform(_EvalToModel(field_map, known), _parse("spl_eval.lark", "start", found.group(2)))
        except SplError as err:
            operand = err
        assignments.append((name, operand))
        if isinstance(operand, SplError):
            known.pop(name, None)
        else:
            known[name] = operand
    return assignments


def _split_top_level(text: str, separator: str) -> list[str]:
    pieces, start, depth = [], 0, 0
    for i, char, _ in _scan(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return pieces


_REGEX_ARGS = re.compile(r'^\s*(?:(?P<field>[A-Za-z_][\w.]*|"[^"]+")\s*(?P<op>!?=)\s*)?(?P<value>"(?:[^"\\]|\\.)*"|\S+)\s*$',
                         re.S)


def parse_regex_command(args: str, field_map: FieldMap = lambda name: name,
                        computed: Mapping[str, Any] | None = None) -> Expr:
    """`| regex field="..."` (or `field!=`, or a bare regex on `_raw`) as a model condition.

    A field an earlier `| eval` computed as a copy of an event field, or as its `lower()`, is
    read through: a regex with no upper-case text on `lower(f)` is that regex on `f`, ignoring
    case (ESCU lower-cases a field once, then tests it with several regexes)."""
    found = _REGEX_ARGS.match(args)
    if not found:
        raise SplError(f"cannot read regex arguments '{args.strip()}'")
    name = unquote(found.group("field")) if found.group("field") else None
    regex = split_regex(decode_entities(unquote(found.group("value"))))
    field: str | None
    if name is not None and computed is not None and name in computed:
        field, regex = _regex_through(name, computed[name], regex)
    else:
        field = field_map(name) if name is not None else None
    condition = regex_match(field, regex)
    return Not(condition) if found.group("op") == "!=" else condition


def _regex_through(name: str, operand: Any, regex: Regex) -> tuple[str, Regex]:
    """The event field and regex that test what `regex` tests on the computed field `name`."""
    if isinstance(operand, _Field):
        return operand.name, regex
    if isinstance(operand, _Call) and operand.name == "lower" and len(operand.args) == 1 \
            and isinstance(operand.args[0], _Field):
        if regex.pattern != regex.pattern.lower():  # `[A-Z]`, `\S`: they mean something else on f
            raise SplUnsupported(f"a regex with upper-case text tests {name}, which is lower()")
        return operand.args[0].name, Regex(regex.pattern, regex.flags | {"i"})
    raise SplUnsupported(f"`| regex` tests {name}, computed as {_describe(operand)}")


# ---------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One `|`-separated command of a search; `offset` is where its text starts."""

    text: str
    offset: int

    @property
    def command(self) -> str:
        word = self.text.split(None, 1)[0] if self.text.strip() else ""
        return word.lower()

    @property
    def args(self) -> str:
        parts = self.text.split(None, 1)
        return parts[1] if len(parts) > 1 else ""


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """Characters outside quotes and backquotes, with their bracket depth."""
    depth = 0
    i = 0
    quote: str | None = None
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "\"`":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        else:
            yield i, char, depth
        i += 1


def strip_comments(text: str) -> str:
    """The search without its ```triple-backtick``` comments (outside double-quoted strings)."""
    if "```" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("```", index):
            end = text.find("```", index + 3)
            if end < 0:
                break  # an unclosed comment runs to the end, as in Splunk
            out.append(" ")
            index = end + 3
            continue
        char = text[index]
        if char == '"':  # copy the string, `\"` included
            close = index + 1
            while close < len(text) and text[close] != '"':
                close += 2 if text[close] == "\\" else 1
            out.append(text[index:close + 1])
            index = close + 1
            continue
        out.append(char)
        index += 1
    return "".join(out)


def split_pipeline(text: str) -> list[Stage]:
    """The commands of a search, split at pipes outside quotes, macros and subsearches."""
    stages: list[Stage] = []
    start = 0
    for index, char, depth in _scan(text):
        if char == "|" and depth == 0:
            stages.append(Stage(text[start:index].strip(), start))
            start = index + 1
    stages.append(Stage(text[start:].strip(), start))
    return [s for s in stages if s.text]


SUBSEARCH = "__subsearch_{}__"


def extract_subsearches(text: str) -> tuple[str, list[str]]:
    """`text` with each top-level `[...]` replaced by a placeholder term, and the subsearches."""
    found: list[str] = []
    out: list[str] = []
    depth = 0
    start = last = 0
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 1  # skip the escaped character
            elif char == quote:
                quote = None
        elif char in "\"`":
            quote = char
        elif char == "[":
            if depth == 0:
                start = i
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0:
                out.append(text[last:start])
                out.append(f" {SUBSEARCH.format(len(found))} ")
                found.append(text[start + 1:i])
                last = i + 1
        i += 1
    out.append(text[last:])
    return "".join(out), found


def find_keyword(text: str, keyword: str) -> int | None:
    """Index of a whole-word keyword (any case) outside quotes, parentheses and brackets."""
    lowered = text.lower()
    paren = 0
    for index, char, depth in _scan(text):
        if char == "(":
            paren += 1
        elif char == ")":
            paren -= 1
        elif depth == 0 and paren == 0 and lowered.startswith(keyword, index) \
                and (index == 0 or text[index - 1].isspace()) \
                and (index + len(keyword) == len(text) or text[index + len(keyword)].isspace()):
            return index
    return None


# ---------------------------------------------------------------------------
# Raw searches as the Splunk backend writes them
# ---------------------------------------------------------------------------

_SOURCE_PREFIX = re.compile(r"^(?:Xml)?WinEventLog:", re.I)


_TUNING_MACRO = re.compile(r"`[A-Za-z0-9_]+_filter`")


def parse_splunk_search(text: str, profile: str = "sysmon") -> Expr:
    """Read a raw-event Splunk search back into a canonical model condition.

    For differential tests of the Splunk backend: `text` is a search like
    `source="XmlWinEventLog:Microsoft-Windows-Sysmon/Operational" EventCode=1
    Image="*\\\\scrcons.exe" | where match(CommandLine, "(?i)^a.*$")`. Field names go
    through the catalog: Splunk add-on names first (EventCode → event_id), then the
    raw `profile` ("sysmon", "security", "wmi_activity"); unknown names stay as written.
    `source="XmlWinEventLog:<channel>"` becomes a condition on the canonical `channel`
    field, so the result can be evaluated on recorded Windows events directly.
    Supported stages: the search itself, `| search`, `| where`, `| regex`, and a last
    `` | `<name>_filter` `` tuning macro (ESCU ships each as `search *`: it selects every
    event until a site edits it); anything else raises `SplUnsupported`. Raises `SplError`
    for a syntax error.
    """
    cat = catalog()

    def field_map(name: str) -> str:
        if name.lower() == "source":
            return "source"
        return cat.from_profile("splunk", name) or cat.from_profile(profile, name) or name

    conditions: list[Expr] = []
    stages = split_pipeline(text)
    for number, stage in enumerate(stages):
        if number and number == len(stages) - 1 and _TUNING_MACRO.fullmatch(stage.text.strip()):
            continue
        if number == 0 and stage.command not in ("search", "where", "regex"):
            found = parse_search(stage.text, field_map)
        elif stage.command == "search":
            found = parse_search(stage.args, field_map)
        elif stage.command == "where":
            found = parse_where(stage.args, field_map)
        elif stage.command == "regex":
            found = parse_regex_command(stage.args, field_map)
        else:
            raise SplUnsupported(f"stage '| {stage.command}' is not a filter")
        if found is not None:
            conditions.append(_source_to_channel(found))
    if not conditions:
        raise SplError("empty search")
    return normalize(all_of(conditions))


def _source_to_channel(expr: Expr) -> Expr:
    def rename(match: Match) -> Expr:
        if match.field != "source":
            return match
        values = tuple(Pattern.literal(_SOURCE_PREFIX.sub("", v.text)) if isinstance(v, Pattern)
                       and not v.has_wildcards else v for v in match.values)
        return Match("channel", match.op, values, match.case_sensitive, match.line)

    return map_matches(expr, rename)
