"""``borne simulate --mqtt``: a simulated day through real agents, a real broker and the
controller's own pipeline gives back the simulator's ground truth.

Real parts: mosquitto (session fixture), one ``agents.agent.Agent`` per hotspot in its
thread, the controller's bridge, ingest, session ledger and outbox on SQLite, and its
statistics consumer. Only the gateways are simulated (``SimulatedGateway``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from controller.config import load_settings
from controller.registry import lot_communes
from controller.stats._core import day_bounds
from controller.stats._sim import TOURIST_WEIGHTS, SimDay, SimSession, simulate_day
from controller.stats._sim_mqtt import SimClock, plan_steps, run_mqtt
from controller.stats._stores import SqlStatsStore
from controller.storage import open_database
from controller.storage.schema import access_points, sessions
from tests.testbed import MosquittoBroker

DAY = "2026-08-14"


def _session(mac: str, start: float, stop: float, ap: str = "ap-46201-01") -> SimSession:
    return SimSession(ap, "46201", mac, start, stop, 10, 100)


def test_plan_steps_floors_starts_and_keeps_one_step_at_least() -> None:
    """Starts fall back to their step (never onto a later day); a session lasts a step."""
    sim = SimDay(DAY)
    sim.sessions = [
        _session("02:00:00:00:00:01", 1000.0, 1010.0),  # 20 s: kept one step
        _session("02:00:00:00:00:02", 1299.0, 2000.0),
        _session("02:00:00:00:00:03", 3599.0, 3700.0),
    ]
    steps = plan_steps([sim], 300)
    by_time = {s.at: s for s in steps}
    assert [s.at for s in steps] == [900, 1200, 1800, 3300, 3600]
    assert [a.mac[-2:] for a in by_time[900].arrivals] == ["01"]
    assert [a.mac[-2:] for a in by_time[1200].leaves] == ["01"]
    assert [a.mac[-2:] for a in by_time[1200].arrivals] == ["02"]
    assert [a.mac[-2:] for a in by_time[3300].arrivals] == ["03"]
    assert [a.mac[-2:] for a in by_time[3600].leaves] == ["03"]
    with pytest.raises(ValueError, match="hour"):
        plan_steps([sim], 7)


def test_sim_clock_moves_only_when_set() -> None:
    """The simulated clock stays still until the simulator moves it."""
    clock = SimClock(100)
    assert clock() == clock() == 100.0
    clock.set(160.5)
    assert clock() == 160.5


async def test_a_small_day_over_mqtt_gives_back_the_truth(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Published visitors per commune and flows equal the truth exactly (no noise).

    Five communes, about 270 devices and 600 sessions, 2 % of devices opted out; every
    session goes through a signed authorize command, the agent's clients and accounting
    messages, the ledger and the outbox. The controller sees no clock skew and nothing
    back-filled: the accelerated day lands on its own date.
    """
    by_name = {c.name: c for c in await asyncio.to_thread(lot_communes)}
    places = [by_name[name] for name in list(TOURIST_WEIGHTS)[:5]]
    sim = await asyncio.to_thread(simulate_day, DAY, scale=0.004, seed=3, communes=places)
    assert 150 <= sim.devices <= 400 and sim.optout_macs
    url = f"sqlite+aiosqlite:///{tmp_path / 'sim.db'}"
    settings = load_settings(
        None,
        database={"url": url},
        stats={"enabled": True, "k": 5, "optout_key": "test-optout-key"},
    )

    run = await run_mqtt(settings, [sim], mosquitto.host, mosquitto.port, step_s=300)

    assert run.failed == 0 and run.authorised == run.sessions == len(sim.sessions)
    assert run.max_skew_s == 0.0 and run.backfilled == 0
    counted = [s for s in sim.sessions if s.mac not in sim.optout_macs]
    summary = run.stats_days[DAY]
    assert summary["sessions"] == len(counted)
    assert summary["devices"] == sim.devices
    assert summary["opted_out"] > 0

    db = await open_database(url)
    try:
        cells = await SqlStatsStore(db).read_day(DAY)
        async with db.connect() as conn:
            stored = (await conn.execute(sa.select(sa.func.count()).select_from(sessions))).scalar()
            starts = (await conn.execute(sa.select(sessions.c.started_at))).scalars().all()
            aps = (
                await conn.execute(sa.select(sa.func.count()).select_from(access_points))
            ).scalar()
    finally:
        await db.aclose()
    assert stored == len(sim.sessions) and aps == len({s.ap_id for s in sim.sessions})
    # Every session starts within the local day, on the step of its simulated start.
    day0, day_end = day_bounds(DAY, ZoneInfo("Europe/Paris"))
    assert all(day0 <= t < day_end and t % 300 == 0 for t in starts)
    assert sorted(starts) == sorted(float(int(s.start) // 300 * 300) for s in sim.sessions)

    communes = {
        c.insee: c.values["visitors"]
        for c in cells
        if (c.kind, c.scope, c.period) == ("presence", "commune", "day")
    }
    flows = {(c.insee, c.destination): c.values["visitors"] for c in cells if c.kind == "flow"}
    assert communes == dict(sim.visitors), "every commune is published and exact"
    truth_flows = dict(sim.flows)
    assert flows and all(truth_flows[k] == v for k, v in flows.items())
    # Hidden flows are those under k, and only those.
    assert {k for k, v in truth_flows.items() if v >= 5} == set(flows)
    territory = [c for c in cells if c.scope == "territory"]
    assert territory and territory[0].values["visitors"] == sim.devices
