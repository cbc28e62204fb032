"""The dashboards app against a real controller on a temporary SQLite database.

Access points are registered through the registry and sessions are created through the
controller's real ingest path (``Controller.handle``) with sealed agent messages.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient

from agents._core import Envelope
from agents.contract import AcctEntry, ClientEvent, seal, topic
from controller.config import load_settings
from controller.registry import Registry, lot_communes
from controller.service import Controller, mac_tag
from controller.stats import Cell, SqlStatsStore
from controller.storage import open_database
from dashboards._auth import Role, hash_password
from dashboards.accounts import AccountStore
from dashboards.app import COOKIE, create_app
from tests.dashboards.test_assets import installed

__all__ = ["installed"]  # npm-installed ECharts, from the assets tests

NOW = 1_780_000_000.0  # a fixed moment: the page's relative times are deterministic
INSEE = {c.name: c.insee for c in lot_communes()}

MAC_A = "02:aa:bb:cc:dd:01"
MAC_B = "06:10:20:30:40:52"
MAC_LEFT = "0a:00:00:00:00:99"
IP_A, IP_B, IP_LEFT = "10.46.1.23", "10.46.2.42", "10.46.1.99"

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


class Agent:
    """Builds sealed messages of one access point, as its agent would."""

    def __init__(self, controller: Controller, ap_id: str) -> None:
        self.controller = controller
        self.ap_id = ap_id
        self.envelope = Envelope(ap_id)
        self.key = controller.registry.command_key(ap_id).encode()

    async def send(self, kind: str, msg: Any, at: float) -> None:
        result = await self.controller.handle(topic(self.ap_id, kind), seal(msg, self.key), at)
        assert result == "applied", result

    async def online(self, at: float) -> None:
        msg = self.envelope.status(
            at, "online", agent_version="0.1.0", gateway="simulated", keepalive_s=30
        )
        await self.send("status", msg, at)

    async def offline(self, at: float) -> None:
        msg = self.envelope.status(
            at, "offline", agent_version="0.1.0", gateway="simulated", keepalive_s=30
        )
        await self.send("status", msg, at)

    async def login(self, mac: str, ip: str, at: float) -> None:
        events = [
            ClientEvent(event="seen", mac=mac, ip=ip, at=at),
            ClientEvent(event="authorized", mac=mac, ip=ip, at=at),
        ]
        await self.send("clients", self.envelope.clients(at, events), at)

    async def leave(self, mac: str, ip: str, at: float) -> None:
        events = [ClientEvent(event="left", mac=mac, ip=ip, at=at)]
        await self.send("clients", self.envelope.clients(at, events), at)

    async def acct(self, entries: list[AcctEntry], at: float) -> None:
        await self.send("acct", self.envelope.acct(at, 10, entries), at)


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    settings = load_settings(None, database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"})
    db = await open_database(settings.database.url.get_secret_value())
    registry = Registry(db, settings.command_master_key.get_secret_value())
    await registry.add_communes(lot_communes())
    await registry.add_access_point("rocamadour-01", INSEE["Rocamadour"], "Rocamadour — parvis")
    await registry.add_access_point("rocamadour-02", INSEE["Rocamadour"], "Rocamadour — château")
    await registry.add_access_point("cahors-01", INSEE["Cahors"], "Cahors — pont Valentré")
    await registry.add_access_point("padirac-01", INSEE["Padirac"], "padirac-01")
    try:
        yield Controller(settings, db, registry)
    finally:
        await db.aclose()


@pytest.fixture
async def populated(controller: Controller) -> Controller:
    """Two online APs with sessions, one that went offline, one never heard of."""
    roc = Agent(controller, "rocamadour-01")
    cah = Agent(controller, "cahors-01")
    roc2 = Agent(controller, "rocamadour-02")
    t0 = NOW - 3600
    await roc.online(t0)
    await cah.online(t0)
    await roc2.online(t0)
    await roc2.offline(t0 + 60)
    await roc.login(MAC_A, IP_A, t0 + 100)
    await roc.login(MAC_LEFT, IP_LEFT, t0 + 200)
    await roc.leave(MAC_LEFT, IP_LEFT, t0 + 300)
    await cah.login(MAC_B, IP_B, NOW - 125)
    await roc.acct(
        [
            AcctEntry(
                mac=MAC_A,
                ip=IP_A,
                session_start=t0 + 100,
                up_bytes=1_200_000,
                down_bytes=11_100_000,
            )
        ],
        NOW - 30,
    )
    return controller


@pytest.fixture
async def client(populated: Controller, aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_app(populated, clock=lambda: NOW))


def _mac_forms(mac: str) -> list[str]:
    raw = mac.replace(":", "")
    return [mac, mac.upper(), mac.replace(":", "-"), raw, raw.upper()]


def _assert_no_device_identifier(text: str) -> None:
    for mac in (MAC_A, MAC_B, MAC_LEFT):
        for form in _mac_forms(mac):
            assert form not in text
    for ip in (IP_A, IP_B, IP_LEFT):
        assert ip not in text


async def test_page_lists_hotspots_with_state_and_commune(client: Client) -> None:
    """The French page lists every AP with its commune, state label and badge."""
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert '<html lang="fr">' in html
    assert "<title>borne — tableau de bord</title>" in html
    for ap in ("rocamadour-01", "rocamadour-02", "cahors-01", "padirac-01"):
        assert f'<th scope="row">{ap}' in html
    assert "Rocamadour — parvis" in html
    assert "Cahors" in html and "Padirac" in html
    assert '<span class="badge badge-online">en ligne</span>' in html
    assert '<span class="badge badge-offline">hors ligne</span>' in html
    assert '<span class="badge badge-unknown">inconnu</span>' in html
    assert "jamais" in html  # padirac-01 never reported
    assert "0.1.0" in html
    assert html.count('scope="col"') == 14  # hotspots 5, sessions 6, per commune 3


async def test_page_counts_online_sessions_and_communes(client: Client) -> None:
    """The counters say 2 online of 4 APs, 2 open sessions, 3 of 320 communes equipped."""
    html = await (await client.get("/")).text()
    assert '<span id="count-online">2</span> / <span id="count-total">4</span>' in html
    assert '<dd id="count-sessions">2</dd>' in html
    assert '<span id="count-communes">3</span> / <span id="count-communes-total">320</span>' in html


async def test_page_lists_open_sessions_by_tag_never_by_mac(client: Client) -> None:
    """Open sessions appear with a tag, duration and volume; no MAC or IP anywhere."""
    html = await (await client.get("/")).text()
    assert f"<code>{mac_tag(MAC_A)}</code>" in html
    assert f"<code>{mac_tag(MAC_B)}</code>" in html
    assert mac_tag(MAC_LEFT) not in html  # its session is closed
    assert "12,3\u00a0Mo" in html  # 1.2 MB up + 11.1 MB down
    assert "2\u00a0min" in html  # the Cahors session started 125 s ago
    _assert_no_device_identifier(html)


async def test_page_is_self_contained_and_script_is_nonced(client: Client) -> None:
    """The page loads nothing from elsewhere; its inline style and script carry the CSP nonce."""
    resp = await client.get("/")
    html = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    match = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", csp)
    assert match is not None
    nonce = match.group(1)
    assert f'<script nonce="{nonce}">' in html
    assert f'<style nonce="{nonce}">' in html
    assert "connect-src 'self'" in csp
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<noscript>" in html
    assert 'http-equiv="refresh"' not in html.lower()
    assert resp.headers["Cache-Control"] == "no-store"


async def test_each_page_gets_a_fresh_nonce(client: Client) -> None:
    """Two page loads never share a CSP nonce."""
    first = (await client.get("/")).headers["Content-Security-Policy"]
    second = (await client.get("/")).headers["Content-Security-Policy"]
    assert first != second


async def test_api_fleet_matches_the_registry(client: Client) -> None:
    """``/api/fleet`` gives each AP's state and the counters, as JSON."""
    resp = await client.get("/api/fleet")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    data = await resp.json()
    assert data["generated_at"] == NOW
    assert data["summary"] == {
        "hotspots_online": 2,
        "hotspots_total": 4,
        "communes_equipped": 3,
        "communes_total": 320,
    }
    states = {h["ap_id"]: (h["state"], h["state_label"], h["commune"]) for h in data["hotspots"]}
    assert states == {
        "cahors-01": ("online", "en ligne", "Cahors"),
        "padirac-01": ("unknown", "inconnu", "Padirac"),
        "rocamadour-01": ("online", "en ligne", "Rocamadour"),
        "rocamadour-02": ("offline", "hors ligne", "Rocamadour"),
    }
    padirac = next(h for h in data["hotspots"] if h["ap_id"] == "padirac-01")
    assert padirac["last_seen"] is None and padirac["last_seen_text"] == "jamais"


