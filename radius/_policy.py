"""Who gets an Access-Accept: one-time credentials (PAP) and known devices (MAC auth).

One-time credentials are what the captive portal hands to a UAM gateway after a login
(CoovaChilli-style): bound to the NAS and the device (keyed hash of its MAC) the login
came through, accepted exactly once, before their expiry, with the limits of that login
as reply attributes. A device that accepted the terms is remembered by the portal for
the territorial continuity period (``radius._devices``); a NAS's MAC-authentication
request for it is accepted while the texts in force at that NAS's commune are the ones
it accepted. Decisions that consume a credential are committed before the Access-Accept
leaves.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import sqlalchemy as sa

from controller.config import Settings
from controller.storage import Database
from controller.storage.schema import radius_credentials
from radius._core import AccessLimits, AccessRequestReceived
from radius._devices import KnownDevices, continuity_on

__all__ = [
    "AccessPolicy",
    "CommuneLimits",
    "Decision",
    "commune_limits",
    "limits_at",
    "prune_credentials",
]


@dataclass(frozen=True)
class CommuneLimits:
    """What a login gets at a commune's hotspots unless it brings its own (a voucher).

    Attributes:
        minutes, up_kbps, down_kbps: session length and rates (0: unlimited rate).
        idle_timeout_s: RADIUS Idle-Timeout (0: none).
        quota_mb: the commune's data quota in MB (10^6 bytes), None when it sets none:
            then RADIUS replies carry ``[radius] max_total_mb`` and openNDS logins the
            gateway's default (``[ap_config]``).
        radius_quota_mb: the quota of a RADIUS reply (0: unlimited).
    """

    minutes: int
    up_kbps: int
    down_kbps: int
    idle_timeout_s: int
    quota_mb: int | None
    radius_quota_mb: int

    @property
    def quota_kb(self) -> int:
        """The quota per direction in openNDS kB (1024 bytes); 0: the gateway's default."""
        return (self.quota_mb or 0) * 1_000_000 // 1024


def limits_at(settings: Settings, insee: str | None) -> CommuneLimits:
    """The limits at commune ``insee``'s hotspots: ``[portal.communes."<insee>"]`` where
    set, else ``[sessions]`` (length, rates) and ``[radius]`` (idle timeout, quota)."""
    minutes, up, down = commune_limits(settings, insee)
    r = settings.radius
    own = settings.portal.communes.get(insee) if insee is not None else None
    idle = own.idle_timeout_s if own is not None else None
    quota = own.quota_mb if own is not None else None
    return CommuneLimits(
        minutes=minutes,
        up_kbps=up,
        down_kbps=down,
        idle_timeout_s=r.idle_timeout_s if idle is None else idle,
        quota_mb=quota,
        radius_quota_mb=r.max_total_mb if quota is None else quota,
    )


def commune_limits(settings: Settings, insee: str | None) -> tuple[int, int, int]:
    """``(session minutes, up kbit/s, down kbit/s)`` at commune ``insee``'s hotspots:
    ``[portal.communes."<insee>"]`` where set, else ``[sessions]``."""
    s = settings.sessions
    own = settings.portal.communes.get(insee) if insee is not None else None
    if own is None:
        return s.session_minutes, s.up_kbps, s.down_kbps
    return (
        own.session_minutes or s.session_minutes,
        s.up_kbps if own.up_kbps is None else own.up_kbps,
        s.down_kbps if own.down_kbps is None else own.down_kbps,
    )


async def prune_credentials(db: Database, now: float) -> int:
    """Delete the one-time credentials that expired (used or not); return how many."""
    async with db.begin() as conn:
        result = await conn.execute(
            radius_credentials.delete().where(radius_credentials.c.expires_at <= now)
        )
    return int(result.rowcount)


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
        self.devices = KnownDevices(
            db,
            settings.radius.device_key.get_secret_value(),
            settings.portal.terms_version,
        )

    def device_hash(self, mac: str) -> str:
        """The keyed hash under which a device is remembered (never the MAC itself)."""
        return self.devices.device_hash(mac)

    def limits(
        self,
        session_minutes: int | None = None,
        *,
        up_kbps: int | None = None,
        down_kbps: int | None = None,
        quota_mb: int | None = None,
        insee: str | None = None,
    ) -> AccessLimits:
        """The reply attributes given at login: the login's own limits (a voucher's),
        else the commune's (``insee``), else the settings'."""
        at = limits_at(self._settings, insee)
        return AccessLimits(
            session_timeout_s=60 * (session_minutes or at.minutes),
            idle_timeout_s=at.idle_timeout_s,
            interim_interval_s=self._settings.sessions.acct_interval_s,
            bandwidth_up_bps=(at.up_kbps if up_kbps is None else up_kbps) * 1000,
            bandwidth_down_bps=(at.down_kbps if down_kbps is None else down_kbps) * 1000,
            max_total_octets=(at.radius_quota_mb if quota_mb is None else quota_mb) * 1_000_000,
        )

    async def add_credential(
        self,
        username: str,
        password: str,
        expires_at: float,
        session_minutes: int | None = None,
        *,
        nas_id: str | None = None,
        mac: str | None = None,
        up_kbps: int | None = None,
        down_kbps: int | None = None,
        quota_mb: int | None = None,
    ) -> None:
        """Issue a one-time credential (the portal's UAM flow calls this).

        Args:
            nas_id: the only NAS that may use it (None: any registered NAS).
            mac: the only device (Calling-Station-Id) that may use it (None: any).
            up_kbps, down_kbps, quota_mb: the login's limits (None: the settings').
        """
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
                    nas_id=nas_id,
                    mac_hash=self.device_hash(mac) if mac is not None else None,
                    up_kbps=up_kbps,
                    down_kbps=down_kbps,
                    quota_mb=quota_mb,
                )
            )

    async def prune_credentials(self, now: float) -> int:
        """Delete the credentials that expired (used or not); return how many."""
        return await prune_credentials(self._db, now)

    async def decide(self, req: AccessRequestReceived, now: float) -> Decision:
        """Accept or reject one Access-Request."""
        if req.mac_auth and req.mac is not None:
            if not continuity_on(self._settings.portal, req.nas.insee):
                return Decision(False, "continuity_off")
            if not await self.devices.returning(req.mac, req.nas.insee, now):
                return Decision(False, "unknown_device")
            return Decision(True, "mac_auth", self.limits(insee=req.nas.insee))
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
            if row.nas_id is not None and row.nas_id != req.nas.nas_id:
                return Decision(False, "wrong_nas")
            if row.mac_hash is not None and (
                req.mac is None or not hmac.compare_digest(row.mac_hash, self.device_hash(req.mac))
            ):
                return Decision(False, "wrong_device")
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
        limits = self.limits(
            row.session_minutes,
            up_kbps=row.up_kbps,
            down_kbps=row.down_kbps,
            quota_mb=row.quota_mb,
            insee=req.nas.insee,
        )
        return Decision(True, "pap", limits)
