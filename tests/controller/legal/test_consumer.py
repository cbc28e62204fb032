"""The legal consumer turns outbox events into durable records, once each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents._core import Envelope
from agents.contract import AcctEntry, ClientEvent, seal, topic
from controller import outbox
from controller.config import LegalSettings
from controller.legal.consumer import CONSUMER, LegalConsumer
from controller.legal.keys import MasterKey
from controller.legal.store import LegalStore, day_of
from controller.service import Controller

T0 = 1_790_000_000.0
AP = "ap-46201-01"
MAC = "02:00:00:00:00:01"


async def send(c: Controller, env: Envelope, kind: str, msg: Any, now: float) -> None:
    key = c.registry.key_for(env.ap)
    assert key is not None
    assert await c.handle(topic(env.ap, kind), seal(msg, key), now=now) == "applied"


async def visit(c: Controller) -> None:
    """A visitor logs in, sends traffic twice, then leaves."""
    env = Envelope(AP)
    await send(
        c,
        env,
        "status",
        env.status(T0, "online", agent_version="x", gateway="g", keepalive_s=30),
        T0,
    )
    await send(
        c, env, "clients", env.clients(T0, [ClientEvent("authorized", MAC, "10.46.1.100", T0)]), T0
    )
    for k in (1, 2):
        await send(
            c,
            env,
            "acct",
            env.acct(T0 + 60 * k, 60, [AcctEntry(MAC, "10.46.1.100", T0, 10 * k, 20 * k)]),
            T0 + 60 * k,
        )
    await send(
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
