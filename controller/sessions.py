"""Sessions and fleet state fed by agent messages, applied inside one transaction.

Rules (DESIGN.md "Sessions"): an ``authorized`` client opens a session; ``acct``
counters update it (an ``acct`` for an unknown client opens one, as a RADIUS Interim
does); ``left`` closes it; an AP that comes back with a new ``boot`` closes the open
sessions of its previous run; a new gateway session of the same MAC on the same AP
closes the old one; a session without update for ``stale_factor`` x the accounting
interval is closed as stale. Every function here runs inside the caller's transaction,
together with the exactly-once claim of ``(ap, boot, seq)``, so that a message is
either fully applied once or not at all.
"""

from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from agents.contract import (
    AcctEntry,
    AcctMsg,
    AckMsg,
    ClientEvent,
    ClientsMsg,
    HealthMsg,
    StatusMsg,
)
from controller import outbox
from controller.config import SessionSettings
from controller.contract import AgentMessage
from controller.storage.schema import access_points, commands, processed_messages, sessions

__all__ = ["Applied", "SessionLedger", "SkewEstimator"]

# Clock skew below this is network latency, not a clock to correct.
_SKEW_IGNORED_S = 2.0
# The clock skew is the largest reading of the last 15 minutes (at most 64 readings).
SKEW_WINDOW_S = 900.0
_SKEW_SAMPLES = 64


