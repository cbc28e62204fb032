"""The portal's backend against real peers: a real mosquitto, a real agent (its gateway
simulated), the state database, and the portal's HTTP app in front."""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from captive_portal._capport import CAPTIVE_JSON
from captive_portal._vouchers import VoucherPolicy
from captive_portal.app import create_app
from captive_portal.models import LoginRequest
from controller.portal_backend import ControllerPortalBackend, remaining
from controller.service import Controller
from controller.storage.schema import commands
from tests.captive_portal.test_legal import LEGAL as LEGAL_MIN
from tests.controller.test_bridge import (
    MAC,
    AgentRun,
    _state,
    broker_settings,
    connected_controller,
    running_agent,
    session_rows,
    the_ap,
    until,
)


@pytest.fixture
async def ctl(mosquitto: Any, tmp_path: Path) -> AsyncIterator[Controller]:
    """A controller core connected to the test broker, with one registered AP."""
    settings = broker_settings(mosquitto, tmp_path)
    async with connected_controller(settings, f"ap-portal-{os.getpid()}") as controller:
        yield controller


@pytest.fixture
async def agent(ctl: Controller, mosquitto: Any) -> AsyncIterator[AgentRun]:
    """A real agent of the registered AP, its gateway simulated, over the test broker."""
    async with running_agent(ctl, await the_ap(ctl), mosquitto) as run:
        yield run


pytestmark = [pytest.mark.broker]


class Row:
    """A session row's fields used by ``remaining``."""

    def __init__(self, started_at: float, up: int = 0, down: int = 0) -> None:
        self.started_at, self.up_bytes, self.down_bytes = started_at, up, down


@pytest.mark.parametrize(
    ("args", "row", "now", "expected"),
    [
        ({"minutes": 60}, Row(1000.0), 1000.0 + 600, (3000, None)),
        ({"minutes": 60}, Row(1000.0), 1000.0 + 4000, (0, None)),
        ({"minutes": 0}, Row(1000.0), 1000.0, (None, None)),
        (None, Row(1000.0), 1060.0, (24 * 3600 - 60, None)),
        (
            {"minutes": 10, "up_quota_kb": 100, "down_quota_kb": 1000},
            Row(0.0, up=50 * 1024, down=100 * 1024),
            0.0,
            (600, 50 * 1024),
        ),
        ({"minutes": 10, "down_quota_kb": 1}, Row(0.0, down=5000), 0.0, (600, 0)),
    ],
    ids=["time", "time-over", "unlimited", "no-command", "quota-closest", "quota-over"],
)
def test_what_is_left(
    args: dict[str, int] | None, row: Row, now: float, expected: tuple[int | None, int | None]
) -> None:
    """Time left counts from the session's start; data left is the direction nearest its quota."""
    assert remaining(row, args, 24 * 60, now) == expected


