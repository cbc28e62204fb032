"""The outbox consumer: days finalised when over, restarts re-read the open day, opt-out."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from controller import outbox
from controller.config import Settings, StatsSettings
from controller.stats._core import day_bounds
from controller.stats._pseudo import OptOut
from controller.stats._service import (
    CONSUMER,
    StatsService,
    record_optout,
    simulated_reports,
    simulated_reports_apart,
)
from controller.stats._stores import SqlStatsStore
from controller.storage import Database, open_database
from controller.storage.schema import sessions, stats_days, stats_optout

TZ = ZoneInfo("Europe/Paris")
DAY = "2026-08-12"
D0, D_END = day_bounds(DAY, TZ)
SETTINGS = StatsSettings(enabled=True, k=5, optout_key="test-optout-key")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite+aiosqlite:///{tmp_path}/borne.db")
    yield database
    await database.aclose()


async def add_session(db: Database, n: int, insee: str, start: float, stop: float) -> None:
    """A session as the ledger records it: row plus start and stop events."""
    await add_sessions(db, [(n, insee, start, stop)])


async def add_sessions(db: Database, rows: list[tuple[int, str, float, float]]) -> None:
    """Several sessions in one transaction."""
    async with db.begin() as conn:
        for n, insee, start, stop in rows:
            result = await conn.execute(
                sessions.insert().values(
                    ap_id=f"ap-{insee}-01", insee=insee, mac=f"02:00:00:00:00:{n:02x}",
                    ip="10.0.0.2", started_at=start, updated_at=stop, stopped_at=stop,
                    up_bytes=10, down_bytes=100,
                )
            )  # fmt: skip
            key = result.inserted_primary_key
            assert key is not None
            sid = int(key[0])
            await outbox.emit(conn, [sid], "start", start)
            await outbox.emit(conn, [sid], "stop", stop)


async def test_day_is_published_once_over_and_restart_rereads_it(db: Database) -> None:
    """Events of an open day stay unacknowledged; a restarted consumer reads them again
    under its new key; once the day is over its cells are stored and the offset moves."""
    for n in range(8):
        await add_session(db, n, "46240", D0 + 36000 + n, D0 + 37000)
    clock = Clock(D0 + 40000)
    first = StatsService(SETTINGS, db, SqlStatsStore(db), clock=clock)
    await first.start()
    assert await first.step() == 16
    async with db.connect() as conn:
        assert await outbox.offset(conn, CONSUMER) == 0
    # A restart mid-day: a new service, a new key, the day's events read again.
    for n in range(8, 14):
        await add_session(db, n, "46201", D0 + 50000 + n, D0 + 51000)
    clock.t = D_END + 60
    second = StatsService(SETTINGS, db, SqlStatsStore(db), clock=clock)
    await second.start()
    assert await second.step() == 28
    assert not second.pipeline.keys.has(DAY)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        task = tg.create_task(second.writer.run(), name="test.writer")
        await second.writer.drained()
        task.cancel()
    cells = await SqlStatsStore(db).read_day(DAY)
    rocamadour = [c for c in cells if c.insee == "46240" and c.scope == "commune"]
    assert {c.period: c.visitors for c in rocamadour} == {"day": 8, "hour": 8}
    montcuq = [c for c in cells if c.insee == "46201" and c.scope == "commune"]
    assert {c.period: c.visitors for c in montcuq} == {"day": 6, "hour": 6}
    territory = next(c for c in cells if c.scope == "territory")
    assert territory.visitors == 14
    async with db.connect() as conn:
        assert await outbox.offset(conn, CONSUMER) == 28
        row = (await conn.execute(sa.select(stats_days))).one()
    assert row.day == DAY and row.devices == 14 and row.k == 5


async def test_late_events_of_a_final_day_are_not_counted_again(db: Database) -> None:
    """A consumer restarted after a day was final skips that day's remaining events."""
    for n in range(6):
        await add_session(db, n, "46240", D0 + 36000 + n, D0 + 37000)
    clock = Clock(D_END + 10)
    first = StatsService(SETTINGS, db, SqlStatsStore(db), clock=clock)
    await first.start()
    await first.step()
    await add_session(db, 99, "46240", D0 + 38000, D0 + 39000)
    second = StatsService(SETTINGS, db, SqlStatsStore(db), clock=clock)
    await second.start()
    assert await second.step() == 2
    assert second.pipeline.counters.late == 2 and second.reports == []


