"""`sigma-wmi test`: run rules over recorded events and check what each rule declares.

A rule declares its tests under the top-level key `x_sigma_wmi_tests` (kept by the
Sigma reader in `rule.extras`), in the spirit of ESCU's `tests:`:

    x_sigma_wmi_tests:
      - events: shared:data/events/wmi_persistence_positives_process.jsonl
        hits: 2                    # events the rule alerts on (or min_hits / max_hits); for a
                                   # threshold rule, the events of the groups that meet it
        record_ids: [431364, 120461]  # exactly these EventRecordIDs hit
        mapped: ecs                # optional: evaluate the events after mapping to ECS
        note: free text

`shared:` paths live under the shared data root (SIGMA_WMI_SHARED, else a `shared`
directory next to the project); a test whose shared file is missing is skipped.
Other paths are relative to the project root (the current directory, else an
ancestor of the rule file that holds the path).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from sigma_wmi.api import load_all
from sigma_wmi.catalog import Catalog, catalog
from sigma_wmi.errors import Origin, SigmaWmiError
from sigma_wmi.evaluate import Predicate, alerting, compile_rule, logsource_predicate
from sigma_wmi.events import canonical_event, known_shape, read_events, to_ecs
from sigma_wmi.inputs import input_files, with_batch_documents
from sigma_wmi.mapping import mapped_catalog
from sigma_wmi.model import LogSource, Rule
from sigma_wmi.readers import ReadOptions
from sigma_wmi.readers.yamlsource import locate
from sigma_wmi.terminal import safe

TESTS_KEY = "x_sigma_wmi_tests"
SHARED_PREFIX = "shared:"
_CASE_KEYS = frozenset({"events", "hits", "min_hits", "max_hits", "record_ids", "mapped", "note"})
_MAPPINGS = ("raw", "ecs")


@dataclass(frozen=True)
class TestCase:
    """One declared expectation of a rule."""

    events: str
    hits: int | None = None
    min_hits: int | None = None
    max_hits: int | None = None
    record_ids: tuple[str, ...] | None = None
    mapped: str = "raw"
    note: str = ""


@dataclass
class CaseResult:
    case: TestCase
    status: str  # pass, fail, skip
    path: str | None = None
    count: int = 0
    record_ids: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.case.events, "mapped": self.case.mapped, "status": self.status,
            "path": self.path, "hits": self.count, "record_ids": self.record_ids,
            "expected": {k: v for k, v in (("hits", self.case.hits), ("min_hits", self.case.min_hits),
                                           ("max_hits", self.case.max_hits),
                                           ("record_ids", self.case.record_ids)) if v is not None},
            "message": self.message, "note": self.case.note,
        }


@dataclass
class RuleReport:
    rule: Rule
    cases: list[CaseResult] = field(default_factory=list)
    hits: dict[str, list[str]] = field(default_factory=dict)  # --events file -> record ids hit
    error: SigmaWmiError | None = None  # the evaluator cannot run the rule (a regex RE2 refuses)

    @property
    def failed(self) -> bool:
        return self.error is not None or any(c.status == "fail" for c in self.cases)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.rule.id, "title": self.rule.title, "path": self.rule.origin.path,
            "status": "fail" if self.failed else "pass",
            "hits": {path: {"count": len(ids), "record_ids": ids} for path, ids in self.hits.items()},
            "tests": [c.to_json() for c in self.cases],
            **({"error": self.error.diagnostic().to_json()} if self.error else {}),
        }


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------

def declared_tests(rule: Rule) -> list[TestCase]:
    """The rule's test declaration, validated; bad declarations raise `SigmaWmiError`
    at the line of the `x_sigma_wmi_tests` key."""
    raw = rule.extras.get(TESTS_KEY)
    if raw is None:
        return []
    origin = rule.origin.at(locate(rule.source_text, (TESTS_KEY,)) if rule.source_text else None)
    if not isinstance(raw, list):
        raise SigmaWmiError(f"{TESTS_KEY} must be a list of test cases", origin, "bad-test")
    return [_test_case(item, index, origin) for index, item in enumerate(raw, 1)]


def _test_case(item: Any, index: int, origin: Origin) -> TestCase:
    def bad(message: str) -> SigmaWmiError:
        return SigmaWmiError(f"{TESTS_KEY} item {index}: {message}", origin, "bad-test")

    if not isinstance(item, dict):
        raise bad("must be a mapping with at least 'events'")
    unknown = sorted(set(map(str, item)) - _CASE_KEYS)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(unknown)}")
    events = item.get("events")
    if not isinstance(events, str) or not events.strip():
        raise bad("'events' must name an event file")
    counts: dict[str, int | None] = {}
    for key in ("hits", "min_hits", "max_hits"):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise bad(f"'{key}' must be a non-negative integer")
        counts[key] = value
    ids = item.get("record_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, (int, str)) for i in ids)):
        raise bad("'record_ids' must be a list of EventRecordIDs")
    if all(v is None for v in counts.values()) and ids is None:
        raise bad("declares no expectation (hits, min_hits, max_hits or record_ids)")
    mapped = str(item.get("mapped", "raw"))
    if mapped not in _MAPPINGS:
        raise bad(f"'mapped' must be one of {', '.join(_MAPPINGS)}")
    return TestCase(events=events.strip(), hits=counts["hits"], min_hits=counts["min_hits"],
                    max_hits=counts["max_hits"],
                    record_ids=tuple(str(i) for i in ids) if ids is not None else None,
                    mapped=mapped, note=str(item.get("note") or ""))


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Roots:
    """Where declared event paths are looked up."""

    project: Path | None = None
    shared: Path | None = None

    def resolve(self, spec: str, rule: Rule) -> Path | None:
        if spec.startswith(SHARED_PREFIX):
            base = self.shared or _default_shared(rule)
            return base / spec[len(SHARED_PREFIX):] if base else None
        relative = Path(spec)
        if relative.is_absolute():
            return relative
        candidates = [self.project or Path.cwd(), *Path(rule.origin.path).resolve().parents]
        for base in candidates:
            if (base / relative).exists():
                return base / relative
        return (self.project or Path.cwd()) / relative


def _default_shared(rule: Rule) -> Path | None:
    env = os.environ.get("SIGMA_WMI_SHARED")
    if env:
        return Path(env)
    for base in [Path.cwd(), *Path(rule.origin.path).resolve().parents]:
        for candidate in (base / "shared", base.parent / "shared"):
            if (candidate / "data").is_dir():
                return candidate
    return None


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

class EventCache:
    """Events per file, read once however many rules use them, and mapped once per
    (mapping, log source): an event's names depend on the log source it is read for."""

    def __init__(self, cat: Catalog | None = None) -> None:
        self.catalog = cat or catalog()
        self._raw: dict[Path, list[dict[str, Any]]] = {}
        self._events: dict[tuple[Path, str, LogSource | None], list[dict[str, Any]]] = {}

    def raw(self, path: Path) -> list[dict[str, Any]]:
        key = path.resolve()
        if key not in self._raw:
            events = list(read_events(path))
            names = self.catalog.identity_names()
            if not any(known_shape(event, names) for event in events):
                raise SigmaWmiError(
                    f"no event of a known shape in {path} ({len(events)} objects read): expected "
                    "Windows events (EventID/Channel), evtx_dump JSON ({\"Event\": {\"System\": ...}}) "
                    "or ECS/winlogbeat documents (event.code)", Origin(str(path)), "no-events")
            self._raw[key] = events
        return self._raw[key]

    def get(self, path: Path, mapped: str = "raw", logsource: LogSource | None = None) -> list[dict[str, Any]]:
        """The file's events read for rules of `logsource`: only those the log source covers
        (by channel and event id, which read alike for every log source), each mapped once.
        None: every event, each read for its own log source."""
        key = (path.resolve(), mapped, logsource)
        if key not in self._events:
            raws = self.raw(path)
            if logsource is not None:
                covers = logsource_predicate(logsource, self.catalog)
                own = self.get(path, mapped)
                raws = [raw for raw, event in zip(raws, own, strict=True) if covers(event)]
            self._events[key] = [self._mapped(raw, mapped, logsource) for raw in raws]
        return self._events[key]

    def _mapped(self, raw: dict[str, Any], mapped: str, logsource: LogSource | None) -> dict[str, Any]:
        if mapped != "ecs":
            return canonical_event(raw, logsource, self.catalog)
        event = canonical_event(to_ecs(raw, self.catalog), logsource, self.catalog)
        event.update({k: v for k, v in raw.items() if k.startswith("@")})
        return event


