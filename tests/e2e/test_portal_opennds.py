"""The captive portal application against a real openNDS 9.10 gateway.

openNDS, dnsmasq and a DHCP client run in network namespaces (``tests/testbed.py``,
``make_hotspot`` fixture, marker ``netns``): the FAS query decoded here is the one the
real daemon builds, and the client really gets online.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from captive_portal._fas import decode_fas, gateway_auth_url
from captive_portal.app import create_app
from captive_portal.models import LoginRequest, LoginResult, PortalBackend
from controller.config import PortalSettings, Settings
from tests.captive_portal.test_app import FAS_KEY, FakeBackend, state_of, text_of
from tests.testbed import ROOT_IP, UPSTREAM_BODY, UPSTREAM_IP, Hotspot, free_port

UPSTREAM_URL = f"http://{UPSTREAM_IP}/"


class NdsctlBackend:
    """Does what the agent does on an authorize command: ``ndsctl auth <mac> <minutes>``."""

    def __init__(self, hotspot: Hotspot, minutes: int = 60) -> None:
        self.hotspot = hotspot
        self.minutes = minutes
        self.calls: list[LoginRequest] = []

    async def authorize(self, request: LoginRequest) -> LoginResult:
        self.calls.append(request)
        res = await self.hotspot.arun_in(
            "ap", "ndsctl", "auth", request.client_mac, str(self.minutes)
        )
        if res.returncode != 0:
            return LoginResult(ok=False, session_minutes=0, error=res.stdout[-200:])
        return LoginResult(ok=True, session_minutes=self.minutes, error=None)


@pytest.fixture
async def gateway(make_hotspot: Callable[..., Hotspot]) -> tuple[Hotspot, Settings]:
    """A real openNDS hotspot whose FAS is this portal's public URL, with the same key."""
    hotspot = await asyncio.to_thread(
        make_hotspot,
        fas_port=free_port(),
        gateway_name="lot-cahors-01",
        faspath="/fas/",
        faskey=FAS_KEY,
    )
    portal = PortalSettings(public_url=hotspot.fas_url, fas_key=SecretStr(FAS_KEY))
    return hotspot, Settings(portal=portal)


async def serve_portal(
    aiohttp_server: Any, settings: Settings, backend: PortalBackend, hotspot: Hotspot
) -> None:
    await aiohttp_server(create_app(settings, backend), host=ROOT_IP, port=hotspot.fas_port)


@pytest.mark.slow
async def test_real_opennds_client_logs_in_through_the_portal(
    gateway: tuple[Hotspot, Settings], aiohttp_server: Any
) -> None:
    """openNDS's real FAS redirect decodes, and consent on the page puts the client online."""
    hotspot, settings = gateway
    backend = NdsctlBackend(hotspot)
    await serve_portal(aiohttp_server, settings, backend, hotspot)

    redirect = await hotspot.acurl_from_client(UPSTREAM_URL)
    assert redirect.status == 307, redirect
    assert redirect.location is not None
    assert redirect.location.startswith(f"{hotspot.fas_url}?fas=")
    fas = decode_fas(
        urllib.parse.parse_qs(urllib.parse.urlsplit(redirect.location).query)["fas"][0]
    )
    assert fas.client_mac == hotspot.client_mac
    assert fas.client_ip == hotspot.client_ip
    assert fas.gateway_name == "lot-cahors-01"
    assert fas.gateway_address == hotspot.gateway_address

    page = await hotspot.acurl_from_client(redirect.location)
    assert page.status == 200, page
    assert page.headers.get("cache-control") == "no-store"
    assert "J'accepte les conditions d'utilisation" in text_of(page.body)
    accepted = await hotspot.acurl_from_client(
        f"{hotspot.fas_url}accept",
        "--data-urlencode", f"state={state_of(page.body)}",
        "--data", "consent=yes",
        "--data", "lang=fr",
    )  # fmt: skip
    assert accepted.status == 200, accepted
    assert "Vous êtes connecté·e" in text_of(accepted.body)
    assert [(c.ap_id, c.client_mac, c.client_ip) for c in backend.calls] == [
        ("lot-cahors-01", hotspot.client_mac, hotspot.client_ip)
    ]
    online = await hotspot.acurl_from_client(UPSTREAM_URL)
    assert (online.status, online.body.strip()) == (200, UPSTREAM_BODY)


@pytest.mark.slow
async def test_real_opennds_accepts_the_gateway_auth_url(
    gateway: tuple[Hotspot, Settings], aiohttp_server: Any
) -> None:
    """The agent-less way: openNDS lets the client in on ``gateway_auth_url``'s token."""
    hotspot, settings = gateway
    await serve_portal(aiohttp_server, settings, FakeBackend(), hotspot)
    redirect = await hotspot.acurl_from_client(UPSTREAM_URL)
    assert redirect.location is not None
    fas = decode_fas(
        urllib.parse.parse_qs(urllib.parse.urlsplit(redirect.location).query)["fas"][0]
    )
    auth = await hotspot.acurl_from_client(gateway_auth_url(fas, FAS_KEY, redir=UPSTREAM_URL))
    assert auth.status < 400, auth
    online = await hotspot.acurl_from_client(UPSTREAM_URL)
    assert (online.status, online.body.strip()) == (200, UPSTREAM_BODY)
