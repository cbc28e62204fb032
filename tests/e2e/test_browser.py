"""A real browser through a real gateway: headless Chromium in the testbed's client
namespace goes through openNDS to the portal, in each language, and logs in by
click-through, by voucher and by a code sent by e-mail, then reaches the upstream host.

The browser is Debian's Chromium, driven over the DevTools protocol by
``tests/e2e/_cdp_client.py`` (run inside the client namespace). The gateway and the
portal's HTTP are real; the controller side is ``NdsctlBackend`` (what the agent does:
``ndsctl auth``), with voucher codes checked by a fake store (the real redemption is in
tests/captive_portal/test_store.py and tests/controller/test_portal_backend.py).
Screenshots are written under ``$BORNE_TEST_ARTIFACTS`` (default
``/tmp/borne-artifacts``)/browser and checked non-blank.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from captive_portal._i18n import LANGUAGES
from captive_portal._vouchers import normalize_code
from captive_portal.models import CommunePolicy, LoginRequest, LoginResult
from controller.config import CommunePortalSettings, EmailCodeSettings, Settings
from tests.captive_portal.test_email import Inbox
from tests.e2e.test_portal_opennds import UPSTREAM_URL, NdsctlBackend, gateway, serve_portal
from tests.testbed import UPSTREAM_BODY, Hotspot, require

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_gateway = gateway
CDP_CLIENT = Path(__file__).with_name("_cdp_client.py")
ARTIFACTS = Path(os.environ.get("BORNE_TEST_ARTIFACTS", "/tmp/borne-artifacts")) / "browser"
CODE = "ABCDE-FGHJK"
CHROMIUM = shutil.which("chromium")
WELCOME = {
    "fr": "J'accepte les conditions d'utilisation",
    "en": "I accept the terms of use",
    "es": "Acepto las condiciones de uso",
    "de": "Ich nehme die Nutzungsbedingungen an",
    "nl": "Ik aanvaard de gebruiksvoorwaarden",
    "it": "Accetto le condizioni d'uso",
}


class VoucherNdsctlBackend(NdsctlBackend):
    """``NdsctlBackend`` that also accepts one voucher code (a fake voucher store)."""

    async def authorize(self, request: LoginRequest) -> LoginResult:
        if request.method == "voucher" and normalize_code(request.code or "") != "ABCDEFGHJK":
            self.calls.append(request)
            return LoginResult(ok=False, session_minutes=0, error="bad code", bad_code=True)
        return await super().authorize(request)


def axe_script() -> Path:
    """axe-core from npm, installed at test time in a cache folder (never committed)."""
    cache = Path(os.environ.get("BORNE_TEST_CACHE", "/tmp/borne-test-cache")) / "axe"
    script = cache / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            require("npm (apt-get install npm), to fetch axe-core")
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(npm), "install", "--prefix", str(cache), "--no-save", "--no-audit",
             "--no-fund", "axe-core@4"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not script.exists():
            require(f"axe-core from npm: {done.stderr[-300:]}")
    return script


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def png_colours(data: bytes) -> int:
    """How many distinct byte values the decoded image rows hold (1-2 for a blank page)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat)))


async def browse(hotspot: Hotspot, plan: list[dict[str, Any]]) -> list[Any]:
    res = await hotspot.arun_in(
        "cl", sys.executable, str(CDP_CLIENT), json.dumps(plan), deadline=180
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads(line)["out"] for line in res.stdout.splitlines() if line.startswith("{")]


