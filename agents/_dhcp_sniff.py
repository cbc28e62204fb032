"""DHCP view without a lease file: leases from the DHCP traffic on the LAN (optional scapy).

Some gateways keep no dnsmasq lease file (another DHCP server, a relay, a read-only
system). With ``dhcp_sniff_interface`` set, the agent listens to DHCP on that interface
with scapy's ``AsyncSniffer`` and keeps the same ``{mac: Lease}`` view as
:func:`agents._dhcp.read_leases`: a lease appears with the server's ACK (address and
lease time) and goes with the client's RELEASE or its expiry.

Privacy, as for the lease file: the client's host name (option 12) and vendor class
(option 60) are reduced to a coarse category (``phone``, ``tablet``, ``computer``,
``other``) the moment the packet is read; neither is kept nor logged.

:class:`DhcpLeaseTracker` is the sans-IO core (plain values in, leases out);
:class:`DhcpSniffer` is the thin scapy adapter. scapy is optional: the agent imports
this module only when the sniffer is configured, and a missing scapy is a clear error
(:class:`SnifferUnavailable`), never a crash of the agent.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from agents._dhcp import Category, Lease, category
from agents.contract import MAC_RE

__all__ = [
    "DhcpLeaseTracker",
    "DhcpSniffer",
    "SnifferUnavailable",
    "vendor_category",
]

logger = logging.getLogger(__name__)

# DHCP message types (RFC 2132, option 53)
DISCOVER, REQUEST, ACK, RELEASE = 1, 3, 5, 7
# A gateway serves a few hundred devices; a flood of fake MACs must not grow memory.
MAX_LEASES: Final = 4096
MAX_PENDING: Final = 1024
# Without a lease time, a lease is kept this long (dnsmasq's default is one hour).
DEFAULT_LEASE_S: Final = 3600.0

_VENDOR_RULES: Final[tuple[tuple[Category, re.Pattern[str]], ...]] = (
    ("phone", re.compile(r"android|iphone|ios")),
    ("computer", re.compile(r"msft|windows|macos|mac os|darwin|dhcpcd|ubuntu|linux")),
)


def vendor_category(vendor_class: str) -> Category | None:
    """A coarse category from a DHCP vendor class (``android-dhcp-13``: phone); None if empty."""
    text = vendor_class.strip().lower()
    if not text:
        return None
    for cat, rule in _VENDOR_RULES:
        if rule.search(text):
            return cat
    return "other"


class DhcpLeaseTracker:
    """DHCP messages in, ``{mac: Lease}`` out, like the lease file (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        # Category a client announced in its DISCOVER/REQUEST, until the server's ACK.
        self._announced: dict[str, Category | None] = {}
        self.counters: dict[str, int] = {"acks": 0, "releases": 0, "ignored": 0}

    def message(
        self,
        *,
        mtype: int,
        mac: str,
        ip: str,
        now: float,
        lease_s: float | None = None,
        hostname: str = "",
        vendor_class: str = "",
    ) -> None:
        """Account for one DHCP message (``ip``: ``yiaddr`` of an ACK, ``ciaddr`` else)."""
        mac = mac.lower()
        if not MAC_RE.match(mac):
            self.counters["ignored"] += 1
            return
        cat = category(hostname) if hostname else None
        cat = cat or vendor_category(vendor_class)
        with self._lock:
            if mtype in (DISCOVER, REQUEST):
                if cat is not None or mac not in self._announced:
                    self._announced[mac] = cat
                    while len(self._announced) > MAX_PENDING:
                        self._announced.pop(next(iter(self._announced)))
            elif mtype == ACK and ip and ip != "0.0.0.0":
                self.counters["acks"] += 1
                known = self._leases.get(mac)
                cat = cat or self._announced.get(mac) or (known.category if known else None)
                expires = now + (lease_s if lease_s else DEFAULT_LEASE_S)
                self._leases[mac] = Lease(mac=mac, ip=ip[:45], expires=expires, category=cat)
                while len(self._leases) > MAX_LEASES:
                    self._leases.pop(next(iter(self._leases)))
            elif mtype == RELEASE:
                self.counters["releases"] += 1
                self._leases.pop(mac, None)
                self._announced.pop(mac, None)
            else:
                self.counters["ignored"] += 1

    def leases(self, now: float) -> dict[str, Lease]:
        """The current leases (expired ones dropped)."""
        with self._lock:
            for mac in [m for m, lease in self._leases.items() if lease.expires < now]:
                del self._leases[mac]
            return dict(self._leases)


class SnifferUnavailable(Exception):
    """The sniffer cannot run here (scapy missing, interface absent, no permission)."""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value) if value is not None else ""


