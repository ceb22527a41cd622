"""Sigma's regular expressions (a PCRE subset) for Elastic: parsed into a small tree,
then written as Lucene regex syntax (Lucene `/re/` and EQL `regex~`, both anchored at
both ends) or widened into wildcard patterns for KQL, which has no regex."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sigma_wmi.model import Pattern, PatternPart, Regex, Wildcard

# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Lit:
    char: str


@dataclass(frozen=True)
class _Any:
    pass


@dataclass(frozen=True)
class _Class:
    ranges: tuple[tuple[str, str], ...]
    negated: bool = False


@dataclass(frozen=True)
class _Group:
    alternatives: tuple[tuple[_Node, ...], ...]


@dataclass(frozen=True)
class _Repeat:
    node: _Node
    low: int
    high: int | None


@dataclass(frozen=True)
class _Anchor:
    start: bool


_Node = _Lit | _Any | _Class | _Group | _Repeat | _Anchor

_SHORTHANDS = {
    "d": (("0", "9"),),
    "w": (("a", "z"), ("A", "Z"), ("0", "9"), ("_", "_")),
    "s": tuple((c, c) for c in " \t\n\r\f\v"),
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0", "e": "\x1b", "a": "\a"}


class RegexError(ValueError):
    """The regular expression uses something the target's regex syntax lacks."""


