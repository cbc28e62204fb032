"""RADIUS state in the controller's database: NAS registry and accounting records.

Accounting records become sessions through the session ledger (``controller.sessions``),
so that the outbox carries their start/update/stop events to the same later pipelines as
the agents' sessions. Sessions are keyed by (NAS id, Acct-Session-Id) in
``radius_sessions``; every rule is idempotent, so that a NAS that retransmits with a new
Identifier (RFC 2866 §5.2: a changed Acct-Delay-Time changes it) never creates a second
record. This module runs inside the caller's transaction and holds no protocol logic.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from controller.sessions import SessionLedger
from controller.storage import Database
from controller.storage.schema import access_points, nas_clients, radius_sessions, sessions
from radius._core import AcctRecord, AcctStatus, NasClient

__all__ = ["AccountingStore", "NasRegistry", "NasRegistryError"]

# What a session gets when the NAS does not say (RFC 2866 makes both optional).
_NO_MAC = "00:00:00:00:00:00"
_NO_IP = "0.0.0.0"


class NasRegistryError(ValueError):
    """A NAS cannot be registered as given."""


class NasRegistry:
    """Registered NAS clients (identity, secret, source address)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, nas_id: str, address: str, secret: str, *, coa_port: int = 3799) -> None:
        """Register or update a NAS; its id must be a registered access point's.

        Raises:
            NasRegistryError: bad address, short secret, or no access point ``nas_id``.
        """
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise NasRegistryError(f"not an IP address: {address!r}") from exc
        if len(secret) < 16:
            # RFC 2865 §3 asks for at least 16 octets; shorter secrets fall to brute force.
            raise NasRegistryError("the shared secret must be at least 16 characters")
        async with self._db.begin() as conn:
            ap = (
                await conn.execute(
                    sa.select(access_points.c.ap_id).where(access_points.c.ap_id == nas_id)
                )
            ).first()
            if ap is None:
                raise NasRegistryError(f"unknown access point {nas_id!r}: register it first")
            await conn.execute(nas_clients.delete().where(nas_clients.c.nas_id == nas_id))
            await conn.execute(
                nas_clients.insert().values(
                    nas_id=nas_id,
                    address=address,
                    secret=secret,
                    coa_port=coa_port,
                    created_at=time.time(),
                )
            )

    async def rows(self) -> list[sa.Row[Any]]:
        """Every NAS with its commune."""
        async with self._db.connect() as conn:
            return list(
                (
                    await conn.execute(
                        sa.select(nas_clients, access_points.c.insee)
                        .join(access_points, access_points.c.ap_id == nas_clients.c.nas_id)
                        .order_by(nas_clients.c.nas_id)
                    )
                ).all()
            )

    async def clients(self) -> dict[str, list[NasClient]]:
        """NAS clients by source address, as the server core wants them."""
        out: dict[str, list[NasClient]] = {}
        for r in await self.rows():
            nas = NasClient(r.nas_id, r.secret.encode(), r.address, r.insee)
            out.setdefault(str(ipaddress.ip_address(r.address)), []).append(nas)
        return out


class AccountingStore:
    """Applies Accounting-Requests to the sessions, inside the caller's transaction."""

    def __init__(self, ledger: SessionLedger) -> None:
        self.ledger = ledger

    async def apply(self, conn: AsyncConnection, nas: NasClient, rec: AcctRecord) -> str:
        """Apply one record; return what happened (for counters and tests)."""
        if rec.status in (AcctStatus.ACCOUNTING_ON, AcctStatus.ACCOUNTING_OFF):
            # RFC 2866 §5.1: the NAS (re)started or stops: none of its sessions survive.
            n = await self.ledger.close_sessions(
                conn, sessions.c.ap_id == nas.nas_id, rec.event_time, "nas-reboot"
            )
            return f"closed:{n}"
        row = (
            await conn.execute(
                sa.select(sessions)
                .join(radius_sessions, radius_sessions.c.session_id == sessions.c.id)
                .where(
                    radius_sessions.c.nas_id == nas.nas_id,
                    radius_sessions.c.acct_session_id == rec.session_id,
                )
            )
        ).first()
        if row is None:
            if rec.status == AcctStatus.START:
                started = rec.event_time
            else:
                # A lost Start: the session began Acct-Session-Time before this event
                # (as FreeRADIUS's SQL queries do).
                started = rec.event_time - (rec.session_time or 0)
            await self._open(conn, nas, rec, started)
            row = (
                await conn.execute(
                    sa.select(sessions)
                    .join(radius_sessions, radius_sessions.c.session_id == sessions.c.id)
                    .where(
                        radius_sessions.c.nas_id == nas.nas_id,
                        radius_sessions.c.acct_session_id == rec.session_id,
                    )
                )
            ).one()
            outcome = "opened"
        elif rec.status == AcctStatus.START:
            return "duplicate"
        else:
            outcome = "updated"
        if row.stopped_at is not None:
            return "already-stopped"  # idempotent Stop; a late Interim changes nothing
        if rec.status != AcctStatus.START:
            await self.ledger.update_gateway_session(
                conn, row, rec.input_octets, rec.output_octets, rec.event_time, rec.ip or row.ip
            )
        if rec.status == AcctStatus.STOP:
            await self.ledger.close_sessions(
                conn, sessions.c.id == row.id, rec.event_time, rec.terminate_cause or "stop"
            )
            outcome = "stopped" if outcome == "updated" else "opened-stopped"
        return outcome

    async def _open(
        self, conn: AsyncConnection, nas: NasClient, rec: AcctRecord, started: float
    ) -> None:
        mac = rec.mac or _NO_MAC
        if rec.mac is not None:
            # A new session of the same device on the same NAS ends the previous one.
            await self.ledger.close_sessions(
                conn,
                (sessions.c.ap_id == nas.nas_id) & (sessions.c.mac == mac),
                started,
                "new-session",
            )
        session_id = await self.ledger.open_gateway_session(
            conn,
            ap_id=nas.nas_id,
            insee=nas.insee,
            mac=mac,
            ip=rec.ip or _NO_IP,
            started=started,
            auth_method="radius",
            auth_ref=rec.user_name,
        )
        await conn.execute(
            radius_sessions.insert().values(
                nas_id=nas.nas_id,
                acct_session_id=rec.session_id,
                session_id=session_id,
                user_name=rec.user_name,
            )
        )
