"""ATC (Atomic Threat Coverage) detection-rule cards: one Markdown page per rule.

The card is a two-column metadata table (title, ATT&CK, Data Needed, ...) followed
by the source rule and one fenced block per target query. Queries come from the
registered backends exactly as `compile_rule` returns them: escaped once, by the
target's own escaper; the card never escapes a query again (the original ATC tool
did, which doubled every backslash of the Splunk block).

What the documentation site shares with the cards (Markdown escaping, Data Needed,
the per-target query compiler) lives in `sigma_wmi.docs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sigma_wmi.backends.base import Backend, OptionSpec, Output
from sigma_wmi.docs.data_needed import DataNeeded, data_needed
from sigma_wmi.docs.markdown import markdown_environment
from sigma_wmi.docs.queries import AttackInfo, QueryBlock, QueryCompiler, attack_info
from sigma_wmi.model import Rule, describe_aggregation

# ---------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------

SOURCE_HEADINGS = {"sigma": "Sigma rule", "escu": "ESCU analytic"}
NO_ENRICHMENT = "Data for this Detection Rule doesn't require any Enrichments."


def card_context(rule: Rule, blocks: Sequence[QueryBlock], dn_base: str = "../Data_Needed",
                 trigger_base: str = "../Triggers", info: AttackInfo | None = None,
                 needed: Sequence[DataNeeded] | None = None) -> dict[str, Any]:
    """Template variables of a card; ATT&CK info and Data Needed are computed unless given."""
    info = info or attack_info(rule)
    needed = data_needed(rule)[0] if needed is None else needed
    return {
        "rule": rule,
        "tactics": info.tactics,
        "techniques": info.techniques,
        "data_needed": needed,
        "dn_base": dn_base,
        "trigger_base": trigger_base,
        "enrichment": NO_ENRICHMENT,
        "authors": ", ".join(rule.authors),
        "source_heading": SOURCE_HEADINGS.get(rule.source_format, "Source rule"),
        "source_text": rule.source_text.rstrip("\n"),
        "blocks": blocks,
        "threshold": describe_aggregation(rule.aggregation) if rule.aggregation else None,
    }


class AtcBackend(Backend):
    name = "atc"
    description = "ATC detection-rule card (Markdown): metadata table, source rule, query per target"
    formats = ("markdown",)
    extensions: ClassVar[Mapping[str, str]] = {"markdown": ".md"}
    combined_formats: ClassVar[frozenset[str]] = frozenset()
    is_document = True  # a card is a document, not a query to show in another card
    options = (
        OptionSpec("targets", "comma-separated targets whose queries go into the card (default: all)", ()),
        OptionSpec("data_needed_base", "link base for Data Needed pages", "../Data_Needed"),
        OptionSpec("trigger_base", "link base for Trigger pages", "../Triggers"),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        chosen: tuple[str, ...] = tuple(self.settings["targets"])
        self._compiler: QueryCompiler | None = None
        self._targets = chosen or None

    @property
    def compiler(self) -> QueryCompiler:
        # Created on first use: building backends in __init__ would load every plugin
        # whenever the registry merely instantiates this target.
        if self._compiler is None:
            self._compiler = QueryCompiler(self._targets, tuple(self.settings["mapping"]))
        return self._compiler

    def convert(self, rule: Rule, format: str | None = None) -> Output:
        self.check_format(format)
        blocks = self.compiler.compile(rule)
        info = attack_info(rule)
        needed, dn_diagnostics = data_needed(rule)
        context = card_context(rule, blocks, self.settings["data_needed_base"], self.settings["trigger_base"],
                               info, needed)
        text = markdown_environment().get_template("atc_card.md.j2").render(context)
        diagnostics = [*info.diagnostics, *dn_diagnostics]
        for block in blocks:
            diagnostics.extend(block.diagnostics)
        return Output(text, diagnostics)

    def combine(self, outputs: Sequence[str], format: str | None = None) -> str:
        return "\n\n---\n\n".join(o.rstrip("\n") for o in outputs) + "\n"


__all__ = ["AtcBackend", "card_context"]
