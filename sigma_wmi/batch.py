"""Converting many rule files to many targets: each file read once, every target
emitted, files spread over worker processes, results cached by content hash.

Results come back in input order whatever the number of workers, so output is
byte-identical between serial and parallel runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sigma_wmi.backends.base import Backend, convert_safely
from sigma_wmi.errors import Diagnostic, Level, Origin, SigmaWmiError
from sigma_wmi.mapping import fingerprint
from sigma_wmi.output import UniqueNames, safe_name
from sigma_wmi.parallel import ordered_map
from sigma_wmi.readers import ReadOptions, SourceFile, read_source, read_text_rules, rule_files
from sigma_wmi.readers.yamlsource import display_path, regular_file_error
from sigma_wmi.registry import backend_class

CACHE_SCHEMA = 2


@dataclass(frozen=True)
class Job:
    """One target, format and option set to compile every rule for."""

    target: str
    format: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.target}:{self.format}"

    def backend(self) -> Backend:
        return _backend(self)


@cache
def _backend(job: Job) -> Backend:
    # One backend instance per job and process: construction is not free (catalog, options).
    return backend_class(job.target)(**dict(job.options))


def make_jobs(targets: Iterable[str], format: str | None, options: dict[str, Any]) -> list[Job]:
    """Jobs for target names; `format` applies to targets that have it, others use their default.
    Options are passed to the targets that declare them. Raises `SigmaWmiError` on bad names."""
    targets = list(targets)
    jobs: list[Job] = []
    for target in targets:
        cls = backend_class(target)
        chosen = format if format and format in cls.formats else cls.formats[0]
        if format and format not in cls.formats and len(targets) == 1:
            raise SigmaWmiError(f"target '{target}' has no format '{format}'; formats: {', '.join(cls.formats)}",
                                code="usage")
        # An option goes to every target that declares it and accepts the value
        # (--profile ecs is for Elastic targets, not Splunk's auto|sysmon|security).
        mine = tuple(sorted(
            (spec.name, options[spec.name]) for spec in cls.option_specs()
            if options.get(spec.name) is not None
            and (not spec.choices or str(options[spec.name]) in spec.choices)))
        job = Job(target, chosen, mine)
        job.backend()  # validate options now, not in a worker
        jobs.append(job)
    used = {name for job in jobs for name, _ in job.options}
    unused = sorted(k for k, v in options.items() if v is not None and k not in used)
    if unused:
        raise SigmaWmiError(f"no selected target takes option {', '.join(f'{k}={options[k]}' for k in unused)}",
                            code="usage")
    return jobs


@dataclass
class RuleResult:
    """What happened to one rule (or to a file that yielded no rule)."""

    path: str
    id: str = ""
    title: str = ""
    status: str = "ok"  # ok | partial | failed
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # job key -> text
    seconds: float = 0.0
    cached: bool = False
    line: int | None = None  # where the rule starts in its file

    def add(self, diagnostic: Diagnostic) -> None:
        """Record a diagnostic found after conversion (a rename, a write error)."""
        self.diagnostics.append(diagnostic.to_json())
        if diagnostic.level is Level.ERROR:
            self.status = "failed"
        elif diagnostic.level is Level.WARNING and self.status == "ok":
            self.status = "partial"

    @property
    def origin(self) -> Origin:
        return Origin(self.path, self.line or 1)

    def to_report(self) -> dict[str, Any]:
        return {
            "path": self.path, "id": self.id, "title": self.title, "status": self.status,
            "targets": sorted(self.outputs), "diagnostics": self.diagnostics,
            "seconds": round(self.seconds, 6), "cached": self.cached,
        }


def convert_file(path: Path, jobs: list[Job], read_options: ReadOptions) -> list[RuleResult]:
    """Read one file and compile each of its rules for every job. Never raises for bad input."""
    return convert_source(read_source(path, read_options), display_path(path), jobs)


def convert_text(text: str, label: str, jobs: list[Job], read_options: ReadOptions,
                 documents: list[Any] | None = None) -> list[RuleResult]:
    """`convert_file` for text that is no file (standard input), named `label` in diagnostics;
    `documents`: its YAML documents when the caller has loaded them already."""
    try:
        source = SourceFile(Path(label), read_text_rules(text, label, read_options, documents))
    except SigmaWmiError as err:
        source = SourceFile(Path(label), error=err)
    except RecursionError:
        source = SourceFile(Path(label), error=SigmaWmiError("rule is nested too deeply", Origin(label), "too-deep"))
    return convert_source(source, label, jobs)


def convert_source(source: SourceFile, path_label: str, jobs: list[Job]) -> list[RuleResult]:
    """The results of a file already read (or its error), every rule compiled for every job."""
    started = time.perf_counter()
    if source.error is not None:
        return [RuleResult(path_label, status="failed", diagnostics=[source.error.diagnostic().to_json()],
                           seconds=time.perf_counter() - started)]
    results = []
    for rule in source.rules:
        diagnostics: list[Diagnostic] = list(rule.diagnostics)
        outputs: dict[str, str] = {}
        for job in jobs:
            output = convert_safely(job.backend(), rule, job.format)
            if isinstance(output, Diagnostic):
                diagnostics.append(output)
                continue
            outputs[job.key] = output.text
            diagnostics.extend(_located(d, rule.origin, job.target) for d in output.diagnostics)
        results.append(RuleResult(
            path=path_label, id=rule.id, title=rule.title, status=_status(outputs, jobs, diagnostics),
            diagnostics=[d.to_json() for d in diagnostics], outputs=outputs,
            seconds=time.perf_counter() - started, line=rule.origin.line if rule.origin else None))
        started = time.perf_counter()
    return results


def _located(diagnostic: Diagnostic, origin: Any, target: str) -> Diagnostic:
    return Diagnostic(diagnostic.level, diagnostic.code, diagnostic.message, diagnostic.origin or origin,
                      diagnostic.target or target)


def _status(outputs: dict[str, str], jobs: list[Job], diagnostics: list[Diagnostic]) -> str:
    if not outputs and jobs:
        return "failed"
    if len(outputs) < len(jobs) or any(d.level is not Level.INFO for d in diagnostics):
        return "partial"
    return "ok"


class DuplicateIds:
    """Fails every rule whose id an earlier rule in the batch already used: two rules with
    one id would collide in Splunk stanzas, Kibana rule ids and documentation permalinks."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}

    def check(self, result: RuleResult) -> RuleResult:
        if not result.id or result.status == "failed":
            return result
        if result.id not in self.first:
            self.first[result.id] = result.path
            return result
        message = f"duplicate rule id {result.id} (first used in {self.first[result.id]}); not converted"
        diagnostic = Diagnostic(Level.ERROR, "duplicate-id", message, Origin(result.path, 1))
        return RuleResult(result.path, result.id, result.title, "failed",
                          [diagnostic.to_json(), *result.diagnostics], {}, result.seconds, result.cached, result.line)


