"""Pseudonymisation at ingestion: a keyed hash of the MAC under a random daily key.

Each local day gets a fresh 256-bit key from ``secrets``, held in memory only (never
written, never logged, never derived from anything: a key derived from a fixed secret
and the date could regenerate past days, legal_privacy.md §4.4). The key is zeroised
when its day is aggregated, so a pseudonym of one day can never be linked to another
day. A controller restarted mid-day starts a new key and logs it. The opt-out list is a
set of MAC hashes under a separate, long-lived opt-out key (a daily key could not
recognise a device from one day to the next); it is checked before any daily hashing.
This module must not store a MAC or a pseudonym anywhere but in memory.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Iterable

__all__ = [
    "DailyKeys",
    "OptOut",
    "is_randomised",
    "normalise_mac",
]

logger = logging.getLogger(__name__)

_MAC_RE = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_CANONICAL_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def normalise_mac(mac: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` from any usual spelling (``AA-BB-…``, ``aabb…``).

    Raises:
        ValueError: not a 48-bit MAC address.
    """
    if _CANONICAL_RE.fullmatch(mac):
        return mac  # the usual case: already as the sessions table stores it
    m = mac.strip().lower()
    if not _MAC_RE.fullmatch(m):
        raise ValueError("not a MAC address")
    digits = m.replace(":", "").replace("-", "")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_randomised(mac: str) -> bool:
    """True for a locally administered address (bit 1 of the first octet): phones draw
    such random MACs per network, so one of them may be one person or several."""
    return bool(int(mac[:2], 16) & 0x02)


class DailyKeys:
    """One random HMAC key per local day, in memory only, destroyed with the day."""

    def __init__(self) -> None:
        self._keys: dict[str, bytearray] = {}
        self.created = 0
        self.destroyed = 0

    def has(self, day: str) -> bool:
        """Whether ``day``'s key exists now."""
        return day in self._keys

    def pseudonym(self, day: str, mac: str) -> bytes:
        """HMAC-SHA256 of the normalised MAC under ``day``'s key (created on first use)."""
        key = self._keys.get(day)
        if key is None:
            key = bytearray(secrets.token_bytes(32))
            self._keys[day] = key
            self.created += 1
            logger.info("statistics: new random pseudonymisation key for %s (memory only)", day)
        # One-shot C HMAC straight from the bytearray: no immutable copy of the key.
        return hmac.digest(key, mac.encode("ascii"), "sha256")

    def destroy(self, day: str) -> None:
        """Zeroise and forget ``day``'s key: its pseudonyms can no longer be recomputed."""
        key = self._keys.pop(day, None)
        if key is not None:
            for i in range(len(key)):
                key[i] = 0
            self.destroyed += 1
            logger.info("statistics: pseudonymisation key of %s destroyed", day)

    def days(self) -> list[str]:
        """Days whose key is alive."""
        return sorted(self._keys)


class OptOut:
    """Devices whose user asked not to be counted, as keyed hashes of their MACs."""

    def __init__(self, key: bytes, hashes: Iterable[str] = ()) -> None:
        self._key = key
        self._hashes: set[str] = set(hashes)

    def hash(self, mac: str) -> str:
        """The opt-out hash of a MAC (hex), as stored in the ``stats_optout`` table."""
        msg = b"borne/stats-optout/" + normalise_mac(mac).encode()
        return hmac.digest(self._key, msg, "sha256").hex()

    def replace(self, hashes: Iterable[str]) -> None:
        """Use this set of hashes from now on."""
        self._hashes = set(hashes)

    def add(self, mac: str) -> str:
        """Opt a MAC out; returns its hash."""
        h = self.hash(mac)
        self._hashes.add(h)
        return h

    def __contains__(self, mac: object) -> bool:
        # An empty list (the usual case) needs no hashing at all.
        return bool(self._hashes) and isinstance(mac, str) and self.hash(mac) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)
