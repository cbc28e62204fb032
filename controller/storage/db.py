"""Open the state database and bring its schema to the latest migration.

SQLite (``sqlite+aiosqlite://``) is the embedded default: WAL journal, ``synchronous=FULL``
(an acknowledged message must survive a power cut) and a busy timeout. PostgreSQL
(``postgresql+asyncpg://``) goes through the very same code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from agents._mqtt_io import backoff_delay

# The package (controller/storage/__init__.py) says what is public.

logger = logging.getLogger(__name__)
T = TypeVar("T")

# What a running component meets while the database is briefly away (a locked SQLite
# file, PostgreSQL restarting, a full disk): retried or answered 503, never fatal.
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    OSError,
)


async def retry_while_unavailable(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    failed: Callable[[], None] | None = None,
    cap_s: float = 30.0,
    errors: tuple[type[Exception], ...] = UNAVAILABLE,
) -> T:
    """Await ``op()`` until it does not fail with one of ``errors`` (the database away,
    by default); each failure calls ``failed`` (a counter), is logged as "cannot
    ``what``" and waits a jittered backoff of at most ``cap_s`` seconds. Any other error
    propagates."""
    attempt = 0
    while True:
        try:
            return await op()
        except errors as exc:
            if failed is not None:
                failed()
            delay = backoff_delay(attempt, cap_s)
            attempt += 1
            logger.error("cannot %s (%s); retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)


class StorageError(Exception):
    """The database cannot be opened or migrated."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _alembic_upgrade(sync_conn: sa.Connection, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "controller.storage:migrations")
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "heads") -> None:
    """Apply every pending migration (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_alembic_upgrade, revision)


class Database:
    """An engine plus the one way to run a transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction: committed when the block ends, rolled back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads."""
        async with self.engine.connect() as conn:
            yield conn

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


async def open_database(url: str, *, run_migrations: bool = True) -> Database:
    """Create the engine for ``url`` and migrate the schema.

    Raises:
        StorageError: the database is unreachable or the migration failed.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # One writer at a time is SQLite's nature; a small pool keeps readers going.
        kwargs["connect_args"] = {"timeout": 10}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        if run_migrations:
            await migrate(engine)
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        await engine.dispose()
        raise StorageError(f"cannot open the state database: {exc}") from exc
    return Database(engine)
