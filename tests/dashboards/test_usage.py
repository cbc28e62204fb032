"""Usage tables from published cells (``dashboards._usage``), pure."""

from __future__ import annotations

import csv
import io

from controller.stats.models import Cell
from dashboards._usage import bar_chart, digest, to_csv, usage_view

ROC, CAH, FIG = "46240", "46042", "46102"


def _day(day: str, roc: int) -> list[Cell]:
    return [
        Cell("presence", "commune", "day", 0, day, ROC, values={"visitors": roc, "sessions": 5}),
        Cell("presence", "commune", "hour", 3600 * 10, day, ROC, values={"visitors": roc}),
        Cell("presence", "territory", "day", 0, day, values={"visitors": 1000}),
        Cell("flow", "flow", "day", 0, day, CAH, destination=ROC, values={"visitors": 11}),
        Cell("flow", "flow", "day", 0, day, CAH, destination=FIG, values={"visitors": 40}),
    ]


def _hour(start: int) -> int:
    return start // 3600


def test_commune_view_sums_published_days_and_keeps_only_its_flows() -> None:
    """Totals are sums of published cells; flows not touching the commune are left out."""
    digests = [digest("2026-07-01", _day("2026-07-01", 30), _hour), digest("2026-07-02", [], _hour)]
    view = usage_view(ROC, digests, [], {ROC})
    assert view.totals["visitors"] == 30 and view.totals["sessions"] == 5
    assert view.daily[1] == ("2026-07-02", {})  # nothing published that day
    assert view.hours[10] == 30 and view.busiest_hours == [10]
    assert view.came_from == [(CAH, 11)] and view.went_to == []
    assert view.routes == [(CAH, ROC, 11)]
    assert view.last_year is None


def test_territory_view_ranks_routes_and_compares_with_last_year() -> None:
    """The territory view ranks every route and sums last year's same days."""
    now = [digest("2026-07-01", _day("2026-07-01", 30), _hour)]
    before = [digest("2025-07-01", _day("2025-07-01", 20), _hour)]
    view = usage_view("", now, before, None)
    assert view.totals["visitors"] == 1000 and view.last_year == 1000
    assert view.routes == [(CAH, FIG, 40), (CAH, ROC, 11)]


def test_csv_and_chart_are_well_formed() -> None:
    """The CSV parses back; the chart has one bar per value with its label and value."""
    text = to_csv(["a", "b"], [[1, "x,y"], [2, "é"]])
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["1", "x,y"], ["2", "é"]]
    svg = bar_chart([1, 5, 0], ["l1", "l<2>", "l3"], "Titre")
    assert svg.count("<rect") == 3 and "l&lt;2&gt; : 5" in svg and 'aria-label="Titre"' in svg