async def test_api_sessions_lists_open_sessions_without_device_identifier(
    client: Client,
) -> None:
    """``/api/sessions`` lists the open sessions newest first, by tag, with no MAC or IP."""
    resp = await client.get("/api/sessions")
    assert resp.status == 200
    text = await resp.text()
    _assert_no_device_identifier(text)
    data = json.loads(text)
    assert data["count"] == 2 and data["truncated"] is False
    newest, oldest = data["sessions"]
    assert newest["tag"] == mac_tag(MAC_B) and newest["commune"] == "Cahors"
    assert newest["hotspot"] == "Cahors — pont Valentré"
    assert newest["duration_s"] == 125
    assert oldest["tag"] == mac_tag(MAC_A)
    assert (oldest["up_bytes"], oldest["down_bytes"]) == (1_200_000, 11_100_000)
    assert oldest["volume_text"] == "12,3\u00a0Mo"
    keys = set(newest)
    assert not keys & {"mac", "ip", "client_mac", "client_ip"}


async def test_healthz_answers_ok(client: Client) -> None:
    """``/healthz`` answers 200 ok."""
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.text() == "ok"


async def test_no_open_session_says_so(
    controller: Controller, aiohttp_client: ClientFactory
) -> None:
    """With no session open, the page says so instead of showing an empty table."""
    client = await aiohttp_client(create_app(controller, clock=lambda: NOW))
    html = await (await client.get("/")).text()
    assert "Aucune session ouverte." in html
    assert '<dd id="count-sessions">0</dd>' in html
    assert '<span id="count-online">0</span>' in html