def unique_identities(results: list[RuleResult], jobs: list[Job]) -> None:
    """Renames, in batch order, every output whose identity in the target (a saved-search
    stanza, a Kibana `rule_id`) an earlier output already has: the target would merge or
    replace them. Compared case-insensitively; each rename is a `renamed-output` warning."""
    for job in jobs:
        backend = job.backend()
        seen: set[str] = set()
        for result in results:
            text = result.outputs.get(job.key)
            if text is None:
                continue
            identity = backend.identity(text, job.format)
            if identity is None:
                break  # the format names nothing
            if identity.casefold() in seen:
                n = 2
                while (renamed := backend.with_identity(text, job.format, identity, n))[1].casefold() in seen:
                    n += 1
                text, new = renamed
                result.outputs[job.key] = text
                result.add(Diagnostic(Level.WARNING, "renamed-output",
                                      f"'{identity}' is already used by another rule of this batch; written as '{new}'",
                                      result.origin, job.target))
                identity = new
            seen.add(identity.casefold())


@dataclass
class PlannedFile:
    """One output file: its text and the rules it holds."""

    text: str
    results: list[RuleResult]


def plan_files(results: list[RuleResult], jobs: list[Job]) -> dict[str, PlannedFile]:
    """The files of an output directory, by relative path: `<target>-<format>/` holds one
    file per rule (named after its id, else its file) or one combined file. Names stay
    unique even on case-insensitive file systems and are never Windows device names; a
    name that had to change is a `renamed-output` warning on its rule."""
    files: dict[str, PlannedFile] = {}
    for job in jobs:
        cls = backend_class(job.target)
        extension = cls.extensions.get(job.format, ".txt")
        folder = f"{job.target}-{job.format}"
        converted = [r for r in results if job.key in r.outputs]
        if job.format in cls.combined_formats:
            if converted:
                text = job.backend().combine([r.outputs[job.key] for r in converted], job.format)
                files[f"{folder}/{job.target}{extension}"] = PlannedFile(text, converted)
            continue
        names = UniqueNames()
        backend = job.backend()
        for result in converted:
            wanted = backend.file_stem(result.outputs[job.key], job.format)
            name, why = names.claim(safe_name(wanted or "", result.id, Path(result.path).stem), extension)
            if why:
                result.add(Diagnostic(Level.WARNING, "renamed-output", f"{why}; written as {folder}/{name}",
                                      result.origin, job.target))
            text = result.outputs[job.key]
            files[f"{folder}/{name}"] = PlannedFile(text if text.endswith("\n") else text + "\n", [result])
    return files


