"""The configuration file: defaults for command-line options, found like other tools find theirs.

`sigma-wmi.toml`, or a `[tool.sigma-wmi]` table in `pyproject.toml`, in the current folder or
the nearest ancestor (the search stops at a repository root, a folder holding `.git`);
`--config FILE` names one explicitly. Keys are option names: top-level keys apply to every
command that has that option, a table per command (`[convert]`, `[check]`) to that command
only, and the command line overrides both:

    target = ["splunk", "eql"]          # --target, for every command that has it
    mapping = ["env/fields.yml"]        # paths are relative to the configuration file
    [convert]
    profile = "sysmon"
    output = "build/"
    option = {expand_macros = true}     # -O expand_macros=true
    [check]
    fail-on = "warning"

A key is an option's long name (`fail-on` or `fail_on`) or its parameter name (`targets`);
the values are checked by the option itself, as if typed on the command line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from sigma_wmi.errors import Origin, SigmaWmiError

FILE_NAME = "sigma-wmi.toml"
PYPROJECT = "pyproject.toml"
TOOL_KEY = "sigma-wmi"


@dataclass(frozen=True)
class Config:
    path: Path
    table: dict[str, Any]


def find_config(start: Path) -> Path | None:
    """The configuration file that applies in `start`: the nearest `sigma-wmi.toml`, or a
    `pyproject.toml` with a `[tool.sigma-wmi]` table, up to the repository root."""
    for folder in (start, *start.parents):
        candidate = folder / FILE_NAME
        if candidate.is_file():
            return candidate
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and _has_tool_table(pyproject):
            return pyproject
        if (folder / ".git").exists():
            return None
    return None


def _has_tool_table(pyproject: Path) -> bool:
    try:
        return TOOL_KEY in tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # not ours to judge: another tool's file


def load_config(path: Path) -> Config:
    """The configuration table of a file; a bad file is a `SigmaWmiError` naming it."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SigmaWmiError(f"cannot read the configuration: {err.strerror or err}", Origin(str(path)),
                            "config") from None
    except UnicodeDecodeError:
        raise SigmaWmiError("the configuration is not UTF-8", Origin(str(path)), "config") from None
    except tomllib.TOMLDecodeError as err:
        # Python 3.11's error has the place only in its text: "... (at line 3, column 9)"
        message, _, place = str(err).partition(" (at line ")
        line = int(place.split(",")[0]) if place.split(",")[0].isdigit() else None
        raise SigmaWmiError(f"TOML syntax error: {message}", Origin(str(path), line), "config") from None
    if path.name == PYPROJECT:
        document = document.get("tool", {}).get(TOOL_KEY, {})
    if not isinstance(document, dict):
        raise SigmaWmiError(f"[tool.{TOOL_KEY}] must be a table", Origin(str(path)), "config")
    return Config(path, document)


def default_map(config: Config, group: click.Group) -> dict[str, Any]:
    """click's `default_map` for `group`'s commands (and its groups' commands: `[list.fields]`)
    from a configuration. Unknown keys and tables are errors that list the valid ones."""
    leaves = list(_leaves(group))
    # a top-level table is an option's value ({expand_macros = true} for `option`) or a command's section
    shared = {k: v for k, v in config.table.items()
              if not isinstance(v, dict) or (k not in group.commands and any(_normal(k) in _keys(c) for c in leaves))}
    sections = {k: v for k, v in config.table.items() if k not in shared}
    used: set[str] = set()
    result = _group_defaults(group, shared, sections, config.path, used, "")
    stray = sorted(set(shared) - used)
    if stray:
        raise SigmaWmiError(f"no command has option {', '.join(stray)}", Origin(str(config.path)), "config")
    return result


def _leaves(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found.extend(_leaves(command) if isinstance(command, click.Group) else [command])
    return found


def _group_defaults(group: click.Group, shared: dict[str, Any], sections: dict[str, Any], path: Path,
                    used: set[str], prefix: str) -> dict[str, Any]:
    unknown = sorted(set(sections) - set(group.commands))
    if unknown:
        where = f"[{prefix.rstrip('.')}] has no command" if prefix else "no command"
        raise SigmaWmiError(f"{where} {', '.join(unknown)}; tables: {', '.join(sorted(group.commands))}",
                            Origin(str(path)), "config")
    result: dict[str, Any] = {}
    for name, command in group.commands.items():
        section = sections.get(name, {})
        if isinstance(command, click.Group):
            values = _group_defaults(command, shared, section, path, used, f"{prefix}{name}.")
        else:
            values = _command_defaults(command, f"{prefix}{name}", shared, section, path, used)
        if values:
            result[name] = values
    return result


def _command_defaults(command: click.Command, title: str, shared: dict[str, Any], section: dict[str, Any],
                      path: Path, used: set[str]) -> dict[str, Any]:
    keys = _keys(command)
    values: dict[str, Any] = {}
    for key, value in shared.items():
        if _normal(key) in keys:
            param = keys[_normal(key)]
            values[param.name or key] = _value(param, value, path)
            used.add(key)
    for key, value in section.items():
        if _normal(key) not in keys:
            raise SigmaWmiError(f"[{title}] has no option '{key}'; options: {', '.join(_listed(command))}",
                                Origin(str(path)), "config")
        param = keys[_normal(key)]
        values[param.name or key] = _value(param, value, path)
    return values


def _normal(key: str) -> str:
    return key.strip().lower().replace("_", "-")


def _keys(command: click.Command) -> dict[str, click.Parameter]:
    """Every name a configuration may give an option: its long names and its parameter name."""
    keys: dict[str, click.Parameter] = {}
    for param in command.params:
        if param.name in ("help", "config", "version") or getattr(param, "is_eager", False):
            continue
        names = [o.lstrip("-") for o in param.opts if o.startswith("--")] + [param.name or ""]
        for name in names:
            if name:
                keys.setdefault(_normal(name), param)
    return keys


def _listed(command: click.Command) -> list[str]:
    return sorted({next((o.lstrip("-") for o in p.opts if o.startswith("--")), p.name or "")
                   for p in _keys(command).values()})


def _value(param: click.Parameter, value: Any, config_path: Path) -> Any:
    """A configuration value as the option takes it: a table of NAME=VALUE pairs for a
    repeatable NAME=VALUE option, lists for repeatable options, paths relative to the file."""
    if isinstance(value, dict):
        value = [f"{k}={_scalar(v)}" for k, v in value.items()]
    multiple = getattr(param, "multiple", False) or (param.nargs == -1)
    if multiple and not isinstance(value, list):
        value = [value]
    if isinstance(param.type, click.Path):
        base = config_path.parent
        value = [_relative(v, base) for v in value] if isinstance(value, list) else _relative(value, base)
    elif isinstance(value, list):
        value = [_scalar(v) for v in value]
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _relative(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or value == "-":
        return value
    path = Path(value)
    joined = str(path if path.is_absolute() else base / path)
    # a trailing slash says "a folder" (--output build/): keep it
    return joined + "/" if value.endswith(("/", "\\")) and not joined.endswith("/") else joined
