"""The landing page of a visitor who reached the portal directly."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from captive_portal.models import CommunePolicy, LoginResult
from controller.config import CommunePortalSettings
from tests.captive_portal.portal_fixtures import AP, CLIENT_IP, logged_in, portal_client
from tests.captive_portal.test_app import TERMS_VERSION, FakeBackend, text_of


async def test_landing_page_explains_how_to_log_in_or_sends_to_the_status(
    aiohttp_client: Any,
) -> None:
    """A captive visitor at ``/`` is told how to reach the login page; an online one is sent
    to the status page."""
    backend = FakeBackend()
    client = await portal_client(aiohttp_client, backend)
    captive = await client.get("/", params={"lang": "en"}, allow_redirects=False)
    assert captive.status == 200
    assert "Open any web page starting with http://" in text_of(await captive.text())
    backend.statuses[CLIENT_IP] = logged_in()
    online = await client.get("/", allow_redirects=False)
    assert (online.status, online.headers["Location"]) == (302, "/status")


async def test_extend_once_where_the_commune_allows_it(aiohttp_client: Any) -> None:
    """The status page offers "extend" (and the API says can-extend-session) only where
    the commune allows it and the session was not extended yet; the form needs its
    anti-forgery token; the backend re-authorises the device."""
    backend = FakeBackend()
    backend.commune_policy = CommunePolicy(
        insee="46042", commune="Cahors", terms_version=TERMS_VERSION
    )
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(
        aiohttp_client,
        backend,
        communes={"46042": CommunePortalSettings(can_extend_session=True)},
    )
    page = await client.get("/status", params={"lang": "en"})
    body = await page.text()
    assert "Extend my session" in text_of(body)
    api = await (await client.get("/capport/api")).json(content_type=None)
    assert api["can-extend-session"] is True
    token = re.search(
        r'action="/status/extend">\s*<input type="hidden" name="csrf" value="([^"]+)"', body
    )
    assert token is not None
    forged = await client.post("/status/extend", data={"csrf": "x", "lang": "en"})
    assert forged.status == 403 and backend.extends == []
    done = await client.post("/status/extend", data={"csrf": token.group(1), "lang": "en"})
    assert done.status == 200
    assert "Your session has been extended by 24 hours." in text_of(await done.text())
    assert backend.extends == [(AP, "aa:bb:cc:dd:ee:01")]

    backend.statuses[CLIENT_IP] = dataclasses.replace(logged_in(), method="extend")
    again = text_of(await (await client.get("/status", params={"lang": "en"})).text())
    assert "Extend my session" not in again
    api = await (await client.get("/capport/api")).json(content_type=None)
    assert api["can-extend-session"] is False
    refused = await client.post("/status/extend", data={"csrf": token.group(1), "lang": "en"})
    assert "This session cannot be extended." in text_of(await refused.text())
    assert len(backend.extends) == 1

    backend.extend_result = LoginResult(ok=False, session_minutes=0, error="no ack")
    backend.statuses[CLIENT_IP] = logged_in()
    failed = await client.post("/status/extend", data={"csrf": token.group(1), "lang": "en"})
    assert failed.status == 503


async def test_no_extend_where_the_commune_does_not_allow_it(aiohttp_client: Any) -> None:
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    page = await client.get("/status", params={"lang": "en"})
    assert "Extend my session" not in text_of(await page.text())
    api = await (await client.get("/capport/api")).json(content_type=None)
    assert api["can-extend-session"] is False


async def test_an_extension_the_gateway_completes_at_the_devices_return(
    aiohttp_client: Any, make_fas: Any
) -> None:
    """openNDS forgets a device it cuts off: the extension then waits for the device's
    next request, which openNDS sends to the login page; that page re-authorises it
    (method ``extend``) without asking anything, once."""
    backend = FakeBackend()
    backend.commune_policy = CommunePolicy(
        insee="46042", commune="Cahors", terms_version=TERMS_VERSION
    )
    backend.statuses[CLIENT_IP] = logged_in()
    backend.extend_result = LoginResult(ok=True, session_minutes=60, reconnect=True)
    client = await portal_client(
        aiohttp_client,
        backend,
        communes={"46042": CommunePortalSettings(can_extend_session=True)},
    )
    body = await (await client.get("/status", params={"lang": "en"})).text()
    token = re.search(
        r'action="/status/extend">\s*<input type="hidden" name="csrf" value="([^"]+)"', body
    )
    assert token is not None
    done = await client.post("/status/extend", data={"csrf": token.group(1), "lang": "en"})
    assert "if the login page opens, it lets you straight back in" in text_of(await done.text())
    assert backend.calls == []
    back = await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})
    text = text_of(await back.text())
    assert back.status == 200 and "Session extended" in text and "I accept" not in text
    assert [(c.method, c.client_mac, c.ap_id) for c in backend.calls] == [
        ("extend", "aa:bb:cc:dd:ee:01", AP)
    ]
    again = await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})
    assert "I accept the terms of use" in text_of(await again.text())
    assert len(backend.calls) == 1


async def test_an_extension_the_backend_keeps_is_completed_by_a_restarted_portal(
    aiohttp_client: Any, make_fas: Any
) -> None:
    """A portal that did not see the extension (restarted since) asks a backend that
    keeps extensions (the controller's database) and completes it at the device's
    return; a device with no extension waiting sees the login page."""

    class KeepingBackend(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.waiting: set[tuple[str, str]] = set()

        async def extension_waiting(self, ap_id: str, client_mac: str) -> bool:
            return (ap_id, client_mac) in self.waiting

    backend = KeepingBackend()
    backend.commune_policy = CommunePolicy(
        insee="46042", commune="Cahors", terms_version=TERMS_VERSION
    )
    client = await portal_client(aiohttp_client, backend)
    plain = await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})
    assert "I accept the terms of use" in text_of(await plain.text())
    assert backend.calls == []
    backend.waiting = {(AP, "aa:bb:cc:dd:ee:01")}
    back = await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})
    text = text_of(await back.text())
    assert back.status == 200 and "Session extended" in text and "I accept" not in text
    assert [(c.method, c.client_mac, c.ap_id) for c in backend.calls] == [
        ("extend", "aa:bb:cc:dd:ee:01", AP)
    ]
