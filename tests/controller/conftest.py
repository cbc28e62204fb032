"""Fixtures for controller tests: a migrated state database on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from controller.config import Settings, load_settings
from controller.registry import Commune, Registry
from controller.service import Controller
from controller.storage import Database, open_database

MASTER = "test-master-key-0123456789"


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: SQLite in a temporary folder, or the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    await _reset_postgres(url)
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A migrated state database."""
    database = await open_database(db_url)
    yield database
    await database.aclose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings pointing at the test database."""
    return load_settings(
        None,
        database={"url": db_url},
        command_master_key=MASTER,
        sessions={"acct_interval_s": 60, "stale_factor": 3},
    )


@pytest.fixture
async def registry(db: Database) -> Registry:
    """A registry with two communes and three access points."""
    reg = Registry(db, MASTER)
    await reg.add_communes(
        [
            Commune("46201", "Rocamadour", 1.6176, 44.8),
            Commune("46042", "Cahors", 1.44, 44.45),
        ]
    )
    await reg.add_access_point("ap-46201-01", "46201", "Rocamadour — office de tourisme")
    await reg.add_access_point("ap-46201-02", "46201", "Rocamadour — parvis")
    await reg.add_access_point("ap-46042-01", "46042", "Cahors — pont Valentré")
    return reg


@pytest.fixture
async def controller(settings: Settings, db: Database, registry: Registry) -> Controller:
    """A controller without a broker, fed through ``handle``."""
    return Controller(settings, db, registry)
