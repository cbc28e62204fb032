"""Shared fixtures: prerequisites, free ports, real mosquitto and PostgreSQL, the state
database on both, the hotspot.

Fixtures start real peers (see ``tests/README.md``); they never fake one. A missing
prerequisite skips the test through ``require()``, or fails it when
``BORNE_REQUIRE_ALL=1`` (CI and ``tests/run.sh``). Tests that use a fixture below get its
marker automatically (``mosquitto`` -> ``broker``, ``postgres_url`` -> ``postgres``,
``hotspot``/``make_hotspot`` -> ``netns``), so ``-m "not netns"`` is reliable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from blockbuster import blockbuster_ctx
from sqlalchemy.ext.asyncio import create_async_engine

from controller.storage import Database, open_database
from tests.testbed import Hotspot, MosquittoBroker, free_port, require, wait_for

__all__ = ["Hotspot", "MosquittoBroker", "free_port", "require", "wait_for"]

POSTGRES_URL_ENV = "BORNE_TEST_POSTGRES_URL"

_FIXTURE_MARKERS = {
    "mosquitto": "broker",
    "postgres_url": "postgres",
    "hotspot": "netns",
    "make_hotspot": "netns",
}
_HOTSPOTS = pytest.StashKey[list[Hotspot]]()
_session_broker: MosquittoBroker | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the markers of the real peers its fixtures start."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture_name, marker in _FIXTURE_MARKERS.items():
            if fixture_name in names and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the test's hotspot processes to its failure report."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for hs in item.stash.get(_HOTSPOTS, []):
            report.sections.append((f"hotspot {hs.ns.ap} logs", hs.log_tails()))
    return report


# --------------------------------------------------------------------------- mosquitto


def _mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A real mosquitto broker on ``127.0.0.1:<free port>`` for the whole test session.

    Anonymous, no persistence. ``host``, ``port``, ``pid``, ``url``; ``stop()`` and
    ``start()`` keep the port (outage tests). If a test leaves it stopped, it is started
    again before the next test. Stopped by PID at the end of the session.
    """
    global _session_broker
    binary = _mosquitto_binary()
    if binary is None:
        require("mosquitto (Debian package mosquitto; tests/run.sh installs it)")
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), binary=binary)
    broker.start()
    _session_broker = broker
    try:
        yield broker
    finally:
        _session_broker = None
        broker.stop()


@pytest.fixture(autouse=True)
def _restart_session_broker() -> Iterator[None]:
    """Start the session broker again when a test (an outage test) left it stopped."""
    yield
    broker = _session_broker
    if broker is not None and not broker.running:
        broker.start()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a real, empty-at-start PostgreSQL database (asyncpg driver).

    From ``BORNE_TEST_POSTGRES_URL`` (``tests/run.sh`` starts the cluster and sets it).
    """
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        require(
            f"{POSTGRES_URL_ENV} (e.g. postgresql+asyncpg://borne:borne@127.0.0.1:5432/borne_test;"
            " tests/run.sh starts PostgreSQL and sets it)"
        )
    return url


async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    """A fresh, empty database URL: a SQLite file in ``tmp_path`` (``kind`` "sqlite"), or
    the test PostgreSQL ("postgres") with its schema dropped first."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database URL, once on SQLite and once on the test PostgreSQL."""
    return await empty_database_url(request, tmp_path, request.param)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A migrated state database (on SQLite, then on PostgreSQL: see ``db_url``)."""
    database = await open_database(db_url)
    yield database
    await database.aclose()


# --------------------------------------------------------------------------- hotspot


@pytest.fixture
def make_hotspot(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Hotspot]]:
    """Factory building a real openNDS hotspot (``tests/testbed.py``), torn down after the test.

    ``make_hotspot(fas_port=..., gateway_name=..., **Hotspot options)`` returns a built
    ``Hotspot`` whose FAS is ``http://10.46.2.1:<fas_port><faspath>`` (the root namespace
    side of the root<->ap link: bind the portal there or on 0.0.0.0). One at a time.
    Logs stay in the test's ``tmp_path`` and are attached to failure reports.
    """
    built: list[Hotspot] = []
    request.node.stash[_HOTSPOTS] = built

    def factory(
        *, fas_port: int | None = None, gateway_name: str = "ap-46201-01", **options: Any
    ) -> Hotspot:
        options.setdefault("workdir", tmp_path / f"hotspot-{len(built) + 1}")
        hs = Hotspot(
            fas_port=fas_port if fas_port is not None else free_port(),
            gateway_name=gateway_name,
            **options,
        )
        built.append(hs)
        return hs.build()

    yield factory
    errors: list[str] = []
    for hs in reversed(built):
        try:
            hs.teardown()
        except Exception as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)


@pytest.fixture
def hotspot(make_hotspot: Callable[..., Hotspot]) -> Hotspot:
    """A built hotspot: gateway ``ap-46201-01``, FAS ``http://10.46.2.1:<free port>/portal/``,
    the client already has its DHCP lease."""
    return make_hotspot()


# --------------------------------------------------------------------------- event loop


@pytest.fixture(autouse=True)
def _no_blocking_calls_in_the_loop() -> Iterator[None]:
    """Fail any test whose code makes a blocking call in the event loop's thread."""
    with blockbuster_ctx() as bb:
        # Start-up work, done once before serving: opening the database migrates its
        # schema; building a web application loads its templates and catalogs (the
        # controller does both in a worker thread; tests may call them directly).
        for fn in bb.functions.values():
            fn.can_block_in("controller/storage/db.py", {"open_database", "_alembic_upgrade"})
            fn.can_block_in("captive_portal/app.py", {"create_app"})
            fn.can_block_in("dashboards/app.py", {"create_app"})
            fn.can_block_in("sqlalchemy/ext/asyncio/engine.py", {"create_async_engine"})
            # asyncpg looks for ~/.pgpass when it opens a pooled connection.
            fn.can_block_in("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"})
            # Importing a module reads files once per process.
            fn.can_block_in("<frozen importlib._bootstrap>", {"_find_and_load"})
        yield
