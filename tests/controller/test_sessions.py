"""Sessions ledger: the AP clock skew comes from fresh readings, never from replays."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from agents._core import Envelope
from agents.contract import AcctEntry
from controller.service import Controller
from controller.sessions import SkewEstimator
from controller.storage.schema import access_points, sessions
from tests.controller.conftest import send

AP = "ap-46201-01"
T0 = 1_790_000_000.0
MAC = "02:00:00:00:00:01"
AHEAD = 100.0  # the AP's clock runs 100 s ahead of the controller's


def test_the_estimate_is_the_least_delayed_reading_of_the_window() -> None:
    est = SkewEstimator(window_s=600)
    assert est.observe(AP, 99.5, T0) == 99.5
    # A reading delayed by a spool replay is lower: it does not pull the estimate down.
    assert est.observe(AP, 99.5 - 3600, T0 + 10) == 99.5
    assert est.observe(AP, 99.9, T0 + 20) == 99.9
    # Once its readings leave the window, only the recent ones count.
    assert est.observe(AP, 42.0, T0 + 700) == 42.0
    est.reset(AP)
    assert est.observe(AP, -5.0, T0 + 701) == -5.0


async def skew(c: Controller) -> float:
    async with c.db.connect() as conn:
        q = sa.select(access_points.c.clock_skew_s).where(access_points.c.ap_id == AP)
        return float((await conn.execute(q)).scalar_one())


def online(env: Envelope, ts: float) -> Any:
    return env.status(ts, "online", agent_version="0.3", gateway="opennds", keepalive_s=30)


def health(env: Envelope, ts: float) -> Any:
    return env.health(
        ts,
        uptime_s=10.0,
        load1=0.1,
        mem_total_kb=1,
        mem_available_kb=1,
        disk_free_kb=1,
        clients=0,
        gateway_up=True,
        agent_version="0.3",
    )


async def connect(c: Controller, env: Envelope, now: float, ahead: float = AHEAD) -> None:
    """An agent starting while connected: its boot announcement (seq 1), then the status
    it writes at the connection, which measures the clock."""
    await send(c, env, "status", online(env, now + ahead), now)
    await send(c, env, "status", online(env, now + ahead), now)


async def test_replayed_messages_do_not_move_the_skew(controller: Controller) -> None:
    """A live status measures the skew; health replayed an hour late leaves it alone, and a
    replayed acct gets the right device time (back-filled, an hour ago)."""
    env = Envelope(AP)
    await connect(controller, env, T0)
    assert await skew(controller) == AHEAD
    # Taken an hour ago while connected, delivered now after an outage.
    await send(controller, env, "health", health(env, T0 + AHEAD - 3600), T0 + 5)
    assert await skew(controller) == AHEAD
    entry = AcctEntry(MAC, "10.46.1.100", T0 + AHEAD - 7200, 0, 1000)
    acct = env.acct(T0 + AHEAD - 3600, 60, [entry])
    await send(controller, env, "acct", acct, T0 + 6)
    async with controller.db.connect() as conn:
        (s,) = (await conn.execute(sa.select(sessions))).all()
    assert s.backfilled
    assert (s.started_at, s.updated_at) == (T0 - 7200, T0 - 3600)
    # A fresh health a little late on the network does not lower it either.
    await send(controller, env, "health", health(env, T0 + 10 + AHEAD - 0.3), T0 + 10)
    assert await skew(controller) == AHEAD


async def test_a_new_boot_measures_the_clock_again(controller: Controller) -> None:
    """After a reboot NTP may have set the clock: the old readings are forgotten."""
    env = Envelope(AP)
    await connect(controller, env, T0)
    assert await skew(controller) == AHEAD
    rebooted = Envelope(AP)
    await connect(controller, rebooted, T0 + 60, ahead=0.0)
    assert await skew(controller) == 0.0


async def test_a_boot_started_offline_is_not_read_as_a_slow_clock(controller: Controller) -> None:
    """An agent that starts during an outage spools its boot announcement with its first
    records; delivered 5 minutes late, the announcement is no clock reading: the records keep
    their own times (back-filled), and the status written at the connection measures the
    clock."""
    env = Envelope(AP)
    await connect(controller, env, T0, ahead=0.0)
    rebooted = Envelope(AP)
    started = T0 + 100.0
    announced = online(rebooted, started)
    entry = AcctEntry(MAC, "10.46.1.100", started, 0, 1000)
    acct = rebooted.acct(started + 1, 60, [entry])
    back = started + 300.0
    await send(controller, rebooted, "status", announced, back)
    async with controller.db.connect() as conn:
        q = sa.select(access_points.c.clock_skew_s).where(access_points.c.ap_id == AP)
        assert (await conn.execute(q)).scalar_one() is None
    await send(controller, rebooted, "acct", acct, back + 0.1)
    async with controller.db.connect() as conn:
        (s,) = (
            await conn.execute(sa.select(sessions).where(sessions.c.boot == rebooted.boot))
        ).all()
    assert s.backfilled
    assert (s.started_at, s.updated_at) == (started, started + 1)
    await send(controller, rebooted, "status", online(rebooted, back + 0.2), back + 0.2)
    assert await skew(controller) == 0.0


async def test_a_restarted_controller_keeps_the_skew_it_had(controller: Controller) -> None:
    """After a restart of the controller (its readings are in memory), the first readings
    were delayed in the broker's queue while it was down: they do not replace the stored
    estimate, so the session's times do not move and it is not split in two."""
    env = Envelope(AP)
    await connect(controller, env, T0, ahead=0.0)
    entry = AcctEntry(MAC, "10.46.1.100", T0 - 600, 0, 1000)
    await send(controller, env, "acct", env.acct(T0 + 1, 60, [entry]), T0 + 1)
    controller.ledger.skew = SkewEstimator()  # what a restart leaves
    # Taken while the controller was away for 40 s, delivered as it comes back.
    await send(controller, env, "health", health(env, T0 + 10), T0 + 50)
    assert await skew(controller) == 0.0
    later = AcctEntry(MAC, "10.46.1.100", T0 - 600, 0, 2000)
    await send(controller, env, "acct", env.acct(T0 + 40, 60, [later]), T0 + 50.1)
    async with controller.db.connect() as conn:
        (s,) = (await conn.execute(sa.select(sessions))).all()
    assert (s.started_at, s.down_bytes, s.stopped_at) == (T0 - 600, 2000, None)


