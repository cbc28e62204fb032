"""The legal consumer turns outbox events into durable records, once each."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents._core import Envelope
from agents.contract import AcctEntry, ClientEvent
from controller import outbox
from controller.config import LegalSettings
from controller.legal.consumer import CONSUMER, LegalConsumer
from controller.legal.errors import LegalError
from controller.legal.keys import MasterKey
from controller.legal.store import LegalStore, day_of
from controller.service import Controller
from tests.controller.conftest import online, send_applied
from tests.e2e._stack import (
    ControllerProcess,
    add_ap,
    authorize_then_kill,
    borne,
    count,
    online_agent,
    write_controller_config,
)
from tests.testbed import MosquittoBroker

T0 = 1_790_000_000.0
AP = "ap-46201-01"
MAC = "02:00:00:00:00:01"


async def visit(c: Controller) -> None:
    """A visitor logs in, sends traffic twice, then leaves."""
    env = Envelope(AP)
    assert await online(c, env, T0) == "applied"
    await send_applied(
        c, env, "clients", env.clients(T0, [ClientEvent("authorized", MAC, "10.46.1.100", T0)]), T0
    )
    for k in (1, 2):
        await send_applied(
            c,
            env,
            "acct",
            env.acct(T0 + 60 * k, 60, [AcctEntry(MAC, "10.46.1.100", T0, 10 * k, 20 * k)]),
            T0 + 60 * k,
        )
    await send_applied(
        c,
        env,
        "clients",
        env.clients(T0 + 150, [ClientEvent("left", MAC, "10.46.1.100", T0 + 150.5)]),
        T0 + 150,
    )


def make(c: Controller, tmp_path: Path) -> tuple[LegalConsumer, LegalStore]:
    store = LegalStore(
        tmp_path / "legal",
        MasterKey.from_text(MasterKey.new_text()),
        Ed25519PrivateKey.generate(),
        checkpoint_s=0,
    )
    return LegalConsumer(c.db, store, LegalSettings(batch=2), clock=lambda: T0 + 200), store


async def test_a_session_becomes_start_and_stop_records(
    controller: Controller, tmp_path: Path
) -> None:
    """Start and stop reach the log with times in ms, volumes and the gateway; unchanged
    updates are not written; the offset ends after the last event."""
    consumer, store = make(controller, tmp_path)
    await visit(controller)
    while await consumer.step():
        pass
    day = day_of(T0 + 200)
    found = await asyncio.to_thread(store.read, day, range(10))
    assert [f.record.event for f in found] == ["start", "stop"]
    stop = found[-1].record
    assert (stop.client_mac, stop.private_ip, stop.gateway, stop.commune) == (
        MAC,
        "10.46.1.100",
        AP,
        "46201",
    )
    assert (stop.start_ms, stop.stop_ms) == (int(T0 * 1000), int(T0 * 1000) + 150_500)
    assert (stop.up_bytes, stop.down_bytes, stop.terminate_cause) == (20, 40, "left")
    async with controller.db.connect() as conn:
        assert await outbox.pending(conn, CONSUMER) == []


async def test_a_crash_before_the_offset_moves_writes_nothing_twice(
    controller: Controller, tmp_path: Path
) -> None:
    """Records written but not yet acknowledged to the outbox are not written again."""
    _, store = make(controller, tmp_path)
    await visit(controller)
    async with controller.db.connect() as conn:
        events = await outbox.pending(conn, CONSUMER)
    # The write happened, the crash came before advance(): a new consumer starts over.
    await asyncio.to_thread(store.append, [(events[0].id, consumer_record(events[0]))], T0 + 200)
    await asyncio.to_thread(store.close)
    again = LegalConsumer(
        controller.db,
        LegalStore(store.directory, store.provider, store.signing_key, checkpoint_s=0),
        LegalSettings(),
        clock=lambda: T0 + 200,
    )
    while await again.step():
        pass
    found = await asyncio.to_thread(again.store.read, day_of(T0 + 200), range(10))
    assert [f.record.event for f in found] == ["start", "stop"]


def consumer_record(ev: outbox.SessionEvent) -> Any:
    from controller.legal.records import from_session

    return from_session(ev.session, ev.kind)


async def test_the_controller_runs_the_legal_consumer_when_enabled(
    mosquitto: Any, tmp_path: Path
) -> None:
    """open_controller with [legal] enabled writes each session into the legal log."""
    from controller.config import Settings
    from controller.legal.keys import generate_signing_key
    from controller.main import open_controller
    from controller.registry import Commune

    await asyncio.to_thread(generate_signing_key, tmp_path / "signing.pem")
    settings = Settings(
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/borne.db"},
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "client_id": "legal-test"},
        command_master_key="legal-test-master-key-0123456789",
        legal={
            "enabled": True,
            "directory": str(tmp_path / "legal"),
            "master_key_provider": "env",
            "master_key": MasterKey.new_text(),
            "signing_key_file": str(tmp_path / "signing.pem"),
            "poll_s": 0.05,
        },
    )
    async with open_controller(settings) as (ctl, _tg):
        await ctl.registry.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
        await ctl.registry.add_access_point(AP, "46201", "Rocamadour")
        await visit(ctl)
        async with asyncio.timeout(30):
            while True:
                async with ctl.db.connect() as conn:
                    if not await outbox.pending(conn, CONSUMER):
                        break
                await asyncio.sleep(0.05)
    from controller.legal.consumer import open_store

    store = await asyncio.to_thread(open_store, settings.legal)
    days = await asyncio.to_thread(store.days)
    found = await asyncio.to_thread(store.read, days[-1], range(10))
    assert [(f.record.event, f.record.client_mac) for f in found] == [
        ("start", MAC),
        ("stop", MAC),
    ]


@pytest.mark.slow
def test_kill_9_loses_no_legal_record_and_writes_none_twice(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A controller killed with SIGKILL while writing the legal log ends, after a restart,
    with exactly one start record per session and a log that verifies."""
    n = 150
    legal = {
        "enabled": True,
        "directory": tmp_path / "legal",
        "master_key_file": tmp_path / "master.key",
        "signing_key_file": tmp_path / "signing.pem",
        "poll_s": 0.02,
        "batch": 5,
    }
    conf, db = write_controller_config(
        tmp_path,
        mosquitto,
        master_key="legal-kill9-master-key-0123456789",
        client_id=f"ctl-legal-kill9-{time.time_ns()}",
        legal=legal,
    )
    borne(conf, "legal", "init")
    key = add_ap(conf, AP, "46201")
    offset = "SELECT last_id FROM consumer_offsets WHERE name = 'legal'"
    with ControllerProcess(conf, tmp_path / "controller.log") as controller:
        controller.wait_connected()
        agent = online_agent(mosquitto, AP, key)
        clients = [(f"02:00:00:00:01:{i:02x}", f"10.46.1.{i + 2}") for i in range(n)]
        authorize_then_kill(
            agent, controller, clients, busy=lambda: count(db, offset) > 10, what="legal running"
        )
        assert count(db, offset) < n
        controller.start()
        last = "SELECT max(id) FROM session_events"
        sessions = "SELECT count(*) FROM sessions"
        controller.wait_for(
            lambda: count(db, sessions) >= n and count(db, offset) >= count(db, last),
            timeout=60,
            message="every event in the legal log",
            state=lambda: (
                f"{count(db, sessions)} sessions of {n}, legal offset {count(db, offset)}, "
                f"last event {count(db, last)}"
            ),
        )
        agent.close()
        controller.stop()
    from controller.config import load_settings
    from controller.legal.consumer import open_store

    store = open_store(load_settings(conf).legal, read_only=True)
    records = [f.record for day in store.days() for f in store.read(day, range(10 * n))]
    starts = [r.session_id for r in records if r.event == "start"]
    assert len(starts) == n and len(set(starts)) == n
    assert sorted({r.client_mac for r in records}) == sorted(
        f"02:00:00:00:01:{i:02x}" for i in range(n)
    )
    assert "intact" in borne(conf, "legal", "verify")


