"""Shared page machinery: routes from the public URL, form fields, the visitor lookup."""

from __future__ import annotations

from typing import Any

import pytest

from captive_portal._pages import field, portal_routes
from tests.captive_portal.portal_fixtures import CLIENT_IP, logged_in, portal_client
from tests.captive_portal.test_app import FakeBackend


@pytest.mark.parametrize(
    ("public_url", "fas", "accept", "voucher"),
    [
        ("http://10.46.0.2:8080/fas/", "/fas/", "/fas/accept", "/fas/voucher"),
        ("https://portal.example.org/wifi", "/wifi", "/wifi/accept", "/wifi/voucher"),
        ("http://h", "/", "/accept", "/voucher"),
    ],
)
def test_form_routes_live_under_the_fas_path(
    public_url: str, fas: str, accept: str, voucher: str
) -> None:
    """Both login forms are posted under openNDS's faspath; the other pages stay at the root."""
    routes = portal_routes(public_url)
    assert (routes.fas, routes.accept, routes.voucher) == (fas, accept, voucher)
    assert (routes.status, routes.logout, routes.capport) == ("/status", "/logout", "/capport/api")


def test_only_text_fields_are_read() -> None:
    """A form field that is not text (an uploaded file) reads as missing."""
    assert field({"a": "x", "b": object()}, "a") == "x"
    assert field({"a": "x", "b": object()}, "b") is None
    assert field({}, "a") is None


async def test_a_crashing_backend_makes_the_visitor_captive_not_an_error(
    aiohttp_client: Any,
) -> None:
    """If the session lookup fails, the status page says "not connected" (200), never a 500."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()

    async def crash(client_ip: str, ap_id: str | None) -> None:
        raise RuntimeError("database down")

    backend.client_status = crash  # type: ignore[method-assign]
    client = await portal_client(aiohttp_client, backend)
    response = await client.get("/status", params={"lang": "en"})
    assert response.status == 200
    assert "You are not connected" in await response.text()
