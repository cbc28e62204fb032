"""Headless Chromium (Debian's /usr/bin/chromium) logs in to the dashboards as each role.

The dashboards run on a real loopback port in the test's event loop; Chromium is driven
over the DevTools protocol (a websocket, through aiohttp). For each role it checks what
the page shows, that another commune cannot be reached by editing URLs or API calls,
that the map and the charts render non-empty, and runs axe-core (installed from npm into
a temporary directory at test time, never committed) on every page. The charting library
(Apache ECharts) is installed the way an operator does it, ``borne dashboard assets
install``, and the charts are drawn from a simulated month of statistics (the statistics
simulator through the real pipeline); no Content-Security-Policy violation is allowed.
Screenshots go to ``$BORNE_ARTIFACTS`` (default ``/tmp/borne-artifacts``)/dashboards/.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest
from aiohttp import web

from controller.service import Controller
from dashboards.app import REPORTS, create_app
from tests.dashboards.test_app import (
    ADMIN_SECRET,
    INSEE,
    PASSWORD,
    Agent,
    _with_assets,
    _write_usage_cells,
    accounts,
    controller,
    populated,
)
from tests.dashboards.test_reports import MONTH, write_simulated_month
from tests.testbed import free_port, require

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Re-exported fixtures (defined in tests/dashboards/test_app.py).
__all__ = ["accounts", "controller", "populated"]

AXE_VERSION = "4.14.1"
ARTIFACTS = Path(os.environ.get("BORNE_ARTIFACTS", "/tmp/borne-artifacts")) / "dashboards"


@pytest.fixture(scope="session")
def axe_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """axe-core's browser bundle, installed with npm into a temporary directory."""
    npm = shutil.which("npm") or require("npm (Debian package npm)")
    prefix = tmp_path_factory.mktemp("axe")
    done = subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
         f"axe-core@{AXE_VERSION}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    bundle = prefix / "node_modules" / "axe-core" / "axe.min.js"
    if done.returncode != 0 or not bundle.exists():
        require(f"axe-core from npm ({done.stderr[-500:]})")
    yield bundle.read_text("utf-8")


@pytest.fixture(scope="session")
def chart_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECharts installed by ``borne dashboard assets install`` (npm) into a directory."""
    shutil.which("npm") or require("npm (Debian package npm)")
    directory = tmp_path_factory.mktemp("dashboard-assets")
    borne = Path(sys.executable).parent / "borne"
    done = subprocess.run(
        [str(borne), "dashboard", "assets", "install", "--dir", str(directory)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        require(f"borne dashboard assets install ({done.stderr[-500:]})")
    assert "echarts" in done.stdout
    return directory


# Collects Content-Security-Policy violations from the first script of every document.
_CSP_WATCH = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation', e =>"
    " window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        async with asyncio.timeout(60):
            while True:
                msg = await self.ws.receive_json()
                if msg.get("id") == msg_id:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    result = msg.get("result", {})
                    assert isinstance(result, dict)
                    return result
                if "method" in msg and not self.events.full():
                    self.events.put_nowait(msg)

    async def goto(self, url: str) -> None:
        """Navigate and wait until the page is loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_loaded()

    async def wait_loaded(self) -> None:
        async with asyncio.timeout(30):
            while True:
                state = await self.eval("document.readyState")
                if state == "complete":
                    return
                await asyncio.sleep(0.1)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, name: str) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))
        return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium."""
    return shutil.which("chromium") or require("chromium (Debian package chromium)")


@pytest.fixture
async def browser(tmp_path: Path, chromium: str) -> AsyncIterator[Page]:
    """Headless Chromium with a fresh profile; its first tab."""
    binary = chromium
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while not targets:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                            targets = [t for t in await resp.json() if t["type"] == "page"]
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.2)
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Page.addScriptToEvaluateOnNewDocument", source=_CSP_WATCH)
                yield page
    finally:
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def site(accounts: Controller, chart_assets: Path) -> AsyncIterator[str]:
    """The dashboards on a real loopback port (real clock), with ECharts installed, usage
    cells and a simulated month of statistics published, and that month's reports made."""
    await _write_usage_cells(accounts)
    await write_simulated_month(accounts)
    app = create_app(_with_assets(accounts, chart_assets))
    await app[REPORTS].make(MONTH, [INSEE["Rocamadour"], INSEE["Cahors"], INSEE["Padirac"]])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    tcp = web.TCPSite(runner, "127.0.0.1", port)
    await tcp.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _login(page: Page, site: str, user: str) -> None:
    await page.send("Network.clearBrowserCookies")
    await page.goto(f"{site}/login")
    await page.eval(
        f"document.getElementById('username').value = {json.dumps(user)};"
        f"document.getElementById('password').value = {json.dumps(PASSWORD)};"
        "document.querySelector('form').submit(); true"
    )
    await asyncio.sleep(0.5)
    await page.wait_loaded()
    if (await page.eval("location.pathname")) == "/login/totp":
        code = pyotp.TOTP(ADMIN_SECRET).now()
        await page.eval(
            f"document.getElementById('code').value = '{code}';"
            "document.querySelector('form').submit(); true"
        )
        await asyncio.sleep(0.5)
        await page.wait_loaded()
    assert await page.eval("location.pathname") == "/", await page.eval("document.body.innerText")


