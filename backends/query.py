"""The tree walk shared by every boolean query language (SPL, EQL, KQL, Lucene).

A target subclasses `QueryGenerator`, declares its syntax as class attributes and
writes one `match_<op>` method per operator it supports. Nodes dispatch by class
name, operators by `Op` value; an operator without a method is unsupported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from sigma_wmi.errors import Diagnostic, Level, UnsupportedError, add_once
from sigma_wmi.model import And, Expr, Match, Not, Op, Or


@dataclass(frozen=True, slots=True)
class Fragment:
    """Generated text plus what kind of expression it is, for deciding on parentheses."""

    text: str
    kind: str = "atom"  # "atom", "and", "or", "not"


class QueryGenerator:
    AND: ClassVar[str] = " AND "
    OR: ClassVar[str] = " OR "
    NOT: ClassVar[str] = "NOT "
    GROUP: ClassVar[str] = "({})"
    COMPARE: ClassVar[str] = "{field}{op}{value}"  # numeric comparison
    COMPARE_SYMBOLS: ClassVar[dict[Op, str]] = {Op.LT: "<", Op.LTE: "<=", Op.GT: ">", Op.GTE: ">="}
    target: ClassVar[str] = "query"
    # Three-valued targets (EQL, Splunk eval) make a test on a missing field null, and
    # `not null` is null, so `not f : "x"` would drop events without f. Sigma says such an
    # event does not match the test, so under a negation each test also asserts presence.
    NULL_IS_UNKNOWN: ClassVar[bool] = False

    def __init__(self, diagnostics: list[Diagnostic] | None = None) -> None:
        self.diagnostics: list[Diagnostic] = diagnostics if diagnostics is not None else []
        self._negated = 0

    # ---- entry point ----
    def generate(self, expr: Expr) -> str:
        return self.node(expr).text

    def node(self, expr: Expr) -> Fragment:
        method: Callable[[Expr], Fragment] = getattr(self, f"{type(expr).__name__.lower()}_node")
        return method(expr)

    # ---- boolean structure ----
    def and_node(self, expr: And) -> Fragment:
        return self.join([self.node(item) for item in expr.items], "and")

    def or_node(self, expr: Or) -> Fragment:
        return self.join([self.node(item) for item in expr.items], "or")

    def not_node(self, expr: Not) -> Fragment:
        self._negated += 1
        try:
            inner = self.node(expr.item)
        finally:
            self._negated -= 1
        text = inner.text if inner.kind in ("atom", "not") else self.GROUP.format(inner.text)
        return Fragment(self.NOT + text, "not")

    def join(self, parts: list[Fragment], kind: str) -> Fragment:
        """Join with AND/OR, grouping every compound child of the other kind.

        Targets disagree on precedence (SPL binds OR tighter than AND), so a
        compound child always gets parentheses and no target can misread it.
        """
        if len(parts) == 1:
            return parts[0]
        separator = self.AND if kind == "and" else self.OR
        texts = [p.text if p.kind in ("atom", "not", kind) else self.GROUP.format(p.text) for p in parts]
        return Fragment(separator.join(texts), kind)

    # ---- matches ----
    def match_node(self, match: Match) -> Fragment:
        method = getattr(self, f"match_{match.op.value}", None)
        if method is None:
            raise self.unsupported(f"operator '{match.op.value}' is not supported", match)
        result: Fragment = method(match)
        if self.NULL_IS_UNKNOWN and self._negated and match.field is not None \
                and match.op not in (Op.EXISTS, Op.NULL):
            return self.join([Fragment(self.present(match)), result], "and")
        return result

    def present(self, match: Match) -> str:
        """A test that the match's field is present (for NULL_IS_UNKNOWN targets)."""
        raise NotImplementedError

    def compare(self, match: Match) -> Fragment:
        field = self.compare_field(match)
        symbol = self.COMPARE_SYMBOLS[match.op]
        return self.any_value(match, lambda v: self.COMPARE.format(field=field, op=symbol,
                                                                   value=self.number(v)))

    def match_lt(self, match: Match) -> Fragment:
        return self.compare(match)

    def match_lte(self, match: Match) -> Fragment:
        return self.compare(match)

    def match_gt(self, match: Match) -> Fragment:
        return self.compare(match)

    def match_gte(self, match: Match) -> Fragment:
        return self.compare(match)

    def compare_field(self, match: Match) -> str:
        """The field as the target writes it on the left of a comparison."""
        return self.named(match)

    def number(self, value: object) -> str:
        return str(value)

    def named(self, match: Match) -> str:
        """The match's field; an operator that needs one cannot be a keyword search."""
        if match.field is None:
            raise self.unsupported(f"'{match.op.value}' needs a field", match)
        return match.field

    def any_value(self, match: Match, render: Callable[[object], str]) -> Fragment:
        """OR over a match's values, each rendered by `render`."""
        texts = [render(v) for v in match.values]
        return Fragment(texts[0]) if len(texts) == 1 else Fragment(self.OR.join(texts), "or")

    # ---- diagnostics ----
    def unsupported(self, message: str, match: Match | None = None) -> UnsupportedError:
        field = f" on field '{match.field}'" if match is not None and match.field else ""
        return UnsupportedError(f"{self.target}: {message}{field}")

    def warn(self, code: str, message: str) -> None:
        add_once(self.diagnostics, Diagnostic(Level.WARNING, code, message, target=self.target))
