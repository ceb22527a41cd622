"""The backend contract: a backend turns one model `Rule` into text for one target.

A backend never mutates the rule; everything it could not express exactly is a
`Diagnostic` on the `Output` (warning: the query means something slightly different;
error: raise `UnsupportedError` instead and no output is produced).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sigma_wmi.catalog import Catalog
from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError
from sigma_wmi.model import Rule


@dataclass
class Output:
    """One rule compiled for one target and format."""

    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)


@dataclass(frozen=True)
class OptionSpec:
    name: str
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()


class Backend(ABC):
    """Subclass, set the class attributes, implement `convert`; register under the
    `sigma_wmi.backends` entry-point group."""

    name: ClassVar[str]
    description: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # the first is the default
    # File extension per format when writing one file per rule or a combined file.
    extensions: ClassVar[Mapping[str, str]] = {}
    # Formats whose per-rule outputs are joined into one file (NDJSON, savedsearches.conf).
    combined_formats: ClassVar[frozenset[str]] = frozenset()
    # How cards and the docs site show the target: a document target (a card itself) has no
    # query block; `shown_formats` are worth showing beside the default format; a target
    # that writes the source format back (Sigma → Sigma) is left out for rules of that format;
    # blocks are ordered by `display_rank`, then name.
    is_document: ClassVar[bool] = False
    shown_formats: ClassVar[tuple[str, ...]] = ()
    echoes_source: ClassVar[str | None] = None
    display_rank: ClassVar[int] = 1
    options: ClassVar[tuple[OptionSpec, ...]] = ()
    # Options every target takes, declared once here.
    common_options: ClassVar[tuple[OptionSpec, ...]] = (
        OptionSpec("mapping", "environment mapping files (sigma-wmi mapping or pySigma pipeline YAML), "
                   "comma-separated; --mapping FILE on the command line", ()),
    )

    @classmethod
    def option_specs(cls) -> tuple[OptionSpec, ...]:
        return cls.options + cls.common_options

    def __init__(self, **options: Any) -> None:
        known = {spec.name: spec for spec in self.option_specs()}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise SigmaWmiError(
                f"target '{self.name}' has no option {', '.join(unknown)}; "
                f"options: {', '.join(sorted(known)) or 'none'}", code="usage")
        self.settings: dict[str, Any] = {name: spec.default for name, spec in known.items()}
        for name, value in options.items():
            spec = known[name]
            if value is None:
                continue
            if spec.choices and str(value) not in spec.choices:
                raise SigmaWmiError(f"option {name} of target '{self.name}' must be one of "
                                    f"{', '.join(spec.choices)}, not '{value}'", code="usage")
            self.settings[name] = _coerce(value, spec.default)
        from sigma_wmi.mapping import mapped_catalog

        # The catalog this backend maps fields and log sources through: the packaged one,
        # or with --mapping files merged in (a new immutable catalog, built once per process).
        self.catalog: Catalog = mapped_catalog(tuple(self.settings["mapping"]))

    def check_format(self, format: str | None) -> str:
        chosen = format or self.formats[0]
        if chosen not in self.formats:
            raise SigmaWmiError(f"target '{self.name}' has no format '{chosen}'; "
                                f"formats: {', '.join(self.formats)}", code="usage")
        return chosen

    @abstractmethod
    def convert(self, rule: Rule, format: str | None = None) -> Output:
        """Compile one rule. Raises `UnsupportedError` when the rule cannot be expressed."""

    def combine(self, outputs: Sequence[str], format: str | None = None) -> str:
        """Join per-rule outputs into one document (one query per line by default)."""
        return "".join(text if text.endswith("\n") else text + "\n" for text in outputs)

    def identity(self, text: str, format: str | None = None) -> str | None:
        """The name the target files this output under, which must stay unique across a
        batch (a saved-search stanza, a Kibana `rule_id`); None when the format has none."""
        return None

    def file_stem(self, text: str, format: str | None = None) -> str | None:
        """The file name (without extension) the target requires for a per-rule output (contentctl
        requires an analytic's file to carry its name); None: named after the rule's id."""
        return None

    def with_identity(self, text: str, format: str | None, identity: str, n: int) -> tuple[str, str]:
        """The output renamed to the `n`th (n >= 2) alternative of `identity`, and that name.
        Only called for formats whose `identity` is not None."""
        raise NotImplementedError(f"{self.name} names no {format} output")


def convert_safely(backend: Backend, rule: Rule, format: str | None = None) -> Output | Diagnostic:
    """The backend's output, or an error diagnostic saying why there is none. Never raises:
    a rule the target cannot express, or a bug in a plugin, costs one output, not a batch."""
    try:
        return backend.convert(backend.catalog.map_rule(rule), format)
    except SigmaWmiError as err:
        return Diagnostic(Level.ERROR, err.code, err.message, err.origin or rule.origin, backend.name)
    except RecursionError:
        return Diagnostic(Level.ERROR, "too-deep", "condition nested too deeply", rule.origin, backend.name)
    except Exception as err:
        return Diagnostic(Level.ERROR, "internal-error", f"{backend.name} failed: {type(err).__name__}: {err}",
                          rule.origin, backend.name)


def warning(code: str, message: str) -> Diagnostic:
    return Diagnostic(Level.WARNING, code, message)


def info(code: str, message: str) -> Diagnostic:
    return Diagnostic(Level.INFO, code, message)


def _coerce(value: Any, default: Any) -> Any:
    """CLI options arrive as strings; give them the default's type."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value
