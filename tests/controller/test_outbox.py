"""The session events outbox: every change of a session reaches each consumer once, in order."""

from __future__ import annotations

from agents._core import Envelope
from agents.contract import AcctEntry, ClientEvent
from controller import outbox
from controller.service import Controller
from tests.controller.conftest import online, send_applied

T0 = 1_790_000_000.0
AP = "ap-46201-01"
MAC = "02:00:00:00:00:01"


async def test_start_update_stop_reach_a_consumer_once(controller: Controller) -> None:
    """A consumer sees start, update, stop in order, then nothing after advancing."""
    env = Envelope(AP)
    assert await online(controller, env, T0) == "applied"
    await send_applied(
        controller,
        env,
        "clients",
        env.clients(T0, [ClientEvent("authorized", MAC, "10.0.0.2", T0)]),
        T0,
    )
    await send_applied(
        controller,
        env,
        "acct",
        env.acct(T0 + 60, 60, [AcctEntry(MAC, "10.0.0.2", T0, 10, 20)]),
        T0 + 60,
    )
    await send_applied(
        controller,
        env,
        "clients",
        env.clients(T0 + 90, [ClientEvent("left", MAC, "10.0.0.2", T0 + 90)]),
        T0 + 90,
    )
    async with controller.db.connect() as conn:
        events = await outbox.pending(conn, "legal")
    assert [(e.kind, e.at) for e in events] == [
        ("start", T0),
        ("update", T0 + 60),
        ("stop", T0 + 90),
    ]
    assert events[-1].session.terminate_cause == "left"
    assert events[-1].session.down_bytes == 20
    async with controller.db.begin() as conn:
        await outbox.advance(conn, "legal", events[-1].id)
    async with controller.db.connect() as conn:
        assert await outbox.pending(conn, "legal") == []
        # Another consumer has its own offset.
        assert len(await outbox.pending(conn, "stats")) == 3


async def test_a_reboot_emits_a_stop_for_each_closed_session(controller: Controller) -> None:
    """Sessions closed in bulk (new boot) each get their stop event."""
    env = Envelope(AP)
    assert await online(controller, env, T0) == "applied"
    evs = [ClientEvent("authorized", f"02:00:00:00:00:0{i}", "10.0.0.2", T0) for i in range(3)]
    await send_applied(controller, env, "clients", env.clients(T0, evs), T0)
    again = Envelope(AP)
    assert await online(controller, again, T0 + 5) == "applied"
    async with controller.db.begin() as conn:
        events = await outbox.pending(conn, "legal")
        assert [e.kind for e in events] == ["start"] * 3 + ["stop"] * 3
        await outbox.advance(conn, "legal", events[2].id)
        assert await outbox.prune(conn, ["legal", "stats"]) == 0
        await outbox.advance(conn, "stats", events[-1].id)
        assert await outbox.prune(conn, ["legal", "stats"]) == 3


async def test_the_sweep_prunes_what_every_enabled_consumer_has_read(
    controller: Controller,
) -> None:
    """Events stay until each enabled consumer has passed them, then the sweep drops them."""
    env = Envelope(AP)
    assert await online(controller, env, T0) == "applied"
    await send_applied(
        controller,
        env,
        "clients",
        env.clients(T0, [ClientEvent("authorized", MAC, "10.0.0.2", T0)]),
        T0,
    )
    controller.settings = controller.settings.model_copy(
        update={"legal": controller.settings.legal.model_copy(update={"enabled": True})}
    )
    assert controller.outbox_consumers() == ["legal"]
    controller.clock = lambda: T0 + 1
    await controller.sweep()
    async with controller.db.begin() as conn:
        (event,) = await outbox.pending(conn, "legal")
        await outbox.advance(conn, "legal", event.id)
    await controller.sweep()
    assert controller.counters["outbox_pruned"] == 1
    async with controller.db.connect() as conn:
        assert await outbox.pending(conn, "other") == []
