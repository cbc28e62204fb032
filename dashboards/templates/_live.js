// Live fleet states by server-sent events: each "fleet" event carries what /api/fleet
// answers; the rows of the health table are updated in place. Without JavaScript or
// EventSource, the page is still complete (reload for fresh states).
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events-url");
  var status = document.getElementById("live-status");
  if (!url || !window.EventSource) { return; }
  var source = new EventSource(url);
  source.addEventListener("open", function () {
    status.textContent = "Mise à jour en direct.";
  });
  source.addEventListener("error", function () {
    status.textContent = "Connexion perdue, nouvel essai…";
  });
  source.addEventListener("fleet", function (ev) {
    var fleet = JSON.parse(ev.data);
    document.getElementById("count-online").textContent = fleet.summary.hotspots_online;
    document.getElementById("count-total").textContent = fleet.summary.hotspots_total;
    fleet.hotspots.forEach(function (h) {
      var row = document.querySelector('tr[data-ap="' + CSS.escape(h.ap_id) + '"]');
      if (!row) { return; }
      var badge = row.querySelector('[data-field="state"]');
      badge.className = "badge badge-" + h.state;
      badge.textContent = h.state_label;
      var seen = row.querySelector('[data-field="last-seen"]');
      seen.textContent = h.last_seen_text;
    });
    status.textContent = "Mise à jour en direct.";
  });
})();