async def test_opted_out_device_is_not_counted(db: Database) -> None:
    """A MAC in the opt-out table is dropped before hashing and counted as opted out."""
    optout = OptOut(SETTINGS.optout_key.get_secret_value().encode())
    async with db.begin() as conn:
        await conn.execute(
            stats_optout.insert().values(
                mac_hash=optout.hash("02:00:00:00:00:03"), created_at=time.time()
            )
        )
    for n in range(7):
        await add_session(db, n, "46240", D0 + 36000 + n, D0 + 37000)
    service = StatsService(SETTINGS, db, SqlStatsStore(db), clock=Clock(D_END + 1))
    await service.start()
    await service.step()
    (report,) = service.reports
    assert report.devices == 6 and report.opted_out == 2
    assert service.pipeline.counters.opted_out == 2


async def test_controller_runs_the_consumer_when_enabled(mosquitto: Any, tmp_path: Path) -> None:
    """open_controller with [stats] enabled publishes yesterday's sessions by itself."""
    from controller.main import open_controller

    settings = Settings(
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/borne.db"},
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "client_id": "stats-test"},
        stats={"enabled": True, "k": 5, "poll_s": 0.05},
    )
    yesterday = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    y0, _ = day_bounds(yesterday, TZ)
    async with open_controller(settings, backoff_cap_s=1.0) as (controller, _tg):
        assert "stats.consumer" in {t.get_name() for t in asyncio.all_tasks()}
        await add_sessions(
            controller.db, [(n, "46240", y0 + 36000 + n, y0 + 37000) for n in range(6)]
        )
        async with asyncio.timeout(30):
            while not await SqlStatsStore(controller.db).read_day(yesterday):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        cells = await SqlStatsStore(controller.db).read_day(yesterday)
    assert {c.visitors for c in cells if c.scope == "commune"} == {6}


async def test_opting_out_mid_day_drops_the_day_s_earlier_sessions(db: Database) -> None:
    """A device seen before it opted out is left out of the whole day, not only after."""
    clock = Clock(D0 + 30000)
    service = StatsService(SETTINGS, db, SqlStatsStore(db), clock=clock)
    await service.start()
    for n in range(6):
        await add_session(db, n, "46240", D0 + 20000 + n, D0 + 21000)
    await service.step()  # device 3 is pseudonymised and held for the day
    await record_optout(db, SETTINGS, "02:00:00:00:00:03", time.time())
    await add_session(db, 3, "46102", D0 + 25000, D0 + 26000)  # its next session
    clock.t = D_END + 1
    await service.step()
    (report,) = service.reports
    assert report.devices == 5 and report.sessions == 5  # its first session too is gone
    assert report.opted_out == 2  # the start and stop events of its later session
    communes = {c.insee for c in report.protected.published if c.scope == "commune"}
    assert communes == {"46240"}, "nothing of the opted-out device's day is left"


