"""RADIUS state in the controller's database: NAS registry and accounting records.

Accounting records become sessions through the session ledger (``controller.sessions``),
so that the outbox carries their start/update/stop events to the same later pipelines as
the agents' sessions. Sessions are keyed by (NAS id, Acct-Session-Id) in
``radius_sessions``; every rule is idempotent, so that a NAS that retransmits with a new
Identifier (RFC 2866 §5.2: a changed Acct-Delay-Time changes it) never creates a second
record. This module runs inside the caller's transaction and holds no protocol logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from controller.outbox import EventKind
from controller.sessions import SessionLedger
from controller.storage import Database
from controller.storage.db import _sqlite_pragmas
from controller.storage.schema import access_points, nas_clients, radius_sessions, sessions
from radius._core import AcctRecord, AcctStatus, NasClient

__all__ = ["AccountingStore", "AccountingWriter", "NasRegistry", "NasRegistryError"]

logger = logging.getLogger(__name__)

# Threads that sync the WAL: a batch committed while one syncs the previous batches is
# synced by the other rather than wait (measured: ~+12 % accounting throughput at 64
# requests outstanding, better in seven paired runs out of eight, docs/BENCHMARKS.md).
_SYNC_THREADS = 2
# What a session gets when the NAS does not say (RFC 2866 makes both optional).
_NO_MAC = "00:00:00:00:00:00"
_NO_IP = "0.0.0.0"


class NasRegistryError(ValueError):
    """A NAS cannot be registered as given."""


class NasRegistry:
    """Registered NAS clients (identity, secret, source address)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self,
        nas_id: str,
        address: str,
        secret: str,
        *,
        coa_port: int = 3799,
        uam_secret: str | None = None,
    ) -> None:
        """Register or update a NAS; its id must be a registered access point's.

        Args:
            uam_secret: the gateway's UAM secret (CoovaChilli ``uamsecret``), if it is
                a UAM gateway with its own; None: ``[portal] uam_secret``.

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
        if uam_secret is not None and not 8 <= len(uam_secret) <= 200:
            raise NasRegistryError("the UAM secret must be 8 to 200 characters")
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
                    uam_secret=uam_secret,
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

    async def uam_gateway(self, nas_id: str) -> tuple[str, str | None] | None:
        """``(commune INSEE, UAM secret or None)`` of a registered NAS; None if unknown."""
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(nas_clients.c.uam_secret, access_points.c.insee)
                    .join(access_points, access_points.c.ap_id == nas_clients.c.nas_id)
                    .where(nas_clients.c.nas_id == nas_id)
                )
            ).first()
        return None if row is None else (str(row.insee), row.uam_secret)

    async def clients(self) -> dict[str, list[NasClient]]:
        """NAS clients by source address, as the server core wants them."""
        out: dict[str, list[NasClient]] = {}
        for r in await self.rows():
            nas = NasClient(r.nas_id, r.secret.encode(), r.address, r.insee, r.coa_port)
            out.setdefault(str(ipaddress.ip_address(r.address)), []).append(nas)
        return out


@dataclass
class _S:
    """A session as the batch sees it (loaded or created in this batch)."""

    nas_id: str
    mac: str
    ip: str
    up: int
    down: int
    updated_at: float
    stopped_at: float | None
    cause: str | None
    id: int | None = None
    new: dict[str, Any] | None = None  # insert values of a session opened in this batch
    key: tuple[str, str] | None = None
    dirty: bool = False


# The columns of a session the batch reads, in this order (``_from_row``).
_COLUMNS = (
    sessions.c.id,
    sessions.c.ap_id,
    sessions.c.mac,
    sessions.c.ip,
    sessions.c.up_bytes,
    sessions.c.down_bytes,
    sessions.c.updated_at,
    sessions.c.stopped_at,
    sessions.c.terminate_cause,
)


def _from_row(r: Any) -> _S:
    """A session from a row of ``_COLUMNS`` (then, for ``load``, its NAS and key)."""
    return _S(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], id=r[0])


class BatchIO(Protocol):
    """What a batch reads and writes, inside the caller's transaction. Two
    implementations: SQLAlchemy on any database (:class:`_SqlBatchIO`), and the
    accounting writer thread's own SQLite connection (:class:`_SqliteBatchIO`)."""

    async def load(self, keys: list[tuple[str, str]]) -> list[Any]:
        """Sessions by (NAS, Acct-Session-Id) pairs: rows of ``_COLUMNS`` + nas_id,
        acct_session_id (rows of other combinations of the pairs' parts may come too)."""

    async def open_of(self, devices: list[tuple[str, str]]) -> list[Any]:
        """Open sessions of these (NAS, MAC) pairs (rows of ``_COLUMNS``; other
        combinations of the pairs' parts may come too)."""

    async def insert_sessions(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert new gateway sessions (``SessionLedger.open_gateway_sessions``'s rows);
        return their ids in order."""

    async def insert_keys(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``radius_sessions`` rows."""

    async def write_changes(
        self, changes: list[dict[str, Any]], events: list[tuple[int, EventKind, float]]
    ) -> None:
        """``SessionLedger.write_gateway_changes``."""

    async def close_nas(self, nas_id: str, at: float, cause: str) -> int:
        """Close every open session of a NAS; return how many."""


class _SqlBatchIO:
    """:class:`BatchIO` through SQLAlchemy and the session ledger."""

    def __init__(self, conn: AsyncConnection, ledger: SessionLedger) -> None:
        self.conn = conn
        self.ledger = ledger

    async def load(self, keys: list[tuple[str, str]]) -> list[Any]:
        nas_ids, acct_ids = _parts(keys)
        result = await self.conn.execute(
            sa.select(*_COLUMNS, radius_sessions.c.nas_id, radius_sessions.c.acct_session_id)
            .join(radius_sessions, radius_sessions.c.session_id == sessions.c.id)
            # Two IN lists, not a row-value IN: SQLite uses the primary key index only
            # for the former.
            .where(
                radius_sessions.c.nas_id.in_(nas_ids),
                radius_sessions.c.acct_session_id.in_(acct_ids),
            )
        )
        return list(result.all())

    async def open_of(self, devices: list[tuple[str, str]]) -> list[Any]:
        ap_ids, macs = _parts(devices)
        result = await self.conn.execute(
            sa.select(*_COLUMNS).where(
                sessions.c.ap_id.in_(ap_ids),
                sessions.c.mac.in_(macs),
                sessions.c.stopped_at.is_(None),
            )
        )
        return list(result.all())

    async def insert_sessions(self, rows: list[dict[str, Any]]) -> list[int]:
        return await self.ledger.open_gateway_sessions(self.conn, rows)

    async def insert_keys(self, rows: list[dict[str, Any]]) -> None:
        await self.conn.execute(radius_sessions.insert(), rows)

    async def write_changes(
        self, changes: list[dict[str, Any]], events: list[tuple[int, EventKind, float]]
    ) -> None:
        await self.ledger.write_gateway_changes(self.conn, changes, events)

    async def close_nas(self, nas_id: str, at: float, cause: str) -> int:
        return await self.ledger.close_sessions(self.conn, sessions.c.ap_id == nas_id, at, cause)


def _key_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``radius_sessions`` rows as the fixed INSERT statements take them."""
    return [(r["nas_id"], r["acct_session_id"], r["session_id"], r["user_name"]) for r in rows]


def _change_rows(changes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Session changes as the fixed UPDATE statements take them (the id last)."""
    return [
        (
            c["up_bytes"],
            c["down_bytes"],
            c["updated_at"],
            c["ip"],
            c["stopped_at"],
            c["terminate_cause"],
            c["id"],
        )
        for c in changes
    ]


class _SqliteBatchIO:
    """:class:`BatchIO` over a ``sqlite3`` connection, for the accounting writer thread.

    The same reads and writes as :class:`_SqlBatchIO` and the ledger, as fixed SQL
    statements (sqlite3 keeps them prepared): building, compiling and binding SQLAlchemy
    statements cost ~3/4 of a batch's time in the writer thread, which is the stage every
    accounting record waits for. A test runs the same records through both and compares
    the databases (``tests/radius/test_store.py``).
    """

    _SESSION = ", ".join(f"s.{c.name}" for c in _COLUMNS)
    LOAD = (
        f"SELECT {_SESSION}, r.nas_id, r.acct_session_id FROM radius_sessions AS r"
        " JOIN sessions AS s ON s.id = r.session_id"
        " WHERE r.nas_id IN (SELECT value FROM json_each(?))"
        " AND r.acct_session_id IN (SELECT value FROM json_each(?))"
    )
    OPEN_OF = (
        f"SELECT {_SESSION} FROM sessions AS s"
        " WHERE s.ap_id IN (SELECT value FROM json_each(?))"
        " AND s.mac IN (SELECT value FROM json_each(?)) AND s.stopped_at IS NULL"
    )
    INSERT_SESSION = (
        "INSERT INTO sessions (ap_id, insee, mac, ip, auth_method, auth_ref, started_at,"
        " gw_session_start, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
    )
    INSERT_KEY = (
        "INSERT INTO radius_sessions (nas_id, acct_session_id, session_id, user_name)"
        " VALUES (?, ?, ?, ?)"
    )
    UPDATE = (
        "UPDATE sessions SET up_bytes = ?, down_bytes = ?, updated_at = ?, ip = ?,"
        " stopped_at = ?, terminate_cause = ? WHERE id = ?"
    )
    EVENT = "INSERT INTO session_events (session_id, kind, at) VALUES (?, ?, ?)"
    OPEN_IDS = "SELECT id FROM sessions WHERE ap_id = ? AND stopped_at IS NULL ORDER BY id"
    CLOSE = "UPDATE sessions SET stopped_at = ?, terminate_cause = ? WHERE id = ?"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def load(self, keys: list[tuple[str, str]]) -> list[Any]:
        nas_ids, acct_ids = _parts(keys)
        return self.conn.execute(self.LOAD, (json.dumps(nas_ids), json.dumps(acct_ids))).fetchall()

    async def open_of(self, devices: list[tuple[str, str]]) -> list[Any]:
        ap_ids, macs = _parts(devices)
        return self.conn.execute(self.OPEN_OF, (json.dumps(ap_ids), json.dumps(macs))).fetchall()

    async def insert_sessions(self, rows: list[dict[str, Any]]) -> list[int]:
        ids = []
        for r in rows:
            t = r["started_at"]
            values = (r["ap_id"], r["insee"], r["mac"], r["ip"], r["auth_method"], r["auth_ref"])
            ids.append(self.conn.execute(self.INSERT_SESSION, (*values, t, t, t)).fetchone()[0])
        return ids

    async def insert_keys(self, rows: list[dict[str, Any]]) -> None:
        self.conn.executemany(self.INSERT_KEY, _key_rows(rows))

    async def write_changes(
        self, changes: list[dict[str, Any]], events: list[tuple[int, EventKind, float]]
    ) -> None:
        self.conn.executemany(self.UPDATE, _change_rows(changes))
        self.conn.executemany(self.EVENT, events)

    async def close_nas(self, nas_id: str, at: float, cause: str) -> int:
        ids = [r[0] for r in self.conn.execute(self.OPEN_IDS, (nas_id,)).fetchall()]
        self.conn.executemany(self.CLOSE, [(at, cause, i) for i in ids])
        self.conn.executemany(self.EVENT, [(i, "stop", at) for i in ids])
        return len(ids)


class AccountingStore:
    """Applies Accounting-Requests to the sessions, inside the caller's transaction.

    A batch is read with two queries, decided in memory record by record (in arrival
    order, so the rules are those of one-by-one processing), then written with one
    statement per kind of change.
    """

    def __init__(self, ledger: SessionLedger) -> None:
        self.ledger = ledger

    async def apply(self, conn: AsyncConnection, nas: NasClient, rec: AcctRecord) -> str:
        """Apply one record; return what happened (for counters and tests)."""
        return (await self.apply_batch(conn, [(nas, rec)]))[0]

    async def apply_batch(
        self, conn: AsyncConnection, items: list[tuple[NasClient, AcctRecord]]
    ) -> list[str]:
        """Apply records in order; return what happened to each."""
        return await self.apply_batch_io(_SqlBatchIO(conn, self.ledger), items)

    async def apply_batch_io(
        self, io: BatchIO, items: list[tuple[NasClient, AcctRecord]]
    ) -> list[str]:
        """``apply_batch`` through ``io``'s reads and writes."""
        outcomes: list[str] = []
        chunk: list[tuple[NasClient, AcctRecord]] = []
        for nas, rec in items:
            if rec.status in (AcctStatus.ACCOUNTING_ON, AcctStatus.ACCOUNTING_OFF):
                outcomes += await self._sessions_batch(io, chunk)
                chunk = []
                # RFC 2866 §5.1: the NAS (re)started or stops: none of its sessions survive.
                n = await io.close_nas(nas.nas_id, rec.event_time, "nas-reboot")
                outcomes.append(f"closed:{n}")
            else:
                chunk.append((nas, rec))
        outcomes += await self._sessions_batch(io, chunk)
        return outcomes

    async def _sessions_batch(
        self, io: BatchIO, items: list[tuple[NasClient, AcctRecord]]
    ) -> list[str]:
        if not items:
            return []
        keys = {(nas.nas_id, rec.session_id) for nas, rec in items}
        rows = await io.load(sorted(keys))
        by_id: dict[int, _S] = {}
        by_key: dict[tuple[str, str], _S] = {}
        for r in rows:
            key = (r[9], r[10])
            if key in keys:
                by_key[key] = by_id.setdefault(r[0], _from_row(r))
        # Open sessions of the devices about to open a new session on the same NAS.
        macs = {
            (nas.nas_id, rec.mac)
            for nas, rec in items
            if rec.mac and (nas.nas_id, rec.session_id) not in by_key
        }
        if macs:
            for r in await io.open_of(sorted(macs)):
                if (r[1], r[2]) in macs:
                    by_id.setdefault(r[0], _from_row(r))
        open_by_mac: dict[tuple[str, str], list[_S]] = {}
        for st in by_id.values():
            if st.stopped_at is None:
                open_by_mac.setdefault((st.nas_id, st.mac), []).append(st)
        created: list[_S] = []
        events: list[tuple[_S, EventKind, float]] = []
        outcomes = [
            self._decide(nas, rec, by_key, open_by_mac, created, events) for nas, rec in items
        ]
        ids = await io.insert_sessions([st.new or {} for st in created])
        for st, new_id in zip(created, ids, strict=True):
            st.id = new_id
        if created:
            await io.insert_keys(
                [
                    {
                        "nas_id": st.nas_id,
                        "acct_session_id": st.key[1],
                        "session_id": st.id,
                        "user_name": (st.new or {}).get("auth_ref"),
                    }
                    for st in created
                    if st.key is not None
                ],
            )
        touched = {id(st): st for st, _, _ in events if st.dirty}
        await io.write_changes(
            [
                {
                    "id": st.id,
                    "up_bytes": st.up,
                    "down_bytes": st.down,
                    "updated_at": st.updated_at,
                    "ip": st.ip,
                    "stopped_at": st.stopped_at,
                    "terminate_cause": st.cause,
                }
                for st in touched.values()
            ],
            [(int(st.id or 0), kind, at) for st, kind, at in events],
        )
        return outcomes

    @staticmethod
    def _decide(
        nas: NasClient,
        rec: AcctRecord,
        by_key: dict[tuple[str, str], _S],
        open_by_mac: dict[tuple[str, str], list[_S]],
        created: list[_S],
        events: list[tuple[_S, EventKind, float]],
    ) -> str:
        key = (nas.nas_id, rec.session_id)
        st = by_key.get(key)
        if st is None:
            if rec.status == AcctStatus.START:
                started = rec.event_time
            else:
                # A lost Start: the session began Acct-Session-Time before this event
                # (as FreeRADIUS's SQL queries do).
                started = rec.event_time - (rec.session_time or 0)
            mac = rec.mac or _NO_MAC
            if rec.mac is not None:
                # A new session of the same device on the same NAS ends the previous one.
                for old in open_by_mac.pop((nas.nas_id, mac), []):
                    if old.stopped_at is None:
                        old.stopped_at, old.cause, old.dirty = started, "new-session", True
                        events.append((old, "stop", started))
            ip = rec.ip or _NO_IP
            st = _S(nas.nas_id, mac, ip, 0, 0, started, None, None, key=key)
            st.new = {
                "ap_id": nas.nas_id,
                "insee": nas.insee,
                "mac": mac,
                "ip": ip,
                "auth_method": "radius",
                "auth_ref": rec.user_name,
                "started_at": started,
            }
            by_key[key] = st
            open_by_mac.setdefault((nas.nas_id, mac), []).append(st)
            created.append(st)
            events.append((st, "start", started))
            outcome = "opened"
        elif rec.status == AcctStatus.START:
            return "duplicate"
        else:
            outcome = "updated"
        if st.stopped_at is not None:
            return "already-stopped"  # idempotent Stop; a late Interim changes nothing
        if rec.status != AcctStatus.START:
            # Counters only grow: replays and reordered Interims are harmless.
            st.up, st.down = max(st.up, rec.input_octets), max(st.down, rec.output_octets)
            st.updated_at = max(st.updated_at, rec.event_time)
            st.ip = rec.ip or st.ip
            st.dirty = True
            events.append((st, "update", rec.event_time))
        if rec.status == AcctStatus.STOP:
            st.stopped_at, st.cause = rec.event_time, rec.terminate_cause or "stop"
            events.append((st, "stop", rec.event_time))
            outcome = "stopped" if outcome == "updated" else "opened-stopped"
        return outcome


class _PgBatchIO:
    """:class:`BatchIO` over the asyncpg connection under a pooled SQLAlchemy connection,
    for PostgreSQL: fixed statements that asyncpg prepares once per connection, arrays
    (``unnest``) instead of one parameter per value, and ``executemany`` (one round trip)
    for the writes. Session ids are taken from their sequence first, so that they follow
    the order of the rows (a multi-row ``RETURNING`` promises no order).
    """

    _SESSION = ", ".join(f"s.{c.name}" for c in _COLUMNS)
    # Exact pairs joined on the indexes: with two ``= ANY`` lists, the generic plan of
    # the prepared statement scanned the whole table (1.5 ms at 4,000 sessions, growing).
    LOAD = (
        f"SELECT {_SESSION}, r.nas_id, r.acct_session_id"
        " FROM unnest($1::text[], $2::text[]) AS k(nas_id, acct_session_id)"
        " JOIN radius_sessions AS r"
        " ON r.nas_id = k.nas_id AND r.acct_session_id = k.acct_session_id"
        " JOIN sessions AS s ON s.id = r.session_id"
    )
    OPEN_OF = (
        f"SELECT {_SESSION} FROM unnest($1::text[], $2::text[]) AS d(ap_id, mac)"
        " JOIN sessions AS s ON s.ap_id = d.ap_id AND s.mac = d.mac AND s.stopped_at IS NULL"
    )
    IDS = "SELECT nextval(pg_get_serial_sequence('sessions', 'id')) FROM generate_series(1, $1)"
    INSERT_SESSION = (
        "INSERT INTO sessions (id, ap_id, insee, mac, ip, auth_method, auth_ref, started_at,"
        " gw_session_start, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)"
    )
    INSERT_KEY = (
        "INSERT INTO radius_sessions (nas_id, acct_session_id, session_id, user_name)"
        " VALUES ($1, $2, $3, $4)"
    )
    UPDATE = (
        "UPDATE sessions SET up_bytes = $1, down_bytes = $2, updated_at = $3, ip = $4,"
        " stopped_at = $5, terminate_cause = $6 WHERE id = $7"
    )
    EVENT = "INSERT INTO session_events (session_id, kind, at) VALUES ($1, $2, $3)"
    CLOSE = (
        "UPDATE sessions SET stopped_at = $2, terminate_cause = $3"
        " WHERE ap_id = $1 AND stopped_at IS NULL RETURNING id"
    )

    _NEW = ("ap_id", "insee", "mac", "ip", "auth_method", "auth_ref")

    def __init__(self, conn: Any) -> None:
        self.conn = conn  # an asyncpg connection, inside a transaction

    async def load(self, keys: list[tuple[str, str]]) -> list[Any]:
        return list(await self.conn.fetch(self.LOAD, *_columns(keys)))

    async def open_of(self, devices: list[tuple[str, str]]) -> list[Any]:
        return list(await self.conn.fetch(self.OPEN_OF, *_columns(devices)))

    async def insert_sessions(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        ids = sorted(r[0] for r in await self.conn.fetch(self.IDS, len(rows)))
        await self.conn.executemany(
            self.INSERT_SESSION,
            [
                (i, *(r[k] for k in self._NEW), r["started_at"])
                for i, r in zip(ids, rows, strict=True)
            ],
        )
        return ids

    async def insert_keys(self, rows: list[dict[str, Any]]) -> None:
        await self.conn.executemany(self.INSERT_KEY, _key_rows(rows))

    async def write_changes(
        self, changes: list[dict[str, Any]], events: list[tuple[int, EventKind, float]]
    ) -> None:
        if changes:
            await self.conn.executemany(self.UPDATE, _change_rows(changes))
        if events:
            await self.conn.executemany(self.EVENT, events)

    async def close_nas(self, nas_id: str, at: float, cause: str) -> int:
        ids = sorted(r[0] for r in await self.conn.fetch(self.CLOSE, nas_id, at, cause))
        if ids:
            await self.conn.executemany(self.EVENT, [(i, "stop", at) for i in ids])
        return len(ids)


def _parts(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The distinct first and second members of ``pairs``, sorted (two IN lists)."""
    return sorted({a for a, _ in pairs}), sorted({b for _, b in pairs})


def _columns(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """``pairs`` as two parallel lists (arrays for ``unnest``)."""
    return [a for a, _ in pairs], [b for _, b in pairs]


# ------------------------------------------------------------------ the accounting writer


def _run_to_end(coro: Coroutine[Any, Any, list[str]]) -> list[str]:
    """Run a coroutine that never suspends (its I/O is synchronous) and return its value."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(list[str], done.value)
    coro.close()
    raise RuntimeError("the accounting store waited for I/O on the writer thread")


def _sqlite_path(db: Database) -> str | None:
    """The file of an SQLite database, None for another database or an in-memory one."""
    url = db.engine.url
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query:
        return None
    return database


Item = tuple[NasClient, AcctRecord]
# Called in the event loop once a streamed batch is on disk (or failed): its tokens, the
# outcomes (None on failure) and the error (None on success).
StoredCallback = Callable[[list[Any], list[str] | None, Exception | None], None]


@dataclass
class _Job:
    """A batch on its way through the writer's threads: a ``write`` call (``done``) or
    streamed items (``tokens``, answered through the stored callback)."""

    items: list[Item]
    done: asyncio.Future[list[str]] | None = None
    tokens: list[Any] | None = None
    outcomes: list[str] | None = None
    error: Exception | None = None


class AccountingWriter:
    """Stores batches of accounting records durably, each in one transaction.

    On an SQLite file, batches go through threads of their own. The writer thread
    takes everything that arrived while it was busy (``submit``, at most ``batch_max``
    records), applies it on a synchronous connection to the same file (the same store
    and ledger code, in one transaction begun with ``BEGIN IMMEDIATE``) and commits it to
    the WAL without waiting for the disk (``synchronous=NORMAL``); a sync thread (one of
    two) then takes every batch committed so far and runs one ``fdatasync`` of the WAL file,
    and only then is the batch answered, in the event loop. This is a group commit: the
    next batch is applied while the previous ones are being synced, and the event loop
    only hands records over and sends answers. The WAL is written in commit order and
    SQLite syncs it before every checkpoint, so a batch is as durable when it is answered
    as with ``synchronous=FULL``. Elsewhere each batch commits with the database's own
    durable commit, in the event loop: on PostgreSQL through asyncpg's own statements
    (:class:`_PgBatchIO`), on an in-memory SQLite or one not in WAL mode through
    SQLAlchemy.

    Args:
        threaded: None: the threads wherever they apply; False: never (in the event loop).
        batch_max: most records in one transaction.
    """

    def __init__(
        self,
        db: Database,
        store: AccountingStore,
        *,
        threaded: bool | None = None,
        batch_max: int = 256,
    ) -> None:
        self.db = db
        self.store = store
        self.batch_max = batch_max
        self.path = _sqlite_path(db) if threaded is not False else None
        self.commits = 0  # transactions committed by the writer thread
        self.syncs = 0  # fdatasync calls that made them durable
        self._count_lock = threading.Lock()  # the sync threads count syncs
        self.submitted = 0  # streamed records handed over (event loop)
        self.taken = 0  # streamed records taken by the writer thread
        self._jobs: queue.SimpleQueue[_Job | tuple[Any, Item] | None] = queue.SimpleQueue()
        self._committed: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._held: list[_Job | None] = []  # taken from _jobs, for the next batch
        self._threads: list[threading.Thread] = []
        self._closed = False  # one life: closed, it takes no more batches
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_stored: StoredCallback | None = None
        self._conn: sqlite3.Connection | None = None  # the writer thread's
        self._wal = False  # the writer's commits reach the disk only through the sync

    @property
    def threaded(self) -> bool:
        """Whether batches go through the writer's threads."""
        return self.path is not None

    @property
    def backlog(self) -> int:
        """Streamed records handed over and not yet taken into a batch."""
        return self.submitted - self.taken

    def start(self, on_stored: StoredCallback) -> None:
        """Start the threads (in the event loop that will get the answers)."""
        self._on_stored = on_stored
        self._start()

    def submit(self, token: Any, item: Item) -> None:
        """Hand one record over (threaded writer, after ``start``); ``on_stored`` gets
        ``token`` back with the record's batch."""
        self.submitted += 1
        self._jobs.put((token, item))

    async def write(self, items: list[Item]) -> list[str]:
        """Apply and commit one batch; return, once it is on disk, what happened to each
        record. Several calls may run at once: their batches are applied one after the
        other, in call order.

        Raises:
            sqlalchemy.exc.OperationalError, sqlite3.OperationalError, asyncpg.PostgresError,
            OSError: not stored (or not known to be).
        """
        if self.path is None:
            if self.db.dialect == "postgresql":
                async with self.db.connect() as conn:
                    raw = await conn.get_raw_connection()
                    pg = raw.driver_connection  # asyncpg's, below SQLAlchemy's adapter
                    assert pg is not None
                    async with pg.transaction():
                        return await self.store.apply_batch_io(_PgBatchIO(pg), items)
            async with self.db.begin() as conn:
                return await self.store.apply_batch(conn, items)
        self._start()
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._jobs.put(_Job(items, done=done))
        return await done

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("this accounting writer is closed")
        if self._threads:
            return
        self._loop = asyncio.get_running_loop()
        names = ["writer", *(f"sync-{i}" for i in range(_SYNC_THREADS))]
        for name in names:
            target = self._apply_loop if name == "writer" else self._sync_loop
            t = threading.Thread(target=target, name=f"radius-acct-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    # writer thread ----------------------------------------------------------------
    def _apply_loop(self) -> None:
        failures = 0  # in a row
        try:
            while (job := self._next_job()) is not None:
                try:
                    job.outcomes = self._apply(job.items)
                    self.commits += 1
                    failures = 0
                except Exception as exc:  # handed to the caller
                    job.error = exc
                    failures += 1
                self._committed.put(job)
                if failures:
                    # The database is failing: wait a little, longer and longer, before
                    # the next batch (meanwhile, the NAS retransmit what was not answered).
                    time.sleep(random.uniform(0, min(10.0, 0.1 * 1.5**failures)))
        finally:
            self._dispose()
            for _ in range(_SYNC_THREADS):
                self._committed.put(None)

    def _next_job(self) -> _Job | None:
        """A ``write`` call's batch, or every streamed record waiting (up to batch_max)."""
        first = self._held.pop() if self._held else self._jobs.get()
        if first is None or isinstance(first, _Job):
            return first
        tokens, items = [first[0]], [first[1]]
        while len(items) < self.batch_max:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None or isinstance(nxt, _Job):
                self._held.append(nxt)  # the next one, after this batch
                break
            tokens.append(nxt[0])
            items.append(nxt[1])
        self.taken += len(items)
        return _Job(items, tokens=tokens)

    def _apply(self, items: list[tuple[NasClient, AcctRecord]]) -> list[str]:
        if self._conn is None:
            assert self.path is not None
            # The writer thread's own connection, kept between batches. Transactions
            # are explicit (``isolation_level=None``): BEGIN IMMEDIATE takes the write
            # lock before the batch's reads.
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            try:
                self._pragmas(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = _run_to_end(self.store.apply_batch_io(_SqliteBatchIO(conn), items))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return outcomes
        except Exception:
            self._conn = None  # a fresh connection for the next batch
            conn.close()
            raise

    def _pragmas(self, conn: sqlite3.Connection) -> None:
        _sqlite_pragmas(conn, None)  # WAL, synchronous=FULL, busy timeout
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        self._wal = str(mode).lower() == "wal"
        if self._wal:
            # Commits reach the WAL file; the sync threads make them durable.
            conn.execute("PRAGMA synchronous=NORMAL")

    def _dispose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # sync threads -----------------------------------------------------------------
    def _sync_loop(self) -> None:
        stopping = False
        while not stopping:
            job = self._committed.get()
            if job is None:
                return
            jobs = [job]
            # Every batch committed by now: one sync for all.
            while True:
                try:
                    more = self._committed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
            error: Exception | None = None
            if self._wal and any(j.error is None for j in jobs):
                try:
                    self._fdatasync_wal()
                except OSError as exc:
                    error = exc
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._settle, jobs, error)

    def _fdatasync_wal(self) -> None:
        # The WAL file lives as long as a connection (the writer's) is open on the database.
        fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        with self._count_lock:
            self.syncs += 1

    # closing ----------------------------------------------------------------------
    async def aclose(self) -> None:
        """Finish the batches handed over, then end the threads and the connection."""
        self.close()
        threads, self._threads = self._threads, []
        for t in threads:
            await asyncio.to_thread(t.join)

    def close(self) -> None:
        """Ask the threads to end once the batches handed over are done; do not wait."""
        if self._threads and not self._closed:
            self._jobs.put(None)
        self._closed = True

    def _settle(self, jobs: list[_Job], error: Exception | None) -> None:
        """In the event loop: answer the batches that are on disk."""
        for job in jobs:
            failure = job.error or error
            if job.tokens is not None:
                assert self._on_stored is not None
                try:
                    self._on_stored(job.tokens, None if failure else job.outcomes, failure)
                except Exception:  # the other batches are still answered
                    logger.error("answering an accounting batch failed", exc_info=True)
            elif job.done is None or job.done.done():  # its caller was cancelled
                continue
            elif failure is not None:
                job.done.set_exception(failure)
            else:
                job.done.set_result(job.outcomes or [])
