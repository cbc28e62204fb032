"""The agent against a real mosquitto: command acks (refused ones too), spool and outage."""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import AuthorizeArgs, Command, encode, sign_command, topic
from agents.gateway import SimulatedGateway
from tests.testbed import MosquittoBroker, wait_for

pytestmark = [pytest.mark.broker]

AP = "ap-46201-02"
KEY = "agent-test-key-0123456789abcdef"
MAC = "02:00:00:00:00:01"


class Listener:
    """A real MQTT subscriber on everything the AP ``ap`` publishes; it can send commands."""

    def __init__(
        self, broker: MosquittoBroker, ap: str = AP, client_id: str = "test-listener"
    ) -> None:
        self.ap = ap
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id
        )
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"borne/v1/ap/{ap}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        if m.payload:
            self.messages.put((m.topic.rsplit("/", 1)[1], json.loads(m.payload)))

    def send_command(self, payload: bytes) -> None:
        self.client.publish(topic(self.ap, "cmd"), payload, qos=1).wait_for_publish(5)

    def _received(self, kind: str, seconds: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                k, msg = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if k == kind:
                yield msg

    def collect(self, kind: str, seconds: float) -> list[dict[str, Any]]:
        """Every ``kind`` message (ack, status...) received within ``seconds``."""
        return list(self._received(kind, seconds))

    def next(self, kind: str, seconds: float = 10.0) -> dict[str, Any]:
        """The next ``kind`` message, within ``seconds``."""
        for msg in self._received(kind, seconds):
            return msg
        raise TimeoutError(f"no {kind} message")

    def clear_status(self) -> None:
        """Clear the AP's retained status: later tests' controllers must not receive it."""
        self.client.publish(topic(self.ap, "status"), b"", qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_agent(cfg: AgentConfig, gw: Any) -> tuple[Agent, threading.Event, threading.Thread]:
    """Run an agent in a thread, as on an access point; return once it is connected."""
    agent = Agent(cfg, gw, backoff_cap_s=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="agent-under-test")
    thread.start()
    wait_for(agent.link.connected.is_set, timeout=10, message="agent connected")
    return agent, stop, thread


@pytest.fixture
def running(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[Agent, SimulatedGateway, Listener]]:
    listener = Listener(mosquitto)
    gw = SimulatedGateway()
    gw.arrive(MAC, "10.46.1.100")
    cfg = AgentConfig(
        ap_id=AP,
        command_key=KEY,
        mqtt_host=mosquitto.host,
        mqtt_port=mosquitto.port,
        poll_interval_s=0.2,
        acct_interval_s=1,
        health_interval_s=60,
        gateway="simulated",
        state_dir=str(tmp_path / "state"),
    )
    agent, stop, thread = start_agent(cfg, gw)
    try:
        yield agent, gw, listener
    finally:
        stop.set()
        thread.join(15)
        listener.close()
        # A subscriber of its own: a test may have closed and replaced the fixture's.
        clearer = Listener(mosquitto, client_id="clear")
        clearer.clear_status()
        clearer.close()


def command(cmd_id: str, *, iat: float, exp: float, key: str = KEY) -> bytes:
    cmd = Command(
        v=1,
        ap=AP,
        id=cmd_id,
        cmd="authorize",
        args=dataclasses.asdict(AuthorizeArgs(mac=MAC, minutes=60)),
        iat=iat,
        exp=exp,
    )
    return encode(sign_command(cmd, key.encode()))


def test_refused_signed_commands_are_acked_as_refused(
    running: tuple[Agent, SimulatedGateway, Listener],
) -> None:
    """Expired and replayed signed commands get ok=false with the reason; forged ones no ack."""
    agent, _gw, listener = running
    now = time.time()
    listener.send_command(command("good-1", iat=now, exp=now + 60))
    listener.send_command(command("good-1", iat=now, exp=now + 60))  # replayed
    listener.send_command(command("old-1", iat=now - 200, exp=now - 100))  # expired
    listener.send_command(command("forged-1", iat=now, exp=now + 60, key="x" * 32))
    unsigned = json.loads(command("unsigned-1", iat=now, exp=now + 60))
    del unsigned["sig"]
    listener.send_command(json.dumps(unsigned).encode())
    listener.send_command(command("old-1", iat=now - 200, exp=now - 100))  # answered once
    acks = listener.collect("ack", 3.0)
    got = [(a["id"], a["ok"], a["error"]) for a in acks]
    assert got == [
        ("good-1", True, None),
        ("good-1", False, "refused: replayed"),
        ("old-1", False, "refused: expired"),
    ]
    assert agent.counters["command_refused_bad_signature"] == 2
    assert agent.counters["commands_refused_acked"] == 2


def test_a_broker_outage_loses_nothing_and_keeps_the_order(
    running: tuple[Agent, SimulatedGateway, Listener], mosquitto: MosquittoBroker
) -> None:
    """Records made while the broker is down arrive after its restart, in order, seq intact."""
    agent, gw, listener = running
    now = time.time()
    listener.send_command(command("auth-1", iat=now, exp=now + 60))
    wait_for(lambda: agent.counters["commands_ok"] == 1, timeout=10, message="authorised")
    listener.close()
    mosquitto.stop()
    for i in range(4):
        gw.browse(MAC, 1000 * i, 10_000 * i)
        time.sleep(1.0)
    assert agent.spool.pending >= 3
    spooled = agent.counters["published_acct"]
    mosquitto.start()
    listener = Listener(mosquitto)  # a new subscriber before the agent comes back
    try:
        wait_for(lambda: agent.spool.pending == 0, timeout=30, message="spool drained")
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                kind, msg = listener.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append((kind, msg["seq"]))
        acct = [s for k, s in seen if k == "acct"]
        assert len(acct) >= 3
        assert acct == sorted(set(acct))  # in order, once each
        spooled_seqs = [s for _k, s in seen if s > 0]
        assert spooled_seqs == sorted(spooled_seqs)
        assert agent.counters["published_acct"] >= spooled
    finally:
        listener.close()


FAKE_NDSCTL = """#!/bin/sh
# Stands in for a stuck openNDS (no openNDS runs outside the testbed): every call fails
# until the restart command has created the flag file.
[ -f "{flag}" ] || exit 1
echo '{{"client_list_length":"0","clients":{{}}}}'
"""


def test_the_watchdog_restarts_a_stuck_gateway_once_and_says_so(tmp_path: Path) -> None:
    """After N failed reads the restart command runs (counted); reads then work again."""
    from agents.gateway import NdsctlGateway

    flag = tmp_path / "restarted"
    ndsctl = tmp_path / "ndsctl"
    ndsctl.write_text(FAKE_NDSCTL.format(flag=flag))
    ndsctl.chmod(0o755)
    cfg = AgentConfig(
        ap_id=AP,
        command_key=KEY,
        state_dir=str(tmp_path / "state"),
        gateway_restart_cmd=f"touch {flag}",
        watchdog_failures=3,
        watchdog_cooldown_s=300,
    )
    agent = Agent(cfg, NdsctlGateway(str(ndsctl)))
    agent.poll()
    agent.poll()
    assert agent.counters["gateway_restarts"] == 0 and not flag.exists()
    agent.poll()  # third failure in a row: restart
    assert agent.counters["gateway_restarts"] == 1 and flag.exists()
    errors = agent.counters["gateway_errors"]
    agent.poll()
    assert agent.counters["gateway_errors"] == errors  # the daemon answers again
    flag.unlink()
    for _ in range(5):
        agent.poll()
    assert agent.counters["gateway_restarts"] == 1  # cooldown: not again within 300 s


@pytest.mark.parametrize("cmd", ["false", "/nonexistent/restart", "restart 'unbalanced"])
def test_a_failed_gateway_restart_is_counted_and_the_agent_goes_on(
    tmp_path: Path, cmd: str
) -> None:
    """A restart command that exits non-zero, cannot run or cannot be parsed is counted
    as failed; the agent keeps polling."""
    from agents.gateway import NdsctlGateway

    cfg = AgentConfig(
        ap_id=AP,
        command_key=KEY,
        state_dir=str(tmp_path / "state"),
        gateway_restart_cmd=cmd,
        watchdog_failures=1,
        watchdog_cooldown_s=300,
    )
    agent = Agent(cfg, NdsctlGateway(str(tmp_path / "no-ndsctl")))
    agent.poll()
    agent.poll()
    assert agent.counters["gateway_restarts"] == 1
    assert agent.counters["gateway_restart_failed"] == 1


def test_without_persisted_state_the_spool_lives_and_dies_with_the_run(tmp_path: Path) -> None:
    """persist_state=False (demo, tests): a private spool, removed at shutdown, nothing left."""
    cfg = AgentConfig(ap_id=AP, command_key=KEY, state_dir=str(tmp_path / "state"))
    agent = Agent(cfg, SimulatedGateway(), persist_state=False)
    agent._publish_status_online()
    spool_dir = agent.spool.dir
    assert agent.spool.pending == 1 and spool_dir.is_dir()
    assert not spool_dir.is_relative_to(tmp_path / "state")
    agent.shutdown()
    assert not spool_dir.exists()
    assert not (tmp_path / "state").exists()


def test_messages_on_foreign_topics_are_ignored_and_counted(tmp_path: Path) -> None:
    """A broker that hands over another AP's retained status: never read as a command."""
    cfg = AgentConfig(ap_id=AP, command_key=KEY, state_dir=str(tmp_path / "state"))
    agent = Agent(cfg, SimulatedGateway(), persist_state=False)
    try:
        foreign = mqtt.MQTTMessage(topic=topic("ap-46042-01", "status").encode())
        foreign.payload = b'{"v": 1}'
        agent._on_message(foreign)
        assert agent.counters["foreign_topic_ignored"] == 1
        assert agent._commands.empty()
        own = mqtt.MQTTMessage(topic=topic(AP, "cmd").encode())
        own.payload = b"{}"
        agent._on_message(own)
        assert agent.counters["foreign_topic_ignored"] == 1
        assert agent._commands.get_nowait() == b"{}"
    finally:
        agent.shutdown()
