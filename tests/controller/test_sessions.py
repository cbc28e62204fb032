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


async def test_replayed_messages_do_not_move_the_skew(controller: Controller) -> None:
    """A live status measures the skew; health replayed an hour late leaves it alone, and a
    replayed acct gets the right device time (back-filled, an hour ago)."""
    env = Envelope(AP)
    status = online(env, T0 + AHEAD)
    await send(controller, env, "status", status, T0)
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
    status = online(env, T0 + AHEAD)
    await send(controller, env, "status", status, T0)
    rebooted = Envelope(AP)
    status = online(rebooted, T0 + 60)
    await send(controller, rebooted, "status", status, T0 + 60)
    assert await skew(controller) == 0.0
