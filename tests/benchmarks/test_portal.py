"""Captive portal benchmark: logins per second and latency with 200 concurrent visitors.

Each visitor fetches the login page (openNDS FAS query), posts the consent, and waits for
the controller's ``authorize`` to reach a real agent over a real mosquitto and come back
acknowledged (the agent's gateway is simulated). Reference, same run, same concurrency,
same connection handling (``Connection: close``): a bare aiohttp handler answering the
same two requests with a fixed page. Results are printed and written to
docs/BENCHMARKS.md by hand, with this command:

    .venv/bin/pytest -q -s -m slow tests/benchmarks/test_portal.py
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from captive_portal.app import create_app
from controller.main import serve_app
from controller.portal_backend import ControllerPortalBackend
from controller.service import Controller
from tests.controller.test_bridge import AgentRun, _state, the_ap, until
from tests.controller.test_portal_backend import agent, ctl  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.broker]

VISITORS = 200


def fas_query(ap_id: str, mac: str, ip: str) -> str:
    fields = {
        "hid": secrets.token_hex(32),
        "clientip": ip,
        "clientmac": mac,
        "client_type": "cpd_can",
        "gatewayname": ap_id,
        "gatewayaddress": "10.46.1.1:2050",
        "originurl": "http%3a%2f%2fexample.org%2f",
    }
    return base64.b64encode("".join(f"{k}={v}, " for k, v in fields.items()).encode()).decode()


Visit = Callable[[aiohttp.ClientSession, int], Awaitable[None]]


async def crowd(visit: Visit, count: int) -> tuple[float, list[float]]:
    """Run ``count`` visits at once; return the wall time and each visit's latency."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            t = time.perf_counter()
            await visit(session, i)
            latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - start, latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def _bare_page(request: web.Request) -> web.Response:
    response = web.Response(text=PAGE, content_type="text/html")
    response.force_close()
    return response


PAGE = '<form method="post"><input type="hidden" name="state" value="x"></form>'


@pytest.fixture
async def bare_url() -> AsyncIterator[str]:
    """A bare aiohttp app: the same two requests answered with a fixed page."""
    app = web.Application()
    app.router.add_get("/fas/", _bare_page)
    app.router.add_post("/fas/accept", _bare_page)
    async with serve_app(app, "127.0.0.1", 0) as url:
        yield url


async def test_logins_per_second_and_p99_with_200_visitors(
    ctl: Controller,  # noqa: F811 - the imported fixture
    agent: AgentRun,  # noqa: F811 - the imported fixture
    bare_url: str,
) -> None:
    """200 concurrent visitors all get in; logins/s and p99 are reported against a bare
    aiohttp handler serving the same requests in the same run."""
    ap_id = await the_ap(ctl)
    await until(lambda: _state(ctl, ap_id, "online"), what="AP online")
    visitors = [
        (f"02:bb:00:00:{i >> 8:02x}:{i & 255:02x}", f"10.46.{i // 250}.{i % 250 + 2}")
        for i in range(VISITORS)
    ]
    for mac, ip in visitors:
        agent.gateway.arrive(mac, ip)
    portal = await asyncio.to_thread(create_app, ctl.settings, ControllerPortalBackend(ctl))
    async with serve_app(portal, "127.0.0.1", 0) as portal_url:
        weights: dict[str, int] = {}

        async def login(session: aiohttp.ClientSession, i: int) -> None:
            mac, ip = visitors[i]
            async with session.get(
                f"{portal_url}/fas/", params={"fas": fas_query(ap_id, mac, ip)}
            ) as page:
                body = await page.text()
                assert page.status == 200
                weights["login"] = len(body.encode())
            state = re.search(r'name="state" value="([^"]+)"', body)
            assert state is not None
            async with session.post(
                f"{portal_url}/fas/accept",
                data={"state": state.group(1).replace("&amp;", "&"), "consent": "yes"},
            ) as done:
                text = await done.text()
                assert done.status == 200, text[:300]
                weights["success"] = len(text.encode())

        async def bare(session: aiohttp.ClientSession, i: int) -> None:
            async with session.get(f"{bare_url}/fas/", params={"fas": "x"}) as page:
                await page.read()
            async with session.post(f"{bare_url}/fas/accept", data={"state": "x"}) as done:
                await done.read()

        bare_s, bare_lat = await crowd(bare, VISITORS)
        portal_s, portal_lat = await crowd(login, VISITORS)
    logins = ctl.counters["portal_logins"]
    assert logins == VISITORS
    rate, bare_rate = VISITORS / portal_s, VISITORS / bare_s
    print(
        f"\nportal: {rate:.0f} logins/s, p50 {statistics.median(portal_lat) * 1000:.0f} ms,"
        f" p99 {p99(portal_lat) * 1000:.0f} ms;"
        f" bare aiohttp: {bare_rate:.0f} visits/s, p99 {p99(bare_lat) * 1000:.0f} ms;"
        f" ratio {bare_rate / rate:.1f}x; page weights {weights}"
    )
