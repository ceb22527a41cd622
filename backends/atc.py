"""ATC (Atomic Threat Coverage) detection-rule cards: one Markdown page per rule.

The card is a two-column metadata table (title, ATT&CK, Data Needed, ...) followed
by the source rule and one fenced block per target query. Queries come from the
registered backends exactly as `compile_rule` returns them: escaped once, by the
target's own escaper; the card never escapes a query again (the original ATC tool
did, which doubled every backslash of the Splunk block).

This module also holds what the documentation site shares with the cards: the
Data Needed derivation, the Markdown escapers and the per-target query compiler.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, ClassVar

import jinja2
import yaml
from markupsafe import Markup

from sigma_wmi.attack import Tactic, Technique, attack
from sigma_wmi.backends.base import Backend, OptionSpec, Output, convert_safely
from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError
from sigma_wmi.model import Op, Pattern, Rule, describe_aggregation, matches

# ---------------------------------------------------------------------------
# Markdown escaping (pure functions; the only places Markdown is escaped)
# ---------------------------------------------------------------------------

# Inside a table cell: HTML-significant characters become entities, Markdown
# punctuation that could start emphasis, code, links or end the cell is
# backslash-escaped, so the cell shows exactly the text it was given.
_MD_CELL = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;",
    "\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
    "~": "\\~", "#": "\\#",  # `#` anywhere: a heading's closing `#`s would vanish
})
# What starts a block (list item, setext underline, thematic break, ordered list) when it
# opens a line; the same text is safe once its first character is backslash-escaped.
_BLOCK_START = re.compile(r"^(?:[-+=]|\d{1,9}(?=[.)]))")
_NEWLINES = re.compile(r"\r\n|\r|\n")
# Characters that would end or break a Markdown link destination `(...)`.
_URL_SAFE = "!#$%&*+,-./:;=?@[]^_{}~'"
LINK_SCHEMES = ("http://", "https://", "ftp://", "mailto:")


def md_cell(text: object) -> str:
    """Text for one Markdown table cell, list item, heading or paragraph: no `|` ends the
    cell, no newline ends the row, no HTML is interpreted, nothing at the start opens a
    block (heading, list, rule, quote, code); line breaks become `<br>`."""
    lines = _NEWLINES.split(str(text).strip())
    return "<br>".join(_BLOCK_START.sub(_escape_block_start, line.strip().translate(_MD_CELL)) for line in lines)


def _escape_block_start(found: re.Match[str]) -> str:
    text = found.group()
    return text + "\\" if text[0].isdigit() else "\\" + text  # `1\.`, `\-`


def md_url(url: str) -> str:
    """A URL for a Markdown link destination: spaces, parentheses, `<>`, `|`, quotes
    and control characters percent-encoded; nothing else changes."""
    return urllib.parse.quote(url.strip(), safe=_URL_SAFE).replace("|", "%7C")


def is_link(url: str) -> bool:
    """Only web and mail links are rendered as links (never `javascript:`)."""
    return url.strip().lower().startswith(LINK_SCHEMES)


_IDENT = re.compile(r"[A-Za-z0-9_.\-]+")


def ident(value: object) -> Markup:
    """An identifier from our own data (DN_0003_..., TA0003, T1546.003) written as is:
    it is checked to hold nothing Markdown or HTML would interpret."""
    text = str(value)
    if not _IDENT.fullmatch(text):
        return Markup(md_cell(text))
    return Markup(text)


def fence(text: str, info: str = "") -> str:
    """A fenced code block that the text cannot close early: the fence is longer
    than the longest run of backticks inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{info}\n{body}{ticks}"


# ---------------------------------------------------------------------------
# Data Needed: which log records a rule depends on
# ---------------------------------------------------------------------------

SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
SECURITY_CHANNEL = "Security"


@dataclass(frozen=True)
class DataNeeded:
    id: str  # DN_0003_1_windows_sysmon_process_creation
    title: str
    channel: str
    event_id: int
    profile: str | None
    fields: frozenset[str]
    description: str
    how_to_collect: str
    escu_data_source: str | None = None


@dataclass(frozen=True)
class DataNeededCatalog:
    entries: tuple[DataNeeded, ...]
    common_fields: frozenset[str]

    def for_event(self, channel: str, event_id: int) -> list[DataNeeded]:
        """The variants of one event, most basic first (ordered by DN number)."""
        return [d for d in self.entries if d.channel == channel and d.event_id == event_id]

    def for_channel(self, channel: str) -> list[DataNeeded]:
        return [d for d in self.entries if d.channel == channel]

    def by_escu_name(self, name: str) -> DataNeeded | None:
        wanted = name.strip().lower()
        return next((d for d in self.entries if (d.escu_data_source or "").lower() == wanted), None)


@functools.cache
def data_needed_catalog() -> DataNeededCatalog:
    text = (resources.files("sigma_wmi") / "data" / "data_needed.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    entries = tuple(
        DataNeeded(
            id=key, title=entry["title"], channel=entry["channel"], event_id=int(entry["event_id"]),
            profile=entry.get("profile"), fields=frozenset(entry.get("fields", ())),
            description=" ".join(str(entry.get("description", "")).split()),
            how_to_collect=" ".join(str(entry.get("how_to_collect", "")).split()),
            escu_data_source=entry.get("escu_data_source"),
        )
        for key, entry in sorted(doc["data_needed"].items())
    )
    return DataNeededCatalog(entries, frozenset(doc.get("common_fields", ())))


