"""The documentation site: one HTML and one Markdown page per rule, a faceted and
searchable index, pages by tactic, technique and log source, an ATT&CK coverage heatmap
and a Navigator layer. Everything is static, relative-linked and works from `file://`.

Rule pages are named after the rule id (sanitized), never the title. The pages of a
large site are compiled and rendered by worker processes (same bytes either way); the
whole site is written into a temporary folder beside the output folder and swapped in
at the end, so a failed build leaves nothing partial.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from sigma_wmi.attack import Tactic, Technique, attack
from sigma_wmi.docs import heatmap, search_index
from sigma_wmi.docs.data_needed import DataNeeded, data_needed
from sigma_wmi.docs.markdown import is_link, markdown_environment
from sigma_wmi.docs.pretty import QUERY_LANGUAGES, pretty_html
from sigma_wmi.docs.queries import AttackInfo, QueryBlock, QueryCompiler, attack_info
from sigma_wmi.docs.search_index import NONE, IndexEntry
from sigma_wmi.docs.text import _finalize, code_markup, highlighted_markup, paragraphs, reflowed
from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError
from sigma_wmi.model import RelatedRule, Rule, describe_aggregation
from sigma_wmi.output import TEMP_MARK, inside, is_device_name, remove_stale_temporaries
from sigma_wmi.parallel import ordered_map

MARKER = ".sigma-wmi-site"  # only a folder holding this file is replaced by a new build
RELATED_TECHNIQUE_LIMIT = 25
RELATED_LOGSOURCE_LIMIT = 10
NAVIGATOR = {"navigator": "5.1.0", "layer": "4.5"}
SOURCE_NAMES = {"sigma": "Sigma rule", "escu": "ESCU analytic"}
VENDOR = "minisearch"  # templates/docs/vendor/<VENDOR>/: the search library, copied unchanged
PARALLEL_FROM = 100  # pages; fewer are rendered in-process


@dataclass(frozen=True)
class Link:
    """Another rule's page as a related-rules list shows it (no reference to its page:
    pages travel to worker processes one by one)."""

    slug: str
    title: str
    kind: str


@dataclass
class SiteReport:
    """What a build wrote, and what readers should know about."""

    out_dir: Path
    pages: list[str] = field(default_factory=list)  # relative paths, sorted
    rules: int = 0
    warnings: list[Diagnostic] = field(default_factory=list)


@dataclass
class RulePage:
    rule: Rule
    slug: str
    attack: AttackInfo
    related: dict[str, list[Link]] = field(default_factory=dict)
    more_logsource: int = 0
    related_missing: list[RelatedRule] = field(default_factory=list)
    test_results: Mapping[str, Any] | None = None  # this rule's entry of a `sigma-wmi test --report`
    # Filled where the page is rendered (a worker process for a large site):
    data_needed: list[DataNeeded] = field(default_factory=list)

    @functools.cached_property
    def logsource(self) -> str:
        return self.rule.logsource.key()

    @property
    def technique_ids(self) -> list[str]:
        return [t.id for t in self.attack.techniques]


@dataclass
class BlockView:
    """A query block as a page shows it: pretty and highlighted, plus the exact text."""

    block: QueryBlock
    language: str | None
    pretty: Markup | None  # None: the target has no query for the rule
    exact: Markup | None

    @functools.cached_property
    def status(self) -> str:
        if self.block.text is None:
            return "failed"
        if any(d.level is not Level.INFO for d in self.block.diagnostics):
            return "partial"
        return "exact"


# ---------------------------------------------------------------------------
# Names and paths
# ---------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def page_slug(rule: Rule) -> str:
    """The file name stem of a rule's pages: its id with anything but [a-z0-9_-]
    replaced; a rule without a usable id gets a hash of its title."""
    slug = _UNSAFE.sub("-", rule.id.strip().lower()).strip("-_")[:96]
    if slug:
        return slug + "-rule" if is_device_name(slug) else slug  # `con.html` is a device on Windows
    return "rule-" + hashlib.sha256(rule.title.encode("utf-8")).hexdigest()[:16]


def anchor(text: str) -> str:
    """An HTML id for a heading (log-source keys hold slashes)."""
    return _UNSAFE.sub("-", text.lower()).strip("-") or "none"


# ---------------------------------------------------------------------------
# Templates and assets
# ---------------------------------------------------------------------------

@functools.cache
def html_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sigma_wmi.templates", "docs"),
        autoescape=True,  # every value is HTML-escaped unless a template says otherwise
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["is_link"] = is_link
    env.filters["anchor"] = anchor
    env.filters["code"] = code_markup
    env.filters["paragraphs"] = paragraphs
    return env


def _template_file(*parts: str) -> str:
    return (resources.files("sigma_wmi.templates").joinpath("docs", *parts)).read_text(encoding="utf-8")


def vendored_assets() -> dict[str, str]:
    """The search library and its license, copied byte for byte into the site."""
    folder = resources.files("sigma_wmi.templates").joinpath("docs", "vendor", VENDOR)
    return {f"assets/vendor/{VENDOR}/{entry.name}": entry.read_text(encoding="utf-8")
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.is_file()}


# ---------------------------------------------------------------------------
# `sigma-wmi test --report` results
# ---------------------------------------------------------------------------

def read_test_report(path: Path) -> dict[str, Mapping[str, Any]]:
    """The rules of a `sigma-wmi test --report` file, by rule id (and by path for rules
    without one). A file that is not such a report is a usage error naming it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SigmaWmiError(f"{path}: cannot read the test report: {err}", code="usage") from None
    rules = document.get("rules") if isinstance(document, dict) else None
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise SigmaWmiError(f"{path}: not a `sigma-wmi test --report` file (no 'rules' list)", code="usage")
    found: dict[str, Mapping[str, Any]] = {}
    for entry in rules:
        key = str(entry.get("id") or "") or f"path:{entry.get('path')}"
        found[key] = entry
    return found