def csrf_of(body: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', body)
    assert match is not None
    return html.unescape(match.group(1))


async def test_login_status_api_and_logout_through_a_real_agent(
    ctl: Controller, agent: AgentRun, aiohttp_client: Any
) -> None:
    """A login reaches the agent; the API and status page then read the session; log-out cuts it."""
    ap_id = await the_ap(ctl)
    run = agent
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    # The aiohttp test client connects from 127.0.0.1: that is the visitor's address.
    run.gateway.arrive(MAC, "127.0.0.1")
    backend = ControllerPortalBackend(ctl)
    client = await aiohttp_client(create_app(ctl.settings, backend))

    api = await client.get("/capport/api", headers={"Accept": CAPTIVE_JSON})
    assert json.loads(await api.text())["captive"] is True

    result = await backend.authorize(
        LoginRequest(ap_id, MAC, "127.0.0.1", "click-through", "2026-11-01", "fr")
    )
    assert result.ok, result
    await until(lambda: session_rows(ctl), what="session opened")
    status = await backend.client_status("127.0.0.1", ap_id)
    assert status is not None
    assert (status.ap_id, status.client_mac, status.method) == (ap_id, MAC, "click-through")
    assert status.seconds_remaining is not None
    assert 0 < status.seconds_remaining <= ctl.settings.sessions.session_minutes * 60
    assert status.bytes_remaining is None

    api = await client.get(f"/capport/api/{ap_id}", headers={"Accept": CAPTIVE_JSON})
    body = json.loads(await api.text())
    assert body["captive"] is False
    assert 0 < body["seconds-remaining"] <= ctl.settings.sessions.session_minutes * 60

    page = await client.get("/status", params={"lang": "en"})
    text = await page.text()
    assert "Time left" in text
    logout = await client.post("/logout", data={"csrf": csrf_of(text), "ap": ap_id, "lang": "en"})
    assert logout.status == 200, await logout.text()
    assert MAC not in {c.mac for c in run.gateway.clients() if c.authenticated}
    await until(lambda: _closed_left(ctl), what="session closed by the agent")
    assert await backend.client_status("127.0.0.1", None) is None


async def _closed_left(ctl: Controller) -> bool:
    rows = await session_rows(ctl)
    return bool(rows) and rows[-1].terminate_cause == "left"


async def test_logout_of_an_unknown_ap_is_refused_without_a_command(ctl: Controller) -> None:
    """Logging out on an access point that is not registered sends nothing and says why."""
    backend = ControllerPortalBackend(ctl)
    result = await backend.deauthorize("ap-00000-00", MAC)
    assert (result.ok, result.error) == (False, "unknown access point")
    assert ctl.counters["sent_deauthorize"] == 0


async def test_an_address_open_on_two_access_points_is_ambiguous(ctl: Controller) -> None:
    """Without the AP named, an address with sessions on two APs gives no status at all."""
    backend = ControllerPortalBackend(ctl)
    await ctl.registry.add_access_point("ap-46201-77", "46201", "second")
    async with ctl.db.begin() as conn:
        for ap in (await the_aps(ctl))[:2]:
            await ctl.ledger.open_gateway_sessions(
                conn,
                [
                    {
                        "ap_id": ap,
                        "insee": "46201",
                        "mac": MAC,
                        "ip": "10.46.1.50",
                        "auth_method": None,
                        "auth_ref": None,
                        "started_at": ctl.clock(),
                    }
                ],
            )
    assert await backend.client_status("10.46.1.50", None) is None
    first = (await the_aps(ctl))[0]
    status = await backend.client_status("10.46.1.50", first)
    assert status is not None and status.ap_id == first


async def the_aps(ctl: Controller) -> list[str]:
    return sorted(str(r.ap_id) for r in await ctl.registry.access_points())


async def test_voucher_login_carries_its_limits_and_leaves_a_proof_of_acceptance(
    ctl: Controller, agent: AgentRun
) -> None:
    """A voucher's time, rates and quota reach the gateway; the acceptance is proven; a new
    version of the texts is not covered by the old proof; a wrong code sends nothing."""
    ap_id = await the_ap(ctl)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    agent.gateway.arrive(MAC, "10.46.1.60")
    backend = ControllerPortalBackend(ctl)
    now = ctl.clock()
    policy = VoucherPolicy(
        minutes=90,
        quota_mb=100,
        up_kbps=512,
        down_kbps=2048,
        expires_at=now + 86400,
        max_devices=1,
        insee="46201",
    )
    _, (code,) = await backend.store.issue_batch(policy, 1, now=now)
    sent_before = ctl.counters["sent_authorize"]
    wrong = await backend.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.60", "voucher", "2026-11-01", "de", code="ZZZZZZZZZZ")
    )
    assert (wrong.ok, wrong.bad_code) == (False, True)
    assert ctl.counters["sent_authorize"] == sent_before

    before = await backend.policy(ap_id, MAC)
    assert before is not None
    assert (before.insee, before.commune, before.accepted_version) == ("46201", "Rocamadour", None)
    result = await backend.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.60", "voucher", before.terms_version, "de", code=code)
    )
    assert (result.ok, result.session_minutes) == (True, 90)
    async with ctl.db.connect() as conn:
        (args,) = (
            await conn.execute(
                sa.select(commands.c.args).where(commands.c.cmd == "authorize", commands.c.ok)
            )
        ).one()
    quota_kb = 100 * 1_000_000 // 1024
    assert json.loads(args) == {
        "mac": MAC,
        "minutes": 90,
        "up_kbps": 512,
        "down_kbps": 2048,
        "up_quota_kb": quota_kb,
        "down_quota_kb": quota_kb,
    }
    after = await backend.policy(ap_id, MAC)
    assert after is not None and after.accepted_version == before.terms_version
    await backend.store.publish_legal("46201", "r-next", LEGAL_MIN, now=now + 1)
    newer = await backend.policy(ap_id, MAC)
    assert newer is not None
    assert (newer.terms_version, newer.accepted_version) == ("r-next", before.terms_version)
    assert newer.legal == LEGAL_MIN


