"""Where things came from, what went wrong, and what a conversion could not do exactly."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Origin:
    """A place in a source file. `format` names the reader ("sigma", "escu")."""

    path: str
    line: int | None = None
    column: int | None = None
    format: str = "sigma"

    def at(self, line: int | None, column: int | None = None) -> Origin:
        return replace(self, line=line, column=column)

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where


class Level(enum.Enum):
    INFO = "info"  # worth knowing, output is exact
    WARNING = "warning"  # output differs from the rule's meaning (broader, case-sensitive, ...)
    ERROR = "error"  # this rule could not be converted for this target


@dataclass(frozen=True, slots=True)
class Diagnostic:
    level: Level
    code: str  # stable, kebab-case, e.g. "case-sensitive", "literal-wildcard"
    message: str
    origin: Origin | None = None
    target: str | None = None

    def __str__(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        target = f"[{self.target}] " if self.target else ""
        return f"{where}{self.level.value}: {target}{self.message} ({self.code})"

    def to_json(self) -> dict[str, object]:
        return {
            "level": self.level.value,
            "code": self.code,
            "message": self.message,
            "path": self.origin.path if self.origin else None,
            "line": self.origin.line if self.origin else None,
            "target": self.target,
        }


def add_once(diagnostics: list[Diagnostic], diagnostic: Diagnostic) -> None:
    """Append unless an equal diagnostic is already there (one warning per rule, not per value)."""
    if diagnostic not in diagnostics:
        diagnostics.append(diagnostic)


class SigmaWmiError(Exception):
    """The one error type the library raises for bad input or unsupported content."""

    def __init__(self, message: str, origin: Origin | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.origin = origin
        self.code = code

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}" if self.origin else self.message

    def diagnostic(self, target: str | None = None) -> Diagnostic:
        return Diagnostic(Level.ERROR, self.code, self.message, self.origin, target)


class UnsupportedError(SigmaWmiError):
    """The rule is valid but a target cannot express part of it."""

    def __init__(self, message: str, origin: Origin | None = None, code: str = "unsupported") -> None:
        super().__init__(message, origin, code)
