"""ESCU: a rule as a Splunk security_content detection YAML (what `contentctl` builds apps from).

The search is the Splunk target's CIM `tstats` search when the rule's log source has a data
model, else its raw event search, and always ends with the analytic's tuning macro
`` `<file name>_filter` `` (contentctl requires it). An analytic read from ESCU keeps its own
metadata (type, rba, stories, drilldowns, tests...); a Sigma rule gets them from
`splunk_es.es_content` (level → type and risk score, ATT&CK → stories and mappings). The file
is named as contentctl requires: the analytic's name in lower case, space `-` `.` `/` as `_`.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import yaml

from sigma_wmi.backends.base import Backend, OptionSpec, Output, info, warning
from sigma_wmi.backends.splunk import SplunkBackend
from sigma_wmi.backends.splunk_data import data_source_names
from sigma_wmi.backends.splunk_es import EsContent, es_content, escu_name, file_stem
from sigma_wmi.errors import Diagnostic, UnsupportedError
from sigma_wmi.model import Rule

# An ESCU analytic's status as contentctl 5.x takes it.
_STATUS = {"experimental": "experimental", "deprecated": "deprecated", "production": "production"}
_TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")
_URL = re.compile(r"https?://\S+")
_MACRO_CALL = re.compile(r"`[A-Za-z0-9_]+(?:\([^`()]*\))?`")  # the macro calls the Splunk target writes
# 4.x analytic keys contentctl 5.x no longer takes: their content moved into `rba`.
_OLD_TAG_KEYS = frozenset({"confidence", "impact", "risk_score", "observable", "message", "required_fields",
                           "kill_chain_phases", "cis20", "nist", "context", "dataset"})
_NAMESPACE = uuid.UUID("9f2b0d5e-6a53-4c1b-9a59-9e0d2f6c3a71")  # ids for rules without a UUID


class EscuBackend(Backend):
    name = "escu"
    description = "Splunk security_content (ESCU) detection YAML, as contentctl validates and builds it"
    formats = ("yaml",)
    extensions: ClassVar[Mapping[str, str]] = {"yaml": ".yml"}
    is_document = True  # a whole analytic, not a query to show in a card
    echoes_source = "escu"  # an ESCU analytic's page already shows the analytic
    display_rank = 3
    options = (
        OptionSpec("search_format", "the analytic's search: tstats when the log source has a CIM data model "
                   "(auto), or always tstats / raw", "auto", ("auto", "tstats", "raw")),
        OptionSpec("profile", "raw searches: event field names (as the splunk target's -p)", "auto",
                   ("auto", "sysmon", "security")),
        OptionSpec("analytic_story", "comma-separated analytic stories for Sigma rules (default: the names of "
                   "the rule's ATT&CK techniques)", ()),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # the Splunk target writes the search (its catalog is this one: same mapping files)
        self.splunk = SplunkBackend(profile=self.settings["profile"], mapping=self.settings["mapping"])

    def convert(self, rule: Rule, format: str | None = None) -> Output:
        self.check_format(format)
        diagnostics: list[Diagnostic] = []
        name = rule.title.strip() if rule.source_format == "escu" and escu_name(rule.title) == rule.title.strip() \
            else escu_name(rule.title)
        if name != rule.title.strip():
            diagnostics.append(info("escu-name", f"analytic named '{name}' (ESCU names hold letters, digits, "
                                                 "space - . / _ and at most 67 characters)"))
        stem = file_stem(name)
        # the Splunk target writes the search, ending in this analytic's tuning macro
        named = dataclasses.replace(rule, title=name, tuning_macro=f"{stem}_filter")
        search, fields, tstats = self.search(named, diagnostics)
        es = es_content(named, fields)
        if self.settings["analytic_story"] and not es.from_escu:
            es = dataclasses.replace(es, analytic_stories=tuple(self.settings["analytic_story"]))
        if "`" in _MACRO_CALL.sub("", search):
            diagnostics.append(warning("escu-backtick", "the search holds a backtick in a value: contentctl and "
                                                        "Splunk read text between backticks as a macro call"))
        document = self.document(named, es, search, tstats, diagnostics)
        return Output(render(document), diagnostics)

    def search(self, rule: Rule, diagnostics: list[Diagnostic]) -> tuple[str, list[str], bool]:
        """The search, the fields of its results, and whether it is a tstats search."""
        splunk = self.splunk
        wanted = self.settings["search_format"]
        if wanted != "raw":
            attempt: list[Diagnostic] = []
            try:
                search, fields = splunk.tstats_search(rule, attempt)
                diagnostics.extend(attempt)
                return search, fields, True
            except UnsupportedError as err:
                if wanted == "tstats":
                    raise
                diagnostics.append(info("escu-raw-search", f"raw event search: {err.message}"))
        search, fields = splunk.raw_search(rule, diagnostics)
        return search, fields, False

    def document(self, rule: Rule, es: EsContent, search: str, tstats: bool,
                 diagnostics: list[Diagnostic]) -> dict[str, Any]:
        extras = rule.extras if es.from_escu else {}
        # contentctl holds a production analytic to at least one attack-data test, which only an
        # ESCU analytic brings: every other rule is experimental
        status = _STATUS.get(str(rule.status or "").lower(), "experimental") if es.from_escu else "experimental"
        if not es.from_escu and rule.status == "stable":
            diagnostics.append(info("escu-status", "stable rule written as experimental: ESCU production "
                                                   "analytics need attack-data tests"))
        if status == "deprecated":
            status = "experimental"  # contentctl wants deprecation_info with a replacement; none is known
            diagnostics.append(warning("escu-status", "deprecated rule written as experimental: ESCU needs "
                                                      "deprecation_info naming its replacement"))
        kind = es.type
        document: dict[str, Any] = {
            "name": rule.title,
            "id": _uuid(rule),
            "version": _version(extras.get("version")),
            "date": _date(rule),
            "author": ", ".join(rule.authors) or "sigma-wmi",
            "status": status,
            "type": kind,
            "description": " ".join((rule.description or rule.title).split())[:10000],
            "data_source": list(_data_sources(self, rule, extras, tstats)),
            "search": search,
            "how_to_implement": str(extras.get("how_to_implement") or _how_to_implement(rule, tstats)),
            "known_false_positives": _false_positives(rule),
            "references": _references(rule, diagnostics),
        }
        if es.drilldowns and kind != "Hunting":
            document["drilldown_searches"] = [dataclasses.asdict(d) for d in es.drilldowns]
        if es.risk:
            document["rba"] = {
                "message": es.risk_message,
                "risk_objects": [{"field": o.field, "type": o.type, "score": o.score} for o in es.risk_objects],
                "threat_objects": [{"field": o.field, "type": o.type} for o in es.threat_objects],
            }
        elif kind in ("TTP", "Anomaly"):
            raise UnsupportedError(f"escu: a {kind} analytic needs a risk object; the search returns none of "
                                   "dest, user, src, host", code="no-risk-object")
        tags: dict[str, Any] = {
            "analytic_story": list(es.analytic_stories),
            "asset_type": es.asset_type,
            "mitre_attack_id": [t for t in es.mitre_attack if _TECHNIQUE.fullmatch(t)],
            "product": list(es.products),
            "security_domain": es.security_domain,
        }
        if es.from_escu:  # what else the analytic's tags say, as far as contentctl 5.x still takes it
            original = extras.get("tags")
            if isinstance(original, Mapping):
                tags.update((k, v) for k, v in original.items() if k not in tags and k not in _OLD_TAG_KEYS)
        document["tags"] = tags
        tests = extras.get("tests")
        if isinstance(tests, list):
            document["tests"] = tests
        return document

    def combine(self, outputs: Any, format: str | None = None) -> str:
        """Several analytics on standard output: one YAML stream, a document each."""
        return "---\n".join(text if text.endswith("\n") else text + "\n" for text in outputs)

    def identity(self, text: str, format: str | None = None) -> str | None:
        """The file stem: contentctl names an analytic's file, and its tuning macro, after its name."""
        return file_stem(str(yaml.safe_load(text)["name"]))

    def with_identity(self, text: str, format: str | None, identity: str, n: int) -> tuple[str, str]:
        document = yaml.safe_load(text)
        old = f"`{file_stem(document['name'])}_filter`"
        document["name"] = f"{document['name'][:MAX_SUFFIXED]} {n}"
        document["search"] = document["search"].replace(old, f"`{file_stem(document['name'])}_filter`")
        return render(document), file_stem(document["name"])

    def file_stem(self, text: str, format: str | None = None) -> str | None:
        return self.identity(text, format)


