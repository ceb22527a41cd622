// sigma-wmi documentation site: copy buttons and the colour theme (every page).
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
  // <span class="ctl" data-char="N"> pictures (see sigma_wmi/docs/text.py code_markup).
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

  // ---- colour theme: auto (the system's), dark or light; remembered per browser ----
  var THEMES = ["auto", "dark", "light"];
  var toggle = document.getElementById("theme-toggle");
  function storedTheme() {
    try { return window.localStorage.getItem("sigma-wmi-theme") || "auto"; } catch (e) { return "auto"; }
  }
  function applyTheme(theme) {
    if (theme === "auto") { delete document.documentElement.dataset.theme; }
    else { document.documentElement.dataset.theme = theme; }
    if (toggle) {
      toggle.textContent = "Theme: " + theme;  // the visible text is the accessible name
    }
  }
  applyTheme(storedTheme());
  if (toggle) {
    toggle.addEventListener("click", function () {
      var next = THEMES[(THEMES.indexOf(storedTheme()) + 1) % THEMES.length];
      try { window.localStorage.setItem("sigma-wmi-theme", next); } catch (e) { /* private mode: this page only */ }
      applyTheme(next);
    });
  }
})();