def _results_for(rule: Rule, report: Mapping[str, Mapping[str, Any]] | None) -> Mapping[str, Any] | None:
    if report is None:
        return None
    return report.get(rule.id) if rule.id else report.get(f"path:{rule.origin.path}")


# ---------------------------------------------------------------------------
# Rule pages (rendered in worker processes for a large site)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RenderSettings:
    targets: tuple[str, ...] | None
    mapping: tuple[str, ...]
    unavailable: tuple[str, ...]
    attack_version: str
    test_report_given: bool
    staging: Path | None = None  # set: rule pages are written here by whoever renders them


@dataclass
class RenderedRule:
    files: dict[str, str]  # rendered, not yet written (empty once written to the staging folder)
    written: list[str]
    entry: IndexEntry
    warnings: list[Diagnostic]
    block_status: dict[str, str]  # block label -> exact | partial | failed


@functools.cache
def _compiler(targets: tuple[str, ...] | None, mapping: tuple[str, ...]) -> QueryCompiler:
    """One compiler per process and settings: backends are built once."""
    return QueryCompiler(targets, mapping)


def _render_chunk(pages: list[RulePage], settings: RenderSettings) -> list[RenderedRule]:
    """Compile, render and (with a staging folder) write a chunk of rule pages: the pages,
    by far most of a site's bytes, never travel back to the main process."""
    compiler = _compiler(settings.targets, settings.mapping)
    results = [render_rule(page, compiler.compile(page.rule), settings) for page in pages]
    if settings.staging is not None:
        for result in results:
            write_files(settings.staging, result.files)
            result.written, result.files = sorted(result.files), {}
    return results


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Each file under `root`, through `inside` (nothing lands outside it)."""
    made: set[Path] = set()
    for relative in sorted(files):
        path = inside(root, relative)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        # errors="replace": a lone surrogate from a rule must not abort the build
        path.write_text(files[relative], encoding="utf-8", errors="replace", newline="\n")


def block_view(block: QueryBlock) -> BlockView:
    language = QUERY_LANGUAGES.get(block.target)
    if block.text is None:
        return BlockView(block, language, None, None)
    shown, spans = pretty_html(block.text, language)
    return BlockView(block, language, highlighted_markup(shown, spans), code_markup(block.text))


def render_rule(page: RulePage, blocks: list[QueryBlock], settings: RenderSettings) -> RenderedRule:
    rule = page.rule
    page.data_needed = data_needed(rule)[0]  # its info diagnostic is for cards: the page lists what it found
    views = [block_view(b) for b in blocks]
    context = {
        "attack_version": settings.attack_version, "source_names": SOURCE_NAMES,
        "page": page, "rule": rule, "root": "..", "blocks": views,
        "how_to_implement": _how_to_implement(page),
        "false_positives": _false_positives(rule),
        "drilldowns": _drilldowns(rule),
        "escu": escu_metadata(rule),
        "tests": _tests(page, settings.test_report_given),
        "threshold": describe_aggregation(rule.aggregation) if rule.aggregation else None,
        "unavailable": settings.unavailable,
    }
    files = {
        f"rules/{page.slug}.html": html_environment().get_template("rule.html.j2").render(context),
        f"rules/{page.slug}.md": markdown_environment().get_template("docs/rule.md.j2").render(context),
    }
    warnings = [d for b in blocks for d in b.diagnostics if d.level is Level.WARNING]
    status = {v.block.label: v.status for v in views}
    return RenderedRule(files, [], index_entry(page, views), warnings, status)


def index_entry(page: RulePage, views: list[BlockView]) -> IndexEntry:
    rule = page.rule
    source = rule.source_format
    facets = {
        "level": [rule.level or NONE], "status": [rule.status or NONE],
        "product": [rule.logsource.product or NONE], "category": [rule.logsource.category or NONE],
        "service": [rule.logsource.service or NONE],
        "tactic": [t.id for t in page.attack.tactics],
        "technique": sorted({heatmap.parent(t) for t in page.technique_ids}),
        "target": [v.block.label for v in views if v.status == "exact"],
        "source": [source],
    }
    names = [rule.id, Path(rule.origin.path).stem, page.logsource, *page.technique_ids,
             *(t.name for t in page.attack.techniques), *(t.name for t in page.attack.tactics), *rule.tags]
    text = (
        search_index.words([reflowed(rule.description)]),
        search_index.words(search_index.rule_field_names(rule)),
        search_index.words(search_index.rule_values(rule)),
        search_index.words(v.block.text or "" for v in views),
        search_index.words(names),
    )
    return IndexEntry(page.slug, facets, rule.modified or rule.date or "", page.logsource, rule.id, rule.title, text)


def escu_metadata(rule: Rule) -> dict[str, Any] | None:
    """What an ESCU analytic says about risk, stories and type (None for other rules)."""
    if rule.source_format != "escu":
        return None
    extras = rule.extras
    tags: Mapping[str, Any] = extras["tags"] if isinstance(extras.get("tags"), Mapping) else {}
    rba: Mapping[str, Any] = extras["rba"] if isinstance(extras.get("rba"), Mapping) else {}
    risk_objects = [o for o in rba.get("risk_objects") or () if isinstance(o, Mapping)]
    threat_objects = [o for o in rba.get("threat_objects") or () if isinstance(o, Mapping)]
    scores: list[float] = [o["score"] for o in risk_objects if isinstance(o.get("score"), int | float)]
    if not scores and isinstance(tags.get("risk_score"), int | float):
        scores = [tags["risk_score"]]
    stories = tags.get("analytic_story") or ()
    sources = extras.get("data_source") or ()
    return {
        "type": extras.get("type"),
        "risk_score": max(scores) if scores else None,
        "risk_message": rba.get("message") or tags.get("message"),
        "risk_objects": risk_objects,
        "threat_objects": threat_objects,
        "stories": [str(s) for s in ([stories] if isinstance(stories, str) else stories)],
        "security_domain": tags.get("security_domain"),
        "asset_type": tags.get("asset_type"),
        "data_sources": [str(s) for s in ([sources] if isinstance(sources, str) else sources)],
        "version": extras.get("version"),
    }


def _tests(page: RulePage, report_given: bool) -> dict[str, Any]:
    """The rule's `x_sigma_wmi_tests` declarations next to their results, when given."""
    from sigma_wmi.rule_tests import TESTS_KEY, declared_tests  # the evaluator only for this section

    try:
        cases = declared_tests(page.rule)
        error = None
    except SigmaWmiError as err:
        cases, error = [], err.message
    results = list((page.test_results or {}).get("tests") or ())
    rows = []
    for index, case in enumerate(cases):
        expected = ", ".join(f"{k} {v}" for k, v in (("hits", case.hits), ("min_hits", case.min_hits),
                                                     ("max_hits", case.max_hits)) if v is not None)
        if case.record_ids is not None:
            expected += (", " if expected else "") + "records " + ", ".join(case.record_ids)
        result = results[index] if index < len(results) and isinstance(results[index], Mapping) else None
        rows.append({"case": case, "expected": expected, "result": result})
    return {"key": TESTS_KEY, "rows": rows, "error": error, "report_given": report_given,
            "in_report": page.test_results is not None,
            "status": (page.test_results or {}).get("status")}


