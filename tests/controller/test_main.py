"""The controller process: nothing acknowledged is lost across kill -9; SIGTERM stops cleanly."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agents._core import Envelope
from agents.contract import ClientEvent, seal, topic
from tests.testbed import free_port, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

AP = "ap-46042-01"
N = 300


def count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def start_controller(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "controller", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def test_kill_9_loses_nothing_and_duplicates_nothing(mosquitto: Any, tmp_path: Path) -> None:
    """Messages acknowledged by the broker survive a controller kill -9, each applied once."""
    db = tmp_path / "state.db"
    conf = tmp_path / "borne.toml"
    conf.write_text(f"""
command_master_key = "kill9-master-key-0123456789"
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "ctl-kill9-{time.time_ns()}"
[database]
url = "sqlite+aiosqlite:///{db}"
[portal]
listen_port = {free_port()}
[dashboard]
listen_port = {free_port()}
""")
    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "ap",
            "add",
            AP,
            "--insee",
            "46042",
            "-c",
            str(conf),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    log = tmp_path / "controller.log"
    proc = start_controller(conf, log)
    opened = "SELECT count(*) FROM sessions"
    try:
        wait_for(lambda: "connected to" in log.read_text(), timeout=30, message="controller up")
        pub = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"agent-kill9-{time.time_ns()}",
        )
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        env = Envelope(AP)
        status = env.status(time.time(), "online", agent_version="t", gateway="t", keepalive_s=30)
        pub.publish(topic(AP, "status"), seal(status, key.encode()), qos=1).wait_for_publish(5)
        infos = []
        for i in range(N):
            now = time.time()
            ev = ClientEvent(
                "authorized",
                f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
                f"10.46.{1 + i // 200}.{i % 200 + 1}",
                now,
            )
            infos.append(
                pub.publish(topic(AP, "clients"), seal(env.clients(now, [ev]), key.encode()), qos=1)
            )
            if i == N // 3:
                wait_for(lambda: count(db, opened) > 20, timeout=30, message="ingest running")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for info in infos:
            info.wait_for_publish(10)  # every message acknowledged by the broker
        processed_while_down = count(db, opened)
        assert processed_while_down < N
        proc = start_controller(conf, log)
        wait_for(lambda: count(db, opened) >= N, timeout=60, message="all sessions")
        time.sleep(1.0)  # any duplicate would land now
        assert count(db, opened) == N
        assert count(db, "SELECT count(DISTINCT mac) FROM sessions") == N
        assert count(db, "SELECT count(*) FROM processed_messages") == N + 1
        pub.loop_stop()
        pub.disconnect()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
