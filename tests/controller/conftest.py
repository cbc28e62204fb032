"""Fixtures for controller tests: settings, a registry and a controller on the state
database of ``tests/conftest.py`` (``db_url``, ``db``: SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from agents._core import Envelope
from agents.contract import seal, topic
from controller.config import Settings, load_settings
from controller.registry import Commune, Registry
from controller.service import Controller
from controller.storage import Database

MASTER = "test-master-key-0123456789"


async def send(c: Controller, env: Envelope, kind: str, msg: Any, now: float) -> str:
    """Hand ``msg`` to ``c`` as the agent of ``env.ap`` publishes it on its ``kind`` topic,
    sealed with the access point's key; returns what the controller made of it."""
    key = c.registry.key_for(env.ap)
    assert key is not None, f"{env.ap} is not registered"
    return await c.handle(topic(env.ap, kind), seal(msg, key), now=now)


async def send_applied(c: Controller, env: Envelope, kind: str, msg: Any, now: float) -> None:
    """``send``, which the controller must apply."""
    assert await send(c, env, kind, msg, now) == "applied"


async def online(c: Controller, env: Envelope, now: float) -> str:
    """The agent of ``env.ap`` reports itself online at ``now`` (its status message);
    returns what the controller made of it."""
    msg = env.status(now, "online", agent_version="0.1.0", gateway="opennds", keepalive_s=30)
    return await send(c, env, "status", msg, now)


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
