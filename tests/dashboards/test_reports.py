"""Monthly reports on schedule: made from a simulated month's published statistics (the
statistics simulator through the real pipeline), stored, listed and opened per commune."""

from __future__ import annotations

import asyncio
import functools
import random
import re
from datetime import date
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from controller.registry import lot_communes
from controller.service import Controller
from controller.stats import Cell, Limits, OptOut, Pipeline, SqlStatsStore
from controller.stats._sim import simulate_day
from controller.storage.schema import dashboard_reports
from dashboards.app import REPORTS, create_app
from dashboards.reports import (
    ReportError,
    ReportStore,
    month_days,
    parse_month,
    previous_month,
)
from tests.dashboards.test_app import (
    INSEE,
    NOW,
    ClientFactory,
    _logged_in,
    accounts,
    controller,
    populated,
)

__all__ = ["accounts", "controller", "populated"]

TZ = ZoneInfo("Europe/Paris")
# NOW is in May 2026: the month just ended is April.
MONTH = "2026-04"
# The simulated communes: the three equipped ones of the test registry and neighbours
# (the simulator's tours go between them), so that a month simulates in seconds.
SIMULATED = (
    "Rocamadour", "Cahors", "Padirac", "Figeac", "Gramat", "Souillac", "Martel",
    "Saint-Céré", "Alvignac", "Gourdon", "Saint-Cirq-Lapopie", "Lacave", "Miers",
)  # fmt: skip


@functools.cache
def simulated_month(month: str = MONTH, scale: float = 0.05) -> tuple[Cell, ...]:
    """A month of published cells: simulated sessions through the real pipeline."""
    communes = [c for c in lot_communes() if c.name in SIMULATED]
    first, last = month_days(parse_month(month))
    days = [date.fromordinal(d).isoformat() for d in range(first.toordinal(), last.toordinal() + 1)]
    pipeline = Pipeline(TZ, Limits(), 11, OptOut(b"reports test"), rng=random.Random(7))
    cells: list[Cell] = []
    for day in days:
        for s in simulate_day(day, scale=scale, seed=3, tz=TZ, communes=communes).sessions:
            pipeline.observe(
                ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start, stop=s.stop,
                up=s.up, down=s.down,
            )  # fmt: skip
        cells.extend(pipeline.finalise(day).protected.published)
    return tuple(cells)


async def write_simulated_month(controller: Controller, month: str = MONTH) -> None:
    """Store a simulated month of published statistics."""
    cells = await asyncio.to_thread(simulated_month, month)
    await SqlStatsStore(controller.db).write(list(cells))


def test_months() -> None:
    """Months parse strictly; a month's days; the month before a date's."""
    assert parse_month("2026-02") == date(2026, 2, 1)
    assert month_days(date(2028, 2, 1)) == (date(2028, 2, 1), date(2028, 2, 29))
    assert previous_month(date(2027, 1, 1)) == "2026-12"
    for bad in ("2026-13", "2026-1", "2026-04-01", "avril"):
        with pytest.raises(ReportError):
            parse_month(bad)


def _figures(html: str) -> tuple[int, int]:
    """The report's visitors and the number of non-empty bars of its charts."""
    visitors = re.search(r'<dd id="report-visitors">(\d+)</dd>', html)
    assert visitors is not None
    bars = re.findall(r'<rect [^>]*height="([0-9.]+)"', html)
    return int(visitors.group(1)), sum(1 for h in bars if float(h) > 0)


async def test_the_schedule_makes_each_equipped_communes_report_once(accounts: Controller) -> None:
    """At the start of May, April's reports of the 3 equipped communes are made from the
    simulated month, each with its figures and non-empty charts; a second check makes
    nothing; stored reports are self-contained (no script, no link to the site)."""
    await write_simulated_month(accounts)
    app = create_app(accounts, clock=lambda: NOW)
    scheduler = app[REPORTS]
    made = await scheduler.run_once()
    equipped = sorted({INSEE["Rocamadour"], INSEE["Cahors"], INSEE["Padirac"]})
    assert sorted(made) == equipped
    assert await scheduler.run_once() == []
    store = ReportStore(accounts.db)
    for insee in equipped:
        html = await store.get(insee, MONTH)
        assert html is not None
        visitors, bars = _figures(html)
        assert visitors > 0 and bars >= 10, (insee, visitors, bars)
        assert "04/2026" in html and "<script" not in html and 'href="/' not in html
        assert "Données échangées (Mo)" in html and "Heures les plus fréquentées" in html
        assert html.count('class="chart"') == 3
    roc = await store.get(INSEE["Rocamadour"], MONTH)
    assert roc is not None and "Rocamadour" in roc and "Cahors</th>" in roc  # a flow's end
    # The flows as a server-drawn Sankey diagram: a band per flow shown in the tables.
    flows = roc.split('class="chart flows"')[1].split("</svg>")[0]
    assert flows.count("<path ") >= 4 and "→ Rocamadour : " in flows
    listing = await store.listing(None)
    assert [(r.insee, r.month) for r in listing] == [(i, MONTH) for i in equipped]
    assert all(r.size > 1000 for r in listing)