async def test_chromium_through_opennds_in_every_language_then_logs_in(
    _gateway: tuple[Hotspot, Settings], aiohttp_server: Any
) -> None:
    """Chromium lands on the portal in each language (screenshots non-blank, no serious
    axe-core WCAG 2.1 AA violation on any page), logs in by click-through, reaches the
    Internet; then, cut off, logs in again with a voucher."""
    if CHROMIUM is None:
        require("Debian's chromium (apt-get install chromium)")
    hotspot, settings = _gateway
    backend = VoucherNdsctlBackend(hotspot)
    await serve_portal(aiohttp_server, settings, backend, hotspot)
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    axe = str(await asyncio.to_thread(axe_script))
    portal = hotspot.fas_url.rsplit("/fas/", 1)[0]

    plan: list[dict[str, Any]] = []
    for lang in LANGUAGES:
        plan += [
            {"lang": lang},
            {"go": UPSTREAM_URL},
            {"shot": str(ARTIFACTS / f"login-{lang}.png")},
            {"axe": axe},
        ]
    plan += [
        {"lang": "fr"},
        {"go": UPSTREAM_URL},
        {"eval": "document.querySelector('a[href^=\"/terms\"]').href"},
        {"eval": "document.querySelector('a[href^=\"/privacy\"]').href"},
        {"click_submit": ["consent", 'form[action$="accept"]', {}]},
        {"shot": str(ARTIFACTS / "connected-fr.png")},
        {"axe": axe},
    ]
    out = await browse(hotspot, plan)
    for i, lang in enumerate(LANGUAGES):
        page, size, violations = out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]
        assert serious(violations) == [], (lang, violations)
        assert page["url"].startswith(hotspot.fas_url), page
        assert page["lang"] == lang, page
        assert WELCOME[lang] in page["text"], page
        shot = await asyncio.to_thread((ARTIFACTS / f"login-{lang}.png").read_bytes)
        assert len(shot) == size
        assert png_colours(shot) > 16, f"the {lang} screenshot looks blank"
    terms_url, privacy_url, connected, _, success_axe = out[-5:]
    assert "Vous êtes connecté·e" in connected["text"], connected
    assert serious(success_axe) == [], success_axe
    more = await browse(
        hotspot,
        [
            {"lang": "fr"},
            {"go": terms_url},
            {"axe": axe},
            {"go": privacy_url},
            {"axe": axe},
            {"go": f"{portal}/status"},
            {"shot": str(ARTIFACTS / "status-fr.png")},
            {"axe": axe},
        ],
    )
    assert "Conditions d'utilisation" in more[1]["text"], more[1]
    assert "Temps restant" in more[5]["text"], more[5]
    for violations in (more[2], more[4], more[7]):
        assert serious(violations) == [], violations
    # A new browser process: Chromium may keep a socket it opened to port 80 before the
    # login, which openNDS had redirected to itself, and reuse it (docs/PORTAL.md).
    (upstream,) = await browse(hotspot, [{"go": UPSTREAM_URL}])
    assert upstream["text"].strip() == UPSTREAM_BODY, upstream

    await hotspot.arun_in("ap", "ndsctl", "deauth", hotspot.mac)
    out = await browse(
        hotspot,
        [
            {"lang": "en"},
            {"go": UPSTREAM_URL},
            {"click_submit": ["consent-v", 'form[action$="voucher"]', {"code": "ZZZZZ-ZZZZZ"}]},
            {"click_submit": ["consent-v", 'form[action$="voucher"]', {"code": CODE.lower()}]},
            {"shot": str(ARTIFACTS / "voucher-en.png")},
        ],
    )
    landing, wrong, right = out[1], out[2], out[3]
    (upstream,) = await browse(hotspot, [{"go": UPSTREAM_URL}])
    assert landing["url"].startswith(hotspot.fas_url), landing
    assert "This code is not valid or can no longer be used." in wrong["text"], wrong
    assert "You are connected" in right["text"], right
    assert upstream["text"].strip() == UPSTREAM_BODY, upstream
    assert [c.method for c in backend.calls] == ["click-through", "voucher", "voucher"]


WIFI4EU_ID = "0c2a8f1e-5b7d-4c1a-9e3f-2d6b8a4c7e90"


class EmailCommuneBackend(NdsctlBackend):
    """``NdsctlBackend`` at an access point of a commune (Cahors) that turned e-mail
    codes on."""

    async def policy(self, ap_id: str, client_mac: str | None) -> CommunePolicy | None:
        return CommunePolicy(insee="46042", commune="Cahors", terms_version="2026-11-01")


