"""Accounting rules in the database, on SQLite (through the application's async engine and
through the accounting writer's own thread) and on PostgreSQL, one by one and batched."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from controller.config import SessionSettings
from controller.outbox import pending
from controller.registry import Commune, Registry
from controller.sessions import SessionLedger
from controller.storage import Database, open_database
from controller.storage.schema import sessions
from radius._core import AcctRecord, AcctStatus, NasClient
from radius._store import AccountingStore, AccountingWriter, NasRegistry, NasRegistryError
from tests.conftest import empty_database_url

NAS = NasClient("nas-a", b"secret-secret-secret", "192.0.2.1", "46201")
OTHER = NasClient("nas-b", b"secret-secret-secret", "192.0.2.2", "46201")
T0 = 1_790_000_000.0
# Databases whose batches go through the writer thread (the others: the async engine).
_THREADED: weakref.WeakKeyDictionary[Database, bool] = weakref.WeakKeyDictionary()


@pytest.fixture(
    params=["sqlite", "sqlite-thread", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database (SQLite file or the test PostgreSQL) with two NAS."""
    kind = "sqlite" if request.param.startswith("sqlite") else "postgres"
    db = await open_database(await empty_database_url(request, tmp_path, kind))
    _THREADED[db] = request.param == "sqlite-thread"
    reg = Registry(db, "master-key-for-tests")
    await reg.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
    for nas in (NAS, OTHER):
        await reg.add_access_point(nas.nas_id, "46201", nas.nas_id)
        await NasRegistry(db).add(nas.nas_id, nas.address, nas.secret.decode())
    yield db
    await db.aclose()


def rec(
    status: AcctStatus,
    sid: str = "s1",
    mac: str | None = "02:00:00:00:00:01",
    at: float = T0,
    **kw: Any,
) -> AcctRecord:
    values: dict[str, Any] = dict(
        status=status,
        session_id=sid,
        mac=mac,
        ip="10.0.0.2",
        user_name="u",
        event_time=at,
        session_time=None,
        input_octets=0,
        output_octets=0,
        terminate_cause=None,
    )
    values.update(kw)
    return AcctRecord(**values)


async def apply(db: Database, *items: tuple[NasClient, AcctRecord]) -> list[str]:
    store = AccountingStore(SessionLedger(SessionSettings()))
    writer = AccountingWriter(db, store, threaded=_THREADED[db])
    assert writer.threaded == _THREADED[db]
    try:
        return await writer.write(list(items))
    finally:
        await writer.aclose()


async def rows(db: Database) -> list[sa.Row[Any]]:
    async with db.connect() as conn:
        return list((await conn.execute(sa.select(sessions).order_by(sessions.c.id))).all())


async def events(db: Database) -> list[tuple[int, str]]:
    async with db.connect() as conn:
        return [(e.session.id, e.kind) for e in await pending(conn, "t")]


async def test_start_interim_stop_in_one_batch(store_db: Database) -> None:
    """Start, Interim and Stop of one session in one batch: one session, ordered events."""
    out = await apply(
        store_db,
        (NAS, rec(AcctStatus.START)),
        (NAS, rec(AcctStatus.INTERIM, at=T0 + 60, input_octets=2**33, output_octets=5)),
        (
            NAS,
            rec(
                AcctStatus.STOP,
                at=T0 + 90,
                input_octets=2**33 + 1,
                output_octets=4,
                terminate_cause="user-request",
            ),
        ),
    )
    assert out == ["opened", "updated", "stopped"]
    (s,) = await rows(store_db)
    assert (s.up_bytes, s.down_bytes, s.stopped_at, s.terminate_cause) == (
        2**33 + 1,
        5,
        T0 + 90,
        "user-request",
    )
    assert await events(store_db) == [
        (s.id, "start"),
        (s.id, "update"),
        (s.id, "update"),
        (s.id, "stop"),
    ]


async def test_replays_change_nothing(store_db: Database) -> None:
    """A second Start, an older Interim and a second Stop leave the session as it was."""
    await apply(store_db, (NAS, rec(AcctStatus.START)))
    await apply(store_db, (NAS, rec(AcctStatus.INTERIM, at=T0 + 60, input_octets=100)))
    out = await apply(
        store_db,
        (NAS, rec(AcctStatus.START)),
        (NAS, rec(AcctStatus.INTERIM, at=T0 + 30, input_octets=50)),
        (NAS, rec(AcctStatus.STOP, at=T0 + 90, input_octets=120)),
        (NAS, rec(AcctStatus.STOP, at=T0 + 95, input_octets=999)),
    )
    assert out == ["duplicate", "updated", "stopped", "already-stopped"]
    (s,) = await rows(store_db)
    assert (s.up_bytes, s.updated_at, s.stopped_at) == (120, T0 + 90, T0 + 90)


