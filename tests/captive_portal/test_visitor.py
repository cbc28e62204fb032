"""The landing page of a visitor who reached the portal directly."""

from __future__ import annotations

from typing import Any

from tests.captive_portal.portal_fixtures import CLIENT_IP, logged_in, portal_client
from tests.captive_portal.test_app import FakeBackend, text_of


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
