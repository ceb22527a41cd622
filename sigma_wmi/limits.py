"""The resource model: every bound the readers and the evaluator keep, in one place.

A detection-as-code pipeline runs unattended on whatever a commit contains, so every
input that could multiply (YAML aliases, macros, modifiers, value lists) or nest has a
named bound here. A breach is a `SigmaWmiError` with the file, the line and the code
listed next to each limit (README, "Limits"). Real rules stay far below every bound:
each comment says how far.
"""

from __future__ import annotations

# ---- files ----
# Rule and macro files: real ones are a few KB; anything this large is a mistake. Code `file-too-large`.
MAX_FILE_BYTES = 2 * 1024 * 1024
# One line of a JSON-lines event file (one event); EVTX-exported events are a few KB. Code `bad-events`.
MAX_EVENT_LINE_BYTES = 1024 * 1024
# Nesting of one event's JSON; Windows events nest three or four levels. Code `bad-events`.
MAX_EVENT_DEPTH = 64

# ---- YAML ----
# Anchors/aliases per file; real rules use none or a handful. Code `yaml-aliases`.
MAX_ALIASES = 100
# Nodes of a document once every alias is expanded (what readers will walk); the largest
# Sigma rule (driver_load_win_vuln_drivers, 4432 values) has 4,475. Code `yaml-too-large`.
MAX_YAML_NODES = 50_000
# Characters of scalar text once every alias is expanded. Code `yaml-too-large`.
MAX_YAML_CHARS = 8 * 1024 * 1024
# Nesting of collections in one document; rules nest five or six levels. Code `yaml-depth`.
MAX_YAML_DEPTH = 64
# Magnitude of a YAML integer: beyond 64 bits no target can compare it. Code `yaml-value`.
MAX_INT_BITS = 63

# ---- detections ----
# Values one detection item (`field|modifiers: values`) may stand for after its modifiers
# (`windash` gives 5 per dash, `base64offset` 3); SigmaHQ's largest lists have a few hundred.
# Code `too-many-values`.
MAX_VALUES_PER_ITEM = 10_000
# Values in a whole rule after every modifier and expansion. Code `too-many-values`.
MAX_VALUES_PER_RULE = 20_000

# ---- SPL ----
# Characters of one ESCU search after macro expansion; the longest ESCU search has 5842.
# Code `search-too-large`.
MAX_SEARCH_CHARS = 64 * 1024
# Parentheses nested in one SPL expression; ESCU searches nest three or four. Code `too-deep`.
MAX_SPL_DEPTH = 32

# ---- ESCU macros ----
# Nesting of macro definitions; they nest two or three deep in practice. Code `macro-depth`.
MAX_MACRO_DEPTH = 20
# Characters all macro expansions of one search may produce; ESCU searches expand to a few KB.
# Code `macro-too-large`.
MAX_MACRO_EXPANSION_CHARS = 256 * 1024
