"""Who gets an Access-Accept: one-time credentials (PAP) and known devices (MAC auth).

One-time credentials are what the captive portal hands to a UAM gateway after a login
(CoovaChilli-style): accepted exactly once, before their expiry. A device that logged in
is remembered, as a keyed hash of its MAC only, for the territorial continuity period;
a NAS's MAC-authentication request for it is then accepted directly. Decisions that
consume a credential are committed before the Access-Accept leaves.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.config import Settings
from controller.storage import Database
from controller.storage.schema import radius_credentials, radius_known_devices
from radius._core import AccessLimits, AccessRequestReceived

__all__ = ["AccessPolicy", "Decision"]


@dataclass(frozen=True)
class Decision:
    """Accept (with limits) or reject, and why (a counter name)."""

    accept: bool
    reason: str
    limits: AccessLimits = field(default_factory=AccessLimits)


class AccessPolicy:
    """Decides Access-Requests from the database."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._key = settings.radius.device_key.get_secret_value().encode()

    def device_hash(self, mac: str) -> str:
        """The keyed hash under which a device is remembered (never the MAC itself)."""
        return hmac.new(self._key, b"borne/radius-device/" + mac.encode(), "sha256").hexdigest()

    def limits(self, session_minutes: int | None = None) -> AccessLimits:
        """The reply attributes given at login, from the settings."""
        s, r = self._settings.sessions, self._settings.radius
        return AccessLimits(
            session_timeout_s=60 * (session_minutes or s.session_minutes),
            idle_timeout_s=r.idle_timeout_s,
            interim_interval_s=s.acct_interval_s,
            bandwidth_up_bps=s.up_kbps * 1000,
            bandwidth_down_bps=s.down_kbps * 1000,
            max_total_octets=r.max_total_mb * 1_000_000,
        )

    async def add_credential(
        self, username: str, password: str, expires_at: float, session_minutes: int | None = None
    ) -> None:
        """Issue a one-time credential (the portal's UAM flow calls this)."""
        digest = hashlib.sha256(password.encode()).hexdigest()
        async with self._db.begin() as conn:
            await conn.execute(
                radius_credentials.delete().where(radius_credentials.c.username == username)
            )
            await conn.execute(
                radius_credentials.insert().values(
                    username=username,
                    password_sha256=digest,
                    session_minutes=session_minutes,
                    expires_at=expires_at,
                )
            )

    async def remember_device(self, mac: str, now: float) -> None:
        """Recognise ``mac`` for MAC authentication until the continuity period ends."""
        until = now + 86400 * self._settings.radius.device_validity_days
        mod = postgresql if self._db.dialect == "postgresql" else sqlite
        stmt = mod.insert(radius_known_devices).values(
            mac_hash=self.device_hash(mac), expires_at=until
        )
        async with self._db.begin() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["mac_hash"], set_={"expires_at": until})
            )

    async def decide(self, req: AccessRequestReceived, now: float) -> Decision:
        """Accept or reject one Access-Request."""
        if req.mac_auth and req.mac is not None:
            async with self._db.connect() as conn:
                known = (
                    await conn.execute(
                        sa.select(radius_known_devices.c.expires_at).where(
                            radius_known_devices.c.mac_hash == self.device_hash(req.mac),
                            radius_known_devices.c.expires_at > now,
                        )
                    )
                ).first()
            if known is None:
                return Decision(False, "unknown_device")
            return Decision(True, "mac_auth", self.limits())
        if not req.user_name or req.password is None:
            return Decision(False, "no_credentials")
        digest = hashlib.sha256(req.password).hexdigest()
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(radius_credentials).where(
                        radius_credentials.c.username == req.user_name
                    )
                )
            ).first()
            if row is None or not hmac.compare_digest(row.password_sha256, digest):
                return Decision(False, "bad_credentials")
            if row.expires_at <= now:
                return Decision(False, "expired_credentials")
            # Exactly once, even with several controllers: the update wins only once.
            used = await conn.execute(
                radius_credentials.update()
                .where(
                    radius_credentials.c.username == req.user_name,
                    radius_credentials.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
            if used.rowcount != 1:
                return Decision(False, "used_credentials")
        if req.mac is not None:
            await self.remember_device(req.mac, now)
        return Decision(True, "pap", self.limits(row.session_minutes))