async def _axe(page: Page, axe_source: str, where: str) -> None:
    await page.eval(axe_source + "; true")
    violations = await page.eval(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})"
        ".then(r => r.violations.map(v => v.id + ': ' + v.nodes.length + ' ' +"
        " v.nodes.slice(0, 2).map(n => n.target.join(' ')).join(' | ')))"
    )
    assert violations == [], f"{where}: {violations}"


async def _status(page: Page, url: str) -> int:
    value = await page.eval(f"fetch({json.dumps(url)}).then(r => r.status)")
    assert isinstance(value, int)
    return value


async def test_commune_viewer_sees_only_its_commune_in_the_browser(
    browser: Page, site: str, axe_source: str
) -> None:
    """Logged in as Rocamadour: its 2 markers and rows, nothing of Cahors by page, URL or API."""
    await _login(browser, site, "roc")
    assert await browser.eval("document.querySelectorAll('svg.map path').length") == 320
    assert await browser.eval("document.querySelectorAll('circle.marker').length") == 2
    text = await browser.eval("document.body.innerText")
    assert "rocamadour-01" in text and "cahors-01" not in text
    await browser.screenshot("viewer-home")
    await _axe(browser, axe_source, "viewer home")
    cahors = INSEE["Cahors"]
    assert await _status(browser, f"/api/fleet?commune={cahors}") == 403
    assert await _status(browser, f"/api/sessions?commune={cahors}") == 403
    assert await _status(browser, f"/usage.csv?table=daily&commune={cahors}") == 403
    fleet = await browser.eval("fetch('/api/fleet').then(r => r.json())")
    assert {h["ap_id"] for h in fleet["hotspots"]} == {"rocamadour-01", "rocamadour-02"}
    await browser.goto(f"{site}/commune/{cahors}")
    assert "accès refusé" in await browser.eval("document.body.innerText")
    await browser.goto(f"{site}/usage?from=2026-05-26&to=2026-05-27")
    bars = await browser.eval(
        "[...document.querySelectorAll('svg.chart rect')]"
        ".filter(r => +r.getAttribute('height') > 0).length"
    )
    assert bars >= 3  # two days and at least one hour
    await browser.screenshot("viewer-usage")
    await _axe(browser, axe_source, "viewer usage")
    await browser.goto(f"{site}/report?month=2026-05")
    assert "Rapport mensuel" in await browser.eval("document.title")
    await browser.screenshot("viewer-report")
    await _axe(browser, axe_source, "viewer report")


async def test_admin_and_technician_see_the_territory_and_live_changes(
    browser: Page, site: str, axe_source: str, accounts: Controller
) -> None:
    """The admin (with TOTP) sees 4 markers and the accounts page; the live page follows a stop."""
    await _login(browser, site, "admin")
    assert await browser.eval("document.querySelectorAll('circle.marker').length") == 4
    assert "communes équipées" in await browser.eval("document.body.innerText")
    await browser.screenshot("admin-home")
    await _axe(browser, axe_source, "admin home")
    await browser.goto(f"{site}/admin/accounts")
    assert await browser.eval("document.querySelectorAll('tbody tr').length") == 5
    await browser.screenshot("admin-accounts")
    await _axe(browser, axe_source, "admin accounts")
    await _login(browser, site, "tech")
    await browser.goto(f"{site}/fleet")
    await _axe(browser, axe_source, "technician fleet")
    row = "document.querySelector('tr[data-ap=\"cahors-01\"] [data-field=state]').textContent"
    assert await browser.eval(row) == "en ligne"
    agent = Agent(accounts, "cahors-01")
    await agent.online(1_780_000_000.0)
    await agent.offline(1_780_000_001.0)
    for _ in range(75):  # 15 s
        if await browser.eval(row) == "hors ligne":
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the live page never showed cahors-01 offline")
    await browser.screenshot("technician-fleet-live")