def _how_to_implement(page: RulePage) -> list[str]:
    own = page.rule.extras.get("how_to_implement")
    if isinstance(own, str) and own.strip():
        return [own.strip()]
    return [f"{d.title}: {d.how_to_collect}" for d in page.data_needed if d.how_to_collect]


def _false_positives(rule: Rule) -> list[str]:
    if rule.falsepositives:
        return list(rule.falsepositives)
    known = rule.extras.get("known_false_positives")
    return [str(known)] if known else []


def _drilldowns(rule: Rule) -> list[Mapping[str, Any]]:
    found = rule.extras.get("drilldown_searches") or ()
    return [d for d in found if isinstance(d, Mapping)] if isinstance(found, list) else []


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------

class SiteBuilder:
    """Collects pages in memory; `build_site` writes them into a folder in one go."""

    def __init__(self, rules: Sequence[Rule], errors: Sequence[SigmaWmiError],
                 targets: tuple[str, ...] | None, workers: int = 1, mapping: tuple[str, ...] = (),
                 test_report: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.errors = list(errors)
        self.targets = targets
        self.workers = workers
        self.mapping = mapping
        self.test_report = test_report
        compiler = _compiler(targets, mapping)  # built here too: its unavailable targets are reported once
        self.unavailable = dict(compiler.unavailable)
        self.warnings: list[Diagnostic] = [
            Diagnostic(Level.WARNING, "target-unavailable", f"target {name} left out: {why}", target=name)
            for name, why in sorted(self.unavailable.items())]
        self.files: dict[str, str] = {}
        self.written: list[str] = []
        ordered = sorted(rules, key=lambda r: (r.id, r.title, r.origin.path, r.origin.line or 0))
        self.pages = self._pages(ordered)
        self.by_id = {p.rule.id: p for p in self.pages if p.rule.id}
        self._relate()

    def _pages(self, rules: list[Rule]) -> list[RulePage]:
        pages: list[RulePage] = []
        used: set[str] = set()
        for rule in rules:
            slug = base = page_slug(rule)
            counter = 2
            while slug in used:  # duplicate ids: a stable suffix in sorted order
                slug, counter = f"{base}-{counter}", counter + 1
            used.add(slug)
            info = attack_info(rule)
            self.warnings.extend(info.diagnostics)
            pages.append(RulePage(rule, slug, info, test_results=_results_for(rule, self.test_report)))
        pages.sort(key=lambda p: (p.rule.title.lower(), p.slug))
        return pages

    def _relate(self) -> None:
        by_technique: dict[str, list[RulePage]] = defaultdict(list)
        by_logsource: dict[str, list[RulePage]] = defaultdict(list)
        referenced_by: dict[str, list[tuple[RulePage, str]]] = defaultdict(list)
        for page in self.pages:  # pages are sorted by title, so every list is too
            for tid in page.technique_ids:
                by_technique[tid].append(page)
            by_logsource[page.logsource].append(page)
            for rel in page.rule.related:
                referenced_by[rel.id].append((page, rel.type))
        self.by_technique, self.by_logsource = by_technique, by_logsource
        for page in self.pages:
            seen = {page.slug}
            technique: list[Link] = []
            for tid in page.technique_ids:
                for other in by_technique[tid]:
                    if other.slug not in seen and len(technique) < RELATED_TECHNIQUE_LIMIT:
                        seen.add(other.slug)
                        technique.append(Link(other.slug, other.rule.title, tid))
            same_source = [o for o in by_logsource[page.logsource] if o.slug not in seen]
            page.more_logsource = max(0, len(same_source) - RELATED_LOGSOURCE_LIMIT)
            sigma: list[Link] = []
            for rel in page.rule.related:
                if rel.id in self.by_id:
                    other = self.by_id[rel.id]
                    sigma.append(Link(other.slug, other.rule.title, rel.type))
                else:
                    page.related_missing.append(rel)
            sigma.extend(Link(other.slug, other.rule.title, f"{kind} (by the other rule)")
                         for other, kind in referenced_by.get(page.rule.id, ()) if other is not page)
            page.related = {
                "sigma": sigma,
                "technique": technique,
                "logsource": [Link(o.slug, o.rule.title, page.logsource)
                              for o in same_source[:RELATED_LOGSOURCE_LIMIT]],
            }

    def _render_rules(self, staging: Path | None) -> list[RenderedRule]:
        settings = RenderSettings(self.targets, self.mapping, tuple(sorted(self.unavailable)),
                                  attack().version, self.test_report is not None, staging)
        if self.workers <= 1 or len(self.pages) < PARALLEL_FROM:
            return _render_chunk(self.pages, settings)
        return list(ordered_map(_render_chunk, self.pages, settings, self.workers))

    # ---- pages ----
    def render(self, staging: Path | None = None) -> dict[str, str]:
        """Every file of the site by relative path. With `staging`, the rule pages are
        written there as they are rendered and only their names are kept (`written`)."""
        rendered = self._render_rules(staging)
        for result in rendered:
            self.files.update(result.files)
            self.written.extend(result.written)
            self.warnings.extend(result.warnings)
        html = html_environment()
        common = {"attack_version": attack().version, "source_names": SOURCE_NAMES, "root": "."}
        tactics = self._tactic_index()
        techniques = self._technique_index()
        entries = [r.entry for r in rendered]
        facets = facet_counts(entries)
        labels = self._labels(entries)
        self._add("index.html", html.get_template("index.html.j2").render(
            common, pages=self.pages, entries=entries, facets=facets, labels=labels,
            facet_names=search_index.FACETS, tactics=tactics, techniques=techniques,
            logsources=sorted(self.by_logsource.items()), errors=self.errors))
        self._add("tactics.html", html.get_template("tactics.html.j2").render(common, tactics=tactics))
        self._add("techniques.html", html.get_template("techniques.html.j2").render(common, techniques=techniques))
        self._add("logsources.html", html.get_template("logsources.html.j2").render(
            common, logsources=sorted(self.by_logsource.items())))
        counts = heatmap.coverage(p.technique_ids for p in self.pages)
        self._add("matrix.html", html.get_template("matrix.html.j2").render(
            common, columns=heatmap.columns(counts), legend=heatmap.legend()))
        if self.errors:
            self._add("errors.html", html.get_template("errors.html.j2").render(
                common, errors=sorted(self.errors, key=str)))
        self._add("attack-navigator-layer.json", json.dumps(self.navigator_layer(), indent=1, sort_keys=True) + "\n")
        self._add("assets/search-index.js", search_index.script(entries, labels))
        for asset in ("style.css", "highlight.css", "site.js", "index.js"):
            self._add(f"assets/{asset}", _template_file("assets", asset))
        self.files.update(vendored_assets())
        self._add(MARKER, "sigma-wmi documentation site; this folder is replaced on every build\n")
        return self.files

    def _add(self, relative: str, text: str) -> None:
        self.files[relative] = text

    def _labels(self, entries: list[IndexEntry]) -> dict[str, dict[str, str]]:
        """Display names of coded facet values (tactic and technique ids, source formats, ...)."""
        table = attack()
        used = {key: {v for e in entries for v in e.facets.get(key, ())} for key in ("tactic", "technique")}
        return {
            "tactic": {t: f"{table.tactics[t].name}" for t in sorted(used["tactic"]) if t in table.tactics},
            "technique": {t: f"{t} {table.techniques[t].name}" for t in sorted(used["technique"])
                          if t in table.techniques},
            "source": dict(SOURCE_NAMES),
        }

    def _tactic_index(self) -> list[tuple[Tactic, list[RulePage]]]:
        pages: dict[str, list[RulePage]] = defaultdict(list)
        for page in self.pages:
            for tactic in page.attack.tactics:
                pages[tactic.id].append(page)
        return [(t, pages[t.id]) for t in attack().matrix_tactics() if pages.get(t.id)]

    def _technique_index(self) -> list[tuple[Technique, list[RulePage]]]:
        table = attack()
        return [(table.techniques[tid], self.by_technique[tid]) for tid in sorted(self.by_technique)
                if tid in table.techniques]

    def navigator_layer(self) -> dict[str, Any]:
        """ATT&CK Navigator layer (format 4.5): one entry per covered technique, scored
        by the number of rules, the rule titles as comment."""
        table = attack()
        entries: list[dict[str, Any]] = []
        for tid in sorted(self.by_technique):
            pages = self.by_technique[tid]
            entries.append({
                "techniqueID": tid,
                "score": len(pages),
                "comment": "; ".join(p.rule.title for p in pages[:20]) + (" ..." if len(pages) > 20 else ""),
                "enabled": True,
                "color": "",
                "metadata": [],
                "links": [],
                "showSubtechniques": False,
            })
        top = max((e["score"] for e in entries), default=1)
        return {
            "name": "sigma-wmi rule coverage",
            "versions": {"attack": table.version.split(".")[0], **NAVIGATOR},
            "domain": "enterprise-attack",
            "description": f"{len(self.pages)} rules, {len(entries)} techniques",
            "filters": {"platforms": ["Windows", "Linux", "macOS", "Network", "PRE", "Containers",
                                      "IaaS", "SaaS", "Office Suite", "Identity Provider", "ESXi"]},
            "sorting": 3,
            "layout": {"layout": "side", "aggregateFunction": "sum", "showID": True, "showName": True,
                       "showAggregateScores": True, "countUnscored": False, "expandedSubtechniques": "annotated"},
            "hideDisabled": False,
            "techniques": entries,
            "gradient": {"colors": ["#e8f1fb", "#1f6fb2"], "minValue": 0, "maxValue": top},
            "legendItems": [],
            "metadata": [],
            "links": [],
            "showTacticRowBackground": False,
            "tacticRowBackground": "#dddddd",
            "selectTechniquesAcrossTactics": True,
            "selectSubtechniquesWithParent": False,
            "selectVisibleTechniques": False,
        }


def facet_counts(entries: Sequence[IndexEntry]) -> dict[str, list[tuple[str, int]]]:
    """Rules per value of every facet, most frequent first (the unfiltered index page;
    site.js recounts the same way for each selection)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for key, _ in search_index.FACETS:
        counts: dict[str, int] = defaultdict(int)
        for entry in entries:
            for value in set(entry.facets.get(key, ())):
                counts[value] += 1
        out[key] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def build_site(rules: list[Rule], out_dir: Path, *, errors: Iterable[SigmaWmiError] = (),
               targets: tuple[str, ...] | None = None, workers: int = 1,
               mapping: tuple[str, ...] = (), test_report: Path | None = None) -> SiteReport:
    """Build the documentation site for `rules` into `out_dir`.

    `errors` are rules that failed to load (listed on an errors page); `targets`
    limits the compiled queries (default: every registered query target), `mapping`
    names environment mapping files they are compiled with; `workers` processes
    compile and render the rule pages (same pages, in the same order, either way);
    `test_report` is a `sigma-wmi test --report` file whose results the rule pages
    show beside their declared tests. An existing `out_dir` is replaced only if it is
    empty or an earlier site.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    results = read_test_report(test_report) if test_report is not None else None
    builder = SiteBuilder(rules, list(errors), targets, workers, mapping, results)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent, recursive=False)  # a killed build's staging folder
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{TEMP_MARK}{os.getpid()}-", suffix=".tmp",
                                    dir=out_dir.parent))
    try:
        files = builder.render(staging)
        write_files(staging, files)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a site is meant to be read
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    warnings = list(builder.warnings)
    warnings.extend(err.diagnostic("docs") for err in builder.errors)
    return SiteReport(out_dir, sorted(p for p in [*files, *builder.written] if p.endswith((".html", ".md"))),
                      len(builder.pages), warnings)


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise SigmaWmiError(f"{out_dir} exists and is not a folder", code="usage")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise SigmaWmiError(f"{out_dir} is not empty and not a sigma-wmi site; "
                            "choose an empty or new folder", code="usage")


def _swap(staging: Path, out_dir: Path) -> None:
    """Put the new site in place: the old one is moved aside first and removed last."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
