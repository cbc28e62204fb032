"""Usage tables from published cells (``dashboards._usage``), pure."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from controller.stats import Influx1Store, SqlStatsStore, StatsStore, day_bounds
from controller.stats.models import Cell
from controller.storage import open_database
from controller.storage.schema import stats_cells
from dashboards._usage import bar_chart, chart_data, digest, flows_chart, to_csv, usage_view
from tests.controller.stats.conftest import Server, influxdb1

__all__ = ["influxdb1"]  # the real InfluxDB 1.x fixture, from the statistics tests

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


def test_chart_data_matches_the_tables_and_the_sankey_has_no_cycle() -> None:
    """The charts draw the tables' figures; a route and its return are distinct nodes."""
    days = [digest("2026-07-01", _day("2026-07-01", 30), _hour), digest("2026-07-02", [], _hour)]
    before = [digest("2025-07-01", _day("2025-07-01", 20), _hour)]
    view = usage_view(ROC, days, before, {ROC})
    names = {ROC: "Rocamadour", CAH: "Cahors"}
    data = chart_data(ROC, view, lambda insee: names.get(insee, insee))
    assert data["visitors"] == [30, None]  # a day without published cells is a gap
    assert data["last_year"] == [20, None]
    assert data["hours"] == [0] * 10 + [30] + [0] * 13
    assert data["sankey"] == {
        "nodes": [
            {"name": f"p:{ROC}", "label": "Rocamadour"},
            {"name": f"o:{CAH}", "label": "Cahors"},
        ],
        "links": [{"source": f"o:{CAH}", "target": f"p:{ROC}", "value": 11}],
    }
    both_ways = [
        digest(
            "2026-07-01",
            [
                Cell(
                    "flow",
                    "flow",
                    "day",
                    0,
                    "2026-07-01",
                    CAH,
                    destination=ROC,
                    values={"visitors": 11},
                ),
                Cell(
                    "flow",
                    "flow",
                    "day",
                    0,
                    "2026-07-01",
                    ROC,
                    destination=CAH,
                    values={"visitors": 12},
                ),
            ],
            _hour,
        )
    ]
    territory = chart_data("", usage_view("", both_ways, [], None), str)
    links = {(x["source"], x["target"]) for x in territory["sankey"]["links"]}  # type: ignore[index]
    assert links == {(f"o:{CAH}", f"d:{ROC}"), (f"o:{ROC}", f"d:{CAH}")}


def test_flows_chart_draws_one_band_per_flow_with_widths_by_visitors() -> None:
    """The server-drawn Sankey: a band per flow (came from → commune → went to), the
    widest for the largest flow, names and figures in labels and band titles."""
    cells = [
        Cell("flow", "flow", "day", 0, "2026-07-01", CAH, destination=ROC, values={"visitors": 40}),
        Cell("flow", "flow", "day", 0, "2026-07-01", FIG, destination=ROC, values={"visitors": 20}),
        Cell("flow", "flow", "day", 0, "2026-07-01", ROC, destination=FIG, values={"visitors": 11}),
    ]
    view = usage_view(ROC, [digest("2026-07-01", cells, _hour)], [], {ROC})
    names = {ROC: "Rocamadour", CAH: "Cahors", FIG: "Figeac"}
    svg = flows_chart(ROC, view, names.__getitem__, "Flux")
    assert svg.startswith("<svg") and 'role="img" aria-label="Flux"' in svg
    bands = re.findall(r'<path d="M[^"]*L[0-9.]+,([0-9.]+)[^"]*"[^>]*><title>([^<]*)</title>', svg)
    titles = [t for _, t in bands]
    assert titles == [
        "Cahors → Rocamadour : 40",
        "Figeac → Rocamadour : 20",
        "Rocamadour → Figeac : 11",
    ]
    heights = [
        float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"[^>]*><title>Cahors', svg)
    ]
    small = [
        float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"[^>]*><title>Figeac : 11', svg)
    ]
    assert heights and small and heights[0] > 3 * small[0]
    assert "Cahors (40)" in svg and ">Rocamadour<" in svg
    territory = flows_chart(
        "", usage_view("", [digest("2026-07-01", cells, _hour)], [], None), names.__getitem__, "T"
    )
    assert territory.count("<path ") == 3
    assert (
        flows_chart(ROC, usage_view(ROC, [], [], {ROC}), names.__getitem__, "vide").count("<path")
        == 0
    )


# -- the store read the usage pages use: by place and period, on every store -----------

TZ = ZoneInfo("Europe/Paris")
# Around the change to winter time (25 October 2026: a 25-hour day).
PERIOD = ("2026-10-24", "2026-10-25", "2026-10-26")


