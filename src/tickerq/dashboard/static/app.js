/* tickerq dashboard: live updates, charts and small helpers. No inline script anywhere
   (the page's CSP forbids it); htmx does the requests and swaps. */
(function () {
  "use strict";

  var body = document.body;
  var charts = new Map();
  var pending = new Set();

  function flash(text) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text; // textContent: server text is never parsed as HTML
    box.classList.remove("hidden");
    clearTimeout(flash.timer);
    flash.timer = setTimeout(function () { box.classList.add("hidden"); }, 8000);
  }

  // -- live updates -----------------------------------------------------------------

  function busy(el) {
    // rows selected, or something being typed or chosen in it (a checkbox that only
    // has the focus is not: its state is what counts)
    if (el.querySelector("input[type=checkbox]:checked")) return true;
    var active = document.activeElement;
    if (!active || !el.contains(active)) return false;
    if (active.tagName === "INPUT") return !/^(checkbox|radio|button|submit)$/i.test(active.type);
    return /TEXTAREA|SELECT/.test(active.tagName);
  }

  // While this page's own change (POST/PUT/DELETE) is on its way, and while the
  // page it sends the browser to (HX-Location) loads, live refreshes wait: the
  // change's own event would otherwise re-read the page being replaced (a deleted
  // ticker's page answers 404 once the delete is done). The end is read from the
  // request itself, not from htmx's afterRequest event: a live refresh may swap
  // out the form that sent the change while it is on its way, and the events of
  // an element no longer in the page never reach the document (the page would
  // then hold every later refresh back).
  var changing = 0;
  var holdUntil = 0;
  document.addEventListener("htmx:beforeRequest", function (event) {
    var verb = (event.detail.requestConfig && event.detail.requestConfig.verb) || "get";
    var xhr = event.detail.xhr;
    if (verb === "get" || !xhr) return;
    changing += 1;
    xhr.addEventListener("loadend", function () {
      changing = Math.max(0, changing - 1);
      if (xhr.status && xhr.getResponseHeader("HX-Location")) holdUntil = Date.now() + 3000;
    }, { once: true });
  });
  document.addEventListener("htmx:pushedIntoHistory", function () { holdUntil = 0; });

  function refresh(el) {
    if (!el.id || !window.htmx || el.dataset.gone) return;
    if (busy(el) || changing > 0 || Date.now() < holdUntil) { pending.add(el.id); return; }
    if (el.dataset.refreshing) { el.dataset.again = "1"; return; }
    el.dataset.refreshing = "1";
    pending.delete(el.id);
    window.htmx.ajax("GET", window.location.href, {
      source: el, target: "#" + el.id, select: "#" + el.id, swap: "outerHTML",
      headers: { "X-Tickerq-Refresh": "1" }
    }).finally(function () {
      // A change that came while this refresh was out may not be in what it read:
      // read again, into the part that is on the page now (the swap replaced el).
      var again = el.dataset.again;
      delete el.dataset.refreshing;
      delete el.dataset.again;
      var fresh = document.getElementById(el.id);
      if (again && fresh) refresh(fresh);
    });
  }

  // A refresh that was already on its way when the user started to select rows (or
  // to type) must not wipe that out: its answer is dropped and the part refreshed
  // later, once nothing is selected or focused there.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var config = event.detail.requestConfig;
    var target = event.detail.target;
    if (config && config.headers && config.headers["X-Tickerq-Refresh"] && target && target.id &&
        busy(target)) {
      event.detail.shouldSwap = false;
      pending.add(target.id);
    }
  });

  function onChange(topics) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var wanted = el.getAttribute("data-live").split(/\s+/);
      if (wanted.some(function (t) { return topics.indexOf(t) >= 0; })) refresh(el);
    });
    if (topics.indexOf("tickers") >= 0 || topics.indexOf("crons") >= 0) reloadCharts();
  }

  var liveState = null; // "on" or "off" once the event stream opened or failed

  function showLive() {
    // the dot is part of the page, so a boosted navigation replaces it: set it again
    var dot = document.getElementById("live-status");
    if (!dot || !liveState) return;
    dot.classList.toggle("live-on", liveState === "on");
    dot.classList.toggle("live-off", liveState === "off");
    dot.title = liveState === "on" ? "live updates on" : "live updates interrupted; reconnecting";
  }

  function connect() {
    var url = body.getAttribute("data-events");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    // A stream ends every few seconds on purpose ("bye") and the browser opens the
    // next at once: the dot goes off only if that takes long.
    var byeAt = 0;
    var offTimer = null;
    function off() { liveState = "off"; showLive(); }
    source.addEventListener("open", function () {
      clearTimeout(offTimer);
      liveState = "on";
      showLive();
    });
    source.addEventListener("bye", function () { byeAt = Date.now(); });
    source.addEventListener("error", function () {
      clearTimeout(offTimer);
      if (Date.now() - byeAt < 2000) offTimer = setTimeout(off, 4000); else off();
    });
    source.addEventListener("change", function (event) {
      try { onChange(JSON.parse(event.data).topics || []); } catch (e) { /* ignore */ }
    });
    // Each (re)connection says hello. The first comes to a page just read; a later one
    // follows a break in the stream, whose changes no event told: it says whether
    // anything changed since the last message this page got (the browser sends its
    // id); if so, read every live part again.
    var greeted = false;
    source.addEventListener("hello", function (event) {
      if (greeted) {
        try {
          var hello = JSON.parse(event.data);
          if (hello.missed !== false) onChange(hello.topics || []);
        } catch (e) { /* ignore */ }
      }
      greeted = true;
    });
  }

  setInterval(function () {
    pending.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) refresh(el); else pending.delete(id);
    });
  }, 3000);

  // -- charts -------------------------------------------------------------------------

  var COLORS = { ok: "#059669", failed: "#dc2626", other: "#71717a" };

  function chartSize(el) {
    return { width: Math.max(el.clientWidth, 300), height: 220 };
  }

  function displayZone() {
    // times on the charts are shown in the zone chosen for the page, like the tables
    var select = document.getElementById("tz-select");
    return (select && select.value) || "UTC";
  }

  function draw(el, opts, data) {
    var old = charts.get(el);
    if (old) { old.destroy(); }
    el.textContent = "";
    if (!window.uPlot) return;
    var size = chartSize(el);
    var zone = displayZone();
    opts.width = size.width; opts.height = size.height;
    opts.tzDate = function (ts) { return window.uPlot.tzDate(new Date(ts * 1e3), zone); };
    charts.set(el, new window.uPlot(opts, data, el));
  }

  function empty(el, text) {
    var old = charts.get(el);
    if (old) { old.destroy(); charts.delete(el); }
    el.textContent = "";
    var div = document.createElement("div");
    div.className = "chart-empty";
    div.textContent = text;
    el.appendChild(div);
  }

  function loadThroughput(el) {
    var hours = el.getAttribute("data-hours") || "24";
    return fetch(el.getAttribute("data-src") + "?hours=" + encodeURIComponent(hours), {
      credentials: "same-origin", headers: CHART_HEADERS
    }).then(chartData).then(function (d) {
      if (!d.t) { empty(el, d.error || "no data"); return; }
      draw(el, {
        series: [
          {},
          { label: "succeeded", stroke: COLORS.ok, fill: "rgba(5,150,105,0.12)", width: 2 },
          { label: "failed", stroke: COLORS.failed, fill: "rgba(220,38,38,0.10)", width: 2 },
          { label: "cancelled/skipped", stroke: COLORS.other, width: 1 }
        ],
        axes: [{}, { label: "ended per " + Math.round(d.bucket_seconds / 60) + " min" }],
        scales: { y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } }
      }, [d.t, d.succeeded, d.failed, d.other]);
    });
  }

  function loadOccurrences(el) {
    return fetch(el.getAttribute("data-src"), {
      credentials: "same-origin", headers: CHART_HEADERS
    }).then(chartData).then(function (d) {
      var items = (d.items || []).slice().reverse();
      if (!items.length) { empty(el, "no runs yet"); return; }
      var xs = [], ok = [], bad = [];
      items.forEach(function (o) {
        xs.push(Date.parse(o.execution_time) / 1000);
        var secs = o.elapsed_ms == null ? null : o.elapsed_ms / 1000;
        var success = o.status === "DONE" || o.status === "DUE_DONE";
        ok.push(success ? secs : null);
        bad.push(success ? null : (o.status === "FAILED" ? (secs == null ? 0 : secs) : null));
      });
      var dots = function () { return null; };
      draw(el, {
        series: [
          {},
          { label: "succeeded (s)", stroke: COLORS.ok, paths: dots, points: { show: true, size: 6, fill: COLORS.ok } },
          { label: "failed (s)", stroke: COLORS.failed, paths: dots, points: { show: true, size: 7, fill: COLORS.failed } }
        ],
        axes: [{}, { label: "run time (s)" }],
        scales: {
          // a few runs close together: show at least an hour, not milliseconds
          x: { time: true, range: function () {
            var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
            return hi - lo < 3600 ? [lo - 1800, hi + 1800] : [lo, hi];
          } },
          y: { range: function (u, min, max) { return [0, Math.max(max || 0, 0.001) * 1.1]; } }
        }
      }, [xs, ok, bad]);
    });
  }

  // Chart data is fetched as a live refresh: for something deleted meanwhile the
  // server answers 204 + X-Tickerq-Gone instead of an error.
  var CHART_HEADERS = { accept: "application/json", "X-Tickerq-Refresh": "1" };
  function chartData(r) {
    if (r.status === 204) return { error: "deleted", items: [] };
    return r.json();
  }

  function loadChart(el) {
    var kind = el.getAttribute("data-chart");
    var p = kind === "throughput" ? loadThroughput(el) : kind === "occurrences" ? loadOccurrences(el) : null;
    if (p) p.catch(function () { empty(el, "chart data unavailable"); });
  }

  var lastReload = 0;
  var reloadTimer = null;
  function reloadCharts() {
    var wait = 5000 - (Date.now() - lastReload);
    if (reloadTimer) return;
    reloadTimer = setTimeout(function () {
      reloadTimer = null;
      if (changing > 0 || Date.now() < holdUntil) { setTimeout(reloadCharts, 300); return; }
      lastReload = Date.now();
      document.querySelectorAll("[data-chart]").forEach(loadChart);
    }, Math.max(wait, 0));
  }

  window.addEventListener("resize", function () {
    charts.forEach(function (chart, el) {
      if (document.body.contains(el)) chart.setSize(chartSize(el));
      else { chart.destroy(); charts.delete(el); }
    });
  });

  // -- small helpers --------------------------------------------------------------------

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]")) {
      target.form.submit();
    }
    if (target.matches && target.matches("input[data-select-all]")) {
      var name = target.getAttribute("data-select-all");
      var form = target.form || document;
      form.querySelectorAll("input[type=checkbox][name='" + name + "']").forEach(function (box) {
        box.checked = target.checked;
      });
    }
    if (target.matches && target.matches("input[type=checkbox]") && target.form) {
      countSelected(target.form);
    }
  });

  function checkedIn(form) {
    return form.querySelectorAll("input[type=checkbox][name=ids]:checked").length;
  }

  function countSelected(form) {
    form.querySelectorAll("[data-selected-count]").forEach(function (label) {
      var n = checkedIn(form);
      label.textContent = n ? n + " selected" : "none selected";
    });
  }

  // Bulk buttons (select rows, then act): each asks its own question, with the
  // number of rows, and says so instead of posting when no row is selected. This
  // runs before htmx sees the submit (capture phase on the document).
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (!button || !button.hasAttribute || !button.hasAttribute("data-confirm")) return;
    var n = checkedIn(event.target);
    var refuse = button.hasAttribute("data-needs-selection") && n === 0;
    if (refuse) flash("Select at least one row first.");
    if (refuse || !window.confirm(button.getAttribute("data-confirm").replace("{n}", String(n)))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-chart-hours]");
    if (!button) return;
    var chart = document.querySelector("[data-chart=throughput]");
    if (!chart) return;
    chart.setAttribute("data-hours", button.getAttribute("data-chart-hours"));
    loadChart(chart);
  });

  function addBrowserZone(root) {
    var select = root.querySelector && root.querySelector("#tz-select");
    if (!select || !window.Intl) return;
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!zone || select.querySelector("option[value='" + zone + "']")) return;
    var option = document.createElement("option");
    option.value = zone;
    option.textContent = zone + " (this browser)";
    select.appendChild(option);
  }

  function markGone(source) {
    // what this page shows was deleted elsewhere: say so once, stop refreshing it
    source.dataset.gone = "1";
    source.classList.add("opacity-50");
    flash("This was deleted (in another page or process); what you see is its last state.");
  }
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    var source = event.detail.elt;
    if (xhr && xhr.getResponseHeader("X-Tickerq-Gone") && source && source.dataset) {
      markGone(source);
    }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var source = event.detail.elt;
    if (xhr && xhr.status === 404 && source && source.hasAttribute && source.hasAttribute("data-live")) {
      markGone(source);
      return;
    }
    var text = (xhr && xhr.responseText) || "request failed";
    try { text = JSON.parse(text).error || text; } catch (e) { /* plain text */ }
    flash(xhr.status + ": " + text.slice(0, 500));
  });
  document.addEventListener("htmx:sendError", function () {
    flash("the dashboard cannot be reached");
  });

  function onLoad(root) {
    addBrowserZone(root);
    showLive();
    if (root.querySelectorAll) {
      root.querySelectorAll("[data-chart]").forEach(loadChart);
      if (root.matches && root.matches("[data-chart]")) loadChart(root);
    }
  }

  function start() {
    connect();
    if (window.htmx) { window.htmx.onLoad(onLoad); } else { onLoad(document); }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