@pytest.mark.parametrize("failing_call", range(1, 13))
async def test_a_full_disk_loses_nothing(
    controller: Controller, tmp_path: Path, failing_call: int
) -> None:
    """An fsync failing with ENOSPC at any point of a batch (fault injected: a real full
    disk needs a mount) leaves the offset where it was; once space is back every record
    is written exactly once and the day verifies."""
    consumer, store = make(controller, tmp_path)
    await visit(controller)
    real_fsync = os.fsync
    calls = 0

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls >= failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    with mock.patch("os.fsync", autospec=True, side_effect=fsync), pytest.raises(LegalError):
        while await consumer.step():
            pass
    async with controller.db.connect() as conn:
        assert len(await outbox.pending(conn, CONSUMER)) >= 1
    while await consumer.step():
        pass
    day = day_of(T0 + 200)
    found = await asyncio.to_thread(store.read, day, range(10))
    assert [f.record.event for f in found] == ["start", "stop"]
    assert store.signing_key is not None
    problems = await asyncio.to_thread(store.verify, store.signing_key.public_key())
    assert problems == []


async def test_maintenance_seals_idle_days_and_purges_on_time(
    controller: Controller, tmp_path: Path
) -> None:
    """Without new traffic, yesterday still gets its final head, and a year later the
    consumer itself destroys the day's keys."""
    consumer, store = make(controller, tmp_path)
    await visit(controller)
    while await consumer.step():
        pass
    day = day_of(T0 + 200)
    consumer.clock = lambda: T0 + 86400
    assert await consumer.maintain() == []
    heads = await asyncio.to_thread((store.directory / day / "heads.jsonl").read_text)
    assert '"final":true' in heads.splitlines()[-1]
    consumer.clock = lambda: T0 + 367 * 86400
    statements = await consumer.maintain()
    assert [s["day"] for s in statements] == [day]
    with pytest.raises(LegalError):
        await asyncio.to_thread(store.read, day, [0])


