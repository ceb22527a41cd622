"""The `sigma-wmi` command line.

Exit codes: 0 every rule converted (possibly with warnings), 1 some rules failed,
2 usage or input error (bad option, missing path, no rule files).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from sigma_wmi import batch
from sigma_wmi.check import FAIL_ON
from sigma_wmi.check_report import FORMATS as REPORT_FORMATS
from sigma_wmi.cli_options import (
    TargetList,
    check_format,
    check_profile,
    complete_formats,
    complete_options,
    complete_profiles,
    flatten,
    parse_options,
)
from sigma_wmi.config import default_map, find_config, load_config
from sigma_wmi.errors import Diagnostic, Level, Origin, SigmaWmiError
from sigma_wmi.inputs import STDIN_LABEL, input_files, is_stdin, read_stdin, stdin_count, with_batch_documents
from sigma_wmi.output import (
    WriteError,
    describe_os_error,
    first_not_directory,
    first_overlapping,
    remove_stale_temporaries,
    write_atomic,
    write_tree,
)
from sigma_wmi.parallel import default_workers
from sigma_wmi.readers import ReadOptions
from sigma_wmi.registry import backend_class, target_names
from sigma_wmi.rule_tests import test_command
from sigma_wmi.terminal import safe, safe_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


class UsageError(click.UsageError):
    exit_code = EXIT_USAGE


_MAIN_EPILOG = """\b
Examples:
  sigma-wmi convert -t splunk,eql rules/ -o build/
  sigma-wmi convert -t splunk -f savedsearches -o savedsearches.conf rules/
  cat rule.yml | sigma-wmi convert -t kql -
  sigma-wmi check rules/ --format sarif -o check.sarif --fail-on warning
  sigma-wmi test rules/ --events events.jsonl

\b
Defaults come from sigma-wmi.toml or [tool.sigma-wmi] in pyproject.toml (this folder or
the nearest ancestor up to the repository root); the command line overrides them.
Shell completion (bash; zsh and fish alike):
  eval "$(_SIGMA_WMI_COMPLETE=bash_source sigma-wmi)"
"""


def _group_config(ctx: click.Context, config: Path | None, no_config: bool) -> None:
    """Defaults for every command from the configuration file (explicit or found)."""
    if no_config or ctx.resilient_parsing:
        return
    path = config or find_config(Path.cwd())
    if path is not None:
        ctx.default_map = _defaults(path, ctx.command)


def _defaults(path: Path, command: click.Command) -> dict[str, Any]:
    assert isinstance(command, click.Group)
    try:
        return default_map(load_config(path), command)
    except SigmaWmiError as err:
        raise UsageError(safe(f"{err.origin}: {err.message}" if err.origin else err.message)) from None


def _command_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """`convert --config FILE`: that file's defaults for this command (read before any other option)."""
    if value is not None and not ctx.resilient_parsing:
        ctx.default_map = _defaults(value, ctx.find_root().command).get(ctx.info_name or "", {})
    return value


CONFIG_OPTION = click.option(
    "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True, expose_value=False,
    callback=_command_config, help="Configuration file (default: sigma-wmi.toml or pyproject.toml found from here).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_MAIN_EPILOG)
@click.version_option(package_name="sigma-wmi")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Configuration file (default: sigma-wmi.toml, or [tool.sigma-wmi] in pyproject.toml, here "
                   "or in the nearest ancestor up to the repository root).")
@click.option("--no-config", is_flag=True, help="Ignore configuration files.")
@click.pass_context
def main(ctx: click.Context, config: Path | None, no_config: bool) -> None:
    """Compile Sigma rules and Splunk ESCU analytics into SIEM queries and documentation."""
    _group_config(ctx, config, no_config)


# ---------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------

MAPPING_OPTION = click.option(
    "--mapping", "mappings", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Environment mapping: your field names, indexes, sourcetypes and log sources (sigma-wmi mapping "
         "or pySigma pipeline YAML); repeatable, later files win.")
EXCLUDE_OPTION = click.option(
    "--exclude", "excludes", multiple=True, metavar="GLOB",
    help="Leave out files whose path (relative to the input folder), name or folder matches GLOB; repeatable.")
PATHS_ARGUMENT = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True))


