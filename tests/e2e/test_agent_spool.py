"""Broker outage and agent kill -9: every record reaches the real controller once, in order.

Real processes: mosquitto (with persistence, as in production), ``borne controller`` on
SQLite, and the agent (``python -m agents``) with its simulated gateway, which lists
authorised clients whose counters grow at every read. The outage is accelerated: the
agent accounts every second instead of every minute.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from agents._spool import Spool
from tests.e2e._stack import (
    AGENT,
    BORNE,
    add_ap,
    query,
    spawn,
    stop,
    write_agent_config,
    write_controller_config,
)
from tests.testbed import MosquittoBroker, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

AP = "ap-46201-07"


def seqs_by_boot(db: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in query(
        db,
        "SELECT boot, seq, received_at FROM processed_messages WHERE ap_id = ? AND seq > 0 "
        "ORDER BY boot, seq",
        AP,
    ):
        out.setdefault(r["boot"], []).append((r["seq"], r["received_at"]))
    return out


def test_outage_and_kill_9_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """Broker down 33 s, agent killed twice: every (boot, seq) once, in order, back-filled."""
    mq_dir = tmp_path / "mq"
    broker = MosquittoBroker(
        mq_dir,
        # As in production: the broker keeps the controller's session and queued messages
        # across its restart (root: the test's tmp dir is not the mosquitto user's).
        extra_conf=[
            "persistence true",
            f"persistence_location {mq_dir}/",
            "autosave_interval 1",
            "user root",
        ],
    )
    broker.start()
    conf, db = write_controller_config(
        tmp_path,
        broker,
        master_key="spool-master-key-0123456789abcdef",
        keepalive_s=5,
        sessions={"acct_interval_s": 10},
    )
    key = add_ap(conf, AP, "46201")
    state = tmp_path / "agent-state"
    agent_conf = write_agent_config(
        tmp_path,
        AP,
        key,
        broker,
        health_interval_s=2,
        gateway="simulated",
        simulated_clients=20,
        state_dir=state,
    )
    agent_argv = [*AGENT, "-c", str(agent_conf)]
    controller_log = tmp_path / "controller.log"
    controller = spawn([*BORNE, "controller", "-c", str(conf)], controller_log)
    agent: subprocess.Popen[bytes] | None = None
    try:
        # The controller's subscription exists before the agent's first message.
        wait_for(
            lambda: "subscribed to the agents' topics" in controller_log.read_text(),
            timeout=60,
            message="controller subscribed",
        )
        agent = spawn(agent_argv, tmp_path / "agent.log")
        online = "SELECT state, boot FROM access_points WHERE ap_id = ?"
        wait_for(
            lambda: query(db, online, AP)[0]["state"] == "online",
            timeout=60,
            message="AP online at the controller",
        )
        acct = "SELECT count(*) AS n FROM processed_messages WHERE ap_id = ?"
        wait_for(lambda: query(db, acct, AP)[0]["n"] >= 5, timeout=30, message="first records")

        broker.stop()  # outage: the agent spools
        time.sleep(8)
        stop(agent, signal.SIGKILL)  # mid-spool: records of this boot wait on disk
        agent = spawn(agent_argv, tmp_path / "agent.log")  # a new boot, still offline
        # Longer than twice the controller's accounting interval (2 × 10 s): this boot's
        # first records are late enough to open back-filled sessions.
        time.sleep(25)
        connects = broker.log_text().count(f"as borne-agent-{AP}")
        broker.start()
        wait_for(
            lambda: broker.log_text().count(f"as borne-agent-{AP}") > connects,
            timeout=60,
            message="agent reconnected",
        )
        time.sleep(0.05)
        stop(agent, signal.SIGKILL)  # again, while the backlog is being replayed
        agent = spawn(agent_argv, tmp_path / "agent.log")
        wait_for(
            lambda: len(seqs_by_boot(db)) == 3,
            timeout=60,
            message="three boots at the controller",
        )
        time.sleep(4)
        stop(agent)  # clean stop: the spool is drained before goodbye
        assert agent.returncode == 0
        assert Spool(state / f"spool-{AP}").pending == 0

        def settled() -> bool:
            before = seqs_by_boot(db)
            time.sleep(1.5)
            return before == seqs_by_boot(db)

        wait_for(settled, timeout=30, message="controller done")
        boots = seqs_by_boot(db)
        assert len(boots) == 3
        for boot, rows in boots.items():
            seqs = [s for s, _ in rows]
            # every message of the boot, none missing (a kill can only cut the tail)
            assert seqs == list(range(1, len(seqs) + 1)), boot
            received = [t for _, t in rows]
            assert received == sorted(received), f"out of order in boot {boot}"
        assert sum(len(r) for r in boots.values()) > 40
        backfilled = "SELECT count(*) AS n FROM sessions WHERE ap_id = ? AND backfilled"
        assert query(db, backfilled, AP)[0]["n"] > 0
    finally:
        if agent is not None:
            stop(agent)
        stop(controller)
        broker.stop()