def rule_fields(rule: Rule) -> set[str]:
    """Every field the rule's detection tests or its `fields` list names (canonical names)."""
    used = {m.field for m in matches(rule.detection) if m.field}
    for m in matches(rule.detection):
        if m.op is Op.FIELDREF:
            used.update(str(v) for v in m.values)
    return used | set(rule.fields)


def _event_ids(rule: Rule) -> set[int]:
    """EventIDs a detection pins with an equality (for rules written on a whole channel)."""
    ids: set[int] = set()
    for m in matches(rule.detection):
        if m.field == "event_id" and m.op is Op.EQUALS:
            for value in m.values:
                text = value.text if isinstance(value, Pattern) else str(value)
                if text.strip().isdigit():
                    ids.add(int(text))
    return ids


def _covers(dn: DataNeeded, name: str, cat: Catalog, common: frozenset[str]) -> bool:
    available = dn.fields | common
    spec = cat.spec(name)
    if spec is None:  # not in the catalog: the rule's own name is the event's
        return name in available
    own = cat.name_in(dn.profile, name) if dn.profile else None
    if own and own in available:
        return True
    if spec.derive is not None:
        return _covers(dn, spec.derive.source, cat, common)
    return False


def data_needed(rule: Rule) -> tuple[list[DataNeeded], list[Diagnostic]]:
    """The DN records a rule needs, from its log source and the fields it uses.

    Of several variants of one event (4688 with and without command line) the most
    basic one that carries every field of the rule is chosen; an event none of whose
    variants carries the fields is left out. When no event carries them all, the
    fullest variant of each candidate is listed and an info diagnostic says so.
    """
    dns = data_needed_catalog()
    cat = catalog()
    escu_names = rule.extras.get("data_source") or rule.extras.get("data_sources") or ()
    if isinstance(escu_names, str):
        escu_names = [escu_names]
    from_escu = [d for d in (dns.by_escu_name(str(n)) for n in escu_names) if d is not None]
    if from_escu:  # the analytic names its data sources itself
        return sorted(set(from_escu), key=lambda d: d.id), []

    groups = [dns.for_event(channel, event_id) for channel, event_id in _candidate_events(rule, cat)]
    groups = [g for g in groups if g]
    if not groups:
        return [], []
    fields = sorted(rule_fields(rule))
    chosen: list[DataNeeded] = []
    for variants in groups:
        fit = next((d for d in variants
                    if all(_covers(d, f, cat, dns.common_fields) for f in fields)), None)
        if fit is not None:
            chosen.append(fit)
    diagnostics: list[Diagnostic] = []
    if not chosen:
        chosen = [variants[-1] for variants in groups]
        diagnostics.append(Diagnostic(
            Level.INFO, "data-needed",
            f"no known log record carries all of the rule's fields ({', '.join(fields)}); "
            "listing every record of its log source", rule.origin, "atc"))
    return sorted(set(chosen), key=lambda d: d.id), diagnostics


def _candidate_events(rule: Rule, cat: Catalog) -> list[tuple[str, int]]:
    if rule.logsource.product not in (None, "windows"):
        return []
    info = cat.logsource(rule.logsource)
    events = [(SYSMON_CHANNEL, i) for i in info.sysmon_event_ids]
    events += [(SECURITY_CHANNEL, i) for i in info.security_event_ids]
    if info.channel and not events:
        pinned = _event_ids(rule)
        ids = sorted(set(info.event_ids) & pinned if info.event_ids and pinned
                     else info.event_ids or pinned)
        if ids:
            events += [(info.channel, i) for i in ids]
        else:  # a whole channel: every record we know of it
            events += [(d.channel, d.event_id) for d in data_needed_catalog().for_channel(info.channel)]
    return list(dict.fromkeys(events))


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


# ---------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------

SOURCE_HEADINGS = {"sigma": "Sigma rule", "escu": "ESCU analytic"}
NO_ENRICHMENT = "Data for this Detection Rule doesn't require any Enrichments."


def _finalize(value: Any) -> Any:
    """Every `{{ }}` in a Markdown template is cell-escaped unless it is already Markup."""
    if isinstance(value, Markup):
        return value
    return md_cell("" if value is None else value)


@functools.cache
def markdown_environment() -> jinja2.Environment:
    """Jinja2 for Markdown output: autoescape is HTML's, so it is off; `finalize`
    escapes for Markdown table cells instead, and `raw_block` marks fenced code."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sigma_wmi.templates", ""),
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fence"] = lambda text, info="": Markup(fence(str(text), info))
    env.filters["url"] = lambda url: Markup(md_url(str(url)))
    env.filters["is_link"] = is_link
    env.filters["ident"] = ident
    return env


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


__all__ = [
    "AtcBackend", "AttackInfo", "DataNeeded", "QueryBlock", "QueryCompiler", "attack_info", "data_needed",
    "fence", "is_link", "md_cell", "md_url", "rule_fields",
]