def _batch_options(function: F) -> F:
    """-j, --no-cache, --cache-dir and --macros: how a batch of rule files is read (convert, check)."""
    for option in reversed([
        click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: all cores for "
                     "large batches)."),
        click.option("--no-cache", is_flag=True, help="Ignore and do not update the incremental cache."),
        click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False),
                     help="Cache folder (default: the user's cache folder, e.g. ~/.cache/sigma-wmi)."),
        click.option("--macros", "macros_dir", type=click.Path(path_type=Path, file_okay=False),
                     help="ESCU macros directory (default: a macros/ folder next to or above each analytic)."),
    ]):
        function = option(function)
    return function


def _target_options(default: tuple[str, ...] | None, target_help: str,
                    format_flags: tuple[str, ...] = ("-f", "--format")) -> Callable[[F], F]:
    """-t, -f, -p and -O: validated against what the chosen targets declare."""
    def decorate(function: F) -> F:
        for option in reversed([
            click.option("-t", "--target", "targets", multiple=True, type=TargetList(), default=default,
                         show_default=bool(default), help=target_help),
            click.option(*format_flags, "format_", shell_complete=complete_formats,
                         help="Output format of the target (default: its first; see `sigma-wmi list targets`)."),
            click.option("-p", "--profile", shell_complete=complete_profiles,
                         help="Field profile (splunk: auto|sysmon|security; elastic: ecs|elastic_agent|winlogbeat)."),
            click.option("-O", "--option", "option_pairs", multiple=True, metavar="NAME=VALUE",
                         shell_complete=complete_options,
                         help="Target option, e.g. -O expand_macros=true (see `sigma-wmi list targets`)."),
        ]):
            function = option(function)
        return function
    return decorate


FILTER_OPTION = click.option(
    "--filter", "filter_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
    help="Sigma meta filter file or folder, applied to the rules it selects (by id, name or log source) "
         "in every target; repeatable. Filter documents among the inputs are applied too.")
PLACEHOLDERS_OPTION = click.option(
    "--placeholders", "placeholder_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file: placeholder name -> list of values, for %name% in |expand values; repeatable, later "
         "files win.")
UNRESOLVED_OPTION = click.option(
    "--unresolved-placeholders", "unresolved_placeholders", type=click.Choice(["error", "native"]),
    default="error", show_default=True,
    help="A placeholder without values: a rule error, or the target's own form (Splunk: a lookup named like "
         "the placeholder; targets without one fail the rule saying so).")


def _rule_options(function: F) -> F:
    """--mapping, --filter, --placeholders and --unresolved-placeholders: what changes the rules
    as they are read (convert, check, docs)."""
    for option in reversed([MAPPING_OPTION, FILTER_OPTION, PLACEHOLDERS_OPTION, UNRESOLVED_OPTION]):
        function = option(function)
    return function


def _read_options(macros_dir: Path | None, filter_paths: tuple[Path, ...], placeholder_files: tuple[Path, ...],
                  files: list[Path], unresolved_placeholders: str = "error") -> ReadOptions:
    """Reader options with the --filter and --placeholders files loaded now: a bad file is one
    located error line and exit code 2. Filters found among the input files are applied too
    (as sigma-cli does), each announced by an info line."""
    from sigma_wmi.readers.placeholders import load_placeholders
    from sigma_wmi.readers.sigma_filters import load_filters

    try:
        filters = load_filters(filter_paths)
        placeholders = load_placeholders(placeholder_files)
    except SigmaWmiError as err:
        echo_error(f"{err.origin}: error: {err.message} ({err.code})" if err.origin else err.message)
        sys.exit(EXIT_USAGE)
    options, found = with_batch_documents(ReadOptions(macros_dir, filters, placeholders, unresolved_placeholders),
                                          files)
    for meta in found:
        echo_error(f"{meta.origin}: info: filter {meta.label} is among the inputs: applied to the rules it "
                   "selects (filter-in-inputs)")
    return options


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


def _jobs(names: list[str], format_: str | None, profile: str | None, option_pairs: tuple[str, ...],
          mappings: tuple[Path, ...]) -> list[batch.Job]:
    """The jobs for validated target options; a bad value is a usage error listing the valid ones."""
    check_format(format_, names)
    check_profile(profile, names)
    options = parse_options(option_pairs, names)
    if profile:
        options["profile"] = profile
    if mappings:
        options["mapping"] = _mapping_paths(mappings)
    try:
        return batch.make_jobs(names, format_, options)
    except SigmaWmiError as err:
        raise UsageError(safe(err.message)) from None


