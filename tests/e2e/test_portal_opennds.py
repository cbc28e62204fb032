"""The captive portal application against a real openNDS 9.10 gateway.

openNDS, dnsmasq and a DHCP client run in network namespaces (``tests/testbed.py``,
``make_hotspot`` fixture, marker ``netns``): the FAS query decoded here is the one the
real daemon builds, and the client really gets online.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from captive_portal._fas import decode_fas, gateway_auth_url
from captive_portal._probes import PROBES, Verdict, classify
from captive_portal.app import create_app
from captive_portal.models import (
    ClientStatus,
    CommunePolicy,
    LoginRequest,
    LoginResult,
    LogoutResult,
    PortalBackend,
)
from controller.config import PortalSettings, Settings
from tests.captive_portal.test_app import FAS_KEY, FakeBackend, state_of, text_of
from tests.e2e._stack import hotspot_for_portal
from tests.testbed import ROOT_IP, UPSTREAM_BODY, UPSTREAM_IP, Hotspot, HttpResult

UPSTREAM_URL = f"http://{UPSTREAM_IP}/"


class NdsctlBackend:
    """Does what the agent does on its commands: ``ndsctl auth <mac> <minutes>``,
    ``ndsctl deauth <mac>``; reads a client's state from ``ndsctl json`` (what the agent
    reports to the controller's session store)."""

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

    async def client_status(self, client_ip: str, ap_id: str | None) -> ClientStatus | None:
        entry = await asyncio.to_thread(self.hotspot.client_entry)
        if entry is None or entry.get("ip") != client_ip or entry.get("state") != "Authenticated":
            return None
        end = float(entry["session_end"]) if entry["session_end"] != "null" else None
        return ClientStatus(
            ap_id=ap_id or "lot-cahors-01",
            client_mac=self.hotspot.mac,
            client_ip=client_ip,
            method="click-through",
            started_at=float(entry["session_start"]),
            seconds_remaining=None if end is None else int(end - time.time()),
            bytes_remaining=None,
            bytes_used=1024 * int(entry["download_this_session"]),
        )

    async def policy(self, ap_id: str, client_mac: str | None) -> CommunePolicy | None:
        return None  # the portal's built-in texts

    async def deauthorize(self, ap_id: str, client_mac: str) -> LogoutResult:
        res = await self.hotspot.arun_in("ap", "ndsctl", "deauth", client_mac)
        return LogoutResult(ok=res.returncode == 0, error=res.stdout[-200:] or None)

    async def extend(self, ap_id: str, client_mac: str) -> LoginResult:
        """What the controller does: cut the device off (openNDS refuses ``ndsctl auth``
        for an authenticated client, and forgets it once cut off); the portal completes
        the extension when the device comes back (``authorize``, method ``extend``)."""
        res = await self.hotspot.arun_in("ap", "ndsctl", "deauth", client_mac)
        if res.returncode != 0:
            return LoginResult(ok=False, session_minutes=0, error=res.stdout[-200:])
        return LoginResult(ok=True, session_minutes=self.minutes, reconnect=True)


@pytest.fixture
async def gateway(make_hotspot: Callable[..., Hotspot], tmp_path: Path) -> tuple[Hotspot, Settings]:
    """A real openNDS hotspot whose FAS is this portal's public URL, with the same key."""
    hotspot, _port = await asyncio.to_thread(
        hotspot_for_portal, make_hotspot, tmp_path, "lot-cahors-01", FAS_KEY
    )
    portal = PortalSettings(public_url=hotspot.fas_url, fas_key=SecretStr(FAS_KEY))
    return hotspot, Settings(portal=portal)


async def accept_terms(hotspot: Hotspot, page: str, *curl_args: str) -> HttpResult:
    """The client ticks the box of the login ``page`` and submits it (``curl_args``: more
    fields)."""
    return await hotspot.acurl_from_client(
        f"{hotspot.fas_url}accept",
        "--data-urlencode", f"state={state_of(page)}",
        "--data", "consent=yes",
        *curl_args,
    )  # fmt: skip


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
    accepted = await accept_terms(hotspot, page.body, "--data", "lang=fr")
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


# The "Internet" of the testbed answers each OS probe as the OS vendor's server does.
PROBE_SERVER_IP = "10.46.0.3"
_PROBE_SERVER = """
import http.server, sys
from captive_portal._probes import find_probe

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        probe = find_probe(self.headers.get("Host", "").split(":")[0], self.path.split("?")[0])
        status, body, ctype = (404, "", "text/plain") if probe is None else (
            probe.status, probe.body, probe.content_type)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

http.server.HTTPServer((sys.argv[1], 80), H).serve_forever()
"""


async def probe_verdicts(hotspot: Hotspot) -> dict[str, Verdict]:
    """What each OS concludes from its probe, fetched by the client through openNDS."""
    verdicts = {}
    for probe in PROBES:
        got = await hotspot.acurl_from_client(
            f"http://{probe.host}{probe.path}",
            "--resolve", f"{probe.host}:80:{PROBE_SERVER_IP}",
        )  # fmt: skip
        verdicts[f"{probe.platform.value}:{probe.host}{probe.path}"] = classify(
            probe.platform, got.status, got.body, probe=probe
        )
    return verdicts


@pytest.mark.slow
async def test_every_os_probe_sees_the_portal_then_the_internet_then_the_portal_again(
    gateway: tuple[Hotspot, Settings], aiohttp_server: Any
) -> None:
    """Through real openNDS: every OS sees a portal before login, the Internet after, and a
    portal again after logging out from the status page."""
    hotspot, settings = gateway
    await hotspot.arun_in("inet", "ip", "addr", "add", f"{PROBE_SERVER_IP}/24", "dev", "inet0")
    await asyncio.to_thread(
        hotspot.start_in,
        "inet",
        sys.executable,
        "-c",
        _PROBE_SERVER,
        PROBE_SERVER_IP,
        name="probe-server",
    )
    backend = NdsctlBackend(hotspot)
    await serve_portal(aiohttp_server, settings, backend, hotspot)
    before = await probe_verdicts(hotspot)
    all_portal = {key: Verdict.PORTAL for key in before}
    assert len(before) == len(PROBES)
    assert before == all_portal

    redirect = await hotspot.acurl_from_client(UPSTREAM_URL)
    assert redirect.location is not None
    page = await hotspot.acurl_from_client(redirect.location)
    accepted = await accept_terms(hotspot, page.body)
    assert accepted.status == 200, accepted
    # The probe server may take a moment to start: the verdicts settle on "online".
    expected_online = {key: Verdict.ONLINE for key in all_portal}
    deadline = time.monotonic() + 15
    while (online := await probe_verdicts(hotspot)) != expected_online:
        assert time.monotonic() < deadline, online
        await asyncio.sleep(0.5)

    status = await hotspot.acurl_from_client(f"{hotspot.fas_url.rsplit('/fas/', 1)[0]}/status")
    assert status.status == 200, status
    assert "Temps restant" in text_of(status.body)
    token = re.search(r'name="csrf" value="([^"]+)"', status.body)
    assert token is not None
    logout = await hotspot.acurl_from_client(
        f"{hotspot.fas_url.rsplit('/fas/', 1)[0]}/logout",
        "--data-urlencode", f"csrf={token.group(1)}",
        "--data", "ap=lot-cahors-01",
    )  # fmt: skip
    assert logout.status == 200, logout
    assert "Vous êtes déconnecté·e" in text_of(logout.body)
    assert await probe_verdicts(hotspot) == all_portal