async def test_email_login_keeps_the_identity_hash_and_the_session_extends_once(
    ctl: Controller, agent: AgentRun
) -> None:
    """An e-mail code login through a real agent leaves a keyed hash of the address for
    the legal store; extending cuts the device off and re-authorises it (the simulated
    gateway forgets it, as openNDS does, so the extension completes at its return) with
    what was left plus the granted length; a second extension is refused."""
    ap_id = await the_ap(ctl)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    agent.gateway.arrive(MAC, "10.46.1.70")
    backend = ControllerPortalBackend(ctl)
    result = await backend.authorize(
        LoginRequest(
            ap_id, MAC, "10.46.1.70", "email", "2026-11-01", "fr", identity="marie@example.org"
        )
    )
    assert result.ok, result
    (login,) = await backend.identities.logins_of("email", "marie@example.org")
    assert (login.insee, login.ap_id) == ("46201", ap_id)
    assert await backend.identities.logins_of("sms", "marie@example.org") == []
    await until(lambda: _open_method(ctl, "email"), what="e-mail session opened")

    extended = await backend.extend(ap_id, MAC)
    assert (extended.ok, extended.reconnect, extended.session_minutes) == (True, True, 24 * 60)
    assert MAC not in {c.mac for c in agent.gateway.clients()}
    agent.gateway.arrive(MAC, "10.46.1.70")
    back = await backend.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.70", "extend", "2026-11-01", "fr")
    )
    assert back.ok, back
    assert 2 * 24 * 60 - 2 <= back.session_minutes <= 2 * 24 * 60
    await until(lambda: _open_method(ctl, "extend"), what="extended session opened")
    status = await backend.client_status("10.46.1.70", ap_id)
    assert status is not None and status.method == "extend"
    assert status.seconds_remaining is not None
    assert status.seconds_remaining > 24 * 3600 + 23 * 3600
    again = await backend.extend(ap_id, MAC)
    assert (again.ok, again.error) == (False, "already extended")
    stray = await backend.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.70", "extend", "2026-11-01", "fr")
    )
    assert (stray.ok, stray.error) == (False, "no extension waiting")


async def _open_method(ctl: Controller, method: str) -> bool:
    rows = await session_rows(ctl)
    return any(r.auth_method == method and r.stopped_at is None for r in rows)


async def test_an_extension_waiting_for_its_device_survives_a_restart(
    ctl: Controller, agent: AgentRun
) -> None:
    """An extension waits for its device in the database: a new backend (a restarted
    controller keeps nothing in memory) tells the portal it waits and completes it once;
    the table holds no MAC."""
    from controller.storage.schema import portal_pending_extensions

    ap_id = await the_ap(ctl)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    agent.gateway.arrive(MAC, "10.46.1.80")
    first = ControllerPortalBackend(ctl)
    login = await first.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.80", "click-through", "2026-11-01", "fr")
    )
    assert login.ok, login
    await until(lambda: _open_method(ctl, "click-through"), what="session opened")
    extended = await first.extend(ap_id, MAC)
    assert (extended.ok, extended.reconnect) == (True, True)
    async with ctl.db.connect() as conn:
        stored = repr((await conn.execute(sa.select(portal_pending_extensions))).all())
    assert MAC not in stored and MAC.replace(":", "") not in stored

    restarted = ControllerPortalBackend(ctl)
    assert await restarted.extension_waiting(ap_id, MAC)
    assert not await restarted.extension_waiting(ap_id, "02:00:00:00:00:0b")
    agent.gateway.arrive(MAC, "10.46.1.80")
    back = await restarted.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.80", "extend", "2026-11-01", "fr")
    )
    assert back.ok, back
    assert back.session_minutes >= 2 * 24 * 60 - 2
    assert not await restarted.extension_waiting(ap_id, MAC)
    twice = await first.authorize(
        LoginRequest(ap_id, MAC, "10.46.1.80", "extend", "2026-11-01", "fr")
    )
    assert (twice.ok, twice.error) == (False, "no extension waiting")