def record_id(event: Mapping[str, Any]) -> str:
    """The event's EventRecordID as text (ints in EVTX, strings in nxlog), else file:line."""
    value = event.get("EventRecordID")
    if value is not None and value != "":
        return str(value)
    return f"{event.get('@file', '?')}:{event.get('@line', '?')}"


def run_case(case: TestCase, predicate: Predicate, rule: Rule, roots: Roots, cache: EventCache) -> CaseResult:
    path = roots.resolve(case.events, rule)
    if path is None or not path.exists():
        if case.events.startswith(SHARED_PREFIX):
            return CaseResult(case, "skip", str(path) if path else None, message="shared data not available")
        return CaseResult(case, "fail", str(path) if path else None, message="event file not found")
    try:  # a temporal correlation's steps have log sources of their own: each event read for its own
        events = cache.get(path, case.mapped, None if rule.steps else rule.logsource)
    except SigmaWmiError as err:
        return CaseResult(case, "fail", str(path), message=err.message)
    ids = [record_id(e) for e in alerting(rule, events, predicate, cache.catalog)]
    result = CaseResult(case, "pass", str(path), len(ids), ids)
    problems = []
    if case.hits is not None and len(ids) != case.hits:
        problems.append(f"expected {case.hits} hits, got {len(ids)}")
    if case.min_hits is not None and len(ids) < case.min_hits:
        problems.append(f"expected at least {case.min_hits} hits, got {len(ids)}")
    if case.max_hits is not None and len(ids) > case.max_hits:
        problems.append(f"expected at most {case.max_hits} hits, got {len(ids)}")
    if case.record_ids is not None and sorted(ids) != sorted(case.record_ids):
        missing = sorted(set(case.record_ids) - set(ids))
        extra = sorted(set(ids) - set(case.record_ids))
        problems.append(f"record ids differ: missing {missing}, unexpected {extra}")
    if problems:
        result.status = "fail"
        result.message = "; ".join(problems)
    return result


