"""DHCP view: the dnsmasq lease file, and coarse device categories from host names.

dnsmasq writes one lease per line: ``<expiry> <mac> <ip> <hostname|*> <client-id|*>``
(``/tmp/dhcp.leases`` on OpenWrt and for openNDS). The agent reads it to know which
devices hold an address and what kind of device each probably is. Privacy: a host name
often carries a person's name ("iPhone-de-Marie"), so it never leaves this module: only
a coarse category does (``phone``, ``tablet``, ``computer``, ``other``). The lease file
holds no DHCP vendor class; a sniffer (optional scapy) would be needed for that, and is
not part of this version. Standard library only; parsing is pure, reading is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from agents.contract import MAC_RE

__all__ = ["CATEGORIES", "Lease", "category", "parse_leases", "read_leases"]

Category = Literal["phone", "tablet", "computer", "other"]
CATEGORIES: Final[tuple[Category, ...]] = ("phone", "tablet", "computer", "other")
# A gateway serves a few hundred devices; a larger file is damaged or hostile.
MAX_LEASE_BYTES: Final = 1024 * 1024

_RULES: Final[tuple[tuple[Category, re.Pattern[str]], ...]] = (
    ("tablet", re.compile(r"ipad|tablet|\btab\b|galaxy-?tab|kindle|fire-?hd|mediapad")),
    (
        "phone",
        re.compile(
            r"iphone|android|galaxy|pixel|redmi|xiaomi|huawei|honor|oneplus|oppo|vivo|"
            r"motorola|moto|nokia|realme|phone|\bsm-[a-z]\d"
        ),
    ),
    (
        "computer",
        re.compile(
            r"macbook|imac|mac-?mini|laptop|desktop|\bpc\b|windows|win-|thinkpad|"
            r"chromebook|ubuntu|debian|fedora|linux|dell|lenovo|\bhp-"
        ),
    ),
)


@dataclass(frozen=True)
class Lease:
    """One DHCP lease: the host name is reduced to a category at parse time."""

    mac: str
    ip: str
    expires: float
    category: Category | None


def category(hostname: str) -> Category | None:
    """The coarse category of a DHCP host name; None when the device sent none."""
    name = hostname.strip().lower().replace("_", "-")
    if not name or name == "*":
        return None
    for cat, rule in _RULES:
        if rule.search(name):
            return cat
    return "other"


def parse_leases(text: str) -> dict[str, Lease]:
    """Leases by MAC (malformed lines are ignored: the file is rewritten in place)."""
    out: dict[str, Lease] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mac = parts[1].lower()
        if not MAC_RE.match(mac):
            continue
        try:
            expires = float(parts[0])
        except ValueError:
            continue
        out[mac] = Lease(mac=mac, ip=parts[2][:45], expires=expires, category=category(parts[3]))
    return out


def read_leases(path: str) -> dict[str, Lease] | None:
    """The lease file's leases, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_leases(fh.read(MAX_LEASE_BYTES))
    except OSError:
        return None
