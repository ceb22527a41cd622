"""What cards and site pages show of a rule besides its text: its ATT&CK facts and its
query for every target, compiled by the registered backends exactly as `compile_rule`
returns them (escaped once, by the target's own escaper; never escaped again)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from sigma_wmi.attack import Tactic, Technique, attack
from sigma_wmi.backends.base import Backend, Output, convert_safely
from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError
from sigma_wmi.model import Rule

# ---------------------------------------------------------------------------
# ATT&CK facts of a rule
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AttackInfo:
    tactics: tuple[Tactic, ...]
    techniques: tuple[Technique, ...]
    diagnostics: tuple[Diagnostic, ...]


def attack_info(rule: Rule) -> AttackInfo:
    """Current techniques (revoked ids followed to their replacement, with a warning)
    and tactics: the rule's own tactic tags, else those of its techniques."""
    table = attack()
    techniques: list[Technique] = []
    diagnostics: list[Diagnostic] = []
    for tech in rule.techniques:
        found, diagnostic = table.resolve(tech.id)
        if diagnostic is not None:
            diagnostics.append(Diagnostic(diagnostic.level, diagnostic.code, diagnostic.message, rule.origin))
        if found is not None and found not in techniques:
            techniques.append(found)
    tactics: list[Tactic] = []
    for name in rule.tactics:
        tactic = table.tactic(name)
        if tactic is not None and tactic not in tactics:
            tactics.append(tactic)
    if not tactics:
        for current in techniques:
            for tid in current.tactics:
                tactic = table.tactic(tid)
                if tactic is not None and tactic not in tactics:
                    tactics.append(tactic)
    return AttackInfo(tuple(tactics), tuple(techniques), tuple(diagnostics))


# ---------------------------------------------------------------------------
# Queries for every target
# ---------------------------------------------------------------------------

@dataclass
class QueryBlock:
    """One compiled query, or the reason there is none."""

    target: str
    format: str
    default: bool  # the target's default format
    text: str | None = None
    note: str | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.target if self.default else f"{self.target} {self.format}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


class QueryCompiler:
    """Backends for a set of targets, created once and reused for every rule.

    A target whose plugin fails to load is reported once (`unavailable`) and left
    out; a rule a target cannot express gets a note instead of a query.
    """

    def __init__(self, targets: Iterable[str] | None = None, mapping: tuple[str, ...] = ()) -> None:
        from sigma_wmi.registry import backend_class, target_names

        if targets is None:
            classes = [backend_class(t) for t in target_names()]
            targets = [c.name for c in sorted(classes, key=lambda c: (c.display_rank, c.name)) if not c.is_document]
        names = list(targets)
        self.backends: dict[str, Backend] = {}
        self.unavailable: dict[str, str] = {}
        for name in names:
            try:
                self.backends[name] = backend_class(name)(mapping=mapping)
            except SigmaWmiError as err:
                self.unavailable[name] = err.message

    def formats(self, backend: Backend) -> list[str]:
        default = backend.formats[0]
        extra = [f for f in backend.shown_formats
                 if f in backend.formats and f != default and f not in backend.combined_formats]
        return [default, *extra]

    def compile(self, rule: Rule) -> list[QueryBlock]:
        blocks: list[QueryBlock] = []
        for name, backend in self.backends.items():
            if backend.echoes_source == rule.source_format:
                continue  # the source rule is already on the page
            for position, fmt in enumerate(self.formats(backend)):
                block = QueryBlock(name, fmt, position == 0)
                output = convert_safely(backend, rule, fmt)
                if isinstance(output, Output):
                    block.text = output.text.rstrip("\n")
                    block.diagnostics.extend(
                        d if d.target else Diagnostic(d.level, d.code, d.message, d.origin or rule.origin, name)
                        for d in output.diagnostics)
                elif output.code == "internal-error":  # a broken plugin: a note, and an error to report
                    block.note = f"target {block.label}: {output.message}"
                    block.diagnostics.append(output)
                else:  # the rule is beyond this target: worth a note, not a warning
                    block.note = f"not expressible for {block.label}: {output.message}"
                    block.diagnostics.append(replace(output, level=Level.INFO))
                blocks.append(block)
        return blocks
