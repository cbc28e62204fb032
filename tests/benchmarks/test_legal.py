"""Legal log benchmarks: appends with encryption and hashing, and a requisition search.

Ratios against references measured in the same run: appends against writing the same
number of bytes with the same fsyncs and no crypto; a blind-index search against
decrypting every record of the same days (what a search without an index must do).
Results are printed and written to docs/BENCHMARKS.md by hand, with this command:

    .venv/bin/pytest -q -s -m slow tests/benchmarks/test_legal.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.legal.keys import MasterKey
from controller.legal.records import LegalRecord
from controller.legal.requisitions import Query, search
from controller.legal.store import LegalStore, day_of
from tests.controller.legal.conftest import T0, record

pytestmark = pytest.mark.slow

BATCH = 1000
APPENDS = 100_000
DAYS = 10
PER_DAY = 20_000


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


def test_requisition_search_reads_only_matching_records(tmp_path: Path) -> None:
    """A search by MAC over every day and by public IP+port+time is faster than decrypting
    the days it covers, which is what a search without the blind index would do."""
    store = new_store(tmp_path / "legal")
    t = time.perf_counter()
    for d in range(DAYS):
        now = T0 + d * 86400
        for b in range(0, PER_DAY, BATCH):
            base = d * PER_DAY + b
            store.append(
                [(base + i + 1, session(base + i, now + (b + i) * 4)) for i in range(BATCH)],
                now,
            )
    store.seal(day_of(T0 + (DAYS - 1) * 86400))
    build_s = time.perf_counter() - t
    target = session(5 * PER_DAY + 1234, T0 + 5 * 86400 + 1234 * 4)
    q_mac = Query("mac", target.client_mac, T0, T0 + DAYS * 86400)
    t = time.perf_counter()
    found = search(store, q_mac)
    mac_s = time.perf_counter() - t
    assert [f.record.session_id for f in found] == [
        str(i) for i in range(DAYS * PER_DAY) if record(i).client_mac == target.client_mac
    ]
    at = target.start_ms / 1000 + 1
    port = (target.port_start or 0) + 3
    q_pub = Query("public", "192.0.2.1", at, at, port=port)
    t = time.perf_counter()
    hits = search(store, q_pub)
    pub_s = time.perf_counter() - t
    assert target.session_id in [f.record.session_id for f in hits]
    t = time.perf_counter()
    for day in store.days():
        store.read(day, range(PER_DAY))
    scan_s = time.perf_counter() - t
    total = DAYS * PER_DAY
    assert store.signing_key is not None
    t = time.perf_counter()
    assert store.verify(store.signing_key.public_key()) == []
    verify_s = time.perf_counter() - t
    print(
        f"\nsearch over {total:,} records in {DAYS} days (built in {build_s:.1f} s): "
        f"MAC {mac_s * 1000:.1f} ms, public IP+port+time {pub_s * 1000:.1f} ms ({len(hits)} "
        f"sessions); decrypting them all: {scan_s:.2f} s; ratio MAC/scan "
        f"{mac_s / scan_s:.5f}; verify of the {DAYS} days: {verify_s:.2f} s"
    )
    assert mac_s < scan_s and pub_s < scan_s
