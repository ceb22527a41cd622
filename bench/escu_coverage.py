"""ESCU import coverage: every endpoint detection of an ESCU checkout.

    python bench/escu_coverage.py [ESCU_DIR]   (default: ../shared/corpora/escu)

Prints exact / partial / failed counts for all detections, for tstats data-model searches and
for raw event searches; a table per leading data-source macro (raw searches) and per data
model (tstats); the WMI analytics one by one; the top reasons a detection is partial or failed;
the round trip of every exact import through our own Splunk output (raw output for raw
searches, tstats for tstats ones) and the import time. `coverage()` is what the tests assert.
"""

from __future__ import annotations

import collections
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sigma_wmi.api import compile_rule
from sigma_wmi.backends.splunk_data import cim_dataset
from sigma_wmi.errors import Level, SigmaWmiError
from sigma_wmi.model import Rule
from sigma_wmi.readers import ReadOptions, read_file
from sigma_wmi.readers.escu import is_partial, read_escu
from sigma_wmi.readers.yamlsource import load_documents

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "escu"
_LEADING_MACRO = re.compile(r"^\s*\(?\s*`([\w\-.:]+)")
_DATAMODEL = re.compile(r"datamodel\s*=\s*\"?(\w+(?:\.\w+)?)")
# What makes an analytic a WMI one: its name or search names WMI, its event ids are Sysmon's
# WMI events or WMI-Activity's permanent subscription, or it is about scrcons / WmiPrvSE.
_WMI = re.compile(r"wmi|scrcons|wmiprvse|EventCode\s*=\s*(?:19|20|21|5861)\b|EventCode\s+IN\s*\(\s*19", re.I)


_WMI_NAME = re.compile(r"wmi|scrcons|wmiprvse", re.I)
_WMI_EVENTS = re.compile(r"`wmi`|`sysmon`\s+Event(?:Code|ID)\s*(?:=\s*(?:19|20|21)\b|IN\s*\(\s*(?:19|20|21)\b)", re.I)


@dataclass
class Analytic:
    path: Path
    name: str
    search: str
    kind: str  # "raw" or "tstats" (or "other" for a search starting with another command)
    group: str  # the leading macro (raw) or the data model (tstats)
    status: str = "failed"  # ok, partial, failed
    reason: str = ""
    rule: Rule | None = None
    round_trip: bool | None = None  # exact imports only

    @property
    def wmi(self) -> bool:
        """Names WMI anywhere (a `wmic.exe` in a process list included)."""
        return bool(_WMI.search(self.name) or _WMI.search(self.search))

    @property
    def about_wmi(self) -> bool:
        """Is about WMI: named for it, or reads WMI's own events (Sysmon 19/20/21, WMI-Activity)."""
        return bool(_WMI_NAME.search(self.name) or _WMI_EVENTS.search(self.search))


@dataclass
class Coverage:
    analytics: list[Analytic] = field(default_factory=list)
    elapsed: float = 0.0

    def of(self, kind: str | None = None) -> list[Analytic]:
        return [a for a in self.analytics if kind is None or a.kind == kind]

    @staticmethod
    def rate(items: list[Analytic], *statuses: str) -> float:
        return sum(a.status in statuses for a in items) / len(items) if items else 0.0


def reason(message: str) -> str:
    """A failure message without its specifics, for counting (stage text, names, columns)."""
    found = re.match(r"stage `\| (\S+).*?` not imported: (.*)", message)
    if found:
        return f"| {found.group(1).strip('`[')}: {re.sub(r'`[^`]*`|.field .*', '...', found.group(2))}"
    return re.sub(r"'[^']*'|`[^`]*`|column \d+|\([^)]*\)", "...", message)


def classify(path: Path) -> Analytic:
    docs = load_documents(path.read_text(encoding="utf-8"), str(path))
    doc = docs[0] if docs else {}
    search = str(doc.get("search", "")) if isinstance(doc, dict) else ""
    name = str(doc.get("name", path.stem)) if isinstance(doc, dict) else path.stem
    if search.lstrip().startswith("|"):
        model = _DATAMODEL.search(search)
        command = search.lstrip("| \n").split(None, 1)[0] if search.strip("| \n") else ""
        if command == "tstats" and model:
            dataset = cim_dataset(model.group(1))
            return Analytic(path, name, search, "tstats", dataset)
        return Analytic(path, name, search, "other", f"| {command}")
    macro = _LEADING_MACRO.match(search)
    return Analytic(path, name, search, "raw", macro.group(1) if macro else "(no macro)")