class DhcpSniffer:
    """scapy's ``AsyncSniffer`` on ``interface`` feeding a :class:`DhcpLeaseTracker`."""

    def __init__(self, interface: str, clock: Callable[[], float] = time.time) -> None:
        try:
            from scapy.layers.dhcp import BOOTP, DHCP
            from scapy.sendrecv import AsyncSniffer
        except ImportError as exc:
            raise SnifferUnavailable(
                "dhcp_sniff_interface is set but scapy is not installed "
                "(pip install 'borne[sniffer]', or the system's python3-scapy)"
            ) from exc
        self.interface = interface
        self.tracker = DhcpLeaseTracker()
        self._clock = clock
        self._bootp, self._dhcp = BOOTP, DHCP
        self._sniffer = AsyncSniffer(
            iface=interface,
            store=False,
            lfilter=lambda p: p.haslayer(DHCP),
            prn=self._packet,
        )

    def start(self) -> None:
        """Start listening (a thread of scapy's).

        Raises:
            SnifferUnavailable: the interface does not exist or capture is not permitted.
        """
        try:
            self._sniffer.start()
            # scapy opens the socket in its thread: wait for it, and report its failure.
            deadline = time.monotonic() + 5.0
            while not getattr(self._sniffer, "running", False) and time.monotonic() < deadline:
                time.sleep(0.02)
            if getattr(self._sniffer, "exception", None) is not None:
                raise SnifferUnavailable(
                    f"DHCP sniffer on {self.interface}: {self._sniffer.exception}"
                )
        except (OSError, RuntimeError) as exc:
            raise SnifferUnavailable(f"DHCP sniffer on {self.interface}: {exc}") from exc
        logger.info("DHCP sniffer listening on %s", self.interface)

    def stop(self) -> None:
        """Stop listening."""
        if getattr(self._sniffer, "running", False):
            try:
                self._sniffer.stop()
            except (OSError, RuntimeError, ValueError) as exc:
                logger.info("DHCP sniffer stop: %s", exc)

    def leases(self) -> dict[str, Lease]:
        """The current leases, as :func:`agents._dhcp.read_leases` returns them."""
        return self.tracker.leases(self._clock())

    def _packet(self, pkt: Any) -> None:
        """One captured DHCP packet (scapy's thread): reduce it to plain values at once."""
        try:
            bootp = pkt[self._bootp]
            opts: dict[str, Any] = {}
            for opt in pkt[self._dhcp].options:
                if isinstance(opt, tuple) and len(opt) >= 2:
                    opts[str(opt[0])] = opt[1]
            mtype = int(opts.get("message-type", 0))
            mac = ":".join(f"{b:02x}" for b in bytes(bootp.chaddr)[:6])
            ip = str(bootp.yiaddr) if mtype == ACK else str(bootp.ciaddr)
            lease = opts.get("lease_time")
            self.tracker.message(
                mtype=mtype,
                mac=mac,
                ip=ip,
                now=self._clock(),
                lease_s=float(lease) if isinstance(lease, int) else None,
                hostname=_text(opts.get("hostname")),
                vendor_class=_text(opts.get("vendor_class_id")),
            )
        except (IndexError, AttributeError, TypeError, ValueError) as exc:
            self.tracker.counters["ignored"] += 1
            logger.debug("DHCP packet not understood: %s", type(exc).__name__)
