"""The `sigma-wmi` command line.

Exit codes: 0 every rule converted (possibly with warnings), 1 some rules failed,
2 usage or input error (bad option, missing path, no rule files).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from sigma_wmi import batch
from sigma_wmi.errors import Diagnostic, Level, Origin, SigmaWmiError
from sigma_wmi.output import (
    WriteError,
    describe_os_error,
    first_not_directory,
    is_temporary,
    overlapping,
    remove_stale_temporaries,
    write_atomic,
    write_tree,
)
from sigma_wmi.parallel import default_workers
from sigma_wmi.readers import ReadOptions, rule_files
from sigma_wmi.registry import backend_class, target_names
from sigma_wmi.rule_tests import test_command
from sigma_wmi.terminal import safe, safe_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(click.UsageError):
    exit_code = EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sigma-wmi")
def main() -> None:
    """Compile Sigma rules and Splunk ESCU analytics into SIEM queries and documentation."""


# ---------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------

def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--option takes NAME=VALUE, got '{safe(pair)}'")
        options[name.strip().replace("-", "_")] = value
    return options


MAPPING_OPTION = click.option(
    "--mapping", "mappings", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Environment mapping: your field names, indexes, sourcetypes and log sources (sigma-wmi mapping "
         "or pySigma pipeline YAML); repeatable, later files win.")


def _mapping_paths(mappings: tuple[Path, ...]) -> tuple[str, ...]:
    """The mapping files as absolute paths (workers and the cache see the same names),
    validated now: a bad file is one located error line and exit code 2."""
    from sigma_wmi.mapping import mapped_catalog

    paths = tuple(str(p.resolve()) for p in mappings)
    try:
        mapped_catalog(paths)
    except SigmaWmiError as err:
        click.echo(f"{err.origin}: error: {err.message} ({err.code})" if err.origin else err.message, err=True)
        sys.exit(EXIT_USAGE)
    return paths


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-t", "--target", "targets", multiple=True, default=("splunk",), show_default=True,
              help="Target(s), comma-separated or repeated: see `sigma-wmi list targets`.")
@click.option("-f", "--format", "format_", help="Output format of the target (default: its first).")
@click.option("-p", "--profile", help="Field profile (splunk: auto|sysmon|security; elastic: ecs|winlogbeat).")
@click.option("-O", "--option", "option_pairs", multiple=True, metavar="NAME=VALUE",
              help="Target option, e.g. -O expand_macros=true (see `sigma-wmi list targets`).")
@click.option("-o", "--output", type=click.Path(),
              help="Output file (one target) or directory (one file per rule and target; a trailing / "
              "always means a directory).")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report of every rule.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: all cores for "
              "large batches).")
@click.option("--no-cache", is_flag=True, help="Ignore and do not update the incremental cache.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(".sigma-wmi-cache"),
              show_default=True)
@click.option("--macros", "macros_dir", type=click.Path(path_type=Path, file_okay=False),
              help="ESCU macros directory (default: a macros/ folder next to or above each analytic).")
@click.option("-v", "--verbose", is_flag=True, help="Also print warnings and info diagnostics.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@MAPPING_OPTION
def convert(paths: tuple[Path, ...], targets: tuple[str, ...], format_: str | None, profile: str | None,
            option_pairs: tuple[str, ...], output: str | None, report: Path | None, jobs: int | None,
            no_cache: bool, cache_dir: Path, macros_dir: Path | None, verbose: bool, quiet: bool,
            mappings: tuple[Path, ...]) -> None:
    """Convert rule files or directories (recursively) to one or more targets."""
    names = [t.strip() for group in targets for t in group.split(",") if t.strip()]
    try:
        options = _parse_options(option_pairs)
        if profile:
            options["profile"] = profile
        if mappings:
            options["mapping"] = _mapping_paths(mappings)
        job_list = batch.make_jobs(names, format_, options)
    except SigmaWmiError as err:
        raise UsageError(safe(err.message)) from None
    files = _input_files(paths)
    destination = _destination(output, len(job_list))
    _check_destinations(paths, files, destination, report)
    workers = jobs or default_workers(len(files))
    read_options = ReadOptions(macros_dir)
    results: list[batch.RuleResult] = []
    stream = batch.run(files, job_list, workers=workers, cache_dir=None if no_cache else cache_dir,
                       read_options=read_options)
    duplicates = batch.DuplicateIds()
    for file_results in _with_progress(stream, len(files), quiet):
        for result in file_results:
            result = duplicates.check(result)
            results.append(result)
            _print_diagnostics(result, verbose)

    seen_before = [len(r.diagnostics) for r in results]
    batch.unique_identities(results, job_list)
    write_errors = _write_outputs(results, job_list, destination)
    printed: set[str] = set()
    for result, start in zip(results, seen_before, strict=True):  # renames and write errors
        _print_diagnostics(result, verbose, start, printed)
    if report and not _write_report(report, results, job_list):
        write_errors += 1
    failed = sum(r.status == "failed" for r in results)
    if not quiet:
        partial = sum(r.status == "partial" for r in results)
        ok = len(results) - failed - partial
        click.echo(f"{len(results)} rules: {ok} ok, {partial} partial, {failed} failed "
                   f"({', '.join(j.key for j in job_list)})", err=True)
    sys.exit(EXIT_FAILED if failed or write_errors else EXIT_OK)


@dataclass(frozen=True)
class Destination:
    """Where converted text goes: stdout (path None), one file, or a directory."""

    path: Path | None
    directory: bool


def _destination(output: str | None, targets: int) -> Destination:
    if output is None:
        return Destination(None, False)
    path = Path(output)
    # the raw text, not the Path: Path("out.d/") forgets the slash that says "a folder"
    directory = targets > 1 or path.is_dir() or path.suffix == "" or output.endswith(("/", "\\", os.sep))
    return Destination(path, directory)


def _check_destinations(paths: tuple[Path, ...], files: list[Path], destination: Destination,
                        report: Path | None) -> None:
    """Usage errors before anything is read or written: an output or report that is an input,
    holds one, or lies in an input folder (the next run would read it back as rules), or
    that is a file where a folder is needed (or the other way round)."""
    places = [("--output", destination.path)] if destination.path else []
    places += [("--report", report)] if report else []
    for option, place in places:
        for source in [*paths, *files]:
            if overlapping(place, source):
                raise UsageError(f"{option} {safe(place)} overlaps the input {safe(source)}; "
                                 "write outputs outside the input folders")
        blocker = first_not_directory(place.parent)
        if blocker is not None:
            raise UsageError(f"{option} {safe(place)}: {safe(blocker)} is a file, not a folder")
    if destination.path and destination.directory and destination.path.exists() and not destination.path.is_dir():
        raise UsageError(f"--output {safe(destination.path)} is a file; a folder is needed "
                         "(several targets, or a name ending in /)")
    if report is not None:
        if report.is_dir():
            raise UsageError(f"--report {safe(report)} is a folder")
        # beside the outputs in their folder is fine; being the output, or holding it, is not
        if destination.path and (report.resolve() == destination.path.resolve()
                                 or report.resolve() in destination.path.resolve().parents):
            raise UsageError(f"--report {safe(report)} overlaps --output {safe(destination.path)}")


def _input_files(paths: tuple[Path, ...]) -> list[Path]:
    missing = [safe(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    files = [f for f in rule_files(paths) if not is_temporary(f)]
    if not files:
        raise UsageError("no rule files (*.yml, *.yaml) under " + ", ".join(safe(p) for p in paths))
    return files


def _with_progress(stream: Iterator[list[batch.RuleResult]], total: int, quiet: bool
                   ) -> Iterator[list[batch.RuleResult]]:
    if quiet or total < 20 or not sys.stderr.isatty():
        yield from stream
        return
    from rich.progress import Progress  # only on a terminal: rich costs import time

    with Progress(transient=True) as progress:
        task = progress.add_task("converting", total=total)
        for item in stream:
            progress.advance(task)
            yield item


def _print_diagnostics(result: batch.RuleResult, verbose: bool, start: int = 0,
                       printed: set[str] | None = None) -> None:
    """One `path:line: level: message (code)` line per diagnostic from `start` on, made safe
    for a terminal; a line already in `printed` (one write error shared by many rules) once."""
    for diag in result.diagnostics[start:]:
        if diag["level"] != "error" and not verbose:
            continue
        where = str(diag.get("path") or result.path)
        if diag.get("line"):
            where += f":{diag['line']}"
        target = f"[{diag['target']}] " if diag.get("target") else ""
        line = f"{where}: {diag['level']}: {target}{diag['message']} ({diag['code']})"
        if printed is not None:
            if line in printed:
                continue
            printed.add(line)
        echo_error(line)


def echo_error(line: str) -> None:
    """Print one diagnostic line to stderr with every control character escaped."""
    click.echo(safe(line), err=True)


def _write_outputs(results: list[batch.RuleResult], jobs: list[batch.Job], destination: Destination) -> int:
    """Write the converted text; returns the number of outputs that could not be written,
    each reported as one located line and as an error on the rules it held."""
    if not destination.directory:
        chunks = []
        for job in jobs:
            texts = [r.outputs[job.key] for r in results if job.key in r.outputs]
            if not texts:
                continue
            body = job.backend().combine(texts, job.format)
            chunks.append(f"# --- {job.key} ---\n{body}" if len(jobs) > 1 else body)
        text = "".join(chunks)
        if destination.path is None:
            # on a terminal, a control character in a rule's value must not drive the terminal;
            # piped or redirected output stays exact (color=True: click would strip ANSI codes)
            click.echo(safe_lines(text) if _stdout_is_terminal() else text, nl=False, color=True)
            return 0
        try:
            remove_stale_temporaries(destination.path.parent, recursive=False)
            write_atomic(destination.path, text)
        except OSError as err:
            error = WriteError(str(destination.path), f"cannot write: {describe_os_error(err)}", "os-error")
            _fail_outputs(error, [r for r in results if r.outputs])
            return 1
        return 0
    assert destination.path is not None
    planned = batch.plan_files(results, jobs)
    _, errors = write_tree(destination.path, {name: item.text for name, item in planned.items()})
    by_path = {str(destination.path / name): item for name, item in planned.items()}
    for error in errors:
        _fail_outputs(error, by_path[error.path].results)
    return len(errors)


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _fail_outputs(error: WriteError, results: list[batch.RuleResult]) -> None:
    """The rules held by an output that could not be written failed; the error names the output."""
    for result in results:
        result.add(Diagnostic(Level.ERROR, error.code, error.message, Origin(error.path)))


def _write_report(path: Path, results: list[batch.RuleResult], jobs: list[batch.Job]) -> bool:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "partial", "failed")}
    document = {
        "targets": [j.key for j in jobs],
        "summary": {"rules": len(results), **counts},
        "rules": [r.to_report() for r in results],
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # A file name that was not UTF-8 holds lone surrogates: written as JSON's \udcXX escapes.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        write_atomic(path, text)
    except OSError as err:
        echo_error(f"{path}: error: cannot write the report: {describe_os_error(err)} (os-error)")
        return False
    return True


# ---------------------------------------------------------------------------
# docs and test
# ---------------------------------------------------------------------------

@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), default=Path("site"),
              show_default=True, help="Site folder (replaced whole when the build succeeds).")
@click.option("-t", "--target", "targets", multiple=True,
              help="Targets whose queries the pages show (default: every query target).")
@click.option("--macros", "macros_dir", type=click.Path(path_type=Path, file_okay=False),
              help="ESCU macros directory (default: a macros/ folder next to or above each analytic).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes compiling the queries "
              "(default: all cores for large sites).")
@click.option("-q", "--quiet", is_flag=True, help="No summary line.")
@click.option("--test-report", "test_report", type=click.Path(path_type=Path, dir_okay=False),
              help="A `sigma-wmi test --report` file: rule pages show its results beside their declared tests.")
@MAPPING_OPTION
def docs(paths: tuple[Path, ...], output: Path, targets: tuple[str, ...], macros_dir: Path | None,
         jobs: int | None, quiet: bool, test_report: Path | None, mappings: tuple[Path, ...]) -> None:
    """Build a static documentation site (HTML and Markdown pages, indexes, ATT&CK layer)."""
    from sigma_wmi.docs.site import build_site  # jinja2 and templates only when needed

    files = _input_files(paths)
    _check_destinations(paths, files, Destination(output, True), None)
    workers = jobs or default_workers(len(files))
    rules, errors = [], []
    for source in batch.read_all(files, ReadOptions(macros_dir), workers):
        rules.extend(source.rules)
        if source.error:
            errors.append(source.error)
            echo_error(f"{source.error.origin}: error: {source.error.message} ({source.error.code})")
    names = tuple(t.strip() for group in targets for t in group.split(",") if t.strip()) or None
    try:
        report = build_site(rules, output, errors=errors, targets=names, workers=workers,
                            mapping=_mapping_paths(mappings), test_report=test_report)
    except SigmaWmiError as err:
        raise UsageError(safe(err.message)) from None
    except OSError as err:
        echo_error(f"{err.filename or output}: error: cannot write the site: {describe_os_error(err)} (os-error)")
        sys.exit(EXIT_FAILED)
    if not quiet:
        click.echo(f"{report.rules} rules, {len(report.pages)} pages in {safe(report.out_dir)}"
                   + (f"; {len(errors)} files failed to load" if errors else ""), err=True)
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


main.add_command(test_command)


# ---------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------

@main.group("list")
def list_() -> None:
    """List what is available."""


@list_.command("targets")
def list_targets() -> None:
    """Targets with their formats and options."""
    for name in target_names():
        try:
            cls = backend_class(name)
        except SigmaWmiError as err:
            click.echo(f"{name}: unavailable ({err.message})")
            continue
        click.echo(f"{name}: {cls.description}")
        click.echo(f"    formats: {', '.join(cls.formats)}")
        for spec in cls.option_specs():
            choices = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
            click.echo(f"    -O {spec.name}={spec.default!r}{choices}  {spec.help}")



# The effective tables, after --mapping: what a backend and `sigma-wmi test` will use.

@list_.command("profiles")
@MAPPING_OPTION
def list_profiles(mappings: tuple[Path, ...]) -> None:
    """Field profiles (name namespaces) and how many fields each names."""
    from sigma_wmi.mapping import mapped_catalog

    cat = mapped_catalog(_mapping_paths(mappings))
    for profile in cat.profiles():
        count = sum(1 for name in cat.fields if cat.name_in(profile, name))
        click.echo(f"{profile}\t{count} fields")


@list_.command("fields")
@click.option("-p", "--profile", "profiles", multiple=True,
              help="Only these profiles' columns (default: every profile).")
@MAPPING_OPTION
def list_fields(profiles: tuple[str, ...], mappings: tuple[Path, ...]) -> None:
    """Every canonical field with its Sigma name, scope and name in each profile (tab-separated)."""
    from sigma_wmi.mapping import mapped_catalog

    cat = mapped_catalog(_mapping_paths(mappings))
    unknown = sorted(set(profiles) - set(cat.profiles()))
    if unknown:
        raise UsageError(f"no profile {', '.join(unknown)}; profiles: {', '.join(cat.profiles())}")
    columns = [p for p in cat.profiles() if p != "sigma" and (not profiles or p in profiles)]
    click.echo("\t".join(["field", "sigma", "where", *columns]))
    for name, spec in cat.fields.items():
        scope = cat.scope_of(name)
        where = scope.key() if scope else ",".join(sorted(spec.categories)) if spec.categories else "*"
        cells = [name, cat.name_in("sigma", name) or "-", where, *(cat.name_in(p, name) or "-" for p in columns)]
        click.echo("\t".join(cells))


@list_.command("logsources")
@MAPPING_OPTION
def list_logsources(mappings: tuple[Path, ...]) -> None:
    """Log sources with their channel, event ids and the conditions --mapping sets (tab-separated)."""
    from sigma_wmi.mapping import CONDITION_KEYS, mapped_catalog
    from sigma_wmi.model import LogSource

    cat = mapped_catalog(_mapping_paths(mappings))
    click.echo("\t".join(["kind", "name", "channel", "event_ids", "cim", "ecs", "conditions"]))
    for kind, name in cat.logsource_names():
        logsource = LogSource("windows", **{kind: name})
        info = cat.logsource(logsource)
        ids = info.sysmon_event_ids or info.security_event_ids or info.event_ids
        conditions = [f"{target}:{key}={'|'.join(values)}" for target in CONDITION_KEYS
                      for key, values in cat.source_conditions(target, logsource).items()]
        ecs = "/".join(x for x in (info.ecs_category, info.ecs_type) if x)
        click.echo("\t".join([kind, name, info.channel or "-", ",".join(map(str, ids)) or "-", info.cim or "-",
                              ecs or "-", " ".join(conditions) or "-"]))
