"""Fixtures for controller tests: settings, a registry and a controller on the state
database of ``tests/conftest.py`` (``db_url``, ``db``: SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from controller.config import Settings, load_settings
from controller.registry import Commune, Registry
from controller.service import Controller
from controller.storage import Database

MASTER = "test-master-key-0123456789"


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
