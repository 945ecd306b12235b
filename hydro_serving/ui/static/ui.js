// Progressive enhancement of the Hydro Serving UI: live updates by Server-Sent Events.
// Every page works without this file; with it, tables and numbers follow the gateway as it serves.
(function () {
  "use strict";

  function setText(el, value) { if (el && el.textContent !== value) { el.textContent = value; } }

  function liveFunctions(table) {
    var status = document.getElementById("live-status");
    var source = new EventSource(table.getAttribute("data-live"));
    source.addEventListener("functions", function (ev) {
      var rows = JSON.parse(ev.data);
      rows.forEach(function (row) {
        var tr = table.querySelector('tr[data-fn="' + CSS.escape(row.name) + '"]');
        if (!tr) { return; }  // new functions appear on reload (the filter and sort are the server's)
        tr.className = "state-" + row.state;
        tr.querySelectorAll("[data-col]").forEach(function (td) {
          var col = td.getAttribute("data-col");
          if (col === "drift") {
            var badge = td.querySelector(".badge");
            setText(badge, row.drift);
            badge.className = "badge badge-" + row.drift.replace(/ /g, "-");
          } else if (col === "model") {
            setText(td.querySelector("code") || td, row.model);
          } else { setText(td, row[col]); }
        });
      });
      setText(status, "updated " + new Date().toLocaleTimeString());
    });
    source.addEventListener("logout", function () { source.close(); window.location.reload(); });
    source.onerror = function () { setText(status, "reconnecting…"); };
  }

  function liveFunction(box) {
    var source = new EventSource(box.getAttribute("data-live"));
    source.addEventListener("function", function (ev) {
      var d = JSON.parse(ev.data);
      if (d.gone) { source.close(); return; }
      ["replicas", "invocations", "p50", "p95", "errors", "cold"].forEach(function (k) {
        setText(box.querySelector('[data-field="' + k + '"]'), d.row[k]);
      });
      setText(box.querySelector('[data-field="cold_split"]'), d.cold);
      ["spark_rps", "spark_latency"].forEach(function (k) {
        var el = box.querySelector('[data-html="' + k + '"]');
        if (el) { el.innerHTML = d[k]; }  // server-rendered SVG, every text in it escaped there
      });
    });
    source.addEventListener("logout", function () { source.close(); window.location.reload(); });
    var logs = document.getElementById("logs");
    var logSource = new EventSource(box.getAttribute("data-logs"));
    logSource.addEventListener("log", function (ev) {
      var atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.appendChild(document.createTextNode(JSON.parse(ev.data).text + "\n"));
      while (logs.childNodes.length > 500) { logs.removeChild(logs.firstChild); }
      if (atEnd) { logs.scrollTop = logs.scrollHeight; }
    });
  }

  function liveAsync(table) {
    var status = document.getElementById("live-status");
    var source = new EventSource(table.getAttribute("data-live"));
    source.addEventListener("async", function (ev) {
      JSON.parse(ev.data).forEach(function (row) {
        var tr = table.querySelector('tr[data-fn="' + CSS.escape(row.function) + '"]');
        if (!tr) { return; }  // a function's first call appears on reload
        tr.querySelectorAll("[data-col]").forEach(function (td) {
          setText(td, String(row[td.getAttribute("data-col")]));
        });
      });
      setText(status, "updated " + new Date().toLocaleTimeString());
    });
    source.addEventListener("logout", function () { source.close(); window.location.reload(); });
    source.onerror = function () { setText(status, "reconnecting…"); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.EventSource) { return; }
    var table = document.getElementById("functions");
    if (table) { liveFunctions(table); }
    var box = document.getElementById("function");
    if (box) { liveFunction(box); }
    var counts = document.getElementById("async-counts");
    if (counts) { liveAsync(counts); }
  });
})();
