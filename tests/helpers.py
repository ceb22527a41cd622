"""Building rules from small YAML snippets for table-style tests."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from addonfactory_splunk_conf_parser_lib import TABConfigParser

from sigma_wmi.model import Rule
from sigma_wmi.readers import read_text_rules


def sigma_rule(detection: str, *, category: str = "process_creation", product: str = "windows",
               service: str | None = None, extra: str = "") -> Rule:
    """A Sigma rule with the given `detection:` body (YAML, indented freely)."""
    logsource = f"    product: {product}\n"
    if category:
        logsource += f"    category: {category}\n"
    if service:
        logsource += f"    service: {service}\n"
    body = textwrap.indent(textwrap.dedent(detection).strip("\n"), "    ")
    text = (
        "title: Test rule\n"
        "id: 11111111-2222-3333-4444-555555555555\n"
        "status: test\n"
        "logsource:\n" + logsource
        + "detection:\n" + body + "\n"
        + "level: medium\n" + textwrap.dedent(extra)
    )
    (rule,) = read_text_rules(text, "test.yml")
    return rule


def ecs_events(name: str) -> list[dict[str, Any]]:
    """A shared recorded-events file mapped to ECS documents (skips without ../shared)."""
    from conftest import shared_path

    from sigma_wmi.events import read_events, to_ecs

    return [to_ecs(raw) for raw in read_events(shared_path("data", "events", name))]


def read_conf(text: str, folder: Path) -> TABConfigParser:
    """Splunk's own .conf parser over `text`, written as `savedsearches.conf` in `folder`
    (rewritten on every call, so one folder serves every hypothesis example)."""
    path = folder / "savedsearches.conf"
    path.write_text(text, encoding="utf-8", newline="")
    parser = TABConfigParser()
    parser.read(str(path), encoding="utf-8")
    return parser