_CONVERT_EPILOG = """\b
Examples:
  sigma-wmi convert rules/                          Splunk searches on standard output
  sigma-wmi convert -t splunk,eql,kql rules/ -o out/  one file per rule and target
  sigma-wmi convert -t eql -f ndjson -o rules.ndjson rules/
  sigma-wmi convert -t splunk -p sysmon -O index=wineventlog rules/
  sigma-wmi convert --fail-on partial --exclude 'deprecated/*' rules/
  sigma-wmi convert -t kql - < rule.yml
"""


@main.command(epilog=_CONVERT_EPILOG)
@PATHS_ARGUMENT
@_target_options(("splunk",), "Target(s), comma-separated or repeated: see `sigma-wmi list targets`.")
@click.option("-o", "--output", type=click.Path(),
              help="Output file (one target) or directory (one file per rule and target; a trailing / "
              "always means a directory).")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report of every rule.")
@click.option("--fail-on", type=click.Choice(("error", "partial")), default="error", show_default=True,
              help="Exit 1 on a failed rule (error), or also on a partial conversion (partial).")
@EXCLUDE_OPTION
@_batch_options
@click.option("-v", "--verbose", is_flag=True, help="Also print warnings and info diagnostics.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@_rule_options
@CONFIG_OPTION
def convert(paths: tuple[Path, ...], targets: tuple[tuple[str, ...], ...], format_: str | None,
            profile: str | None, option_pairs: tuple[str, ...], output: str | None, report: Path | None,
            fail_on: str, excludes: tuple[str, ...], jobs: int | None, no_cache: bool, cache_dir: Path | None,
            macros_dir: Path | None, verbose: bool, quiet: bool, mappings: tuple[Path, ...],
            filter_paths: tuple[Path, ...] = (), placeholder_files: tuple[Path, ...] = (),
            unresolved_placeholders: str = "error") -> None:
    """Convert rule files or directories (recursively) to one or more targets; - reads one rule
    file from standard input."""
    job_list = _jobs(flatten(targets), format_, profile, option_pairs, mappings)
    files, stdin = _inputs(paths, excludes)
    destination = _destination(output, job_list)
    _check_destinations(paths, files, destination, report)
    workers = jobs or default_workers(len(files))
    read_options = _read_options(macros_dir, filter_paths, placeholder_files, files, unresolved_placeholders)
    results: list[batch.RuleResult] = []
    stream = batch.run(files, job_list, workers=workers, cache_dir=_cache_dir(no_cache, cache_dir),
                       read_options=read_options)
    if stdin:
        stream = itertools.chain(stream, [_stdin_results(batch.convert_text, job_list, read_options)])
    duplicates = batch.DuplicateIds()
    for file_results in _with_progress(stream, len(files), quiet):
        for result in file_results:
            result = duplicates.check(result)
            results.append(result)
            _print_diagnostics(result, verbose)
    for unused in batch.unused_filters(results, read_options):
        echo_error(str(unused))

    seen_before = [len(r.diagnostics) for r in results]
    batch.unique_identities(results, job_list)
    write_errors = _write_outputs(results, job_list, destination)
    printed: set[str] = set()
    for result, start in zip(results, seen_before, strict=True):  # renames and write errors
        _print_diagnostics(result, verbose, start, printed)
    if report and not _write_report(report, results, job_list):
        write_errors += 1
    failed = sum(r.status == "failed" for r in results)
    partial = sum(r.status == "partial" for r in results)
    if not quiet:
        ok = len(results) - failed - partial
        click.echo(f"{len(results)} rules: {ok} ok, {partial} partial, {failed} failed "
                   f"({', '.join(j.key for j in job_list)})", err=True)
    failing = failed or write_errors or (fail_on == "partial" and partial)
    sys.exit(EXIT_FAILED if failing else EXIT_OK)


def _cache_dir(no_cache: bool, cache_dir: Path | None) -> Path | None:
    return None if no_cache else cache_dir or batch.default_cache_dir()


def _inputs(paths: tuple[Path, ...], excludes: tuple[str, ...]) -> tuple[list[Path], bool]:
    """The rule files to read and whether standard input holds one more; usage errors for a
    missing path, `-` twice, or nothing to read."""
    if stdin_count(paths) > 1:
        raise UsageError("- (standard input) can be given once: it holds one rule file")
    try:
        files = input_files(paths, excludes)
    except SigmaWmiError as err:
        raise UsageError(safe(err.message)) from None
    stdin = stdin_count(paths) == 1
    if not files and not stdin:
        raise UsageError("no rule files (*.yml, *.yaml) under " + ", ".join(safe(p) for p in paths)
                         + (" (after --exclude)" if excludes else ""))
    return files, stdin


def _stdin_results(work: Callable[[str, str, list[batch.Job], ReadOptions], list[batch.RuleResult]],
                   jobs: list[batch.Job], read_options: ReadOptions) -> list[batch.RuleResult]:
    """The rule file on standard input, `work`ed like any file; unreadable input fails it."""
    try:
        text = read_stdin()
    except SigmaWmiError as err:
        return [batch.RuleResult(STDIN_LABEL, status="failed", diagnostics=[err.diagnostic().to_json()])]
    return work(text, STDIN_LABEL, jobs, read_options)


@dataclass(frozen=True)
class Destination:
    """Where converted text goes: stdout (path None), one file, or a directory."""

    path: Path | None
    directory: bool


def _destination(output: str | None, jobs: list[batch.Job]) -> Destination:
    """Where `-o` writes: a folder when it names one (exists as one, ends in /, has no
    extension), a file otherwise. A file for several targets, or a file whose extension is
    another format's of the target, is a usage error: nothing is guessed or created."""
    if output is None:
        return Destination(None, False)
    path = Path(output)
    # the raw text, not the Path: Path("out.d/") forgets the slash that says "a folder"
    folder = path.is_dir() or output.endswith(("/", "\\", os.sep))
    if len(jobs) > 1 and not folder and (path.suffix or path.exists()):
        raise UsageError(f"--output {safe(output)} is a file; a folder is needed: {len(jobs)} targets write one "
                         f"output each ({', '.join(j.key for j in jobs)}), e.g. -o {safe(path.stem or 'out')}/")
    directory = len(jobs) > 1 or folder or path.suffix == ""
    if not directory and jobs:
        _check_extension(output, path.suffix.lower(), jobs[0])
    return Destination(path, directory)


def _check_extension(output: str, suffix: str, job: batch.Job) -> None:
    cls = backend_class(job.target)
    own = cls.extensions.get(job.format)
    others = [fmt for fmt, extension in cls.extensions.items() if extension == suffix and extension != own]
    if others:
        raise UsageError(f"--output {safe(output)}: {suffix} is the extension of {job.target}'s {others[0]} format, "
                         f"but the format is {job.format}; use -f {others[0]}"
                         + (f" or a {own} name" if own else ""))


def _check_destinations(paths: tuple[Path, ...], files: list[Path], destination: Destination,
                        report: Path | None) -> None:
    """Usage errors before anything is read or written: an output or report that is an input,
    holds one, or lies in an input folder (the next run would read it back as rules), or
    that is a file where a folder is needed (or the other way round)."""
    places = [("--output", destination.path)] if destination.path else []
    places += [("--report", report)] if report else []
    for option, place in places:
        source = first_overlapping(place, [*(p for p in paths if not is_stdin(p)), *files])
        if source is not None:
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


def _with_progress(stream: Iterator[list[batch.RuleResult]], total: int, quiet: bool, label: str = "converting"
                   ) -> Iterator[list[batch.RuleResult]]:
    if quiet or total < 20 or not sys.stderr.isatty():
        yield from stream
        return
    from rich.progress import Progress  # only on a terminal: rich costs import time

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total)
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
# check
# ---------------------------------------------------------------------------

