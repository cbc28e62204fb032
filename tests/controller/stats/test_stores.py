"""Stores: the embedded SQL store, InfluxDB 1.6 (v1 write, InfluxQL read) and
VictoriaMetrics through influxdb-client (v2 write, read back with its export API)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from controller.stats._core import Limits
from controller.stats._pipeline import Pipeline
from controller.stats._pseudo import OptOut
from controller.stats._sim import simulate_day
from controller.stats._stores import (
    BatchWriter,
    Influx1Store,
    Influx2Store,
    SqlStatsStore,
    StatsStore,
    StoreError,
    line_protocol,
)
from controller.stats.models import PRESENCE_FIELDS, Cell
from controller.storage import Database, open_database
from controller.storage.schema import stats_cells
from tests.controller.stats.conftest import Server
from tests.testbed import free_port

TZ = ZoneInfo("Europe/Paris")
DAY = "2026-08-12"
ALLOWED_TAGS = {"scope", "period", "insee", "ap", "origin", "destination"}
SCOPES = ("territory", "commune", "hotspot", "flow")


class Day:
    """A protected simulated day, with the MACs and pseudonyms that must never leak."""

    def __init__(self) -> None:
        sim = simulate_day(DAY, scale=0.05, seed=21)
        p = Pipeline(TZ, Limits(), 11, OptOut(b"k"), rng=random.Random(1))
        for s in sim.sessions:
            p.observe(
                ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start, stop=s.stop,
                up=s.up, down=s.down,
            )  # fmt: skip
        macs = {s.mac for s in sim.sessions}
        self.secrets = set()
        for mac in macs:
            self.secrets |= {mac, mac.replace(":", ""), p.keys.pseudonym(DAY, mac).hex()[:16]}
        self.cells = p.finalise(DAY).protected.published
        assert self.cells


@pytest.fixture(scope="module")
def day() -> Day:
    """One simulated, protected day."""
    return Day()


def as_set(cells: list[Cell]) -> set[tuple[object, ...]]:
    return {(c.key, tuple(sorted(c.values.items()))) for c in cells}


def assert_clean(text: str, day: Day) -> None:
    """No MAC (either spelling) nor pseudonym prefix appears in ``text``."""
    low = text.lower()
    leaks = [s for s in day.secrets if s in low]
    assert not leaks, f"{len(leaks)} device identifiers found in the store"


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path}/borne.db")
    yield db
    await db.aclose()


async def test_sql_store_round_trip_idempotent_and_clean(sqlite_db: Database, day: Day) -> None:
    """The embedded store gives back exactly what it took, once, and holds no device id."""
    store = SqlStatsStore(sqlite_db)
    await store.write(day.cells)
    await store.write(day.cells)
    assert as_set(await store.read_day(DAY)) == as_set(day.cells)
    whole = await store.read_period(DAY, DAY, scopes=SCOPES)
    assert as_set(whole) == as_set(day.cells) and len(whole) == len(day.cells)
    async with sqlite_db.connect() as conn:
        rows = (await conn.execute(stats_cells.select())).all()
    assert len(rows) == len(day.cells)
    assert_clean(json.dumps([list(map(str, r)) for r in rows]), day)


async def test_sql_store_on_postgres(postgres_url: str, day: Day) -> None:
    """The embedded store works the same on PostgreSQL."""
    db = await open_database(postgres_url)
    try:
        async with db.begin() as conn:
            await conn.execute(stats_cells.delete())
        store = SqlStatsStore(db)
        await store.write(day.cells)
        await store.write(day.cells[:10])
        assert as_set(await store.read_day(DAY)) == as_set(day.cells)
    finally:
        async with db.begin() as conn:
            await conn.execute(stats_cells.delete())
        await db.aclose()


async def test_influxdb1_round_trip_and_series_scan(influxdb1: Server, day: Day) -> None:
    """InfluxDB 1.6: v1 line-protocol write, InfluxQL read gives the same cells; every
    stored series has only place/period tags and no MAC or pseudonym anywhere."""
    store = Influx1Store(influxdb1.url, "borne_stats", TZ)
    try:
        await store.create_database()
        await store.write(day.cells)
        await store.write(day.cells)
        assert as_set(await store.read_day(DAY)) == as_set(day.cells)
        whole = await store.read_period(DAY, DAY, scopes=SCOPES)
        assert as_set(whole) == as_set(day.cells) and len(whole) == len(day.cells)
        tag_keys = await store.query("SHOW TAG KEYS")
        keys = {v[0] for r in tag_keys["results"] for s in r.get("series", []) for v in s["values"]}
        assert keys <= ALLOWED_TAGS and {"insee", "scope", "origin"} <= keys
        everything = []
        for q in ("SHOW SERIES", "SELECT * FROM wifi_presence", "SELECT * FROM wifi_flow"):
            everything.append(json.dumps(await store.query(q)))
        assert_clean("".join(everything), day)
        series = (await store.query("SHOW SERIES"))["results"][0]["series"][0]["values"]
        assert len(series) > 10
    finally:
        await store.aclose()


async def vm_export(url: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/v1/export", data={"match[]": '{__name__=~".+"}', "start": "0"}) as r,
    ):
        assert r.status == 200
        return [json.loads(line) for line in (await r.text()).splitlines() if line]


async def test_influxdb2_client_write_to_victoriametrics(victoria: Server, day: Day) -> None:
    """influxdb-client's async v2 write reaches VictoriaMetrics: every field of every cell
    comes back from /api/v1/export with its tags, and no series names a device."""
    store = Influx2Store(victoria.url, "ignored-bucket", "borne", "any-token", TZ)
    try:
        await store.write(day.cells)
        await store.write(day.cells)
    finally:
        await store.aclose()
    expected = set()
    for c in day.cells:
        measurement, rest = line_protocol(c).split(",", 1)
        tags = dict(t.split("=", 1) for t in rest.split(" ", 1)[0].split(","))
        for name, value in c.values.items():
            key = (f"{measurement}_{name}", tuple(sorted(tags.items())))
            expected.add((key, c.start * 1000, float(value)))

    async def exported() -> set[tuple[object, ...]]:
        async with aiohttp.ClientSession() as http:
            await (await http.get(f"{victoria.url}/internal/force_flush")).read()
        got: set[tuple[object, ...]] = set()
        for series in await vm_export(victoria.url):
            metric = dict(series["metric"])
            name = metric.pop("__name__")
            for ts, v in zip(series["timestamps"], series["values"], strict=True):
                got.add(((name, tuple(sorted(metric.items()))), ts, float(v)))
        return got

    got: set[tuple[object, ...]] = set()
    for _ in range(50):
        got = await exported()
        if got == expected:
            break
        await asyncio.sleep(0.2)
    assert got == expected
    text = json.dumps(await vm_export(victoria.url))
    assert_clean(text, day)
    labels = {k for s in await vm_export(victoria.url) for k in s["metric"]}
    assert labels <= ALLOWED_TAGS | {"__name__"}


async def test_writer_retries_through_an_outage(influxdb1: Server, day: Day) -> None:
    """Cells submitted while InfluxDB hangs are written once it answers again; none lost."""
    store = Influx1Store(influxdb1.url, "outage", TZ, timeout_s=0.5)
    await store.create_database()
    writer = BatchWriter(store, batch_size=100, backoff_cap_s=0.3)
    os.kill(influxdb1.proc.pid, signal.SIGSTOP)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(writer.run(), name="test.writer")
            writer.submit(day.cells)
            while writer.failures < 2:  # noqa: ASYNC110 (a counter, not an event)
                await asyncio.sleep(0.05)
            # Nothing written; at most one batch (100) is out of the buffer, in flight.
            assert writer.written == 0 and len(writer) >= len(day.cells) - 100
            os.kill(influxdb1.proc.pid, signal.SIGCONT)
            async with asyncio.timeout(60):
                await writer.drained()
            task.cancel()
    finally:
        os.kill(influxdb1.proc.pid, signal.SIGCONT)
        await store.aclose()
    assert writer.written == len(day.cells) and writer.dropped == 0
    check = Influx1Store(influxdb1.url, "outage", TZ)
    try:
        assert as_set(await check.read_day(DAY)) == as_set(day.cells)
    finally:
        await check.aclose()


async def test_writer_buffer_is_bounded_and_drops_are_counted(day: Day) -> None:
    """With nothing answering, the buffer keeps the newest max_cells and counts the rest."""
    store = Influx1Store(f"http://127.0.0.1:{free_port()}", "x", TZ, timeout_s=0.5)
    writer = BatchWriter(store, batch_size=50, max_cells=100, backoff_cap_s=0.1)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(writer.run(), name="test.writer")
            writer.submit(day.cells[:150])
            while writer.failures < 3:  # noqa: ASYNC110 (a counter, not an event)
                await asyncio.sleep(0.02)
            task.cancel()
    finally:
        await store.aclose()
    assert len(writer) == 100 and writer.dropped == 50 and writer.written == 0


async def test_unreachable_store_raises_store_error() -> None:
    """Connection failures become StoreError, for reads and writes."""
    store: StatsStore = Influx1Store(f"http://127.0.0.1:{free_port()}", "x", TZ)
    try:
        with pytest.raises(StoreError):
            await store.read_day(DAY)
    finally:
        await store.aclose()


def test_line_protocol_escapes_tags() -> None:
    """Tag values with spaces, commas or equal signs are escaped; fields are integers."""
    cell = Cell("presence", "hotspot", "day", 100, DAY, "46240", "ap a,b=c", "", {"visitors": 12})
    assert line_protocol(cell) == (
        r"wifi_presence,ap=ap\ a\,b\=c,insee=46240,period=day,scope=hotspot visitors=12i 100"
    )


async def test_nothing_stored_links_two_days_of_a_device(sqlite_db: Database) -> None:
    """The same devices on two days: the store holds only places, periods and counts, no
    column could carry an identifier, and no MAC or either day's pseudonym appears."""
    sim = await asyncio.to_thread(simulate_day, DAY, scale=0.03, seed=5)
    next_day = "2026-08-13"
    p = Pipeline(TZ, Limits(), 11, OptOut(b"k"), rng=random.Random(2))
    secrets: set[str] = set()
    for day, shift in ((DAY, 0.0), (next_day, 86400.0)):
        for s in sim.sessions:
            p.observe(
                ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start + shift,
                stop=s.stop + shift, up=s.up, down=s.down,
            )  # fmt: skip
        for mac in {s.mac for s in sim.sessions}:
            secrets |= {mac, mac.replace(":", ""), p.keys.pseudonym(day, mac).hex()[:16]}
        await SqlStatsStore(sqlite_db).write(p.finalise(day).protected.published)
    columns = {c.name for c in stats_cells.columns}
    identity = {"kind", "scope", "period", "start", "day", "insee", "ap_id", "destination"}
    assert columns - identity == {"noised", *PRESENCE_FIELDS}
    async with sqlite_db.connect() as conn:
        rows = (await conn.execute(stats_cells.select())).all()
    assert {r.day for r in rows} == {DAY, next_day}
    text = json.dumps([list(map(str, r)) for r in rows]).lower()
    assert not [x for x in secrets if x in text]
