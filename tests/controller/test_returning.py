"""Returning devices let in as they appear: a real mosquitto, a real controller and a real
agent (its gateway simulated); no portal request anywhere."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa

from agents.contract import ClientEvent, ClientsMsg, SyncArgs
from controller.config import CommunePortalSettings
from controller.portal_backend import ControllerPortalBackend
from controller.registry import Commune
from controller.returning import Appearances, arrivals
from controller.service import Controller
from controller.storage.schema import commands, portal_legal_texts
from tests.controller.test_bridge import (
    ROCAMADOUR,
    AgentRun,
    _state,
    broker_settings,
    connected_controller,
    running_agent,
    session_rows,
    the_ap,
    until,
)

KNOWN = "02:00:00:00:00:a1"
STRANGER = "02:00:00:00:00:b2"


def _msg(*events: tuple[Literal["seen", "authorized", "left"], str]) -> ClientsMsg:
    return ClientsMsg(
        v=1,
        ap="ap-1",
        boot="b",
        seq=1,
        ts=0.0,
        events=[ClientEvent(event=e, mac=m, ip="10.46.0.9", at=0.0) for e, m in events],
    )


def test_arrivals_are_seen_devices_not_authorised_in_the_same_batch() -> None:
    """A device first seen already authorised is not an arrival; departures are listed."""
    seen, left = arrivals(
        _msg(("seen", KNOWN), ("seen", STRANGER), ("authorized", STRANGER), ("left", "x"))
    )
    assert [e.mac for e in seen] == [KNOWN]
    assert left == ["x"]
    assert arrivals(_msg(("seen", KNOWN), ("seen", KNOWN)))[0][0].mac == KNOWN
    assert len(arrivals(_msg(("seen", KNOWN), ("seen", KNOWN)))[0]) == 1


def test_one_appearance_until_the_device_leaves() -> None:
    """Repeated sightings (polls, full lists) count once; leaving, or the period of an
    appearance ending, makes the next sighting a new one; the table is bounded."""
    book = Appearances(ttl_s=100.0, max_entries=3)
    assert book.first("ap-1", KNOWN, 0.0)
    assert not book.first("ap-1", KNOWN, 50.0)
    assert book.first("ap-2", KNOWN, 50.0)  # another hotspot: another appearance
    book.gone("ap-1", [KNOWN])
    assert book.first("ap-1", KNOWN, 60.0)
    assert book.first("ap-1", KNOWN, 160.0)
    for i in range(5):
        book.first("ap-3", f"02:00:00:00:01:{i:02x}", 200.0)
    assert len(book) == 3


@pytest.fixture
async def ctl(mosquitto: Any, tmp_path: Path) -> AsyncIterator[Controller]:
    """A controller on the test broker; Rocamadour (46201) has its own data quota."""
    settings = broker_settings(mosquitto, tmp_path)
    portal = settings.portal.model_copy(
        update={"communes": {"46201": CommunePortalSettings(quota_mb=100, session_minutes=45)}}
    )
    settings = settings.model_copy(update={"portal": portal})
    communes = [ROCAMADOUR, Commune("46042", "Cahors", 1.4, 44.4)]
    async with connected_controller(settings, f"ap-return-{os.getpid()}", communes) as controller:
        yield controller


@pytest.fixture
async def agent(ctl: Controller, mosquitto: Any) -> AsyncIterator[AgentRun]:
    """A real agent of the registered AP, its gateway simulated, over the test broker."""
    async with running_agent(ctl, await the_ap(ctl), mosquitto) as run:
        await until(lambda: _state(ctl, run.agent.config.ap_id, "online"), what="AP online")
        yield run


pytestmark = [pytest.mark.broker]


def authorised(run: AgentRun, mac: str) -> bool:
    return any(c.mac == mac and c.authenticated for c in run.gateway.clients())


async def remember(ctl: Controller, mac: str, *, hours_ago: float = 0.0) -> None:
    devices = ctl.returning.devices
    terms = await devices.terms_in_force("46201")
    await devices.remember(mac, terms, now=ctl.clock() - hours_ago * 3600, hours=24)


async def returning_commands(ctl: Controller) -> list[Any]:
    async with ctl.db.connect() as conn:
        query = sa.select(commands).where(commands.c.purpose == "returning")
        return list((await conn.execute(query.order_by(commands.c.created_at))).all())


async def settled(ctl: Controller) -> None:
    """Wait until the agent has reported twice more (its later batches are processed)."""
    seen = ctl.counters["applied_health"]
    await until(lambda: ctl.counters["applied_health"] >= seen + 2, what="two health reports")
    await until(lambda: not ctl._tasks, what="background jobs done")


async def test_a_returning_device_is_let_in_as_it_appears_and_a_stranger_is_not(
    ctl: Controller, agent: AgentRun
) -> None:
    """A remembered device that joins the Wi-Fi is authorised by the controller with the
    commune's limits, with no portal request; a stranger arriving with it stays outside;
    sightings of the same appearance send nothing more; leaving and coming back is a new
    appearance."""
    ap_id = await the_ap(ctl)
    await remember(ctl, KNOWN)
    agent.gateway.arrive(STRANGER, "10.46.0.20")
    agent.gateway.arrive(KNOWN, "10.46.0.21")
    await until(lambda: authorised(agent, KNOWN), what="returning device authorised")
    await until(lambda: session_rows(ctl), what="session opened")
    await settled(ctl)
    assert not authorised(agent, STRANGER)
    (cmd,) = await returning_commands(ctl)
    args = json.loads(cmd.args)
    assert (cmd.ap_id, cmd.mac, cmd.ok) == (ap_id, KNOWN, True)
    # Rocamadour's session length and data quota (per direction, openNDS kB).
    assert args["minutes"] == 45
    assert args["up_quota_kb"] == args["down_quota_kb"] == 100 * 1_000_000 // 1024
    (row,) = await session_rows(ctl)
    assert (row.mac, row.auth_method) == (KNOWN, "returning")
    assert ctl.counters["returning_let_in"] == 1
    assert ctl.counters["sent_authorize"] == 1

    # The same appearance reported again (a replayed or repeated batch) sends nothing;
    # here a remembered device the gateway does not list: the agent refuses it, once.
    absent = "02:00:00:00:00:f6"
    await remember(ctl, absent)
    twice = ClientsMsg(
        v=1,
        ap=ap_id,
        boot="b",
        seq=1,
        ts=0.0,
        events=[ClientEvent(event="seen", mac=absent, ip="10.46.0.22", at=0.0)],
    )
    for _ in range(2):
        ctl.returning.after_message(twice, late=False, backfilled=False)
    await until(lambda: ctl.counters["returning_refused"] == 1, what="the agent's refusal")
    await settled(ctl)
    assert ctl.counters["sent_authorize"] == 2
    # A sync: the agent's full list reports the stranger "seen" again; nothing is sent.
    sync = await ctl.send_command(ap_id, SyncArgs())
    assert await ctl.wait_ack(sync, 10.0) is not None
    await settled(ctl)
    assert ctl.counters["sent_authorize"] == 2

    agent.gateway.leave(KNOWN)
    await until(lambda: _closed(ctl), what="session closed on leaving")
    agent.gateway.arrive(KNOWN, "10.46.0.21")
    await until(lambda: authorised(agent, KNOWN), what="authorised again")
    await settled(ctl)
    assert len(await returning_commands(ctl)) == 3
    assert ctl.counters["returning_let_in"] == 2
    assert ctl.counters["sent_authorize"] == 3


async def _closed(ctl: Controller) -> bool:
    rows = await session_rows(ctl)
    return bool(rows) and rows[-1].stopped_at is not None


async def test_no_command_for_devices_continuity_does_not_cover(
    ctl: Controller, agent: AgentRun
) -> None:
    """Unknown, forgotten, expired devices, devices that accepted other texts, and any
    device where the commune turned continuity off get no command."""
    expired, forgotten, other = "02:00:00:00:00:c3", "02:00:00:00:00:d4", "02:00:00:00:00:e5"
    await remember(ctl, expired, hours_ago=25)
    await remember(ctl, forgotten)
    assert await ctl.returning.devices.forget(forgotten)
    await remember(ctl, other)
    async with ctl.db.begin() as conn:
        await conn.execute(
            portal_legal_texts.insert().values(
                insee="46201", version="2027-01-01", published_at=ctl.clock(), content="{}"
            )
        )
    for mac in (STRANGER, expired, forgotten, other):
        agent.gateway.arrive(mac, "10.46.0.30")
    await until(lambda: ctl.counters["returning_other_terms"] == 1, what="other terms seen")
    await settled(ctl)
    assert ctl.counters["sent_authorize"] == 0
    assert not any(c.authenticated for c in agent.gateway.clients())

    # Continuity turned off at Rocamadour: a device with the texts in force stays out.
    await remember(ctl, KNOWN)
    off = {"46201": CommunePortalSettings(continuity=False)}
    ctl.settings = ctl.settings.model_copy(
        update={"portal": ctl.settings.portal.model_copy(update={"communes": off})}
    )
    agent.gateway.arrive(KNOWN, "10.46.0.31")
    await until(lambda: any(c.mac == KNOWN for c in agent.gateway.clients()), what="device listed")
    await settled(ctl)
    assert ctl.counters["sent_authorize"] == 0 and not authorised(agent, KNOWN)


async def test_a_device_logged_out_is_not_let_back_in_behind_the_visitors_back(
    ctl: Controller, agent: AgentRun
) -> None:
    """After a logout (deauthorize), the device reappearing at the same hotspot is held
    back: the visitor chose to leave, and an extension re-authorises with its own limits."""
    ap_id = await the_ap(ctl)
    await remember(ctl, KNOWN)
    agent.gateway.arrive(KNOWN, "10.46.0.21")
    await until(lambda: authorised(agent, KNOWN), what="returning device authorised")
    out = await ControllerPortalBackend(ctl).deauthorize(ap_id, KNOWN)
    assert out.ok, out
    await until(lambda: _closed(ctl), what="session closed")
    agent.gateway.arrive(KNOWN, "10.46.0.21")
    await until(lambda: ctl.counters["returning_held"] == 1, what="held back")
    await settled(ctl)
    assert not authorised(agent, KNOWN)
    assert len(await returning_commands(ctl)) == 1