async def test_portal_box_keeps_a_visitor_out_of_the_day_s_statistics(
    mosquitto: Any, tmp_path: Path, aiohttp_client: Any
) -> None:
    """Two visitors log in through the portal's form at a real agent over MQTT. The one
    who ticks "Ne pas compter mon appareil dans les statistiques de fréquentation" has a
    session like the other, but is absent from the day's statistics; the other counts."""
    from captive_portal.app import create_app
    from controller._demo_sim import Hotspot, fas_query, parse_form
    from controller.portal_backend import ControllerPortalBackend
    from tests.controller.test_bridge import (
        ROCAMADOUR,
        broker_settings,
        connected_controller,
        simulated_agent,
        until,
    )

    settings = broker_settings(mosquitto, tmp_path)
    ticked, unticked = "02:aa:00:00:00:01", "02:aa:00:00:00:02"
    ap_id = f"ap-optout-{time.time_ns() % 10**9}"
    async with connected_controller(settings, ap_id) as ctl:
        commune = ROCAMADOUR
        run = simulated_agent(ctl, ap_id, mosquitto, health_interval_s=60).start()
        agent, gateway = run.agent, run.gateway
        try:
            await until(lambda: agent.link.connected.is_set(), what="agent connected")
            client = await aiohttp_client(
                create_app(ctl.settings, ControllerPortalBackend(ctl, ack_wait_s=15.0))
            )
            hotspot = Hotspot(ap_id, commune, 1, 0, gateway)
            for i, (mac, tick) in enumerate(((ticked, True), (unticked, False))):
                ip = f"10.46.1.{10 + i}"
                gateway.arrive(mac, ip)
                fas = fas_query(hotspot, mac, ip, "http://example.org/", f"{i:064x}")
                page = await client.get(f"/fas/?fas={fas}", headers={"Accept-Language": "fr"})
                text = await page.text()
                assert "Ne pas compter mon appareil dans les statistiques de fréquentation" in text
                form = parse_form(text)
                assert form is not None
                action, fields = form
                assert ("stats_optout", "yes") not in fields, "unticked by default"
                if tick:
                    fields.append(("stats_optout", "yes"))
                answer = await client.post(action, data=fields)
                assert answer.status == 200, await answer.text()

            async def both_sessions() -> bool:
                async with ctl.db.connect() as conn:
                    macs = (await conn.execute(sa.select(sessions.c.mac))).scalars().all()
                return {ticked, unticked} <= set(macs)

            await until(both_sessions, what="both sessions opened")
        finally:
            await asyncio.to_thread(run.halt)
        stats_settings = ctl.settings.stats.model_copy(update={"k": 5})
        now = time.time()
        clock = Clock(now)
        service = StatsService(stats_settings, ctl.db, SqlStatsStore(ctl.db), clock=clock)
        await service.start()
        await service.step()
        clock.t = now + 86400
        await service.step()
        async with ctl.db.connect() as conn:
            hashes = (await conn.execute(sa.select(stats_optout.c.mac_hash))).scalars().all()
    (report,) = service.reports
    assert report.devices == 1 and report.sessions == 1 and report.opted_out >= 1
    optout = OptOut(ctl.settings.stats.optout_key.get_secret_value().encode())
    assert hashes == [optout.hash(ticked)] and ticked not in str(hashes)


async def test_simulated_days_apart_equal_those_computed_here() -> None:
    """The demo's preload, computed in a process of its own, gives the very cells the
    same simulation gives in this process (same seed, no noise), and none for no day."""
    days = ["2026-11-20"]
    here = await asyncio.to_thread(simulated_reports, SETTINGS, days, scale=0.03, seed=4)
    apart = await asyncio.to_thread(simulated_reports_apart, SETTINGS, days, scale=0.03, seed=4)
    assert [r.protected.published for r in apart] == [r.protected.published for _, r in here]
    assert apart[0].protected.published and here[0][0].truth()["devices"] == apart[0].devices
    assert await asyncio.to_thread(simulated_reports_apart, SETTINGS, [], scale=1, seed=0) == []


async def test_a_database_away_is_retried_and_the_day_recorded_once(db: Database) -> None:
    """The state database failing under the running consumer (injected: twice while
    reading events, once while recording the final day) is counted and retried; the day
    is then recorded and its cells stored, and the consumer keeps running."""
    from unittest import mock

    from controller.stats import _service

    for n in range(6):
        await add_session(db, n, "46240", D0 + 36000 + n, D0 + 37000)
    settings = SETTINGS.model_copy(update={"poll_s": 0.02})
    service = StatsService(settings, db, SqlStatsStore(db), clock=Clock(D_END + 60))
    away = sa.exc.OperationalError("SELECT ...", {}, Exception("database or disk is full"))
    real_refresh, real_record = service._refresh_optout, _service.record_day
    reads = records = 0

    async def refresh() -> None:
        nonlocal reads
        reads += 1
        if reads <= 2:
            raise away
        await real_refresh()

    async def record(*args: Any) -> None:
        nonlocal records
        records += 1
        if records == 1:
            raise away
        await real_record(*args)

    with (
        mock.patch.object(service, "_refresh_optout", refresh),
        mock.patch.object(_service, "record_day", record),
        mock.patch("controller.storage.db.backoff_delay", return_value=0.01),
    ):
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            task = tg.create_task(service.run(), name="stats.consumer")
            while True:
                async with db.connect() as conn:
                    if await outbox.offset(conn, CONSUMER) == 12:
                        break
                assert not task.done(), task
                await asyncio.sleep(0.02)
            await service.writer.drained()
            task.cancel()
    assert (service.failures, records) == (3, 2)
    async with db.connect() as conn:
        (row,) = (await conn.execute(sa.select(stats_days))).all()
    assert row.day == DAY and row.devices == 6
    assert [r.day for r in service.reports] == [DAY]
    assert any(c.scope == "territory" for c in await SqlStatsStore(db).read_day(DAY))