# ---------------------------------------------------------------------------
# The cache: one JSON file per (file content, jobs, tool version) key.
# ---------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """The user's cache folder for sigma-wmi (XDG on Linux, ~/Library/Caches, %LOCALAPPDATA%):
    never the working directory, which is usually the user's detection repository."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sigma-wmi", appauthor=False))


class Cache:
    def __init__(self, directory: Path, jobs: list[Job], read_options: ReadOptions, kind: str = "convert") -> None:
        self.directory = directory
        from sigma_wmi import __version__

        macros = _directory_fingerprint(read_options.macros_dir) if read_options.macros_dir else ""
        # Mapping files change every output that names a field: their content is part of the key.
        mappings = sorted({p for j in jobs for name, paths in j.options if name == "mapping" for p in paths})
        # Filters and placeholder values change rules: their content is part of the key.
        filters = [[f.origin.path, f.origin.line, f.text] for f in read_options.filters]
        placeholders = sorted((k, list(v)) for k, v in read_options.placeholders.items())
        placeholders.append(("", [read_options.unresolved_placeholders]))  # names hold no '%', "" is free
        # `kind` names what a file's results hold (converted text, or check findings)
        salt = json.dumps([CACHE_SCHEMA, kind, __version__, _package_fingerprint(),
                           [(j.target, j.format, [list(o) for o in j.options]) for j in jobs],
                           str(read_options.macros_dir), macros]
                          + ([fingerprint(mappings)] if mappings else [])
                          + ([filters, placeholders] if filters or len(placeholders) > 1
                             or read_options.unresolved_placeholders != "error" else [])
                          # rules named by correlations in other files change both files' results
                          + ([read_options.elsewhere.fingerprint()] if read_options.elsewhere.rules else []),
                          default=str)
        self.salt = hashlib.sha256(salt.encode()).hexdigest()
        self._macro_prints: dict[Path, str] = {}

    def key(self, path: Path) -> str | None:
        if regular_file_error(path) is not None:  # a FIFO or device: never read here, the reader reports it
            return None
        try:
            content = path.read_bytes()
        except OSError:
            return None
        digest = hashlib.sha256(self.salt.encode())
        digest.update(os.fsencode(path))  # reports name the path, so it is part of the result
        digest.update(content)
        digest.update(self._macros(path.resolve().parent).encode())
        return digest.hexdigest()

    def _macros(self, directory: Path) -> str:
        # per run, not per process: a long-lived caller (tests, a server) sees macro edits
        if directory not in self._macro_prints:
            self._macro_prints[directory] = _macros_fingerprint(directory)
        return self._macro_prints[directory]

    def get(self, key: str) -> list[RuleResult] | None:
        try:
            data = json.loads((self.directory / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
            results = [RuleResult(**item) for item in data]
        except (OSError, ValueError, TypeError):  # unreadable or foreign: recompute
            return None
        for result in results:
            result.cached = True
        return results

    def put(self, key: str, results: list[RuleResult]) -> None:
        target = self.directory / key[:2] / f"{key}.json"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps([asdict(r) for r in results]), encoding="utf-8")
            os.replace(tmp, target)
        except OSError:
            pass  # a cache that cannot be written only costs time


@cache
def _package_fingerprint() -> str:
    """Hash of the installed package itself (code, catalog, ATT&CK, templates), so editing any
    of it, in an editable install too, invalidates the cache."""
    roots = [Path(__file__).parent]
    for name in ("sigma_wmi.backends", "sigma_wmi.templates"):  # other folders in an editable install
        roots += [Path(p) for p in importlib.import_module(name).__path__]
    digest = hashlib.sha256()
    for base in roots:
        for item in sorted(base.rglob("*")):
            if item.is_file() and "__pycache__" not in item.parts and item.suffix != ".pyc":
                digest.update(str(item.relative_to(base)).encode())
                digest.update(item.read_bytes())
    return digest.hexdigest()


def _directory_fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(directory.glob("*")):
        if item.suffix in (".yml", ".yaml") and item.is_file():
            digest.update(os.fsencode(item.name))
            digest.update(item.read_bytes())
    return digest.hexdigest()


def _macros_fingerprint(directory: Path) -> str:
    """ESCU analytics depend on `macros/` next to or above them; their content is part of the key."""
    for parent in (directory, *directory.parents):
        macros = parent / "macros"
        if macros.is_dir():
            return _directory_fingerprint(macros)
    return ""


# ---------------------------------------------------------------------------
# Running a batch
# ---------------------------------------------------------------------------

FileWork = Callable[[Path, list[Job], ReadOptions], list[RuleResult]]


def _convert_chunk(paths: list[Path], shared: tuple[list[Job], ReadOptions, FileWork]) -> list[list[RuleResult]]:
    jobs, read_options, work = shared
    return [work(p, jobs, read_options) for p in paths]


def run(paths: list[Path], jobs: list[Job], *, workers: int = 1, cache_dir: Path | None = None,
        read_options: ReadOptions | None = None, work: FileWork = convert_file) -> Iterator[list[RuleResult]]:
    """Results per input file, in input order. `workers` > 1 uses a process pool. `work` is
    what is done to each file (a module-level function: workers import it by name)."""
    read_options = read_options or ReadOptions()
    kind = "convert" if work is convert_file else f"{work.__module__}.{work.__qualname__}"
    cache_ = Cache(cache_dir, jobs, read_options, kind) if cache_dir else None
    keys: list[str | None] = [cache_.key(p) if cache_ else None for p in paths]
    cached: list[list[RuleResult] | None] = [cache_.get(k) if cache_ and k else None for k in keys]
    todo = [p for p, hit in zip(paths, cached, strict=True) if hit is None]

    fresh = ordered_map(_convert_chunk, todo, (jobs, read_options, work), workers)

    for key, hit in zip(keys, cached, strict=True):
        if hit is not None:
            yield hit
            continue
        results = next(fresh)
        if cache_ and key:
            cache_.put(key, results)
        yield results


def unused_filters(results: Iterable[RuleResult], read_options: ReadOptions) -> list[Diagnostic]:
    """A warning for each filter of the run that narrowed no rule."""
    from sigma_wmi.readers.sigma_filters import FILTER_CODE
    from sigma_wmi.readers.sigma_filters import unused_filters as unused

    applied = (d["message"] for r in results for d in r.diagnostics if d.get("code") == FILTER_CODE)
    return unused(read_options.filters, applied)


def _read_chunk(paths: list[Path], read_options: ReadOptions) -> list[SourceFile]:
    return [read_source(p, read_options) for p in paths]


def read_all(paths: list[Path], read_options: ReadOptions, workers: int = 1) -> list[SourceFile]:
    """Every file read into rules (or its error), in input order, over `workers` processes."""
    return list(ordered_map(_read_chunk, paths, read_options, workers))


__all__ = ["Cache", "DuplicateIds", "Job", "PlannedFile", "RuleResult", "convert_file", "convert_source", "convert_text",
           "default_cache_dir", "make_jobs", "plan_files", "read_all", "rule_files", "run", "unique_identities",
           "unused_filters"]