class _RegexParser:
    """A recursive-descent reader for the PCRE subset Sigma rules use."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0
        self.caseless = False

    def parse(self) -> tuple[tuple[_Node, ...], ...]:
        if self.text.startswith("(?"):
            match = re.match(r"\(\?([imsx]+)\)", self.text)
            if match:
                if "x" in match.group(1):
                    raise RegexError("verbose (?x) patterns are not supported")
                self.caseless = "i" in match.group(1)
                self.pos = match.end()
        alternatives = self.alternatives()
        if self.pos != len(self.text):
            raise RegexError(f"unbalanced ')' at {self.pos}")
        return alternatives

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def alternatives(self) -> tuple[tuple[_Node, ...], ...]:
        result = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            result.append(self.sequence())
        return tuple(result)

    def sequence(self) -> tuple[_Node, ...]:
        nodes: list[_Node] = []
        while self.peek() not in ("", "|", ")"):
            nodes.append(self.quantified(self.atom()))
        return tuple(nodes)

    def atom(self) -> _Node:
        char = self.text[self.pos]
        self.pos += 1
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.text.startswith("?P<", self.pos) or (
                    self.text.startswith("?<", self.pos) and self.text[self.pos + 2:self.pos + 3] not in ("=", "!")):
                self.pos = self.text.index(">", self.pos) + 1
            elif self.peek() == "?":
                raise RegexError("lookaround and inline groups are not supported")
            inner = self.alternatives()
            if self.peek() != ")":
                raise RegexError("missing ')'")
            self.pos += 1
            return _Group(inner)
        if char == "[":
            return self.char_class()
        if char == ".":
            return _Any()
        if char in "^$":
            return _Anchor(char == "^")
        if char == "\\":
            return self.escape(in_class=False)
        if char in "*+?":
            raise RegexError(f"nothing to repeat at {self.pos - 1}")
        return _Lit(char)

    def escape(self, in_class: bool) -> _Node:
        if self.pos >= len(self.text):
            raise RegexError("trailing backslash")
        char = self.text[self.pos]
        self.pos += 1
        if char.lower() in _SHORTHANDS:
            return _Class(_SHORTHANDS[char.lower()], negated=char.isupper())
        if char in _CHAR_ESCAPES:
            return _Lit(_CHAR_ESCAPES[char])
        if char in "xu":
            digits = re.match(r"\{([0-9a-fA-F]+)\}|([0-9a-fA-F]{2,4})", self.text[self.pos:])
            size = 2 if char == "x" else 4
            if not digits or (digits.group(2) and len(digits.group(2)) < size):
                raise RegexError(f"bad \\{char} escape")
            code = digits.group(1) or digits.group(2)[:size]
            self.pos += len(digits.group(0)) if digits.group(1) else size
            return _Lit(chr(int(code, 16)))
        if not in_class and char in "Az":
            return _Anchor(char == "A")
        if char.isalnum():
            raise RegexError(f"\\{char} (word boundary, back-reference or class) is not supported")
        return _Lit(char)

    def char_class(self) -> _Class:
        negated = self.peek() == "^"
        self.pos += int(negated)
        ranges: list[tuple[str, str]] = []
        first = True
        while True:
            if self.pos >= len(self.text):
                raise RegexError("missing ']'")
            char = self.text[self.pos]
            if char == "]" and not first:
                self.pos += 1
                return _Class(tuple(ranges), negated)
            first = False
            if self.text.startswith("[:", self.pos):
                raise RegexError("POSIX character classes are not supported")
            low = self.class_char()
            if isinstance(low, _Class):
                if low.negated:
                    raise RegexError("negated shorthand inside a class is not supported")
                ranges.extend(low.ranges)
                continue
            if self.peek() == "-" and self.text[self.pos + 1:self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_char()
                if isinstance(high, _Class) or high < low:
                    raise RegexError("bad range in character class")
                ranges.append((low, high))
            else:
                ranges.append((low, low))

    def class_char(self) -> str | _Class:
        char = self.text[self.pos]
        self.pos += 1
        if char != "\\":
            return char
        node = self.escape(in_class=True)
        if isinstance(node, _Class):
            return node
        if not isinstance(node, _Lit):
            raise RegexError("anchor inside a character class")
        return node.char

    def quantified(self, node: _Node) -> _Node:
        spec = re.match(r"\*|\+|\?|\{(\d+)(,(\d*))?\}", self.text[self.pos:])
        if not spec:
            return node
        if isinstance(node, _Anchor):
            raise RegexError("quantified anchor")
        self.pos += len(spec.group(0))
        token = spec.group(0)
        low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(token, (0, None))
        if token.startswith("{"):
            low = int(spec.group(1))
            high = low if spec.group(2) is None else (int(spec.group(3)) if spec.group(3) else None)
        if self.peek() == "+":
            raise RegexError("possessive quantifiers are not supported")
        if self.peek() == "?":  # lazy: the same set of matching strings
            self.pos += 1
        return _Repeat(node, low, high)


def _branches(alternatives: tuple[tuple[_Node, ...], ...]) -> list[tuple[bool, tuple[_Node, ...], bool]]:
    """Top-level branches as (anchored at start, nodes, anchored at end).

    A branch that is one plain group is opened up, so `(^a$)|(^b$)` works; anchors
    anywhere else are not expressible in an implicitly anchored regex.
    """
    result: list[tuple[bool, tuple[_Node, ...], bool]] = []
    for nodes in alternatives:
        if len(nodes) == 1 and isinstance(nodes[0], _Group):
            result.extend(_branches(nodes[0].alternatives))
            continue
        start = bool(nodes) and isinstance(nodes[0], _Anchor) and nodes[0].start
        nodes = nodes[int(start):]
        end = bool(nodes) and isinstance(nodes[-1], _Anchor) and not nodes[-1].start
        nodes = nodes[:len(nodes) - int(end)]
        result.append((start, nodes, end))
    return result


def _swapped(char: str) -> str | None:
    other = char.swapcase()
    return other if other != char and len(other) == 1 else None


def _lucene_char(char: str) -> str:
    # Whitespace is literal in Lucene regex; left raw, an escaped newline is not needed.
    return char if char.isalnum() or char.isspace() else "\\" + char


def _lucene_node(node: _Node, caseless: bool) -> str:
    if isinstance(node, _Lit):
        other = _swapped(node.char) if caseless else None
        return f"[{_lucene_char(node.char)}{_lucene_char(other)}]" if other else _lucene_char(node.char)
    if isinstance(node, _Any):
        return "."
    if isinstance(node, _Class):
        ranges = list(node.ranges)
        if caseless:
            for low, high in node.ranges:
                for lo_case, hi_case in ((low.lower(), high.lower()), (low.upper(), high.upper())):
                    if (lo_case, hi_case) not in ranges and len(lo_case) == len(hi_case) == 1 and (
                            (low == high and low.isalpha()) or (low.isalpha() and high.isalpha()
                                                                and low.islower() == high.islower())):
                        ranges.append((lo_case, hi_case))
        body = "".join(_lucene_char(lo) if lo == hi else f"{_lucene_char(lo)}-{_lucene_char(hi)}"
                       for lo, hi in ranges)
        return "[" + ("^" if node.negated else "") + body + "]"
    if isinstance(node, _Group):
        return "(" + "|".join(_lucene_seq(seq, caseless) for seq in node.alternatives) + ")"
    if isinstance(node, _Repeat):
        inner = _lucene_node(node.node, caseless)
        if node.low == 0 and node.high is None:
            quantifier = "*"
        elif node.low == 1 and node.high is None:
            quantifier = "+"
        elif node.low == 0 and node.high == 1:
            quantifier = "?"
        elif node.high is None:
            quantifier = f"{{{node.low},}}"
        elif node.high == node.low:
            quantifier = f"{{{node.low}}}"
        else:
            quantifier = f"{{{node.low},{node.high}}}"
        return inner + quantifier
    raise RegexError("'^' or '$' inside the pattern is not supported")


def _lucene_seq(nodes: tuple[_Node, ...], caseless: bool) -> str:
    return "".join(_lucene_node(n, caseless) for n in nodes)


def lucene_regex(regex: Regex, caseless: bool) -> str:
    """An anchored Lucene regex for a Sigma (PCRE) regex; case folded into classes when
    `caseless` and the target cannot fold case itself. Raises `RegexError`."""
    parser = _RegexParser(regex.pattern)
    branches = _branches(parser.parse())
    fold = caseless or parser.caseless
    texts = [("" if start else ".*") + _lucene_seq(nodes, fold) + ("" if end else ".*")
             for start, nodes, end in branches]
    return "|".join(texts)


def lucene_pattern_regex(pattern: Pattern, caseless: bool = False) -> str:
    """A Lucene regex (anchored by the engine) matching exactly what a wildcard pattern does;
    with `caseless`, each letter matches either case (`[aA]`)."""
    if not caseless:
        return "".join(lucene_regex_literal(p) if isinstance(p, str) else (".*" if p is Wildcard.MANY else ".")
                       for p in pattern.parts)
    return "".join("".join(_lucene_node(_Lit(c), True) for c in p) if isinstance(p, str)
                   else (".*" if p is Wildcard.MANY else ".") for p in pattern.parts)


def lucene_regex_literal(text: str) -> str:
    """A Lucene regex matching exactly `text` (every non-alphanumeric escaped)."""
    return "".join(_lucene_char(c) for c in text)


def regex_wildcards(regex: Regex) -> tuple[list[Pattern], bool]:
    """Wildcard patterns matching at least what the regex matches, and whether exactly.

    Literal runs stay, anything else becomes `*`; `.*` alone is exact.
    """
    exact = True
    patterns: list[Pattern] = []
    for start, nodes, end in _branches(_RegexParser(regex.pattern).parse()):
        parts: list[PatternPart] = [] if start else [Wildcard.MANY]
        for node in nodes:
            if isinstance(node, _Lit):
                parts.append(node.char)
                continue
            if not (isinstance(node, _Repeat) and isinstance(node.node, _Any) and node.low == 0
                    and node.high is None):
                exact = False
            if not parts or parts[-1] is not Wildcard.MANY:
                parts.append(Wildcard.MANY)
        if not end and (not parts or parts[-1] is not Wildcard.MANY):
            parts.append(Wildcard.MANY)
        patterns.append(Pattern(tuple(parts)))
    return patterns, exact
