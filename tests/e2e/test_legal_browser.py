"""Headless Chromium answers a requisition on the legal officer's pages, end to end.

Two legal officers (password + TOTP) on the real dashboards, on a loopback port, with a
real legal log (real keys, written by its own store as the controller's consumer does):
the first registers the requisition, the second approves it, the first searches by
public IP + port + time and downloads the signed export, which is checked here with the
log's public key. Each page passes axe-core (WCAG 2.0/2.1 A and AA); screenshots go to
``$BORNE_ARTIFACTS`` (default ``/tmp/borne-artifacts``)/dashboards/legal-*.png.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from controller.legal.consumer import open_store
from controller.legal.requisitions import Journal
from controller.service import Controller
from dashboards.app import create_app
from tests.dashboards.test_legal import (
    GATEWAY,
    MAC,
    PORT_START,
    PUBLIC_IP,
    START,
    _iso,
    legal,
)
from tests.e2e.test_dashboards_browser import (
    Page,
    _axe,
    _login,
    axe_source,
    browser,
    chromium,
)
from tests.testbed import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Re-exported fixtures.
__all__ = ["axe_source", "browser", "chromium", "legal"]

REF = "PV-2026-77"


@pytest.fixture
async def site(legal: Controller) -> AsyncIterator[str]:
    """The dashboards on a real loopback port (real clock)."""
    runner = web.AppRunner(create_app(legal))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _fill_and_submit(page: Page, form_id: str, values: dict[str, str]) -> None:
    """Type values into a form's fields and press its submit button, like a person."""
    script = "".join(
        f"document.querySelector('#{form_id} [name={json.dumps(k)}]').value = {json.dumps(v)};"
        for k, v in values.items()
    )
    await page.eval(
        script + f"document.querySelector('#{form_id} button[type=submit]').click(); true"
    )
    await asyncio.sleep(0.5)
    await page.wait_loaded()


async def _text(page: Page) -> str:
    text = await page.eval("document.body.innerText")
    assert isinstance(text, str)
    return text


async def test_create_approve_search_and_export_in_the_browser(
    browser: Page, site: str, axe_source: str, legal: Controller, tmp_path: Path
) -> None:
    """Register → a second officer approves → search by public IP + port + time → the
    signed ZIP is downloaded and its signatures verify; the journal holds each step."""
    await _login(browser, site, "legal")
    await browser.goto(f"{site}/legal")
    assert "Registre des réquisitions" in await _text(browser)
    await browser.screenshot("legal-register-empty")
    await _axe(browser, axe_source, "legal register")
    await _fill_and_submit(
        browser,
        "new-requisition",
        {
            "reference": REF,
            "authority": "OPJ, brigade de Gramat",
            "basis": "CPP 60-1, 60-1-2",
            "scope": f"Titulaire de l'adresse {PUBLIC_IP} port {PORT_START + 7}",
            "from": _iso(START - 86400),
            "to": _iso(START + 86400),
            "tz": "UTC",
            "received": "2026-05-29",
        },
    )
    assert await browser.eval("location.search") == f"?ref={REF}"
    text = await _text(browser)
    assert "en attente de la seconde approbation" in text
    assert await browser.eval("document.getElementById('approve')") is None
    await browser.screenshot("legal-registered")
    await _axe(browser, axe_source, "legal requisition waiting")

    await _login(browser, site, "legal2")
    await browser.goto(f"{site}/legal/requisition?ref={REF}")
    await browser.eval("document.querySelector('#approve button').click(); true")
    await asyncio.sleep(0.5)
    await browser.wait_loaded()
    assert "approuvée par deux officiers" in await _text(browser)
    assert await browser.eval("document.getElementById('approvers').textContent") == (
        "legal, legal2"
    )

    await _login(browser, site, "legal")
    await browser.goto(f"{site}/legal/requisition?ref={REF}")
    await _axe(browser, axe_source, "legal requisition approved")
    await _fill_and_submit(
        browser,
        "search-public",
        {"ip": PUBLIC_IP, "port": str(PORT_START + 7), "at": _iso(START + 60)},
    )
    rows = await browser.eval(
        "[...document.querySelectorAll('#results tbody tr')].map(r => r.innerText)"
    )
    assert len(rows) == 1 and "s-target" in rows[0] and MAC in rows[0] and GATEWAY in rows[0]
    await browser.screenshot("legal-search-result")
    await _axe(browser, axe_source, "legal search result")

    downloads = tmp_path / "downloads"
    await asyncio.to_thread(downloads.mkdir)
    await browser.send("Page.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    await browser.eval("document.querySelector('#export button').click(); true")
    zips: list[Path] = []
    for _ in range(100):  # 20 s
        zips = await asyncio.to_thread(lambda: sorted(downloads.glob("reponse-*.zip")))
        if zips:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("no export was downloaded")
    data = await asyncio.to_thread(zips[0].read_bytes)
    files = zipfile.ZipFile(io.BytesIO(data))
    store = await asyncio.to_thread(open_store, legal.settings.legal)
    assert store.signing_key is not None
    public = store.signing_key.public_key()
    for name in ("PV-2026-77.csv", "PV-2026-77.json", "PV-2026-77.pdf"):
        public.verify(bytes.fromhex(files.read(name + ".sig").decode()), files.read(name))
    assert "s-target" in files.read("PV-2026-77.csv").decode()

    await browser.goto(f"{site}/legal/requisition?ref={REF}")
    history = await _text(browser)
    assert "export" in history and "PV-2026-77.pdf SHA-256" in history
    await browser.screenshot("legal-history")
    journal = Journal(Path(legal.settings.legal.directory) / "journal.jsonl")
    entries = await asyncio.to_thread(journal.entries)
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("register", "legal"),
        ("approve", "legal"),
        ("approve", "legal2"),
        ("search", "legal"),
        ("export", "legal"),
    ]
    assert await asyncio.to_thread(journal.verify) == []


async def test_the_syndicate_admin_cannot_open_the_legal_pages(browser: Page, site: str) -> None:
    """The syndicate admin, even with TOTP, is refused the legal pages and sees no link."""
    await _login(browser, site, "admin")
    assert await browser.eval("document.querySelector('a[href=\"/legal\"]')") is None
    await browser.goto(f"{site}/legal")
    assert "réservé aux officiers des réquisitions" in await _text(browser)
