"""`python -m sigma_wmi.generate.conf_spec SPEC TEMPLATE`: the savedsearches.conf keys a
stanza may hold, as `data/savedsearches_keys.json`.

SPEC is Splunk's `savedsearches.conf.spec` (`$SPLUNK_HOME/etc/system/README/`): every
`key = <value>` line at the start of a line is a setting, `<name>` parts are patterns.
TEMPLATE is contentctl's `output/templates/savedsearches_detections.j2`, the stanza Splunk's
security_content tooling writes for an analytic: its `action.*` keys are the Enterprise
Security alert actions (correlationsearch, risk, notable) that ES's own spec files define and
the core spec only allows as `action.<action_name>.<parameter>`.
Neither file ships in `../shared`; the tests check our savedsearches output against this list.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from sigma_wmi.generate import DATA

_SETTING = re.compile(r"^([A-Za-z_<][^\s=]*)\s*=", re.M)
_TEMPLATE_SETTING = re.compile(r"^([a-z_][\w.]*) = ", re.M)
_DEPRECATED_HEADER = "# Deprecated settings"


def spec_keys(text: str) -> tuple[list[str], list[str]]:
    """The setting keys of a .conf.spec, and which of them the spec lists as deprecated."""
    head, _, tail = text.partition(_DEPRECATED_HEADER)
    keys = list(dict.fromkeys(_SETTING.findall(head)))
    deprecated = list(dict.fromkeys(_SETTING.findall(tail)))
    deprecated += [k for k in ("schedule",) if k in keys]  # "DEPRECATED as of version 4.0" in its text
    return keys + [k for k in deprecated if k not in keys], deprecated


def template_keys(text: str) -> list[str]:
    """The `action.*` keys a contentctl savedsearches template writes."""
    return sorted({k for k in _TEMPLATE_SETTING.findall(text) if k.startswith("action.")})


def build(spec: Path, template: Path, out: Path = DATA / "savedsearches_keys.json") -> Path:
    spec_text = spec.read_text(encoding="utf-8")
    template_text = template.read_text(encoding="utf-8")
    version = re.search(r"Version\s+([\d.]+)", spec_text)
    keys, deprecated = spec_keys(spec_text)
    document = {
        "provenance": {
            "generated_by": "python -m sigma_wmi.generate.conf_spec SPEC TEMPLATE",
            "spec": f"Splunk Enterprise {version.group(1) if version else '?'} savedsearches.conf.spec",
            "spec_sha256": hashlib.sha256(spec_text.encode()).hexdigest(),
            **({"spec_note": note.group(1)} if (note := re.search(r"^# transcription: (.*)$", spec_text, re.M)) else {}),
            "template": "contentctl 5.6.2 contentctl/output/templates/savedsearches_detections.j2 (Apache-2.0)",
            "template_sha256": hashlib.sha256(template_text.encode()).hexdigest(),
        },
        "keys": keys,
        "deprecated": deprecated,
        "es_action_keys": template_keys(template_text),
    }
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.split("\n", 1)[0], file=sys.stderr)
        sys.exit(2)
    print(build(Path(sys.argv[1]), Path(sys.argv[2])))
