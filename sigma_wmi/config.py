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


def default_map(config: Config, group: click.Group) -> dict[str, dict[str, Any]]:
    """click's `default_map` for `group`'s commands from a configuration. Unknown keys and
    tables are errors that list the valid ones."""
    commands = {name: command for name, command in group.commands.items() if not isinstance(command, click.Group)}
    shared = {k: v for k, v in config.table.items() if not isinstance(v, dict) or _names_option(k, commands)}
    sections = {k: v for k, v in config.table.items() if k not in shared}
    unknown = sorted(set(sections) - set(commands))
    if unknown:
        raise SigmaWmiError(f"no command {', '.join(unknown)}; tables: {', '.join(sorted(commands))}",
                            Origin(str(config.path)), "config")
    used: set[str] = set()
    result: dict[str, dict[str, Any]] = {}
    for name, command in commands.items():
        keys = _keys(command)
        values: dict[str, Any] = {}
        for key, value in shared.items():
            if _normal(key) in keys:
                param = keys[_normal(key)]
                values[param.name or key] = _value(param, value, config.path)
                used.add(key)
        for key, value in sections.get(name, {}).items():
            if _normal(key) not in keys:
                raise SigmaWmiError(f"[{name}] has no option '{key}'; options: {', '.join(_listed(command))}",
                                    Origin(str(config.path)), "config")
            param = keys[_normal(key)]
            values[param.name or key] = _value(param, value, config.path)
        if values:
            result[name] = values
    stray = sorted(set(shared) - used)
    if stray:
        raise SigmaWmiError(f"no command has option {', '.join(stray)}", Origin(str(config.path)), "config")
    return result


def _names_option(key: str, commands: dict[str, click.Command]) -> bool:
    # a table that is an option's value ({expand_macros = true} for `option`), not a command's section
    return key not in commands and any(_normal(key) in _keys(c) for c in commands.values())


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
