"""Legal log benchmarks: appends with encryption and hashing, and requisition searches
over a synthetic year of the Lot.

Ratios against references measured in the same run: appends against writing the same
number of bytes with the same fsyncs and no crypto; searches against decrypting every
record of a sample of days, scaled to the whole year (what a search without the blind
index must do). Results are printed and written to docs/BENCHMARKS.md by hand:

    .venv/bin/pytest -q -s -m slow tests/benchmarks/test_legal.py

The year holds ``BORNE_BENCH_LEGAL_RECORDS`` records (default 300,000, a CI-sized run);
the issue's scale is 50 million, built once in a kept folder and then searched:

    BORNE_BENCH_LEGAL_RECORDS=50000000 BORNE_BENCH_LEGAL_DIR=/var/tmp/borne-legal-50m \\
        nice .venv/bin/pytest -q -s -m slow tests/benchmarks/test_legal.py -k year

The folder keeps the keys, the log and how far the build went: an interrupted build
resumes at the first day it had not finished (that day is written again).
``BORNE_BENCH_LEGAL_DAYS=N`` builds and searches only the year's first N days (each day
as big as in the full year): the per-day figures of a build stopped part-way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.legal.keys import MasterKey, generate_signing_key, load_signing_key
from controller.legal.records import LegalRecord
from controller.legal.requisitions import Query, search
from controller.legal.store import Found, LegalStore
from tests.controller.legal.conftest import T0, record

pytestmark = pytest.mark.slow

BATCH = 1000
APPENDS = 100_000

YEAR_RECORDS = int(os.environ.get("BORNE_BENCH_LEGAL_RECORDS", "300000"))
YEAR_DIR = os.environ.get("BORNE_BENCH_LEGAL_DIR")
YEAR_START = dt.date(2025, 9, 1)  # a year up to the end of August 2026: searched at its peak
YEAR_DAYS = 365
# Build and search only the first days of the year (a build stopped part-way).
BUILT_DAYS = min(YEAR_DAYS, int(os.environ.get("BORNE_BENCH_LEGAL_DAYS", str(YEAR_DAYS))))
GATEWAYS = 640  # about two hotspots for each of the Lot's 320 communes
DEVICES = 3_000_000  # residents and a season of visitors
BLOCKS = 120  # 512-port SNAT blocks per public address (ports 1024-62463)
LOAD_BATCH = 10_000
TARGET_MAC = "06:00:00:00:00:01"  # outside the population's 02: prefix
TARGET_USER = "V-CIBLE-0001"
TARGET_DAYS = (10, 40, 70, 100, 130, 160, 190, 220, 250, 280, 310, 350)
# Days whose every record is decrypted for the reference (spread over the year).
SAMPLE_DAYS = 8


def session(i: int, start: float) -> LegalRecord:
    """The stop record of a 30-minute session."""
    ms = int(start * 1000)
    return record(i, event="stop", start_ms=ms, stop_ms=ms + 1_800_000, down_bytes=10**6)


def new_store(path: Path) -> LegalStore:
    return LegalStore(path, MasterKey.from_text(MasterKey.new_text()), Ed25519PrivateKey.generate())


def test_append_rate_with_encryption_and_hashing(tmp_path: Path) -> None:
    """Appends/s with AES-256-GCM, blind tags, RFC 6962 leaf hashes and an fsync per batch
    of 1000, against the same bytes written and fsynced without any crypto."""
    recs = [record(i) for i in range(APPENDS)]
    store = new_store(tmp_path / "legal")
    t = time.perf_counter()
    for b in range(0, APPENDS, BATCH):
        store.append([(b + i + 1, r) for i, r in enumerate(recs[b : b + BATCH])], T0)
    legal_s = time.perf_counter() - t
    store.close()
    size = sum(f.stat().st_size for f in (tmp_path / "legal").rglob("*") if f.is_file())
    per_record = size // APPENDS
    chunk = os.urandom(per_record * BATCH)
    t = time.perf_counter()
    with (tmp_path / "raw.log").open("ab") as fh:
        for _ in range(0, APPENDS, BATCH):
            fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
    raw_s = time.perf_counter() - t
    rate = APPENDS / legal_s
    print(
        f"\nlegal appends: {rate:,.0f} records/s; raw fsynced writes of the same bytes: "
        f"{APPENDS / raw_s:,.0f} records/s; ratio {legal_s / raw_s:.1f}x; "
        f"{per_record} bytes/record on disk ({size * 1_000_000 / APPENDS / 2**20:.0f} MiB "
        f"per million records)"
    )
    assert legal_s > raw_s  # the crypto costs something; the figure is the ratio above


# -- a synthetic year -----------------------------------------------------------------------


def year_plan(total: int) -> list[tuple[str, float, int]]:
    """(day, its midnight UTC, records) for each day of the year.

    Records per day follow the Lot's season: three times the winter's in early August
    (a Gaussian bump around 3 August, 35 days wide), summing to ``total``.
    """
    weights = []
    for i in range(YEAR_DAYS):
        doy = (YEAR_START + dt.timedelta(days=i)).timetuple().tm_yday
        weights.append(1.0 + 2.0 * math.exp(-(((doy - 215) / 35) ** 2)))
    scale = total / sum(weights)
    plan = []
    for i, w in enumerate(weights):
        day = YEAR_START + dt.timedelta(days=i)
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
        plan.append((day.isoformat(), midnight, max(2, round(w * scale / 2) * 2)))
    return plan


def _visit(rng: random.Random, sid: str, midnight: float) -> tuple[LegalRecord, LegalRecord]:
    """The start and stop records of one visitor's session on one hotspot."""
    g = rng.randrange(GATEWAYS)
    block = rng.randrange(BLOCKS)
    device = rng.randrange(DEVICES)
    start = int((midnight + rng.uniform(21_600, 79_200)) * 1000)
    voucher = rng.random() < 0.3
    first = LegalRecord(
        session_id=sid,
        event="start",
        auth_method="voucher" if voucher else "click",
        auth_ref=f"V-{rng.randrange(10**7):07d}" if voucher else f"cmd-{sid}",
        client_mac=f"02:00:{device >> 16 & 255:02x}:{device >> 8 & 255:02x}:{device & 255:02x}:01",
        private_ip=f"10.{46 + g // 256}.{g % 256}.{rng.randrange(2, 254)}",
        public_ip=f"198.18.{g // 256}.{g % 256 + 1}",
        port_start=1024 + block * 512,
        port_end=1024 + block * 512 + 511,
        start_ms=start,
        stop_ms=None,
        gateway=f"ap-{g:03d}",
        commune=f"46{g // 2:03d}",
        up_bytes=0,
        down_bytes=0,
        terminate_cause=None,
    )
    stop = dataclasses.replace(
        first,
        event="stop",
        stop_ms=start + rng.randrange(300_000, 10_800_000),
        up_bytes=rng.randrange(10**8),
        down_bytes=rng.randrange(10**9),
        terminate_cause="idle-timeout",
    )
    return first, stop


