"""The controller's side of the captive portal: logins, logouts and a client's state.

The portal hands over a ``LoginRequest``; this redeems its voucher if it has one, sends
the signed ``authorize`` command (with the voucher's limits) to the access point's agent
over MQTT and waits for the agent's ack, so that the page says "connected" only once the
gateway has really let the client in; then it stores the proof of acceptance of the
commune's legal texts. A logout sends ``deauthorize`` the same way. ``client_status``
reads the session store (the sessions the agents report, with the limits of the command
that opened them) for the status page, the OS probes and the RFC 8908 API.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from agents.contract import AuthorizeArgs, DeauthorizeArgs
from captive_portal._codestore import DatabaseCodes
from captive_portal._uam import UamGateway, UamGrant
from captive_portal.identities import IdentityStore
from captive_portal.models import (
    ClientStatus,
    CommunePolicy,
    LoginRequest,
    LoginResult,
    LogoutResult,
)
from captive_portal.store import PortalStore
from controller.config import Settings
from controller.service import Controller, mac_tag
from controller.stats._service import record_optout
from controller.storage.schema import (
    access_points,
    commands,
    communes,
    portal_pending_extensions,
    sessions,
)
from radius._devices import continuity_on, holds
from radius._policy import AccessPolicy, limits_at
from radius._store import NasRegistry

__all__ = ["ControllerPortalBackend", "commune_authorize", "remaining"]

logger = logging.getLogger(__name__)

# How long the visitor's page waits for the access point; a phone's captive-portal
# window gives up after about 30 s, and a healthy AP answers in well under a second.
ACK_WAIT_S = 10.0
# How long an extension waits for the device to come back after the re-authorisation's
# cut (its next web request, or the OS's next connectivity probe).
EXTEND_WAIT_S = 600.0


def remaining(
    session: Any, args: dict[str, Any] | None, default_minutes: int, now: float
) -> tuple[int | None, int | None]:
    """Seconds and bytes left in a session, from the limits of the command that opened it.

    Args:
        session: a ``sessions`` row (``started_at``, ``up_bytes``, ``down_bytes``).
        args: the ``authorize`` arguments (``minutes``, ``up_quota_kb``,
            ``down_quota_kb``; 0 means unlimited), None if the session has no command.
        default_minutes: the session length when the command is unknown.
        now: the current Unix time.

    Returns:
        ``(seconds, bytes)``; None where there is no limit. Quotas are per direction at
        the gateway; the bytes left are those of the direction closest to its limit
        (the client is cut off when either is reached).
    """
    minutes = int(args.get("minutes", 0)) if args else default_minutes
    seconds = None if minutes <= 0 else max(0, int(session.started_at + minutes * 60 - now))
    left: list[int] = []
    if args:
        for quota_key, used in (
            ("up_quota_kb", session.up_bytes),
            ("down_quota_kb", session.down_bytes),
        ):
            quota = int(args.get(quota_key, 0)) * 1024
            if quota > 0:
                left.append(max(0, quota - int(used)))
    return seconds, (min(left) if left else None)


def commune_authorize(settings: Settings, insee: str, mac: str) -> AuthorizeArgs:
    """The ``authorize`` arguments of a login at commune ``insee`` without limits of its
    own: the commune's length, rates and data quota (per direction, openNDS kB)."""
    at = limits_at(settings, insee)
    return AuthorizeArgs(
        mac=mac,
        minutes=at.minutes,
        up_kbps=at.up_kbps,
        down_kbps=at.down_kbps,
        up_quota_kb=at.quota_kb,
        down_quota_kb=at.quota_kb,
    )


