"""The statistics consumer of the session outbox (the only part here that awaits IO).

It reads session events after its cursor, feeds them to the :class:`Pipeline`, and,
once a local day is over, finalises it: the protected cells go to the store through
the :class:`BatchWriter`, the day is recorded in ``stats_days`` and its key destroyed.
The outbox offset of consumer ``stats`` moves only past events whose day is final, so
a restarted controller reads the unfinished day's events again and pseudonymises them
all under its new key: the day stays consistent, and no key outlives its process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from controller import outbox
from controller.config import StatsSettings
from controller.registry import Commune
from controller.stats._core import Limits, local_day
from controller.stats._pipeline import DayReport, Pipeline
from controller.stats._pseudo import OptOut
from controller.stats._sim import SimDay, simulate_day
from controller.stats._stores import (
    BatchWriter,
    Influx1Store,
    Influx2Store,
    SqlStatsStore,
    StatsStore,
)
from controller.storage import Database, retry_while_unavailable
from controller.storage.schema import session_events, sessions, stats_days, stats_optout

__all__ = [
    "CONSUMER",
    "StatsService",
    "make_pipeline",
    "make_store",
    "publish_reports",
    "record_day",
    "record_optout",
    "simulated_reports",
    "simulated_reports_apart",
]

logger = logging.getLogger(__name__)

CONSUMER = "stats"


def make_pipeline(settings: StatsSettings) -> Pipeline:
    """A pipeline configured from the ``[stats]`` settings."""
    limits = Limits(
        max_sessions=settings.max_sessions_per_device,
        max_communes=settings.max_communes_per_device,
        max_flows=settings.max_flows_per_device,
    )
    optout = OptOut(settings.optout_key.get_secret_value().encode())
    return Pipeline(ZoneInfo(settings.timezone), limits, settings.k, optout, settings.epsilon)


def make_store(settings: StatsSettings, db: Database) -> StatsStore:
    """The configured store."""
    tz = ZoneInfo(settings.timezone)
    if settings.store == "influxdb1":
        return Influx1Store(
            settings.url,
            settings.database,
            tz,
            settings.username,
            settings.password.get_secret_value() if settings.password else None,
        )
    if settings.store == "influxdb2":
        token = settings.token.get_secret_value() if settings.token else ""
        return Influx2Store(settings.url, settings.database, settings.org, token, tz)
    return SqlStatsStore(db)


async def record_day(db: Database, report: DayReport, k: int, epsilon: float | None) -> None:
    """Write the day's summary in ``stats_days`` (idempotent)."""
    values: dict[str, Any] = {
        "finalized_at": time.time(),
        "sessions": report.sessions,
        "devices": report.devices,
        "cells": report.cells,
        "published": len(report.protected.published),
        "opted_out": report.opted_out,
        "epsilon": epsilon,
        "k": k,
    }
    async with db.begin() as conn:
        await conn.execute(stats_days.delete().where(stats_days.c.day == report.day))
        await conn.execute(stats_days.insert().values(day=report.day, **values))


def simulated_reports(
    settings: StatsSettings,
    days: list[str],
    *,
    scale: float,
    seed: int,
    communes: list[Commune] | None = None,
) -> list[tuple[SimDay, DayReport]]:
    """Simulate ``days`` and run each through the controller's pipeline (fed directly,
    same opt-out, bounds and disclosure control). CPU work: call it in a worker thread."""
    out = []
    for day in days:
        sim = simulate_day(day, scale=scale, seed=seed, communes=communes)
        pipeline = make_pipeline(settings)
        for mac in sim.optout_macs:
            pipeline.optout.add(mac)
        for s in sim.sessions:
            pipeline.observe(
                ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start,
                stop=s.stop, up=s.up, down=s.down,
            )  # fmt: skip
        out.append((sim, pipeline.finalise(sim.day)))
    return out