def target(index: int, midnight: float) -> tuple[LegalRecord, LegalRecord]:
    """The planted sessions of the searched device: one on each of ``TARGET_DAYS``."""
    rng = random.Random(f"target-{index}")
    first, stop = _visit(rng, f"cible-{index}", midnight)
    changes: dict[str, Any] = {"client_mac": TARGET_MAC}
    if index % 4 == 0:
        changes.update(auth_method="voucher", auth_ref=TARGET_USER)
    return dataclasses.replace(first, **changes), dataclasses.replace(stop, **changes)


def day_records(index: int, midnight: float, n: int) -> list[LegalRecord]:
    """The records of day ``index`` (deterministic), planted sessions included."""
    rng = random.Random(index)
    out: list[LegalRecord] = []
    for s in range(n // 2):
        out.extend(_visit(rng, f"{index}-{s}", midnight))
    if index in TARGET_DAYS:
        pos = len(out) // 2
        out[pos:pos] = target(index, midnight)
    return out


def build_year(root: Path, total: int) -> tuple[LegalStore, float]:
    """The year's log in ``root/legal`` through the real append path (AES-256-GCM, blind
    tags, leaf hashes, fsync per batch, a signed head and a sorted index per sealed
    day); return it and the seconds spent building now (0 when it was already built)."""
    root.mkdir(parents=True, exist_ok=True)
    key_file, pem = root / "master.key", root / "signing.pem"
    if not key_file.exists():
        key_file.write_text(MasterKey.new_text())
        generate_signing_key(pem)
    progress_file = root / "progress.json"
    progress = {"records": total, "days_done": 0, "event_id": 0}
    if progress_file.exists():
        progress = json.loads(progress_file.read_text())
        assert progress["records"] == total, f"{root} holds a year of {progress['records']}"
    store = LegalStore(
        root / "legal",
        MasterKey.from_text(key_file.read_text()),
        load_signing_key(pem),
        checkpoint_s=3600,
    )
    plan = year_plan(total)
    # A day the last build did not finish is written again from its start.
    for day, *_ in plan[int(progress["days_done"]) :]:
        shutil.rmtree(root / "legal" / day, ignore_errors=True)
    t = time.perf_counter()
    event_id = int(progress["event_id"])
    for index in range(int(progress["days_done"]), BUILT_DAYS):
        day, midnight, n = plan[index]
        recs = day_records(index, midnight, n)
        for b in range(0, len(recs), LOAD_BATCH):
            chunk = recs[b : b + LOAD_BATCH]
            store.append([(event_id + i + 1, r) for i, r in enumerate(chunk)], midnight + 43_200)
            event_id += len(chunk)
        progress.update(days_done=index + 1, event_id=event_id)
        progress_file.write_text(json.dumps(progress))
    build_s = time.perf_counter() - t
    # Sealing a sealed day only adds what an older version did not write (index.fence).
    for day, *_ in plan[:BUILT_DAYS]:
        store.seal(day)
    store.close()
    return store, build_s


def _evict(directory: Path) -> None:
    """Drop the log's files from the page cache: the next search reads from the disk."""
    for f in directory.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _timed(fn: Callable[[], list[Found]]) -> tuple[float, list[Found]]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _matches(f: Found, q: Query) -> bool:
    r = f.record
    start, stop = r.start_ms / 1000, (r.stop_ms or 0) / 1000
    in_time = start <= q.end and stop >= q.start
    if q.kind == "public":
        assert q.port is not None and r.port_start is not None and r.port_end is not None
        return in_time and r.public_ip == q.value and r.port_start <= q.port <= r.port_end
    return in_time and r.private_ip == q.value and r.gateway == q.gateway


@pytest.mark.timeout(max(900, YEAR_RECORDS // 2_000 + 900))
def test_requisition_search_over_a_year(tmp_path: Path) -> None:
    """Searches by MAC and by user over the whole year, and by public IP + port + time
    and private IP + gateway + time at the summer peak, against decrypting every record
    (estimated from a sample of days decrypted in the same run)."""
    root = Path(YEAR_DIR) if YEAR_DIR else tmp_path
    store, build_s = build_year(root, YEAR_RECORDS)
    plan = year_plan(YEAR_RECORDS)[:BUILT_DAYS]
    targets = [i for i in TARGET_DAYS if i < BUILT_DAYS]
    assert targets, "build at least 11 days"
    total = sum(n for *_, n in plan) + 2 * len(targets)
    size = sum(f.stat().st_size for f in (root / "legal").rglob("*") if f.is_file())
    year = (plan[0][1], plan[-1][1] + 86_400)
    peak_index = targets[-1]
    planted, _ = target(peak_index, plan[peak_index][1])
    at = planted.start_ms / 1000 + 60
    assert planted.public_ip is not None and planted.port_start is not None
    queries = {
        "MAC, whole year": Query("mac", TARGET_MAC, *year),
        "user id, whole year": Query("user", TARGET_USER, *year),
        "public IP + port + time": Query(
            "public", planted.public_ip, at, at, port=planted.port_start + 100
        ),
        "private IP + gateway + time": Query(
            "private", planted.private_ip, at, at, gateway=planted.gateway
        ),
    }
    results: dict[str, tuple[float, float, int]] = {}
    for name, q in queries.items():
        _evict(root / "legal")
        cold_s, found = _timed(functools.partial(search, store, q))
        warm = [_timed(functools.partial(search, store, q))[0] for _ in range(5)]
        results[name] = (cold_s, statistics.median(warm), len(found))
        ids = [f.record.session_id for f in found]
        if q.kind == "mac":
            assert ids == [f"cible-{i}" for i in targets]
        elif q.kind == "user":
            assert ids == [f"cible-{i}" for i in targets if i % 4 == 0]
        else:
            assert planted.session_id in ids
            assert all(_matches(f, q) for f in found), name
    # Reference: every record of a sample of days decrypted, scaled to the year.
    sample = [plan[i * (len(plan) - 1) // (SAMPLE_DAYS - 1)] for i in range(SAMPLE_DAYS)]
    t = time.perf_counter()
    decrypted = sum(len(store.read(day, range(n + 2))) for day, _, n in sample)
    sample_s = time.perf_counter() - t
    scan_s = sample_s * total / decrypted
    busiest = max(plan, key=lambda p: p[2])
    assert store.signing_key is not None
    t = time.perf_counter()
    assert store.verify(store.signing_key.public_key(), [busiest[0]]) == []
    verify_s = time.perf_counter() - t
    print(
        f"\n{total:,} records in {len(plan)} days of a year of {YEAR_RECORDS:,} (busiest "
        f"{busiest[0]}: {busiest[2]:,}); built now in {build_s:.0f} s; "
        f"{size / total:.0f} bytes/record, "
        f"{size * 1e6 / total / 2**20:.0f} MiB per million records, {size / 2**30:.2f} GiB"
    )
    print(
        f"reference: {decrypted:,} records of {SAMPLE_DAYS} days decrypted in {sample_s:.2f} s"
        f" -> the whole year about {scan_s:,.0f} s"
    )
    for name, (cold_s, warm_s, n) in results.items():
        print(
            f"{name}: {n} session(s); cold cache {cold_s * 1000:.0f} ms, warm "
            f"{warm_s * 1000:.0f} ms; ratio warm/scan {warm_s / scan_s:.2e}"
        )
        if name.endswith("whole year") and len(plan) < YEAR_DAYS:
            # Whole-year searches cost one lookup per day: scaled to the 365 days.
            k = YEAR_DAYS / len(plan)
            cold_day, warm_day = cold_s / len(plan) * 1000, warm_s / len(plan) * 1000
            print(
                f"  per day {cold_day:.2f} ms cold, {warm_day:.2f} ms warm; "
                f"x {YEAR_DAYS} days: {cold_s * k * 1000:.0f} ms cold, "
                f"{warm_s * k * 1000:.0f} ms warm"
            )
    print(f"verify of the busiest day: {verify_s:.1f} s; load average {os.getloadavg()}")
    for cold_s, warm_s, _ in results.values():
        assert warm_s < scan_s and cold_s < scan_s
