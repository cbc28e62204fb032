"""Fixtures for RADIUS tests: a migrated database with a registered NAS, a running
server on loopback ports, and ``radclient`` (Debian's freeradius-utils) as the real peer."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.config import Settings, load_settings
from controller.registry import Commune, Registry
from controller.storage import Database, open_database
from radius import NasRegistry, RadiusServer, build_server
from tests.testbed import require

SECRET = "radius-test-secret-0123"
NAS_ID = "nas-46201-01"
MASTER = "test-master-key-0123456789"


@pytest.fixture
def radius_settings(tmp_path: Path) -> Settings:
    """Settings on a temporary SQLite database."""
    return load_settings(
        None,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        command_master_key=MASTER,
        sessions={"acct_interval_s": 60, "session_minutes": 120, "up_kbps": 2000},
        radius={"enabled": True, "auth_port": 1, "acct_port": 1, "idle_timeout_s": 600},
    )


@pytest.fixture
async def radius_db(radius_settings: Settings) -> AsyncIterator[Database]:
    """A migrated database where NAS ``nas-46201-01`` (127.0.0.1) is registered."""
    db = await open_database(radius_settings.database.url.get_secret_value())
    reg = Registry(db, MASTER)
    await reg.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
    await reg.add_access_point(NAS_ID, "46201", "Rocamadour — CoovaChilli")
    await reg.add_access_point("nas-46201-02", "46201", "Rocamadour — autre NAS")
    await NasRegistry(db).add(NAS_ID, "127.0.0.1", SECRET)
    yield db
    await db.aclose()


@dataclass
class Running:
    """A RADIUS server serving on loopback."""

    server: RadiusServer
    auth_port: int
    acct_port: int


@pytest.fixture
async def radius_server(radius_settings: Settings, radius_db: Database) -> AsyncIterator[Running]:
    """The server on 127.0.0.1 with kernel-chosen ports, stopped after the test."""
    server = await build_server(radius_settings, radius_db)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-under-test")
        await asyncio.wait_for(server.ready.wait(), 10)
        yield Running(server, server.addresses["auth"][1], server.addresses["acct"][1])
        task.cancel()


@dataclass
class RadResult:
    """What radclient printed and returned."""

    rc: int
    out: str


_RADCLIENT = shutil.which("radclient")


def _radclient() -> str:
    found = _RADCLIENT
    if found is None:
        require("radclient (Debian package freeradius-utils; tests/run.sh installs it)")
    assert found is not None
    return found


async def radclient(
    port: int,
    kind: str,
    packets: str,
    *,
    secret: str = SECRET,
    retries: int = 1,
    wait_s: float = 2.0,
    extra: tuple[str, ...] = (),
) -> RadResult:
    """Run radclient against 127.0.0.1:``port`` with ``packets`` on stdin."""
    proc = await asyncio.create_subprocess_exec(
        _radclient(),
        "-x",
        "-r",
        str(retries),
        "-t",
        str(wait_s),
        *extra,
        f"127.0.0.1:{port}",
        kind,
        secret,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(packets.encode())
    assert proc.returncode is not None
    return RadResult(proc.returncode, out.decode(errors="replace"))