def simulated_reports_apart(
    settings: StatsSettings, days: list[str], *, scale: float, seed: int
) -> list[DayReport]:
    """:func:`simulated_reports` in a process of its own (blocking: call it in a worker
    thread), so that a busy event loop in this process (the demo's broker, the
    controller) keeps its CPU; only the protected reports come back."""
    if not days:
        return []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=context, initializer=_ignore_interrupt
    ) as pool:
        return pool.submit(_reports_only, settings, days, scale, seed).result()


def _ignore_interrupt() -> None:
    # Ctrl-C reaches the whole process group: the parent stops its worker, the worker
    # itself must not die printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _reports_only(
    settings: StatsSettings, days: list[str], scale: float, seed: int
) -> list[DayReport]:
    return [report for _, report in simulated_reports(settings, days, scale=scale, seed=seed)]


async def publish_reports(
    settings: StatsSettings, db: Database, store: StatsStore, reports: list[DayReport]
) -> None:
    """Write finalised days' published cells to ``store`` and their ``stats_days`` rows.

    Raises:
        StoreError: the store refused the cells.
    """
    for report in reports:
        await store.write(report.protected.published)
        await record_day(db, report, settings.k, settings.epsilon)


async def record_optout(db: Database, settings: StatsSettings, mac: str, now: float) -> str:
    """Opt a device out of the statistics: its keyed hash goes to ``stats_optout`` (never
    the MAC). The consumer reads the list again before its next events, so a device opted
    out before its session opens is never pseudonymised. Returns the hash.

    Raises:
        ValueError: not a MAC address.
    """
    h = OptOut(settings.optout_key.get_secret_value().encode()).hash(mac)
    async with db.begin() as conn:
        await conn.execute(stats_optout.delete().where(stats_optout.c.mac_hash == h))
        await conn.execute(stats_optout.insert().values(mac_hash=h, created_at=now))
    return h