def test_rules(rules: Iterable[Rule], event_files: Iterable[Path] = (), roots: Roots | None = None,
               cache: EventCache | None = None) -> list[RuleReport]:
    """Declared tests of every rule, and hits on `event_files`. Raises `SigmaWmiError`
    for a bad declaration or an unreadable event file. Rules and events are mapped
    through the cache's catalog (with `--mapping` files merged in)."""
    roots = roots or Roots()
    cache = cache or EventCache()
    files = list(event_files)
    reports = []
    for rule in rules:
        mapped = cache.catalog.map_rule(rule)
        report = RuleReport(rule)
        reports.append(report)
        try:
            predicate = compile_rule(rule, cat=cache.catalog)
        except SigmaWmiError as err:  # this rule fails; the batch goes on
            report.error = err
            continue
        for case in declared_tests(rule):
            report.cases.append(run_case(case, predicate, mapped, roots, cache))
        for path in files:
            events = cache.get(path, logsource=None if rule.steps else mapped.logsource)
            report.hits[str(path)] = [record_id(e) for e in alerting(rule, events, predicate, cache.catalog)]
    return reports


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def load_rules(paths: tuple[Path, ...], excludes: tuple[str, ...] = (),
               options: ReadOptions | None = None) -> tuple[list[Rule], list[SigmaWmiError]]:
    """Rules under `paths` less the `excludes` globs; `-` is one rule file read from standard
    input (`<stdin>`)."""
    from sigma_wmi.inputs import STDIN_LABEL, is_stdin, read_stdin
    from sigma_wmi.readers import read_text_rules

    loaded, errors = load_all(list(input_files(paths, excludes)), read_options=options)
    if any(is_stdin(p) for p in paths):
        try:
            loaded += read_text_rules(read_stdin(), STDIN_LABEL, options)
        except SigmaWmiError as err:
            errors.append(err)
    return loaded, errors