def _stored_cells() -> list[Cell]:
    cells: list[Cell] = []
    for i, day in enumerate(PERIOD):
        start, _ = day_bounds(day, TZ)
        t = int(start)
        for insee, n in ((ROC, 100 + i), (CAH, 50 + i)):
            values = {"visitors": n, "sessions": 2 * n, "bytes_down": 1000 * n}
            cells.append(Cell("presence", "commune", "day", t, day, insee, values=values))
            for h in (0, 10, 23):
                # Hours counted from midnight: on the 25-hour day, 23 h after midnight is
                # still that day (22:00 local).
                cells.append(
                    Cell(
                        "presence",
                        "commune",
                        "hour",
                        t + h * 3600,
                        day,
                        insee,
                        values={"visitors": n},
                    )
                )
            cells.append(
                Cell(
                    "presence",
                    "hotspot",
                    "day",
                    t,
                    day,
                    insee,
                    f"ap-{insee}",
                    values={"visitors": n},
                )
            )
        cells.append(Cell("presence", "territory", "day", t, day, values={"visitors": 900 + i}))
        for o, d, n in ((CAH, ROC, 12), (ROC, FIG, 13), (CAH, FIG, 77)):
            cells.append(
                Cell("flow", "flow", "day", t, day, o, destination=d, values={"visitors": n})
            )
    return cells


def _key(c: Cell) -> tuple[object, ...]:
    return (c.kind, c.scope, c.period, c.start, c.day, c.insee, c.ap_id, c.destination,
            tuple(sorted((k, v) for k, v in c.values.items() if v)))  # fmt: skip


def _expected(
    cells: list[Cell],
    first: str,
    last: str,
    scopes: tuple[str, ...],
    places: list[str] | None,
    period: str | None,
) -> set[tuple[object, ...]]:
    out = set()
    for c in cells:
        if not first <= c.day <= last or c.scope not in scopes:
            continue
        if period is not None and c.period != period:
            continue
        if places is not None and c.insee not in places and c.destination not in places:
            continue
        out.add(_key(c))
    return out


QUERIES = [
    # A commune's page: its presence (hours too) and flows from and to it.
    (PERIOD[0], PERIOD[2], ("commune", "flow"), [ROC], None),
    # The year before, day values only.
    (PERIOD[1], PERIOD[2], ("commune",), [ROC], "day"),
    # The territory: its cells and every flow.
    (PERIOD[0], PERIOD[1], ("territory", "flow"), None, None),
    (PERIOD[0], PERIOD[2], ("territory",), [""], None),
    # The map: every commune's day cells.
    (PERIOD[0], PERIOD[2], ("commune",), None, "day"),
    # Hotspots of two communes.
    (PERIOD[1], PERIOD[1], ("hotspot",), [ROC, CAH], None),
]


async def _check_store(store: StatsStore, cells: list[Cell]) -> None:
    await store.write(cells)
    for first, last, scopes, places, period in QUERIES:
        got = await store.read_period(first, last, scopes=scopes, places=places, period=period)
        want = _expected(cells, first, last, scopes, places, period)
        assert want, (first, last, scopes, places, period)
        assert {_key(c) for c in got} == want, (first, last, scopes, places, period)
        assert len(got) == len(want)  # each cell once (the union does not repeat)


async def test_read_period_on_sqlite(tmp_path: Path) -> None:
    """The embedded store (SQLite) answers each read with exactly the matching cells."""
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path}/borne.db")
    try:
        await _check_store(SqlStatsStore(db), _stored_cells())
    finally:
        await db.aclose()


async def test_read_period_uses_the_place_index(tmp_path: Path) -> None:
    """SQLite's plan for a commune's read goes through the place and destination indexes."""
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path}/borne.db")
    try:
        await SqlStatsStore(db).write(_stored_cells())
        async with db.connect() as conn:
            plan = (
                await conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT * FROM stats_cells WHERE scope IN ('commune')"
                    " AND day >= '2026-01-01' AND day <= '2026-12-31' AND insee IN ('46240')"
                    " UNION ALL SELECT * FROM stats_cells WHERE scope IN ('flow')"
                    " AND day >= '2026-01-01' AND day <= '2026-12-31' AND scope = 'flow'"
                    " AND destination IN ('46240') AND insee NOT IN ('46240')"
                )
            ).all()
        text = " ".join(str(r[-1]) for r in plan)
        assert "ix_stats_cells_place" in text and "ix_stats_cells_destination" in text, text
    finally:
        await db.aclose()


async def test_read_period_on_postgres(postgres_url: str) -> None:
    """The same reads on PostgreSQL."""
    db = await open_database(postgres_url)
    try:
        async with db.begin() as conn:
            await conn.execute(stats_cells.delete())
        await _check_store(SqlStatsStore(db), _stored_cells())
    finally:
        async with db.begin() as conn:
            await conn.execute(stats_cells.delete())
        await db.aclose()


async def test_read_period_on_influxdb1(influxdb1: Server) -> None:
    """The same reads in InfluxQL against a real InfluxDB 1.x (one query per measurement),
    days of a cell taken from its start in the territory's time zone."""
    store = Influx1Store(influxdb1.url, "borne_period", TZ)
    try:
        await store.create_database()
        await _check_store(store, _stored_cells())
    finally:
        await store.aclose()