_CHECK_EPILOG = """\b
Examples:
  sigma-wmi check rules/                               every finding, one line each
  sigma-wmi check rules/ --format sarif -o check.sarif  for code-scanning annotations
  sigma-wmi check rules/ --format junit -o check.xml --fail-on warning
  sigma-wmi check -t splunk -p sysmon --mapping env.yml rules/
  git show HEAD:rules/x.yml | sigma-wmi check -

\b
--fail-on error: exit 1 on any error finding (default); partial: also on a conversion
warning (an output that does not mean exactly what the rule says); warning: on any warning.
"""


@main.command(epilog=_CHECK_EPILOG)
@PATHS_ARGUMENT
@_target_options(None, "Targets whose conversion diagnostics are reported, comma-separated or repeated "
                 "(default: every query target).", ("--target-format",))
@click.option("-f", "--format", "report_format", type=click.Choice(REPORT_FORMATS),
              help="Report format (default: from the -o name: .json, .xml (JUnit), .sarif; else text).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report to this file (default: standard output).")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
              help="Which findings make the exit code 1 (see below).")
@EXCLUDE_OPTION
@_batch_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@_rule_options
@CONFIG_OPTION
def check(paths: tuple[Path, ...], targets: tuple[tuple[str, ...], ...], format_: str | None,
          profile: str | None, option_pairs: tuple[str, ...], report_format: str | None, output: Path | None,
          fail_on: str, excludes: tuple[str, ...], jobs: int | None, no_cache: bool, cache_dir: Path | None,
          macros_dir: Path | None, quiet: bool, mappings: tuple[Path, ...], filter_paths: tuple[Path, ...] = (),
          placeholder_files: tuple[Path, ...] = (), unresolved_placeholders: str = "error") -> None:
    """Lint rule files and report every problem with its line: required keys, ids, dates,
    level and status, ATT&CK tags, condition references, modifiers, duplicate ids, fields
    the catalog does not know, and each target's conversion diagnostics."""
    from sigma_wmi import __version__
    from sigma_wmi.check import DuplicateIds, check_file, check_text, query_targets, rule_check
    from sigma_wmi.check_report import default_format, render, summary

    job_list = _jobs(flatten(targets) or query_targets(), format_, profile, option_pairs, mappings)
    files, stdin = _inputs(paths, excludes)
    if output is not None:
        _check_destinations(paths, files, Destination(output, False), None)
    # the rules as convert reads them: filters, placeholder values, rules named by correlations
    read_options = _read_options(macros_dir, filter_paths, placeholder_files, files, unresolved_placeholders)
    stream = batch.run(files, job_list, workers=jobs or default_workers(len(files)),
                       cache_dir=_cache_dir(no_cache, cache_dir), read_options=read_options, work=check_file)
    if stdin:
        stream = itertools.chain(stream, [_stdin_results(check_text, job_list, read_options)])
    duplicates = DuplicateIds()
    rules = []
    for file_results in _with_progress(stream, len(files), quiet, "checking"):
        for result in file_results:
            rule = rule_check(result, chosen_targets=bool(flatten(targets)))
            duplicates.check(rule)
            rules.append(rule)
    text = render(rules, report_format or default_format(str(output) if output else None), fail_on, __version__)
    if output is None:
        click.echo(safe_lines(text) if _stdout_is_terminal() else text, nl=False, color=True)
    else:
        try:
            write_atomic(output, text)
        except OSError as err:
            echo_error(f"{output}: error: cannot write the report: {describe_os_error(err)} (os-error)")
            sys.exit(EXIT_FAILED)
    total = summary(rules, fail_on)
    if not quiet:
        click.echo(f"{total['rules']} rules: {total['errors']} errors, {total['warnings']} warnings, "
                   f"{total['info']} info ({', '.join(j.key for j in job_list)}; --fail-on {fail_on}: "
                   f"{total['failing']} failing)", err=True)
    sys.exit(EXIT_FAILED if total["failing"] else EXIT_OK)


