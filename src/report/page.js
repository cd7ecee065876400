// credwatch report: filtering, sorting and paging of the incident cards.
// The page reads without it: every card is in the HTML.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var box = document.getElementById("cards");
  if (!form || !box) return;
  var cards = Array.prototype.slice.call(box.querySelectorAll("article.card"));
  var pagers = Array.prototype.slice.call(document.querySelectorAll(".pager"));
  var PAGE = 50, page = 0, shown = [];
  var RANK = { low: 0, medium: 1, high: 2, critical: 3 };
  form.hidden = false;
  pagers.forEach(function (p) { p.hidden = false; });

  function val(name) { return form.elements[name].value; }
  function matches(c) {
    var d = val("detector"), s = val("severity"), a = val("action");
    var q = val("q").trim().toLowerCase();
    if (d && c.dataset.detectors.indexOf(" " + d + " ") < 0) return false;
    if (s && c.dataset.severity !== s) return false;
    if (a && (" " + c.dataset.action + " ").indexOf(" " + a + " ") < 0) return false;
    if (q && c.dataset.account.indexOf(q) < 0) return false;
    return true;
  }
  function compare(by) {
    return function (x, y) {
      if (by === "severity") {
        var r = RANK[y.dataset.severity] - RANK[x.dataset.severity];
        if (r) return r;
      } else if (by === "account") {
        if (x.dataset.account !== y.dataset.account)
          return x.dataset.account < y.dataset.account ? -1 : 1;
      } else if (by === "newest") {
        return Number(y.dataset.ts) - Number(x.dataset.ts);
      }
      return Number(x.dataset.ts) - Number(y.dataset.ts);
    };
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var from = page * PAGE, to = Math.min(shown.length, from + PAGE);
    cards.forEach(function (c) { c.hidden = true; });
    for (var i = from; i < to; i++) shown[i].hidden = false;
    var text = shown.length
      ? "Showing " + (from + 1) + "\u2013" + to + " of " + shown.length + " incident(s)"
      : "No incident matches these filters";
    if (shown.length !== cards.length) text += " (" + cards.length + " in all)";
    pagers.forEach(function (p) {
      p.querySelector(".status").textContent = text;
      p.querySelector(".prev").disabled = page === 0;
      p.querySelector(".next").disabled = page >= pages - 1;
    });
  }
  function apply() {
    shown = cards.filter(matches);
    shown.sort(compare(val("sort")));
    var frag = document.createDocumentFragment();
    shown.forEach(function (c) { frag.appendChild(c); });
    var kept = new Set(shown);
    cards.forEach(function (c) { if (!kept.has(c)) frag.appendChild(c); });
    box.appendChild(frag);
    draw();
  }
  function reveal() {
    // A link to a card (#cw_...) on another page turns to that page.
    var id = decodeURIComponent(location.hash.slice(1));
    var at = -1;
    for (var i = 0; i < shown.length; i++) if (shown[i].id === id) at = i;
    if (at < 0) return;
    page = Math.floor(at / PAGE);
    draw();
    var d = shown[at].querySelector("details");
    if (d) d.open = true;
    shown[at].scrollIntoView();
  }
  form.addEventListener("input", function () { page = 0; apply(); });
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  pagers.forEach(function (p) {
    p.querySelector(".prev").addEventListener("click", function () { page--; draw(); });
    p.querySelector(".next").addEventListener("click", function () { page++; draw(); });
  });
  window.addEventListener("hashchange", reveal);
  // Printing shows every card the filters keep, opened.
  var opened = [];
  window.addEventListener("beforeprint", function () {
    shown.forEach(function (c) {
      c.hidden = false;
      var d = c.querySelector("details");
      if (d && !d.open) { d.open = true; opened.push(d); }
    });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
    draw();
  });
  apply();
  reveal();
  document.documentElement.setAttribute("data-ready", String(cards.length));
})();
