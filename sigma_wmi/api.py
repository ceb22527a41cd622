"""The Python API: load rules, compile them for a target."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sigma_wmi.backends.base import Backend, Output
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.model import Rule
from sigma_wmi.readers import ReadOptions, read_source, rule_files
from sigma_wmi.readers.sigma_correlation import rules_elsewhere
from sigma_wmi.registry import backend_class


def load(path: str | Path, *, macros_dir: str | Path | None = None, read_options: ReadOptions | None = None
         ) -> list[Rule]:
    """All rules in a file or directory (recursively). Raises `SigmaWmiError` for the
    first file that cannot be read; use `load_all` to collect errors instead."""
    rules, errors = load_all([path], macros_dir=macros_dir, read_options=read_options)
    if errors:
        raise errors[0]
    return rules


def load_all(paths: list[str | Path], *, macros_dir: str | Path | None = None,
             read_options: ReadOptions | None = None) -> tuple[list[Rule], list[SigmaWmiError]]:
    """Rules from every file under `paths`, and one error per file that failed.
    `read_options` (filters, placeholder values, macros) replaces `macros_dir` when given."""
    options = read_options or ReadOptions(Path(macros_dir) if macros_dir else None)
    files = rule_files(paths)
    if not options.elsewhere.rules:  # rules that correlations name from another of these files
        options = dataclasses.replace(options, elsewhere=rules_elsewhere(files, options))
    rules: list[Rule] = []
    errors: list[SigmaWmiError] = []
    for file in files:
        source = read_source(file, options)
        rules.extend(source.rules)
        if source.error:
            errors.append(source.error)
    return rules, errors


def backend(target: str, **options: Any) -> Backend:
    """A configured backend instance for a target name (see `sigma-wmi list targets`)."""
    return backend_class(target)(**options)


def compile_rule(rule: Rule, target: str = "splunk", format: str | None = None, **options: Any) -> Output:
    """One rule for one target, with the diagnostics the conversion produced
    (`mapping=("env.yml",)` maps it to an environment first)."""
    chosen = backend(target, **options)
    return chosen.convert(chosen.catalog.map_rule(rule), format)


def convert(rule_or_path: Rule | str | Path, target: str = "splunk", format: str | None = None,
            **options: Any) -> str:
    """Compile a rule, or every rule under a path, to target text.

    Raises `SigmaWmiError` (or its subclass `UnsupportedError`) when a rule cannot
    be read or expressed; diagnostics of successful conversions are not raised,
    use `compile_rule` to see them.
    """
    chosen = backend(target, **options)
    rules = [rule_or_path] if isinstance(rule_or_path, Rule) else load(rule_or_path)
    if not rules:
        raise SigmaWmiError(f"no rules found in {rule_or_path}")
    texts = [chosen.convert(chosen.catalog.map_rule(rule), format).text for rule in rules]
    if len(texts) == 1 and format not in chosen.combined_formats:
        return texts[0]
    return chosen.combine(texts, chosen.check_format(format))