async def test_chromium_logs_in_by_email_code_through_opennds(
    _gateway: tuple[Hotspot, Settings], aiohttp_server: Any, tmp_path: Path
) -> None:
    """Chromium asks for a code by e-mail on the portal behind openNDS; the code reaches a
    real SMTP server (aiosmtpd) run by the test, which hands it to the browser; the
    browser types it, is let in and reaches the upstream host. The commune is in WiFi4EU
    mode: the Commission's inline snippet runs under the page's CSP. axe-core finds no serious
    violation on the e-mail form and the code page. Then it extends its session from the
    status page: openNDS cuts it off, its next page comes back to the portal through
    openNDS and is let straight in again."""
    if CHROMIUM is None:
        require("Debian's chromium (apt-get install chromium)")
    hotspot, settings = _gateway
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(inbox, hostname="portal.test"), "127.0.0.1", 0)
    try:
        port = smtp.sockets[0].getsockname()[1]
        portal = settings.portal.model_copy(
            update={
                "terms_version": "2026-11-01",
                "communes": {
                    "46042": CommunePortalSettings(
                        methods=("click-through", "email"),
                        can_extend_session=True,
                        wifi4eu_network_id=WIFI4EU_ID,
                    )
                },
                "email": EmailCodeSettings(smtp_port=port, sender="wifi@lot.example"),
            }
        )
        backend = EmailCommuneBackend(hotspot)
        await serve_portal(
            aiohttp_server, settings.model_copy(update={"portal": portal}), backend, hotspot
        )
        axe = str(await asyncio.to_thread(axe_script))
        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        code_file = tmp_path / "code.txt"

        async def hand_over_the_code() -> None:
            await asyncio.wait_for(inbox.arrived.wait(), 90)
            (_, message) = inbox.messages[0]
            found = re.search(r"\b(\d{6})\b", message.get_content())
            assert found is not None
            await asyncio.to_thread(code_file.write_text, found.group(1))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(hand_over_the_code(), name="code-relay")
            out = await browse(
                hotspot,
                [
                    {"lang": "en"},
                    # The Commission's script is on the Internet, which the testbed lacks.
                    {"block": ["*wifi4eu.ec.europa.eu*"]},
                    {"go": UPSTREAM_URL},
                    {"eval": "[window.wifi4euNetworkIdentifier, window.wifi4euLanguage]"},
                    {"axe": axe},
                    {
                        "click_submit": [
                            "consent-email",
                            'form[action$="/email"]',
                            {"identity": "visitor@example.org"},
                        ]
                    },
                    {"shot": str(ARTIFACTS / "email-code-en.png")},
                    {"axe": axe},
                    {"submit_file": [str(code_file), 'form[action$="/code"]', "code"]},
                ],
            )
    finally:
        smtp.close()
        await smtp.wait_closed()
    landing, snippet_ran, form_axe, code_page, _, code_axe, connected = out[2:]
    # The WiFi4EU inline snippet ran under the page's CSP (its hash is the browser's).
    assert snippet_ran == [WIFI4EU_ID, "en"], snippet_ran
    assert "Receive a code by e-mail" in landing["text"], landing
    assert "We sent a 6-digit code to v•••@example.org" in code_page["text"], code_page
    assert serious(form_axe) == [] and serious(code_axe) == [], (form_axe, code_axe)
    assert "You are connected" in connected["text"], connected
    ((rcpt, _),) = inbox.messages
    assert rcpt == ["visitor@example.org"]
    assert [(c.method, c.identity) for c in backend.calls] == [("email", "visitor@example.org")]
    (upstream,) = await browse(hotspot, [{"go": UPSTREAM_URL}])
    assert upstream["text"].strip() == UPSTREAM_BODY, upstream

    # Extend from the status page: openNDS cuts the device off and forgets it; its next
    # page goes through openNDS to the login page, which lets it straight back in.
    portal_root = hotspot.fas_url.rsplit("/fas/", 1)[0]
    status, status_axe, extended, back = await browse(
        hotspot,
        [
            {"go": f"{portal_root}/status?lang=en"},
            {"axe": axe},
            {"click_submit": [None, 'form[action$="/extend"]', {}]},
            {"go": UPSTREAM_URL},
        ],
    )
    assert "Extend my session" in status["text"], status
    assert serious(status_axe) == [], status_axe
    assert "Your session has been extended by 1 hour." in extended["text"], extended
    assert back["url"].startswith(hotspot.fas_url), back
    assert "Session extended" in back["title"] and "Your session lasts" in back["text"], back
    assert [c.method for c in backend.calls] == ["email", "extend"]
    (upstream,) = await browse(hotspot, [{"go": UPSTREAM_URL}])
    assert upstream["text"].strip() == UPSTREAM_BODY, upstream
