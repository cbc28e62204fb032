"""Agent and controller over a real mosquitto broker: commands, sessions, Will, outages."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import (
    AGENT_KINDS,
    AuthorizeArgs,
    DeauthorizeArgs,
    controller_subscription,
    topic,
)
from agents.gateway import SimulatedGateway
from controller.bridge import Bridge
from controller.config import Settings, load_settings
from controller.main import open_controller
from controller.registry import Commune
from controller.service import Controller
from controller.storage.schema import access_points, sessions
from tests.testbed import MosquittoBroker, require

pytestmark = [pytest.mark.broker]

MASTER = "bridge-test-master-key-0123"
MAC = "02:00:00:00:00:0a"
_ids = itertools.count()


@dataclass
class AgentRun:
    """An agent running in a thread, as on an access point."""

    agent: Agent
    gateway: SimulatedGateway
    broker: Any
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> AgentRun:
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,), daemon=True)
        self.thread.start()
        return self

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)


def broker_settings(broker: Any, tmp_path: Path, **sessions_over: Any) -> Settings:
    n = next(_ids)
    return load_settings(
        None,
        command_master_key=MASTER,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        mqtt={"host": broker.host, "port": broker.port, "client_id": f"ctl-{n}-{time.time_ns()}"},
        sessions={"acct_interval_s": 10, **sessions_over},
    )


async def until(pred: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    """Poll an async or sync predicate until it is truthy."""
    deadline = time.monotonic() + within
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.05)


ROCAMADOUR = Commune("46201", "Rocamadour", 1.6, 44.8)


@asynccontextmanager
async def connected_controller(
    settings: Settings, ap_id: str, communes: Sequence[Commune] = (ROCAMADOUR,)
) -> AsyncIterator[Controller]:
    """A controller core with ``communes`` and the access point ``ap_id`` (in the first
    commune), once connected to its broker."""
    async with open_controller(settings, backoff_cap_s=1.0) as (controller, _tg):
        await controller.registry.add_communes(list(communes))
        await controller.registry.add_access_point(ap_id, communes[0].insee, "test")
        await until(lambda: controller.bridge and controller.bridge.subscribed.is_set())
        yield controller


@pytest.fixture
async def ctl(mosquitto: Any, tmp_path: Path) -> AsyncIterator[Controller]:
    """A controller core connected to the test broker, with one registered AP."""
    settings = broker_settings(mosquitto, tmp_path)
    async with connected_controller(settings, f"ap-bridge-{next(_ids)}") as controller:
        yield controller


def simulated_agent(
    ctl: Controller,
    ap_id: str,
    broker: Any,
    keepalive: int = 30,
    gateway: SimulatedGateway | None = None,
    health_interval_s: int = 1,
) -> AgentRun:
    """A real agent of ``ap_id`` (not started yet), its gateway simulated, over ``broker``."""
    cfg = AgentConfig(
        ap_id=ap_id,
        command_key=ctl.registry.command_key(ap_id),
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        keepalive_s=keepalive,
        poll_interval_s=0.2,
        acct_interval_s=1,
        health_interval_s=health_interval_s,
        gateway="simulated",
    )
    gw = gateway or SimulatedGateway()
    return AgentRun(Agent(cfg, gw, backoff_cap_s=1.0, persist_state=False), gw, broker)


def clear_status(broker: Any, ap_ids: Iterable[str]) -> None:
    """Clear the APs' retained status so that later tests' controllers do not receive it."""
    publish_raw(broker, [(topic(ap, "status"), b"") for ap in set(ap_ids)], retain=True)


@asynccontextmanager
async def running_agent(ctl: Controller, ap_id: str, broker: Any) -> AsyncIterator[AgentRun]:
    """``simulated_agent`` running; stopped, and its retained status cleared, at exit."""
    run = simulated_agent(ctl, ap_id, broker).start()
    try:
        yield run
    finally:
        await asyncio.to_thread(run.halt)
        await asyncio.to_thread(clear_status, broker, [ap_id])


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentRun]]:
    """Factory of agent threads, all stopped at teardown."""
    runs: list[AgentRun] = []

    def make(*args: Any, **kwargs: Any) -> AgentRun:
        run = simulated_agent(*args, **kwargs).start()
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.halt()
    if runs:
        clear_status(runs[0].broker, [run.agent.config.ap_id for run in runs])


async def ap_row(ctl: Controller, ap_id: str) -> Any:
    async with ctl.db.connect() as conn:
        q = sa.select(access_points).where(access_points.c.ap_id == ap_id)
        return (await conn.execute(q)).first()


async def session_rows(ctl: Controller) -> list[Any]:
    async with ctl.db.connect() as conn:
        return list((await conn.execute(sa.select(sessions).order_by(sessions.c.id))).all())


async def the_ap(ctl: Controller) -> str:
    (row,) = [r for r in await ctl.registry.access_points()]
    return str(row.ap_id)


async def test_login_command_session_and_deauth_over_mqtt(
    ctl: Controller, agents: Callable[..., AgentRun], mosquitto: Any
) -> None:
    """authorize is acked once, opens a session with growing counters; deauthorize closes it."""
    ap_id = await the_ap(ctl)
    run = agents(ctl, ap_id, mosquitto)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    run.gateway.arrive(MAC, "10.46.1.100")
    cmd_id = await ctl.send_command(
        ap_id, AuthorizeArgs(mac=MAC, minutes=60), purpose="click-through"
    )
    ack = await ctl.wait_ack(cmd_id, 10)
    assert ack is not None and ack.ok
    (s,) = await until(lambda: session_rows(ctl), what="session opened")
    assert (s.mac, s.ip, s.auth_method, s.auth_ref) == (MAC, "10.46.1.100", "click-through", cmd_id)
    run.gateway.browse(MAC, 1000, 50_000)
    await until(lambda: _bytes(ctl, 50_000), what="counters")
    cmd2 = await ctl.send_command(ap_id, DeauthorizeArgs(mac=MAC))
    assert (a2 := await ctl.wait_ack(cmd2, 10)) is not None and a2.ok
    await until(lambda: _closed(ctl, "left"), what="session closed")
    assert run.agent.counters["commands_ok"] == 2
    # Only retained statuses of other tests' APs (unknown here) may have been refused.
    assert ctl.counters["rejected"] == ctl.counters["rejected_unknown_ap"]


async def _state(ctl: Controller, ap_id: str, state: str) -> bool:
    row = await ap_row(ctl, ap_id)
    return row is not None and row.state == state


async def _bytes(ctl: Controller, down: int) -> bool:
    rows = await session_rows(ctl)
    return bool(rows) and rows[0].down_bytes >= down


async def _closed(ctl: Controller, cause: str) -> bool:
    rows = await session_rows(ctl)
    return bool(rows) and rows[-1].terminate_cause == cause


async def test_an_authorize_for_an_absent_client_is_nacked(
    ctl: Controller, agents: Callable[..., AgentRun], mosquitto: Any
) -> None:
    """The agent refuses to authorise a MAC its gateway does not list (forged portal query)."""
    ap_id = await the_ap(ctl)
    agents(ctl, ap_id, mosquitto)
    await until(lambda: _state(ctl, ap_id, "online"))
    cmd_id = await ctl.send_command(ap_id, AuthorizeArgs(mac=MAC, minutes=60))
    ack = await ctl.wait_ack(cmd_id, 10)
    assert ack is not None and not ack.ok and ack.error
    assert await session_rows(ctl) == []


async def test_killed_agent_goes_offline_and_its_restart_closes_sessions(
    ctl: Controller, agents: Callable[..., AgentRun], mosquitto: Any
) -> None:
    """The Will marks the AP offline within the keep-alive window; a new boot closes sessions."""
    ap_id = await the_ap(ctl)
    gw = SimulatedGateway()
    gw.arrive(MAC, "10.46.1.7")
    gw.authorize(MAC, 60, 0, 0, 0, 0)
    run = agents(ctl, ap_id, mosquitto, keepalive=5, gateway=gw)
    await until(lambda: session_rows(ctl), what="session from the agent's first report")
    first_boot = run.agent.envelope.boot
    killed_at = time.monotonic()
    await asyncio.to_thread(run.agent.link.kill)  # no DISCONNECT, as in a crash
    run.stop.set()
    # mosquitto sends the Will after 1.5 x keep-alive without traffic.
    await until(lambda: _state(ctl, ap_id, "offline"), within=15, what="offline by Will")
    assert time.monotonic() - killed_at <= 5 * 1.5 + 3
    again = agents(ctl, ap_id, mosquitto, keepalive=5, gateway=gw)
    assert again.agent.envelope.boot != first_boot
    await until(lambda: _state(ctl, ap_id, "online"), what="back online")
    await until(lambda: _closed_reboot(ctl), what="stale session closed")
    await until(lambda: _open_count(ctl, 1), what="the new run's session")


async def _closed_reboot(ctl: Controller) -> bool:
    return any(r.terminate_cause == "ap-reboot" for r in await session_rows(ctl))


async def _open_count(ctl: Controller, n: int) -> bool:
    return sum(r.stopped_at is None for r in await session_rows(ctl)) == n


async def test_nothing_is_lost_across_a_broker_outage(
    ctl: Controller, agents: Callable[..., AgentRun], mosquitto: Any
) -> None:
    """Events published while the broker is down arrive after it comes back."""
    ap_id = await the_ap(ctl)
    run = agents(ctl, ap_id, mosquitto)
    await until(lambda: _state(ctl, ap_id, "online"))
    await asyncio.to_thread(mosquitto.stop)
    try:
        await until(lambda: not run.agent.link.connected.is_set(), what="agent disconnected")
        before = run.agent.counters["published_clients"]
        run.gateway.arrive(MAC, "10.46.1.8")
        run.gateway.authorize(MAC, 60, 0, 0, 0, 0)
        await until(lambda: run.agent.counters["published_clients"] > before, what="queued")
    finally:
        await asyncio.to_thread(mosquitto.start)
    await until(lambda: session_rows(ctl), within=30, what="session after the outage")
    assert run.agent.link.reconnects >= 1


async def test_a_database_away_holds_the_message_unacknowledged(
    ctl: Controller, agents: Callable[..., AgentRun], mosquitto: Any
) -> None:
    """While the state database fails (a full disk, injected), the message is neither
    acknowledged nor dropped: it is counted, tried again, stored, and only then acked."""
    from unittest import mock

    assert ctl.bridge is not None
    ap_id = await the_ap(ctl)
    run = agents(ctl, ap_id, mosquitto)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    real_handle, real_ack = ctl.handle, ctl.bridge.ack
    seen: list[str] = []

    async def handle(topic_name: str, payload: bytes, now: float | None = None) -> str:
        if topic_name.endswith("/clients"):
            if seen.count("failed") < 2:
                seen.append("failed")
                raise sa.exc.OperationalError("INSERT ...", {}, Exception("disk is full"))
            seen.append(await real_handle(topic_name, payload, now))
            return seen[-1]
        return await real_handle(topic_name, payload, now)

    def ack(item: Any) -> None:
        if item.topic.endswith("/clients"):
            seen.append("acked")
        real_ack(item)

    with (
        mock.patch.object(ctl, "handle", handle),
        mock.patch.object(ctl.bridge, "ack", ack),
        mock.patch("controller.storage.db.backoff_delay", return_value=0.05),
    ):
        run.gateway.arrive(MAC, "10.46.1.8")
        run.gateway.authorize(MAC, 60, 0, 0, 0, 0)
        await until(lambda: session_rows(ctl), what="the session once the database is back")
        await until(lambda: "acked" in seen, what="the acknowledgement")
    assert seen[:4] == ["failed", "failed", "applied", "acked"]
    assert ctl.counters["storage_errors"] == 2


async def test_bad_input_over_the_broker_is_counted_and_harmless(
    ctl: Controller,
    agents: Callable[..., AgentRun],
    mosquitto: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forged, unknown, mistyped, huge or broken messages are counted; service keeps going."""
    import hashlib
    import hmac
    import json

    from agents._core import Envelope
    from agents.contract import canonical_bytes, seal

    ap_id = await the_ap(ctl)
    key = ctl.registry.command_key(ap_id).encode()
    env = Envelope(ap_id)
    mistyped = json.loads(seal(env.ack(time.time(), "c1", True), key))
    mistyped["ok"] = "yes"  # a wrong type, correctly signed
    mistyped["sig"] = hmac.new(key, canonical_bytes(mistyped), hashlib.sha256).hexdigest()
    cases = [
        (topic(ap_id, "ack"), seal(env.ack(time.time(), "c2", True), b"not-the-key" * 3)),
        (topic("ap-unknown-9", "ack"), seal(Envelope("ap-unknown-9").ack(1.8e9, "c", True), key)),
        (topic(ap_id, "ack"), json.dumps(mistyped).encode()),
        (topic(ap_id, "acct"), b"[" + b"0," * 40_000 + b"0]"),
        (topic(ap_id, "clients"), b'{"v":1,'),
    ]
    await asyncio.to_thread(publish_raw, mosquitto, cases)
    await until(lambda: ctl.counters["rejected"] >= len(cases), what="all rejected")
    assert {k: v for k, v in ctl.counters.items() if k.startswith("rejected_")} == {
        "rejected_bad_signature": 1,
        "rejected_bad_shape": 1,
        "rejected_unknown_ap": 1,
        "rejected_too_large": 1,
        "rejected_bad_json": 1,
    }
    assert key.decode() not in caplog.text
    # The service still works: a real agent comes online afterwards.
    agents(ctl, ap_id, mosquitto)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online after bad input")


