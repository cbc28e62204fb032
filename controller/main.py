"""The controller process: one asyncio loop, one TaskGroup, clean shutdown on SIGTERM.

It opens the state database (migrating it), loads the registry, connects the MQTT
bridge, serves the captive portal and the dashboards, and runs the ingest and sweep
tasks until asked to stop. Nothing here holds business rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from aiohttp import web

from captive_portal.app import create_app as create_portal
from controller.bridge import Bridge
from controller.config import Settings
from controller.portal_backend import ControllerPortalBackend
from controller.registry import Registry, lot_communes
from controller.service import Controller
from controller.storage import Database, open_database
from controller.storage.schema import communes
from dashboards.app import REPORTS as DASHBOARD_REPORTS
from dashboards.app import WATCHER as DASHBOARD_WATCHER
from dashboards.app import create_app as create_dashboard

__all__ = ["Running", "open_controller", "run_controller", "serve_app", "web_apps"]

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """A started controller, for the demo and the tests."""

    settings: Settings
    db: Database
    registry: Registry
    controller: Controller
    portal_url: str
    dashboard_url: str


async def _seed_communes(db: Database, registry: Registry) -> None:
    async with db.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(communes))).scalar()
    if not count:
        await registry.add_communes(await asyncio.to_thread(lot_communes))
        logger.info("registry seeded with the communes of the Lot")


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve an aiohttp application; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def open_controller(
    settings: Settings, *, backoff_cap_s: float = 30.0
) -> AsyncIterator[tuple[Controller, asyncio.TaskGroup]]:
    """Start the controller's core under a TaskGroup; stop everything on exit."""
    db = await open_database(settings.database.url.get_secret_value())
    registry = Registry(db, settings.command_master_key.get_secret_value())
    bridge: Bridge | None = None
    try:
        await _seed_communes(db, registry)
        await registry.load()
        bridge = Bridge(settings.mqtt, backoff_cap_s=backoff_cap_s)
        controller = Controller(settings, db, registry, bridge=bridge)
        bridge.start()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(controller.consume(), name="controller.ingest"),
                tg.create_task(controller.sweep_forever(), name="controller.sweep"),
            ]
            if settings.legal.enabled:
                from controller.legal.consumer import LegalConsumer, open_store

                store = await asyncio.to_thread(open_store, settings.legal)
                consumer = LegalConsumer(db, store, settings.legal)
                tasks.append(tg.create_task(consumer.run(), name="legal.consumer"))
            if settings.radius.enabled:
                from radius import build_server

                r = settings.radius
                radius_server = await build_server(settings, db)
                tasks.append(
                    tg.create_task(
                        radius_server.run(r.listen_host, r.auth_port, r.acct_port), name="radius"
                    )
                )
            if settings.stats.enabled:
                from controller.stats import StatsService

                stats = StatsService(settings.stats, db)
                tasks.append(tg.create_task(stats.run(), name="stats.consumer"))
            try:
                yield controller, tg
            finally:
                for task in tasks:
                    task.cancel()
    finally:
        if bridge is not None:
            await bridge.aclose()
        await db.aclose()


def web_apps(controller: Controller) -> tuple[web.Application, web.Application]:
    """The portal and dashboard applications (reads templates and catalogs: call it in a
    worker thread, not in the event loop)."""
    portal = create_portal(controller.settings, ControllerPortalBackend(controller))
    dashboard = create_dashboard(controller)
    return portal, dashboard


async def run_controller(
    settings: Settings,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Running], Awaitable[None]] | None = None,
) -> None:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with open_controller(settings) as (controller, tg):
        portal, dashboard = await asyncio.to_thread(web_apps, controller)
        # Records hotspot incidents while no dashboard page is open (dashboards.watch).
        watcher = tg.create_task(dashboard[DASHBOARD_WATCHER].run(), name="dashboards.watch")
        # Each commune's monthly report, made at the start of the month (dashboards.reports).
        reports = tg.create_task(dashboard[DASHBOARD_REPORTS].run(), name="dashboards.reports")
        p, d = settings.portal, settings.dashboard
        async with (
            serve_app(portal, p.listen_host, p.listen_port) as portal_url,
            serve_app(dashboard, d.listen_host, d.listen_port) as dashboard_url,
        ):
            logger.info("portal on %s, dashboards on %s", portal_url, dashboard_url)
            if on_ready is not None:
                await on_ready(
                    Running(
                        settings,
                        controller.db,
                        controller.registry,
                        controller,
                        portal_url,
                        dashboard_url,
                    )
                )
            await stop.wait()
            logger.info("stopping")
        watcher.cancel()
        reports.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
