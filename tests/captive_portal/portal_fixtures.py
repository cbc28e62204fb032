"""Helpers shared by the portal's HTTP tests: a served portal with a fake backend."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from captive_portal.app import create_app
from captive_portal.models import ClientStatus
from tests.captive_portal.test_app import FakeBackend, FakeClock, settings_for

CLIENT_IP = "127.0.0.1"  # the aiohttp test client's source address
AP = "lot-cahors-01"


def logged_in(
    *,
    seconds: int | None = 3600,
    left: int | None = 500_000_000,
    used: int = 1_500_000,
    ap_id: str = AP,
) -> ClientStatus:
    """A logged-in client at the test client's address."""
    return ClientStatus(
        ap_id=ap_id,
        client_mac="aa:bb:cc:dd:ee:01",
        client_ip=CLIENT_IP,
        method="click-through",
        started_at=1_800_000_000.0,
        seconds_remaining=seconds,
        bytes_remaining=left,
        bytes_used=used,
    )


async def portal_client(
    aiohttp_client: Any, backend: FakeBackend, clock: FakeClock | None = None, **portal: Any
) -> Any:
    """A test client of a portal whose public URL is ``http://10.46.0.2:8080/fas/``."""
    app: web.Application = create_app(settings_for(**portal), backend, clock=clock or FakeClock())
    return await aiohttp_client(app)