def publish_raw(broker: Any, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish arbitrary payloads as some rogue client could (QoS 1, confirmed)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    pub = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"forger-{time.time_ns()}"
    )
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        for name, payload in messages:
            pub.publish(name, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()


async def _topics_until(bridge: Bridge, wanted: set[str], within: float = 10.0) -> set[str]:
    """Read the bridge's queue (acknowledging) until ``wanted`` arrived or time runs out;
    other topics (retained statuses left by earlier tests) are skipped."""
    seen: set[str] = set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not wanted <= seen:
                item = await bridge.queue.get()
                bridge.ack(item)
                seen.add(item.topic)
    return seen & wanted


async def test_once_subscribed_every_agent_topic_is_delivered(
    mosquitto: Any, tmp_path: Path
) -> None:
    """``subscribed`` is set by the broker's SUBACK: a message published on any of the
    agents' topics right after it reaches the controller (``borne demo``, the simulator
    and the tests start agents on this signal, since the broker drops what has no
    subscriber yet)."""
    bridge = Bridge(broker_settings(mosquitto, tmp_path).mqtt, backoff_cap_s=1.0)
    bridge.start()
    try:
        assert await bridge.wait_subscribed(20)
        assert bridge.subscriptions_refused == 0
        wanted = {topic("ap-subscribed", kind) for kind in AGENT_KINDS}
        await asyncio.to_thread(publish_raw, mosquitto, [(t, b"{}") for t in sorted(wanted)])
        assert await _topics_until(bridge, wanted) == wanted
    finally:
        await bridge.aclose()
    assert not bridge.subscribed.is_set()


DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


@pytest.fixture
def reading_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker with mosquitto's dynamic security plugin (its ``acl_file`` grants every
    subscription and filters on delivery): the login ``ctl`` / ``ctl-password`` may
    subscribe to the agents' topics but their acknowledgements."""
    if not DYNSEC_PLUGIN.exists():
        require(f"{DYNSEC_PLUGIN} (Debian package mosquitto)")
    config = tmp_path / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(config), "ctl", "ctl-password"],
        check=True,
        capture_output=True,
    )
    dynsec = json.loads(config.read_text())
    (role,) = dynsec["roles"]
    role["acls"] = [
        {"acltype": "subscribePattern", "topic": controller_subscription(k), "allow": True}
        for k in AGENT_KINDS
        if k != "ack"
    ]
    config.write_text(json.dumps(dynsec))
    broker = MosquittoBroker(
        tmp_path / "broker",
        extra_conf=[
            f"plugin {DYNSEC_PLUGIN}",
            f"plugin_opt_config_file {config}",
            "user root",  # the plugin's file is in the test's private directory
        ],
    )
    broker.start()
    yield broker
    broker.stop()


async def test_a_subscription_refused_by_the_broker_is_an_error_not_silence(
    reading_broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that does not let the controller read the agents' acknowledgements
    answers the SUBSCRIBE with a failure code: the bridge counts it, logs the filter as an
    error, and does not report itself subscribed."""
    settings = broker_settings(reading_broker, tmp_path)
    mqtt = settings.mqtt.model_copy(
        update={"username": "ctl", "password": SecretStr("ctl-password")}
    )
    bridge = Bridge(mqtt, backoff_cap_s=1.0)
    try:
        with caplog.at_level(logging.ERROR, logger="controller.bridge"):
            bridge.start()
            await until(lambda: bridge.subscriptions_refused, what="the broker's SUBACK")
        assert not await bridge.wait_subscribed(0.5)
        assert controller_subscription("ack") in caplog.text
        assert controller_subscription("clients") not in caplog.text
    finally:
        await bridge.aclose()
