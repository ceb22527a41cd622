"""Readable queries: a pretty-printer that breaks a compiled one-line query at its boolean
structure, and highlighting of the result.

The printer works on the query's tokens, never on the model: it changes whitespace only,
and only where every query language we print treats whitespace as a separator (before a
boolean operator, after an opening and before a closing bracket, after a comma, before an
SPL pipe). So the pretty form parses to what the exact form parses to; `tests/test_docs.py`
proves that with each language's independent parser. The exact one-line text is what the
page's Copy button copies.

Which language a target writes is a presentation fact of the site (`QUERY_LANGUAGES`);
a target not listed there (a third-party plugin) is shown as written, unhighlighted.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import YamlLexer

WIDTH = 100  # a line longer than this is broken at its boolean structure
INDENT = "  "

# Target name -> the language its default and shown formats are written in.
QUERY_LANGUAGES: dict[str, str] = {"splunk": "spl", "eql": "eql", "kql": "kql", "lucene": "lucene",
                                   "sigma": "yaml"}


# ---------------------------------------------------------------------------
# Languages: what separates tokens, what is a boolean operator
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Syntax:
    name: str
    operators: frozenset[str]  # binary boolean operators: a line may start with one
    case_sensitive_operators: bool
    breaks_before_not: bool = False  # implicit AND: a NOT opens a new conjunct
    pipes: bool = False  # SPL: each `| command` on its own line
    regex_slashes: bool = False  # Lucene: /regex/ is one token
    clauses: frozenset[str] = frozenset()  # SPL `where`, `by`: a pipe stage's clause starts a line
    wraps_words: bool = False  # SPL: any blank outside quotes may become a line break
    brackets: str = "()"  # bracket pairs that group (KQL and Lucene values may hold a raw `[`)
    comma_lists: bool = False  # commas separate list items (in KQL a comma is value text)
    triple_quotes: bool = False  # EQL: """raw strings"""
    regex_strings: bool = False  # EQL: ?"regex"
    keywords: frozenset[str] = frozenset()  # highlighted as keywords (besides the operators)

    def is_operator(self, word: str) -> bool:
        return (word if self.case_sensitive_operators else word.lower()) in self.operators

    @functools.cached_property
    def token_pattern(self) -> re.Pattern[str]:
        """One token and the blanks before it. A backslash escape stays inside its word
        or string; in Lucene an unescaped `/` opens a regex that runs to the next one."""
        singles = re.escape(self.brackets + ("," if self.comma_lists else "") + ("|" if self.pipes else ""))
        alternatives = []
        if self.triple_quotes:
            alternatives.append(r'"""[\s\S]*?(?:"""|\Z)')
        alternatives.append((r"\??" if self.regex_strings else "") + r'"(?:[^"\\]|\\[\s\S])*(?:"|\Z)')
        alternatives.append(r"`[^`]*(?:`|\Z)")
        alternatives.append(f"[{singles}]")
        regex = r"/(?:[^/\\]|\\[\s\S])*(?:/|\Z)|" if self.regex_slashes else ""
        alternatives.append(rf"(?:\\[\s\S]|{regex}[^\s\"`\\{singles}{'/' if self.regex_slashes else ''}]|\\\Z)+")
        return re.compile(r"(?P<pre>[ \t\r\n]*)(?P<token>" + "|".join(alternatives) + ")?")


SYNTAXES: dict[str, Syntax] = {
    "spl": Syntax("spl", frozenset({"AND", "OR"}), True, breaks_before_not=True, pipes=True,
                  clauses=frozenset({"from", "where", "by"}), wraps_words=True, brackets="()[]", comma_lists=True,
                  keywords=frozenset({"NOT", "IN", "as", "AS", "by", "BY", "from", "where", "OVER", "span"})),
    "eql": Syntax("eql", frozenset({"and", "or"}), True, triple_quotes=True, brackets="()[]", comma_lists=True,
                  regex_strings=True, keywords=frozenset({"not", "where", "in", "in~", "like", "like~", "regex",
                                                          "regex~", "sequence", "by", "with", "maxspan", "any",
                                                          "true", "false", "null"})),
    "kql": Syntax("kql", frozenset({"and", "or"}), False, keywords=frozenset({"not", "NOT", "Not"})),
    "lucene": Syntax("lucene", frozenset({"AND", "OR", "&&", "||"}), True, breaks_before_not=True,
                     regex_slashes=True, keywords=frozenset({"NOT", "TO"})),
}


# ---------------------------------------------------------------------------
# Tokens and groups
# ---------------------------------------------------------------------------

@dataclass
class Token:
    text: str
    pre: str = ""  # the whitespace before it in the exact query

    def flat(self) -> str:
        return self.pre + self.text


@dataclass
class Group:
    open: Token
    items: list[Token | Group] = field(default_factory=list)
    close: Token | None = None  # None: unbalanced input, printed as it came
    _flat: str | None = None  # the flat text, computed once (the printer asks for it at every level)

    @property
    def pre(self) -> str:
        return self.open.pre

    def flat(self) -> str:
        if self._flat is None:
            inner = "".join(item.flat() for item in self.items)
            self._flat = self.open.flat() + inner + (self.close.flat() if self.close else "")
        return self._flat


Item = Token | Group
_OPEN = {"(": ")", "[": "]"}
_CLOSE = frozenset(_OPEN.values())


def tokenize(text: str, syntax: Syntax) -> list[Token]:
    """Strings, backtick names, brackets, commas, pipes and words, each with the
    whitespace before it (trailing blanks become a last, empty token)."""
    tokens: list[Token] = []
    position, end = 0, len(text)
    pattern = syntax.token_pattern
    while position < end:
        found = pattern.match(text, position)
        if found is None or found.end() == position:  # cannot happen: every character is some token
            tokens.append(Token(text[position:]))
            break
        tokens.append(Token(found.group("token") or "", found.group("pre")))
        position = found.end()
    return tokens


def group(tokens: list[Token], brackets: str = "()[]") -> list[Item]:
    """Nest the tokens at their brackets (only the language's: in KQL a `[` is value text)."""
    root: list[Item] = []
    stack: list[tuple[Group, str]] = []
    for token in tokens:
        target = stack[-1][0].items if stack else root
        if token.text in _OPEN and token.text in brackets:
            node = Group(token)
            target.append(node)
            stack.append((node, _OPEN[token.text]))
        elif token.text in _CLOSE and token.text in brackets and stack and stack[-1][1] == token.text:
            stack.pop()[0].close = token
        else:
            target.append(token)
    return root


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------

class Printer:
    def __init__(self, syntax: Syntax, width: int = WIDTH) -> None:
        self.syntax = syntax
        self.width = width

    def query(self, text: str) -> str:
        return self.tokens(tokenize(text, self.syntax))

    def tokens(self, tokens: list[Token]) -> str:
        items = group(tokens, self.syntax.brackets)
        if not self.syntax.pipes:
            return self.sequence(items, "", 0).lstrip(" ")
        stages: list[list[Item]] = [[]]
        for item in items:
            if isinstance(item, Token) and item.text == "|":
                stages.append([item])
            else:
                stages[-1].append(item)
        lines = []
        for stage in stages:
            if not stage:
                continue
            if isinstance(stage[0], Token) and stage[0].text == "|":
                rest = stage[1:]
                body = self.clauses(rest) if rest else ""
                lines.append("|" + (" " + body if body else ""))
            else:
                lines.append(self.sequence(stage, "", 0).lstrip(" "))
        return "\n".join(lines)

    def clauses(self, items: list[Item]) -> str:
        """A pipe stage's body: `where ...` and `by ...` each on a line when it is long."""
        flat = "".join(item.flat() for item in items).lstrip(" ")
        if 2 + len(flat) <= self.width:
            return flat
        parts: list[list[Item]] = [[]]
        for index, item in enumerate(items):
            if (index > 1 and isinstance(item, Token) and item.text in self.syntax.clauses and item.pre):
                parts.append([])
            parts[-1].append(item)
        lines = [self.sequence(part, INDENT * 2, 2 * len(INDENT)).lstrip(" ") for part in parts]
        return ("\n" + INDENT).join(lines)

    def is_break(self, item: Item, previous: Item | None) -> bool:
        if not isinstance(item, Token) or not item.pre:
            return False
        if self.syntax.is_operator(item.text):
            return True
        return (self.syntax.breaks_before_not and item.text.upper() == "NOT" and previous is not None
                and not (isinstance(previous, Token) and self.syntax.is_operator(previous.text)))

    def sequence(self, items: list[Item], indent: str, column: int) -> str:
        """Items on one line if they fit, else one line per conjunct or disjunct."""
        flat = "".join(item.flat() for item in items)
        if column + len(flat.lstrip(" ")) <= self.width or not items:
            return flat
        segments: list[list[Item]] = [[]]
        for index, item in enumerate(items):
            if segments[-1] and self.is_break(item, items[index - 1] if index else None):
                segments.append([])
            segments[-1].append(item)
        out = []
        for number, segment in enumerate(segments):
            if number == 0:
                out.append(self.inline(segment, indent, column))
            else:
                head, *rest = segment
                line = indent + head.flat().lstrip()
                out.append("\n" + line + self.inline(rest, indent, len(line)))
        return "".join(out)

    def inline(self, items: list[Item], indent: str, column: int) -> str:
        """A conjunct: tokens as written; a bracket group that does not fit is opened."""
        out: list[str] = []
        for item in items:
            piece = item.flat()
            if isinstance(item, Group) and column + len(piece) > self.width:
                piece = self.opened(item, indent, column)
            elif (self.syntax.wraps_words and out and item.pre and column + len(piece) > self.width
                  and len(indent) + len(piece) < column):
                piece = "\n" + indent + INDENT + piece.lstrip(" ")
            out.append(piece)
            last_line = piece.rsplit("\n", 1)
            column = len(last_line[-1]) if len(last_line) > 1 else column + len(piece)
        return "".join(out)

    def opened(self, node: Group, indent: str, column: int) -> str:
        inner = indent + INDENT
        items = node.items
        has_operator = any(isinstance(i, Token) and self.syntax.is_operator(i.text) for i in items)
        close = node.close.text if node.close else ""
        if not has_operator and any(isinstance(i, Token) and i.text == "," for i in items):
            listed = self.filled(self._stripped(items), inner, len(inner))
            return node.open.flat() + "\n" + inner + listed + close
        body = self.sequence(self._stripped(items), inner, len(inner))
        return node.open.flat() + "\n" + inner + body.lstrip(" ") + ("\n" + indent + close if close else "")

    def filled(self, items: list[Item], indent: str, column: int) -> str:
        """A comma list: as many items on a line as fit, continued on the next."""
        out: list[str] = []
        for item in items:
            piece = item.flat()
            after_comma = bool(out) and out[-1].endswith(",")
            if after_comma and column + len(piece) > self.width:
                piece = "\n" + indent + piece.lstrip(" ")
                column = len(piece) - 1
            else:
                column += len(piece)
            out.append(piece)
        return "".join(out)

    @staticmethod
    def _stripped(items: list[Item]) -> list[Item]:
        """Inside an opened group the first item starts its own line: no leading blank."""
        if items and isinstance(items[0], Token) and items[0].pre:
            return [Token(items[0].text, ""), *items[1:]]
        return items


def pretty(text: str, language: str | None, width: int = WIDTH) -> str:
    """The query broken at its boolean structure (a language without a printer, or a
    multi-line text such as YAML, comes back unchanged)."""
    syntax = SYNTAXES.get(language or "")
    if syntax is None or "\n" in text:
        return text
    return Printer(syntax, width).query(text)


# ---------------------------------------------------------------------------
# Highlighting. Pygments has no lexer for SPL, Elastic EQL, Kibana KQL or Lucene (its
# `kql` is Kusto), so the query languages are highlighted from the printer's own tokens
# with Pygments' CSS class names; YAML (the Sigma target) goes through Pygments' lexer.
# ---------------------------------------------------------------------------

# A bare word that compares: `Image=`, `EventCode=1`, `process.name:`, `field:/regex/`.
_COMPARISON = re.compile(r"((?:\\[\s\S]|[^\\=:<>!])+?)(!=|<=|>=|==|=|<|>|:)([\s\S]*)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BLANKS = re.compile(r"[ \t\r\n]*")
_PUNCTUATION = frozenset("()[],|")
_EQL_OPERATORS = frozenset({"==", "!=", ":", "<", ">", "<=", ">="})


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _span(css: str, text: str) -> str:
    return f'<span class="{css}">{_html(text)}</span>' if text else ""


def _value_class(text: str, syntax: Syntax) -> str | None:
    if text.startswith("/") and syntax.regex_slashes:
        return "sr"
    if _NUMBER.fullmatch(text):
        return "m"
    return "sx" if syntax.name in ("kql", "lucene") else None


def _word_html(text: str, syntax: Syntax, after_pipe: bool, calls: bool) -> str:
    if after_pipe:
        return _span("k", text)  # an SPL command
    if syntax.is_operator(text):
        return _span("ow", text)
    if text in syntax.keywords:
        return _span("k", text)
    if calls:
        return _span("nf", text)
    if syntax.name == "eql" and text in _EQL_OPERATORS:
        return _span("o", text)
    compared = _COMPARISON.fullmatch(text)
    if compared:
        name, operator, rest = compared.groups()
        value = _value_class(rest, syntax)
        return _span("na", name) + _span("o", operator) + (_span(value, rest) if value else _html(rest))
    value = _value_class(text, syntax)
    if value is not None:
        return _span(value, text)
    return _span("n", text) if syntax.name == "eql" and text[:1].isalpha() else _html(text)


def highlight_tokens(text: str, syntax: Syntax) -> str:
    """`text` as HTML, each token in a span of its class; the text itself is unchanged."""
    return _token_html(tokenize(text, syntax), syntax)


def _token_html(tokens: list[Token], syntax: Syntax) -> str:
    out: list[str] = []
    after_pipe = False
    for index, token in enumerate(tokens):
        out.append(token.pre)
        word = token.text
        if not word:
            continue
        first = word[0]
        if first == '"' or (first == "?" and word.startswith('?"')):
            out.append(_span("sr" if first == "?" else "s2", word))
        elif first == "`":
            out.append(_span("nf" if syntax.pipes else "na", word))
        elif len(word) == 1 and word in _PUNCTUATION and syntax.token_pattern.match(word, 0):
            out.append(_span("p", word))
            after_pipe = word == "|" and syntax.pipes
            continue
        else:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            calls = following is not None and following.text == "(" and not following.pre and first.isalpha()
            out.append(_word_html(word, syntax, after_pipe, calls))
        after_pipe = False
    return "".join(out)


_FORMATTER = HtmlFormatter(nowrap=True)
_YAML = YamlLexer(stripnl=False, ensurenl=False)


def pretty_html(text: str, language: str | None, width: int = WIDTH) -> tuple[str, str | None]:
    """`pretty(text)` and its highlighted HTML, tokenizing once: the printed form holds
    the same tokens, so only the blanks before each are read back from it."""
    syntax = SYNTAXES.get(language or "")
    if syntax is None or "\n" in text:
        return text, highlight_html(text, language)
    tokens = tokenize(text, syntax)
    shown = Printer(syntax, width).tokens(tokens)
    moved: list[Token] = []
    position = 0
    blanks = _BLANKS.match
    for token in tokens:
        start = position
        position = blanks(shown, position).end()  # type: ignore[union-attr]  # `*` always matches
        if not shown.startswith(token.text, position):  # cannot happen: the printer moves blanks only
            return shown, highlight_tokens(shown, syntax)
        moved.append(Token(token.text, shown[start:position]))
        position += len(token.text)
    return shown, _token_html(moved, syntax)


def highlight_html(text: str, language: str | None) -> str | None:
    """HTML spans (Pygments' short class names) for `text`, or None for a language we
    do not highlight. The caller checks that the text holds nothing HTML cannot carry."""
    syntax = SYNTAXES.get(language or "")
    if syntax is not None:
        return highlight_tokens(text, syntax)
    if language == "yaml":
        return str(highlight(text, _YAML, _FORMATTER))
    return None


__all__ = ["QUERY_LANGUAGES", "SYNTAXES", "highlight_html", "pretty", "pretty_html"]