async def test_a_new_session_of_the_same_device_closes_the_old_one(store_db: Database) -> None:
    """Same MAC, same NAS, new Acct-Session-Id: the old session closes (new-session), across
    batches and inside one batch; another NAS is not affected."""
    await apply(store_db, (NAS, rec(AcctStatus.START, "s1")), (OTHER, rec(AcctStatus.START, "s1")))
    await apply(
        store_db,
        (NAS, rec(AcctStatus.START, "s2", at=T0 + 10)),
        (NAS, rec(AcctStatus.START, "s3", at=T0 + 20)),
    )
    r = await rows(store_db)
    assert [(x.ap_id, x.stopped_at, x.terminate_cause) for x in r] == [
        ("nas-a", T0 + 10, "new-session"),
        ("nas-b", None, None),
        ("nas-a", T0 + 20, "new-session"),
        ("nas-a", None, None),
    ]


async def test_interim_and_stop_for_unknown_sessions_open_them(store_db: Database) -> None:
    """A lost Start: Interim opens the session Acct-Session-Time earlier; a lone Stop
    records the whole stay."""
    out = await apply(
        store_db,
        (NAS, rec(AcctStatus.INTERIM, "i1", at=T0, session_time=300, input_octets=7)),
        (NAS, rec(AcctStatus.STOP, "i2", mac="02:00:00:00:00:02", at=T0, session_time=60)),
    )
    assert out == ["opened", "opened-stopped"]
    a, b = await rows(store_db)
    assert (a.started_at, a.stopped_at, a.up_bytes) == (T0 - 300, None, 7)
    assert (b.started_at, b.stopped_at, b.terminate_cause) == (T0 - 60, T0, "stop")


async def test_accounting_on_in_a_batch_closes_only_earlier_sessions_of_its_nas(
    store_db: Database,
) -> None:
    """Start a, Accounting-On, Start b: a closes (nas-reboot), b stays open, other NAS too."""
    out = await apply(
        store_db,
        (NAS, rec(AcctStatus.START, "a")),
        (OTHER, rec(AcctStatus.START, "o")),
        (NAS, rec(AcctStatus.ACCOUNTING_ON, "", mac=None, at=T0 + 5)),
        (NAS, rec(AcctStatus.START, "b", mac="02:00:00:00:00:09", at=T0 + 6)),
    )
    assert out == ["opened", "opened", "closed:1", "opened"]
    r = await rows(store_db)
    assert [(x.ap_id, x.terminate_cause) for x in r] == [
        ("nas-a", "nas-reboot"),
        ("nas-b", None),
        ("nas-a", None),
    ]


async def test_nas_registry_checks_and_lists(store_db: Database) -> None:
    """A NAS needs a registered AP, an IP address and a 16+ character secret."""
    reg = NasRegistry(store_db)
    with pytest.raises(NasRegistryError, match="unknown access point"):
        await reg.add("nas-zz", "192.0.2.9", "x" * 16)
    with pytest.raises(NasRegistryError, match="not an IP"):
        await reg.add("nas-a", "host.example", "x" * 16)
    with pytest.raises(NasRegistryError, match="16"):
        await reg.add("nas-a", "192.0.2.1", "short")
    clients = await reg.clients()
    assert clients["192.0.2.1"] == [NAS] and clients["192.0.2.2"] == [OTHER]


