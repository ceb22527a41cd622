"""The whole shared ESCU endpoint corpus through the importer (skips without ../shared).

Floors of issue #14 (import ≥ 85 %, exact ≥ 70 %, raw searches ≥ 80 %), the round trip of
every exact import through our own Splunk output, the WMI analytics, and the raw-search
analytics run by the evaluator on the recorded events of their log source.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sigma_wmi.api import compile_rule
from sigma_wmi.errors import SigmaWmiError
from sigma_wmi.evaluate import alerting, logsource_predicate
from sigma_wmi.events import canonical_event, read_events
from sigma_wmi.readers import ReadOptions, read_file
from sigma_wmi.readers.escu import is_partial, read_escu
from tests.conftest import REPO, shared_path


@functools.cache
def _bench() -> ModuleType:
    """bench/escu_coverage.py, the one place the coverage is measured (it is not a package)."""
    spec = importlib.util.spec_from_file_location("escu_coverage", REPO / "bench" / "escu_coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus() -> Any:
    root = shared_path("corpora", "escu", "detections", "endpoint").parent.parent
    return _bench().coverage(root)


def test_coverage_floors(corpus: Any) -> None:
    everything, raw = corpus.of(), corpus.of("raw")
    assert len(everything) > 1000 and len(raw) > 300
    assert corpus.rate(everything, "ok", "partial") >= 0.85
    assert corpus.rate(everything, "ok") >= 0.70
    assert corpus.rate(raw, "ok", "partial") >= 0.80


def test_every_exact_import_reads_back_equal_from_our_splunk_output(corpus: Any) -> None:
    exact = [a for a in corpus.of() if a.status == "ok"]
    assert exact and all(a.round_trip is not None for a in exact)
    assert [a.path.stem for a in exact if not a.round_trip] == []


def test_every_analytic_about_wmi_imports_exactly(corpus: Any) -> None:
    about = [a for a in corpus.of() if a.about_wmi]
    names = {a.path.stem for a in about}
    # ESCU's own event-subscription analytics are among them: Sysmon 20/21, WMI-Activity 5861
    assert {"wmi_permanent_event_subscription", "wmi_permanent_event_subscription___sysmon",
            "detect_wmi_event_subscription_persistence"} <= names
    assert [(a.path.stem, a.reason) for a in about if a.status != "ok"] == []


def test_every_data_model_and_leading_macro_is_reported(corpus: Any) -> None:
    models = {a.group for a in corpus.of("tstats")}
    assert {"Endpoint.Processes", "Endpoint.Registry", "Endpoint.Filesystem", "Risk.All_Risk",
            "Network_Traffic.All_Traffic"} <= models
    macros = {a.group for a in corpus.of("raw")}
    assert {"sysmon", "wineventlog_security", "powershell", "wmi", "linux_auditd", "wineventlog_system"} <= macros
    text = "\n".join(_bench().report(corpus, Path("escu")))
    assert "by leading data-source macro" in text and "by data model" in text


# ---- the raw-search analytics on recorded events ----

@pytest.fixture(scope="module")
def recorded() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = shared_path("data")
    files = sorted((data / "events").glob("*.jsonl")) + sorted((data / "evtx").glob("*.evtx"))
    raws = [raw for path in files for raw in read_events(path)]
    return [(raw, canonical_event(raw)) for raw in raws]


def _raw_analytics() -> list[Path]:
    root = shared_path("corpora", "escu", "detections", "endpoint")
    return [p for p in sorted(root.glob("*.yml")) if not p.read_text(encoding="utf-8").split("search:", 1)[1]
            .lstrip(" '\"\n").startswith("|")]


def test_raw_analytics_evaluate_on_the_recorded_events_of_their_log_source(
        recorded: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    macros = shared_path("corpora", "escu", "macros")
    fired: dict[str, list[dict[str, Any]]] = {}
    evaluated = 0
    for path in _raw_analytics():
        try:
            rule = read_file(path, ReadOptions(macros))[0]
        except SigmaWmiError:
            continue
        if is_partial(rule) or rule.logsource.product != "windows":
            continue
        covers = logsource_predicate(rule.logsource)
        events = [canonical_event(raw, rule.logsource) for raw, own in recorded if covers(own)]
        if not events:
            continue
        evaluated += 1
        fired[path.stem] = alerting(rule, events)  # raises on a condition the evaluator cannot run
    assert evaluated >= 100  # 165 on the shared corpus and recordings (Sysmon, 4688, WMI-Activity, 4104)
    # the WMI analytics fire on the WMI recordings: Sysmon 20 and 21, WMI-Activity 5860/5861
    for name in ("detect_wmi_event_subscription_persistence", "wmi_permanent_event_subscription___sysmon",
                 "wmi_permanent_event_subscription", "wmi_temporary_event_subscription"):
        assert fired.get(name), name
    # ... and the consumer filter keeps Windows' own SCM Event Log Consumer out
    assert not any("SCM Event Log Consumer" in str(e.get("message", ""))
                   for e in fired["wmi_permanent_event_subscription"])


# WMI analytics written the ways ESCU writes them, beyond the shared corpus: each imports exactly,
# reads back from our raw output and fires on the WMI recordings (at least `fires` alerts).
WMI_ANALYTICS = [
    ('`sysmon` EventCode=20 Destination="*powershell*" | stats count by Consumer Destination dest', 1),
    ('`sysmon` EventCode=19 Query="*Win32_PerfFormattedData*" | stats count by Query Name dest', 1),
    ("`sysmon` EventID=21 Consumer=* Filter=* | table Consumer Filter", 1),
    ("`sysmon` EventCode IN (19,20,21) EventType=WmiConsumerEvent Operation=Created | stats count by user dest", 1),
    ("`wmi` EventCode=5861 ESS=* CONSUMER=*CommandLineEventConsumer* PossibleCause=*", 1),
    ("`wmi` EventCode=5857 ProviderPath=*\\\\Temp\\\\* | stats count by ProviderName HostProcess", 0),
    ("`sysmon` EventCode=1 parent_process_name=wmiprvse.exe process_name IN (powershell.exe, cmd.exe) "
     "| stats count by dest process", 1),
    ('`sysmon` EventCode=7 process_name=scrcons.exe ImageLoaded IN ("*\\\\vbscript.dll","*\\\\jscript.dll")', 1),
    ("`wineventlog_security` EventCode=4688 ParentProcessName=*\\\\WmiPrvSE.exe | stats count by Computer", 1),
    ('`sysmon` EventCode=1 Image=*\\\\wmic.exe CommandLine="*process call create*" '
     '| where NOT match(ParentImage, "(?i)\\\\\\\\ccmexec\\\\.exe$")', 1),
    ('`wmi` EventCode=5861 | rex field=Message "Consumer =\\s+(?<consumer>[^;|^$]+)" '
     '| search consumer="CommandLineEventConsumer*" | stats count by consumer', 1),
]


@pytest.mark.parametrize(("search", "fires"), WMI_ANALYTICS)
def test_wmi_analytics_import_exactly_and_fire_on_the_wmi_recordings(
        search: str, fires: int, recorded: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    rule = read_escu({"name": "T", "search": search}, "", "t.yml", shared_path("corpora", "escu", "macros"))
    assert not is_partial(rule), [d.message for d in rule.diagnostics]
    again = read_escu({"name": "T", "search": compile_rule(rule, "splunk", "raw").text}, "", "<splunk>")
    assert (again.detection, again.logsource, again.aggregation) == (rule.detection, rule.logsource, rule.aggregation)
    covers = logsource_predicate(rule.logsource)
    alerts = alerting(rule, [canonical_event(raw, rule.logsource) for raw, own in recorded if covers(own)])
    assert len(alerts) >= fires
