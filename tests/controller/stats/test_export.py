"""Open-data CSV: columns, only the cells given (published ones), top routes."""

from __future__ import annotations

import csv
import io

from controller.stats._export import COMMUNE_COLUMNS, communes_csv, flows_csv, top_routes
from controller.stats.models import PRESENCE_FIELDS, Cell

DAY = "2026-08-12"


def presence(insee: str, visitors: int, noised: bool = False) -> Cell:
    values = dict.fromkeys(PRESENCE_FIELDS, 1) | {"visitors": visitors}
    return Cell("presence", "commune", "day", 0, DAY, insee, "", "", values, noised)


def test_commune_rows_come_from_commune_days_only() -> None:
    """Hour, hotspot and territory cells are not rows; names and the noise flag are."""
    cells = [
        presence("46240", 30, noised=True),
        Cell("presence", "commune", "hour", 0, DAY, "46240", "", "", {"visitors": 12}),
        Cell("presence", "territory", "day", 0, DAY, "", "", "", {"visitors": 99}),
    ]
    rows = list(csv.DictReader(io.StringIO(communes_csv(cells, {"46240": "Rocamadour"}))))
    assert len(rows) == 1 and list(rows[0]) == list(COMMUNE_COLUMNS)
    assert rows[0]["commune"] == "Rocamadour" and rows[0]["visiteurs"] == "30"
    assert rows[0]["bruit"] == "oui"


def test_flows_and_top_routes() -> None:
    """Flows export with both names; top routes are the busiest flows first."""
    flows = [Cell("flow", "flow", "day", 0, DAY, "A", "", "B", {"visitors": n}) for n in (12, 40)]
    flows[1] = Cell("flow", "flow", "day", 0, DAY, "B", "", "C", {"visitors": 40})
    text = flows_csv(flows, {"A": "Alpha", "B": "Beta", "C": "Gamma"})
    assert "2026-08-12,A,Alpha,B,Beta,12,non" in text
    assert [c.destination for c in top_routes(flows, 1)] == ["C"]
