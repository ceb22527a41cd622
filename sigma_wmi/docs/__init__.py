"""Documentation: the static site (`site.py`) and what it shares with the ATC cards
backend (`markdown.py` escapers, `data_needed.py`, `queries.py` per-target compilation).

Not a target: `sigma-wmi docs` builds a folder of pages, `backends/atc.py` imports the
shared helpers from here.
"""