def _print_report(reports: list[RuleReport], load_errors: list[SigmaWmiError], seconds: float) -> None:
    for error in load_errors:
        click.echo(safe(error), err=True)
    for report in reports:
        mark = "FAIL" if report.failed else "ok  "
        click.echo(safe(f"{mark} {report.rule.title} [{report.rule.origin.path}]"))
        if report.error is not None:
            click.echo(safe(f"       {report.error}"))
        for path, ids in report.hits.items():
            click.echo(safe(f"       {len(ids):5d} hits  {path}"))
        for case in report.cases:
            label = f"{case.case.events}" + (" (ecs)" if case.case.mapped == "ecs" else "")
            detail = f": {case.message}" if case.message else ""
            click.echo(safe(f"   {case.status:4s} {case.count:5d} hits  {label}{detail}"))
    cases = [c for r in reports for c in r.cases]
    summary = {s: sum(1 for c in cases if c.status == s) for s in ("pass", "fail", "skip")}
    click.echo(f"{len(reports)} rules, {summary['pass']} passed, {summary['fail']} failed, "
               f"{summary['skip']} skipped, {len(load_errors)} unreadable rule files, {seconds:.2f}s")


@click.command("test")
@click.argument("rules", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path, allow_dash=True))
@click.option("--events", "event_files", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Event file (.jsonl, .json, .evtx) to report hits on; repeatable.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write a JSON report here.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Project root for relative test paths (default: current directory).")
@click.option("--shared", type=click.Path(file_okay=False, path_type=Path),
              help="Root of 'shared:' test paths (default: $SIGMA_WMI_SHARED or ../shared).")
@click.option("--mapping", "mappings", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Environment mapping (sigma-wmi mapping or pySigma pipeline YAML); repeatable.")
@click.option("--filter", "filter_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Sigma meta filter file or folder applied to the rules it selects; repeatable.")
@click.option("--placeholders", "placeholder_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file: placeholder name -> list of values (%name% in |expand values); repeatable.")
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave out rule files whose path (relative to the input folder), name or folder matches GLOB.")
def test_command(rules: tuple[Path, ...], event_files: tuple[Path, ...], report_path: Path | None,
                 root: Path | None, shared: Path | None, mappings: tuple[Path, ...],
                 filter_paths: tuple[Path, ...] = (), placeholder_files: tuple[Path, ...] = (),
                 excludes: tuple[str, ...] = ()) -> None:
    """Run RULES over recorded events: hits per rule and each rule's declared tests.

    Exit code 0 when every declared test passes, 1 when a test fails, a rule file cannot
    be read or a rule cannot be evaluated (a regex RE2 refuses: that rule fails, located, and
    the others run), 2 for unreadable event files or bad test declarations.
    """
    from sigma_wmi.readers.placeholders import load_placeholders
    from sigma_wmi.readers.sigma_filters import load_filters, unused_by

    started = time.perf_counter()
    try:
        given = ReadOptions(filters=load_filters(filter_paths), placeholders=load_placeholders(placeholder_files))
        options, _ = with_batch_documents(given, input_files(rules, excludes))
    except SigmaWmiError as err:
        click.echo(safe(err), err=True)
        sys.exit(2)
    loaded, load_errors = load_rules(rules, excludes, options)
    for unused in unused_by(options.filters, loaded):
        click.echo(safe(unused), err=True)
    try:
        cat = mapped_catalog(tuple(str(p) for p in mappings))
        reports = test_rules(loaded, event_files, Roots(root, shared), EventCache(cat))
    except SigmaWmiError as err:
        click.echo(safe(err), err=True)
        sys.exit(2)
    seconds = time.perf_counter() - started
    _print_report(reports, load_errors, seconds)
    if report_path:
        doc = {
            "rules": [r.to_json() for r in reports],
            "errors": [e.diagnostic().to_json() for e in load_errors],
            "seconds": round(seconds, 3),
        }
        report_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if load_errors or any(r.failed for r in reports):
        sys.exit(1)
