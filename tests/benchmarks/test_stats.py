"""Statistics benchmarks: a summer-peak day's aggregation, and writes to InfluxDB.

Ratios against references measured in the same run: the pipeline (MAC check against the
opt-out list, HMAC pseudonym, day state, aggregation per territory/commune/hotspot and
hour/day, flows, disclosure control) against the least any count must do (one pass
putting each MAC in its commune's set); the stores' writes (line protocol built from
cells, batched, through our writer) against raw line-protocol POSTs of the very same
points, to InfluxDB 1.6 (v1 API) and to VictoriaMetrics (influxdb-client's v2 API).
Results are printed and copied to docs/BENCHMARKS.md by hand, with this command:

    .venv/bin/pytest -q -s -m slow tests/benchmarks/test_stats.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from controller.stats._core import Limits
from controller.stats._pipeline import Pipeline
from controller.stats._pseudo import OptOut
from controller.stats._sim import SimDay, simulate_day
from controller.stats._stores import BatchWriter, Influx1Store, Influx2Store, line_protocol
from controller.stats.models import Cell
from tests.controller.stats.conftest import Server, influxdb1, victoria  # noqa: F401

pytestmark = pytest.mark.slow

TZ = ZoneInfo("Europe/Paris")
PEAK_DAY = "2026-08-15"  # a Saturday in August, the Lot's busiest
BATCH = 5000


@pytest.fixture(scope="module")
def peak() -> SimDay:
    """A summer-peak day of at least 500,000 sessions over the 320 communes."""
    sim = simulate_day(PEAK_DAY, scale=2.0, seed=42)
    assert len(sim.sessions) >= 500_000 and len(sim.visitors) == 320
    return sim


def run_pipeline(sim: SimDay) -> tuple[float, list[Cell], int]:
    optout = OptOut(b"bench")
    for mac in sim.optout_macs:
        optout.add(mac)
    p = Pipeline(TZ, Limits(), 11, optout)
    t = time.perf_counter()
    for s in sim.sessions:
        p.observe(
            ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start, stop=s.stop,
            up=s.up, down=s.down,
        )  # fmt: skip
    t_observe = time.perf_counter() - t
    report = p.finalise(PEAK_DAY)
    total = time.perf_counter() - t
    print(
        f"\n  observe {t_observe:.2f} s, aggregate + protect {total - t_observe:.2f} s;"
        f" {report.cells} cells, {len(report.protected.published)} published"
        f" ({report.protected.primary} primary, {report.protected.secondary} secondary)"
    )
    return total, report.protected.published, report.cells


def test_summer_peak_day_aggregation(peak: SimDay) -> None:
    """Time to pseudonymise, aggregate and protect a ≥ 500,000-session day, against one
    pass putting each MAC in its commune's set (same sessions, same run)."""
    t = time.perf_counter()
    ref: dict[str, set[str]] = defaultdict(set)
    for s in peak.sessions:
        ref[s.insee].add(s.mac)
    t_ref = time.perf_counter() - t
    t_pipe, published, _cells = run_pipeline(peak)
    n = len(peak.sessions)
    print(
        f"  {n} sessions, {peak.devices} devices: pipeline {t_pipe:.2f} s"
        f" ({n / t_pipe:,.0f} sessions/s), reference {t_ref:.3f} s"
        f" ({n / t_ref:,.0f} sessions/s), ratio {t_pipe / t_ref:.0f}x"
    )
    assert published and len(ref) == 320


def spread(cells: list[Cell], days: int) -> list[Cell]:
    """The same cells over several consecutive days (more points to write)."""
    return [dataclasses.replace(c, start=c.start + 86400 * d) for d in range(days) for c in cells]


async def raw_posts(url: str, lines: list[str]) -> float:
    t = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        for i in range(0, len(lines), BATCH):
            body = "\n".join(lines[i : i + BATCH]).encode()
            async with http.post(url, data=body) as resp:
                assert resp.status == 204, await resp.text()
    return time.perf_counter() - t


async def through_writer(store: Influx1Store | Influx2Store, cells: list[Cell]) -> float:
    writer = BatchWriter(store, batch_size=BATCH, max_cells=len(cells) + 1)
    t = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run(), name="bench.writer")
        writer.submit(cells)
        await writer.drained()
        task.cancel()
    elapsed = time.perf_counter() - t
    assert writer.written == len(cells) and writer.failures == 0
    return elapsed


async def test_influx_write_throughput(
    peak: SimDay,
    influxdb1: Server,  # noqa: F811
    victoria: Server,  # noqa: F811
) -> None:
    """Points/s through our stores against raw line-protocol POSTs of the same points."""
    _t, published, _n = await asyncio.to_thread(run_pipeline, peak)
    cells = spread(published, 7)
    lines = [line_protocol(c) for c in cells]
    n = len(cells)
    v1 = Influx1Store(influxdb1.url, "bench", TZ)
    try:
        await v1.create_database()
        await v1.query('CREATE DATABASE "raw"')
        t_v1 = await through_writer(v1, cells)
    finally:
        await v1.aclose()
    t_raw1 = await raw_posts(f"{influxdb1.url}/write?db=raw&precision=s", lines)
    v2 = Influx2Store(victoria.url, "bench", "borne", "token", TZ)
    try:
        t_v2 = await through_writer(v2, cells)
    finally:
        await v2.aclose()
    t_raw2 = await raw_posts(f"{victoria.url}/write?precision=s", lines)
    print(
        f"\n  {n} points, batches of {BATCH}\n"
        f"  InfluxDB 1.6  store {n / t_v1:,.0f} pts/s, raw POST {n / t_raw1:,.0f} pts/s,"
        f" ratio {t_v1 / t_raw1:.2f}x\n"
        f"  VictoriaMetrics influxdb-client {n / t_v2:,.0f} pts/s,"
        f" raw POST {n / t_raw2:,.0f} pts/s, ratio {t_v2 / t_raw2:.2f}x"
    )
