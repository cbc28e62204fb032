"""Returning devices (territorial continuity) through the portal's HTTP app, a real
controller and real agents over a real mosquitto (gateways simulated): after one login,
the device is let in at another hotspot of another commune with no page at all; a new
version of the texts asks again."""

from __future__ import annotations

import base64
import functools
import html
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from captive_portal._continuity import ContinuityBackend, redirect
from captive_portal.app import COUNTERS, create_app
from captive_portal.store import PortalStore
from controller.config import load_settings
from controller.main import open_controller
from controller.portal_backend import ControllerPortalBackend
from controller.registry import Commune
from controller.service import Controller
from controller.storage.schema import commands
from tests.captive_portal.test_app import FakeBackend, FakeClock, settings_for
from tests.captive_portal.test_legal import LEGAL
from tests.controller.test_bridge import MASTER, AgentRun, _state, agents, until

__all__ = ["agents"]  # the agent factory fixture, used below

MAC = "02:00:00:00:00:c1"
AP_A = "ap-46201-61"  # Rocamadour
AP_B = "ap-46042-61"  # Cahors
ORIGIN = "http://example.org/visit?day=1"


def fas_query(ap_id: str, mac: str = MAC, origin: str | None = ORIGIN) -> str:
    """An openNDS FAS level-1 query for the test client (127.0.0.1)."""
    fields = {
        "hid": "ab" * 32,
        "clientip": "127.0.0.1",
        "clientmac": mac,
        "gatewayname": ap_id,
        "gatewayaddress": "10.46.1.1:2050",
    }
    if origin is not None:
        fields["originurl"] = origin.replace(":", "%3a").replace("/", "%2f").replace("?", "%3f")
    text = "".join(f"{k}={v}, " for k, v in fields.items())
    return base64.b64encode(text.encode()).decode()


def state_of(body: str) -> str:
    match = re.search(r'name="state" value="([^"]+)"', body)
    assert match is not None, body[:400]
    return html.unescape(match.group(1))


def _seen(ctl: Controller, ap_id: str) -> bool:
    """The controller has seen the device ``MAC`` at ``ap_id`` (its look-up is under way)."""
    return (ap_id, MAC) in ctl.returning.appearances._until


@pytest.fixture
async def ctl(mosquitto: Any, tmp_path: Path) -> AsyncIterator[Controller]:
    """A controller with two access points in two communes."""
    settings = load_settings(
        None,
        command_master_key=MASTER,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "client_id": "ctl-continuity"},
        sessions={"acct_interval_s": 10},
        # Cahors gives shorter sessions than the territory's default.
        portal={"continuity_hours": 24, "communes": {"46042": {"session_minutes": 45}}},
    )
    async with open_controller(settings, backoff_cap_s=1.0) as (controller, _tg):
        await controller.registry.add_communes(
            [Commune("46201", "Rocamadour", 1.6, 44.8), Commune("46042", "Cahors", 1.4, 44.4)]
        )
        await controller.registry.add_access_point(AP_A, "46201", "Rocamadour")
        await controller.registry.add_access_point(AP_B, "46042", "Cahors")
        await until(lambda: controller.bridge and controller.bridge.subscribed.is_set())
        yield controller


pytestmark = [pytest.mark.broker]


