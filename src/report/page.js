// credwatch report: filtering, sorting and paging of the incident cards,
// and the cards beyond the first ones written into the page, built from the
// data block #more-cards (see src/report/more.rs) as they are shown.
// The page reads without it: the summary, timeline, map and the first
// cards are HTML.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var box = document.getElementById("cards");
  if (!form || !box) return;
  var SVG = "http://www.w3.org/2000/svg";
  var PAGE = 50, page = 0, shown = [];
  var RANK = { low: 0, medium: 1, high: 2, critical: 3 };
  var pagers = Array.prototype.slice.call(document.querySelectorAll(".pager"));

  // Every incident, in time order: the written cards, then the data.
  var all = Array.prototype.slice.call(box.querySelectorAll("article.card")).map(function (el) {
    return { el: el, d: el.dataset.d, s: el.dataset.s, a: el.dataset.a,
             account: el.querySelector(".acct").textContent.toLowerCase() };
  });
  var more = document.getElementById("more-cards");
  if (more) {
    JSON.parse(more.textContent).forEach(function (x) {
      all.push({ el: null, x: x, d: x[4], s: x[2], a: x[3], account: x[1].toLowerCase() });
    });
  }
  all.forEach(function (c, i) { c.at = i; });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  // A card from its data (the same elements as a written card).
  function build(x) {
    var acts = " " + x[3] + " ";
    var art = el("article", "card" + (acts.indexOf(" lock ") >= 0 ? " locked" : ""));
    art.id = x[0];
    var det = el("details");
    var sum = el("summary");
    if (acts.indexOf(" lock ") >= 0) sum.appendChild(el("b", "badge lock", "Locked"));
    else sum.appendChild(el("b", "badge alert", "Alert"));
    if (acts.indexOf(" dry-run ") >= 0) sum.appendChild(el("b", "badge dry", "Dry run: would lock"));
    if (acts.indexOf(" unlock ") >= 0) sum.appendChild(el("b", "badge unlock", "Unlocked"));
    sum.appendChild(el("b", "acct", x[1]));
    sum.appendChild(el("i", "sev " + x[2], x[2]));
    var dets = x[4].trim().split(" ");
    dets.forEach(function (d) { sum.appendChild(el("code", null, d)); });
    sum.appendChild(el("time", null, x[5]));
    det.appendChild(sum);
    var body = el("div", "body"), text = el("div");
    text.appendChild(el("h4", null, "What happened"));
    var ol = el("ol", "story");
    x[6].forEach(function (f) {
      var li = el("li");
      li.appendChild(el("time", null, f[0]));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("code", null, f[1]));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("b", null, f[2]));
      li.appendChild(document.createTextNode(f[3] + ": " + f[4]));
      ol.appendChild(li);
    });
    text.appendChild(ol);
    if (x[7].length || x[8].length) {
      text.appendChild(el("h4", null, "Messages sent"));
      if (x[7].length)
        text.appendChild(el("p", null, "Sent as " + x[7].length + " address(es) it does not own: " + x[7].join(", ") + "."));
      if (x[8].length) {
        var t = el("table"), head = el("tr");
        ["When", "From (header)", "Envelope sender", "Recipients", "Sent from"].forEach(function (h, i) {
          head.appendChild(el("th", i === 3 ? "n" : null, h));
        });
        t.appendChild(head);
        x[8].forEach(function (m) {
          var tr = el("tr");
          m.forEach(function (v, i) { tr.appendChild(el("td", i === 3 ? "n" : null, v)); });
          t.appendChild(tr);
        });
        text.appendChild(t);
      }
    }
    if (x[9]) {
      text.appendChild(el("h4", null, "Bounces"));
      text.appendChild(el("p", null, "Up to " + x[9] + " bounce(s) came back in an hour."));
    }
    if (x[10]) {
      text.appendChild(el("h4", null, "Sources"));
      text.appendChild(el("p", null, x[10]));
    }
    text.appendChild(el("h4", null, "For the customer"));
    var cust = el("p", "customer", x[11] + "What this means:");
    dets.forEach(function (d) {
      cust.appendChild(document.createTextNode(" "));
      var a = el("a", null, d);
      a.href = "#means-" + d;
      cust.appendChild(a);
    });
    cust.appendChild(document.createTextNode("."));
    text.appendChild(cust);
    body.appendChild(text);
    if (x[12]) {
      var m = x[12], fig = el("figure");
      var s = svg("svg", { "class": "mini", viewBox: m[0].join(" "), role: "img",
                           "aria-label": "Map of the places listed below it" });
      s.appendChild(svg("use", { href: "#land", "class": "land" }));
      m[2].forEach(function (d) { s.appendChild(svg("path", { "class": "journey", d: d })); });
      m[3].forEach(function (p) { s.appendChild(svg("circle", { "class": p[2], cx: p[0], cy: p[1], r: m[1] })); });
      fig.appendChild(s);
      var cap = el("figcaption"), ul = el("ul");
      m[4].forEach(function (c) { ul.appendChild(el("li", null, c)); });
      cap.appendChild(ul);
      fig.appendChild(cap);
      body.appendChild(fig);
    }
    det.appendChild(body);
    art.appendChild(det);
    return art;
  }
  function node(c) {
    if (!c.el) c.el = build(c.x);
    return c.el;
  }

  function val(name) { return form.elements[name].value; }
  function matches(c) {
    var d = val("detector"), s = val("severity"), a = val("action");
    var q = val("q").trim().toLowerCase();
    if (d && c.d.indexOf(" " + d + " ") < 0) return false;
    if (s && c.s !== s) return false;
    if (a && (" " + c.a + " ").indexOf(" " + a + " ") < 0) return false;
    if (q && c.account.indexOf(q) < 0) return false;
    return true;
  }
  function compare(by) {
    return function (x, y) {
      if (by === "severity") {
        var r = RANK[y.s] - RANK[x.s];
        if (r) return r;
      } else if (by === "account") {
        if (x.account !== y.account) return x.account < y.account ? -1 : 1;
      } else if (by === "newest") {
        return y.at - x.at;
      }
      return x.at - y.at;
    };
  }
  // Only the page's cards are in the document.
  function show(list) {
    var frag = document.createDocumentFragment();
    list.forEach(function (c) { frag.appendChild(node(c)); });
    box.textContent = "";
    box.appendChild(frag);
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var from = page * PAGE, to = Math.min(shown.length, from + PAGE);
    show(shown.slice(from, to));
    var text = shown.length
      ? "Showing " + (from + 1) + "\u2013" + to + " of " + shown.length + " incident(s)"
      : "No incident matches these filters";
    if (shown.length !== all.length) text += " (" + all.length + " in all)";
    pagers.forEach(function (p) {
      p.querySelector(".status").textContent = text;
      p.querySelector(".prev").disabled = page === 0;
      p.querySelector(".next").disabled = page >= pages - 1;
    });
  }
  function apply() {
    shown = all.filter(matches);
    shown.sort(compare(val("sort")));
    draw();
  }
  function reveal() {
    // A link to a card (#cw_...) on another page turns to that page.
    var id = decodeURIComponent(location.hash.slice(1));
    var at = -1;
    for (var i = 0; i < shown.length; i++) {
      var c = shown[i];
      if ((c.el && c.el.id === id) || (c.x && c.x[0] === id)) at = i;
    }
    if (at < 0) return;
    page = Math.floor(at / PAGE);
    draw();
    var d = node(shown[at]).querySelector("details");
    if (d) d.open = true;
    node(shown[at]).scrollIntoView();
  }
  form.hidden = false;
  pagers.forEach(function (p) { p.hidden = false; });
  form.addEventListener("input", function () { page = 0; apply(); });
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  pagers.forEach(function (p) {
    p.querySelector(".prev").addEventListener("click", function () { page--; draw(); });
    p.querySelector(".next").addEventListener("click", function () { page++; draw(); });
  });
  window.addEventListener("hashchange", reveal);
  // Printing shows every card the filters keep, opened.
  window.addEventListener("beforeprint", function () {
    show(shown);
    shown.forEach(function (c) {
      var d = node(c).querySelector("details");
      if (d && !d.open) { d.open = true; d.dataset.printed = "1"; }
    });
  });
  window.addEventListener("afterprint", function () {
    shown.forEach(function (c) {
      var d = c.el && c.el.querySelector("details[data-printed]");
      if (d) { d.open = false; delete d.dataset.printed; }
    });
    draw();
  });
  apply();
  reveal();
  document.documentElement.setAttribute("data-ready", String(all.length));
})();
