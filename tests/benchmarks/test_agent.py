"""Agent benchmarks: footprint with 200 clients, and spool replay rate after an outage.

Real processes: the agent (``python -m agents``, simulated gateway with 200 authorised
clients whose counters grow at every read) and mosquitto. Ratios against references
measured in the same run: the agent's resident memory against a bare Python with
paho-mqtt imported (what any MQTT agent in Python costs), and the spool replay rate
against a plain paho client publishing the same payloads at QoS 1 with the same
in-flight window and no spool. Results are printed and copied into docs/BENCHMARKS.md:

    .venv/bin/pytest -q -s -m slow tests/benchmarks/test_agent.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agents._core import Envelope
from agents._spool import Spool
from agents.contract import AcctEntry, seal, topic
from tests.testbed import MosquittoBroker

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
AP = "ap-46201-09"
KEY = "bench-key-0123456789abcdef"
WINDOW_S = 30.0
REPLAY_RECORDS = 3000


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks()  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def agent_conf(tmp: Path, broker: MosquittoBroker, **extra: object) -> Path:
    values: dict[str, object] = {
        "ap_id": AP,
        "command_key": KEY,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "gateway": "simulated",
        "state_dir": str(tmp / "state"),
        **extra,
    }
    path = tmp / "agent.toml"
    path.write_text("[agent]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def clear_retained(broker: MosquittoBroker) -> None:
    """Remove the agent's retained status, which later tests' controllers would receive."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-clear")
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic(AP, "status"), b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_footprint_with_200_clients(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """RSS and CPU of the agent serving 200 clients, against a bare paho process."""
    conf = agent_conf(
        tmp_path, mosquitto, simulated_clients=200, acct_interval_s=15, poll_interval_s=5.0
    )
    agent = spawn([sys.executable, "-m", "agents", "-c", str(conf)], tmp_path / "agent.log")
    ref = spawn(
        [sys.executable, "-c", "import paho.mqtt.client, time; time.sleep(600)"],
        tmp_path / "ref.log",
    )
    try:
        time.sleep(5.0)  # start-up and first full list
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(WINDOW_S)
        cpu = (cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
        agent_rss, ref_rss = rss_kib(agent.pid), rss_kib(ref.pid)
    finally:
        stop(agent)
        stop(ref)
        clear_retained(mosquitto)
    print(
        f"\nagent, 200 clients, poll 5 s, acct every 15 s: RSS {agent_rss / 1024:.1f} MiB "
        f"(bare python+paho {ref_rss / 1024:.1f} MiB, ratio {agent_rss / ref_rss:.2f}); "
        f"CPU {cpu * 100:.2f} % of one core over {WINDOW_S:.0f} s"
    )
    assert agent_rss > 0 and ref_rss > 0 and cpu >= 0


def fill_spool(state: Path, count: int) -> list[bytes]:
    """The spool an outage leaves: acct batches of 20 clients, sealed, in order."""
    env = Envelope(AP)
    spool = Spool(state / f"spool-{AP}", max_bytes=256 * 1024 * 1024)
    entries = [
        AcctEntry(mac=f"02:00:00:00:00:{i:02x}", ip=f"10.46.1.{i + 2}", session_start=1.79e9,
                  up_bytes=10**6 * i, down_bytes=10**7 * i)
        for i in range(20)
    ]  # fmt: skip
    payloads = [seal(env.acct(1.79e9 + i, 60, entries), KEY.encode()) for i in range(count)]
    for i in range(0, count, 100):
        spool.append([(topic(AP, "acct"), p, False) for p in payloads[i : i + 100]], time.time())
    spool.close()
    return payloads


class Counter:
    """A subscriber counting acct messages until ``target``."""

    def __init__(self, broker: MosquittoBroker, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = threading.Event()
        self.first: float | None = None
        self.subscribed = threading.Event()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"bench-{time.time_ns()}"
        )
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *args: self.subscribed.set()
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(f"borne/v1/ap/{AP}/acct", qos=1)
        self.c.loop_start()
        # Counting starts only once the broker has confirmed the subscription.
        assert self.subscribed.wait(30), "the counting subscriber got no SUBACK"

    def _on_message(self, c: object, u: object, m: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self.first is None:
            self.first = time.monotonic()
        if self.count >= self.target:
            self.done.set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def plain_publish_rate(broker: MosquittoBroker, payloads: list[bytes]) -> float:
    """Reference: one paho client, QoS 1, the same in-flight window (64), no spool."""
    counter = Counter(broker, len(payloads))
    time.sleep(0.5)
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-ref")
    c.max_inflight_messages_set(64)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    t0 = time.monotonic()
    infos = [c.publish(topic(AP, "acct"), p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.monotonic() - t0
    assert counter.done.wait(60)
    c.disconnect()
    c.loop_stop()
    counter.close()
    return len(payloads) / elapsed


@pytest.fixture
def replay_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker of its own whose queues do not drop a fast burst to a slower subscriber
    (mosquitto's default keeps 1,000 queued messages per client)."""
    broker = MosquittoBroker(
        tmp_path / "broker", extra_conf=["max_queued_messages 0", "max_queued_bytes 0"]
    )
    broker.start()
    yield broker
    broker.stop()


def test_spool_replay_rate(replay_broker: MosquittoBroker, tmp_path: Path) -> None:
    """Records per second replayed from the spool after an outage, against plain QoS 1."""
    mosquitto = replay_broker
    payloads = fill_spool(tmp_path / "state", REPLAY_RECORDS)
    reference = plain_publish_rate(mosquitto, payloads)
    counter = Counter(mosquitto, REPLAY_RECORDS)
    time.sleep(0.5)
    conf = agent_conf(
        tmp_path,
        mosquitto,
        acct_interval_s=3600,
        health_interval_s=3600,
        spool_max_bytes=256 * 1024 * 1024,
    )
    t0 = time.monotonic()
    agent = spawn([sys.executable, "-m", "agents", "-c", str(conf)], tmp_path / "agent.log")
    try:
        assert counter.done.wait(120), (
            f"only {counter.count} of {REPLAY_RECORDS} replayed; agent log:\n"
            + (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
        )
        assert counter.first is not None
        elapsed = time.monotonic() - counter.first
    finally:
        stop(agent)
        counter.close()
        clear_retained(mosquitto)
    rate = REPLAY_RECORDS / elapsed
    size = sum(len(p) for p in payloads) / len(payloads)
    print(
        f"\nspool replay: {REPLAY_RECORDS} acct records of {size:.0f} bytes in {elapsed:.2f} s "
        f"= {rate:.0f} records/s (plain paho QoS 1, no spool: {reference:.0f}/s, "
        f"ratio {rate / reference:.2f}); agent start to drained {time.monotonic() - t0:.1f} s"
    )
    assert Spool(tmp_path / "state" / f"spool-{AP}").pending == 0
