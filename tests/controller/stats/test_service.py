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
from controller.stats._service import CONSUMER, StatsService
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
