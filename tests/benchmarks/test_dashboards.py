"""Benchmark: time to first render of the dashboards' pages over a simulated year.

A year (365 days) of published statistics for the Lot's 320 communes is written through
the statistics store (SQL): per day one day cell per commune, one for the territory,
hourly cells (8 h to 22 h) for 10 communes, 60 flows: about 190,000 cells;
320 hotspots, one per commune.
Each measured request is the first one of a fresh application (no cache warm), on a real
loopback server, timed from the client, and its server time read from the app's
``Server-Timing`` header (request to body ready, without the network and gzip); the
baseline in the same run is the login page (a template render without data). Figures go
to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.config import load_settings
from controller.registry import Registry, lot_communes
from controller.service import Controller
from controller.stats import Cell, SqlStatsStore
from controller.storage import open_database
from dashboards._auth import Role, hash_password
from dashboards.accounts import AccountStore
from dashboards.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

DAYS = 365
RUNS = 5
PASSWORD = "mot de passe du banc d'essai"
ROC = "46240"


def _year(tz: ZoneInfo, last: dt.date) -> list[Cell]:
    communes = [c.insee for c in lot_communes()]
    busy = communes[:10]
    cells: list[Cell] = []
    for back in range(DAYS):
        day = last - dt.timedelta(days=back)
        start = int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
        d = day.isoformat()
        for i, insee in enumerate(communes):
            n = 11 + (i * 7 + back) % 300
            values = {"visitors": n, "sessions": 2 * n, "dwell_5_15m": n, "bytes_down": 1000 * n}
            cells.append(Cell("presence", "commune", "day", start, d, insee, values=values))
        cells.append(Cell("presence", "territory", "day", start, d, values={"visitors": 40_000}))
        for insee in busy:
            for h in range(8, 22):
                cells.append(
                    Cell(
                        "presence",
                        "commune",
                        "hour",
                        start + h * 3600,
                        d,
                        insee,
                        values={"visitors": 12},
                    )
                )
        for k in range(60):
            o, dest = communes[k % 40], communes[(k * 13 + 1) % 320]
            if o != dest:
                cells.append(
                    Cell(
                        "flow",
                        "flow",
                        "day",
                        start,
                        d,
                        o,
                        destination=dest,
                        values={"visitors": 11 + k},
                    )
                )
    return cells


@pytest.fixture
async def year(tmp_path: Path) -> AsyncIterator[Controller]:
    communes = await asyncio.to_thread(lot_communes)  # reads the shipped CSV once
    settings = load_settings(None, database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"})
    db = await open_database(settings.database.url.get_secret_value())
    registry = Registry(db, settings.command_master_key.get_secret_value())
    await registry.add_communes(communes)
    for c in communes:
        await registry.add_access_point(f"ap-{c.insee}-01", c.insee, c.name)
    tz = await asyncio.to_thread(ZoneInfo, "Europe/Paris")
    last = dt.date.today() - dt.timedelta(days=1)
    cells = await asyncio.to_thread(_year, tz, last)
    await SqlStatsStore(db).write(cells)
    store = AccountStore(db)
    pw = await asyncio.to_thread(hash_password, PASSWORD)
    await store.create("tech", "", Role.TECHNICIAN, pw, now=time.time())
    await store.create("roc", "", Role.COMMUNE_VIEWER, pw, communes=[ROC], now=time.time())
    try:
        yield Controller(settings, db, registry)
    finally:
        await db.aclose()


async def _first_render(controller: Controller, user: str, path: str) -> tuple[float, float]:
    """Seconds for the first request of ``path`` on a fresh app, logged in as ``user``:
    as the client saw it, and as the server tells (``Server-Timing``)."""
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(create_app(controller))
    )
    await client.start_server()
    try:
        if path != "/login":
            resp = await client.post("/login", data={"username": user, "password": PASSWORD})
            assert resp.status == 200
        t0 = time.perf_counter()
        resp = await client.get(path)
        body = await resp.read()
        elapsed = time.perf_counter() - t0
        assert resp.status == 200 and len(body) > 1000, path
        server = float(resp.headers["Server-Timing"].split("dur=")[1]) / 1000
        return elapsed, server
    finally:
        await client.close()


async def test_first_render_over_a_year_of_statistics(year: Controller) -> None:
    """Commune, home and year-long usage pages render; their times are reported vs login."""
    last = dt.date.today() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=DAYS - 1)
    pages = {
        "login page (baseline)": ("tech", "/login"),
        "syndicate home": ("tech", "/"),
        "commune page": ("roc", f"/commune/{ROC}"),
        "commune usage, 30 days": ("roc", "/usage"),
        "commune usage, a year": ("roc", f"/usage?from={first}&to={last}"),
        "territory usage, a year": ("tech", f"/usage?from={first}&to={last}"),
    }
    results = {}
    for name, (user, path) in pages.items():
        times = [await _first_render(year, user, path) for _ in range(RUNS)]
        results[name] = (
            statistics.median(t for t, _ in times),
            statistics.median(t for _, t in times),
        )
    base, base_server = results["login page (baseline)"]
    print()
    print(f"{'page':28s} {'client':>9s} {'ratio':>7s} {'server':>9s} {'ratio':>7s}")
    for name, (t, server) in results.items():
        print(
            f"{name:28s} {t * 1000:7.1f}ms  x{t / base:5.1f} {server * 1000:7.1f}ms"
            f"  x{server / base_server:5.1f}"
        )
    # Regression guard only (the machine is shared): pages answer, in some seconds.
    assert all(t < 30 for t, _ in results.values())
