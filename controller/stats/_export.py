"""Open-data CSV export from published cells only (schema: docs/STATISTICS.md).

The rows come from what the store holds, and the store holds only protected cells: a
commune or a flow that was suppressed is simply absent. Column names are French, as the
national open-data portal expects; numbers are plain integers; UTF-8, comma-separated.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from controller.stats.models import DWELL_BUCKETS, Cell

__all__ = ["COMMUNE_COLUMNS", "FLOW_COLUMNS", "communes_csv", "flows_csv", "top_routes"]

_DWELL_FR = {
    "dwell_lt_5m": "sessions_moins_5min",
    "dwell_5_15m": "sessions_5_15min",
    "dwell_15_30m": "sessions_15_30min",
    "dwell_30_60m": "sessions_30_60min",
    "dwell_1_2h": "sessions_1_2h",
    "dwell_ge_2h": "sessions_2h_et_plus",
}
_COMMUNE_FIELDS = (
    ("visitors", "visiteurs"),
    ("randomised_visitors", "visiteurs_mac_aleatoire"),
    ("sessions", "sessions"),
    ("repeat_visitors", "visiteurs_revenus_dans_la_journee"),
    *((name, _DWELL_FR[name]) for name, _ in DWELL_BUCKETS),
    ("bytes_up", "octets_envoyes"),
    ("bytes_down", "octets_recus"),
)
COMMUNE_COLUMNS = ("date", "code_insee", "commune", *(fr for _, fr in _COMMUNE_FIELDS), "bruit")
FLOW_COLUMNS = (
    "date",
    "code_insee_origine",
    "commune_origine",
    "code_insee_destination",
    "commune_destination",
    "visiteurs",
    "bruit",
)


def communes_csv(cells: Sequence[Cell], names: Mapping[str, str]) -> str:
    """One row per commune and day, from the published commune-day cells."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COMMUNE_COLUMNS)
    rows = sorted(
        (c for c in cells if c.kind == "presence" and c.scope == "commune" and c.period == "day"),
        key=lambda c: (c.day, c.insee),
    )
    for c in rows:
        w.writerow(
            [
                c.day,
                c.insee,
                names.get(c.insee, ""),
                *(c.values.get(name, 0) for name, _ in _COMMUNE_FIELDS),
                "oui" if c.noised else "non",
            ]
        )
    return out.getvalue()


def flows_csv(cells: Sequence[Cell], names: Mapping[str, str]) -> str:
    """One row per published origin → destination flow and day."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(FLOW_COLUMNS)
    for c in sorted(
        (c for c in cells if c.kind == "flow"), key=lambda c: (c.day, c.insee, c.destination)
    ):
        w.writerow(
            [
                c.day,
                c.insee,
                names.get(c.insee, ""),
                c.destination,
                names.get(c.destination, ""),
                c.visitors,
                "oui" if c.noised else "non",
            ]
        )
    return out.getvalue()


def top_routes(cells: Sequence[Cell], n: int = 10) -> list[Cell]:
    """The day's most travelled published flows, busiest first."""
    flows = [c for c in cells if c.kind == "flow"]
    return sorted(flows, key=lambda c: (-c.visitors, c.insee, c.destination))[:n]