class ControllerPortalBackend:
    """Authorises portal logins through the agents and reads the clients' state."""

    def __init__(self, controller: Controller, ack_wait_s: float = ACK_WAIT_S) -> None:
        self._c = controller
        self._wait = ack_wait_s
        self.store = PortalStore(
            controller.db, controller.settings.portal.secret_key.get_secret_value()
        )
        # E-mail/SMS codes waiting to be typed (the portal uses this store, which
        # survives a restart; extensions waiting for their device are in the database too).
        self.pending_codes = DatabaseCodes(
            controller.db, controller.settings.portal.secret_key.get_secret_value()
        )
        self.identities = IdentityStore(
            controller.db,
            controller.settings.portal.secret_key.get_secret_value(),
            controller.settings.portal.identity_retention_days,
        )
        # Territorial continuity and UAM gateways (RADIUS side: radius._devices, _policy).
        self.radius = AccessPolicy(controller.db, controller.settings)
        self.devices = self.radius.devices
        self.nas = NasRegistry(controller.db)

    async def _commune(self, ap_id: str) -> tuple[str, str] | None:
        """``(insee, commune name)`` of a registered access point."""
        query = (
            sa.select(access_points.c.insee, communes.c.name)
            .select_from(
                access_points.outerjoin(communes, communes.c.insee == access_points.c.insee)
            )
            .where(access_points.c.ap_id == ap_id)
        )
        async with self._c.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return str(row.insee), str(row.name or row.insee)

    async def policy(self, ap_id: str, client_mac: str | None) -> CommunePolicy | None:
        """The legal texts in force at ``ap_id`` and the device's last acceptance there."""
        found = await self._commune(ap_id)
        if found is None:
            return None
        insee, name = found
        legal = await self.store.current_legal(insee)
        version = legal.version if legal else self._c.settings.portal.terms_version
        consent = await self.store.last_consent(mac=client_mac, insee=insee) if client_mac else None
        return CommunePolicy(
            insee=insee,
            commune=name,
            terms_version=version,
            legal=legal.content if legal else None,
            accepted_version=consent.version if consent else None,
            accepted_at=consent.accepted_at if consent else None,
        )

    async def authorize(self, request: LoginRequest) -> LoginResult:
        """Redeem the voucher if any, send ``authorize`` to the AP and wait for its ack,
        then store the proof of acceptance; failures come back as ``ok=False``.

        A ``returning`` login (territorial continuity) is checked here again and stores
        no new proof: the device accepted these texts earlier.
        """
        found = await self._commune(request.ap_id)
        if found is None or self._c.registry.key_for(request.ap_id) is None:
            self._c.counters["portal_unknown_ap"] += 1
            return LoginResult(ok=False, session_minutes=0, error="unknown access point")
        insee = found[0]
        now = self._c.clock()
        granted = await self._grant(request, insee, now)
        if isinstance(granted, LoginResult):
            return granted
        args = granted
        await self._stats_optout(request, now)
        cmd_id = await self._c.send_command(request.ap_id, args, purpose=request.method)
        ack = await self._c.wait_ack(cmd_id, self._wait)
        if ack is None:
            self._c.forget_ack(cmd_id)
            logger.warning("no ack from %s for %s", request.ap_id, mac_tag(request.client_mac))
            return LoginResult(ok=False, session_minutes=0, error="access point did not answer")
        if not ack.ok:
            return LoginResult(ok=False, session_minutes=0, error=ack.error or "refused")
        self._c.counters["portal_logins"] += 1
        await self._accepted(request, insee, now)
        return LoginResult(ok=True, session_minutes=args.minutes)

    async def _stats_optout(self, request: LoginRequest, now: float) -> None:
        """Record the visitor's statistics opt-out before the session exists, so that the
        statistics consumer drops the device before any hashing (docs/STATISTICS.md)."""
        if request.stats_optout:
            await record_optout(self._c.db, self._c.settings.stats, request.client_mac, now)
            self._c.counters["portal_stats_optouts"] += 1

    async def _grant(
        self, request: LoginRequest, insee: str, now: float
    ) -> AuthorizeArgs | LoginResult:
        """The limits a login gets (a voucher's, or the settings'), or why it gets none."""
        args = commune_authorize(self._c.settings, insee, request.client_mac)
        if request.method == "extend":
            return await self._take_extension(request.ap_id, request.client_mac, now)
        if request.method == "returning":
            if not continuity_on(
                self._c.settings.portal, insee
            ) or not await self.devices.returning(request.client_mac, insee, now):
                return LoginResult(ok=False, session_minutes=0, error="not a returning device")
            self._c.counters["portal_returning"] += 1
        elif request.method == "voucher":
            grant = await self.store.redeem(
                request.code or "",
                ap_id=request.ap_id,
                insee=insee,
                mac=request.client_mac,
                now=now,
            )
            if grant is None:
                self._c.counters["portal_bad_codes"] += 1
                return LoginResult(ok=False, session_minutes=0, error="bad code", bad_code=True)
            # openNDS counts quotas in kB (1024 bytes) per direction; a voucher's data
            # quota (MB, 10^6 bytes) applies to each direction.
            quota_kb = grant.quota_mb * 1_000_000 // 1024
            args = AuthorizeArgs(
                mac=request.client_mac,
                minutes=min(grant.minutes, 7 * 24 * 60),
                up_kbps=grant.up_kbps,
                down_kbps=grant.down_kbps,
                up_quota_kb=quota_kb,
                down_quota_kb=quota_kb,
            )
        return args

    async def _accepted(self, request: LoginRequest, insee: str, now: float) -> None:
        """After a login: the proof of acceptance, and the device remembered for the
        territorial continuity with the texts it accepted."""
        if request.method in ("returning", "extend"):
            return
        await self.store.record_consent(
            mac=request.client_mac,
            insee=insee,
            version=request.terms_version,
            ap_id=request.ap_id,
            method=request.method,
            language=request.language,
            now=now,
        )
        if request.method in ("email", "sms") and request.identity:
            # Identity data, only for the legal obligation (captive_portal.identities).
            await self.identities.record(
                method=request.method,
                identity=request.identity,
                mac=request.client_mac,
                insee=insee,
                ap_id=request.ap_id,
                now=now,
            )
        terms = await self.devices.terms_in_force(insee)
        if terms.version == request.terms_version:
            await self.devices.remember(
                request.client_mac,
                terms,
                now=now,
                hours=self._c.settings.portal.continuity_hours,
            )

    async def returning(self, ap_id: str, client_mac: str) -> bool:
        """Whether territorial continuity lets this device in at ``ap_id`` now."""
        if self._c.settings.portal.continuity_hours <= 0:
            return False
        # The device first (one primary-key read): most visitors are not returning.
        now = self._c.clock()
        device = await self.devices.find(client_mac)
        if device is None or device.expires_at <= now:
            return False
        found = await self._commune(ap_id)
        if found is None or not continuity_on(self._c.settings.portal, found[0]):
            return False
        return holds(device, await self.devices.terms_in_force(found[0]), now)

    async def uam_gateway(self, nas_id: str) -> UamGateway | None:
        """A registered RADIUS NAS that sends visitors here as a UAM gateway."""
        found = await self.nas.uam_gateway(nas_id)
        return None if found is None else UamGateway(insee=found[0], secret=found[1])

    async def uam_login(self, request: LoginRequest) -> UamGrant:
        """A login at a UAM gateway: the same checks as ``authorize``, then a one-time
        RADIUS credential bound to that NAS and that device, with the login's limits,
        instead of a command to an agent."""
        gateway = await self.nas.uam_gateway(request.ap_id)
        if gateway is None:
            self._c.counters["portal_unknown_ap"] += 1
            return UamGrant(ok=False, error="unknown NAS")
        insee = gateway[0]
        now = self._c.clock()
        granted = await self._grant(request, insee, now)
        if isinstance(granted, LoginResult):
            return UamGrant(ok=False, error=granted.error, bad_code=granted.bad_code)
        await self._stats_optout(request, now)
        quota_kb = granted.up_quota_kb or 0
        username = "uam-" + secrets.token_hex(8)
        password = secrets.token_urlsafe(12)
        await self.radius.add_credential(
            username,
            password,
            now + self._c.settings.portal.uam_credential_s,
            granted.minutes,
            nas_id=request.ap_id,
            mac=request.client_mac,
            up_kbps=granted.up_kbps,
            down_kbps=granted.down_kbps,
            # The voucher's data quota (MB) back from the kB per direction, rounded up.
            quota_mb=-(-quota_kb * 1024 // 1_000_000) if quota_kb else None,
        )
        self._c.counters["portal_uam_credentials"] += 1
        await self._accepted(request, insee, now)
        return UamGrant(
            ok=True, session_minutes=granted.minutes, username=username, password=password
        )

    async def deauthorize(self, ap_id: str, client_mac: str) -> LogoutResult:
        """Send ``deauthorize`` to the AP and wait for its ack; failures give ``ok=False``."""
        if self._c.registry.key_for(ap_id) is None:
            return LogoutResult(ok=False, error="unknown access point")
        cmd_id = await self._c.send_command(
            ap_id, DeauthorizeArgs(mac=client_mac), purpose="logout"
        )
        ack = await self._c.wait_ack(cmd_id, self._wait)
        if ack is None:
            self._c.forget_ack(cmd_id)
            logger.warning("no logout ack from %s for %s", ap_id, mac_tag(client_mac))
            return LogoutResult(ok=False, error="access point did not answer")
        if not ack.ok:
            return LogoutResult(ok=False, error=ack.error or "refused")
        self._c.counters["portal_logouts"] += 1
        return LogoutResult(ok=True)

    async def client_status(self, client_ip: str, ap_id: str | None) -> ClientStatus | None:
        """The open session at ``client_ip`` (on ``ap_id`` if given), with what is left.

        Addresses of different access points may overlap: without ``ap_id``, an address
        with open sessions on several access points is ambiguous and gives None.
        """
        query = (
            sa.select(sessions, commands.c.args.label("cmd_args"))
            .select_from(
                sessions.outerjoin(
                    commands,
                    (commands.c.id == sessions.c.auth_ref) & (commands.c.cmd == "authorize"),
                )
            )
            .where(sessions.c.ip == client_ip, sessions.c.stopped_at.is_(None))
            .order_by(sessions.c.started_at.desc())
            .limit(8)
        )
        if ap_id is not None:
            query = query.where(sessions.c.ap_id == ap_id)
        async with self._c.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows or len({r.ap_id for r in rows}) > 1:
            return None
        row = rows[0]
        try:
            args = json.loads(row.cmd_args) if row.cmd_args else None
        except ValueError:
            args = None
        seconds, left = remaining(
            row, args, self._c.settings.sessions.session_minutes, self._c.clock()
        )
        if seconds == 0 or left == 0:
            return None  # over: the gateway cuts the client off at its next check
        return ClientStatus(
            ap_id=row.ap_id,
            client_mac=row.mac,
            client_ip=row.ip,
            method=row.auth_method,
            started_at=row.started_at,
            seconds_remaining=seconds,
            bytes_remaining=left,
            bytes_used=int(row.up_bytes) + int(row.down_bytes),
        )

    async def extend(self, ap_id: str, client_mac: str) -> LoginResult:
        """Extend the client's open session once by its granted length.

        openNDS refuses ``ndsctl auth`` for a client already authenticated ("Failed to
        authenticate"), so the device is re-authorised: ``deauthorize``, then
        ``authorize`` (purpose ``extend``) with what was left plus the granted length
        and the same rates and quotas. openNDS forgets a client it cuts off: the
        ``authorize`` then waits (``reconnect``) until the device's next request brings
        it back to the portal, which completes it (``authorize`` with method
        ``extend``) within ``EXTEND_WAIT_S``. The new session's method is ``extend``: it
        cannot be extended again.
        """
        row = await self._open_session(ap_id, client_mac)
        if row is None:
            return LoginResult(ok=False, session_minutes=0, error="no open session")
        if row.auth_method == "extend":
            return LoginResult(ok=False, session_minutes=0, error="already extended")
        if self._c.registry.key_for(ap_id) is None:
            return LoginResult(ok=False, session_minutes=0, error="unknown access point")
        try:
            args: dict[str, Any] = json.loads(row.cmd_args) if row.cmd_args else {}
        except ValueError:
            args = {}
        s = self._c.settings.sessions
        granted = int(args.get("minutes", 0)) or s.session_minutes
        now = self._c.clock()
        seconds, _ = remaining(row, args or None, granted, now)
        new_args = AuthorizeArgs(
            mac=client_mac,
            minutes=min((seconds or 0) // 60 + granted, 14 * 24 * 60),
            up_kbps=int(args.get("up_kbps", s.up_kbps)),
            down_kbps=int(args.get("down_kbps", s.down_kbps)),
            up_quota_kb=int(args.get("up_quota_kb", 0)),
            down_quota_kb=int(args.get("down_quota_kb", 0)),
        )
        await self._wait_extension(ap_id, new_args, now + EXTEND_WAIT_S, granted)
        cut = await self.deauthorize(ap_id, client_mac)
        if not cut.ok:
            await self._drop_extension(ap_id, client_mac)
            return LoginResult(ok=False, session_minutes=0, error=cut.error)
        cmd_id = await self._c.send_command(ap_id, new_args, purpose="extend")
        ack = await self._c.wait_ack(cmd_id, self._wait)
        if ack is not None and ack.ok:
            await self._drop_extension(ap_id, client_mac)
            self._c.counters["portal_extends"] += 1
            return LoginResult(ok=True, session_minutes=granted)
        if ack is None:
            self._c.forget_ack(cmd_id)
        # The gateway forgot the device: its next request completes the extension.
        return LoginResult(ok=True, session_minutes=granted, reconnect=True)

    def _extension_key(self, ap_id: str, client_mac: str) -> Any:
        t = portal_pending_extensions.c
        return (t.ap_id == ap_id) & (t.mac_hash == self.pending_codes.device_hash(client_mac))

    async def _wait_extension(
        self, ap_id: str, args: AuthorizeArgs, deadline: float, minutes: int
    ) -> None:
        """Keep an extension waiting for its device (in the database: a restart keeps it)."""
        body = json.dumps({k: v for k, v in asdict(args).items() if k != "mac"})
        async with self._c.db.begin() as conn:
            await conn.execute(
                portal_pending_extensions.delete().where(self._extension_key(ap_id, args.mac))
            )
            await conn.execute(
                portal_pending_extensions.insert().values(
                    ap_id=ap_id,
                    mac_hash=self.pending_codes.device_hash(args.mac),
                    args=body,
                    minutes=minutes,
                    deadline=deadline,
                )
            )

    async def _drop_extension(self, ap_id: str, client_mac: str) -> None:
        async with self._c.db.begin() as conn:
            await conn.execute(
                portal_pending_extensions.delete().where(self._extension_key(ap_id, client_mac))
            )

    async def extension_waiting(self, ap_id: str, client_mac: str) -> bool:
        """Whether an extension of this device at ``ap_id`` waits for it to come back."""
        query = sa.select(portal_pending_extensions.c.deadline).where(
            self._extension_key(ap_id, client_mac)
        )
        async with self._c.db.connect() as conn:
            deadline = (await conn.execute(query)).scalar()
        return deadline is not None and deadline > self._c.clock()

    async def _take_extension(
        self, ap_id: str, client_mac: str, now: float
    ) -> AuthorizeArgs | LoginResult:
        """The arguments of an extension waiting for the device to come back (used once;
        expired ones are deleted on the way)."""
        key = self._extension_key(ap_id, client_mac)
        async with self._c.db.begin() as conn:
            row = (await conn.execute(sa.select(portal_pending_extensions).where(key))).first()
            taken = await conn.execute(portal_pending_extensions.delete().where(key))
            await conn.execute(
                portal_pending_extensions.delete().where(
                    portal_pending_extensions.c.deadline <= now
                )
            )
        if row is None or taken.rowcount != 1 or row.deadline <= now:
            return LoginResult(ok=False, session_minutes=0, error="no extension waiting")
        self._c.counters["portal_extends"] += 1
        return AuthorizeArgs(mac=client_mac, **json.loads(row.args))

    async def _open_session(self, ap_id: str, client_mac: str) -> Any:
        """The open session of ``client_mac`` at ``ap_id`` with its command's arguments."""
        query = (
            sa.select(sessions, commands.c.args.label("cmd_args"))
            .select_from(
                sessions.outerjoin(
                    commands,
                    (commands.c.id == sessions.c.auth_ref) & (commands.c.cmd == "authorize"),
                )
            )
            .where(
                sessions.c.ap_id == ap_id,
                sessions.c.mac == client_mac,
                sessions.c.stopped_at.is_(None),
            )
            .order_by(sessions.c.started_at.desc())
            .limit(1)
        )
        async with self._c.db.connect() as conn:
            return (await conn.execute(query)).first()
