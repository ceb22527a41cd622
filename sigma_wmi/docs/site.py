"""The documentation site: one HTML and one Markdown page per rule, index pages by
tactic, technique and log source, an ATT&CK coverage matrix, a Navigator layer and
a client-side search that works from `file://`.

Everything is static and relative-linked. Rule pages are named after the rule id
(sanitized), never the title. The site is built in a temporary folder beside the
output folder and swapped in at the end, so a failed build leaves nothing partial.
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
from markupsafe import Markup, escape

from sigma_wmi.attack import Tactic, Technique, attack
from sigma_wmi.docs.data_needed import DataNeeded, data_needed
from sigma_wmi.docs.markdown import is_link, markdown_environment
from sigma_wmi.docs.queries import AttackInfo, QueryBlock, QueryCompiler, attack_info
from sigma_wmi.errors import Diagnostic, Level, SigmaWmiError
from sigma_wmi.model import RelatedRule, Rule, describe_aggregation
from sigma_wmi.output import TEMP_MARK, inside, is_device_name, remove_stale_temporaries
from sigma_wmi.parallel import ordered_map

MARKER = ".sigma-wmi-site"  # only a folder holding this file is replaced by a new build
# ATT&CK Enterprise matrix column order (the kill chain, left to right).
TACTIC_ORDER = ("TA0043", "TA0042", "TA0001", "TA0002", "TA0003", "TA0004", "TA0005", "TA0006",
                "TA0007", "TA0008", "TA0009", "TA0011", "TA0010", "TA0040")
RELATED_TECHNIQUE_LIMIT = 25
RELATED_LOGSOURCE_LIMIT = 10
SEARCH_FIELDS = ("slug", "title", "id", "techniques", "tactics", "logsource", "level", "file")
NAVIGATOR = {"navigator": "5.1.0", "layer": "4.5"}
SOURCE_NAMES = {"sigma": "Sigma rule", "escu": "ESCU analytic"}


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
    data_needed: list[DataNeeded]
    blocks: list[QueryBlock]
    related: dict[str, list[tuple[RulePage, str]]] = field(default_factory=dict)
    more_logsource: int = 0
    related_missing: list[RelatedRule] = field(default_factory=list)

    @property
    def logsource(self) -> str:
        return self.rule.logsource.key()

    @property
    def technique_ids(self) -> list[str]:
        return [t.id for t in self.attack.techniques]


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
# Text that HTML (and XML) cannot carry
# ---------------------------------------------------------------------------

# C0/C1 controls other than tab and newline, lone surrogates and non-characters are
# parse errors in HTML and forbidden in XML, even as character references.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_CODE_SPECIAL = re.compile("[\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _picture(char: str) -> str:
    """A visible stand-in: the Unicode control picture (U+2400 block) where one exists."""
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"


def visible_text(value: str) -> str:
    """Prose for a page: line ends normalized, unrepresentable characters shown as pictures."""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: _picture(m.group()), text)


def code_markup(text: str) -> Markup:
    """A query or rule for a <code> element, exact to the character: a carriage return
    is written as a reference (parsers would turn a raw one into a newline), any other
    unrepresentable character as a marked picture that the copy button turns back
    into the character (site.js)."""
    def special(match: re.Match[str]) -> str:
        char = match.group()
        if char == "\r":
            return "&#13;"
        return f'<span class="ctl" data-char="{ord(char)}">{_picture(char)}</span>'

    pieces = _CODE_SPECIAL.split(text)
    specials = [special(m) for m in _CODE_SPECIAL.finditer(text)]
    out = [str(escape(pieces[0]))]
    for marker, piece in zip(specials, pieces[1:], strict=True):
        out.append(marker)
        out.append(str(escape(piece)))
    return Markup("".join(out))


def _finalize(value: Any) -> Any:
    """Every `{{ }}` of an HTML template: strings are made representable before
    autoescape escapes them; Markup (already safe, e.g. `code_markup`) passes through."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_text(value)
    return value


# ---------------------------------------------------------------------------
# Templates
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
    return env


