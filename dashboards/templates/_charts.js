// Interactive charts with Apache ECharts (installed from npm at set-up, served from
// /assets/). The figures are the page's own (the JSON block "chart-data", the same as
// its tables). Without the library or without JavaScript, the server-drawn charts and
// the tables stay: each chart's box is shown only once the chart is drawn.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || !window.echarts) { return; }
  var data = JSON.parse(source.textContent);
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  var ink = dark ? "#ececec" : "#1a1a1a";
  var palette = ["#1f5fa8", "#c2571a", "#5a5f66", "#1b6e3a", "#7a3e9d"];
  var number = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 1 });
  function fmt(v) { return v === null || v === undefined || v === "-" ? "—" : number.format(v); }
  var base = {
    color: palette,
    textStyle: { color: ink, fontFamily: "system-ui, sans-serif" },
    // Rich-text tooltips are drawn in the chart itself: no HTML (and no inline style,
    // which the page's Content-Security-Policy refuses).
    tooltip: { trigger: "axis", renderMode: "richText", valueFormatter: fmt },
    legend: { textStyle: { color: ink }, top: 0 },
    grid: { left: 56, right: 24, top: 40, bottom: 40 },
    aria: { enabled: false },
    animation: false
  };
  function axisX(labels) {
    return { type: "category", data: labels, axisLabel: { color: ink } };
  }
  function axisY(name) {
    return {
      type: "value", name: name, nameTextStyle: { color: ink },
      axisLabel: { color: ink, formatter: fmt }
    };
  }
  function merge(a, b) {
    var out = {}, k;
    for (k in a) { out[k] = a[k]; }
    for (k in b) { out[k] = b[k]; }
    return out;
  }
  function mb(values) {
    return values.map(function (v) { return v === null ? null : Math.round(v / 1e4) / 100; });
  }
  var shortDays = data.days.map(function (d) { return d.slice(8, 10) + "/" + d.slice(5, 7); });
  var specs = {
    daily: {
      xAxis: axisX(shortDays),
      yAxis: axisY(""),
      dataZoom: data.days.length > 62 ? [{ type: "inside" }, { type: "slider", height: 18, bottom: 4 }] : [],
      series: [
        { name: "Visiteurs", type: "bar", data: data.visitors },
        { name: "Sessions", type: "line", data: data.sessions, symbol: "none", connectNulls: false },
        { name: "Visiteurs l'an dernier", type: "line", data: data.last_year, symbol: "none",
          lineStyle: { type: "dashed" } }
      ]
    },
    hours: {
      xAxis: axisX(data.hours.map(function (_, h) { return h + " h"; })),
      yAxis: axisY(""),
      series: [{ name: "Visiteurs", type: "bar", data: data.hours }]
    },
    dwell: {
      xAxis: axisX(data.dwell_labels),
      yAxis: axisY(""),
      series: [{ name: "Sessions", type: "bar", data: data.dwell }]
    },
    volume: {
      xAxis: axisX(shortDays),
      yAxis: axisY("Mo"),
      dataZoom: data.days.length > 62 ? [{ type: "inside" }, { type: "slider", height: 18, bottom: 4 }] : [],
      series: [
        { name: "Reçu (Mo)", type: "bar", stack: "v", data: mb(data.bytes_down) },
        { name: "Envoyé (Mo)", type: "bar", stack: "v", data: mb(data.bytes_up) }
      ]
    }
  };
  var labels = {};
  data.sankey.nodes.forEach(function (n) { labels[n.name] = n.label; });
  if (data.sankey.links.length) {
    specs.flows = {
      tooltip: { trigger: "item", renderMode: "richText" },
      legend: { show: false },
      series: [{
        type: "sankey",
        left: 8, right: 140, top: 8, bottom: 8,
        nodeAlign: "justify",
        emphasis: { focus: "adjacency" },
        data: data.sankey.nodes.map(function (n) { return { name: n.name }; }),
        links: data.sankey.links,
        label: { color: ink, formatter: function (p) { return labels[p.name] || p.name; } },
        tooltip: {
          formatter: function (p) {
            if (p.dataType === "edge") {
              return labels[p.data.source] + " → " + labels[p.data.target] + " : " + fmt(p.data.value);
            }
            return labels[p.name] + " : " + fmt(p.value);
          }
        },
        lineStyle: { color: "gradient", opacity: 0.45 }
      }]
    };
  }
  var charts = [];
  Object.keys(specs).forEach(function (key) {
    var box = document.querySelector('[data-chart="' + key + '"]');
    if (!box) { return; }
    var canvas = box.querySelector(".echart");
    box.hidden = false;
    var chart = window.echarts.init(canvas, null, { renderer: "svg" });
    chart.setOption(merge(base, specs[key]));
    charts.push(chart);
    // The server-drawn chart it replaces (the tables stay).
    var fallback = document.querySelector('[data-fallback="' + key + '"]');
    if (fallback) { fallback.hidden = true; }
  });
  window.addEventListener("resize", function () {
    charts.forEach(function (c) { c.resize(); });
  });
  document.body.setAttribute("data-charts", String(charts.length));
})();
