"""The dashboards' aiohttp application: fleet and live sessions, in French.

``GET /`` renders the page on the server (it works without JavaScript); a small inline
script then polls ``GET /api/fleet`` and ``GET /api/sessions`` every few seconds and
updates the tables in place. ``GET /healthz`` is the liveness probe.

Access: every page but ``/login`` and ``/healthz`` needs a login (``dashboards._auth``
for the rights, ``dashboards.accounts`` for the store): a server-side session whose
random token is an HttpOnly, SameSite=Strict cookie; every POST carries the session's
CSRF token; failed logins are limited per user name and per address; admins and the
legal officer give a TOTP code after their password. Commune accounts see only their
communes' hotspots and sessions (pages, API and URLs alike: another commune is 403).
Until the first account exists (``borne account add``), the dashboards of a controller
listening on loopback stay open as they were before accounts existed, so that
``borne demo`` needs no login; once an account exists, or on any other address, a
login is required.

Privacy: no MAC address, IP address or other device identifier leaves this module. A
session row is turned into a ``SessionRecord`` holding a short tag
(``controller.service.mac_tag``) right where it is read from the database.

This module only adapts HTTP: views and French formatting live in
``dashboards._core``; the data comes from the controller's read methods.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import sqlalchemy as sa
from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup
from pydantic import BaseModel

from controller.registry import lot_communes
from controller.service import Controller, mac_tag
from controller.stats import Cell, StatsStore, StoreError, make_store
from controller.storage import UNAVAILABLE
from dashboards._auth import (
    ROLE_LABELS,
    Account,
    LoginLimiter,
    Role,
    csrf_token,
    csrf_valid,
    dummy_verify,
    hash_password,
    new_login_token,
    new_totp_secret,
    password_problem,
    token_hash,
    totp_uri,
    totp_valid,
    verify_password,
)
from dashboards._core import (
    HotspotRecord,
    SessionRecord,
    fleet_view,
    human_duration,
    iso_utc,
    local_clock,
    sessions_view,
)
from dashboards._health import DAY, health_rows
from dashboards._legal import LegalPages
from dashboards._map import MapMarker, Territory, load_territory, render_map
from dashboards._report_mail import ReportMailer
from dashboards._usage import (
    DAY_FIELDS,
    DayDigest,
    UsageView,
    bar_chart,
    chart_data,
    digest,
    flows_chart,
    to_csv,
    usage_view,
)
from dashboards.accounts import AccountError, AccountStore, CommuneContact, Login, check_email
from dashboards.assets import URL as CHARTS_URL
from dashboards.assets import Bundle, load_bundle
from dashboards.models import FleetResponse, SessionsResponse
from dashboards.reports import (
    ReportError,
    ReportScheduler,
    ReportStore,
    month_days,
    parse_month,
    previous_month,
)
from dashboards.watch import FleetWatcher

__all__ = ["ACCOUNTS", "CONTROLLER", "COOKIE", "REFRESH_S", "REPORTS", "WATCHER", "create_app"]

logger = logging.getLogger(__name__)

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
# How often the page's script asks for fresh data. Agents report every few seconds to a
# minute; polling faster would only load the database.
REFRESH_S: Final = 5
# The map shades communes by their visitors over this many complete days.
MAP_DAYS: Final = 7
# Final days whose per-commune visitors stay in memory (a year and a bit).
_DAY_CACHE: Final = 400
# The longest period a usage page covers (a year, leap or not).
MAX_PERIOD_DAYS: Final = 366
# Default period: the last 30 complete days.
DEFAULT_PERIOD_DAYS: Final = 30
# The territory's time zone, for start times shown as clock times.
TIME_ZONE: Final = "Europe/Paris"
# The API answers are JSON documents with no secret; the page may only talk to us.
_API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

CONTROLLER: Final = web.AppKey("dashboards.controller", Controller)
ACCOUNTS: Final = web.AppKey("dashboards.accounts", AccountStore)
WATCHER: Final = web.AppKey("dashboards.watcher", FleetWatcher)
REPORTS: Final = web.AppKey("dashboards.reports", ReportScheduler)
# A live page gets a comment line at least this often, so that proxies keep it open and
# a closed page is noticed.
KEEPALIVE_S: Final = 15.0
_CSV_TABLES: Final = ("daily", "hours", "dwell", "flows")
# The incidents timeline lists at most this many, newest first.
MAX_INCIDENTS: Final = 50
# The login cookie. Its value is a random token; the database keeps only its SHA-256.
COOKIE: Final = "borne_login"
# Reachable without a login.
_PUBLIC: Final = frozenset({"/healthz", "/login", CHARTS_URL})
# Reachable between the password and the TOTP code.
_SECOND_STEP: Final = frozenset({"/login/totp", "/logout"})
# The accounts that may receive their communes' monthly reports by e-mail.
_SUBSCRIBERS: Final = frozenset({Role.COMMUNE_VIEWER, Role.COMMUNE_MANAGER})
_LOGIN: Final = web.RequestKey("dashboards.login", Login)
_TOKEN: Final = web.RequestKey("dashboards.token", str)


def _time_zone() -> tzinfo:
    try:
        return ZoneInfo(TIME_ZONE)
    except ZoneInfoNotFoundError:
        # A machine without the tz database (no tzdata package): UTC is still right.
        logger.warning("time zone %s unknown here: times are shown in UTC", TIME_ZONE)
        return UTC


def _span(days: list[date]) -> list[date]:
    """Every day from the first of ``days`` to the last (empty for none)."""
    if not days:
        return []
    return [days[0] + timedelta(days=i) for i in range((days[-1] - days[0]).days + 1)]


def _megabytes(value: int | None) -> str:
    """Bytes as megabytes with one decimal, French style (``—`` without a figure)."""
    if value is None:
        return "—"
    # French: a narrow no-break space between thousands, a decimal comma.
    return f"{value / 1e6:,.1f}".replace(",", "\u202f").replace(".", ",")


def _json_block(data: object) -> Markup:
    """JSON to put inside a ``<script type="application/json">`` element safely."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    controller: Controller,
    *,
    clock: Callable[[], float] = time.time,
    stats: StatsStore | None = None,
) -> web.Application:
    """Build the dashboards application.

    Reads the templates and the list of the territory's communes once, here, so that no
    request handler touches the disk.

    Args:
        controller: the running controller (registry and sessions are read from it).
        clock: returns the current Unix time; tests pass a fake one.
        stats: where published statistics are read (default: the configured store).

    Returns:
        The application; the controller is at ``app[CONTROLLER]``, the account store at
        ``app[ACCOUNTS]``.
    """
    dashboard = _Dashboard(controller, clock, stats)
    app = web.Application(middlewares=[_guard, dashboard.gate])
    app[CONTROLLER] = controller
    app[ACCOUNTS] = dashboard.accounts
    app[WATCHER] = dashboard.watcher
    app[REPORTS] = dashboard.scheduler
    app.on_response_prepare.append(_headers)
    app.on_shutdown.append(dashboard.shutdown)
    app.on_cleanup.append(dashboard.close)
    app.router.add_get("/", dashboard.index, name="index")
    app.router.add_get("/commune/{insee}", dashboard.commune, name="commune")
    app.router.add_get("/fleet", dashboard.health, name="health")
    app.router.add_get("/usage", dashboard.usage, name="usage")
    app.router.add_get("/usage.csv", dashboard.usage_csv, name="usage-csv")
    app.router.add_get("/report", dashboard.report, name="report")
    app.router.add_get("/reports", dashboard.reports_page, name="reports")
    app.router.add_get("/reports/{insee}/{month}", dashboard.stored_report, name="stored-report")
    app.router.add_post("/reports/subscriptions", dashboard.report_subscriptions)
    app.router.add_get("/api/events", dashboard.events, name="api-events")
    app.router.add_get("/api/fleet", dashboard.fleet, name="api-fleet")
    app.router.add_get("/api/sessions", dashboard.sessions, name="api-sessions")
    app.router.add_get("/login", dashboard.login_form, name="login")
    app.router.add_post("/login", dashboard.login_submit)
    app.router.add_get("/login/totp", dashboard.totp_form, name="login-totp")
    app.router.add_post("/login/totp", dashboard.totp_submit)
    app.router.add_post("/logout", dashboard.logout, name="logout")
    app.router.add_get("/admin/accounts", dashboard.accounts_page, name="accounts")
    app.router.add_post("/admin/accounts", dashboard.accounts_create)
    app.router.add_post("/admin/accounts/{username}/active", dashboard.accounts_active)
    app.router.add_get("/commune-admin", dashboard.manage_page, name="manage")
    app.router.add_post("/commune-admin/accounts", dashboard.manage_create)
    app.router.add_post("/commune-admin/accounts/{username}/active", dashboard.manage_active)
    app.router.add_post("/commune-admin/contact/{insee}", dashboard.manage_contact)
    app.router.add_get("/healthz", _healthz, name="healthz")
    # The legal officer's requisition pages (dashboards._legal).
    LegalPages(controller.settings.legal, dashboard._render, dashboard._account, clock).add_routes(
        app.router
    )
    app.router.add_get(CHARTS_URL, dashboard.charts_library, name="charts-library")
    return app


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    # Live data: never from a cache. No referrer leaves the site (it has no link out);
    # same-origin rather than no-referrer, so that browsers send a real Origin header
    # (not "null") with our own forms, which the origin check relies on.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", _API_CSP)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _error(request: web.Request, status: int, message: str) -> web.Response:
    if _is_api(request):
        return web.json_response({"error": message}, status=status)
    return web.Response(text=message, status=status, content_type="text/plain")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Survive database outages and handler bugs: log, answer an error, keep serving.

    Also tells the server's time for the response in a ``Server-Timing`` header (W3C
    Server Timing; browsers' developer tools show it): from the request to the body ready.
    """
    t0 = time.perf_counter()
    try:
        response = await handler(request)
        if not response.prepared:
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
        return response
    except web.HTTPException:
        raise
    except UNAVAILABLE as exc:
        logger.error("dashboards cannot read the state database: %s", exc)
        return _error(request, 503, "base de données indisponible / database unavailable")
    except StoreError as exc:
        logger.error("dashboards cannot read the statistics store: %s", exc)
        return _error(request, 503, "statistiques indisponibles / statistics unavailable")
    except Exception:
        # One crash guard per handler (STYLE.md): log it and keep serving.
        logger.error("crashed serving %s %s", request.method, request.path, exc_info=True)
        return _error(request, 500, "erreur interne / internal error")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _json(model: BaseModel) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), content_type="application/json", charset="utf-8"
    )


def _see_other(location: str) -> web.Response:
    # A response, not a raised HTTPSeeOther: it carries a Set-Cookie header.
    return web.Response(status=303, headers={"Location": location})


def _same_origin(request: web.Request) -> bool:
    """A POST from a page of ours: no ``Origin`` (old browsers, curl) or our own host."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host


