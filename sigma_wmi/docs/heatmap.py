"""The ATT&CK coverage heatmap: per tactic column (matrix order from `data/attack.json`),
every parent technique with the number of distinct rules covering it or one of its
sub-techniques, and a colour step for that number."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sigma_wmi.attack import Tactic, Technique, attack

# Upper bounds of the colour steps 1..5 (step 0 is "no rule"): doubling, so a few
# well-covered techniques do not wash out the rest.
STEPS = (1, 3, 7, 15)


@dataclass(frozen=True)
class Cell:
    technique: Technique
    count: int

    @property
    def step(self) -> int:
        if self.count == 0:
            return 0
        return 1 + sum(1 for bound in STEPS if self.count > bound)


@dataclass(frozen=True)
class Column:
    tactic: Tactic
    cells: tuple[Cell, ...]

    @property
    def covered(self) -> int:
        return sum(1 for c in self.cells if c.count)


def parent(technique_id: str) -> str:
    return technique_id.split(".")[0]


def coverage(rule_techniques: Iterable[Iterable[str]]) -> dict[str, int]:
    """Distinct rules per parent technique (a rule naming T1059.001 and T1059.003 counts once)."""
    counts: dict[str, int] = {}
    for ids in rule_techniques:
        for tid in {parent(t) for t in ids}:
            counts[tid] = counts.get(tid, 0) + 1
    return counts


def columns(counts: Mapping[str, int]) -> list[Column]:
    table = attack()
    out = []
    for tactic in table.matrix_tactics():
        cells = sorted((Cell(t, counts.get(t.id, 0)) for t in table.techniques.values()
                        if "." not in t.id and tactic.id in t.tactics), key=lambda c: c.technique.name.lower())
        if cells:
            out.append(Column(tactic, tuple(cells)))
    return out


def legend() -> list[tuple[int, str]]:
    """(step, label) for the colour key."""
    labels = ["0"]
    low = 1
    for bound in STEPS:
        labels.append(str(low) if bound == low else f"{low}-{bound}")
        low = bound + 1
    labels.append(f"{low}+")
    return list(enumerate(labels))
