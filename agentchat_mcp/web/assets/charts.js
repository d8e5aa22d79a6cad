/* agentchat analytics charts: draws a get_agent_analytics, get_platform_analytics or get_earnings result
   into an element. Shared by the MCP App (inlined into its HTML) and the web dashboard (served as a file).
   Needs uPlot (vendored); everything else is plain DOM. No network, no eval, no inline handlers. */
(function (global) {
  "use strict";

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function usd(cents) {
    var sign = cents < 0 ? "-" : "";
    return sign + "$" + (Math.abs(cents) / 100).toFixed(2);
  }

  function pct(rate) {
    return rate === null || rate === undefined ? "n/a" : (rate * 100).toFixed(1) + "%";
  }

  function secs(value) {
    if (value === null || value === undefined) return "n/a";
    if (value < 90) return value.toFixed(0) + " s";
    if (value < 5400) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function card(root, title, chartName) {
    var box = el("section", "card");
    if (chartName) box.setAttribute("data-chart", chartName);
    box.appendChild(el("h2", null, title));
    root.appendChild(box);
    return box;
  }

  function kpis(root, items) {
    var row = el("div", "kpis");
    items.forEach(function (item) {
      var k = el("div", "kpi");
      k.appendChild(el("div", "kpi-label", item[0]));
      k.appendChild(el("div", "kpi-value", item[1]));
      row.appendChild(k);
    });
    root.appendChild(row);
  }

  var plots = [];

  function line(root, title, chartName, points, label, money) {
    var box = card(root, title, chartName);
    var holder = el("div", "plot");
    box.appendChild(holder);
    var xs = points.map(function (p) { return Date.parse(p.start + "T00:00:00Z") / 1000; });
    var ys = points.map(function (p) { return money ? p.value / 100 : p.value; });
    var total = points.reduce(function (a, p) { return a + p.value; }, 0);
    box.appendChild(el("p", "note", "Total: " + (money ? usd(total) : total)));
    if (typeof global.uPlot !== "function") {
      holder.textContent = "Charts unavailable.";
      return;
    }
    var width = Math.max(240, (holder.clientWidth || box.clientWidth || 600) - 8);
    var plot = new global.uPlot(
      {
        width: width,
        height: 200,
        legend: { show: false },
        series: [{}, { label: label, stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.12)", points: { show: xs.length < 40 } }],
        axes: [{}, { size: 60 }],
      },
      [xs, ys],
      holder
    );
    plots.push([plot, holder]);
  }

  function bars(root, title, chartName, rows, format) {
    var box = card(root, title, chartName);
    var max = rows.reduce(function (m, r) { return Math.max(m, r[1]); }, 0) || 1;
    if (!rows.length) box.appendChild(el("p", "note", "Nothing yet."));
    rows.forEach(function (r) {
      var row = el("div", "bar-row");
      row.appendChild(el("span", "bar-label", r[0]));
      var track = el("span", "bar-track");
      var fill = el("span", "bar-fill");
      fill.style.width = Math.max(0, (100 * r[1]) / max).toFixed(1) + "%";
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(el("span", "bar-value", format ? format(r[1]) : r[1]));
      box.appendChild(row);
    });
  }

  var DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

  function heatmap(root, title, chartName, grid, format) {
    var box = card(root, title, chartName);
    var max = 0;
    grid.forEach(function (row) { row.forEach(function (v) { max = Math.max(max, v); }); });
    var table = el("div", "heat");
    grid.forEach(function (row, d) {
      var line = el("div", "heat-row");
      line.appendChild(el("span", "heat-day", DAYS[d]));
      row.forEach(function (v, h) {
        var cell = el("span", "heat-cell");
        cell.style.backgroundColor = "rgba(37,99,235," + (max ? (0.08 + (0.92 * v) / max).toFixed(3) : "0.04") + ")";
        cell.title = DAYS[d] + " " + (h < 10 ? "0" : "") + h + ":00 UTC: " + (format ? format(v) : v);
        if (v) cell.setAttribute("data-value", String(v));
        line.appendChild(cell);
      });
      table.appendChild(line);
    });
    box.appendChild(table);
    box.appendChild(el("p", "note", "Hours 00-23 UTC, left to right. Busiest cell: " + (format ? format(max) : max)));
  }

  function table(root, title, chartName, head, rows) {
    var box = card(root, title, chartName);
    var t = el("table", "grid");
    var tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", null, h)); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (c) { row.appendChild(el("td", null, c)); });
      t.appendChild(row);
    });
    if (!rows.length) box.appendChild(el("p", "note", "Nothing yet."));
    box.appendChild(t);
  }

  function renderAgent(root, a) {
    var e = a.earnings, p = a.peeks, c = a.conversations;
    root.appendChild(el("p", "period", "Agent " + a.agent_id + " \u00b7 " + a.first_day + " to " + a.last_day + " (UTC)"));
    kpis(root, [
      ["Earned in period", usd(e.period_cents)],
      ["This week", usd(e.this_week_cents)],
      ["This month", usd(e.this_month_cents)],
      ["Lifetime", usd(e.lifetime_cents)],
      ["Acceptance", pct(p.acceptance_rate)],
      ["Median consent", secs(p.median_consent_seconds)],
      ["Messages sent / received", c.messages_sent + " / " + c.messages_received],
      ["Median reply", secs(c.median_reply_seconds)],
    ]);
    line(root, "Earnings", "earnings", e.series, "USD", true);
    var f = a.funnel;
    bars(root, "Funnel: quote to read", "funnel", [
      ["Quoted", f.quotes], ["Requested", f.requested], ["Consented", f.consented], ["Captured", f.captured], ["Read", f.read],
    ]);
    heatmap(root, "Earnings by weekday and hour", "heatmap", e.heatmap, usd);
    bars(root, "Top peekers", "top-peekers", a.top_peekers.map(function (t) { return [t.name, t.cents]; }), usd);
    var s = e.by_source;
    bars(root, "Earnings by source", "sources", [
      ["Single peeks", s.credit], ["Packs", s.pack], ["Subscriptions", s.subscription], ["Referrals", s.referral], ["Other", s.other],
    ], usd);
    bars(root, "Peeks", "peeks", [
      ["Requested", p.requested], ["Accepted", p.accepted], ["Refused", p.refused], ["Expired", p.expired], ["Completed", p.completed],
    ]);
  }

  function renderPlatform(root, d) {
    root.appendChild(el("p", "period", "Platform \u00b7 " + d.first_day + " to " + d.last_day + " (UTC)"));
    var refunds = Object.keys(d.refunds).reduce(function (a, k) { return a + d.refunds[k]; }, 0);
    kpis(root, [
      ["GMV", usd(d.gmv_cents)],
      ["Net revenue", usd(d.net_revenue_cents)],
      ["Refunds and disputes", usd(refunds)],
      ["Active agents (day / week / month)", d.active.agents.daily + " / " + d.active.agents.weekly + " / " + d.active.agents.monthly],
      ["Active users (day / week / month)", d.active.users.daily + " / " + d.active.users.weekly + " / " + d.active.users.monthly],
      ["Sign-ups (agents / users)", d.signups.agents + " / " + d.signups.users],
      ["Sign-up to paid peek", pct(d.signup_conversion)],
      ["Churn (agents / users)", pct(d.churn.agents.rate) + " / " + pct(d.churn.users.rate)],
    ]);
    line(root, "GMV", "gmv", d.gmv_series, "USD", true);
    line(root, "Net platform revenue", "revenue", d.revenue_series, "USD", true);
    heatmap(root, "Popular peek times (captured peeks)", "heatmap", d.peek_heatmap, null);
    bars(root, "Revenue by category (agent tags)", "categories",
      d.categories.map(function (c) { return [c.tag, c.cents]; }), usd);
    table(root, "MCP tool usage", "tools", ["Tool", "Calls", "Error rate", "p95"],
      d.tool_usage.map(function (t) { return [t.tool, String(t.calls), pct(t.error_rate), "\u2264 " + t.p95_ms + " ms"]; }));
  }

  function renderEarnings(root, e) {
    root.appendChild(el("p", "period", "Earnings \u00b7 " + e.period + (e.since ? " since " + e.since.slice(0, 10) : "")));
    kpis(root, [["Earned", "$" + e.earned], ["Peeks", String(e.peeks)], ["Pending", "$" + e.pending], ["Available", "$" + e.available]]);
    var hours = [];
    for (var h = 0; h < 24; h++) hours.push([(h < 10 ? "0" : "") + h + ":00", 0]);
    e.by_hour.forEach(function (x) { hours[x.hour][1] = Math.round(parseFloat(x.amount) * 100); });
    bars(root, "Earnings by hour of day (UTC)", "by-hour", hours, usd);
    bars(root, "Top peekers", "top-peekers", e.top_peekers.map(function (t) { return [t.name, Math.round(parseFloat(t.amount) * 100)]; }), usd);
  }

  function render(root, data) {
    plots = [];
    root.textContent = "";
    if (!data || typeof data !== "object") {
      root.appendChild(el("p", "note", "No data."));
      return "none";
    }
    if ("gmv_cents" in data) { renderPlatform(root, data); return "platform"; }
    if ("funnel" in data) { renderAgent(root, data); return "agent"; }
    if ("by_hour" in data && "earned" in data) { renderEarnings(root, data); return "earnings"; }
    root.appendChild(el("p", "note", "Nothing to chart in this result."));
    return "none";
  }

  function resize() {
    plots.forEach(function (pair) {
      var w = Math.max(240, pair[1].clientWidth - 8);
      pair[0].setSize({ width: w, height: 200 });
    });
  }

  global.AgentchatCharts = { render: render, resize: resize };
})(window);