async def test_the_nat_port_block_reaches_the_record_and_the_search(
    controller: Controller, tmp_path: Path
) -> None:
    """The agent's port block (clients and acct messages) is kept on the session and in
    its records; a new block after a DHCP change writes an update; a search by public IP
    and a port of the block finds the session, a port of another block does not."""
    from controller.legal.requisitions import Query, search

    consumer, store = make(controller, tmp_path)
    env = Envelope(AP)
    assert await online(controller, env, T0) == "applied"
    nat = ("192.0.2.1", 26324, 26576)
    auth = ClientEvent("authorized", MAC, "10.46.1.100", T0, None, *nat)
    await send_applied(controller, env, "clients", env.clients(T0, [auth]), T0)
    async with controller.db.connect() as conn:
        (ev,) = await outbox.pending(conn, CONSUMER)
    assert (ev.session.public_ip, ev.session.port_start, ev.session.port_end) == nat
    same = AcctEntry(MAC, "10.46.1.100", T0, 1, 2, *nat)
    moved = AcctEntry(MAC, "10.46.1.101", T0, 3, 4, "192.0.2.1", 26577, 26829)
    for k, entry in ((1, same), (2, moved)):
        while await consumer.step():
            pass
        await send_applied(controller, env, "acct", env.acct(T0 + 60 * k, 60, [entry]), T0 + 60 * k)
    while await consumer.step():
        pass
    found = await asyncio.to_thread(store.read, day_of(T0 + 200), range(10))
    blocks = [(f.record.event, f.record.public_ip, f.record.port_start) for f in found]
    assert blocks == [("start", "192.0.2.1", 26324), ("update", "192.0.2.1", 26577)]
    hit = await asyncio.to_thread(search, store, Query("public", "192.0.2.1", T0, T0, port=26700))
    assert [(f.record.client_mac, f.record.private_ip) for f in hit] == [(MAC, "10.46.1.101")]
    miss = await asyncio.to_thread(search, store, Query("public", "192.0.2.1", T0, T0, port=27000))
    assert miss == []


async def test_a_database_away_is_retried_not_fatal(controller: Controller, tmp_path: Path) -> None:
    """The state database failing under the running consumer (locked file, PostgreSQL
    restarting; injected) is counted and retried: the consumer keeps running and writes
    every record once the database answers again."""
    import sqlalchemy as sa

    consumer, store = make(controller, tmp_path)
    await visit(controller)
    real_pending = outbox.pending
    calls = 0

    async def pending(*args: Any, **kwargs: Any) -> list[outbox.SessionEvent]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise sa.exc.OperationalError("SELECT ...", {}, Exception("database is locked"))
        return await real_pending(*args, **kwargs)

    with (
        mock.patch.object(outbox, "pending", pending),
        mock.patch("controller.storage.db.backoff_delay", return_value=0.01),
    ):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(consumer.run(), name="legal.consumer")
            async with asyncio.timeout(30):
                while consumer.written < 2:
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
            task.cancel()
    assert consumer.failures == 2
    found = await asyncio.to_thread(store.read, day_of(T0 + 200), range(10))
    assert [f.record.event for f in found] == ["start", "stop"]