async def test_database_failure_gives_503_and_keeps_serving(
    populated: Controller, aiohttp_client: ClientFactory
) -> None:
    """A database error answers 503 (JSON for the API) and the app keeps serving."""
    client = await aiohttp_client(create_app(populated, clock=lambda: NOW))
    async with populated.db.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE sessions RENAME TO sessions_away"))
    resp = await client.get("/api/sessions")
    assert resp.status == 503
    assert "error" in await resp.json()
    assert (await client.get("/")).status == 503
    assert (await client.get("/api/fleet")).status == 200
    assert (await client.get("/healthz")).status == 200


# -- accounts, roles and access ---------------------------------------------------------

PASSWORD = "un mot de passe assez long"
ADMIN_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
async def accounts(populated: Controller) -> Controller:
    """A Rocamadour viewer, a Rocamadour+Cahors (EPCI-like) manager, admin, technician, legal."""
    store = AccountStore(populated.db)
    pw = await asyncio.to_thread(hash_password, PASSWORD)
    roc, cah = INSEE["Rocamadour"], INSEE["Cahors"]
    await store.create(
        "roc", "Mairie de Rocamadour", Role.COMMUNE_VIEWER, pw, communes=[roc], now=NOW
    )
    await store.create("epci", "Causses", Role.COMMUNE_MANAGER, pw, communes=[roc, cah], now=NOW)
    await store.create("admin", "Syndicat", Role.ADMIN, pw, totp_secret=ADMIN_SECRET, now=NOW)
    await store.create("tech", "Technicien", Role.TECHNICIAN, pw, now=NOW)
    await store.create(
        "legal", "Juriste", Role.LEGAL_OFFICER, pw, totp_secret=ADMIN_SECRET, now=NOW
    )
    return populated


async def _client(controller: Controller, aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_app(controller, clock=lambda: NOW))


async def _login(client: Client, username: str, password: str = PASSWORD) -> Any:
    return await client.post(
        "/login", data={"username": username, "password": password}, allow_redirects=False
    )


async def _logged_in(controller: Controller, aiohttp_client: ClientFactory, user: str) -> Client:
    client = await _client(controller, aiohttp_client)
    resp = await _login(client, user)
    assert resp.status == 303, await resp.text()
    if resp.headers["Location"].endswith("/login/totp"):
        code = pyotp.TOTP(ADMIN_SECRET).at(NOW)
        csrf = await _csrf_of(client, "/login/totp")
        resp = await client.post(
            "/login/totp", data={"code": code, "csrf": csrf}, allow_redirects=False
        )
        assert resp.status == 303
    return client


async def _csrf_of(client: Client, path: str) -> str:
    html = await (await client.get(path)).text()
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert match is not None, html
    return match.group(1)


