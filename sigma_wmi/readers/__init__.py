"""Readers turn rule files into model `Rule`s. The format is detected from the content."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.model import Rule
from sigma_wmi.readers.sigma import is_sigma, read_sigma
from sigma_wmi.readers.sigma_correlation import (
    Correlation,
    RulesElsewhere,
    apply_correlations,
    is_correlation,
    read_correlation,
)
from sigma_wmi.readers.sigma_filters import MetaFilter, apply_filters, is_filter, read_filter
from sigma_wmi.readers.yamlsource import display_path, load_documents, read_text, split_documents

RULE_SUFFIXES = (".yml", ".yaml")


@dataclass
class ReadOptions:
    """Options readers share; `macros_dir` is where ESCU macros live (None: auto-detect);
    `filters` narrow the rules they select (Sigma meta filters); `placeholders` give the
    values of `%name%` placeholders (`|expand`)."""

    macros_dir: Path | None = None
    filters: tuple[MetaFilter, ...] = ()
    placeholders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # an unresolved placeholder: "error" (a located rule error) or "native" (kept for the target)
    unresolved_placeholders: str = "error"
    # rules that correlations in other input files name (see sigma_correlation.rules_elsewhere)
    elsewhere: RulesElsewhere = field(default_factory=RulesElsewhere)


@dataclass
class SourceFile:
    """What one file gave: its rules, or the error that stopped it."""

    path: Path
    rules: list[Rule] = field(default_factory=list)
    error: SigmaWmiError | None = None


def rule_files(paths: Iterable[Path | str]) -> list[Path]:
    """Rule files under the given files and directories, recursively, in a stable order.

    Every non-directory entry with a rule suffix is listed, FIFOs and devices too: reading
    refuses them with an error (before opening), so none is skipped silently."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and not p.is_dir()))
        else:
            found.append(path)
    return found


def read_text_rules(text: str, path: str, options: ReadOptions | None = None,
                    documents: list[Any] | None = None) -> list[Rule]:
    """Rules from YAML text; raises `SigmaWmiError` with file and line on bad input.
    `documents`: the text's documents when the caller has loaded them already (the linter)."""
    documents = load_documents(text, path) if documents is None else documents
    if not documents:
        raise SigmaWmiError("empty file: no YAML document", Origin(path, 1), "empty")
    options = options or ReadOptions()
    if len(documents) == 1 and "---" not in text and not is_correlation(documents[0]):  # the common case
        if is_filter(documents[0]):  # a filter selects rules, it is none (see sigma_filters.filters_among),
            read_filter(documents[0], text, path)  # but a broken one is this file's error
            return []
        return options.elsewhere.hide_used(apply_filters([_read_document(documents[0], text, path, options)],
                                                         options.filters))
    rules: list[Rule] = []
    correlations: list[Correlation] = []
    for doc, (offset, piece) in zip(documents, split_documents(text), strict=False):
        try:
            if is_filter(doc):
                read_filter(doc, piece, path)  # validated: a broken filter is a located error
                continue
            if is_correlation(doc):
                correlation = read_correlation(doc, piece, path)
                correlation.origin = correlation.origin.at((correlation.origin.line or 1) + offset)
                correlations.append(correlation)
                continue
            rule = _read_document(doc, piece, path, options)
        except SigmaWmiError as err:
            if err.origin is not None and err.origin.line is not None:
                err.origin = err.origin.at(err.origin.line + offset, err.origin.column)
            raise
        rules.append(dataclasses.replace(rule, origin=rule.origin.at((rule.origin.line or 1) + offset)))
    rules = apply_filters(rules, options.filters)  # before correlations: they see their rules filtered
    rules = options.elsewhere.hide_used(rules)
    return apply_correlations(rules, correlations, options.elsewhere) if correlations else rules


def read_file(path: Path | str, options: ReadOptions | None = None) -> list[Rule]:
    path = Path(path)
    return read_text_rules(read_text(path), display_path(path), options)


def read_source(path: Path, options: ReadOptions | None = None) -> SourceFile:
    """Like `read_file` but never raises for bad input: the error is kept on the result."""
    try:
        return SourceFile(path, read_file(path, options))
    except SigmaWmiError as err:
        return SourceFile(path, error=err)
    except RecursionError:
        return SourceFile(path, error=SigmaWmiError("rule is nested too deeply", Origin(display_path(path)),
                                                    "too-deep"))


def _read_document(doc: Any, text: str, path: str, options: ReadOptions) -> Rule:
    from sigma_wmi.readers import escu  # imported lazily: the SPL grammar is only needed for ESCU

    if not isinstance(doc, dict):
        raise SigmaWmiError(f"expected a mapping at the top level, got {type(doc).__name__}",
                            Origin(path, 1), "not-a-rule")
    if escu.is_escu(doc):
        return escu.read_escu(doc, text, path, options.macros_dir)
    if is_sigma(doc):
        return read_sigma(doc, text, path, options.placeholders, native_placeholders=options.unresolved_placeholders
                          == "native")
    raise SigmaWmiError("not a Sigma rule or ESCU analytic (no 'detection' or 'search' key)",
                        Origin(path, 1), "not-a-rule")