def _page_csp(nonce: str) -> str:
    # Only our own inline style and script (by nonce) run; requests and forms go to us.
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class _Dashboard:
    """The request handlers and what they share."""

    def __init__(
        self, controller: Controller, clock: Callable[[], float], stats: StatsStore | None
    ) -> None:
        self.controller = controller
        self.clock = clock
        self.tz = _time_zone()
        # An InfluxDB store opens its HTTP session in the loop: made at first use.
        self._stats = stats
        self._own_stats = stats is None
        self.territory: Territory = load_territory()
        # The charting library, if `borne dashboard assets install` put it there.
        self.bundle: Bundle | None = load_bundle(controller.settings.dashboard.assets_dir)
        # Visitors per commune of each final day, read once: a final day never changes.
        self.day_visitors: dict[str, dict[str, int]] = {}
        self.accounts = AccountStore(controller.db)
        self.watcher = FleetWatcher(controller.db, clock)
        self.report_store = ReportStore(controller.db)
        s = controller.settings
        self.mailer = ReportMailer(
            self.report_store,
            s.portal.email if s.dashboard.report_email else None,
            self._name,
            s.name,
            clock,
        )
        self.scheduler = ReportScheduler(
            self.report_store,
            self.generate_report,
            self.equipped_communes,
            self.tz,
            clock,
            self.mailer,
        )
        self.closing = asyncio.Event()
        d = controller.settings.dashboard
        self.loopback = _is_loopback(d.listen_host)
        self.limiter = LoginLimiter(d.login_max_failures, float(d.login_window_s))
        self.login_ttl_s = d.login_minutes * 60.0
        # The CSRF key is derived from the controller's master key, so that forms stay
        # valid across a restart and between controllers sharing one database.
        self.csrf_key = hmac.new(
            controller.settings.command_master_key.get_secret_value().encode(),
            b"borne dashboards csrf",
            hashlib.sha256,
        ).digest()
        # Once an account exists, the open bootstrap mode never comes back in this process.
        self.accounts_seen = False
        communes = lot_communes()
        self.communes_total = len(communes)
        self.commune_names = {c.insee: c.name for c in communes}
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
            autoescape=True,
            auto_reload=False,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Load every template (included ones too) now: no file access while serving.
        for name in env.list_templates(extensions=["html", "css", "js"]):
            env.get_template(name)
        self.env = env
        self.template = env.get_template("index.html")

    # -- access -------------------------------------------------------------------------

    async def _open_mode(self) -> bool:
        """Bootstrap: loopback and no account yet, the page stays open as before."""
        if self.accounts_seen or not self.loopback:
            return False
        self.accounts_seen = await self.accounts.has_accounts()
        return not self.accounts_seen

    @web.middleware
    async def gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let a request through only with a live login (and its CSRF token on POST)."""
        if request.method == "POST" and not _same_origin(request):
            return _error(request, 403, "origine refusée / cross-origin request refused")
        if request.path in _PUBLIC:
            return await handler(request)
        token = request.cookies.get(COOKIE, "")
        login = await self.accounts.login(token_hash(token), self.clock()) if token else None
        if login is None:
            if await self._open_mode() and request.path not in _SECOND_STEP:
                if request.path.startswith("/admin/"):
                    return _error(request, 403, "aucun compte / no account yet")
                return await handler(request)
            if _is_api(request):
                return _error(request, 401, "connexion requise / login required")
            raise web.HTTPSeeOther(str(request.app.router["login"].url_for()))
        if not login.second_factor_ok and request.path not in _SECOND_STEP:
            if _is_api(request):
                return _error(request, 401, "code TOTP requis / TOTP code required")
            raise web.HTTPSeeOther(str(request.app.router["login-totp"].url_for()))
        if request.method == "POST":
            form = await request.post()
            given = str(form.get("csrf", "")) or request.headers.get("X-CSRF-Token", "")
            if not csrf_valid(self.csrf_key, token, given):
                return _error(request, 403, "jeton CSRF invalide / bad CSRF token")
        request[_LOGIN] = login
        request[_TOKEN] = token
        return await handler(request)

    def _account(self, request: web.Request) -> Account | None:
        """The logged-in account, or None in the open bootstrap mode (sees everything)."""
        login = request.get(_LOGIN)
        return login.account if login is not None else None

    def _csrf(self, request: web.Request) -> str:
        token = request.get(_TOKEN)
        return csrf_token(self.csrf_key, token) if token else ""

    def _html(self, name: str, request: web.Request | None, nonce: str, **values: Any) -> str:
        """A template rendered for a request's account (None: a stored document)."""
        return self.env.get_template(name).render(
            network_name=self.controller.settings.name,
            nonce=nonce,
            account=self._account(request) if request is not None else None,
            role_labels=ROLE_LABELS,
            csrf=self._csrf(request) if request is not None else "",
            **values,
        )

    def _render(
        self, name: str, request: web.Request, status: int = 200, **values: Any
    ) -> web.Response:
        nonce = secrets.token_urlsafe(18)
        html = self._html(name, request, nonce, **values)
        response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = _page_csp(nonce)
        # The map makes a page of a few hundred kB of SVG; gzip brings it to a few dozen.
        response.enable_compression()
        return response

    # -- reads --------------------------------------------------------------------------

    async def _hotspots(self, account: Account | None) -> list[HotspotRecord]:
        rows = await self.controller.registry.access_points()
        return [
            HotspotRecord(
                ap_id=r.ap_id,
                name=r.name,
                insee=r.insee,
                commune=r.commune,
                state=r.state,
                last_seen=r.last_seen,
                agent_version=r.agent_version,
            )
            for r in rows
            if account is None or account.may_see_commune(r.insee)
        ]

    async def _sessions(self, visible: set[str]) -> list[SessionRecord]:
        rows: list[sa.Row[Any]] = await self.controller.open_sessions()
        # The MAC becomes a tag here and goes no further.
        return [
            SessionRecord(
                tag=mac_tag(r.mac),
                ap_id=r.ap_id,
                insee=r.insee,
                started_at=r.started_at,
                up_bytes=int(r.up_bytes or 0),
                down_bytes=int(r.down_bytes or 0),
            )
            for r in rows
            if r.ap_id in visible
        ]

    def _communes_total(self, account: Account | None) -> int:
        if account is None or account.sees_territory:
            return self.communes_total
        return len(account.communes)

    async def _fleet(
        self, now: float, account: Account | None, insee: str | None = None
    ) -> tuple[FleetResponse, dict[str, HotspotRecord]]:
        if account is not None and not account.sees_fleet:
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        hotspots = await self._hotspots(account)
        total = self._communes_total(account)
        if insee is not None:
            hotspots = [h for h in hotspots if h.insee == insee]
            total = 1
        return fleet_view(hotspots, total, now), {h.ap_id: h for h in hotspots}

    async def _open(self, now: float, hotspots: dict[str, HotspotRecord]) -> SessionsResponse:
        names = dict(self.commune_names)
        names.update({h.insee: h.commune for h in hotspots.values()})
        return sessions_view(await self._sessions(set(hotspots)), hotspots, names, now, self.tz)

    def _commune_param(self, request: web.Request, raw: str | None) -> str | None:
        """A commune asked for in the URL, checked against the account's scope.

        Raises:
            HTTPNotFound: not a commune of the territory.
            HTTPForbidden: a commune the account may not see.
        """
        if raw is None:
            return None
        insee = raw.upper()
        if insee not in self.commune_names:
            raise web.HTTPNotFound(text="commune inconnue / unknown commune")
        account = self._account(request)
        if account is not None and not account.may_see_commune(insee):
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        return insee

    def stats(self) -> StatsStore:
        """The statistics store (the configured one unless the app was given one)."""
        if self._stats is None:
            self._stats = make_store(self.controller.settings.stats, self.controller.db)
        return self._stats

    async def shutdown(self, app: web.Application) -> None:
        """Tell the live pages' streams to end (they would keep the server waiting)."""
        self.closing.set()

    async def close(self, app: web.Application) -> None:
        """Release the statistics store if this app made it."""
        if self._own_stats and self._stats is not None:
            await self._stats.aclose()

    async def _visitors(self, now: float, days: int = MAP_DAYS) -> dict[str, int]:
        """Visitors per commune summed over the last ``days`` complete local days.

        Only published (thresholded) commune-day cells are read, through the statistics
        store's interface; a day without published cells adds nothing.
        """
        today = datetime.fromtimestamp(now, self.tz).date()
        wanted = [(today - timedelta(days=back)).isoformat() for back in range(days, 0, -1)]
        missing = [d for d in wanted if d not in self.day_visitors]
        if missing:
            # One read for the days not seen yet (a final day never changes).
            fresh: dict[str, dict[str, int]] = {d: {} for d in missing}
            try:
                cells = await self.stats().read_period(
                    missing[0], missing[-1], scopes=("commune",), period="day"
                )
            except StoreError as exc:
                # The map still shows the hotspots, unshaded; tried again next time.
                logger.warning("map without visitors: statistics store unavailable: %s", exc)
                cells, missing = [], []
            for cell in cells:
                per = fresh.get(cell.day)
                if per is not None and cell.kind == "presence":
                    per[cell.insee] = per.get(cell.insee, 0) + cell.visitors
            for day, per in fresh.items():
                # A day with nothing published yet (its statistics come after midnight)
                # is read again next time; a published day never changes.
                if day not in missing or not per:
                    continue
                if len(self.day_visitors) >= _DAY_CACHE:
                    self.day_visitors.pop(min(self.day_visitors))
                self.day_visitors[day] = per
        total: dict[str, int] = {}
        for day in wanted:
            for insee, n in self.day_visitors.get(day, {}).items():
                total[insee] = total.get(insee, 0) + n
        return total

    async def _map(
        self, now: float, account: Account | None, fleet: FleetResponse, insee: str | None
    ) -> str:
        rows = {r.ap_id: r for r in await self.controller.registry.access_points()}
        markers = [
            MapMarker(
                h.ap_id,
                f"{h.name} ({h.commune})",
                h.insee,
                h.state,
                rows[h.ap_id].lon if h.ap_id in rows else None,
                rows[h.ap_id].lat if h.ap_id in rows else None,
            )
            for h in fleet.hotspots
        ]
        visible: set[str] | None = None
        if insee is not None:
            visible = {insee}
        elif account is not None and not account.sees_territory:
            visible = set(account.communes)
        return render_map(
            self.territory,
            markers,
            await self._visitors(now),
            visible,
            f"Carte des bornes et des visiteurs des {MAP_DAYS} derniers jours",
        )

    # -- pages --------------------------------------------------------------------------

    async def _page(self, request: web.Request, insee: str | None) -> web.Response:
        now = self.clock()
        account = self._account(request)
        if account is not None and not account.sees_fleet:
            return self._render("home.html", request)
        fleet, by_id = await self._fleet(now, account, insee)
        open_sessions = await self._open(now, by_id)
        router = request.app.router
        query = {"commune": insee} if insee else {}
        communes = sorted(
            (self.commune_names[i], i)
            for i in (account.communes if account is not None else ())
            if i in self.commune_names
        )
        contact = (await self.accounts.contacts([insee])).get(insee) if insee else None
        return self._render(
            "index.html",
            request,
            contact=contact,
            map_svg=Markup(await self._map(now, account, fleet, insee)),
            map_days=MAP_DAYS,
            fleet=fleet,
            sessions=open_sessions,
            commune_name=self.commune_names[insee] if insee else None,
            communes=communes,
            refresh_s=REFRESH_S,
            time_zone=TIME_ZONE if self.tz is not UTC else "UTC",
            generated_iso=iso_utc(now),
            generated_text=datetime.fromtimestamp(now, self.tz).strftime("%H:%M:%S"),
            fleet_url=str(router["api-fleet"].url_for().with_query(query)),
            sessions_url=str(router["api-sessions"].url_for().with_query(query)),
        )

    async def index(self, request: web.Request) -> web.Response:
        """``GET /``: the page of everything the account may see, without JavaScript too."""
        return await self._page(request, None)

    async def commune(self, request: web.Request) -> web.Response:
        """``GET /commune/{insee}``: one commune's page (403 outside the account's scope)."""
        return await self._page(request, self._commune_param(request, request.match_info["insee"]))

    async def fleet(self, request: web.Request) -> web.Response:
        """``GET /api/fleet[?commune=INSEE]``: the hotspots the account may see."""
        insee = self._commune_param(request, request.query.get("commune"))
        fleet, _ = await self._fleet(self.clock(), self._account(request), insee)
        return _json(fleet)

    async def sessions(self, request: web.Request) -> web.Response:
        """``GET /api/sessions[?commune=INSEE]``: open sessions at those hotspots, by tag."""
        now = self.clock()
        insee = self._commune_param(request, request.query.get("commune"))
        _, by_id = await self._fleet(now, self._account(request), insee)
        return _json(await self._open(now, by_id))

    async def health(self, request: web.Request) -> web.Response:
        """``GET /fleet[?commune=INSEE]``: fleet health, incidents, live by server-sent events."""
        now = self.clock()
        account = self._account(request)
        insee = self._commune_param(request, request.query.get("commune"))
        await self.watcher.refresh()
        fleet, by_id = await self._fleet(now, account, insee)
        rows = {r.ap_id: r for r in await self.controller.registry.access_points()}
        incidents = [i for i in await self.watcher.incidents(now - 30 * DAY) if i.ap_id in by_id]
        health = health_rows(
            [
                (ap, rows[ap].created_at, rows[ap].clock_skew_s, rows[ap].health)
                for ap in by_id
                if ap in rows
            ],
            incidents,
            now,
        )
        timeline = [
            {
                "ap_id": i.ap_id,
                "name": by_id[i.ap_id].name,
                "down_iso": iso_utc(i.down_at),
                "down_text": local_clock(i.down_at, now, self.tz),
                "up_iso": iso_utc(i.up_at) if i.up_at is not None else None,
                "up_text": local_clock(i.up_at, now, self.tz) if i.up_at is not None else None,
                "duration": human_duration((i.up_at or now) - i.down_at),
            }
            for i in sorted(incidents, key=lambda i: i.down_at, reverse=True)[:MAX_INCIDENTS]
        ]
        query = {"commune": insee} if insee else {}
        return self._render(
            "health.html",
            request,
            fleet=fleet,
            health=health,
            timeline=timeline,
            commune_name=self.commune_names[insee] if insee else None,
            events_url=str(request.app.router["api-events"].url_for().with_query(query)),
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/events[?commune=INSEE]``: the fleet as server-sent events, live."""
        account = self._account(request)
        insee = self._commune_param(request, request.query.get("commune"))
        if account is not None and not account.sees_fleet:
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        token = request.get(_TOKEN)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        version = -1
        try:
            while not self.closing.is_set():
                new = await self.watcher.wait_change(version, KEEPALIVE_S, self.closing)
                # A logout, a disabled account or an expired login ends the stream.
                if token and await self.accounts.login(token_hash(token), self.clock()) is None:
                    break
                if new != version:
                    version = new
                    fleet, _ = await self._fleet(self.clock(), account, insee)
                    data = fleet.model_dump_json()
                    await response.write(f"event: fleet\nid: {version}\ndata: {data}\n\n".encode())
                else:
                    await response.write(b": keepalive\n\n")
        except (ConnectionResetError, ConnectionError):
            logger.debug("live fleet page closed")
        return response

    async def _digests(
        self, place: str, days: list[date], period: str | None = None
    ) -> list[DayDigest]:
        """The place's published cells over ``days`` (consecutive), one digest a day.

        One store read by place and period (``StatsStore.read_period``): the commune's or
        the territory's presence cells, and flows from or to the commune (every flow for
        the territory; the digest of ``period="day"`` reads no flow).
        """
        if not days:
            return []
        scopes = ["commune" if place else "territory"]
        if period is None:
            scopes.append("flow")
        cells = await self.stats().read_period(
            days[0].isoformat(),
            days[-1].isoformat(),
            scopes=scopes,
            places=[place] if place else None,
            period=period,
        )
        by_day: dict[str, list[Cell]] = {}
        for cell in cells:
            by_day.setdefault(cell.day, []).append(cell)
        tz = self.tz

        def hour_of(t: int) -> int:
            return datetime.fromtimestamp(t, tz).hour

        return [digest(d.isoformat(), by_day.get(d.isoformat(), ()), hour_of) for d in days]

    def _period(self, request: web.Request, now: float) -> tuple[date, date]:
        """The period asked for (``from``/``to``, ISO dates), else the last 30 days."""
        today = datetime.fromtimestamp(now, self.tz).date()
        try:
            end = (
                date.fromisoformat(request.query.get("to", ""))
                if request.query.get("to")
                else today - timedelta(days=1)
            )
            start = (
                date.fromisoformat(request.query["from"])
                if request.query.get("from")
                else end - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text="date AAAA-MM-JJ attendue / expected YYYY-MM-DD") from exc
        if start > end or (end - start).days >= MAX_PERIOD_DAYS:
            raise web.HTTPBadRequest(
                text="période invalide (un an au plus) / bad period (a year at most)"
            )
        return start, end

    def _place(self, request: web.Request) -> str:
        """The commune asked for, checked; else the account's only commune, else the territory."""
        insee = self._commune_param(request, request.query.get("commune"))
        if insee is not None:
            return insee
        account = self._account(request)
        if account is not None and not account.sees_fleet:
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        if account is not None and not account.sees_territory:
            return min(account.communes)
        return ""

    async def _usage(self, request: web.Request) -> tuple[str, date, date, UsageView]:
        place = self._place(request)
        start, end = self._period(request, self.clock())
        account = self._account(request)
        visible = None if account is None or account.sees_territory else set(account.communes)
        return place, start, end, await self._usage_view(place, start, end, visible)

    async def _usage_view(
        self, place: str, start: date, end: date, visible: set[str] | None
    ) -> UsageView:
        """The usage tables of a place (``""``: the territory) from ``start`` to ``end``."""
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        digests = await self._digests(place, days)
        before = []
        for d in days:
            try:
                before.append(d.replace(year=d.year - 1))
            except ValueError:  # 29 February
                continue
        wanted = {d.isoformat() for d in before}
        last_year = [
            x for x in await self._digests(place, _span(before), period="day") if x.day in wanted
        ]
        return usage_view(place, digests, last_year, visible)

    def _name(self, insee: str) -> str:
        return self.commune_names.get(insee, insee) if insee else "Territoire"

    async def usage(self, request: web.Request) -> web.Response:
        """``GET /usage[?commune=&from=&to=]``: visitors, sessions, hours, dwell, flows."""
        place, start, end, view = await self._usage(request)
        query = {"from": start.isoformat(), "to": end.isoformat()}
        if place:
            query["commune"] = place
        csv_url = request.app.router["usage-csv"].url_for()
        return self._render(
            "usage.html",
            request,
            place=place,
            place_name=self._name(place),
            start=start.isoformat(),
            end=end.isoformat(),
            view=view,
            commune_name_of=self._name,
            megabytes=_megabytes,
            charts_url=CHARTS_URL if self.bundle is not None else None,
            chart_json=_json_block(chart_data(place, view, self._name)),
            flows_svg=Markup(
                flows_chart(
                    place,
                    view,
                    self._name,
                    "Flux de visiteurs entre communes (diagramme de Sankey)",
                )
            ),
            daily_chart=Markup(
                bar_chart(
                    [v.get("visitors", 0) for _, v in view.daily],
                    [d[5:] for d, _ in view.daily],
                    "Visiteurs par jour",
                )
            ),
            hours_chart=Markup(
                bar_chart(view.hours, [f"{h} h" for h in range(24)], "Visiteurs par heure")
            ),
            csv={t: str(csv_url.with_query({**query, "table": t})) for t in _CSV_TABLES},
        )

    async def _report_values(
        self, place: str, first: date, visible: set[str] | None, account: Account | None
    ) -> dict[str, Any]:
        """What the monthly report shows: the month's usage, the hotspots, the charts."""
        now = self.clock()
        start, last = month_days(first)
        view = await self._usage_view(place, start, last, visible)
        fleet, _ = await self._fleet(now, account, place or None)
        contact = (await self.accounts.contacts([place])).get(place) if place else None
        return {
            "contact": contact,
            "place": place,
            "place_name": self._name(place),
            "month": first.strftime("%m/%Y"),
            "month_iso": first.isoformat()[:7],
            "generated": datetime.fromtimestamp(now, self.tz).strftime("%d/%m/%Y %H:%M"),
            "view": view,
            "fleet": fleet,
            "commune_name_of": self._name,
            "megabytes": _megabytes,
            "daily_chart": Markup(
                bar_chart(
                    [v.get("visitors", 0) for _, v in view.daily],
                    [d[8:] for d, _ in view.daily],
                    "Visiteurs par jour du mois",
                )
            ),
            "hours_chart": Markup(
                bar_chart(view.hours, [f"{h} h" for h in range(24)], "Visiteurs par heure")
            ),
            "flows_svg": Markup(
                flows_chart(
                    place, view, self._name, "Flux : d'où venaient les visiteurs, où ils sont allés"
                )
            ),
            "dwell_chart": Markup(
                bar_chart(
                    [n for _, n in view.dwell], [x for x, _ in view.dwell], "Sessions par durée"
                )
            ),
        }

    async def report(self, request: web.Request) -> web.Response:
        """``GET /report?commune=INSEE&month=YYYY-MM``: a commune's monthly report, to print."""
        today = datetime.fromtimestamp(self.clock(), self.tz).date()
        try:
            first = parse_month(request.query.get("month") or previous_month(today))
        except ReportError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        place = self._place(request)
        account = self._account(request)
        visible = None if account is None or account.sees_territory else set(account.communes)
        values = await self._report_values(place, first, visible, account)
        return self._render("report.html", request, stored=False, **values)

    async def generate_report(self, insee: str, month: str) -> str:
        """A commune's monthly report as a self-contained HTML document (no script, no
        link to the site), as the scheduler stores it.

        Raises:
            ReportError: a bad month or an unknown commune.
        """
        if insee not in self.commune_names:
            raise ReportError(f"commune inconnue / unknown commune: {insee}")
        values = await self._report_values(insee, parse_month(month), {insee}, None)
        return self._html("report.html", None, secrets.token_urlsafe(18), stored=True, **values)

    async def equipped_communes(self) -> list[str]:
        """The communes with at least one hotspot."""
        return sorted({r.insee for r in await self.controller.registry.access_points()})

    async def reports_page(self, request: web.Request) -> web.Response:
        """``GET /reports[?commune=]``: the stored monthly reports the account may open."""
        return await self._reports_render(request)

    async def _reports_render(
        self, request: web.Request, status: int = 200, **values: Any
    ) -> web.Response:
        insee = self._commune_param(request, request.query.get("commune"))
        account = self._account(request)
        if account is not None and not account.sees_fleet:
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        if insee is not None:
            scope: set[str] | None = {insee}
        elif account is None or account.sees_territory:
            scope = None
        else:
            scope = set(account.communes)
        rows = await self.report_store.listing(scope)
        # A commune account's own report e-mails: its communes, ticked when subscribed.
        subscribed: dict[str, str] = {}
        mail_communes: list[tuple[str, str]] = []
        if account is not None and account.role in _SUBSCRIBERS:
            subscribed = await self.report_store.subscriptions(account.username)
            mail_communes = sorted((self._name(i), i) for i in account.communes)
        values.setdefault("error", None)
        values.setdefault("notice", None)
        return self._render(
            "reports.html",
            request,
            status=status,
            rows=rows,
            commune_name_of=self._name,
            local_date=lambda t: datetime.fromtimestamp(t, self.tz).strftime("%d/%m/%Y"),
            mail_communes=mail_communes,
            subscribed=subscribed,
            mail_address=next(iter(subscribed.values()), ""),
            mail_enabled=self.mailer.enabled,
            **values,
        )

    async def report_subscriptions(self, request: web.Request) -> web.Response:
        """``POST /reports/subscriptions``: a commune account receives (or stops) its
        communes' monthly reports by e-mail, at its own address."""
        account = self._account(request)
        if account is None or account.role not in _SUBSCRIBERS:
            raise web.HTTPForbidden(text="réservé aux comptes de commune / commune accounts only")
        form = await request.post()
        wanted = {str(v).strip().upper() for v in form.getall("communes", []) if str(v).strip()}
        if not wanted <= account.communes:
            raise web.HTTPForbidden(text="commune hors de votre compte / not one of your communes")
        address = ""
        if wanted:
            try:
                address = check_email(str(form.get("email", "")))
            except AccountError as exc:
                return await self._reports_render(request, 400, error=str(exc))
        await self.report_store.subscribe(account.username, address, wanted, self.clock())
        logger.info(
            "monthly report e-mails of an account: %d communes",
            len(wanted),
            extra={"user": account.username},
        )
        if not wanted:
            notice = "Vous ne recevrez plus de rapport par courriel."
        else:
            names = ", ".join(sorted(self._name(i) for i in wanted))
            notice = f"Abonnement enregistré : rapports de {names}, à {address}."
        return await self._reports_render(request, notice=notice)

    async def stored_report(self, request: web.Request) -> web.Response:
        """``GET /reports/{insee}/{month}``: a stored report (403 outside the scope)."""
        insee = self._commune_param(request, request.match_info["insee"])
        account = self._account(request)
        if insee is None or (account is not None and not account.sees_fleet):
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        month = request.match_info["month"]
        try:
            parse_month(month)
        except ReportError as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        html = await self.report_store.get(insee, month)
        if html is None:
            raise web.HTTPNotFound(text="rapport absent / no such report")
        name = f"borne-rapport-{insee}-{month}.html"
        disposition = "attachment" if request.query.get("download") else "inline"
        response = web.Response(
            text=html,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Disposition": f'{disposition}; filename="{name}"',
                # A stored document: its own inline styles, no script at all.
                "Content-Security-Policy": (
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                    "base-uri 'none'; form-action 'none'"
                ),
            },
        )
        response.enable_compression()
        return response

    async def usage_csv(self, request: web.Request) -> web.Response:
        """``GET /usage.csv?table=daily|hours|dwell|flows&…``: a chart's data as CSV."""
        table = request.query.get("table", "daily")
        if table not in _CSV_TABLES:
            raise web.HTTPNotFound(text="table inconnue / unknown table")
        place, start, end, view = await self._usage(request)
        if table == "daily":
            header = ["jour", *DAY_FIELDS]
            rows: list[list[object]] = [
                [d, *(v.get(f, "") for f in DAY_FIELDS)] for d, v in view.daily
            ]
        elif table == "hours":
            header, rows = ["heure", "visiteurs"], [[h, n] for h, n in enumerate(view.hours)]
        elif table == "dwell":
            header, rows = ["duree", "sessions"], [list(x) for x in view.dwell]
        else:
            header = ["origine_insee", "origine", "destination_insee", "destination", "visiteurs"]
            rows = [[o, self._name(o), d, self._name(d), n] for o, d, n in view.routes]
        name = f"borne-{table}-{place or 'territoire'}-{start}-{end}.csv"
        return web.Response(
            text=to_csv(header, rows),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def charts_library(self, request: web.Request) -> web.Response:
        """``GET /assets/echarts.min.js``: the charting library npm installed (404 without)."""
        bundle = self.bundle
        if bundle is None:
            raise web.HTTPNotFound(text="bibliothèque non installée / library not installed")
        headers = {"Cache-Control": "public, max-age=86400", "ETag": bundle.etag}
        if request.headers.get("If-None-Match") == bundle.etag:
            return web.Response(status=304, headers=headers)
        body = bundle.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = bundle.gzipped
            headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
        return web.Response(
            body=body, content_type="text/javascript", charset="utf-8", headers=headers
        )

    # -- login --------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        """``GET /login``: the login form."""
        return self._render("login.html", request, error=None, username="")

    def _limit_keys(self, request: web.Request, username: str) -> list[str]:
        return [f"user:{username}", f"addr:{request.remote or '?'}"]

    def _too_many(self, request: web.Request, wait: float, template: str) -> web.Response:
        response = self._render(
            template,
            request,
            status=429,
            error="Trop d'essais : réessayez dans quelques minutes. / Too many attempts.",
            username="",
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response

    async def _start(self, request: web.Request, account: Account) -> web.Response:
        token = new_login_token()
        now = self.clock()
        second_ok = not account.needs_second_factor
        await self.accounts.start_login(
            token_hash(token), account.username, second_ok, now, self.login_ttl_s
        )
        target = "index" if second_ok else "login-totp"
        response = _see_other(str(request.app.router[target].url_for()))
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.login_ttl_s),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.controller.settings.dashboard.secure_cookie,
        )
        return response

    async def login_submit(self, request: web.Request) -> web.StreamResponse:
        """``POST /login``: check the password (rate-limited), then start a session."""
        form = await request.post()
        username = str(form.get("username", "")).strip().lower()[:64]
        password = str(form.get("password", ""))[:1024]
        keys = self._limit_keys(request, username)
        wait = self.limiter.retry_after(keys, self.clock())
        if wait > 0:
            logger.warning("dashboard login refused: rate limit", extra={"user": username})
            return self._too_many(request, wait, "login.html")
        creds = await self.accounts.credentials(username) if username else None
        if creds is None:
            ok = await asyncio.to_thread(dummy_verify, password)
        else:
            ok = await asyncio.to_thread(verify_password, creds.password_hash, password)
        if creds is None or not ok:
            self.limiter.failed(keys, self.clock())
            logger.info("dashboard login failed", extra={"user": username})
            return self._render(
                "login.html",
                request,
                status=401,
                error="Identifiant ou mot de passe incorrect. / Wrong username or password.",
                username=username,
            )
        self.limiter.succeeded(keys[0])
        logger.info("dashboard login", extra={"user": username})
        return await self._start(request, creds.account)

    async def totp_form(self, request: web.Request) -> web.Response:
        """``GET /login/totp``: the second step for admins and the legal officer."""
        return self._render("totp.html", request, error=None)

    async def totp_submit(self, request: web.Request) -> web.StreamResponse:
        """``POST /login/totp``: check the code (rate-limited with the password)."""
        login = request[_LOGIN]
        keys = self._limit_keys(request, login.account.username)
        now = self.clock()
        wait = self.limiter.retry_after(keys, now)
        if wait > 0:
            return self._too_many(request, wait, "totp.html")
        code = str((await request.post()).get("code", ""))
        if login.totp_secret is None or not totp_valid(login.totp_secret, code, now):
            self.limiter.failed(keys, now)
            return self._render(
                "totp.html", request, status=401, error="Code incorrect. / Wrong code."
            )
        self.limiter.succeeded(keys[0])
        await self.accounts.confirm_second_factor(token_hash(request[_TOKEN]))
        raise web.HTTPSeeOther(str(request.app.router["index"].url_for()))

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """``POST /logout``: end the session server-side and drop the cookie."""
        await self.accounts.end_login(token_hash(request[_TOKEN]))
        response = _see_other(str(request.app.router["login"].url_for()))
        response.del_cookie(COOKIE, path="/")
        return response

    # -- account management (syndicate admin) -------------------------------------------

    def _admin(self, request: web.Request) -> Account:
        account = self._account(request)
        if account is None or not account.manages_accounts:
            raise web.HTTPForbidden(text="réservé aux administrateurs / admins only")
        return account

    async def _accounts_render(
        self, request: web.Request, status: int = 200, **values: Any
    ) -> web.Response:
        rows = await self.accounts.accounts()
        values.setdefault("error", None)
        values.setdefault("created", None)
        return self._render(
            "accounts.html",
            request,
            status=status,
            rows=rows,
            roles=list(Role),
            commune_names=self.commune_names,
            **values,
        )

    async def accounts_page(self, request: web.Request) -> web.Response:
        """``GET /admin/accounts``: every account, and the form to add one."""
        self._admin(request)
        return await self._accounts_render(request)

    async def accounts_create(self, request: web.Request) -> web.Response:
        """``POST /admin/accounts``: add an account; shows a TOTP secret once if any."""
        admin = self._admin(request)
        form = await request.post()
        username = str(form.get("username", "")).strip().lower()
        password = str(form.get("password", ""))
        try:
            role = Role(str(form.get("role", "")))
        except ValueError:
            return await self._accounts_render(request, 400, error="Rôle inconnu. / Unknown role.")
        problem = password_problem(password)
        if problem is not None:
            return await self._accounts_render(request, 400, error=f"Mot de passe : {problem}")
        communes = str(form.get("communes", "")).replace(";", ",").split(",")
        unknown = [c for c in communes if c.strip() and c.strip().upper() not in self.commune_names]
        if unknown:
            return await self._accounts_render(
                request, 400, error=f"Commune inconnue / unknown: {', '.join(unknown)}"
            )
        secret = new_totp_secret() if role in (Role.ADMIN, Role.LEGAL_OFFICER) else None
        pw_hash = await asyncio.to_thread(hash_password, password)
        try:
            account = await self.accounts.create(
                username,
                str(form.get("display_name", "")).strip()[:200],
                role,
                pw_hash,
                communes=communes,
                totp_secret=secret,
                now=self.clock(),
            )
        except AccountError as exc:
            return await self._accounts_render(request, 400, error=str(exc))
        logger.info(
            "dashboard account created", extra={"user": account.username, "by": admin.username}
        )
        uri = totp_uri(secret, account.username, self.controller.settings.name) if secret else None
        return await self._accounts_render(
            request, 201, created={"account": account, "totp_uri": uri, "totp_secret": secret}
        )

    async def accounts_active(self, request: web.Request) -> web.StreamResponse:
        """``POST /admin/accounts/{username}/active``: enable or disable an account."""
        admin = self._admin(request)
        username = request.match_info["username"]
        active = str((await request.post()).get("active", "")) == "1"
        if username == admin.username and not active:
            return await self._accounts_render(
                request, 400, error="Vous ne pouvez pas vous désactiver. / Cannot disable yourself."
            )
        try:
            await self.accounts.set_active(username, active)
        except AccountError as exc:
            return await self._accounts_render(request, 404, error=str(exc))
        raise web.HTTPSeeOther(str(request.app.router["accounts"].url_for()))

    # -- a commune manager's page: its viewers, its contact details ------------------------

    def _manager(self, request: web.Request) -> Account:
        account = self._account(request)
        if account is None or not account.manages_commune:
            raise web.HTTPForbidden(text="réservé aux gestionnaires de commune / managers only")
        return account

    async def _manage_render(
        self, request: web.Request, manager: Account, status: int = 200, **values: Any
    ) -> web.Response:
        rows = [(a, active) for a, active in await self.accounts.accounts() if a.communes]
        viewers = [(a, active) for a, active in rows if manager.may_manage(a)]
        # The other accounts of its communes, shown but not manageable (managers, EPCI).
        others = [
            a
            for a, _ in rows
            if a.username != manager.username
            and not manager.may_manage(a)
            and a.communes & manager.communes
        ]
        communes = sorted((self.commune_names.get(i, i), i) for i in manager.communes)
        stored = await self.accounts.contacts(manager.communes)
        contacts = [(name, i, stored.get(i, CommuneContact(i))) for name, i in communes]
        values.setdefault("error", None)
        values.setdefault("notice", None)
        return self._render(
            "manage.html",
            request,
            status=status,
            viewers=viewers,
            others=others,
            communes=communes,
            contacts=contacts,
            commune_names=self.commune_names,
            local_date=lambda t: datetime.fromtimestamp(t, self.tz).strftime("%d/%m/%Y %H:%M"),
            **values,
        )

    async def manage_page(self, request: web.Request) -> web.Response:
        """``GET /commune-admin``: the manager's viewers and communes' contact details."""
        return await self._manage_render(request, self._manager(request))

    async def manage_create(self, request: web.Request) -> web.Response:
        """``POST /commune-admin/accounts``: a viewer account for some of its communes."""
        manager = self._manager(request)
        form = await request.post()
        wanted = {str(v).strip().upper() for v in form.getall("communes", []) if str(v).strip()}
        if not wanted or not wanted <= manager.communes:
            return await self._manage_render(
                request,
                manager,
                400,
                error="Choisissez une ou plusieurs de vos communes. / Pick some of your communes.",
            )
        password = str(form.get("password", ""))
        problem = password_problem(password)
        if problem is not None:
            return await self._manage_render(
                request, manager, 400, error=f"Mot de passe : {problem}"
            )
        pw_hash = await asyncio.to_thread(hash_password, password)
        try:
            account = await self.accounts.create(
                str(form.get("username", "")).strip().lower(),
                str(form.get("display_name", "")).strip()[:200],
                Role.COMMUNE_VIEWER,
                pw_hash,
                communes=wanted,
                now=self.clock(),
            )
        except AccountError as exc:
            return await self._manage_render(request, manager, 400, error=str(exc))
        logger.info(
            "dashboard viewer created by a commune manager",
            extra={"user": account.username, "by": manager.username},
        )
        return await self._manage_render(
            request, manager, 201, notice=f"Compte {account.username} créé."
        )

    async def manage_active(self, request: web.Request) -> web.StreamResponse:
        """``POST /commune-admin/accounts/{username}/active``: disable or enable a viewer."""
        manager = self._manager(request)
        username = request.match_info["username"]
        target = next(
            (a for a, _ in await self.accounts.accounts() if a.username == username), None
        )
        if target is None or not manager.may_manage(target):
            raise web.HTTPForbidden(text="compte hors de vos communes / not one of your accounts")
        active = str((await request.post()).get("active", "")) == "1"
        await self.accounts.set_active(username, active)
        logger.info(
            "dashboard viewer %s by a commune manager",
            "enabled" if active else "disabled",
            extra={"user": username, "by": manager.username},
        )
        raise web.HTTPSeeOther(str(request.app.router["manage"].url_for()))

    async def manage_contact(self, request: web.Request) -> web.Response:
        """``POST /commune-admin/contact/{insee}``: the commune's contact details."""
        manager = self._manager(request)
        insee = request.match_info["insee"].upper()
        if insee not in manager.communes:
            raise web.HTTPForbidden(text="accès refusé / forbidden")
        form = await request.post()
        fields = {k: str(form.get(k, "")) for k in ("label", "phone", "email", "address", "hours")}
        try:
            await self.accounts.set_contact(insee, fields, manager.username, self.clock())
        except AccountError as exc:
            return await self._manage_render(request, manager, 400, error=str(exc))
        return await self._manage_render(
            request, manager, notice=f"Coordonnées de {self._name(insee)} enregistrées."
        )
