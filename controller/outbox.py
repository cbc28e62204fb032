"""The session events outbox: how later pipelines follow sessions without missing any.

The session ledger (and the RADIUS accounting path) call :func:`emit` inside the
transaction that changes a session. A consumer (the legal log, the statistics) reads
:func:`pending` events after its own offset and moves the offset with :func:`advance`,
in its own transaction once its work is durable. Events are never deleted here before
every consumer has passed them (:func:`prune`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from controller.storage.schema import consumer_offsets, session_events, sessions

__all__ = [
    "EventKind",
    "SessionEvent",
    "advance",
    "emit",
    "emit_many",
    "offset",
    "pending",
    "prune",
]

EventKind = Literal["start", "update", "stop"]


@dataclass(frozen=True)
class SessionEvent:
    """One change of one session, with the session as it is now."""

    id: int
    kind: EventKind
    at: float
    session: sa.Row[Any]


async def emit(conn: AsyncConnection, session_ids: list[int], kind: EventKind, at: float) -> None:
    """Record that sessions changed (call inside the changing transaction)."""
    if session_ids:
        await conn.execute(
            session_events.insert(),
            [{"session_id": i, "kind": kind, "at": at} for i in session_ids],
        )


async def emit_many(conn: AsyncConnection, events: list[tuple[int, EventKind, float]]) -> None:
    """Record ``(session_id, kind, at)`` changes in this order, in one statement."""
    if events:
        await conn.execute(
            session_events.insert(), [{"session_id": i, "kind": k, "at": at} for i, k, at in events]
        )


async def offset(conn: AsyncConnection, consumer: str) -> int:
    """The last event id ``consumer`` has handled (0 at first)."""
    row = (
        await conn.execute(
            sa.select(consumer_offsets.c.last_id).where(consumer_offsets.c.name == consumer)
        )
    ).first()
    return int(row.last_id) if row else 0


async def pending(conn: AsyncConnection, consumer: str, limit: int = 1000) -> list[SessionEvent]:
    """Events after ``consumer``'s offset, oldest first, with their sessions."""
    after = await offset(conn, consumer)
    rows = (
        await conn.execute(
            sa.select(
                session_events.c.id.label("event_id"),
                session_events.c.kind,
                session_events.c.at,
                sessions,
            )
            .join(sessions, sessions.c.id == session_events.c.session_id)
            .where(session_events.c.id > after)
            .order_by(session_events.c.id)
            .limit(limit)
        )
    ).all()
    return [SessionEvent(r.event_id, r.kind, r.at, r) for r in rows]


async def advance(conn: AsyncConnection, consumer: str, last_id: int) -> None:
    """Move ``consumer``'s offset to ``last_id`` (inside the consumer's own transaction)."""
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(consumer_offsets).values(name=consumer, last_id=last_id)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["name"], set_={"last_id": last_id})
    )


async def prune(conn: AsyncConnection, consumers: list[str]) -> int:
    """Delete events every named consumer has passed; return how many."""
    if not consumers:
        return 0
    lowest = min([await offset(conn, c) for c in consumers])
    result = await conn.execute(session_events.delete().where(session_events.c.id <= lowest))
    return int(result.rowcount)