def _asset(name: str) -> str:
    return (resources.files("sigma_wmi.templates") / "docs" / "assets" / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------

class SiteBuilder:
    """Collects pages in memory; `write` puts them into a folder in one go."""

    def __init__(self, rules: Sequence[Rule], errors: Sequence[SigmaWmiError],
                 targets: tuple[str, ...] | None, workers: int = 1, mapping: tuple[str, ...] = ()) -> None:
        self.errors = list(errors)
        self.targets = targets
        self.workers = workers
        self.mapping = mapping
        self.compiler = QueryCompiler(targets, mapping)
        self.warnings: list[Diagnostic] = [
            Diagnostic(Level.WARNING, "target-unavailable", f"target {name} left out: {why}", target=name)
            for name, why in sorted(self.compiler.unavailable.items())]
        self.files: dict[str, str] = {}
        ordered = sorted(rules, key=lambda r: (r.id, r.title, r.origin.path, r.origin.line or 0))
        self.pages = self._pages(ordered)
        self.by_id = {p.rule.id: p for p in self.pages if p.rule.id}
        self._relate()

    def _pages(self, rules: list[Rule]) -> list[RulePage]:
        pages: list[RulePage] = []
        used: set[str] = set()
        compiled = self._compile_all(rules)
        for rule, blocks in zip(rules, compiled, strict=True):
            slug = base = page_slug(rule)
            counter = 2
            while slug in used:  # duplicate ids: a stable suffix in sorted order
                slug, counter = f"{base}-{counter}", counter + 1
            used.add(slug)
            info = attack_info(rule)
            needed, dn_diagnostics = data_needed(rule)
            self.warnings.extend(info.diagnostics)
            self.warnings.extend(d for block in blocks for d in block.diagnostics if d.level is Level.WARNING)
            del dn_diagnostics  # informational only: the page lists what it could find
            pages.append(RulePage(rule, slug, info, needed, blocks))
        pages.sort(key=lambda p: (p.rule.title.lower(), p.slug))
        return pages

    def _compile_all(self, rules: list[Rule]) -> list[list[QueryBlock]]:
        """Every rule's query blocks, spread over worker processes for a large site."""
        if self.workers <= 1 or len(rules) < 100:  # in-process, with the compiler built once
            return [self.compiler.compile(rule) for rule in rules]
        return list(ordered_map(_compile_chunk, rules, (self.targets, self.mapping), self.workers))

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
            technique: list[tuple[RulePage, str]] = []
            for tid in page.technique_ids:
                for other in by_technique[tid]:
                    if other.slug not in seen and len(technique) < RELATED_TECHNIQUE_LIMIT:
                        seen.add(other.slug)
                        technique.append((other, tid))
            same_source = [o for o in by_logsource[page.logsource] if o.slug not in seen]
            page.more_logsource = max(0, len(same_source) - RELATED_LOGSOURCE_LIMIT)
            sigma: list[tuple[RulePage, str]] = []
            for rel in page.rule.related:
                if rel.id in self.by_id:
                    sigma.append((self.by_id[rel.id], rel.type))
                else:
                    page.related_missing.append(rel)
            sigma.extend((other, f"{kind} (by the other rule)") for other, kind in referenced_by.get(page.rule.id, ())
                         if other is not page)
            page.related = {
                "sigma": sigma,
                "technique": technique,
                "logsource": [(o, page.logsource) for o in same_source[:RELATED_LOGSOURCE_LIMIT]],
            }

    # ---- pages ----
    def render(self) -> dict[str, str]:
        html = html_environment()
        markdown = markdown_environment()
        common = {"attack_version": attack().version, "source_names": SOURCE_NAMES}
        rule_html = html.get_template("rule.html.j2")
        rule_md = markdown.get_template("docs/rule.md.j2")
        for page in self.pages:
            context = {**common, "page": page, "rule": page.rule, "root": "..",
                       "how_to_implement": _how_to_implement(page),
                       "false_positives": _false_positives(page.rule),
                       "drilldowns": _drilldowns(page.rule),
                       "threshold": describe_aggregation(page.rule.aggregation) if page.rule.aggregation else None,
                       "unavailable": self.compiler.unavailable}
            self._add(f"rules/{page.slug}.html", rule_html.render(context))
            self._add(f"rules/{page.slug}.md", rule_md.render(context))
        root = {**common, "root": "."}
        tactics = self._tactic_index()
        techniques = self._technique_index()
        self._add("index.html", html.get_template("index.html.j2").render(
            root, pages=self.pages, tactics=tactics, techniques=techniques,
            logsources=sorted(self.by_logsource.items()), errors=self.errors))
        self._add("tactics.html", html.get_template("tactics.html.j2").render(root, tactics=tactics))
        self._add("techniques.html", html.get_template("techniques.html.j2").render(root, techniques=techniques))
        self._add("logsources.html", html.get_template("logsources.html.j2").render(
            root, logsources=sorted(self.by_logsource.items())))
        self._add("matrix.html", html.get_template("matrix.html.j2").render(root, columns=self._matrix()))
        if self.errors:
            self._add("errors.html", html.get_template("errors.html.j2").render(
                root, errors=sorted(self.errors, key=str)))
        self._add("attack-navigator-layer.json", json.dumps(self.navigator_layer(), indent=1, sort_keys=True) + "\n")
        self._add("assets/search-index.js", self.search_script())
        for asset in ("style.css", "site.js"):
            self._add(f"assets/{asset}", _asset(asset))
        self._add(MARKER, "sigma-wmi documentation site; this folder is replaced on every build\n")
        return self.files

    def _add(self, relative: str, text: str) -> None:
        self.files[relative] = text

    def _tactic_index(self) -> list[tuple[Tactic, list[RulePage]]]:
        pages: dict[str, list[RulePage]] = defaultdict(list)
        for page in self.pages:
            for tactic in page.attack.tactics:
                pages[tactic.id].append(page)
        table = attack()
        order = [t for t in TACTIC_ORDER if t in table.tactics]
        order += sorted(set(table.tactics) - set(order))
        return [(table.tactics[t], pages[t]) for t in order if pages.get(t)]

    def _technique_index(self) -> list[tuple[Technique, list[RulePage]]]:
        table = attack()
        return [(table.techniques[tid], self.by_technique[tid]) for tid in sorted(self.by_technique)
                if tid in table.techniques]

    def _matrix(self) -> list[tuple[Tactic, list[tuple[Technique, int]]]]:
        """Per tactic, every parent technique with the number of rules covering it or
        one of its sub-techniques."""
        table = attack()
        counts: dict[str, int] = defaultdict(int)
        for tid, pages in self.by_technique.items():
            counts[tid.split(".")[0]] += len(pages)
        columns = []
        for tactic_id in TACTIC_ORDER:
            if tactic_id not in table.tactics:
                continue
            cells = sorted(((t, counts.get(t.id, 0)) for t in table.techniques.values()
                            if "." not in t.id and tactic_id in t.tactics), key=lambda c: c[0].name.lower())
            columns.append((table.tactics[tactic_id], cells))
        return columns

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

    def search_script(self) -> str:
        """The search index as a script (a `fetch` of JSON fails from file://). Besides
        titles, ids and techniques it holds the rule's file name, which names the
        artefacts (scrcons, wmic) that titles often leave out."""
        rows = [[p.slug, p.rule.title, p.rule.id, " ".join(p.technique_ids),
                 " ".join(t.name for t in p.attack.tactics), p.logsource, p.rule.level or "",
                 Path(p.rule.origin.path).stem]
                for p in self.pages]
        data = json.dumps({"fields": SEARCH_FIELDS, "rows": rows}, ensure_ascii=True, separators=(",", ":"))
        # ensure_ascii leaves '<' alone; written as \u003c the index can never close a script element.
        return "window.SIGMA_WMI_INDEX = " + data.replace("<", "\\u003c") + ";\n"


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


def _compile_chunk(rules: list[Rule], shared: tuple[tuple[str, ...] | None, tuple[str, ...]]
                   ) -> list[list[QueryBlock]]:
    compiler = QueryCompiler(*shared)
    return [compiler.compile(rule) for rule in rules]


def build_site(rules: list[Rule], out_dir: Path, *, errors: Iterable[SigmaWmiError] = (),
               targets: tuple[str, ...] | None = None, workers: int = 1,
               mapping: tuple[str, ...] = ()) -> SiteReport:
    """Build the documentation site for `rules` into `out_dir`.

    `errors` are rules that failed to load (listed on an errors page); `targets`
    limits the compiled queries (default: every registered query target), `mapping`
    names environment mapping files they are compiled with; `workers`
    processes compile the queries (same pages, in the same order, either way). An
    existing `out_dir` is replaced only if it is empty or an earlier site.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    builder = SiteBuilder(rules, list(errors), targets, workers, mapping)
    files = builder.render()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent, recursive=False)  # a killed build's staging folder
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{TEMP_MARK}{os.getpid()}-", suffix=".tmp",
                                    dir=out_dir.parent))
    try:
        for relative in sorted(files):
            path = inside(staging, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            # errors="replace": a lone surrogate from a rule must not abort the build
            path.write_text(files[relative], encoding="utf-8", errors="replace", newline="\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a site is meant to be read
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    warnings = list(builder.warnings)
    warnings.extend(err.diagnostic("docs") for err in builder.errors)
    return SiteReport(out_dir, sorted(p for p in files if p.endswith((".html", ".md"))),
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