class StatsService:
    """Follows the outbox and publishes each finished day.

    Args:
        settings: the ``[stats]`` section.
        db: the state database (outbox, offsets, ``stats_days``, opt-out list).
        store: where cells go (the configured one when None).
        clock: seconds since the epoch (tests move days forward with it).
    """

    def __init__(
        self,
        settings: StatsSettings,
        db: Database,
        store: StatsStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.db = db
        self._store = store
        self.clock = clock
        self.cursor = 0
        self.reports: list[DayReport] = []
        self._optout_version: tuple[Any, ...] | None = None
        self._pipeline: Pipeline | None = None
        self._writer: BatchWriter | None = None
        self.failures = 0  # reads or writes of the state database tried again

    def _failed(self) -> None:
        self.failures += 1

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline (built by :meth:`start`)."""
        assert self._pipeline is not None, "start() first"
        return self._pipeline

    @property
    def writer(self) -> BatchWriter:
        """The batching writer (built by :meth:`start`)."""
        assert self._writer is not None, "start() first"
        return self._writer

    async def run(self) -> None:
        """Consume until cancelled (the writer runs beside, in the same TaskGroup). While
        the state database is away (a full disk, PostgreSQL restarting), a step is
        counted in ``failures`` and tried again: the cursor only moves in memory."""
        try:
            async with asyncio.TaskGroup() as tg:
                await self.start()
                tg.create_task(self.writer.run(), name="stats.writer")
                while True:
                    await retry_while_unavailable(
                        self.step, what="follow the sessions (statistics)", failed=self._failed
                    )
                    await asyncio.sleep(self.settings.poll_s)
        finally:
            if self._writer is not None:
                await self._writer.store.aclose()

    async def start(self) -> None:
        """Build the pipeline and the store; load the cursor and the finalised days."""
        # Reading the time zone database is file IO: once, off the loop (then cached).
        await asyncio.to_thread(ZoneInfo, self.settings.timezone)
        store = self._store or make_store(self.settings, self.db)
        self._writer = BatchWriter(store, self.settings.batch_size, self.settings.buffer_cells)
        self._pipeline = make_pipeline(self.settings)
        async with self.db.connect() as conn:
            self.cursor = await outbox.offset(conn, CONSUMER)
            days = (await conn.execute(sa.select(stats_days.c.day))).scalars().all()
        self.pipeline.finalised.update(days)
        logger.info(
            "statistics: consumer started after event %d; a new random key will be drawn "
            "for the current day (any earlier key of it died with the previous process)",
            self.cursor,
        )

    async def _refresh_optout(self) -> None:
        """Read the opt-out list again whenever it changed (one small query per step), so
        that an opt-out recorded at login is known before the session's first event."""
        async with self.db.connect() as conn:
            version = tuple(
                (
                    await conn.execute(
                        sa.select(sa.func.count(), sa.func.max(stats_optout.c.created_at))
                    )
                ).one()
            )
            if version == self._optout_version:
                return
            hashes = (await conn.execute(sa.select(stats_optout.c.mac_hash))).scalars().all()
        self.pipeline.optout.replace(hashes)
        self._optout_version = version

    async def step(self, limit: int = 1000) -> int:
        """Read and handle pending events, finalise finished days; events handled.

        The time is read before the events: a day is finalised only by a step that began
        after the day ended, so every event written during the day has been read by then.
        """
        now = self.clock()
        handled = 0
        while True:
            async with self.db.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(session_events.c.id.label("event_id"), sessions)
                        .join(sessions, sessions.c.id == session_events.c.session_id)
                        .where(session_events.c.id > self.cursor)
                        .order_by(session_events.c.id)
                        .limit(limit)
                    )
                ).all()
            # Read after the events: an opt-out is stored before its session's first
            # event, so every opt-out preceding these events is known (read before them,
            # one stored in between would be missed and its session counted).
            await self._refresh_optout()
            for r in rows:
                self.pipeline.observe(
                    ap_id=r.ap_id,
                    insee=r.insee,
                    mac=r.mac,
                    start=r.started_at,
                    stop=r.stopped_at if r.stopped_at is not None else r.updated_at,
                    up=int(r.up_bytes),
                    down=int(r.down_bytes),
                    session_id=int(r.id),
                    event_id=int(r.event_id),
                )
                self.cursor = int(r.event_id)
            handled += len(rows)
            if len(rows) < limit:
                break
        await self.finalise_past_days(now)
        await self._advance()
        return handled

    async def finalise_past_days(self, now: float | None = None) -> list[DayReport]:
        """Finalise every day in memory that is over at ``now`` (default: the clock)."""
        today = local_day(self.clock() if now is None else now, self.pipeline.tz)
        done = []
        for day in self.pipeline.open_days():
            if day >= today:
                continue
            report = await asyncio.to_thread(self.pipeline.finalise, day)
            self.writer.submit(report.protected.published)
            # The day is final in memory and its cells are on their way: record it now,
            # or a restart would publish it a second time (with other noise).
            await retry_while_unavailable(
                functools.partial(
                    record_day, self.db, report, self.settings.k, self.settings.epsilon
                ),
                what=f"record the statistics of {day}",
                failed=self._failed,
            )
            logger.info(
                "statistics: %s final: %d sessions, %d devices, %d cells, %d published "
                "(%d suppressed, %d of them secondary)",
                day,
                report.sessions,
                report.devices,
                report.cells,
                len(report.protected.published),
                report.protected.primary + report.protected.secondary,
                report.protected.secondary,
            )
            self.reports.append(report)
            done.append(report)
        return done

    async def _advance(self) -> None:
        firsts = [
            f for d in self.pipeline.open_days() if (f := self.pipeline.first_event(d)) is not None
        ]
        safe = min(firsts) - 1 if firsts else self.cursor
        async with self.db.begin() as conn:
            if safe > await outbox.offset(conn, CONSUMER):
                await outbox.advance(conn, CONSUMER, safe)
