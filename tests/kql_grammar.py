"""An independent KQL (Kibana kuery) reader for tests, written from Kibana's published
PEG grammar (packages/kbn-es-query/grammar/grammar.peggy), rule by rule.

It shares no code with the backend: it decides what Kibana would read from a query,
so tests can check that the backend's escaping says what it means. Ordered choice and
the `!Keyword` look-ahead are followed exactly (both matter for escaping: `\\not`
reads as a newline plus "ot"). Cursor rules (autocomplete) are left out.

AST: ("or", [..]) ("and", [..]) ("not", node) ("nested", field, node)
     ("is", field | None, value, is_phrase) ("range", field, op, value)
A value is a str, None/True/False (unquoted null/true/false), or Wild(parts) where
parts are str and WILDCARD.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


class KqlSyntaxError(ValueError):
    pass


WILDCARD = object()
SPACE = " \t\r\n\u00a0"
SPECIAL = '\\():<>"*{}'
# JavaScript String.prototype.trim(): WhiteSpace and LineTerminator code points.
JS_TRIM = set("\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff") | {chr(c) for c in range(0x2000, 0x200B)}


@dataclass(frozen=True)
class Wild:
    parts: tuple[Any, ...]  # str and WILDCARD


class _Fail(Exception):
    pass


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # ---- helpers ----
    def lit(self, word: str, nocase: bool = False) -> str:
        chunk = self.text[self.pos:self.pos + len(word)]
        if chunk == word or (nocase and chunk.lower() == word):
            self.pos += len(word)
            return chunk
        raise _Fail

    def attempt(self, rule: Any, *args: Any) -> Any:
        start = self.pos
        try:
            return rule(*args)
        except _Fail:
            self.pos = start
            raise

    def choice(self, *rules: Any) -> Any:
        for rule in rules:
            start = self.pos
            try:
                return rule()
            except _Fail:
                self.pos = start
        raise _Fail

    def peek_ok(self, rule: Any) -> bool:
        start = self.pos
        try:
            rule()
            return True
        except _Fail:
            return False
        finally:
            self.pos = start

    def space(self) -> None:
        if self.pos < len(self.text) and self.text[self.pos] in SPACE:
            self.pos += 1
            return
        raise _Fail

    def spaces(self, least: int = 0) -> None:
        count = 0
        while self.pos < len(self.text) and self.text[self.pos] in SPACE:
            self.pos += 1
            count += 1
        if count < least:
            raise _Fail

    # ---- start ----
    def start(self) -> Any:
        self.spaces()
        query = None
        with contextlib.suppress(_Fail):
            query = self.attempt(self.or_query)
        self.spaces()
        if self.pos != len(self.text):
            raise KqlSyntaxError(f"unexpected input at {self.pos}: {self.text[self.pos:self.pos + 20]!r}")
        return query if query is not None else ("is", "*", "*", False)

    def _chain(self, kind: str, item: Any, separator: Any) -> Any:
        nodes = [item()]
        while True:
            start = self.pos
            try:
                separator()
                nodes.append(item())
            except _Fail:
                self.pos = start
                break
        return nodes[0] if len(nodes) == 1 else (kind, nodes)

    def or_(self) -> None:
        self.spaces(1)
        self.lit("or", nocase=True)
        self.spaces(1)

    def and_(self) -> None:
        self.spaces(1)
        self.lit("and", nocase=True)
        self.spaces(1)

    def not_(self) -> None:
        self.lit("not", nocase=True)
        self.spaces(1)

    def or_query(self) -> Any:
        return self._chain("or", self.and_query, self.or_)

    def and_query(self) -> Any:
        return self._chain("and", self.not_query, self.and_)

    def not_query(self) -> Any:
        def negated() -> Any:
            self.not_()
            return ("not", self.sub_query())
        return self.choice(negated, self.sub_query)

    def sub_query(self) -> Any:
        def grouped() -> Any:
            self.lit("(")
            self.spaces()
            query = self.or_query()
            self.spaces()
            self.lit(")")
            return query
        return self.choice(grouped, self.nested_query)

    def nested_query(self) -> Any:
        def nested() -> Any:
            field = self.literal()
            self.spaces()
            self.lit(":")
            self.spaces()
            self.lit("{")
            self.spaces()
            query = self.or_query()
            self.spaces()
            self.lit("}")
            return ("nested", field, query)
        return self.choice(nested, self.expression)

    def expression(self) -> Any:
        return self.choice(self.field_range, self.field_value, self.value_expression)

    def field_range(self) -> Any:
        field = self.literal()
        self.spaces()
        op = self.choice(lambda: self.lit("<="), lambda: self.lit(">="), lambda: self.lit("<"), lambda: self.lit(">"))
        self.spaces()
        return ("range", field, op, self.literal())

    def field_value(self) -> Any:
        field = self.literal()
        self.spaces()
        self.lit(":")
        self.spaces()
        return self.list_of_values()(field)

    def value_expression(self) -> Any:
        return self.value()(None)

    # ---- value lists: partial functions of the field, as in the grammar ----
    def list_of_values(self) -> Any:
        def grouped() -> Any:
            self.lit("(")
            self.spaces()
            partial = self.or_list()
            self.spaces()
            self.lit(")")
            return partial
        return self.choice(grouped, self.value)

    def _list_chain(self, kind: str, item: Any, separator: Any) -> Any:
        parts = [item()]
        while True:
            start = self.pos
            try:
                separator()
                parts.append(item())
            except _Fail:
                self.pos = start
                break
        if len(parts) == 1:
            return parts[0]
        return lambda field: (kind, [p(field) for p in parts])

    def or_list(self) -> Any:
        return self._list_chain("or", self.and_list, self.or_)

    def and_list(self) -> Any:
        return self._list_chain("and", self.not_list, self.and_)

    def not_list(self) -> Any:
        def negated() -> Any:
            self.not_()
            partial = self.list_of_values()
            return lambda field: ("not", partial(field))
        return self.choice(negated, self.list_of_values)

    def value(self) -> Any:
        def quoted() -> Any:
            text = self.quoted_string()
            return lambda field: ("is", field, text, True)

        def unquoted() -> Any:
            text = self.unquoted_literal()
            return lambda field: ("is", field, text, False)
        return self.choice(quoted, unquoted)

    # ---- literals ----
    def literal(self) -> Any:
        return self.choice(self.quoted_string, self.unquoted_literal)

    def quoted_string(self) -> str:
        self.lit('"')
        chars = []
        while True:
            if self.text[self.pos:self.pos + 1] not in ("\\", '"', ""):  # fast path: a plain character
                chars.append(self.text[self.pos])
                self.pos += 1
                continue
            try:
                chars.append(self.choice(self.escaped_whitespace, self.escaped_unicode, self.quoted_escape,
                                         self.quoted_plain))
            except _Fail:
                break
        self.lit('"')
        return "".join(chars)

    def quoted_escape(self) -> str:
        self.lit("\\")
        return self.char_in('\\"')

    def quoted_plain(self) -> str:
        return self.char_not_in('"')

    def char_in(self, allowed: str) -> str:
        if self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
            return self.text[self.pos - 1]
        raise _Fail

    def char_not_in(self, banned: str) -> str:
        if self.pos < len(self.text) and self.text[self.pos] not in banned:
            self.pos += 1
            return self.text[self.pos - 1]
        raise _Fail

    def unquoted_literal(self) -> Any:
        chars: list[Any] = []
        while True:
            try:
                chars.append(self.unquoted_character())
            except _Fail:
                break
        if not chars:
            raise _Fail
        # The grammar joins (wildcards as a marker) and trims JavaScript whitespace.
        while chars and chars[0] is not WILDCARD and chars[0] in JS_TRIM:
            chars.pop(0)
        while chars and chars[-1] is not WILDCARD and chars[-1] in JS_TRIM:
            chars.pop()
        if any(c is WILDCARD for c in chars):
            parts: list[Any] = []
            for c in chars:
                if c is not WILDCARD and parts and isinstance(parts[-1], str):
                    parts[-1] += c
                else:
                    parts.append(c)
            return Wild(tuple(parts))
        sequence = "".join(chars)
        return {"null": None, "true": True, "false": False}.get(sequence, sequence)

    def unquoted_character(self) -> Any:
        if self.text[self.pos:self.pos + 1] not in ("\\", "*"):  # every other alternative starts so
            return self.plain_character()
        return self.choice(self.escaped_whitespace, self.escaped_special, self.escaped_unicode,
                           self.escaped_keyword, self.wildcard, self.plain_character)

    def wildcard(self) -> Any:
        self.lit("*")
        return WILDCARD

    def plain_character(self) -> str:
        if self.pos >= len(self.text) or self.text[self.pos] in SPECIAL:
            raise _Fail
        # Or/And begin with a Space, Not with an n: only there can the look-ahead succeed.
        if self.text[self.pos] in SPACE + "nN" and self.peek_ok(self.keyword):
            raise _Fail
        self.pos += 1
        return self.text[self.pos - 1]

    def keyword(self) -> None:
        self.choice(self.or_, self.and_, self.not_)

    def escaped_whitespace(self) -> str:
        self.lit("\\")
        return {"t": "\t", "r": "\r", "n": "\n"}[self.char_in("trn")]

    def escaped_special(self) -> str:
        self.lit("\\")
        return self.char_in(SPECIAL)

    def escaped_keyword(self) -> str:
        self.lit("\\")
        return self.choice(lambda: self.lit("or", True), lambda: self.lit("and", True), lambda: self.lit("not", True))

    def escaped_unicode(self) -> str:
        self.lit("\\u")
        digits = self.text[self.pos:self.pos + 4]
        if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise _Fail
        self.pos += 4
        return chr(int(digits, 16))


def parse(query: str) -> Any:
    """The AST Kibana would build for `query`; raises KqlSyntaxError when it would not parse."""
    try:
        return _Reader(query).start()
    except _Fail:
        raise KqlSyntaxError(f"cannot parse {query!r}") from None
    except RecursionError:
        raise KqlSyntaxError("query too deeply nested") from None
