"""Documentation: the static site and what it shares with the ATC cards backend.

- `site.py` builds the site (rule pages rendered by worker processes, index, heatmap, layer);
- `pretty.py` pretty-prints and highlights each query language, `text.py` prose and code for HTML;
- `search_index.py` the index page's facet rows and search words, `heatmap.py` ATT&CK coverage;
- `markdown.py` (escapers), `data_needed.py` and `queries.py` (ATT&CK facts, per-target
  compilation) are shared with `backends/atc.py`.

Not a target: `sigma-wmi docs` builds a folder of pages; `backends/` holds only targets.
"""
