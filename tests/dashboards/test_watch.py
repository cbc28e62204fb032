"""The fleet watcher on a real controller (SQLite): incidents from real status messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.config import load_settings
from controller.registry import Registry, lot_communes
from controller.service import Controller
from controller.storage import open_database
from dashboards.watch import FleetWatcher
from tests.dashboards.test_app import INSEE, Agent

T0 = 1_780_000_000.0


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    settings = load_settings(None, database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"})
    db = await open_database(settings.database.url.get_secret_value())
    registry = Registry(db, settings.command_master_key.get_secret_value())
    await registry.add_communes(lot_communes())
    await registry.add_access_point("roc-01", INSEE["Rocamadour"], "Rocamadour")
    await registry.add_access_point("cah-01", INSEE["Cahors"], "Cahors")
    try:
        yield Controller(settings, db, registry)
    finally:
        await db.aclose()


async def test_down_and_back_up_make_one_closed_incident(controller: Controller) -> None:
    """An AP going offline opens an incident at its offline time; coming back closes it."""
    now = [T0]
    watcher = FleetWatcher(controller.db, lambda: now[0], interval_s=0.0)
    roc = Agent(controller, "roc-01")
    await roc.online(T0)
    v1 = await watcher.refresh()
    assert await watcher.incidents(0) == []
    await roc.offline(T0 + 60)
    now[0] = T0 + 70
    v2 = await watcher.refresh()
    assert v2 > v1
    [incident] = await watcher.incidents(0)
    assert incident.ap_id == "roc-01" and incident.down_at == pytest.approx(T0 + 60)
    assert incident.up_at is None
    roc2 = Agent(controller, "roc-01")  # a new agent run (new boot)
    await roc2.online(T0 + 600)
    await watcher.refresh()
    [incident] = await watcher.incidents(0)
    assert incident.up_at == pytest.approx(T0 + 600)
    await watcher.refresh()
    assert len(await watcher.incidents(0)) == 1  # nothing recorded twice


async def test_a_restarted_watcher_keeps_the_open_incident(controller: Controller) -> None:
    """A new watcher (controller restart) neither duplicates nor loses an open incident."""
    roc = Agent(controller, "roc-01")
    await roc.online(T0)
    first = FleetWatcher(controller.db, lambda: T0 + 100, interval_s=0.0)
    await first.refresh()
    await roc.offline(T0 + 60)
    await first.refresh()
    second = FleetWatcher(controller.db, lambda: T0 + 200, interval_s=0.0)
    await second.refresh()
    assert len(await second.incidents(0)) == 1
    await Agent(controller, "roc-01").online(T0 + 300)
    await second.refresh()
    [incident] = await second.incidents(0)
    assert incident.up_at == pytest.approx(T0 + 300)


async def test_wait_change_wakes_on_a_state_change(controller: Controller) -> None:
    """A waiter is woken with a higher version when an AP changes; else it times out."""
    watcher = FleetWatcher(controller.db, lambda: T0, interval_s=0.05)
    version = await watcher.refresh()
    assert await watcher.wait_change(version, 0.2) == version
    await Agent(controller, "cah-01").online(T0)
    assert await watcher.wait_change(version, 5.0) > version
