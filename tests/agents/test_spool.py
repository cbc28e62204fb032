"""The offline spool: ordered, durable, bounded with counted drops, acknowledged by position."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agents._spool import Spool

NOW = 1_790_000_000.0


def items(start: int, n: int) -> list[tuple[str, bytes, bool]]:
    return [(f"t/{i}", b'{"seq":%d}' % i, i % 2 == 0) for i in range(start, start + n)]


def drain(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    while True:
        batch = spool.next_batch(7)
        if not batch:
            return out
        out.extend(r.payload for r in batch)
        spool.acknowledge(batch[-1].end, NOW)


def test_records_come_out_in_order_with_topic_and_retain(tmp_path: Path) -> None:
    """What is appended comes out in the same order, with its topic, payload and retain flag."""
    spool = Spool(tmp_path)
    spool.append(items(0, 20), NOW)
    recs = spool.next_batch(100)
    assert [(r.topic, r.payload, r.retain) for r in recs] == items(0, 20)
    assert spool.pending == 20


def test_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    """Records handed out but never acknowledged are handed out again by a new spool."""
    spool = Spool(tmp_path)
    spool.append(items(0, 10), NOW)
    batch = spool.next_batch(10)
    spool.acknowledge(batch[3].end, NOW)  # 0..3 reached the broker
    spool.sync(NOW)
    spool.close()
    again = Spool(tmp_path)
    assert again.pending == 6
    assert [r.payload for r in again.next_batch(100)] == [p for _, p, _ in items(4, 6)]


def test_the_head_may_lag_but_never_loses(tmp_path: Path) -> None:
    """Without a sync, a restart replays acknowledged records (duplicates), never skips one."""
    spool = Spool(tmp_path, head_sync_s=3600)
    spool.append(items(0, 5), NOW)
    spool.acknowledge(spool.next_batch(2)[-1].end, NOW)  # first ack persists (sync due)
    spool.acknowledge(spool.next_batch(2)[-1].end, NOW + 1)  # lags: not yet on disk
    again = Spool(tmp_path)
    assert [r.payload for r in again.next_batch(100)] == [p for _, p, _ in items(2, 3)]


def test_rewind_hands_out_the_unacknowledged_again(tmp_path: Path) -> None:
    """After a rewind, every record after the last acknowledgement is handed out again."""
    spool = Spool(tmp_path)
    spool.append(items(0, 6), NOW)
    first = spool.next_batch(4)
    spool.acknowledge(first[1].end, NOW)
    spool.rewind()
    assert [r.payload for r in spool.next_batch(10)] == [p for _, p, _ in items(2, 4)]


def test_a_torn_last_line_is_cut_and_counted(tmp_path: Path) -> None:
    """A power cut in the middle of an append leaves a partial line: it is cut, the rest kept."""
    spool = Spool(tmp_path)
    spool.append(items(0, 3), NOW)
    spool.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    with seg.open("ab") as fh:
        fh.write(b'{"at":1,"r":false,"t":"x","p":"tor')
    again = Spool(tmp_path)
    assert again.counters["spool_torn_tail"] == 1
    assert drain(again) == [p for _, p, _ in items(0, 3)]
    again.append(items(3, 1), NOW)
    assert drain(again) == [p for _, p, _ in items(3, 1)]


def test_size_bound_drops_oldest_segments_and_counts_them(tmp_path: Path) -> None:
    """Beyond max_bytes the oldest records are dropped, counted, and the newest are kept."""
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024)
    big = [(f"t/{i}", b'{"pad":"%s","i":%d}' % (b"x" * 200, i), False) for i in range(2000)]
    for i in range(0, 2000, 50):
        spool.append(big[i : i + 50], NOW)
    assert spool.size_bytes() <= 64 * 1024
    dropped = spool.counters["spool_dropped_size"]
    assert dropped > 0
    out = drain(spool)
    assert len(out) + dropped == 2000
    assert out == [p for _, p, _ in big[dropped:]]  # the newest, in order
    assert len(list(tmp_path.glob("*.seg"))) <= 2


def test_age_bound_drops_old_records_and_counts_them(tmp_path: Path) -> None:
    """Records older than max_age_s are dropped (counted); younger ones stay, in order."""
    spool = Spool(tmp_path, max_age_s=3600)
    spool.append(items(0, 4), NOW)
    spool.append(items(4, 3), NOW + 3000)
    assert spool.enforce_age(NOW + 3700) == 4
    assert spool.counters["spool_dropped_age"] == 4
    assert spool.pending == 3
    assert drain(spool) == [p for _, p, _ in items(4, 3)]
    assert Spool(tmp_path).pending == 0  # the drop is persisted


def test_delivered_segments_are_deleted(tmp_path: Path) -> None:
    """Once every record of a segment is acknowledged, its file is removed."""
    spool = Spool(tmp_path, segment_bytes=1024)
    for i in range(0, 200, 10):
        spool.append(items(i, 10), NOW)
    assert len(list(tmp_path.glob("*.seg"))) > 2
    assert len(drain(spool)) == 200
    assert len(list(tmp_path.glob("*.seg"))) == 1
    assert spool.pending == 0


WRITER = """
import sys
from agents._spool import Spool
s = Spool(sys.argv[1])
i = 0
while True:
    s.append([("t", b'{"i":%d}' % i, False)], 1.0)
    print(i, flush=True)
    i += 1
"""


def test_kill_9_during_appends_loses_no_confirmed_record(tmp_path: Path) -> None:
    """After SIGKILL mid-append, every append that returned is there, in order, once."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    confirmed = -1
    for line in proc.stdout:
        confirmed = int(line)
        if confirmed >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    got = drain(Spool(tmp_path))
    numbers = [int(p.decode().split(":")[1].rstrip("}")) for p in got]
    assert numbers == list(range(len(numbers)))  # ordered, no duplicate, no hole
    assert len(numbers) >= confirmed + 1
