"""Territorial continuity: devices remembered, by keyed hash only, after accepting the terms.

A device that accepted the legal texts in force at one hotspot (through the portal, in
front of an openNDS agent or of a UAM gateway) is remembered for ``[portal]
continuity_hours`` from that acceptance. Meanwhile the portal lets it in at any other
hotspot without a page, and a RADIUS gateway's MAC-authentication request for it is
accepted, as long as the texts in force there are the ones it accepted: a new version
(or a commune with texts of its own) asks again.

The table ``radius_known_devices`` holds an HMAC of the MAC under ``[radius]
device_key``, the texts accepted (scope and version), the time of acceptance and the end
of the period; never the MAC itself. ``holds`` is the rule, without IO.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.config import PortalSettings
from controller.storage import Database
from controller.storage.schema import portal_legal_texts, radius_known_devices

__all__ = [
    "BUILTIN_SCOPE",
    "DEFAULT_SCOPE",
    "KnownDevice",
    "KnownDevices",
    "Terms",
    "continuity_on",
    "holds",
]

# The scope of the legal texts: a commune's INSEE code, the default of communes without
# their own, or the portal's built-in summary (``[portal] terms_version``).
DEFAULT_SCOPE = "*"
BUILTIN_SCOPE = ""
_LABEL = b"borne/radius-device/"


@dataclass(frozen=True)
class Terms:
    """Which legal texts: where they were published (scope) and their version."""

    scope: str
    version: str


@dataclass(frozen=True)
class KnownDevice:
    """A remembered device: the texts it accepted, when, and until when it is known."""

    terms: Terms | None
    accepted_at: float | None
    expires_at: float


def continuity_on(portal: PortalSettings, insee: str) -> bool:
    """Whether continuity applies at commune ``insee``'s hotspots (``[portal]
    continuity_hours`` > 0, and not turned off by ``[portal.communes."<insee>"]``)."""
    return portal.continuity_at(insee) > 0


def holds(device: KnownDevice | None, in_force: Terms, now: float) -> bool:
    """Whether continuity lets ``device`` in where ``in_force`` are the texts in force.

    A record without terms (remembered before terms were recorded) does not count: the
    device is asked once more, which records them.
    """
    return (
        device is not None
        and device.expires_at > now
        and device.terms is not None
        and device.terms == in_force
    )


class KnownDevices:
    """The continuity store and the legal texts in force, in the state database."""

    def __init__(self, db: Database, key: str, builtin_version: str) -> None:
        self._db = db
        self._key = key.encode()
        self._builtin = builtin_version

    def device_hash(self, mac: str) -> str:
        """The keyed hash under which a device is remembered (never the MAC itself)."""
        return hmac.new(self._key, _LABEL + mac.lower().encode(), hashlib.sha256).hexdigest()

    async def terms_in_force(self, insee: str) -> Terms:
        """The texts shown at a commune's hotspots: its own latest, else the default's,
        else the built-in summary."""
        query = (
            sa.select(portal_legal_texts.c.insee, portal_legal_texts.c.version)
            .where(portal_legal_texts.c.insee.in_([insee, DEFAULT_SCOPE]))
            .order_by(
                (portal_legal_texts.c.insee == DEFAULT_SCOPE).asc(),
                portal_legal_texts.c.published_at.desc(),
            )
            .limit(1)
        )
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return Terms(BUILTIN_SCOPE, self._builtin)
        return Terms(str(row.insee), str(row.version))

    async def remember(self, mac: str, terms: Terms, *, now: float, hours: int) -> None:
        """Remember ``mac`` for ``hours`` from ``now``, with the texts it accepted."""
        if hours <= 0:
            return
        values = {
            "expires_at": now + 3600 * hours,
            "terms_scope": terms.scope,
            "terms_version": terms.version[:32],
            "accepted_at": now,
        }
        mod = postgresql if self._db.dialect == "postgresql" else sqlite
        stmt = mod.insert(radius_known_devices).values(mac_hash=self.device_hash(mac), **values)
        async with self._db.begin() as conn:
            await conn.execute(stmt.on_conflict_do_update(index_elements=["mac_hash"], set_=values))

    async def find(self, mac: str) -> KnownDevice | None:
        """The record of ``mac``, expired or not; None if it was never remembered."""
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(radius_known_devices).where(
                        radius_known_devices.c.mac_hash == self.device_hash(mac)
                    )
                )
            ).first()
        if row is None:
            return None
        terms = (
            Terms(row.terms_scope, row.terms_version)
            if row.terms_scope is not None and row.terms_version is not None
            else None
        )
        return KnownDevice(terms, row.accepted_at, row.expires_at)

    async def returning(self, mac: str, insee: str, now: float) -> bool:
        """Whether continuity lets ``mac`` in at a hotspot of commune ``insee`` now."""
        device = await self.find(mac)
        if device is None or device.expires_at <= now:
            return False
        return holds(device, await self.terms_in_force(insee), now)

    async def forget(self, mac: str) -> bool:
        """Forget a device (the visitor asks to be asked again); True if it was known."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                radius_known_devices.delete().where(
                    radius_known_devices.c.mac_hash == self.device_hash(mac)
                )
            )
        return bool(result.rowcount)

    async def prune(self, now: float) -> int:
        """Delete the records whose period is over; return how many."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                radius_known_devices.delete().where(radius_known_devices.c.expires_at <= now)
            )
        return int(result.rowcount)