class _RecordingWriter(AccountingWriter):
    """The real writer, noting how many commits each WAL sync covered."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, AccountingStore(SessionLedger(SessionSettings())))
        self.covered: list[int] = []

    def _fdatasync_wal(self) -> None:
        self.covered.append(self.commits)  # every commit so far, in a sync thread
        super()._fdatasync_wal()


async def _sqlite_db(tmp_path: Path) -> Database:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    reg = Registry(db, "master-key-for-tests")
    await reg.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
    await reg.add_access_point(NAS.nas_id, "46201", NAS.nas_id)
    return db


async def test_writer_answers_only_after_a_wal_sync_covering_the_batch(tmp_path: Path) -> None:
    """On an SQLite file each write returns after an fdatasync of the WAL that started
    after its commit."""
    db = await _sqlite_db(tmp_path)
    writer = _RecordingWriter(db)
    try:
        assert writer.threaded
        for i in range(1, 4):
            out = await writer.write([(NAS, rec(AcctStatus.START, f"s{i}", mac=f"02::0{i}"))])
            assert out == ["opened"]
            assert writer.commits == i and writer.covered[-1] == i
        assert writer.syncs == 3
    finally:
        await writer.aclose()
    assert len(await rows(db)) == 3
    with pytest.raises(RuntimeError, match="closed"):
        await writer.write([(NAS, rec(AcctStatus.START, "late"))])
    await db.aclose()


async def test_concurrent_writes_share_wal_syncs(tmp_path: Path) -> None:
    """Batches written at once are applied one after the other, in call order, and one
    sync covers every batch committed before it started (group commit)."""
    db = await _sqlite_db(tmp_path)
    writer = _RecordingWriter(db)
    try:
        outs = await asyncio.gather(
            *(
                writer.write([(NAS, rec(AcctStatus.START, f"c{i:02}", mac=f"02::{i:02x}"))])
                for i in range(30)
            )
        )
    finally:
        await writer.aclose()
    assert outs == [["opened"]] * 30
    assert writer.commits == 30 and 1 <= writer.syncs <= 30
    assert max(writer.covered) == 30  # the last batch waited for a sync after its commit
    r = await rows(db)
    # Call order is commit order: ascending ids follow the calls.
    assert [x.started_at for x in r] == [T0] * 30 and len({x.id for x in r}) == 30
    async with db.connect() as conn:
        ids = (
            await conn.execute(
                sa.text("SELECT acct_session_id FROM radius_sessions ORDER BY session_id")
            )
        ).all()
    assert [i[0] for i in ids] == [f"c{i:02}" for i in range(30)]
    await db.aclose()


def _random_stream(seed: int, n: int) -> list[list[tuple[NasClient, AcctRecord]]]:
    """``n`` records in random batches: starts, interims, stops, duplicates, lost starts,
    a device coming back with a new session, and an Accounting-On, on two NAS."""
    rnd = random.Random(seed)
    out: list[tuple[NasClient, AcctRecord]] = []
    for i in range(n):
        nas = rnd.choice((NAS, OTHER))
        r = rnd.random()
        status = (
            AcctStatus.ACCOUNTING_ON
            if r < 0.01
            else rnd.choice((AcctStatus.START, AcctStatus.INTERIM, AcctStatus.STOP))
        )
        up = rnd.randrange(2**34)
        out.append(
            (
                nas,
                rec(
                    status,
                    "" if status == AcctStatus.ACCOUNTING_ON else f"s{rnd.randrange(40)}",
                    mac=None if rnd.random() < 0.05 else f"02:00:00:00:00:{rnd.randrange(12):02x}",
                    at=T0 + i,
                    session_time=rnd.choice((None, 30)),
                    input_octets=up,
                    output_octets=up // 3,
                    terminate_cause=rnd.choice((None, "idle-timeout")),
                ),
            )
        )
    batches = []
    while out:
        k = rnd.randrange(1, 30)
        batches.append(out[:k])
        out = out[k:]
    return batches


async def _state(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    return [tuple(r) for r in await rows(db)], await events(db)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_writer_thread_and_async_engine_store_the_same(tmp_path: Path, seed: int) -> None:
    """The writer thread's own SQL (sqlite3, fixed statements) and the SQLAlchemy path used
    on every other database leave the same sessions, counters and outbox events after the
    same random stream of batches."""
    results = []
    for kind in ("sqlite", "sqlite-thread"):
        await asyncio.to_thread((tmp_path / kind).mkdir)
        db = await _sqlite_db(tmp_path / kind)
        await Registry(db, "master-key-for-tests").add_access_point(OTHER.nas_id, "46201", "b")
        _THREADED[db] = kind == "sqlite-thread"
        outcomes = [await apply(db, *batch) for batch in _random_stream(seed, 400)]
        results.append((outcomes, await _state(db)))
        await db.aclose()
    assert results[0] == results[1]
    outcomes, (sessions_, events_) = results[0]
    # The stream exercised every rule.
    seen = {o.split(":")[0] for batch in outcomes for o in batch}
    assert {"opened", "updated", "stopped", "duplicate", "already-stopped", "closed"} <= seen
    cause = list(sessions.c.keys()).index("terminate_cause")
    assert {"new-session", "nas-reboot"} <= {s[cause] for s in sessions_} and events_


@pytest.mark.postgres
@pytest.mark.parametrize("seed", [4, 5, 6])
async def test_postgres_batch_statements_store_what_sqlalchemy_stores(
    request: pytest.FixtureRequest, tmp_path: Path, seed: int
) -> None:
    """On PostgreSQL the writer's own statements (asyncpg, arrays, executemany, ids taken
    from the sequence) leave the same sessions, ids and events (in the same order) as the
    SQLAlchemy path."""
    results = []
    for raw in (False, True):
        db = await open_database(await empty_database_url(request, tmp_path, "postgres"))
        reg = Registry(db, "master-key-for-tests")
        await reg.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
        for nas in (NAS, OTHER):
            await reg.add_access_point(nas.nas_id, "46201", nas.nas_id)
        store = AccountingStore(SessionLedger(SessionSettings()))
        writer = AccountingWriter(db, store)
        assert not writer.threaded
        outcomes = []
        for batch in _random_stream(seed, 400):
            if raw:
                outcomes.append(await writer.write(batch))
            else:
                async with db.begin() as conn:
                    outcomes.append(await store.apply_batch(conn, batch))
        results.append((outcomes, await _state(db)))
        await db.aclose()
    assert results[0] == results[1]
    assert {o.split(":")[0] for batch in results[0][0] for o in batch} >= {"opened", "closed"}
