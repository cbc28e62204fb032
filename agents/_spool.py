"""The agent's offline spool: an on-disk, ordered, bounded journal of sealed messages.

Every message the agent must not lose (``status``, ``clients``, ``acct``, ``ack``) is
appended here, already sealed with its original ``boot``, ``seq`` and ``ts``, *before*
it is handed to MQTT; it leaves the spool only once the broker has acknowledged it
(PUBACK, MQTT 3.1.1 §4.3.2). A replay after a restart therefore sends the very same
bytes, and the controller's exactly-once claim on ``(ap, boot, seq)`` turns a resend
into a counted duplicate, never a second effect.

Layout of ``<state_dir>/spool/``:

* ``<n>.seg``: append-only segments, one JSON record per line
  (``{"at": enqueue time, "r": retain, "t": topic, "p": payload}``). Appends are
  flushed and ``fsync``-ed before :meth:`Spool.append` returns, so a power cut loses at
  most a torn last line, which the next start truncates (and counts).
* ``head``: ``<segment> <offset>`` of the oldest record not yet acknowledged, written
  atomically (temp file + ``fsync`` + ``rename``). It may lag behind the acknowledgements
  (it is saved at most every ``head_sync_s``): after a crash some acknowledged records
  are sent again, which the controller discards as duplicates. It never runs ahead.

Bounds (explicit drop policy, oldest first, every drop counted): the records older
than ``max_age_s`` are dropped, and when the spool holds more than ``max_bytes`` whole
oldest segments are dropped. The newest data is kept because accounting counters are
cumulative: a later record supersedes an older one of the same session.

Not thread-safe: one thread (the agent's) calls every method. It does not talk to MQTT.
Standard library only.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["Position", "Record", "Spool"]

logger = logging.getLogger(__name__)

Position = tuple[int, int]  # (segment number, byte offset)

# A segment is closed when it passes this size: small enough that dropping one for the
# size bound loses little, large enough that a busy AP does not juggle many files.
DEFAULT_SEGMENT_BYTES: Final = 256 * 1024
# One record never exceeds the contract's 64 KiB payload plus its JSON wrapping.
MAX_LINE_BYTES: Final = 160 * 1024


@dataclass(frozen=True)
class Record:
    """One spooled message and where it ends in the journal."""

    topic: str
    payload: bytes
    retain: bool
    at: float
    end: Position


class Spool:
    """An ordered on-disk queue with acknowledgement by position."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 8 * 1024 * 1024,
        max_age_s: float = 7 * 86400.0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        head_sync_s: float = 1.0,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.segment_bytes = max(1024, min(segment_bytes, max(1024, max_bytes // 4)))
        self.head_sync_s = head_sync_s
        self.counters: collections.Counter[str] = collections.Counter()
        self._head_file = self.dir / "head"
        self._head: Position = self._load_head()
        self._head_saved: Position = self._head
        self._head_saved_at = 0.0
        self._segments: list[int] = self._scan_segments()
        if not self._segments or self._segments[0] > self._head[0]:
            # the head's segment is gone (all delivered): start at the oldest one left
            self._head = (self._segments[0], 0) if self._segments else (self._head[0], 0)
        self._repair_tail()
        if not self._segments:
            self._segments = [self._head[0]]
            self._seg_path(self._head[0]).touch()
        self._cursor: Position = self._head
        self._writer = self._seg_path(self._segments[-1]).open("ab")
        self.pending = self._count_from(self._head)

    # files ---------------------------------------------------------------------------
    def _seg_path(self, n: int) -> Path:
        return self.dir / f"{n:012d}.seg"

    def _scan_segments(self) -> list[int]:
        found = []
        for p in self.dir.glob("*.seg"):
            try:
                found.append(int(p.stem))
            except ValueError:
                continue
        found.sort()
        # segments before the head's are fully acknowledged leftovers of a crash
        for n in [n for n in found if n < self._head[0]]:
            self._seg_path(n).unlink(missing_ok=True)
        return [n for n in found if n >= self._head[0]]

    def _load_head(self) -> Position:
        try:
            seg, off = self._head_file.read_text().split()
            return (int(seg), int(off))
        except FileNotFoundError:
            return (0, 0)
        except (OSError, ValueError) as exc:
            # A head file is only ever replaced by rename, so this means a damaged disk;
            # replaying from the oldest segment duplicates at worst, never loses.
            logger.warning("spool head unreadable, replaying from the start: %s", exc)
            self.counters["spool_head_unreadable"] += 1
            return (0, 0)

    def _repair_tail(self) -> None:
        """Cut a torn last line (power cut during an append)."""
        if not self._segments:
            return
        path = self._seg_path(self._segments[-1])
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            with path.open("r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            self.counters["spool_torn_tail"] += 1
            logger.warning("spool: cut a torn record of %d bytes", len(data) - keep)

    def _save_head(self) -> None:
        tmp = self.dir / "head.tmp"
        with tmp.open("w") as fh:
            fh.write(f"{self._head[0]} {self._head[1]}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._head_file)
        self._fsync_dir()
        self._head_saved = self._head

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # reading -------------------------------------------------------------------------
    def _iter_from(self, pos: Position) -> Iterator[Record | None]:
        """Records from ``pos`` on; ``None`` for an unreadable line (skipped, counted)."""
        for n in self._segments:
            if n < pos[0]:
                continue
            start = pos[1] if n == pos[0] else 0
            try:
                fh = self._seg_path(n).open("rb")
            except FileNotFoundError:
                continue
            with fh:
                fh.seek(start)
                offset = start
                while True:
                    line = fh.readline(MAX_LINE_BYTES)
                    if not line or not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    yield _decode(line, (n, offset))

    def _count_from(self, pos: Position) -> int:
        return sum(1 for _ in self._iter_from(pos))

    def size_bytes(self) -> int:
        """Bytes of the journal not yet acknowledged."""
        total = 0
        for n in self._segments:
            try:
                total += self._seg_path(n).stat().st_size
            except FileNotFoundError:
                continue
        return total - (self._head[1] if self._head[0] in self._segments else 0)

    def oldest_at(self) -> float | None:
        """Enqueue time of the oldest unacknowledged record."""
        for rec in self._iter_from(self._head):
            if rec is not None:
                return rec.at
        return None

    # writing -------------------------------------------------------------------------
    def append(self, items: list[tuple[str, bytes, bool]], now: float) -> None:
        """Append ``(topic, payload, retain)`` records durably (one ``fsync`` per call)."""
        if not items:
            return
        for topic_name, payload, retain in items:
            line = (
                json.dumps(
                    {"at": now, "r": retain, "t": topic_name, "p": payload.decode()},
                    separators=(",", ":"),
                    ensure_ascii=False,
                ).encode()
                + b"\n"
            )
            if self._writer.tell() + len(line) > self.segment_bytes and self._writer.tell() > 0:
                self._roll()
            self._writer.write(line)
            self.pending += 1
            self.counters["spool_appended"] += 1
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._enforce_size()

    def _roll(self) -> None:
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._writer.close()
        n = self._segments[-1] + 1
        self._segments.append(n)
        self._writer = self._seg_path(n).open("ab")
        self._fsync_dir()

    # consuming -----------------------------------------------------------------------
    def next_batch(self, limit: int) -> list[Record]:
        """Up to ``limit`` records after the ones already handed out, in order."""
        out: list[Record] = []
        if limit <= 0:
            return out
        if self._cursor < self._head:
            self._cursor = self._head
        for rec in self._iter_from(self._cursor):
            if rec is None:
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        if out:
            self._cursor = out[-1].end
        return out

    def rewind(self) -> None:
        """Hand out again everything not acknowledged (after the MQTT session was lost)."""
        self._cursor = self._head

    def acknowledge(self, end: Position, now: float) -> None:
        """Every record up to ``end`` reached the broker; persist lazily (``head_sync_s``)."""
        if end <= self._head:
            return
        removed = 0
        for rec in self._iter_from(self._head):
            if rec is not None and rec.end > end:
                break
            removed += 1
        self._head = end
        self.pending = max(0, self.pending - removed)
        self.counters["spool_delivered"] += removed
        self._drop_old_segments()
        if now - self._head_saved_at >= self.head_sync_s:
            self.sync(now)

    def sync(self, now: float) -> None:
        """Persist the head now if it moved."""
        if self._head != self._head_saved:
            self._save_head()
        self._head_saved_at = now

    def _drop_old_segments(self) -> None:
        while len(self._segments) > 1 and self._segments[0] < self._head[0]:
            self._seg_path(self._segments.pop(0)).unlink(missing_ok=True)

    # bounds --------------------------------------------------------------------------
    def enforce_age(self, now: float) -> int:
        """Drop records enqueued more than ``max_age_s`` ago; returns how many."""
        limit = now - self.max_age_s
        dropped = 0
        new_head = self._head
        for rec in self._iter_from(self._head):
            if rec is not None and rec.at >= limit:
                break
            dropped += 1
            if rec is not None:
                new_head = rec.end
        if dropped:
            self._drop_to(new_head, dropped, "spool_dropped_age")
        return dropped

    def _enforce_size(self) -> None:
        while self.size_bytes() > self.max_bytes and len(self._segments) > 1:
            first = self._segments[0]
            start = self._head if self._head[0] == first else (first, 0)
            count = 0
            for rec in self._iter_from(start):
                if rec is not None and rec.end[0] != first:
                    break
                count += 1
            self._drop_to((self._segments[1], 0), count, "spool_dropped_size")

    def _drop_to(self, pos: Position, count: int, reason: str) -> None:
        self.counters[reason] += count
        self.pending = max(0, self.pending - count)
        logger.warning("spool: dropped %d record(s) (%s)", count, reason)
        self._head = pos
        self._drop_old_segments()
        self._save_head()

    def close(self) -> None:
        """Persist the head and close the journal."""
        if self._head != self._head_saved:
            self._save_head()
        self._writer.close()


def _decode(line: bytes, end: Position) -> Record | None:
    try:
        d = json.loads(line)
        return Record(
            topic=str(d["t"]),
            payload=str(d["p"]).encode(),
            retain=bool(d["r"]),
            at=float(d["at"]),
            end=end,
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("spool: skipped an unreadable record ending at %s", end)
        return None
