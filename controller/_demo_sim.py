"""The simulated world of ``borne demo``: hotspots with their agents, and visitors.

Each hotspot is a real ``agents.agent.Agent`` in a thread of its own, speaking real MQTT
to the broker, with a ``SimulatedGateway`` in place of openNDS. Each visitor is a phone
that joins a hotspot's Wi-Fi, is sent to the captive portal as openNDS's FAS level 1
redirect would send it, reads the page, ticks the terms box and submits the form over
real HTTP, then browses and leaves. Nothing here decides anything about the network:
the controller does, through the same paths as in production.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import AP_ID_RE
from agents.gateway import SimulatedGateway
from controller.registry import Commune, Registry, lot_communes
from controller.service import Controller, mac_tag

__all__ = [
    "ACCT_INTERVAL_S",
    "BACKOFF_CAP_S",
    "GOODBYE_WAIT_S",
    "MAX_APS",
    "OPTIONAL_BOXES",
    "PROBES",
    "TOURIST_SITES",
    "Fleet",
    "Hotspot",
    "VisitorStats",
    "Visitors",
    "ap_id_of",
    "fas_query",
    "fas_url",
    "parse_form",
    "pick_communes",
    "random_mac",
    "register",
    "wait_offline",
]

logger = logging.getLogger(__name__)

# Always equipped, in this order when there are fewer hotspots than sites: the places a
# visitor of the Lot goes to first.
TOURIST_SITES: Final = (
    "Rocamadour",
    "Padirac",
    "Saint-Cirq-Lapopie",
    "Cahors",
    "Figeac",
    "Gourdon",
    "Souillac",
    "Martel",
    "Saint-Céré",
    "Puy-l'Évêque",
)
# Each agent is two threads (its own and paho's network thread): 400 hotspots, more
# than the Lot's whole planned fleet, make 800 threads, still fine for one process.
MAX_APS: Final = 400
# Agents poll their gateway every second so that a login shows up at once; they send
# accounting every 10 s, the controller's minimum, and the controller's stale-session
# rule is set to that same interval (3 x 10 s without news closes a session).
AGENT_POLL_S: Final = 1.0
ACCT_INTERVAL_S: Final = 10
HEALTH_INTERVAL_S: Final = 30
# Reconnect backoff cap for the agents and the bridge: everything is local, so a lost
# connection comes back within a couple of seconds rather than after 30.
BACKOFF_CAP_S: Final = 2.0
# How long the agents have to say goodbye (offline status) when the demo stops.
GOODBYE_WAIT_S: Final = 8.0
# Visitors present at once; beyond this, newcomers are turned away (and counted), so an
# absurd rate cannot exhaust memory.
MAX_VISITORS: Final = 5000
# A visit: median about 4 minutes at the hotspot, between 30 s and 30 min.
DWELL_MEDIAN_S: Final = 240.0
DWELL_SIGMA: Final = 0.8
DWELL_MIN_S: Final = 30.0
DWELL_MAX_S: Final = 1800.0
# A phone that browses moves some data every few seconds.
BROWSE_EVERY_S: Final = (2.0, 6.0)
# openNDS's web server port on the gateway (gatewayaddress) and its version string.
GATEWAY_PORT: Final = 2050
OPENNDS_VERSION: Final = "9.10.0"
# What a phone first asks for when it joins a Wi-Fi: the OS connectivity probe, which
# openNDS intercepts and redirects to the portal.
PROBES: Final = (
    "http://captive.apple.com/hotspot-detect.html",
    "http://connectivitycheck.gstatic.com/generate_204",
    "http://www.msftconnecttest.com/redirect",
    "http://detectportal.firefox.com/canonical.html",
)
_USER_AGENTS: Final = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/25.0 Chrome/121.0 Mobile Safari/537.36",
)
# Boxes a browser leaves unticked unless the visitor decides otherwise.
OPTIONAL_BOXES: Final = frozenset({"stats_optout"})
# Share of visitors who tick "do not count my device in the statistics".
STATS_OPTOUT_SHARE: Final = 0.02
# The Lot's visitors: mostly French, then British, Dutch, Belgian, German, Spanish.
_LANGUAGES: Final = (
    ("fr-FR,fr;q=0.9", 60),
    ("en-GB,en;q=0.9", 15),
    ("nl-NL,nl;q=0.9,en;q=0.6", 10),
    ("fr-BE,fr;q=0.9,nl;q=0.5", 5),
    ("de-DE,de;q=0.9,en;q=0.5", 6),
    ("es-ES,es;q=0.9", 4),
)


@dataclasses.dataclass
class VisitorStats:
    """What the simulated visitors did so far."""

    arrived: int = 0
    logged_in: int = 0
    login_failed: int = 0
    left: int = 0
    turned_away: int = 0
    crashed: int = 0


@dataclasses.dataclass
class Hotspot:
    """One simulated hotspot: its gateway, and its agent once the fleet is built.

    Attributes:
        ap_id: the access point id (openNDS's ``GatewayName``).
        commune: its commune.
        number: its number within the commune.
        index: its rank in the fleet, which gives its addresses.
        gateway: the simulated captive gateway its visitors join.
        agent: its agent.
        thread: the thread its agent runs in.
    """

    ap_id: str
    commune: Commune
    number: int
    index: int
    gateway: SimulatedGateway
    agent: Agent | None = None
    thread: threading.Thread | None = None

    @property
    def gateway_ip(self) -> str:
        """The gateway's address on its client network."""
        # One /24 per hotspot in 10.46.0.0/15 onwards: 10.46.1.0/24, 10.46.2.0/24...
        hi, lo = divmod(self.index + 1, 256)
        return f"10.{46 + hi}.{lo}.1"

    @property
    def gateway_mac(self) -> str:
        """The gateway's (locally administered) MAC address."""
        hi, lo = divmod(self.index, 256)
        return f"02:00:5e:00:{hi:02x}:{lo:02x}"

    def client_ip(self, host: int) -> str:
        """The address ``host`` of the hotspot's client network."""
        return self.gateway_ip.rsplit(".", 1)[0] + f".{host}"


# -- the fleet ----------------------------------------------------------------------------


def pick_communes(count: int, rng: random.Random) -> list[tuple[Commune, int]]:
    """The communes of ``count`` hotspots: the tourist sites first, then others at random.

    Beyond one hotspot per commune (320), communes get a second one, and so on.

    Args:
        count: how many hotspots.
        rng: the random source.

    Returns:
        ``(commune, number)`` pairs, ``number`` counting the hotspots of that commune.
    """
    communes = lot_communes()
    by_name = {c.name: c for c in communes}
    sites = [by_name[name] for name in TOURIST_SITES]
    others = [c for c in communes if c.name not in TOURIST_SITES]
    rng.shuffle(others)
    pool = sites + others
    return [(pool[k % len(pool)], k // len(pool) + 1) for k in range(count)]


def ap_id_of(commune: Commune, number: int) -> str:
    """The project's naming of access points: ``ap-<INSEE code>-<number>``, ``ap-46201-01``."""
    ap_id = f"ap-{commune.insee.lower()}-{number:02d}"
    assert AP_ID_RE.fullmatch(ap_id), ap_id
    return ap_id


async def register(registry: Registry, picks: Sequence[tuple[Commune, int]]) -> list[Hotspot]:
    """Register one access point per pick; return the hotspots, agents not built yet."""
    hotspots = []
    for index, (commune, number) in enumerate(picks):
        ap_id = ap_id_of(commune, number)
        name = f"{commune.name} — borne {number}"
        await registry.add_access_point(
            ap_id, commune.insee, name, lon=commune.lon, lat=commune.lat
        )
        hotspots.append(Hotspot(ap_id, commune, number, index, SimulatedGateway()))
    return hotspots


class _DemoAgent(Agent):
    """The real agent, but its first health report waits for the broker connection.

    ``Agent.run`` publishes a health report at once, from its own thread, while paho's
    network thread may be between opening the socket and queueing CONNECT; that
    PUBLISH can then reach the broker before CONNECT, which the broker refuses and
    paho only notices after a keepalive. The other messages are sent only once
    connected (they follow commands or the resync on connect), so this is enough here.
    """

    def publish_health(self) -> None:
        """Publish the AP's health once connected (skipped until then)."""
        if self.link.connected.is_set():
            super().publish_health()


def _run_agent(agent: Agent, stop: threading.Event) -> None:
    try:
        agent.run(stop)
    except Exception:
        # The crash guard of one agent: the rest of the fleet keeps going.
        logger.error("simulated agent %s crashed", agent.config.ap_id, exc_info=True)


class Fleet:
    """The simulated hotspots' agents, each in its own thread."""

    def __init__(
        self,
        hotspots: list[Hotspot],
        registry: Registry,
        mqtt: tuple[str, int],
        state_dir: str,
    ) -> None:
        self.hotspots = hotspots
        self.stop_event = threading.Event()
        for h in hotspots:
            config = AgentConfig(
                ap_id=h.ap_id,
                command_key=registry.command_key(h.ap_id),
                mqtt_host=mqtt[0],
                mqtt_port=mqtt[1],
                poll_interval_s=AGENT_POLL_S,
                acct_interval_s=ACCT_INTERVAL_S,
                health_interval_s=HEALTH_INTERVAL_S,
                gateway="simulated",
                state_dir=state_dir,
            )
            h.agent = _DemoAgent(
                config, h.gateway, backoff_cap_s=BACKOFF_CAP_S, persist_state=False
            )

    def start(self) -> None:
        """Start every agent in a thread of its own (it connects in the background)."""
        for h in self.hotspots:
            assert h.agent is not None
            h.thread = threading.Thread(
                target=_run_agent,
                args=(h.agent, self.stop_event),
                name=f"agent[{h.ap_id}]",
                daemon=True,
            )
            h.thread.start()

    def connected(self) -> int:
        """How many agents are connected to the broker now."""
        return sum(1 for h in self.hotspots if h.agent and h.agent.link.connected.is_set())

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait until every agent is connected; False if some are not after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.connected() < len(self.hotspots):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _join(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        for h in self.hotspots:
            if h.thread is not None:
                h.thread.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for h in self.hotspots if h.thread is not None and h.thread.is_alive())

    async def stop(self) -> None:
        """Stop every agent: each publishes its offline status, then disconnects."""
        self.stop_event.set()
        alive = await asyncio.to_thread(self._join, GOODBYE_WAIT_S)
        if alive:
            logger.warning("%d simulated agents did not stop in time", alive)


async def wait_offline(controller: Controller, ap_ids: set[str], timeout_s: float) -> None:
    """Give the controller the time to record the agents' goodbyes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = await controller.registry.access_points()
        if not any(r.ap_id in ap_ids and r.state == "online" for r in rows):
            return
        await asyncio.sleep(0.1)
    logger.warning("some hotspots were still online when the demo stopped")


# -- the visitors -------------------------------------------------------------------------


def random_mac(rng: random.Random) -> str:
    """A random unicast, locally administered MAC, as phones use on Wi-Fi nowadays."""
    first = (rng.randrange(256) & 0b1111_1100) | 0b0000_0010
    rest = [rng.randrange(256) for _ in range(5)]
    return ":".join(f"{b:02x}" for b in [first, *rest])


def _nds_urlencode(text: str) -> str:
    # openNDS percent-encodes these values (uh_urlencode) with lower-case hex digits.
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(text, safe=""))


def fas_query(hotspot: Hotspot, mac: str, ip: str, origin: str, hid: str) -> str:
    """The ``fas`` value openNDS 9.10 (FAS level 1) puts in its redirect for this client.

    Base64 of a ``", "``-separated ``key=value`` list in openNDS's order, with
    ``gatewayname``, ``gatewayurl`` and ``originurl`` URL-encoded, ``gatewaymac``
    without separators, and the ``(null)`` placeholders of its unset custom parameter
    lists at the end, as the real daemon prints them (tests/README.md).

    Args:
        hotspot: the hotspot the client joined.
        mac: the client's MAC address.
        ip: the client's IP address.
        origin: the page the client first asked for.
        hid: openNDS's hashed client id (64 hex digits).
    """
    fields = [
        ("hid", hid),
        ("clientip", ip),
        ("clientmac", mac),
        ("client_type", "cpd_can"),
        ("gatewayname", _nds_urlencode(hotspot.ap_id)),
        ("gatewayurl", _nds_urlencode("http://status.client")),
        ("version", OPENNDS_VERSION),
        ("gatewayaddress", f"{hotspot.gateway_ip}:{GATEWAY_PORT}"),
        ("gatewaymac", hotspot.gateway_mac.replace(":", "")),
        ("originurl", _nds_urlencode(origin)),
        ("clientif", "br-lan"),
        ("themespec", "(null)"),
    ]
    text = ", ".join(f"{key}={value}" for key, value in fields) + ", (null)(null)(null)(null)"
    return base64.b64encode(text.encode()).decode("ascii")


def fas_url(public_url: str, fas: str) -> URL:
    """The URL of openNDS's redirect: the base64 goes into the query as is (with its
    ``+`` and ``=``), as openNDS writes it; the portal copes with that."""
    return URL(f"{public_url}?fas={fas}", encoded=True)


class _FormParser(HTMLParser):
    """The first POST form of a page: its action and what a browser would submit."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done and a.get("method", "get").lower() == "post":
            self._in_form = True
            self.action = a.get("action", "")
        elif tag == "input" and self._in_form and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind == "checkbox":
                # The visitor ticks the box: "I accept the terms of use" (the statistics
                # opt-out is the visitor's own choice: Visitors.log_in makes it).
                if a["name"] not in OPTIONAL_BOXES:
                    self.fields.append((a["name"], a.get("value") or "on"))
            elif kind in ("hidden", "text"):
                self.fields.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True


def parse_form(html: str) -> tuple[str, list[tuple[str, str]]] | None:
    """``(action, fields)`` of the page's first POST form, boxes ticked (but the
    statistics opt-out, ``OPTIONAL_BOXES``); None if none."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    if parser.action is None:
        return None
    return parser.action, parser.fields


class Visitors:
    """Phones that arrive at hotspots, log in through the portal, browse and leave."""

    def __init__(
        self,
        hotspots: list[Hotspot],
        public_url: str,
        per_minute: float,
        rng: random.Random,
        http: aiohttp.ClientSession,
    ) -> None:
        self.hotspots = hotspots
        self.public_url = public_url
        self.rate_per_s = per_minute / 60.0
        self.rng = rng
        self.http = http
        self.stats = VisitorStats()
        self.present = 0
        self._used: set[str] = set()

    async def run(self) -> None:
        """Let visitors in at the configured rate (a Poisson process) until cancelled."""
        if self.rate_per_s <= 0:
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as tg:
            n = 0
            while True:
                if self.present >= MAX_VISITORS:
                    self.stats.turned_away += 1
                else:
                    n += 1
                    self.present += 1
                    tg.create_task(self.visit(), name=f"demo.visitor[{n}]")
                await asyncio.sleep(self.rng.expovariate(self.rate_per_s))

    def _new_device(self, hotspot: Hotspot) -> tuple[str, str]:
        while True:
            mac = random_mac(self.rng)
            if mac not in self._used:
                break
        self._used.add(mac)
        # Hosts .10-.250 of the hotspot's /24, like a DHCP pool.
        return mac, hotspot.client_ip(self.rng.randint(10, 250))

    async def visit(self) -> None:
        """One visitor's stay (crash-guarded: a failing visit never stops the others)."""
        hotspot = self.rng.choice(self.hotspots)
        mac, ip = self._new_device(hotspot)
        hotspot.gateway.arrive(mac, ip)
        self.stats.arrived += 1
        try:
            if await self.log_in(hotspot, mac, ip):
                self.stats.logged_in += 1
                await self.browse(hotspot, mac)
            else:
                self.stats.login_failed += 1
                # Not let in: the phone lingers a little on the Wi-Fi, then goes.
                await asyncio.sleep(self.rng.uniform(5.0, 20.0))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.login_failed += 1
            logger.warning("visitor %s at %s: %s", mac_tag(mac), hotspot.ap_id, exc)
        except Exception:
            self.stats.crashed += 1
            logger.error("visitor %s at %s crashed", mac_tag(mac), hotspot.ap_id, exc_info=True)
        finally:
            hotspot.gateway.leave(mac)
            self._used.discard(mac)
            self.present -= 1
            self.stats.left += 1

    async def log_in(self, hotspot: Hotspot, mac: str, ip: str) -> bool:
        """Do what the phone's browser does after openNDS's redirect: page, tick, submit."""
        hid = hashlib.sha256(self.rng.randbytes(32)).hexdigest()
        origin = self.rng.choice(PROBES)
        url = fas_url(self.public_url, fas_query(hotspot, mac, ip, origin, hid))
        languages, weights = zip(*_LANGUAGES, strict=True)
        headers = {
            "User-Agent": self.rng.choice(_USER_AGENTS),
            "Accept-Language": self.rng.choices(languages, weights)[0],
        }
        async with self.http.get(url, headers=headers) as page:
            html = await page.text()
            page_url = page.url
            if page.status != 200:
                logger.warning("portal answered %d to %s", page.status, hotspot.ap_id)
                return False
        form = parse_form(html)
        if form is None:
            logger.warning("no login form on the portal page for %s", hotspot.ap_id)
            return False
        action, fields = form
        if self.rng.random() < STATS_OPTOUT_SHARE:
            fields.append(("stats_optout", "yes"))
        # A human reads the page and ticks the box before submitting.
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        async with self.http.post(
            page_url.join(URL(action)), data=fields, headers=headers
        ) as answer:
            await answer.read()
            return answer.status == 200

    async def browse(self, hotspot: Hotspot, mac: str) -> None:
        """Move some data every few seconds, for the visit's dwell time."""
        dwell = self.rng.lognormvariate(math.log(DWELL_MEDIAN_S), DWELL_SIGMA)
        loop = asyncio.get_running_loop()
        end = loop.time() + min(DWELL_MAX_S, max(DWELL_MIN_S, dwell))
        while loop.time() < end:
            await asyncio.sleep(self.rng.uniform(*BROWSE_EVERY_S))
            down = self.rng.randint(20_000, 2_500_000)
            hotspot.gateway.browse(mac, down // self.rng.randint(5, 20), down)
