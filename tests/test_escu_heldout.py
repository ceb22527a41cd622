"""ESCU analytics the importer was not written against (tests/data/escu_heldout, see its README):
older and newer versions of corpus analytics, deprecated and experimental ones, with the shared
corpus macros (skips without ../shared).

Each one imports: exactly (and then reads back equal from our own Splunk output), or partially
with a located reason naming what the model cannot hold. The raw-search ones run through the
evaluator on the recorded events of their log source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sigma_wmi.errors import Level
from sigma_wmi.evaluate import alerting, logsource_predicate
from sigma_wmi.events import canonical_event, read_events
from sigma_wmi.model import Rule
from sigma_wmi.readers import ReadOptions, read_file
from sigma_wmi.readers.escu import is_partial
from tests.conftest import shared_path
from tests.test_escu_corpus import _bench

HELD_OUT = Path(__file__).parent / "data" / "escu_heldout" / "detections"
ANALYTICS = sorted(HELD_OUT.glob("*.yml"))

# What the model cannot hold, per analytic that imports partially: a word of the reason.
PARTIAL = {
    "active_directory_as_rep_roasting_detection": "is not defined",  # its tuning macro lacks `_filter`
    "create_or_delete_windows_shares_using_net_exe": "'Processs.process_name' is not a field",  # typo upstream
    "detect_exchange_web_shell": "`join`",
    "detect_mimikatz_using_loaded_images": "values()",  # five DLLs among a group's values, not one event's
    "detect_mimikatz_via_powershell_and_eventcode_4703": "`| rex` extracted",
    "detect_usb_device_insertion": "Change_Analysis is not in the CIM data",
    "monitor_registry_keys_for_print_monitors": "`join`",
    "processes_tapping_keyboard_events": "Alerts.Alerts is not in the CIM data",
    "registry_keys_for_creating_shim_databases": "`join`",
    "sdclt_uac_bypass": "`join`",
    "usn_journal_deletion_v2": "is an aggregate",  # a test of values() after tstats
}
WMI = ("detect_wmi_event_subscription_persistence_v13", "remote_wmi_command_attempt", "xsl_script_execution_with_wmic_duc01")


def _read(path: Path) -> Rule:
    return read_file(path, ReadOptions(shared_path("corpora", "escu", "macros")))[0]


def test_the_held_out_set_is_what_its_readme_lists() -> None:
    readme = (HELD_OUT.parent / "README.md").read_text(encoding="utf-8")
    assert len(ANALYTICS) >= 30
    assert [p.name for p in ANALYTICS if p.name not in readme] == []


@pytest.mark.parametrize("path", ANALYTICS, ids=lambda p: p.stem)
def test_each_imports_exactly_and_reads_back_or_names_what_it_cannot_hold(path: Path) -> None:
    rule = _read(path)  # never a failure
    warnings = [d for d in rule.diagnostics if d.level is Level.WARNING]
    if path.stem in PARTIAL:
        assert is_partial(rule) and any(PARTIAL[path.stem] in d.message for d in warnings), \
            [d.message for d in warnings]
        assert all(d.origin is not None and d.origin.line for d in warnings)  # path:line
    else:
        assert not is_partial(rule), [d.message for d in warnings]
        assert _bench().reads_back(rule)


def test_the_wmi_ones_import_exactly() -> None:
    for name in WMI:
        assert not is_partial(_read(HELD_OUT / f"{name}.yml")), name


@pytest.fixture(scope="module")
def recorded() -> list[dict[str, Any]]:
    data = shared_path("data")
    files = sorted((data / "events").glob("*.jsonl")) + sorted((data / "evtx").glob("*.evtx"))
    return [raw for path in files for raw in read_events(path)]


def test_the_raw_searches_run_on_the_recorded_events_of_their_log_source(recorded: list[dict[str, Any]]) -> None:
    evaluated = []
    for path in ANALYTICS:
        rule = _read(path)
        if is_partial(rule) or rule.extras.get("spl", {}).get("datamodel") or rule.logsource.product != "windows":
            continue
        covers = logsource_predicate(rule.logsource)
        events = [canonical_event(raw, rule.logsource) for raw in recorded if covers(canonical_event(raw))]
        if events:
            alerting(rule, events)  # raises on a condition the evaluator cannot run
            evaluated.append(path.stem)
    # the WMI-Activity and Sysmon ones with recordings: Sysmon 20 among them
    assert "detect_wmi_event_subscription_persistence_v13" in evaluated
    assert len(evaluated) >= 3