async def test_a_commune_opens_its_reports_and_never_anothers(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """Rocamadour's viewer lists and opens Rocamadour's report only: Cahors's is 403 by
    URL; a month without report is 404; the stored page allows no script."""
    await write_simulated_month(accounts)
    scheduler = create_app(accounts, clock=lambda: NOW)[REPORTS]
    await scheduler.make(MONTH, [INSEE["Rocamadour"], INSEE["Cahors"]])
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    page = await (await viewer.get("/reports")).text()
    assert f'data-report="{INSEE["Rocamadour"]}-{MONTH}"' in page
    assert f'data-report="{INSEE["Cahors"]}-' not in page
    own = await viewer.get(f"/reports/{INSEE['Rocamadour']}/{MONTH}")
    assert own.status == 200
    assert "script-src" not in own.headers["Content-Security-Policy"]
    assert "Rapport mensuel du Wi-Fi public — Rocamadour" in await own.text()
    download = await viewer.get(f"/reports/{INSEE['Rocamadour']}/{MONTH}?download=1")
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert (await viewer.get(f"/reports/{INSEE['Cahors']}/{MONTH}")).status == 403
    assert (await viewer.get(f"/reports?commune={INSEE['Cahors']}")).status == 403
    assert (await viewer.get(f"/reports/{INSEE['Rocamadour']}/2026-03")).status == 404
    assert (await viewer.get(f"/reports/{INSEE['Rocamadour']}/2026-3")).status == 404
    # The Rocamadour + Cahors manager sees both; the technician too.
    manager = await _logged_in(accounts, aiohttp_client, "epci")
    page = await (await manager.get("/reports")).text()
    assert page.count('data-report="') == 2
    assert (await manager.get(f"/reports/{INSEE['Cahors']}/{MONTH}")).status == 200
    legal = await _logged_in(accounts, aiohttp_client, "legal")
    assert (await legal.get(f"/reports/{INSEE['Rocamadour']}/{MONTH}")).status == 403


async def test_a_failing_report_is_counted_and_the_others_are_made(accounts: Controller) -> None:
    """An unknown commune fails alone (logged, counted); --force makes a report again."""
    await write_simulated_month(accounts)
    scheduler = create_app(accounts, clock=lambda: NOW)[REPORTS]
    made = await scheduler.make(MONTH, ["99999", INSEE["Rocamadour"]])
    assert made == [INSEE["Rocamadour"]] and scheduler.failures == 1
    async with accounts.db.connect() as conn:
        before = (await conn.execute(sa.select(dashboard_reports.c.generated_at))).scalar_one()
    scheduler.clock = lambda: NOW + 60
    assert await scheduler.make(MONTH, [INSEE["Rocamadour"]]) == []
    assert await scheduler.make(MONTH, [INSEE["Rocamadour"]], force=True) == [INSEE["Rocamadour"]]
    async with accounts.db.connect() as conn:
        after = (await conn.execute(sa.select(dashboard_reports.c.generated_at))).scalar_one()
    assert after == before + 60


async def test_the_schedule_survives_a_database_outage_and_stops_when_cancelled(
    accounts: Controller,
) -> None:
    """A check that cannot read the database is logged and counted, the next one runs;
    the task ends cleanly when the controller cancels it."""
    scheduler = create_app(accounts, clock=lambda: NOW)[REPORTS]
    calls = 0

    async def broken() -> list[str]:
        nonlocal calls
        calls += 1
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    scheduler.communes = broken
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(scheduler.run(check_s=0.01, start_delay_s=0), name="reports")
        for _ in range(500):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
    assert task.cancelled()
    assert calls >= 3 and scheduler.failures == calls
