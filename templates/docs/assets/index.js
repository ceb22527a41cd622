// sigma-wmi documentation site, index page: full-text search (MiniSearch, vendored in
// assets/vendor/minisearch), facets with counts, sorting; the state lives in the URL hash
// (#q=...&level=high&technique=T1059&sort=level) so every view can be linked and bookmarked.
(function () {
  "use strict";

  var data = window.SIGMA_WMI_INDEX;
  var tbody = document.querySelector("#rule-list tbody");
  if (!data || !tbody || !window.MiniSearch) { return; }

  var col = {};
  data.fields.forEach(function (name, i) { col[name] = i; });
  var facetKeys = data.facets.map(function (f) { return f[0]; });
  var rows = data.rows;
  var trs = [];
  Array.prototype.forEach.call(tbody.rows, function (tr) { trs[parseInt(tr.getAttribute("data-i"), 10)] = tr; });
  var box = document.getElementById("search-box");
  var sortSelect = document.getElementById("sort");
  var countLine = document.getElementById("search-count");
  var LEVELS = ["critical", "high", "medium", "low", "informational"];

  // Words are runs of letters and digits, as the build wrote them (search_index.py).
  function tokenize(text) { return text.split(/[^\p{L}\p{N}]+/u).filter(function (t) { return t.length > 0; }); }

  // The index is built in chunks right after the page loads (the page stays responsive);
  // a search typed before it is complete waits for it.
  var engine = null;
  var engineReady = null;
  function searchEngine() {
    if (engineReady) { return engineReady; }
    var fields = ["title"].concat(data.text_fields);
    engine = new window.MiniSearch({
      fields: fields,
      tokenize: tokenize,
      processTerm: function (term) { return term.toLowerCase(); },
      searchOptions: { prefix: true, combineWith: "AND", boost: { title: 3, names: 2 } }
    });
    var docs = rows.map(function (row, i) {
      var doc = { id: i, title: row[col.title] };
      data.text_fields.forEach(function (name, j) { doc[name] = data.text[i][j]; });
      return doc;
    });
    engineReady = engine.addAllAsync(docs, { chunkSize: 250 }).then(function () { return engine; });
    return engineReady;
  }

  // ---- state <-> URL ----
  var state = { q: "", sort: "title", filters: {} };

  function readState() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    var query = new URLSearchParams(window.location.search).get("q");
    state.q = params.get("q") || (params.has("q") ? "" : (query || ""));
    state.sort = params.get("sort") || "title";
    state.filters = {};
    facetKeys.forEach(function (key) {
      var values = params.getAll(key);
      if (values.length) { state.filters[key] = new Set(values); }
    });
  }

  function writeState() {
    var params = new URLSearchParams();
    if (state.q) { params.set("q", state.q); }
    facetKeys.forEach(function (key) {
      if (state.filters[key]) { state.filters[key].forEach(function (v) { params.append(key, v); }); }
    });
    if (state.sort !== "title") { params.set("sort", state.sort); }
    var hash = params.toString();
    // The header form's ?q= only seeds the first view; from then on the hash holds the state.
    var url = window.location.pathname + (hash ? "#" + hash : "");
    if (url !== window.location.pathname + window.location.search + window.location.hash) {
      window.history.replaceState(null, "", url);
    }
  }

  function showState() {
    box.value = state.q;
    sortSelect.value = state.sort;
    document.querySelectorAll("#facets input[type=checkbox]").forEach(function (input) {
      var chosen = state.filters[input.name];
      input.checked = !!(chosen && chosen.has(input.value));
    });
  }

  // ---- filtering and counting ----
  function passes(i, key) {
    var chosen = state.filters[key];
    if (!chosen) { return true; }
    var values = rows[i][col[key]];
    for (var j = 0; j < values.length; j++) { if (chosen.has(values[j])) { return true; } }
    return false;
  }

  var generation = 0;
  function apply() {
    var q = state.q.trim();
    var mine = ++generation;
    if (!q) { show(null); return; }
    searchEngine().then(function (ready) {
      if (mine !== generation) { return; } // a newer query or filter has been applied meanwhile
      show(new Set(ready.search(q).map(function (r) { return r.id; })));
    });
  }

  function show(hits) {
    var q = state.q.trim();
    var counts = {};
    facetKeys.forEach(function (key) { counts[key] = {}; });
    var visible = [];
    for (var i = 0; i < rows.length; i++) {
      if (hits && !hits.has(i)) { trs[i].hidden = true; continue; }
      var failing = [];
      for (var k = 0; k < facetKeys.length; k++) {
        if (!passes(i, facetKeys[k])) { failing.push(facetKeys[k]); if (failing.length > 1) { break; } }
      }
      // A facet's counts: rules that pass the search and every *other* facet.
      facetKeys.forEach(function (key) {
        if (failing.length === 0 || (failing.length === 1 && failing[0] === key)) {
          rows[i][col[key]].forEach(function (v) { counts[key][v] = (counts[key][v] || 0) + 1; });
        }
      });
      trs[i].hidden = failing.length > 0;
      if (failing.length === 0) { visible.push(i); }
    }
    document.querySelectorAll("#facets input[type=checkbox]").forEach(function (input) {
      var n = counts[input.name][input.value] || 0;
      var label = input.parentNode;
      label.querySelector(".count").textContent = String(n);
      label.classList.toggle("empty", n === 0 && !input.checked);
    });
    sortRows();
    countLine.textContent = visible.length + (visible.length === 1 ? " rule" : " rules") +
      (q || Object.keys(state.filters).length ? " of " + rows.length : "");
    countLine.setAttribute("data-count", String(visible.length));
    writeState();
  }

  function sortKey(i) {
    var row = rows[i];
    switch (state.sort) {
      case "level":
        var rank = LEVELS.indexOf(row[col.level][0]);
        return [rank < 0 ? LEVELS.length : rank];
      case "modified": return [row[col.modified] ? "1" : "0", row[col.modified]];
      case "status": return [row[col.status][0]];
      case "source": return [row[col.source][0]];
      default: return [];
    }
  }

  var sortedBy = "title";
  function sortRows() {
    if (state.sort === sortedBy) { return; }
    var order = rows.map(function (_, i) { return i; });
    var keys = order.map(sortKey);
    var descending = state.sort === "modified";
    order.sort(function (a, b) {
      var ka = keys[a], kb = keys[b];
      for (var j = 0; j < ka.length; j++) {
        if (ka[j] !== kb[j]) { return (ka[j] < kb[j] ? -1 : 1) * (descending ? -1 : 1); }
      }
      return a - b; // rows come sorted by title: ties keep that order
    });
    order.forEach(function (i) { tbody.appendChild(trs[i]); });
    sortedBy = state.sort;
  }

  // ---- events ----
  var timer = null;
  box.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () { state.q = box.value; apply(); }, rows.length > 500 ? 150 : 0);
  });
  sortSelect.addEventListener("change", function () { state.sort = sortSelect.value; apply(); });
  document.getElementById("facets").addEventListener("change", function (event) {
    var input = event.target;
    if (!input || input.type !== "checkbox") { return; }
    var chosen = state.filters[input.name] || new Set();
    if (input.checked) { chosen.add(input.value); } else { chosen.delete(input.value); }
    if (chosen.size) { state.filters[input.name] = chosen; } else { delete state.filters[input.name]; }
    apply();
  });
  document.getElementById("clear-filters").addEventListener("click", function () {
    state.filters = {};
    state.q = "";
    showState();
    apply();
  });
  window.addEventListener("hashchange", function () { readState(); showState(); apply(); });

  readState();
  showState();
  apply();
  searchEngine().then(function () { document.documentElement.setAttribute("data-index-ready", "true"); });
})();
