"""``borne simulate --mqtt``: simulated days played by real agents over real MQTT.

One real agent (:class:`agents.agent.Agent`, in a thread of its own) per simulated
hotspot, with a :class:`~agents.gateway.SimulatedGateway` that the simulator drives:
devices arrive, are authorised by a signed ``authorize`` command from the controller,
move data, leave, and arrive somewhere else. The controller's own ingest (bridge,
exactly-once claims, session ledger, outbox) and statistics consumer run in this process
against the broker and the configured database and store: the aggregates come out of
the production pipeline, and the simulator's ground truth is written beside them.

Accelerated time. Agents stamp their messages with their clock, and the controller
compares that clock with its own: a skew above 2 s is "corrected" (device times shifted
by the skew measured at the last status or health report) and a message older than two
accounting intervals is flagged as back-filled (``controller/sessions.py``). A clock
running faster than the controller's would thus be folded back onto the controller's
day. So every part here reads one :class:`SimClock`, which moves in steps only: at each
step the simulator sets the time, changes the gateways, waits until every agent has
read its gateway and until the controller has applied every message the agents sent,
and only then moves on. A message is therefore always applied at the very simulated
instant it was stamped (skew 0, never back-filled), and a session starts exactly at its
step: a day's sessions land on that day. A controller running elsewhere on the real
clock cannot take part in an accelerated day for that reason (it would see the agents'
clocks race ahead); hence the in-process controller.

Steps are ``step_s`` long (60 s by default): a session starting at 10:03:17 starts at
10:03:00 here (floor, so never on the next day), and lasts at least one step. The
agents send accounting every real second, so the volume of a session shorter than about
a real second of simulation may be missed (volumes are approximate; visitors, sessions
and flows are exact). Standard agents' rules apply unchanged: the only addition is a
lock that keeps the clock still while an agent reads its gateway or handles a command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any, Final
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import AuthorizeArgs
from agents.gateway import SimulatedGateway
from controller.bridge import Bridge
from controller.config import Settings
from controller.registry import Registry, lot_communes
from controller.service import Controller
from controller.stats._core import day_bounds
from controller.stats._service import StatsService, record_optout
from controller.stats._sim import SimDay, SimSession
from controller.storage import Database, open_database
from controller.storage.schema import access_points, communes, processed_messages, stats_days

__all__ = ["MqttRun", "SimClock", "SimulationError", "plan_steps", "run_mqtt"]

logger = logging.getLogger(__name__)

# Agents read their gateway this often (real seconds): the wait of each step.
AGENT_POLL_S: Final = 0.05
# Accounting every real second; health once at start (a reading of this machine).
AGENT_ACCT_S: Final = 1
AGENT_HEALTH_S: Final = 3600
# How long one step may take to settle before the run is declared stuck (real seconds).
SETTLE_TIMEOUT_S: Final = 60.0
# How long the finalisation of the last day may take (real seconds).
FINAL_TIMEOUT_S: Final = 120.0


class SimulationError(Exception):
    """The simulation could not go on (broker unreachable, controller stuck)."""


class SimClock:
    """The simulated time, moved by the simulator only (one float: thread-safe)."""

    def __init__(self, t: float) -> None:
        self._t = float(t)

    def __call__(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        """Move to ``t``."""
        self._t = float(t)


class _SimAgent(Agent):
    """The real agent; the simulator never moves the clock in the middle of its work.

    ``world`` is held while the agent reads its gateway, sends accounting or handles a
    command, and by the simulator while it moves the clock and changes the gateways, so
    that the time stamped on an event is the time of the change that caused it.
    """

    def __init__(self, *args: Any, world: threading.RLock, **kwargs: Any) -> None:
        self.world = world
        self.polls = 0
        self.last_seq = 0
        super().__init__(*args, **kwargs)

    def _publish(self, kind: str, msg: Any, retain: bool = False) -> None:
        super()._publish(kind, msg, retain)
        self.last_seq = max(self.last_seq, int(msg.seq))

    def _publish_status_online(self) -> None:
        with self.world:
            super()._publish_status_online()

    def poll(self) -> None:
        """Read the gateway (counted, for the simulator's steps)."""
        with self.world:
            super().poll()
            self.polls += 1

    def publish_acct(self) -> None:
        """Accounting at the simulated time."""
        with self.world:
            super().publish_acct()

    def publish_health(self) -> None:
        """Health once connected (a PUBLISH before CONNECT would be refused)."""
        if self.link.connected.is_set():
            with self.world:
                super().publish_health()

    def handle_command(self, payload: bytes) -> None:
        """A command, checked against the simulated time."""
        with self.world:
            super().handle_command(payload)


@dataclasses.dataclass
class _Hotspot:
    ap_id: str
    insee: str
    index: int
    gateway: SimulatedGateway
    agent: _SimAgent | None = None
    thread: threading.Thread | None = None
    hosts: int = 0

    def next_ip(self) -> str:
        self.hosts += 1
        return f"10.{64 + self.index // 250}.{self.index % 250}.{2 + self.hosts % 250}"


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """What happens at one instant: devices leave, then devices arrive."""

    at: int
    leaves: tuple[SimSession, ...]
    arrivals: tuple[SimSession, ...]


def plan_steps(sims: list[SimDay], step_s: int) -> list[Step]:
    """The sessions of ``sims`` as arrivals and departures on a grid of ``step_s``.

    A session starts at the step its start falls in (floor: never on a later day) and
    leaves at the step its stop falls in, one step after its start at the earliest.

    Raises:
        ValueError: ``step_s`` does not divide an hour.
    """
    if not (1 <= step_s <= 3600 and 3600 % step_s == 0):
        raise ValueError("the step must divide an hour (60, 300, 900...)")
    arrive: dict[int, list[SimSession]] = defaultdict(list)
    leave: dict[int, list[SimSession]] = defaultdict(list)
    for sim in sims:
        for s in sim.sessions:
            t0 = int(s.start) // step_s * step_s
            t1 = max(int(s.stop) // step_s * step_s, t0 + step_s)
            arrive[t0].append(s)
            leave[t1].append(s)
    return [
        Step(t, tuple(leave.get(t, ())), tuple(arrive.get(t, ())))
        for t in sorted(set(arrive) | set(leave))
    ]


@dataclasses.dataclass
class MqttRun:
    """What a run did.

    Attributes:
        days: the simulated days, finalised by the controller's statistics consumer.
        sessions: sessions played.
        authorised: of which authorised by the agent's ack.
        failed: authorisations refused or unanswered (their sessions are missing).
        steps: clock steps.
        wall_s: real seconds the run took.
        messages: agent messages applied by the controller.
        max_skew_s: the largest clock skew the controller recorded for a hotspot.
        backfilled: agent messages the controller saw as back-filled (0 expected).
        stats_days: ``stats_days`` rows of the simulated days (day → summary).
    """

    days: list[str]
    sessions: int = 0
    authorised: int = 0
    failed: int = 0
    steps: int = 0
    wall_s: float = 0.0
    messages: int = 0
    max_skew_s: float = 0.0
    backfilled: int = 0
    stats_days: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _sim_settings(settings: Settings, host: str, port: int) -> Settings:
    """The controller's settings for a simulation: the given broker, a client id of its
    own, and no stale-session closing (accounting comes every real second, which is
    minutes of simulated time)."""
    mqtt = settings.mqtt.model_copy(
        update={
            "host": host,
            "port": port,
            "client_id": f"borne-simulate-{secrets.token_hex(4)}",
            "share_group": None,
        }
    )
    sessions = settings.sessions.model_copy(update={"acct_interval_s": 3600, "stale_factor": 100})
    stats = settings.stats.model_copy(update={"poll_s": 0.2})
    return settings.model_copy(update={"mqtt": mqtt, "sessions": sessions, "stats": stats})


class _Simulation:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        sims: list[SimDay],
        step_s: int,
        state_dir: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.sims = sims
        self.step_s = step_s
        self.state_dir = state_dir
        self.tz = ZoneInfo(settings.stats.timezone)
        self.clock = SimClock(day_bounds(sims[0].day, self.tz)[0] - step_s)
        self.world = threading.RLock()
        self.stop_event = threading.Event()
        self.hotspots: dict[str, _Hotspot] = {}
        self.run = MqttRun([s.day for s in sims])
        self.controller: Controller | None = None

    # -- set-up ------------------------------------------------------------------------
    async def register(self) -> None:
        """Seed the communes if needed and register every simulated hotspot."""
        async with self.db.connect() as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(communes))).scalar()
        all_communes = await asyncio.to_thread(lot_communes)
        if not count:
            await self.registry.add_communes(all_communes)
        by_insee = {c.insee: c for c in all_communes}
        aps = sorted({(s.ap_id, s.insee) for sim in self.sims for s in sim.sessions})
        for index, (ap_id, insee) in enumerate(aps):
            c = by_insee[insee]
            await self.registry.add_access_point(
                ap_id, insee, f"{c.name} — borne simulée", lon=c.lon, lat=c.lat
            )
            gateway = SimulatedGateway(clock=self.clock)
            self.hotspots[ap_id] = _Hotspot(ap_id, insee, index, gateway)
        await self.registry.load()
        now = self.clock()
        for sim in self.sims:
            for mac in sorted(sim.optout_macs):
                await record_optout(self.db, self.settings.stats, mac, now)

    def start_agents(self) -> None:
        """One agent per hotspot, each in its own thread."""
        for h in self.hotspots.values():
            config = AgentConfig(
                ap_id=h.ap_id,
                command_key=self.registry.command_key(h.ap_id),
                mqtt_host=self.settings.mqtt.host,
                mqtt_port=self.settings.mqtt.port,
                poll_interval_s=AGENT_POLL_S,
                acct_interval_s=AGENT_ACCT_S,
                health_interval_s=AGENT_HEALTH_S,
                gateway="simulated",
                state_dir=self.state_dir,
            )
            h.agent = _SimAgent(
                config,
                h.gateway,
                clock=self.clock,
                backoff_cap_s=2.0,
                persist_state=False,
                world=self.world,
            )
            h.thread = threading.Thread(
                target=_run_agent,
                args=(h.agent, self.stop_event),
                name=f"sim-agent[{h.ap_id}]",
                daemon=True,
            )
            h.thread.start()

    def _agents(self) -> list[_SimAgent]:
        return [h.agent for h in self.hotspots.values() if h.agent is not None]

    async def wait_connected(self, timeout_s: float = 30.0) -> None:
        """Every agent connected to the broker, or SimulationError."""
        deadline = time.monotonic() + timeout_s
        while not all(a.link.connected.is_set() for a in self._agents()):
            if time.monotonic() > deadline:
                raise SimulationError(
                    "les agents simulés n'atteignent pas le courtier MQTT / "
                    "the simulated agents cannot reach the MQTT broker"
                )
            await asyncio.sleep(0.05)

    async def stop_agents(self) -> None:
        """Stop the agents (each says goodbye) and wait for their threads."""
        self.stop_event.set()

        def join() -> None:
            deadline = time.monotonic() + 10.0
            for h in self.hotspots.values():
                if h.thread is not None:
                    h.thread.join(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(join)

    # -- the steps ---------------------------------------------------------------------
    async def _wait_polls(self, seen: dict[str, int]) -> None:
        """Until each agent in ``seen`` has read its gateway since the count recorded."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        for ap_id, count in seen.items():
            agent = self.hotspots[ap_id].agent
            assert agent is not None
            while agent.polls <= count:
                if time.monotonic() > deadline:
                    raise SimulationError(f"agent {ap_id} stopped reading its gateway")
                await asyncio.sleep(AGENT_POLL_S / 4)

    async def settle(self) -> None:
        """Until the controller has applied every message every agent has sent."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            want = {a.envelope.boot: a.last_seq for a in self._agents() if a.last_seq}
            pm = processed_messages.c
            query = (
                sa.select(pm.boot, sa.func.max(pm.seq))
                .where(pm.boot.in_(sorted(want)))
                .group_by(pm.boot)
            )
            async with self.db.connect() as conn:
                got = dict((await conn.execute(query)).all())
            if all(got.get(boot, 0) >= seq for boot, seq in want.items()):
                return
            if time.monotonic() > deadline:
                raise SimulationError(
                    "le contrôleur n'a pas traité les messages des agents à temps / "
                    "the controller did not apply the agents' messages in time"
                )
            await asyncio.sleep(0.005)

    def _apply(
        self, t: int, leaves: tuple[SimSession, ...], arrivals: tuple[SimSession, ...]
    ) -> dict[str, int]:
        """Move the clock and change the gateways (in a worker thread: it takes locks)."""
        with self.world:
            self.clock.set(t)
            for s in leaves:
                self.hotspots[s.ap_id].gateway.leave(s.mac)
            for s in arrivals:
                h = self.hotspots[s.ap_id]
                h.gateway.arrive(s.mac, h.next_ip())
            return {s.ap_id: self._polls(s.ap_id) for s in leaves}

    def _polls(self, ap_id: str) -> int:
        agent = self.hotspots[ap_id].agent
        assert agent is not None
        return agent.polls

    def _browse(self, sessions: list[SimSession]) -> None:
        for s in sessions:
            self.hotspots[s.ap_id].gateway.browse(s.mac, s.up, s.down)

    async def _authorise(self, s: SimSession) -> bool:
        assert self.controller is not None
        args = AuthorizeArgs(
            mac=s.mac,
            minutes=self.settings.sessions.session_minutes,
            up_kbps=0,
            down_kbps=0,
        )
        cmd_id = await self.controller.send_command(s.ap_id, args, purpose="click-through")
        ack = await self.controller.wait_ack(cmd_id, 10.0)
        if ack is None:
            self.controller.forget_ack(cmd_id)
            return False
        return bool(ack.ok)

    async def step(self, step: Step) -> None:
        """One instant: departures, arrivals with their authorisations, then settle."""
        leaving = {(s.ap_id, s.mac) for s in step.leaves}
        back = [s for s in step.arrivals if (s.ap_id, s.mac) in leaving]
        if back:
            # A device leaving and coming back to the same hotspot at this step: the
            # agent must see it gone before it comes back (another session).
            seen = await asyncio.to_thread(self._apply, step.at, step.leaves, ())
            await self._wait_polls(seen)
            await asyncio.to_thread(self._apply, step.at, (), step.arrivals)
        else:
            seen = await asyncio.to_thread(self._apply, step.at, step.leaves, step.arrivals)
        results = await asyncio.gather(*(self._authorise(s) for s in step.arrivals))
        ok = [s for s, r in zip(step.arrivals, results, strict=True) if r]
        self.run.sessions += len(step.arrivals)
        self.run.authorised += len(ok)
        self.run.failed += len(step.arrivals) - len(ok)
        if ok:
            await asyncio.to_thread(self._browse, ok)
        if not back:
            await self._wait_polls(seen)
        await self.settle()
        self.run.steps += 1

    async def finish(self, stats: StatsService) -> None:
        """Move past the last day, then wait until the consumer has published every day."""
        last_end = day_bounds(self.sims[-1].day, self.tz)[1]
        if self.clock() < last_end + self.step_s:
            await asyncio.to_thread(self._apply, int(last_end + self.step_s), (), ())
            await self.settle()
        deadline = time.monotonic() + FINAL_TIMEOUT_S
        days = set(self.run.days)
        while True:
            async with self.db.connect() as conn:
                rows = (
                    await conn.execute(sa.select(stats_days).where(stats_days.c.day.in_(days)))
                ).all()
            if len(rows) == len(days):
                break
            if time.monotonic() > deadline:
                raise SimulationError("statistics consumer did not finalise the days in time")
            await asyncio.sleep(0.1)
        async with asyncio.timeout(FINAL_TIMEOUT_S):
            await stats.writer.drained()
        self.run.stats_days = {
            r.day: {k: v for k, v in r._mapping.items() if k != "day"} for r in rows
        }

    async def measure(self) -> None:
        """What the controller recorded of the agents' clocks."""
        assert self.controller is not None
        async with self.db.connect() as conn:
            skews = (
                (
                    await conn.execute(
                        sa.select(access_points.c.clock_skew_s).where(
                            access_points.c.ap_id.in_(sorted(self.hotspots))
                        )
                    )
                )
                .scalars()
                .all()
            )
        self.run.max_skew_s = max((abs(s or 0.0) for s in skews), default=0.0)
        counters = self.controller.counters
        self.run.backfilled = counters["backfilled"]
        self.run.messages = sum(v for k, v in counters.items() if k.startswith("applied_"))


def _run_agent(agent: Agent, stop: threading.Event) -> None:
    try:
        agent.run(stop)
    except Exception:
        # One agent's crash guard: the run notices (its step never settles) and says so.
        logger.error("simulated agent %s crashed", agent.config.ap_id, exc_info=True)


async def run_mqtt(
    settings: Settings,
    sims: list[SimDay],
    host: str,
    port: int,
    *,
    step_s: int = 60,
    progress: bool = False,
) -> MqttRun:
    """Play ``sims`` (consecutive days) through real agents over the broker ``host:port``.

    The controller's ingest and statistics consumer run here on the simulated clock,
    on the configured database and statistics store; the sessions, their outbox events
    and the published cells stay there. Use a database of its own for a simulation.

    Raises:
        SimulationError: the broker is unreachable, or the controller got stuck.
        ValueError: no session to play, or a step that does not divide an hour.
    """
    steps = plan_steps(sims, step_s)
    if not steps:
        raise ValueError("nothing to simulate")
    settings = _sim_settings(settings, host, port)
    started = time.monotonic()
    db = await open_database(settings.database.url.get_secret_value())
    registry = Registry(db, settings.command_master_key.get_secret_value())
    bridge: Bridge | None = None
    tmp = await asyncio.to_thread(tempfile.TemporaryDirectory, prefix="borne-simulate-")
    try:
        sim = _Simulation(settings, db, registry, sims, step_s, tmp.name)
        await sim.register()
        bridge = Bridge(settings.mqtt, backoff_cap_s=2.0)
        controller = Controller(settings, db, registry, bridge=bridge, clock=sim.clock)
        sim.controller = controller
        stats = StatsService(settings.stats, db, clock=sim.clock)
        bridge.start()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(controller.consume(), name="simulate.ingest"),
                tg.create_task(stats.run(), name="simulate.stats"),
            ]
            try:
                # A message published before the bridge's subscription would be dropped
                # by the broker (no subscriber yet): the agents wait for it.
                if not await bridge.wait_subscribed(30.0):
                    raise SimulationError(
                        "le contrôleur ne s'abonne pas aux messages des agents / "
                        "the controller cannot subscribe to the agents' topics"
                    )
                sim.start_agents()
                await sim.wait_connected()
                await sim.settle()
                total = len(steps)
                for i, step in enumerate(steps):
                    await sim.step(step)
                    if progress and i % 100 == 0:
                        print(f"  {i}/{total} pas / steps", flush=True)
                await sim.finish(stats)
                await sim.measure()
            finally:
                await sim.stop_agents()
                for task in tasks:
                    task.cancel()
    finally:
        if bridge is not None:
            await bridge.aclose()
        await db.aclose()
        await asyncio.to_thread(tmp.cleanup)
    sim.run.wall_s = time.monotonic() - started
    return sim.run
