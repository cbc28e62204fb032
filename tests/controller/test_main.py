"""The controller process: nothing acknowledged is lost across kill -9; SIGTERM stops cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e._stack import (
    ControllerProcess,
    add_ap,
    authorize_then_kill,
    count,
    online_agent,
    write_controller_config,
)
from tests.testbed import MosquittoBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

AP = "ap-46042-01"
N = 300


def test_kill_9_loses_nothing_and_duplicates_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Messages acknowledged by the broker survive a controller kill -9, each applied once."""
    conf, db = write_controller_config(
        tmp_path,
        mosquitto,
        master_key="kill9-master-key-0123456789",
        client_id=f"ctl-kill9-{time.time_ns()}",
    )
    key = add_ap(conf, AP, "46042")
    opened = "SELECT count(*) FROM sessions"
    with ControllerProcess(conf, tmp_path / "controller.log") as controller:
        controller.wait_connected()
        agent = online_agent(mosquitto, AP, key)
        clients = [
            (f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", f"10.46.{1 + i // 200}.{i % 200 + 1}")
            for i in range(N)
        ]
        authorize_then_kill(
            agent, controller, clients, busy=lambda: count(db, opened) > 20, what="ingest running"
        )
        processed_while_down = count(db, opened)
        assert processed_while_down < N
        controller.start()
        controller.wait_for(lambda: count(db, opened) >= N, timeout=60, message="all sessions")
        time.sleep(1.0)  # any duplicate would land now
        assert count(db, opened) == N
        assert count(db, "SELECT count(DISTINCT mac) FROM sessions") == N
        assert count(db, "SELECT count(*) FROM processed_messages") == N + 1
        agent.close()
        controller.stop()
