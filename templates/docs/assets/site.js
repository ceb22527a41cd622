// sigma-wmi documentation site: copy buttons and client-side search.
// Plain DOM, no libraries, no network: works from file:// and any web server.
(function () {
  "use strict";

  // ---- copy buttons: copy the exact text of the element named by data-copy ----
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Fallback for contexts without the async clipboard API.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  // The exact text of a code element: characters HTML cannot carry are written as
  // <span class="ctl" data-char="N"> pictures (see docs.py code_markup).
  function exactText(node) {
    var out = "";
    node.childNodes.forEach(function (child) {
      if (child.nodeType === Node.TEXT_NODE) {
        out += child.nodeValue;
      } else if (child.classList && child.classList.contains("ctl")) {
        out += String.fromCharCode(parseInt(child.getAttribute("data-char"), 10));
      } else {
        out += exactText(child);
      }
    });
    return out;
  }

  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) { return; }
      copyText(exactText(source)).then(function () {
        button.textContent = "Copied";
        button.setAttribute("data-copied", "true");
      }, function () {
        button.textContent = "Select and copy";
      });
    });
  });

  // ---- search (index page only: the index script defines SIGMA_WMI_INDEX) ----
  var box = document.getElementById("search-box");
  var index = window.SIGMA_WMI_INDEX;
  if (!box || !index) { return; }
  var fields = index.fields;
  var col = {};
  fields.forEach(function (name, i) { col[name] = i; });
  var haystacks = index.rows.map(function (row) {
    return [row[col.title], row[col.id], row[col.techniques], row[col.tactics], row[col.logsource], row[col.file]]
      .join(" ").toLowerCase();
  });
  var results = document.getElementById("search-results");
  var count = document.getElementById("search-count");
  var LIMIT = 100;

  function search(query) {
    var terms = query.toLowerCase().split(/\s+/).filter(function (t) { return t.length > 0; });
    while (results.firstChild) { results.removeChild(results.firstChild); }
    if (terms.length === 0) { count.textContent = ""; return; }
    var found = 0;
    for (var i = 0; i < haystacks.length; i++) {
      var hay = haystacks[i];
      if (!terms.every(function (t) { return hay.indexOf(t) !== -1; })) { continue; }
      found++;
      if (found > LIMIT) { continue; }
      var row = index.rows[i];
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.href = "rules/" + row[col.slug] + ".html";
      link.textContent = row[col.title];
      item.appendChild(link);
      var meta = document.createElement("span");
      meta.className = "note";
      meta.textContent = " " + [row[col.id], row[col.techniques], row[col.level]].filter(Boolean).join(" · ");
      item.appendChild(meta);
      results.appendChild(item);
    }
    count.textContent = found + (found === 1 ? " rule" : " rules") + (found > LIMIT ? " (first " + LIMIT + " shown)" : "");
  }

  box.addEventListener("input", function () { search(box.value); });
  var initial = new URLSearchParams(window.location.search).get("q");
  if (initial) { box.value = initial; }
  search(box.value);
})();