class SkewEstimator:
    """An AP's clock minus the controller's, from its freshest recent messages.

    A message stamped ``ts`` by the AP and received at ``now`` reads ``ts - now = skew -
    delay``, the delay (network, broker queue, the agent's spool after an outage) being
    never negative: the largest reading of a window is the least delayed one, the best
    estimate. Only live readings count: ``status`` ``online`` written at a connection
    and ``health`` (taken only while connected); a replayed ``acct`` or ``clients``
    would read as a clock hours behind, and so would the boot's first message, the
    ``online`` status the agent writes as it starts, before connecting (``seq`` 1:
    replayed from its spool when it started offline, it reads the outage as skew). A new
    boot starts a new window (a reboot may set the clock). In memory: a restarted
    controller seeds each window with the estimate it had stored (``prior``).
    """

    def __init__(self, window_s: float = SKEW_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: dict[str, collections.deque[tuple[float, float]]] = {}

    def observe(self, ap_id: str, reading: float, now: float, prior: float | None = None) -> float:
        """Add ``ts - now`` of a live message; return the estimate.

        ``prior``: the estimate stored for the same boot, which seeds an empty window (a
        restarted controller): the readings it meets first were delayed in the broker's
        queue while it was down, and alone they would read the outage as skew.
        """
        dq = self._samples.get(ap_id)
        if dq is None:
            dq = self._samples[ap_id] = collections.deque(maxlen=_SKEW_SAMPLES)
            if prior is not None:
                dq.append((now, prior))
        dq.append((now, reading))
        while dq and dq[0][0] < now - self.window_s:
            dq.popleft()
        return max(r for _, r in dq)

    def current(self, ap_id: str) -> float | None:
        """The estimate without a new reading; None before the first one."""
        dq = self._samples.get(ap_id)
        return max(r for _, r in dq) if dq else None

    def reset(self, ap_id: str) -> None:
        """Forget an AP's readings (its agent started again)."""
        self._samples.pop(ap_id, None)


@dataclass
class Applied:
    """What applying one message changed (for logs, counters and hooks)."""

    opened: int = 0
    closed: int = 0
    updated: int = 0
    late: bool = False
    backfilled: bool = False


def _nat(item: ClientEvent | AcctEntry) -> dict[str, Any]:
    """The session columns of a reported NAT port block (none when the AP has no NAT)."""
    if item.public_ip is None:
        return {}
    return {"public_ip": item.public_ip, "port_start": item.port_start, "port_end": item.port_end}


def _insert_ignore(dialect: str, table: sa.Table) -> Any:
    mod = postgresql if dialect == "postgresql" else sqlite
    return mod.insert(table)


class SessionLedger:
    """Applies agent messages to the state database."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.skew = SkewEstimator()

    async def claim(
        self, conn: AsyncConnection, ap_id: str, boot: str, seq: int, now: float
    ) -> bool:
        """Record ``(ap, boot, seq)``; False if it was processed before (a duplicate)."""
        stmt = (
            _insert_ignore(conn.dialect.name, processed_messages)
            .values(ap_id=ap_id, boot=boot, seq=seq, received_at=now)
            .on_conflict_do_nothing()
        )
        result = await conn.execute(stmt)
        return bool(result.rowcount == 1)

    async def apply(
        self, conn: AsyncConnection, ap: sa.Row[Any], msg: AgentMessage, now: float
    ) -> Applied:
        """Apply one validated, claimed message from access point ``ap``."""
        out = Applied()
        skew = msg.ts - now
        values: dict[str, Any] = {"last_seen": now}
        if isinstance(msg, StatusMsg):
            await self._status(conn, ap, msg, now, values, out)
        elif ap.boot is not None and msg.boot != ap.boot:
            # A late message from a previous run of the agent: its sessions are closed.
            out.late = True
        elif isinstance(msg, ClientsMsg):
            await self._clients(conn, ap, msg, now, out)
        elif isinstance(msg, AcctMsg):
            await self._acct(conn, ap, msg, now, out)
        elif isinstance(msg, HealthMsg):
            values["health"] = json.dumps(
                {k: v for k, v in asdict(msg).items() if k not in ("v", "ap", "sig")}
            )
            values["agent_version"] = msg.agent_version[:32]
            values["clock_skew_s"] = self.skew.observe(ap.ap_id, skew, now, ap.clock_skew_s)
        elif isinstance(msg, AckMsg):
            await conn.execute(
                commands.update()
                .where(
                    commands.c.id == msg.id,
                    commands.c.ap_id == ap.ap_id,
                    commands.c.acked_at.is_(None),
                )
                .values(acked_at=now, ok=msg.ok, error=(msg.error or None) and msg.error[:200])
            )
        if (
            not out.late
            and ap.state != "online"
            and not (isinstance(msg, StatusMsg) and msg.state == "offline")
        ):
            values.update(state="online", state_since=now)
        await conn.execute(
            access_points.update().where(access_points.c.ap_id == ap.ap_id).values(**values)
        )
        return out

    def _device_time(self, ap: sa.Row[Any], t: float) -> float:
        skew = ap.clock_skew_s or 0.0
        return t - skew if abs(skew) > _SKEW_IGNORED_S else t

    def _is_backfill(self, ap: sa.Row[Any], ts: float, now: float) -> bool:
        return now - self._device_time(ap, ts) > 2 * self.settings.acct_interval_s

    async def _status(
        self,
        conn: AsyncConnection,
        ap: sa.Row[Any],
        msg: StatusMsg,
        now: float,
        values: dict[str, Any],
        out: Applied,
    ) -> None:
        if msg.state == "offline":
            if ap.boot is not None and msg.boot != ap.boot:
                out.late = True  # the Will of a previous run, delivered after the new one
                return
            values.update(state="offline", state_since=now)
            return
        prior = ap.clock_skew_s
        if ap.boot != msg.boot:
            self.skew.reset(ap.ap_id)
            prior = None
        # seq 1 announces the boot, written before the agent connects; the status written
        # at each connection follows it and reads the clock (SkewEstimator).
        live = msg.seq > 1
        values.update(
            state="online",
            boot=msg.boot,
            agent_version=msg.agent_version[:32],
            clock_skew_s=(
                self.skew.observe(ap.ap_id, msg.ts - now, now, prior)
                if live
                else self.skew.current(ap.ap_id)
            ),
        )
        if ap.state != "online":
            values["state_since"] = now
        if ap.boot != msg.boot:
            out.closed += await self._close_where(
                conn,
                (sessions.c.ap_id == ap.ap_id)
                & sessions.c.stopped_at.is_(None)
                & ((sessions.c.boot != msg.boot) | sessions.c.boot.is_(None)),
                now,
                "ap-reboot",
            )

    async def _close_where(self, conn: AsyncConnection, where: Any, now: float, cause: str) -> int:
        query = sa.select(sessions.c.id).where(where).order_by(sessions.c.id)
        ids = [r.id for r in (await conn.execute(query)).all()]
        if not ids:
            return 0
        await conn.execute(
            sessions.update()
            .where(sessions.c.id.in_(ids))
            .values(stopped_at=now, terminate_cause=cause)
        )
        await outbox.emit(conn, ids, "stop", now)
        return len(ids)

    async def _open_session(
        self,
        conn: AsyncConnection,
        ap: sa.Row[Any],
        msg: AgentMessage,
        mac: str,
        ip: str,
        started: float,
        gw_start: float | None,
        backfilled: bool,
        nat: dict[str, Any] | None = None,
    ) -> None:
        cmd = (
            await conn.execute(
                sa.select(commands.c.id, commands.c.purpose)
                .where(
                    commands.c.ap_id == ap.ap_id,
                    commands.c.mac == mac,
                    commands.c.cmd == "authorize",
                    commands.c.ok.is_(True),
                )
                .order_by(commands.c.created_at.desc())
                .limit(1)
            )
        ).first()
        result = await conn.execute(
            sessions.insert().values(
                ap_id=ap.ap_id,
                insee=ap.insee,
                mac=mac,
                ip=ip,
                auth_method=cmd.purpose if cmd else None,
                auth_ref=cmd.id if cmd else None,
                boot=msg.boot,
                gw_session_start=gw_start,
                started_at=started,
                updated_at=started,
                backfilled=backfilled,
                **(nat or {}),
            )
        )
        key = result.inserted_primary_key
        assert key is not None and key[0] is not None
        await outbox.emit(conn, [int(key[0])], "start", started)

    async def _open_row(self, conn: AsyncConnection, ap_id: str, mac: str) -> sa.Row[Any] | None:
        return (
            await conn.execute(
                sa.select(sessions)
                .where(
                    sessions.c.ap_id == ap_id,
                    sessions.c.mac == mac,
                    sessions.c.stopped_at.is_(None),
                )
                .order_by(sessions.c.id.desc())
            )
        ).first()

    async def _clients(
        self, conn: AsyncConnection, ap: sa.Row[Any], msg: ClientsMsg, now: float, out: Applied
    ) -> None:
        backfilled = self._is_backfill(ap, msg.ts, now)
        out.backfilled = backfilled
        authorized: set[str] = set()
        for ev in msg.events:
            at = self._device_time(ap, ev.at)
            if ev.event == "authorized":
                authorized.add(ev.mac)
                row = await self._open_row(conn, ap.ap_id, ev.mac)
                if row is None:
                    await self._open_session(
                        conn, ap, msg, ev.mac, ev.ip, at, None, backfilled, _nat(ev)
                    )
                    out.opened += 1
            elif ev.event == "left":
                out.closed += await self._close_where(
                    conn,
                    (sessions.c.ap_id == ap.ap_id)
                    & (sessions.c.mac == ev.mac)
                    & sessions.c.stopped_at.is_(None),
                    at,
                    "left",
                )
        if msg.full:
            # A full list: open sessions of clients no longer authorised there are over.
            where = (sessions.c.ap_id == ap.ap_id) & sessions.c.stopped_at.is_(None)
            if authorized:
                where = where & sessions.c.mac.not_in(sorted(authorized))
            out.closed += await self._close_where(conn, where, now, "lost-on-sync")

    async def _acct(
        self, conn: AsyncConnection, ap: sa.Row[Any], msg: AcctMsg, now: float, out: Applied
    ) -> None:
        backfilled = self._is_backfill(ap, msg.ts, now)
        out.backfilled = backfilled
        at = self._device_time(ap, msg.ts)
        for e in msg.entries:
            await self._acct_entry(conn, ap, msg, e, at, backfilled, out)

    async def _acct_entry(
        self,
        conn: AsyncConnection,
        ap: sa.Row[Any],
        msg: AcctMsg,
        e: AcctEntry,
        at: float,
        backfilled: bool,
        out: Applied,
    ) -> None:
        gw_start = self._device_time(ap, e.session_start)
        row = await self._open_row(conn, ap.ap_id, e.mac)
        # The gateway's own session start, as the AP's clock gives it, tells its sessions
        # apart: corrected, it would move with each new estimate of the skew.
        if (
            row is not None
            and row.gw_session_start is not None
            and (abs(row.gw_session_start - e.session_start) > 1.0)
        ):
            # The gateway started another session for this device: the old one is over.
            out.closed += await self._close_where(
                conn, sessions.c.id == row.id, row.updated_at, "new-session"
            )
            row = None
        if row is None:
            await self._open_session(
                conn, ap, msg, e.mac, e.ip, gw_start, e.session_start, backfilled, _nat(e)
            )
            out.opened += 1
            row = await self._open_row(conn, ap.ap_id, e.mac)
            assert row is not None
        # Counters only grow within a gateway session; max() makes replays harmless.
        await conn.execute(
            sessions.update()
            .where(sessions.c.id == row.id)
            .values(
                up_bytes=max(row.up_bytes, e.up_bytes),
                down_bytes=max(row.down_bytes, e.down_bytes),
                updated_at=max(row.updated_at, at),
                gw_session_start=e.session_start,
                ip=e.ip,
                **_nat(e),
            )
        )
        await outbox.emit(conn, [row.id], "update", at)
        out.updated += 1

    async def close_stale(self, conn: AsyncConnection, now: float) -> int:
        """Close sessions without update for ``stale_factor`` x the accounting interval."""
        limit = now - self.settings.stale_factor * self.settings.acct_interval_s
        return await self._close_where(
            conn, sessions.c.stopped_at.is_(None) & (sessions.c.updated_at < limit), now, "stale"
        )

    # Sessions of RADIUS gateways (radius/_store.py): the NAS's registered id is the
    # session's ap_id; the (NAS, Acct-Session-Id) key lives in radius_sessions. Written in
    # batches (one statement per kind of change) so that accounting keeps up with a NAS.
    async def open_gateway_sessions(
        self, conn: AsyncConnection, rows: list[dict[str, Any]]
    ) -> list[int]:
        """Insert sessions reported by third-party gateways (``sessions`` columns
        ``ap_id, insee, mac, ip, auth_method, auth_ref, started_at``); return their ids in
        order. Their ``start`` events are for :meth:`write_gateway_changes`."""
        if not rows:
            return []
        values = [
            {**r, "gw_session_start": r["started_at"], "updated_at": r["started_at"]} for r in rows
        ]
        if conn.dialect.name == "sqlite":
            # SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs from one cached
            # statement (a .values([...]) statement would be compiled for every row count).
            # SQLite inserts the rows in VALUES order, each with the next rowid, so
            # ascending ids are in parameter order (SQLAlchemy's ordered executemany would
            # run one statement per row on SQLite).
            result = await conn.execute(sessions.insert().returning(sessions.c.id), values)
            return sorted(int(r[0]) for r in result.all())
        result = await conn.execute(
            sessions.insert().returning(sessions.c.id, sort_by_parameter_order=True), values
        )
        return [int(r[0]) for r in result.all()]

    async def write_gateway_changes(
        self,
        conn: AsyncConnection,
        changes: list[dict[str, Any]],
        events: list[tuple[int, outbox.EventKind, float]],
    ) -> None:
        """Write the final state of changed gateway sessions (keys ``id, up_bytes,
        down_bytes, updated_at, ip, stopped_at, terminate_cause``; counters only grow, the
        caller applied ``max()``) and their events, in order, to the outbox."""
        if changes:
            await conn.execute(
                sessions.update()
                .where(sessions.c.id == sa.bindparam("b_id"))
                .values(
                    up_bytes=sa.bindparam("b_up"),
                    down_bytes=sa.bindparam("b_down"),
                    updated_at=sa.bindparam("b_updated"),
                    ip=sa.bindparam("b_ip"),
                    stopped_at=sa.bindparam("b_stopped"),
                    terminate_cause=sa.bindparam("b_cause"),
                ),
                [
                    {
                        "b_id": c["id"],
                        "b_up": c["up_bytes"],
                        "b_down": c["down_bytes"],
                        "b_updated": c["updated_at"],
                        "b_ip": c["ip"],
                        "b_stopped": c["stopped_at"],
                        "b_cause": c["terminate_cause"],
                    }
                    for c in changes
                ],
            )
        await outbox.emit_many(conn, events)

    async def close_sessions(self, conn: AsyncConnection, where: Any, at: float, cause: str) -> int:
        """Close the open sessions matching ``where``; return how many."""
        return await self._close_where(conn, where & sessions.c.stopped_at.is_(None), at, cause)
