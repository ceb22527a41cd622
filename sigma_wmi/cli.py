"""The `sigma-wmi` command line.

Exit codes: 0 every rule converted (possibly with warnings), 1 some rules failed,
2 usage or input error (bad option, missing path, no rule files).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from sigma_wmi import batch
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.output import safe_name, write_atomic, write_tree
from sigma_wmi.parallel import default_workers
from sigma_wmi.readers import ReadOptions, rule_files
from sigma_wmi.registry import backend_class, target_names
from sigma_wmi.rule_tests import test_command

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
            raise UsageError(f"--option takes NAME=VALUE, got '{pair}'")
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
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file (one target) or directory (one file per rule and target).")
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
            option_pairs: tuple[str, ...], output: Path | None, report: Path | None, jobs: int | None,
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
        raise UsageError(err.message) from None
    files = _input_files(paths)
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

    _write_outputs(results, job_list, output)
    if report:
        _write_report(report, results, job_list)
    failed = sum(r.status == "failed" for r in results)
    if not quiet:
        partial = sum(r.status == "partial" for r in results)
        ok = len(results) - failed - partial
        click.echo(f"{len(results)} rules: {ok} ok, {partial} partial, {failed} failed "
                   f"({', '.join(j.key for j in job_list)})", err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _input_files(paths: tuple[Path, ...]) -> list[Path]:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    files = rule_files(paths)
    if not files:
        raise UsageError("no rule files (*.yml, *.yaml) under " + ", ".join(str(p) for p in paths))
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


def _print_diagnostics(result: batch.RuleResult, verbose: bool) -> None:
    for diag in result.diagnostics:
        if diag["level"] != "error" and not verbose:
            continue
        where = diag.get("path") or result.path
        if diag.get("line"):
            where += f":{diag['line']}"
        target = f"[{diag['target']}] " if diag.get("target") else ""
        click.echo(f"{where}: {diag['level']}: {target}{diag['message']} ({diag['code']})", err=True)


def _write_outputs(results: list[batch.RuleResult], jobs: list[batch.Job], output: Path | None) -> None:
    directory_mode = output is not None and (len(jobs) > 1 or output.is_dir() or output.suffix == ""
                                             or str(output).endswith(("/", "\\")))
    if output is None or not directory_mode:
        chunks = []
        for job in jobs:
            texts = [r.outputs[job.key] for r in results if job.key in r.outputs]
            if not texts:
                continue
            body = job.backend().combine(texts, job.format)
            chunks.append(f"# --- {job.key} ---\n{body}" if len(jobs) > 1 else body)
        text = "".join(chunks)
        if output is None:
            click.echo(text, nl=False)
        else:
            write_atomic(output, text)
        return
    files: dict[str, str] = {}
    for job in jobs:
        cls = backend_class(job.target)
        extension = cls.extensions.get(job.format, ".txt")
        folder = f"{job.target}-{job.format}"
        converted = [(r, r.outputs[job.key]) for r in results if job.key in r.outputs]
        if job.format in cls.combined_formats:
            if converted:
                files[f"{folder}/{job.target}{extension}"] = job.backend().combine([t for _, t in converted],
                                                                                  job.format)
            continue
        used: set[str] = set()
        for result, text in converted:
            stem = safe_name(result.id, Path(result.path).stem)
            name, n = stem, 1
            while name in used:  # duplicate ids must not overwrite each other
                n += 1
                name = f"{stem}-{n}"
            used.add(name)
            files[f"{folder}/{name}{extension}"] = text if text.endswith("\n") else text + "\n"
    assert output is not None
    write_tree(output, files)


def _write_report(path: Path, results: list[batch.RuleResult], jobs: list[batch.Job]) -> None:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "partial", "failed")}
    document = {
        "targets": [j.key for j in jobs],
        "summary": {"rules": len(results), **counts},
        "rules": [r.to_report() for r in results],
    }
    write_atomic(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


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
@MAPPING_OPTION
def docs(paths: tuple[Path, ...], output: Path, targets: tuple[str, ...], macros_dir: Path | None,
         jobs: int | None, quiet: bool, mappings: tuple[Path, ...]) -> None:
    """Build a static documentation site (HTML and Markdown pages, indexes, ATT&CK layer)."""
    from sigma_wmi.backends.docs import build_site  # jinja2 and templates only when needed

    files = _input_files(paths)
    workers = jobs or default_workers(len(files))
    rules, errors = [], []
    for source in batch.read_all(files, ReadOptions(macros_dir), workers):
        rules.extend(source.rules)
        if source.error:
            errors.append(source.error)
            click.echo(f"{source.error.origin}: error: {source.error.message} ({source.error.code})", err=True)
    names = tuple(t.strip() for group in targets for t in group.split(",") if t.strip()) or None
    try:
        report = build_site(rules, output, errors=errors, targets=names, workers=workers,
                            mapping=_mapping_paths(mappings))
    except SigmaWmiError as err:
        raise UsageError(err.message) from None
    if not quiet:
        click.echo(f"{report.rules} rules, {len(report.pages)} pages in {report.out_dir}"
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