async def test_once_an_account_exists_everything_needs_a_login(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """Pages redirect to /login and the API answers 401 without a login; healthz stays open."""
    client = await _client(accounts, aiohttp_client)
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    for path in ("/api/fleet", "/api/sessions", "/api/fleet?commune=46240"):
        assert (await client.get(path)).status == 401
    assert (await client.get("/admin/accounts", allow_redirects=False)).status == 303
    assert (await client.get("/healthz")).status == 200
    login_page = await (await client.get("/login")).text()
    assert 'autocomplete="current-password"' in login_page


async def test_without_accounts_a_non_loopback_dashboard_is_closed(
    populated: Controller, aiohttp_client: ClientFactory
) -> None:
    """The open bootstrap mode exists on loopback only: elsewhere, no account means no entry."""
    settings = populated.settings.model_copy(
        update={
            "dashboard": populated.settings.dashboard.model_copy(update={"listen_host": "0.0.0.0"})
        }
    )
    exposed = Controller(settings, populated.db, populated.registry)
    client = await _client(exposed, aiohttp_client)
    assert (await client.get("/api/fleet")).status == 401
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_login_cookie_is_httponly_strict_and_token_random(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The login cookie is HttpOnly and SameSite=Strict; the page redirects home."""
    client = await _client(accounts, aiohttp_client)
    resp = await _login(client, "tech")
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert (await client.get("/api/fleet")).status == 200


async def test_commune_viewer_sees_only_its_commune_everywhere(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """A Rocamadour viewer sees Rocamadour's hotspots and sessions; Cahors is 403 by URL or API."""
    client = await _logged_in(accounts, aiohttp_client, "roc")
    html = await (await client.get("/")).text()
    assert "rocamadour-01" in html and "rocamadour-02" in html
    assert "cahors-01" not in html and "Cahors" not in html and "padirac-01" not in html
    assert mac_tag(MAC_A) in html and mac_tag(MAC_B) not in html
    fleet = await (await client.get("/api/fleet")).json()
    assert {h["ap_id"] for h in fleet["hotspots"]} == {"rocamadour-01", "rocamadour-02"}
    assert fleet["summary"]["communes_total"] == 1
    sessions = await (await client.get("/api/sessions")).json()
    assert [s["tag"] for s in sessions["sessions"]] == [mac_tag(MAC_A)]
    cahors = INSEE["Cahors"]
    assert (await client.get(f"/commune/{cahors}")).status == 403
    assert (await client.get(f"/api/fleet?commune={cahors}")).status == 403
    assert (await client.get(f"/api/sessions?commune={cahors}")).status == 403
    assert (await client.get("/api/fleet?commune=99999")).status == 404
    assert (await client.get(f"/commune/{INSEE['Rocamadour']}")).status == 200
    assert (await client.get("/admin/accounts")).status == 403


async def test_grouping_account_sees_its_members_and_one_at_a_time(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """An account over Rocamadour and Cahors sees both, links each, and not Padirac."""
    client = await _logged_in(accounts, aiohttp_client, "epci")
    fleet = await (await client.get("/api/fleet")).json()
    assert {h["ap_id"] for h in fleet["hotspots"]} == {
        "rocamadour-01",
        "rocamadour-02",
        "cahors-01",
    }
    html = await (await client.get("/")).text()
    assert f'href="/commune/{INSEE["Cahors"]}"' in html
    one = await (await client.get(f"/api/sessions?commune={INSEE['Cahors']}")).json()
    assert [s["tag"] for s in one["sessions"]] == [mac_tag(MAC_B)]
    assert (await client.get(f"/commune/{INSEE['Padirac']}")).status == 403


async def test_technician_sees_the_whole_territory(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """A technician sees every hotspot and every commune's page."""
    client = await _logged_in(accounts, aiohttp_client, "tech")
    fleet = await (await client.get("/api/fleet")).json()
    assert len(fleet["hotspots"]) == 4 and fleet["summary"]["communes_total"] == 320
    assert (await client.get(f"/commune/{INSEE['Padirac']}")).status == 200
    assert (await client.get("/admin/accounts")).status == 403


async def test_legal_officer_sees_no_fleet(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The legal officer (after TOTP) gets no hotspot nor session, by page or API."""
    client = await _logged_in(accounts, aiohttp_client, "legal")
    html = await (await client.get("/")).text()
    assert "borne legal" in html and "rocamadour-01" not in html
    assert (await client.get("/api/fleet")).status == 403
    assert (await client.get("/api/sessions")).status == 403


async def test_admin_needs_a_totp_code_after_the_password(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """After the admin's password only the TOTP step is open; a wrong code does not pass."""
    client = await _client(accounts, aiohttp_client)
    resp = await _login(client, "admin")
    assert resp.status == 303 and resp.headers["Location"] == "/login/totp"
    assert (await client.get("/api/fleet")).status == 401
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/login/totp"
    csrf = await _csrf_of(client, "/login/totp")
    wrong = pyotp.TOTP(ADMIN_SECRET).at(NOW - 300)
    resp = await client.post("/login/totp", data={"code": wrong, "csrf": csrf})
    assert resp.status == 401
    assert (await client.get("/api/fleet")).status == 401
    good = pyotp.TOTP(ADMIN_SECRET).at(NOW)
    resp = await client.post(
        "/login/totp", data={"code": good, "csrf": csrf}, allow_redirects=False
    )
    assert resp.status == 303
    assert (await client.get("/api/fleet")).status == 200


async def test_wrong_passwords_are_rate_limited(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """Wrong passwords answer 401; after five, even the right one gets 429 with Retry-After."""
    client = await _client(accounts, aiohttp_client)
    assert (await _login(client, "roc", "wrong password!")).status == 401
    assert (await _login(client, "nobody", PASSWORD)).status == 401
    for _ in range(3):
        assert (await _login(client, "roc", "wrong password!")).status == 401
    resp = await _login(client, "roc")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert COOKIE not in resp.cookies


async def test_posts_need_the_csrf_token_and_a_same_origin(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """Logout without the CSRF token or from another origin is refused; with it, it works."""
    client = await _logged_in(accounts, aiohttp_client, "roc")
    assert (await client.post("/logout", data={})).status == 403
    assert (await client.post("/logout", data={"csrf": "0" * 64})).status == 403
    csrf = await _csrf_of(client, "/")
    foreign = await client.post(
        "/logout", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    assert (await client.get("/api/fleet")).status == 200
    resp = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert (await client.get("/api/fleet")).status == 401


async def test_admin_creates_a_commune_account_that_can_log_in(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """An admin adds a Padirac viewer through the form; it logs in and sees Padirac only."""
    admin = await _logged_in(accounts, aiohttp_client, "admin")
    csrf = await _csrf_of(admin, "/admin/accounts")
    form = {
        "csrf": csrf,
        "username": "padirac",
        "display_name": "Mairie de Padirac",
        "role": "commune_viewer",
        "communes": INSEE["Padirac"],
        "password": PASSWORD,
    }
    resp = await admin.post("/admin/accounts", data=form)
    assert resp.status == 201
    assert "Mairie de Padirac" in await resp.text()
    again = await admin.post("/admin/accounts", data=form)
    assert again.status == 400 and "existe déjà" in await again.text()
    short = await admin.post(
        "/admin/accounts", data={**form, "username": "x2", "password": "court"}
    )
    assert short.status == 400
    new_admin = await admin.post(
        "/admin/accounts", data={**form, "username": "admin2", "role": "admin", "communes": ""}
    )
    assert new_admin.status == 201 and 'id="totp-secret"' in await new_admin.text()
    padirac = await _logged_in(accounts, aiohttp_client, "padirac")
    fleet = await (await padirac.get("/api/fleet")).json()
    assert [h["ap_id"] for h in fleet["hotspots"]] == ["padirac-01"]
    disable = await admin.post("/admin/accounts/padirac/active", data={"csrf": csrf, "active": "0"})
    assert disable.status == 200
    assert (await padirac.get("/api/fleet")).status == 401


async def test_map_shades_from_published_cells_and_respects_the_scope(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """Cells written through the stats store shade the map; a commune sees only its markers."""
    tz = await asyncio.to_thread(ZoneInfo, "Europe/Paris")
    yesterday = (datetime.fromtimestamp(NOW, tz).date() - timedelta(days=1)).isoformat()
    start = int(datetime.fromisoformat(yesterday).replace(tzinfo=tz).timestamp())
    roc, cah = INSEE["Rocamadour"], INSEE["Cahors"]
    await SqlStatsStore(accounts.db).write(
        [
            Cell("presence", "commune", "day", start, yesterday, roc, values={"visitors": 140}),
            Cell("presence", "commune", "day", start, yesterday, cah, values={"visitors": 35}),
            Cell("presence", "commune", "hour", start, yesterday, cah, values={"visitors": 900}),
        ]
    )
    tech = await _logged_in(accounts, aiohttp_client, "tech")
    html = await (await tech.get("/")).text()
    assert 'role="img"' in html
    assert html.count('class="marker marker-') == 4
    assert "Rocamadour : 140 visiteurs" in html and "Cahors : 35 visiteurs" in html
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    html = await (await viewer.get("/")).text()
    assert html.count('class="marker marker-') == 2
    assert 'data-ap="cahors-01"' not in html and "35 visiteurs" not in html
    assert "Rocamadour : 140 visiteurs" in html


async def _next_event(resp: Any) -> dict[str, Any]:
    """Read one ``fleet`` server-sent event (skipping keepalive comments)."""
    lines: list[str] = []
    async with asyncio.timeout(20):
        while True:
            raw = await resp.content.readline()
            assert raw, "stream ended"
            line = raw.decode().rstrip("\n")
            if line == "" and lines:
                break
            if line and not line.startswith(":"):
                lines.append(line)
    assert lines[0] == "event: fleet"
    data = json.loads(next(x for x in lines if x.startswith("data: "))[6:])
    assert isinstance(data, dict)
    return data


async def test_live_events_follow_a_hotspot_going_down_within_the_scope(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The event stream sends the fleet, then its change when an AP goes offline; scoped."""
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    resp = await viewer.get("/api/events")
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    first = await _next_event(resp)
    states = {h["ap_id"]: h["state"] for h in first["hotspots"]}
    assert states == {"rocamadour-01": "online", "rocamadour-02": "offline"}
    agent = Agent(accounts, "rocamadour-01")  # a new run of its agent, then it stops
    await agent.online(NOW - 10)
    await agent.offline(NOW)
    for _ in range(5):  # an event per change: online again (new run), then offline
        event = await _next_event(resp)
        if {h["ap_id"]: h["state"] for h in event["hotspots"]}["rocamadour-01"] == "offline":
            break
    else:
        pytest.fail("the stream never showed rocamadour-01 offline")
    resp.close()
    assert (await viewer.get(f"/api/events?commune={INSEE['Cahors']}")).status == 403
    anonymous = await _client(accounts, aiohttp_client)
    assert (await anonymous.get("/api/events")).status == 401


async def test_health_page_shows_uptime_skew_and_incidents(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The health page lists each visible AP's state, uptime and the incidents timeline."""
    tech = await _logged_in(accounts, aiohttp_client, "tech")
    html = await (await tech.get("/fleet")).text()
    assert html.count("<tr data-ap=") == 4
    assert "Incidents (30 derniers jours)" in html
    assert "Rocamadour — château" in html and "toujours hors ligne" in html
    assert "EventSource" in html
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    html = await (await viewer.get("/fleet")).text()
    assert html.count("<tr data-ap=") == 2 and "cahors-01" not in html
    assert (await viewer.get(f"/fleet?commune={INSEE['Cahors']}")).status == 403


async def _write_usage_cells(controller: Controller) -> str:
    """Two days of published cells for Rocamadour and Cahors; returns the first day."""
    tz = await asyncio.to_thread(ZoneInfo, "Europe/Paris")
    first = datetime.fromtimestamp(NOW, tz).date() - timedelta(days=2)
    roc, cah, fig = INSEE["Rocamadour"], INSEE["Cahors"], INSEE["Figeac"]
    cells = []
    for i in range(2):
        day = (first + timedelta(days=i)).isoformat()
        start = int(datetime.fromisoformat(day).replace(tzinfo=tz).timestamp())
        for insee, n in ((roc, 100 + i), (cah, 50)):
            values = {"visitors": n, "sessions": 2 * n, "dwell_lt_5m": n}
            cells.append(Cell("presence", "commune", "day", start, day, insee, values=values))
            cells.append(
                Cell(
                    "presence",
                    "commune",
                    "hour",
                    start + 15 * 3600,
                    day,
                    insee,
                    values={"visitors": n},
                )
            )
        cells.append(
            Cell("flow", "flow", "day", start, day, cah, destination=roc, values={"visitors": 12})
        )
        cells.append(
            Cell("flow", "flow", "day", start, day, roc, destination=fig, values={"visitors": 13})
        )
        cells.append(
            Cell("flow", "flow", "day", start, day, cah, destination=fig, values={"visitors": 77})
        )
    await SqlStatsStore(controller.db).write(cells)
    return first.isoformat()


async def test_usage_page_and_csv_from_published_cells(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """A commune sees its visitors, busiest hour and flows; CSVs hold the same figures."""
    first = await _write_usage_cells(accounts)
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    resp = await viewer.get(f"/usage?from={first}")
    assert resp.status == 200
    html = await resp.text()
    assert "Fréquentation — Rocamadour" in html
    assert '<dd id="total-visitors">201</dd>' in html
    assert "15 h" in html and 'class="chart"' in html
    assert 'Cahors</th><td class="num">24<' in html  # came from Cahors: 12 + 12
    assert 'Figeac</th><td class="num">26<' in html  # went to Figeac: 13 + 13
    # Cahors → Figeac (77) touches no commune of this account (and the page's random
    # tokens may contain any digits, so look for the figure where a figure would be).
    assert not re.search(r">\s*77\s*<", html)
    daily = await (await viewer.get(f"/usage.csv?table=daily&from={first}")).text()
    lines = daily.splitlines()
    assert lines[0].startswith("jour,visitors,sessions")
    assert lines[1].startswith(f"{first},100,200") and len(lines) >= 3
    flows = await (await viewer.get(f"/usage.csv?table=flows&from={first}")).text()
    assert not re.search(r"(^|,)77(,|$)", flows, re.MULTILINE) and "Cahors" in flows
    hours = await (await viewer.get(f"/usage.csv?table=hours&from={first}")).text()
    assert "15,201" in hours
    cahors = INSEE["Cahors"]
    assert (await viewer.get(f"/usage?commune={cahors}")).status == 403
    assert (await viewer.get(f"/usage.csv?table=daily&commune={cahors}")).status == 403
    assert (await viewer.get("/usage?from=2026-13-01")).status == 400
    tech = await _logged_in(accounts, aiohttp_client, "tech")
    routes = await (await tech.get(f"/usage.csv?table=flows&from={first}")).text()
    assert routes.splitlines()[1].endswith(",154")  # Cahors → Figeac, the main route


async def test_home_shows_the_programme_indicator_to_the_syndicate_only(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The syndicate's home says 3 of 320 communes equipped and lists hotspots per commune."""
    tech = await _logged_in(accounts, aiohttp_client, "tech")
    html = await (await tech.get("/")).text()
    assert (
        '<strong id="programme-equipped">3</strong> communes équipées sur <strong>320</strong>'
        in html
    )
    assert re.search(r'Rocamadour</a></th><td class="num">2</td><td class="num">1</td>', html)
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    assert 'id="programme"' not in await (await viewer.get("/")).text()


async def test_monthly_report_renders_with_charts_and_is_scoped(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The month's report shows the commune's published figures and charts; others are 403."""
    first = await _write_usage_cells(accounts)
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    resp = await viewer.get(f"/report?month={first[:7]}")
    assert resp.status == 200
    html = await resp.text()
    assert "Rapport mensuel du Wi-Fi public — Rocamadour" in html
    assert "@media print" in html and html.count('class="chart"') == 3
    assert '<dd id="report-visitors">201</dd>' in html  # 100 + 101, both days in May
    assert (await viewer.get(f"/report?commune={INSEE['Cahors']}")).status == 403
    assert (await viewer.get("/report?month=2026-13")).status == 400


def _with_assets(controller: Controller, assets_dir: Path) -> Controller:
    d = controller.settings.dashboard.model_copy(update={"assets_dir": assets_dir})
    settings = controller.settings.model_copy(update={"dashboard": d})
    return Controller(settings, controller.db, controller.registry)


async def test_usage_page_loads_the_installed_library_and_embeds_its_figures(
    accounts: Controller, aiohttp_client: ClientFactory, installed: Path
) -> None:
    """With ECharts installed the page loads it (nonced) and carries its chart data; the
    library is served gzip'd with an ETag, and the server-drawn charts stay as fallback."""
    first = await _write_usage_cells(accounts)
    viewer = await _logged_in(_with_assets(accounts, installed), aiohttp_client, "roc")
    html = await (await viewer.get(f"/usage?from={first}")).text()
    nonce = re.search(r'<script nonce="([^"]+)" src="/assets/echarts.min.js">', html)
    assert nonce is not None
    block = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html)
    assert block is not None
    data = json.loads(block.group(1))
    assert data["visitors"][:2] == [100, 101]
    assert {x["label"] for x in data["sankey"]["nodes"]} == {"Rocamadour", "Cahors", "Figeac"}
    assert 'data-fallback="daily"' in html and 'class="chart"' in html
    resp = await viewer.get("/assets/echarts.min.js", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Cache-Control"].startswith("public")
    assert len(await resp.read()) > 500_000  # decompressed by the client
    again = await viewer.get(
        "/assets/echarts.min.js", headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert again.status == 304


async def test_without_the_library_pages_keep_their_own_charts(
    accounts: Controller, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    """No install: no script tag for it, 404 for the file, the SVG charts and tables stay."""
    first = await _write_usage_cells(accounts)
    viewer = await _logged_in(_with_assets(accounts, tmp_path), aiohttp_client, "roc")
    html = await (await viewer.get(f"/usage?from={first}")).text()
    assert "/assets/echarts.min.js" not in html
    assert html.count('class="chart"') == 2 and "<table>" in html
    assert 'class="chart flows"' in html  # the flows' Sankey diagram, drawn by the server
    assert (await viewer.get("/assets/echarts.min.js")).status == 404
    # Every answer tells its server time (W3C Server-Timing), what the benchmark reads.
    timing = (await viewer.get("/")).headers["Server-Timing"]
    assert re.fullmatch(r"app;dur=\d+\.\d", timing), timing


async def test_a_commune_manager_manages_its_viewers_and_contact_details(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """The Rocamadour + Cahors manager creates a Cahors viewer, disables Rocamadour's,
    cannot touch other accounts nor communes, and sets the contact details the commune
    page and the report then show; a viewer has none of this."""
    roc, cah, fig = INSEE["Rocamadour"], INSEE["Cahors"], INSEE["Figeac"]
    manager = await _logged_in(accounts, aiohttp_client, "epci")
    page = await (await manager.get("/commune-admin")).text()
    assert 'data-account="roc"' in page and 'data-account="admin"' not in page
    assert f'data-contact="{roc}"' in page and f'data-contact="{cah}"' in page
    csrf = await _csrf_of(manager, "/commune-admin")
    form = {"csrf": csrf, "username": "cahors-accueil", "password": PASSWORD, "communes": cah}
    assert (await manager.post("/commune-admin/accounts", data=form)).status == 201
    outside = await manager.post(
        "/commune-admin/accounts", data={**form, "username": "figeac", "communes": fig}
    )
    assert outside.status == 400
    # A role in the form is ignored: a manager only ever makes viewers.
    sneaky = {**form, "username": "cahors-2", "role": "admin"}
    assert (await manager.post("/commune-admin/accounts", data=sneaky)).status == 201
    rows = {a.username: a for a, _ in await AccountStore(accounts.db).accounts()}
    assert rows["cahors-accueil"].role is Role.COMMUNE_VIEWER
    assert rows["cahors-accueil"].communes == {cah} and "figeac" not in rows
    assert rows["cahors-2"].role is Role.COMMUNE_VIEWER
    new = await _logged_in(accounts, aiohttp_client, "cahors-accueil")
    assert (await new.get(f"/commune/{roc}")).status == 403
    viewer = await _logged_in(accounts, aiohttp_client, "roc")
    for user in ("admin", "tech", "legal", "epci"):
        resp = await manager.post(
            f"/commune-admin/accounts/{user}/active", data={"csrf": csrf, "active": "0"}
        )
        assert resp.status == 403, user
    resp = await manager.post(
        "/commune-admin/accounts/roc/active",
        data={"csrf": csrf, "active": "0"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert (await viewer.get("/api/fleet")).status == 401  # its login ended
    contact = {
        "csrf": csrf,
        "label": "Mairie de Rocamadour",
        "phone": "05 65 33 62 59",
        "email": "mairie@rocamadour.example",
        "hours": "9 h – 12 h",
    }
    assert (await manager.post(f"/commune-admin/contact/{roc}", data=contact)).status == 200
    bad = await manager.post(f"/commune-admin/contact/{roc}", data={**contact, "email": "x"})
    assert bad.status == 400
    assert (await manager.post(f"/commune-admin/contact/{fig}", data=contact)).status == 403
    commune_page = await (await manager.get(f"/commune/{roc}")).text()
    assert "05 65 33 62 59" in commune_page and 'id="contact"' in commune_page
    report = await (await manager.get(f"/report?commune={roc}")).text()
    assert "mairie@rocamadour.example" in report
    # A viewer has no management page and cannot post to it.
    other = await _logged_in(accounts, aiohttp_client, "cahors-accueil")
    assert (await other.get("/commune-admin")).status == 403
    other_csrf = await _csrf_of(other, "/usage")
    resp = await other.post(f"/commune-admin/contact/{cah}", data={**contact, "csrf": other_csrf})
    assert resp.status == 403
    assert "Gestion de la commune" not in await (await other.get("/")).text()


async def test_a_statistics_store_down_gives_503_and_the_rest_keeps_serving(
    accounts: Controller, aiohttp_client: ClientFactory
) -> None:
    """An unreachable InfluxDB: usage, CSV and report answer 503; the fleet page and the
    home page (its map unshaded) work."""
    from controller.stats import Influx1Store
    from tests.testbed import free_port

    utc = await asyncio.to_thread(ZoneInfo, "UTC")
    store = Influx1Store(f"http://127.0.0.1:{free_port()}", "absent", utc, timeout_s=2)
    try:
        client = await aiohttp_client(create_app(accounts, clock=lambda: NOW, stats=store))
        assert (await _login(client, "tech")).status == 303
        for path in ("/usage", "/usage.csv?table=daily", "/report?month=2026-04"):
            resp = await client.get(path)
            assert resp.status == 503, path
            assert "statistiques indisponibles" in await resp.text()
        assert (await client.get("/fleet")).status == 200
        home = await client.get("/")  # the map, unshaded
        assert home.status == 200 and 'class="marker' in await home.text()
    finally:
        await store.aclose()
