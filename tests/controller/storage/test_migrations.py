"""The migrations build exactly the tables of ``controller/storage/schema.py``, to one head.

On SQLite and on the test PostgreSQL: an empty database migrated by ``open_database`` is
compared with the SQLAlchemy metadata by Alembic's own autogenerate comparison, so a
column added to one and forgotten in the other fails here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from controller.storage import open_database
from controller.storage.schema import metadata


def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", "controller.storage:migrations")
    return ScriptDirectory.from_config(cfg)


def test_the_migrations_have_one_head() -> None:
    """Side branches are merged: an operator upgrades to ``head`` and gets everything."""
    assert _script().get_heads() == ["0018"]


def _differences(conn: sa.Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": False})
    return [
        d
        for d in compare_metadata(ctx, metadata)
        # alembic's own bookkeeping table is not part of the schema
        if not (d[0] == "remove_table" and d[1].name == "alembic_version")
    ]


async def test_migrated_database_matches_the_schema(db_url: str) -> None:
    """Tables, columns, indexes: nothing only in the migrations, nothing only in schema.py."""
    database = await open_database(db_url)
    try:
        async with database.connect() as conn:
            diffs = await conn.run_sync(_differences)
            heads = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())
    finally:
        await database.aclose()
    assert diffs == [], "\n".join(map(str, diffs))
    assert heads == ("0018",)
