// Keeps the page fresh: polls the JSON API and rewrites the tables in place.
// No library, no external request, text only through textContent (never innerHTML).
// The page works without it (see the <noscript> note); the button pauses it (WCAG 2.2.2).
(function () {
  "use strict";
  var body = document.body;
  var fleetUrl = body.getAttribute("data-fleet-url");
  var sessionsUrl = body.getAttribute("data-sessions-url");
  var periodMs = 1000 * (parseInt(body.getAttribute("data-refresh-s"), 10) || 5);
  var timeZone = body.getAttribute("data-time-zone") || undefined;
  var toggle = document.getElementById("refresh-toggle");
  var status = document.getElementById("refresh-status");
  var paused = false;
  var timer = null;
  var STATES = { online: 1, offline: 1, unknown: 1 };

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = text; }
    if (className) { node.className = className; }
    return node;
  }

  function timeEl(iso, text) {
    var t = el("time", text);
    t.setAttribute("datetime", iso);
    return t;
  }

  function setText(id, value) {
    var node = document.getElementById(id);
    if (node && node.textContent !== String(value)) { node.textContent = String(value); }
  }

  function emptyRow(colspan, text) {
    var tr = el("tr");
    var td = el("td", text, "empty");
    td.setAttribute("colspan", String(colspan));
    tr.appendChild(td);
    return tr;
  }

  function hotspotRow(h) {
    var tr = el("tr");
    var th = el("th", h.ap_id);
    th.setAttribute("scope", "row");
    if (h.name !== h.ap_id) { th.appendChild(el("span", h.name, "sub")); }
    tr.appendChild(th);
    tr.appendChild(el("td", h.commune));
    var state = STATES[h.state] ? h.state : "unknown";
    var td = el("td");
    td.appendChild(el("span", h.state_label, "badge badge-" + state));
    tr.appendChild(td);
    td = el("td");
    if (h.last_seen_iso) { td.appendChild(timeEl(h.last_seen_iso, h.last_seen_text)); }
    else { td.textContent = h.last_seen_text; }
    tr.appendChild(td);
    tr.appendChild(el("td", h.agent_version || "—"));
    return tr;
  }

  function sessionRow(s) {
    var tr = el("tr");
    var th = el("th");
    th.setAttribute("scope", "row");
    th.appendChild(el("code", s.tag));
    tr.appendChild(th);
    tr.appendChild(el("td", s.hotspot));
    tr.appendChild(el("td", s.commune));
    var td = el("td");
    td.appendChild(timeEl(s.started_iso, s.started_text));
    tr.appendChild(td);
    tr.appendChild(el("td", s.duration_text));
    tr.appendChild(el("td", s.volume_text, "num"));
    return tr;
  }

  function fill(tbodyId, items, makeRow, colspan, emptyText) {
    var tbody = document.getElementById(tbodyId);
    var fragment = document.createDocumentFragment();
    if (items.length === 0) { fragment.appendChild(emptyRow(colspan, emptyText)); }
    for (var i = 0; i < items.length; i++) { fragment.appendChild(makeRow(items[i])); }
    tbody.replaceChildren(fragment);
  }

  function showFleet(data) {
    setText("count-online", data.summary.hotspots_online);
    setText("count-total", data.summary.hotspots_total);
    setText("count-communes", data.summary.communes_equipped);
    setText("count-communes-total", data.summary.communes_total);
    fill("hotspots-body", data.hotspots, hotspotRow, 5, "Aucune borne enregistrée.");
  }

  function showSessions(data) {
    setText("count-sessions", data.count);
    var note = document.getElementById("sessions-truncated");
    note.hidden = !data.truncated;
    if (data.truncated) {
      note.textContent = "Seules les " + data.sessions.length +
        " sessions les plus récentes sont listées.";
    }
    fill("sessions-body", data.sessions, sessionRow, 6, "Aucune session ouverte.");
  }

  function showTime(unix) {
    var node = document.getElementById("generated");
    var when = new Date(unix * 1000);
    node.setAttribute("datetime", when.toISOString().replace(/\.\d{3}Z$/, "Z"));
    node.textContent = when.toLocaleTimeString("fr-FR", { timeZone: timeZone });
  }

  function getJson(url) {
    var controller = new AbortController();
    var guard = setTimeout(function () { controller.abort(); }, periodMs * 2);
    return fetch(url, { headers: { Accept: "application/json" }, cache: "no-store",
                        signal: controller.signal })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .finally(function () { clearTimeout(guard); });
  }

  function schedule() {
    clearTimeout(timer);
    timer = paused || document.hidden ? null : setTimeout(refresh, periodMs);
  }

  function refresh() {
    Promise.all([getJson(fleetUrl), getJson(sessionsUrl)])
      .then(function (answers) {
        showFleet(answers[0]);
        showSessions(answers[1]);
        showTime(answers[0].generated_at);
        if (status.textContent) { status.textContent = ""; }
      })
      .catch(function () {
        status.textContent = "Mise à jour impossible pour l'instant ; nouvel essai dans " +
          Math.round(periodMs / 1000) + " s.";
      })
      .finally(schedule);
  }

  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.setAttribute("aria-pressed", paused ? "true" : "false");
    if (paused) { schedule(); } else { refresh(); }
  });
  // A hidden tab does not poll; it catches up as soon as it is shown again.
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !paused) { refresh(); } else { schedule(); }
  });
  schedule();
}());