# ---------------------------------------------------------------------------
# docs and test
# ---------------------------------------------------------------------------

@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@EXCLUDE_OPTION
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
@_rule_options
@CONFIG_OPTION
def docs(paths: tuple[Path, ...], excludes: tuple[str, ...], output: Path, targets: tuple[str, ...], macros_dir: Path | None,
         jobs: int | None, quiet: bool, test_report: Path | None, mappings: tuple[Path, ...], filter_paths: tuple[Path, ...] = (),
         placeholder_files: tuple[Path, ...] = (), unresolved_placeholders: str = "error") -> None:
    """Build a static documentation site (HTML and Markdown pages, indexes, ATT&CK layer)."""
    from sigma_wmi.docs.site import build_site  # jinja2 and templates only when needed

    if stdin_count(paths):
        raise UsageError("docs reads rule files and folders, not standard input")
    files, _ = _inputs(paths, excludes)
    _check_destinations(paths, files, Destination(output, True), None)
    workers = jobs or default_workers(len(files))
    rules, errors = [], []
    options = _read_options(macros_dir, filter_paths, placeholder_files, files, unresolved_placeholders)
    for source in batch.read_all(files, options, workers):
        rules.extend(source.rules)
        if source.error:
            errors.append(source.error)
            echo_error(f"{source.error.origin}: error: {source.error.message} ({source.error.code})")
    from sigma_wmi.readers.sigma_filters import unused_by

    for unused in unused_by(options.filters, rules):
        echo_error(str(unused))
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
