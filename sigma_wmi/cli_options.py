"""Validating the target options of the command line (`-t`, `-f`, `-p`, `-O`) against what
the backends declare, so that a bad value is a usage error (exit 2) listing the valid ones,
and completing them in the shell."""

from __future__ import annotations

import difflib
from typing import Any

import click
from click.shell_completion import CompletionItem

from sigma_wmi.backends.base import Backend, OptionSpec
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.registry import backend_class, target_names

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _classes(names: list[str] | None = None) -> list[type[Backend]]:
    classes = []
    for name in names if names is not None else target_names():
        try:
            classes.append(backend_class(name))
        except SigmaWmiError:
            continue  # a broken plugin: its name is reported where it is chosen
    return classes


def _complete(values: list[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(v) for v in sorted(set(values)) if v.startswith(incomplete)]


def _hint(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class TargetList(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on, not before
    """Target names, comma-separated (`-t splunk,eql`); each must be a registered target."""

    name = "target"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(t.strip() for t in str(value).split(",") if t.strip())
        known = target_names()
        for name in names:
            if name not in known:
                self.fail(f"unknown target '{name}'{_hint(name, known)}; targets: {', '.join(known)}", param, ctx)
            try:
                backend_class(name)
            except SigmaWmiError as err:
                self.fail(err.message, param, ctx)
        if not names:
            self.fail(f"no target named; targets: {', '.join(known)}", param, ctx)
        return names

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        head, _, last = incomplete.rpartition(",")
        prefix = head + "," if head else ""
        return [CompletionItem(prefix + item.value) for item in _complete(target_names(), last)]


def flatten(targets: tuple[tuple[str, ...] | str, ...]) -> list[str]:
    names: list[str] = []
    for group in targets:
        for name in (group,) if isinstance(group, str) else group:
            if name not in names:
                names.append(name)
    return names


def complete_formats(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete([f for cls in _classes() for f in cls.formats], incomplete)


def complete_profiles(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete([c for cls in _classes() for s in cls.option_specs() if s.name == "profile"
                      for c in s.choices], incomplete)


def complete_options(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete([f"{s.name}=" for cls in _classes() for s in cls.option_specs()], incomplete)


def check_format(format_: str | None, targets: list[str]) -> None:
    """A format must be one that a chosen target has."""
    if format_ is None:
        return
    formats = [f for cls in _classes(targets) for f in cls.formats]
    if format_ not in formats:
        raise click.BadParameter(f"'{format_}' is not a format of {', '.join(targets)}; formats: "
                                 f"{', '.join(dict.fromkeys(formats))}", param_hint="'-f' / '--format'")


def check_profile(profile: str | None, targets: list[str]) -> None:
    """A profile must be one that a chosen target takes."""
    if profile is None:
        return
    choices = [c for cls in _classes(targets) for s in cls.option_specs() if s.name == "profile" for c in s.choices]
    if not choices:
        raise click.BadParameter(f"no selected target ({', '.join(targets)}) takes a profile",
                                 param_hint="'-p' / '--profile'")
    if profile not in choices:
        raise click.BadParameter(f"'{profile}' is not a profile of {', '.join(targets)}{_hint(profile, choices)}; "
                                 f"profiles: {', '.join(dict.fromkeys(choices))}", param_hint="'-p' / '--profile'")


def parse_options(pairs: tuple[str, ...], targets: list[str]) -> dict[str, Any]:
    """`-O NAME=VALUE` pairs, each NAME declared by a chosen target and each VALUE one that the
    targets declaring NAME accept: true/false or a number for each of them, a choice for one."""
    specs: dict[str, list[tuple[str, OptionSpec]]] = {}
    for name in targets:
        for spec in backend_class(name).option_specs():
            specs.setdefault(spec.name, []).append((name, spec))
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise click.BadParameter(f"'{pair}' is not NAME=VALUE", param_hint="'-O' / '--option'")
        if name not in specs:
            raise click.BadParameter(f"no option '{name}' in {', '.join(targets)}{_hint(name, list(specs))}; "
                                     f"options: {', '.join(sorted(specs))}", param_hint="'-O' / '--option'")
        problems = [(target, spec, value_problem(spec, value)) for target, spec in specs[name]]
        # a choice goes to the targets that have it (-t splunk,eql -O profile=ecs: eql's), as -p does
        chosen_somewhere = any(spec.choices and not problem for _, spec, problem in problems)
        for target, spec, problem in problems:
            if problem and not (spec.choices and chosen_somewhere):
                raise click.BadParameter(f"{name}={value}: {target}'s {name} takes {problem}",
                                         param_hint="'-O' / '--option'")
        options[name] = value
    return options


def value_problem(spec: OptionSpec, value: str) -> str | None:
    """What `value` should have been for `spec`, or None when it is fine."""
    if spec.choices:
        return None if value in spec.choices else ", ".join(spec.choices)
    if isinstance(spec.default, bool):
        return None if value.strip().lower() in _TRUE + _FALSE else "true, false"
    if isinstance(spec.default, int):
        try:
            int(value)
        except ValueError:
            return "a whole number"
    return None