async def test_returning_device_gets_no_page_until_the_texts_change(
    ctl: Controller, agents: Callable[..., AgentRun], mosquitto: Any, aiohttp_client: Any
) -> None:
    """Login at A (page, consent); at B the FAS entry lets the device in at once and
    redirects to the page it asked for; once B's commune publishes its own texts, the
    page is shown again."""
    run_a = agents(ctl, AP_A, mosquitto)
    run_b = agents(ctl, AP_B, mosquitto)
    for ap in (AP_A, AP_B):
        await until(functools.partial(_state, ctl, ap, "online"), what=f"{ap} online")
    run_a.gateway.arrive(MAC, "127.0.0.1")
    run_b.gateway.arrive(MAC, "127.0.0.1")
    # Both appearances reach the controller, and its look-up of the (still unknown) device
    # ends, before the login: this test is about the FAS entry, not the agent's report.
    for ap in (AP_A, AP_B):
        await until(functools.partial(_seen, ctl, ap), what=f"seen at {ap}")
    await until(
        lambda: not any(t.get_name().startswith("returning.") for t in ctl._tasks),
        what="look-ups done",
    )
    backend = ControllerPortalBackend(ctl)
    assert isinstance(backend, ContinuityBackend)
    client = await aiohttp_client(create_app(ctl.settings, backend))
    assert not await backend.returning(AP_B, MAC)
    page = await client.get("/fas/", params={"fas": fas_query(AP_A)})
    body = await page.text()
    assert page.status == 200 and 'name="consent"' in body
    done = await client.post(
        "/fas/accept", data={"state": state_of(body), "lang": "fr", "consent": "yes"}
    )
    assert done.status == 200, await done.text()
    assert await backend.returning(AP_B, MAC)

    # At B (another commune, same texts): no page, straight to the origin URL.
    again = await client.get("/fas/", params={"fas": fas_query(AP_B)}, allow_redirects=False)
    assert again.status == 302, await again.text()
    assert again.headers["Location"] == ORIGIN
    assert MAC in {c.mac for c in run_b.gateway.clients() if c.authenticated}
    assert client.app[COUNTERS].returning == 1
    assert ctl.counters["portal_returning"] == 1
    # The command carried Cahors's session length and the purpose "returning".
    async with ctl.db.connect() as conn:
        sent = (
            await conn.execute(
                sa.select(commands.c.purpose, commands.c.args).where(
                    commands.c.ap_id == AP_B, commands.c.cmd == "authorize"
                )
            )
        ).all()
    assert [(p, json.loads(a)["minutes"]) for p, a in sent] == [("returning", 45)]

    # Without an origin URL, a short "connected" page.
    plain = await client.get(
        "/fas/", params={"fas": fas_query(AP_B, origin=None)}, allow_redirects=False
    )
    assert plain.status == 200 and 'name="consent"' not in await plain.text()

    # Cahors publishes its own texts: the visitor must read and accept them there...
    await PortalStore(ctl.db, ctl.settings.portal.secret_key.get_secret_value()).publish_legal(
        "46042", "cahors-2027", LEGAL, now=ctl.clock()
    )
    asked = await client.get("/fas/", params={"fas": fas_query(AP_B)}, allow_redirects=False)
    assert asked.status == 200 and 'name="consent"' in await asked.text()
    # ...while Rocamadour's texts are unchanged: still no page there.
    at_a = await client.get("/fas/", params={"fas": fas_query(AP_A)}, allow_redirects=False)
    assert at_a.status == 302
    # An unknown device always gets the page.
    other = await client.get("/fas/", params={"fas": fas_query(AP_A, mac="02:00:00:00:00:c2")})
    assert other.status == 200 and 'name="consent"' in await other.text()


async def test_continuity_off_or_backend_without_it_shows_the_page(aiohttp_client: Any) -> None:
    """With continuity off, or a backend that does not keep it, the page is shown."""

    class Remembering(FakeBackend):
        async def returning(self, ap_id: str, client_mac: str) -> bool:
            return True

    for backend, hours in ((Remembering(), 0), (FakeBackend(), 24)):
        app = create_app(settings_for(continuity_hours=hours), backend, clock=FakeClock())
        client = await aiohttp_client(app)
        page = await client.get("/fas/", params={"fas": fas_query("lot-cahors-01")})
        assert page.status == 200 and 'name="consent"' in await page.text()
        assert app[COUNTERS].returning == 0


async def test_recognised_device_whose_ap_does_not_answer_gets_the_page(
    aiohttp_client: Any,
) -> None:
    """Continuity says yes but the access point refuses: the page, as for anyone."""

    class Refusing(FakeBackend):
        async def returning(self, ap_id: str, client_mac: str) -> bool:
            return True

    backend = Refusing()
    backend.result = backend.result.__class__(ok=False, session_minutes=0, error="no ack")
    app = create_app(settings_for(continuity_hours=24), backend, clock=FakeClock())
    client = await aiohttp_client(app)
    page = await client.get("/fas/", params={"fas": fas_query("lot-cahors-01")})
    assert page.status == 200 and 'name="consent"' in await page.text()
    assert [r.method for r in backend.calls] == ["returning"]


def test_redirect_escapes_its_link() -> None:
    """The redirect's body link is escaped (the location comes from the gateway)."""
    res = redirect('http://example.org/?a="><script>')
    assert res.status == 302 and res.text is not None
    assert "<script>" not in res.text and res.headers["Location"].endswith("<script>")


async def test_privacy_notice_tells_the_continuity(aiohttp_client: Any) -> None:
    """The notice says how long a device is recognised, and only when it is."""
    for hours, shown in ((24, True), (0, False)):
        app = create_app(settings_for(continuity_hours=hours), FakeBackend(), clock=FakeClock())
        client = await aiohttp_client(app)
        page = await client.get("/privacy", params={"lang": "fr"})
        body = await page.text()
        assert page.status == 200
        assert ("pendant 24 heures sur toutes les bornes" in body) is shown, body[-1500:]
        assert ("Reconnaissance de votre appareil" in body) is shown