async def test_legal_officer_sees_no_hotspot(browser: Page, site: str, axe_source: str) -> None:
    """The legal officer, after TOTP, gets a page without hotspots and 403 from the API."""
    await _login(browser, site, "legal")
    text = await browser.eval("document.body.innerText")
    assert "borne legal" in text and "rocamadour" not in text.lower()
    assert await _status(browser, "/api/fleet") == 403
    await _axe(browser, axe_source, "legal home")


_CHART_MARKS = (
    "Object.fromEntries([...document.querySelectorAll('[data-chart]')].map(b =>"
    " [b.dataset.chart,"
    "  b.hidden ? -1 : b.querySelectorAll('svg path, svg rect, svg text').length]))"
)


async def _charts_drawn(page: Page) -> dict[str, int]:
    """Marks per chart box once the library drew them (-1: box still hidden)."""
    for _ in range(100):
        if await page.eval("document.body.getAttribute('data-charts')"):
            break
        await asyncio.sleep(0.1)
    marks = await page.eval(_CHART_MARKS)
    assert isinstance(marks, dict)
    return marks


async def test_charts_from_a_simulated_month_render_and_stay_accessible(
    browser: Page, site: str, axe_source: str
) -> None:
    """ECharts, as installed by the CLI, draws the commune's daily, hourly, dwell, volume
    and flows (Sankey) charts of a simulated April, and the territory's routes; the
    server-drawn charts are hidden then, no CSP violation occurs, and axe finds nothing."""
    await _login(browser, site, "roc")
    await browser.goto(f"{site}/usage?from=2026-04-01&to=2026-04-30")
    marks = await _charts_drawn(browser)
    assert set(marks) == {"daily", "hours", "dwell", "volume", "flows"}
    assert all(n > 20 for n in marks.values()), marks
    hidden = await browser.eval(
        "[...document.querySelectorAll('[data-fallback]')].every(f => f.hidden)"
    )
    assert hidden is True
    sankey = await browser.eval("document.querySelector('[data-chart=flows]').innerText")
    assert "Rocamadour" in sankey or await browser.eval(
        "[...document.querySelectorAll('[data-chart=flows] svg text')]"
        ".some(t => t.textContent.includes('Rocamadour'))"
    )
    assert await browser.eval("window.__csp") == []
    await browser.screenshot("viewer-usage-charts")
    await _axe(browser, axe_source, "viewer usage with charts")
    # Without JavaScript: the server-drawn charts (bars, flows' Sankey) and the tables.
    await browser.send("Emulation.setScriptExecutionDisabled", value=True)
    await browser.goto(f"{site}/usage?from=2026-04-01&to=2026-04-30")
    await browser.send("Emulation.setScriptExecutionDisabled", value=False)
    shown = await browser.eval(
        "[...document.querySelectorAll('[data-fallback]')].filter(f => !f.hidden).length"
    )
    assert shown == 3  # daily, hours, flows
    assert await browser.eval("document.querySelectorAll('svg.flows path').length") >= 4
    assert await browser.eval("document.querySelectorAll('[data-chart]:not([hidden])').length") == 0
    await browser.screenshot("viewer-usage-without-javascript")
    await browser.goto(f"{site}/reports")
    assert await browser.eval("document.querySelectorAll('tr[data-report]').length") == 1
    await browser.screenshot("viewer-reports")
    await _axe(browser, axe_source, "viewer reports")
    assert await _status(browser, f"/reports/{INSEE['Cahors']}/{MONTH}") == 403
    await browser.goto(f"{site}/reports/{INSEE['Rocamadour']}/{MONTH}")
    bars = await browser.eval(
        "[...document.querySelectorAll('svg.chart rect')]"
        ".filter(r => +r.getAttribute('height') > 0).length"
    )
    assert bars >= 20
    await browser.screenshot("viewer-stored-report")

    await _login(browser, site, "tech")
    await browser.goto(f"{site}/usage?from=2026-04-01&to=2026-04-30")
    marks = await _charts_drawn(browser)
    assert marks["flows"] > 20 and marks["daily"] > 20, marks
    assert await browser.eval("window.__csp") == []
    await browser.screenshot("territory-usage-sankey")
    await _axe(browser, axe_source, "territory usage with charts")


async def test_commune_manager_page_in_the_browser(
    browser: Page, site: str, axe_source: str
) -> None:
    """The manager's page lists its viewer and contact forms, and passes axe."""
    await _login(browser, site, "epci")
    await browser.goto(f"{site}/commune-admin")
    assert await browser.eval("document.querySelectorAll('tr[data-account]').length") == 1
    assert await browser.eval("document.querySelectorAll('form[data-contact]').length") == 2
    await browser.screenshot("manager-page")
    await _axe(browser, axe_source, "manager page")