async def test_a_new_estimate_of_the_skew_does_not_split_a_session(
    controller: Controller,
) -> None:
    """The AP's clock is 100 s ahead; a better reading moves the estimate by 20 s between
    two accounting messages: the session keeps its identity (the gateway's start, in the
    AP's clock), it is not closed as a "new-session"."""
    env = Envelope(AP)
    await send(controller, env, "status", online(env, T0 + AHEAD), T0)
    # The first reading at the connection was delayed 20 s on its way.
    await send(controller, env, "status", online(env, T0 + AHEAD - 20), T0)
    assert await skew(controller) == AHEAD - 20
    entry = AcctEntry(MAC, "10.46.1.100", T0 + AHEAD - 300, 0, 1000)
    await send(controller, env, "acct", env.acct(T0 + AHEAD + 1, 60, [entry]), T0 + 1)
    await send(controller, env, "health", health(env, T0 + AHEAD + 2), T0 + 2)
    assert await skew(controller) == AHEAD
    again = AcctEntry(MAC, "10.46.1.100", T0 + AHEAD - 300, 0, 2000)
    await send(controller, env, "acct", env.acct(T0 + AHEAD + 3, 60, [again]), T0 + 3)
    async with controller.db.connect() as conn:
        (s,) = (await conn.execute(sa.select(sessions))).all()
    assert (s.down_bytes, s.stopped_at) == (2000, None)