MAX_SUFFIXED = 60  # room for " <n>" within ESCU's 67 characters


class _Dumper(yaml.SafeDumper):
    """Block style, long strings kept on one line unless they hold line breaks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render(document: Mapping[str, Any]) -> str:
    text: str = yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)
    return text


def _uuid(rule: Rule) -> str:
    try:
        return str(uuid.UUID(rule.id))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, f"{rule.title}\0{rule.origin.path}"))


def _version(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 1


def _date(rule: Rule) -> str:
    """The last change (ESCU's `date`), never after today (contentctl refuses future dates)."""
    today = datetime.date.today()
    for text in (rule.modified, rule.date):
        found = re.fullmatch(r"\s*(\d{4})[-/](\d{1,2})[-/](\d{1,2})\s*", text or "")
        if found:
            try:
                return min(datetime.date(*map(int, found.groups())), today).isoformat()
            except ValueError:
                continue
    return today.isoformat()


def _data_sources(backend: EscuBackend, rule: Rule, extras: Mapping[str, Any], tstats: bool) -> tuple[str, ...]:
    original = extras.get("data_source")
    if isinstance(original, list):
        return tuple(str(s) for s in original)
    profiles = ("sysmon", "security") if tstats else \
        ((backend.settings["profile"],) if backend.settings["profile"] != "auto" else ("sysmon",))
    return data_source_names(backend.catalog, rule.logsource, profiles)


def _how_to_implement(rule: Rule, tstats: bool) -> str:
    source = f"the CIM data model of {rule.logsource.key()} events, accelerated" if tstats \
        else f"{rule.logsource.key()} events searchable with the source and field names of the search"
    return (f"Needs {source}. Converted by sigma-wmi from the Sigma rule {rule.id or rule.title}; "
            "tune false positives in the analytic's filter macro.")


def _false_positives(rule: Rule) -> str:
    text = "; ".join(" ".join(f.split()) for f in rule.falsepositives if f.strip())
    return text if len(text) >= 4 else "Unknown"


def _references(rule: Rule, diagnostics: list[Diagnostic]) -> list[str]:
    """contentctl takes URLs only; other references are left out and named."""
    urls = [r.strip() for r in rule.references if _URL.fullmatch(r.strip())]
    others = [r for r in rule.references if not _URL.fullmatch(r.strip())]
    if others:
        diagnostics.append(info("escu-reference", f"{len(others)} reference(s) that are not URLs left out"))
    return urls
