"""The dashboards' aiohttp application: fleet and live sessions, in French.

``GET /`` renders the page on the server (it works without JavaScript); a small inline
script then polls ``GET /api/fleet`` and ``GET /api/sessions`` every few seconds and
updates the tables in place. ``GET /healthz`` is the liveness probe.

Access: there are no accounts nor roles yet (a later issue: communes will see their own
hotspots only). Until then this page shows the whole territory to whoever reaches it,
so it is served on the loopback address only by default
(``settings.dashboard.listen_host = "127.0.0.1"``); an operator who binds it elsewhere
gets a warning at start.

Privacy: no MAC address, IP address or other device identifier leaves this module. A
session row is turned into a ``SessionRecord`` holding a short tag
(``controller.service.mac_tag``) right where it is read from the database.

This module only adapts HTTP: views and French formatting live in
``dashboards._core``; the data comes from the controller's read methods.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import sqlalchemy as sa
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from controller.registry import lot_communes
from controller.service import Controller, mac_tag
from dashboards._core import (
    HotspotRecord,
    SessionRecord,
    fleet_view,
    iso_utc,
    sessions_view,
)
from dashboards.models import FleetResponse, SessionsResponse

__all__ = ["CONTROLLER", "REFRESH_S", "create_app"]

logger = logging.getLogger(__name__)

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
# How often the page's script asks for fresh data. Agents report every few seconds to a
# minute; polling faster would only load the database.
REFRESH_S: Final = 5
# The territory's time zone, for start times shown as clock times.
TIME_ZONE: Final = "Europe/Paris"
# The API answers are JSON documents with no secret; the page may only talk to us.
_API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

CONTROLLER: Final = web.AppKey("dashboards.controller", Controller)


def _time_zone() -> tzinfo:
    try:
        return ZoneInfo(TIME_ZONE)
    except ZoneInfoNotFoundError:
        # A machine without the tz database (no tzdata package): UTC is still right.
        logger.warning("time zone %s unknown here: times are shown in UTC", TIME_ZONE)
        return UTC


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
) -> web.Application:
    """Build the dashboards application.

    Reads the template and the list of the territory's communes once, here, so that no
    request handler touches the disk.

    Args:
        controller: the running controller (registry and sessions are read from it).
        clock: returns the current Unix time; tests pass a fake one.

    Returns:
        The application; the controller is at ``app[CONTROLLER]``.
    """
    host = controller.settings.dashboard.listen_host
    if not _is_loopback(host):
        logger.warning(
            "the dashboards listen on %s: they have no login yet and show every commune",
            host,
        )
    dashboard = _Dashboard(controller, clock)
    app = web.Application(middlewares=[_guard])
    app[CONTROLLER] = controller
    app.on_response_prepare.append(_headers)
    app.router.add_get("/", dashboard.index, name="index")
    app.router.add_get("/api/fleet", dashboard.fleet, name="api-fleet")
    app.router.add_get("/api/sessions", dashboard.sessions, name="api-sessions")
    app.router.add_get("/healthz", _healthz, name="healthz")
    return app


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    # Live data: never from a cache. No referrer leaves the page (it has no link out).
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", _API_CSP)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _error(request: web.Request, status: int, message: str) -> web.Response:
    if _is_api(request):
        return web.json_response({"error": message}, status=status)
    return web.Response(text=message, status=status, content_type="text/plain")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Survive database outages and handler bugs: log, answer an error, keep serving."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
        logger.error("dashboards cannot read the state database: %s", exc)
        return _error(request, 503, "base de données indisponible / database unavailable")
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


class _Dashboard:
    """The request handlers and what they share."""

    def __init__(self, controller: Controller, clock: Callable[[], float]) -> None:
        self.controller = controller
        self.clock = clock
        self.tz = _time_zone()
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
        self.template = env.get_template("index.html")

    # -- reads --------------------------------------------------------------------------

    async def _hotspots(self) -> list[HotspotRecord]:
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
        ]

    async def _sessions(self) -> list[SessionRecord]:
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
        ]

    async def _fleet(self, now: float) -> tuple[FleetResponse, dict[str, HotspotRecord]]:
        hotspots = await self._hotspots()
        return fleet_view(hotspots, self.communes_total, now), {h.ap_id: h for h in hotspots}

    async def _open(self, now: float, hotspots: dict[str, HotspotRecord]) -> SessionsResponse:
        names = dict(self.commune_names)
        names.update({h.insee: h.commune for h in hotspots.values()})
        return sessions_view(await self._sessions(), hotspots, names, now, self.tz)

    # -- handlers -----------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        """``GET /``: the page, complete without JavaScript."""
        now = self.clock()
        fleet, by_id = await self._fleet(now)
        open_sessions = await self._open(now, by_id)
        nonce = secrets.token_urlsafe(18)
        router = request.app.router
        html = self.template.render(
            network_name=self.controller.settings.name,
            fleet=fleet,
            sessions=open_sessions,
            nonce=nonce,
            refresh_s=REFRESH_S,
            time_zone=TIME_ZONE if self.tz is not UTC else "UTC",
            generated_iso=iso_utc(now),
            generated_text=datetime.fromtimestamp(now, self.tz).strftime("%H:%M:%S"),
            fleet_url=str(router["api-fleet"].url_for()),
            sessions_url=str(router["api-sessions"].url_for()),
        )
        response = web.Response(text=html, content_type="text/html", charset="utf-8")
        # Only our own inline style and script (by nonce) run; requests go to us only.
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return response

    async def fleet(self, request: web.Request) -> web.Response:
        """``GET /api/fleet``: every hotspot and the fleet counters."""
        fleet, _ = await self._fleet(self.clock())
        return _json(fleet)

    async def sessions(self, request: web.Request) -> web.Response:
        """``GET /api/sessions``: the open sessions, newest first (no device identifier)."""
        now = self.clock()
        _, by_id = await self._fleet(now)
        return _json(await self._open(now, by_id))