def coverage(root: Path, round_trip: bool = True) -> Coverage:
    """Import every endpoint detection under `root` (an ESCU checkout) and check round trips."""
    result = Coverage([classify(p) for p in sorted((root / "detections" / "endpoint").rglob("*.yml"))])
    options = ReadOptions(root / "macros")
    started = time.perf_counter()
    for analytic in result.analytics:
        try:
            analytic.rule = read_file(analytic.path, options)[0]
        except SigmaWmiError as err:
            analytic.reason = f"failed {err.code}: {reason(err.message)}"
            continue
        if is_partial(analytic.rule):
            analytic.status = "partial"
            first = next(d for d in analytic.rule.diagnostics if d.level is Level.WARNING)
            analytic.reason = "partial " + reason(first.message)
        else:
            analytic.status = "ok"
    result.elapsed = time.perf_counter() - started
    if round_trip:
        for analytic in result.analytics:
            if analytic.status == "ok" and analytic.rule is not None:
                analytic.round_trip = reads_back(analytic.rule)
    return result


def reads_back(rule: Rule) -> bool:
    """Does our own Splunk output of an imported analytic read back to an equal model?"""
    spl = rule.extras.get("spl", {})
    try:
        text = compile_rule(rule, "splunk", "tstats" if spl.get("datamodel") else "raw").text
        again = read_escu({"name": rule.title, "search": text}, "", "<splunk>")
    except SigmaWmiError:
        return False
    return (again.detection, again.aggregation, again.logsource) == (rule.detection, rule.aggregation, rule.logsource)


def _table(title: str, groups: dict[str, list[Analytic]], minimum: int = 1) -> Iterable[str]:
    yield f"{title:<46} {'count':>5} {'ok':>5} {'part':>5} {'fail':>5} {'exact':>7}"
    shown = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    rest: list[Analytic] = []
    for name, items in shown:
        if len(items) < minimum:
            rest.extend(items)
            continue
        yield _row(name, items)
    if rest:
        yield _row(f"(others, {len({a.group for a in rest})} groups of < {minimum})", rest)


def _row(name: str, items: list[Analytic]) -> str:
    count = collections.Counter(a.status for a in items)
    return (f"  {name[:44]:<44} {len(items):5d} {count['ok']:5d} {count['partial']:5d} {count['failed']:5d} "
            f"{count['ok'] / len(items):7.1%}")


def report(result: Coverage, root: Path) -> Iterable[str]:
    everything = result.of()
    yield f"ESCU endpoint detections: {len(everything)}  ({root / 'detections' / 'endpoint'})"
    for label, items in (("all", everything), ("tstats", result.of("tstats")), ("raw search", result.of("raw")),
                         ("other command", result.of("other"))):
        if not items:
            continue
        count = collections.Counter(a.status for a in items)
        yield (f"  {label:<14} {len(items):5d}   import {Coverage.rate(items, 'ok', 'partial'):6.1%}   "
               f"exact {count['ok']:4d} {Coverage.rate(items, 'ok'):6.1%}   partial {count['partial']:4d}   "
               f"failed {count['failed']:4d}")
    checked = [a for a in everything if a.round_trip is not None]
    equal = sum(bool(a.round_trip) for a in checked)
    yield f"  round trip through our Splunk output (exact imports): {equal}/{len(checked)} equal"
    yield f"  import time: {result.elapsed:.2f} s ({result.elapsed / len(everything) * 1000:.2f} ms per detection)"
    yield ""
    by_macro: dict[str, list[Analytic]] = collections.defaultdict(list)
    for a in result.of("raw"):
        by_macro[a.group].append(a)
    yield from _table("raw searches by leading data-source macro", by_macro, minimum=2)
    yield ""
    by_model: dict[str, list[Analytic]] = collections.defaultdict(list)
    for a in result.of("tstats"):
        by_model[a.group].append(a)
    yield from _table("tstats searches by data model", by_model)
    yield ""
    wmi = [a for a in everything if a.wmi]
    about = [a for a in wmi if a.about_wmi]
    yield (f"WMI analytics: {len(wmi)} name WMI anywhere, exact {sum(a.status == 'ok' for a in wmi)}; "
           f"{len(about)} are about WMI (named for it or reading WMI events), exact "
           f"{sum(a.status == 'ok' for a in about)}  (* = about WMI)")
    for a in wmi:
        trip = {True: "round trip equal", False: "ROUND TRIP DIFFERS", None: ""}[a.round_trip]
        yield f"  {'*' if a.about_wmi else ' '} {a.status:<8} {a.kind:<6} {a.path.stem[:70]:<70} {trip} {a.reason}"
    yield ""
    reasons = collections.Counter(a.reason for a in everything if a.reason)
    yield "top reasons:"
    for text, n in reasons.most_common(20):
        yield f"  {n:4d}  {text[:150]}"
    differs = [a for a in checked if not a.round_trip]
    if differs:
        yield "round trip differs:"
        for a in differs[:20]:
            yield f"  {a.path.stem}"


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else DEFAULT
    for line in report(coverage(root), root):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
