"""``borne demo``: the whole system in one process, with nothing to install by hand.

It starts an embedded MQTT broker (amqtt) on the loopback address, a state database
(temporary SQLite unless one is given), the controller with its captive portal and its
dashboards, a simulated fleet of hotspots in communes of the Lot (each a real
``agents.agent.Agent`` in a thread of its own, over real MQTT, with a
``SimulatedGateway`` instead of openNDS), and simulated visitors who log in through the
portal's real HTTP endpoints exactly as a phone's browser does after openNDS's redirect.
It runs until Ctrl-C (or until ``stop`` is set) and then shuts down in order: visitors,
agents (which publish their offline status), web servers, controller, broker.

Everything listens on 127.0.0.1 only. The embedded broker accepts anonymous clients:
acceptable on the loopback of a demo, never in production (mosquitto with TLS, one login
per access point and an ACL; see DESIGN.md). No business rule lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import random
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker

from captive_portal.app import create_app as create_portal
from controller._demo_sim import (
    ACCT_INTERVAL_S,
    BACKOFF_CAP_S,
    GOODBYE_WAIT_S,
    MAX_APS,
    PROBES,
    TOURIST_SITES,
    Fleet,
    Visitors,
    VisitorStats,
    fas_query,
    fas_url,
    pick_communes,
    register,
    wait_offline,
)
from controller.config import load_settings
from controller.main import open_controller
from controller.portal_backend import ControllerPortalBackend
from controller.service import Controller
from controller.stats import StatsStore, make_store
from controller.stats._pipeline import DayReport
from controller.stats._service import publish_reports, simulated_reports_apart
from dashboards.app import create_app as create_dashboard

__all__ = ["MAX_APS", "TOURIST_SITES", "DemoError", "DemoInfo", "VisitorStats", "run_demo"]

logger = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
# How long the start waits for every agent to connect to the embedded broker (it takes
# well under a second on any machine; a slow CI runner may need more).
CONNECT_WAIT_S: Final = 20.0
HTTP_TIMEOUT_S: Final = 30.0
# The device a human can log in with from the printed link, at the first hotspot.
TRY_MAC: Final = "02:b0:4e:00:00:01"
# Statistics shown at once: the last days simulated over the Lot's 320 communes, fed
# straight to the controller's pipeline while the rest starts (docs/STATISTICS.md §7).
STATS_DAYS: Final = 3
STATS_SCALE: Final = 0.1


class DemoError(Exception):
    """The demo cannot start as asked; the message says why, in French and English."""


@dataclasses.dataclass(frozen=True)
class DemoInfo:
    """A running demo, handed to ``on_ready``.

    Attributes:
        portal_url: the captive portal's base URL.
        fas_url: where openNDS would send visitors (``settings.portal.public_url``).
        try_url: a login link for a simulated phone at the first hotspot, for a human.
        dashboard_url: the dashboards' page.
        mqtt_port: the embedded broker's port on 127.0.0.1.
        ap_ids: the simulated hotspots.
        controller: the running controller.
        visitors: the visitors' counters, updated as they go.
        stats_days: the simulated past days whose statistics the demo preloads.
        stats_ready: set once they are written (dashboard reads wait for it).
    """

    portal_url: str
    fas_url: str
    try_url: str
    dashboard_url: str
    mqtt_port: int
    ap_ids: tuple[str, ...]
    controller: Controller
    visitors: VisitorStats
    stats_days: tuple[str, ...] = ()
    stats_ready: asyncio.Event | None = None


# -- the broker ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def embedded_broker(host: str = HOST, port: int = 0) -> AsyncIterator[int]:
    """Run an amqtt broker in this loop, on ``host:port`` (0: any free port).

    The broker uses an "external" listener: this function owns the TCP server (so that
    it knows the port it got) and hands each connection to the broker.

    Args:
        host: the address to listen on.
        port: the port, or 0 for any free one.

    Yields:
        The port the broker listens on.

    Raises:
        DemoError: the port cannot be bound.
    """

    broker = Broker(
        {
            "listeners": {"default": {"type": "external"}},
            # Only anonymous login, and no $SYS topics nor packet logging.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), "default"
            )
        except RuntimeError as exc:
            # amqtt 0.12 walks its subscription table while another client subscribes
            # ("dictionary changed size during iteration"): that one connection ends, its
            # client reconnects; the broker keeps serving.
            logger.warning("embedded broker: a connection ended on a broker error: %s", exc)
            logger.debug("embedded broker error", exc_info=True)
        except Exception:
            # The crash guard of one connection: log it, the broker keeps serving.
            logger.error("embedded broker: a connection crashed", exc_info=True)
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(on_connection, host, port)
    except OSError as exc:
        raise DemoError(
            f"le port MQTT {port} est indisponible / MQTT port {port} unavailable: {exc}"
        ) from exc
    await broker.start()
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await broker.shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()


# -- web servers on sockets bound in advance ------------------------------------------------


def _listen(port: int, what: str, option: str) -> socket.socket:
    try:
        return socket.create_server((HOST, port))
    except OSError as exc:
        raise DemoError(
            f"impossible d'écouter sur {HOST}:{port} ({what} ; choisir un autre port avec "
            f"{option}) / cannot listen on {HOST}:{port} ({what}; pick another port with "
            f"{option}): {exc.strerror or exc}"
        ) from exc


@contextlib.asynccontextmanager
async def _serve(app: web.Application, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` on an already bound socket, so its port is known before it starts."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://{HOST}:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


# -- statistics ---------------------------------------------------------------------------


def _past_days(timezone: str, days: int) -> list[str]:
    """The ``days`` local days before today, oldest first (reads the tz database)."""
    today = datetime.now(ZoneInfo(timezone)).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(days, 0, -1)]


class _AfterPreload:
    """The dashboards' statistics store: reads wait until the simulated past days are
    written (a page opened in the first seconds would otherwise keep them as empty days,
    since the dashboards remember finished days)."""

    def __init__(self, store: StatsStore, ready: asyncio.Event) -> None:
        self._store = store
        self._ready = ready

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not name.startswith("read"):
            return attr

        async def after_preload(*args: Any, **kwargs: Any) -> Any:
            await self._ready.wait()
            return await attr(*args, **kwargs)

        return after_preload


async def _preload_stats(
    controller: Controller,
    computed: asyncio.Future[list[DayReport]],
    ready: asyncio.Event,
    started: float,
) -> None:
    """Publish the simulated days' protected cells where the dashboards read them, then
    let the dashboards read (crash-guarded: the demo goes on without them)."""
    settings = controller.settings.stats
    store = make_store(settings, controller.db)
    try:
        reports = await computed
        await publish_reports(settings, controller.db, store, reports)
        logger.info(
            "statistics: %d simulated days preloaded in %.1f s",
            len(reports),
            time.monotonic() - started,
        )
    except Exception:
        logger.error("statistics: the simulated days could not be preloaded", exc_info=True)
    finally:
        ready.set()
        await store.aclose()


def _apps(controller: Controller, stats: StatsStore) -> tuple[web.Application, web.Application]:
    """The portal and the dashboards (reads templates: call it in a worker thread)."""
    return create_portal(controller.settings, ControllerPortalBackend(controller)), (
        create_dashboard(controller, stats=stats)
    )


async def _cancel(future: asyncio.Future[list[DayReport]]) -> None:
    future.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await future


# -- the whole --------------------------------------------------------------------------


def _check(aps: int, ports: dict[str, int], visitors_per_minute: float) -> None:
    if not 1 <= aps <= MAX_APS:
        raise DemoError(
            f"--aps doit être entre 1 et {MAX_APS} / --aps must be between 1 and {MAX_APS}"
        )
    for option, port in ports.items():
        if not 0 <= port <= 65535:
            raise DemoError(f"{option} : port invalide / invalid port: {port}")
    if not (math.isfinite(visitors_per_minute) and visitors_per_minute >= 0):
        raise DemoError(
            "--visitors-per-minute doit être un nombre positif ou nul / must be a number >= 0"
        )


def _announce(info: DemoInfo, aps: int, per_minute: float) -> None:
    rate = f"{per_minute:g}"
    print(
        "\n".join(
            [
                "borne — démonstration en cours",
                f"  Portail captif :        {info.fas_url}",
                f"  Essayer la connexion :  {info.try_url}",
                f"  Tableau de bord :       {info.dashboard_url}",
                f"  {aps} bornes simulées dans le Lot, {rate} visiteurs par minute environ.",
                "  Ctrl-C pour arrêter.",
                "borne — demo running",
                f"  Captive portal:   {info.fas_url}",
                f"  Try logging in:   {info.try_url}",
                f"  Dashboard:        {info.dashboard_url}",
                f"  {aps} simulated hotspots in the Lot, about {rate} visitors per minute.",
                "  Press Ctrl-C to stop.",
            ]
        ),
        flush=True,
    )


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[int]:
    def on_signal(signum: int) -> None:
        if stop.is_set():
            # Second Ctrl-C: give the default behaviour back, so a third one forces out.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
            return
        print("Arrêt en cours… / Stopping…", flush=True)
        stop.set()

    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    return installed


async def run_demo(
    *,
    aps: int = 24,
    portal_port: int = 8080,
    dashboard_port: int = 8081,
    mqtt_port: int = 0,
    visitors_per_minute: float = 30.0,
    database: str | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[DemoInfo], Awaitable[None]] | None = None,
    seed: int | None = None,
    stats_days: int = STATS_DAYS,
) -> None:
    """Run the embedded demo until Ctrl-C, SIGTERM or ``stop``.

    Args:
        aps: how many simulated hotspots (1 to ``MAX_APS``).
        portal_port: the captive portal's port on 127.0.0.1 (0: any free port).
        dashboard_port: the dashboards' port on 127.0.0.1 (0: any free port).
        mqtt_port: the embedded broker's port on 127.0.0.1 (0: any free port).
        visitors_per_minute: the mean arrival rate of simulated visitors (0: none).
        database: a SQLAlchemy URL; default a temporary SQLite file, deleted at the end.
        stop: set it to stop the demo.
        on_ready: awaited once everything runs, with the URLs and the controller.
        seed: makes the choice of communes and the visitors reproducible.
        stats_days: how many past days of simulated statistics to preload (0: none).

    Raises:
        DemoError: bad arguments, or a port already in use.
        controller.storage.StorageError: the database cannot be opened.
    """
    _check(
        aps,
        {
            "--portal-port": portal_port,
            "--dashboard-port": dashboard_port,
            "--mqtt-port": mqtt_port,
        },
        visitors_per_minute,
    )

    stop = stop or asyncio.Event()
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    portal_sock = _listen(portal_port, "portail captif / captive portal", "--portal-port")
    try:
        dashboard_sock = _listen(dashboard_port, "tableau de bord / dashboard", "--dashboard-port")
    except DemoError:
        portal_sock.close()
        raise
    portal_base = f"http://{HOST}:{portal_sock.getsockname()[1]}"
    tmp = await asyncio.to_thread(tempfile.TemporaryDirectory, prefix="borne-demo-")
    db_url = database or f"sqlite+aiosqlite:///{tmp.name}/borne-demo.db"
    signals = _install_signals(loop, stop)
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(portal_sock.close)
            stack.callback(dashboard_sock.close)
            # Simulated past days, computed in a process of their own (CPU work here
            # would slow the embedded broker down) while everything else starts.
            started = time.monotonic()
            stats_settings = load_settings(None, stats={"enabled": True}).stats
            past = await asyncio.to_thread(_past_days, stats_settings.timezone, stats_days)
            computed = loop.run_in_executor(
                None,
                functools.partial(
                    simulated_reports_apart,
                    stats_settings,
                    past,
                    scale=STATS_SCALE,
                    seed=rng.randrange(2**31),
                ),
            )
            stack.push_async_callback(_cancel, computed)
            stats_ready = asyncio.Event()
            broker_port = await stack.enter_async_context(embedded_broker(HOST, mqtt_port))
            settings = load_settings(
                None,
                # Fresh secrets for each run: the demo never uses well-known keys.
                command_master_key=secrets.token_urlsafe(32),
                name="Wi-Fi public du Lot — démonstration",
                mqtt={"host": HOST, "port": broker_port, "client_id": "borne-demo-controller"},
                database={"url": db_url},
                portal={
                    "listen_host": HOST,
                    "listen_port": portal_sock.getsockname()[1],
                    "public_url": f"{portal_base}/fas/",
                    "network_name": "Lot Wi-Fi public",
                    "fas_key": secrets.token_urlsafe(32),
                },
                dashboard={"listen_host": HOST, "listen_port": dashboard_sock.getsockname()[1]},
                sessions={"acct_interval_s": ACCT_INTERVAL_S},
                # Live sessions feed the statistics; a day is published the next morning.
                stats={"enabled": True},
            )
            controller, _ = await stack.enter_async_context(
                open_controller(settings, backoff_cap_s=BACKOFF_CAP_S)
            )
            dashboard_stats = make_store(settings.stats, controller.db)
            stack.push_async_callback(dashboard_stats.aclose)
            portal_app, dashboard_app = await asyncio.to_thread(
                _apps, controller, cast(StatsStore, _AfterPreload(dashboard_stats, stats_ready))
            )
            await stack.enter_async_context(_serve(portal_app, portal_sock))
            dashboard_url = await stack.enter_async_context(_serve(dashboard_app, dashboard_sock))
            picked = await asyncio.to_thread(pick_communes, aps, rng)
            hotspots = await register(controller.registry, picked)
            fleet = Fleet(hotspots, controller.registry, (HOST, broker_port), tmp.name)
            ap_ids = {h.ap_id for h in hotspots}
            # Exit order (last in, first out): agents say goodbye while the controller
            # still listens, then the controller records it, then the rest closes.
            stack.push_async_callback(wait_offline, controller, ap_ids, GOODBYE_WAIT_S)
            stack.push_async_callback(fleet.stop)
            # Agents start once the controller listens: a message published before its
            # subscription would have no subscriber, and the broker would drop it.
            assert controller.bridge is not None
            if not await controller.bridge.wait_subscribed(CONNECT_WAIT_S):
                logger.warning("the controller is not subscribed to the agents' topics yet")
            fleet.start()
            if not await fleet.wait_connected(CONNECT_WAIT_S):
                logger.warning(
                    "%d of %d agents connected to the broker",
                    fleet.connected(),
                    len(hotspots),
                )
            http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    connector=aiohttp.TCPConnector(limit=64),
                )
            )
            public_url = settings.portal.public_url
            visitors = Visitors(hotspots, public_url, visitors_per_minute, rng, http)
            first = hotspots[0]
            first.gateway.arrive(TRY_MAC, first.client_ip(2))
            try_url = fas_url(
                public_url,
                fas_query(
                    first,
                    TRY_MAC,
                    first.client_ip(2),
                    PROBES[0],
                    hashlib.sha256(rng.randbytes(32)).hexdigest(),
                ),
            )
            info = DemoInfo(
                portal_url=portal_base,
                fas_url=public_url,
                try_url=str(try_url),
                dashboard_url=f"{dashboard_url}/",
                mqtt_port=broker_port,
                ap_ids=tuple(h.ap_id for h in hotspots),
                controller=controller,
                visitors=visitors.stats,
                stats_days=tuple(past),
                stats_ready=stats_ready,
            )
            async with asyncio.TaskGroup() as tg:
                preloading = tg.create_task(
                    _preload_stats(controller, computed, stats_ready, started),
                    name="demo.stats-preload",
                )
                simulation = tg.create_task(visitors.run(), name="demo.visitors")
                _announce(info, aps, visitors_per_minute)
                if on_ready is not None:
                    await on_ready(info)
                await stop.wait()
                simulation.cancel()
                preloading.cancel()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        await asyncio.to_thread(tmp.cleanup)
    print("Démonstration arrêtée. / Demo stopped.", flush=True)
