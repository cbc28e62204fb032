"""The legal log's store: one folder per UTC day, append-only, encrypted, signed.

Layout of ``<directory>/<YYYY-MM-DD>/``:

    records.log   frames of leaves (see ``_format``), append-only
    leaves.bin    the 32-byte RFC 6962 leaf hash of each record, in order
    index.log     blind index entries (16-byte tag, u32 seq), append-only; removed once
                  the day is sealed (index.sorted holds the same entries)
    index.sorted  the same entries sorted by tag, written when the day is sealed
    index.fence   every 256th tag of index.sorted: a lookup reads it, then one block
    offsets.bin   where each record starts in records.log, written when sealed
    keys/         the day's wrapped keys: identity.key, traffic.key, index.key
    heads.jsonl   signed tree heads: checkpoints while the day is open, then the final
                  head, which also names the previous day's root
    shredding.jsonl  signed statements of the keys destroyed by the purge

A batch of records is durable (``fsync`` of every file it touched) before
:meth:`LegalStore.append` returns; the caller advances its source only then. Nothing
else in borne reads this folder; all work here is blocking file IO and crypto: call it
from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import datetime as dt
import hashlib
import json
import mmap
import os
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.legal import _format as fmt
from controller.legal import merkle
from controller.legal.errors import KeyError_, StoreError
from controller.legal.keys import PURPOSES, MasterKeyProvider, unwrap, wrap
from controller.legal.records import LegalRecord

__all__ = ["Found", "LegalStore", "Problem", "day_of", "sign_json", "verify_json"]

_ENTRY = struct.Struct(">16sI")
_U32 = struct.Struct(">I")
_NO_TAG = bytes(fmt.TAG_LEN)
# index.fence holds the tag of every _FENCE_EVERY-th entry of index.sorted: a lookup reads
# the fence (a few dozen kB), then one block of 256 entries (5 kB) of the index, instead
# of a binary search's twenty scattered pages. What matters when the year's indexes
# (gigabytes) are not in the page cache, as on a server searched once a week.
_FENCE_EVERY = 256
# Days looked up at once by a search (their reads overlap on the disk).
_LOOKUP_THREADS = 8


def day_of(t: float) -> str:
    """The UTC day (YYYY-MM-DD) of a Unix time."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sign_json(key: Ed25519PrivateKey, obj: dict[str, Any], context: str) -> dict[str, Any]:
    """``obj`` with an Ed25519 ``sig`` over its canonical JSON, domain-separated."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    sig = key.sign(context.encode() + b"|" + _canonical(body))
    return {**body, "sig": sig.hex()}


def verify_json(key: Ed25519PublicKey, obj: dict[str, Any], context: str) -> bool:
    """True if ``obj['sig']`` signs the rest of ``obj``."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    try:
        key.verify(
            bytes.fromhex(str(obj.get("sig", ""))), context.encode() + b"|" + _canonical(body)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_lines(data: bytes) -> list[bytes]:
    """The newline-terminated lines of ``data``: an unterminated tail is a write a crash
    cut short, never fsynced whole, so it never counted."""
    return [ln for ln in data.split(b"\n")[:-1] if ln.strip()]


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    with path.open("a+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end and fh.seek(end - 1) >= 0 and fh.read(1) != b"\n":
            # Drop the torn tail first, or the new line would be glued to it.
            fh.seek(0)
            fh.truncate(fh.read().rfind(b"\n") + 1)
        fh.write(_canonical(obj) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in complete_lines(data)]


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found wrong, naming the day and, when it can, the record."""

    day: str
    record: int | None
    message: str

    def __str__(self) -> str:
        where = self.day if self.record is None else f"{self.day} record {self.record}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Found:
    """A record found by a search."""

    day: str
    seq: int
    record: LegalRecord


@dataclass
class _OpenDay:
    day: str
    path: Path
    keys: fmt.DayKeys
    hashes: list[bytes] = field(default_factory=list)
    last_event_id: int = 0
    last_head_at: float = 0.0
    index: dict[bytes, list[int]] = field(default_factory=dict)
    offsets: list[int] = field(default_factory=list)
    end: int = 0


class LegalStore:
    """The legal log on disk (blocking: use from a worker thread).

    Args:
        directory: the log's folder (created if missing).
        provider: gives the master key that wraps the day keys.
        signing_key: signs heads and statements; None opens the store read-only.
        checkpoint_s: how often an open day gets a signed checkpoint head.
    """

    def __init__(
        self,
        directory: Path,
        provider: MasterKeyProvider,
        signing_key: Ed25519PrivateKey | None = None,
        *,
        checkpoint_s: float = 300.0,
    ) -> None:
        self.directory = directory
        self.provider = provider
        self.signing_key = signing_key
        self.checkpoint_s = checkpoint_s
        self._open: _OpenDay | None = None
        # Days known to be sealed, so that each batch does not re-read every day's heads.
        self._sealed: set[str] = set()
        self._files: dict[str, Any] = {}

    # ------------------------------------------------------------------ days and keys

    def days(self) -> list[str]:
        """Every day folder, oldest first."""
        try:
            with os.scandir(self.directory) as it:
                return sorted(e.name for e in it if len(e.name) == 10 and e.is_dir())
        except FileNotFoundError:
            return []

    def _new_keys(self, path: Path, day: str) -> None:
        # All three keys appear at once (rename), or none: a crash or a full disk
        # half-way leaves only a "keys.tmp" that the next attempt starts again.
        kdir = path / "keys.tmp"
        if kdir.exists():
            for f in kdir.iterdir():
                f.unlink()
        kdir.mkdir(parents=True, exist_ok=True)
        for purpose in PURPOSES:
            blob = wrap(self.provider, day, purpose, secrets.token_bytes(32))
            target = kdir / f"{purpose}.key"
            with target.open("wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(kdir)
        kdir.rename(path / "keys")
        _fsync_dir(path)
        _fsync_dir(self.directory)

    def keys(self, day: str) -> fmt.DayKeys:
        """The day's unwrapped keys; a shredded one is None.

        Raises:
            KeyError_: the master key cannot unwrap them.
        """
        kdir = self.directory / day / "keys"
        got: dict[str, bytes | None] = {}
        for purpose in PURPOSES:
            f = kdir / f"{purpose}.key"
            got[purpose] = (
                unwrap(self.provider, day, purpose, f.read_bytes()) if f.exists() else None
            )
        ident, traffic = got["identity"], got["traffic"]
        return fmt.DayKeys(
            AESGCM(ident) if ident else None, AESGCM(traffic) if traffic else None, got["index"]
        )

    def _index_key(self, day: str) -> bytes | None:
        """The day's unwrapped index key, None once destroyed (one file, one unwrap)."""
        # Plain strings, not pathlib: a year's search does this 365 times.
        try:
            with open(f"{os.fspath(self.directory)}/{day}/keys/index.key", "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            return None
        return unwrap(self.provider, day, "index", blob)

    def _final_head(self, day: str) -> dict[str, Any] | None:
        heads = [h for h in _read_lines(self.directory / day / "heads.jsonl") if h.get("final")]
        return heads[-1] if heads else None

    # ------------------------------------------------------------------ writing

    def _close_files(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}

    def close(self) -> None:
        """Close the open day's files (it stays open for appends on next use)."""
        self._close_files()
        self._open = None

    def _recover(self, day: str) -> _OpenDay:
        """Open a day for appends, dropping a torn tail left by a crash."""
        path = self.directory / day
        records = path / "records.log"
        data = records.read_bytes() if records.exists() else b""
        frames, _ = fmt.iter_frames(data)
        hashes_raw = (path / "leaves.bin").read_bytes() if (path / "leaves.bin").exists() else b""
        n = min(len(frames), len(hashes_raw) // 32)
        # Every file is fsynced before a batch counts: keep the records all files agree on.
        keep = sum(4 + len(f) for f in frames[:n])
        if keep != len(data):
            with records.open("r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
        if len(hashes_raw) != n * 32:
            with (path / "leaves.bin").open("r+b") as fh:
                fh.truncate(n * 32)
                os.fsync(fh.fileno())
        index: dict[bytes, list[int]] = {}
        idx_path = path / "index.log"
        raw = idx_path.read_bytes() if idx_path.exists() else b""
        entries = [_ENTRY.unpack_from(raw, i) for i in range(0, len(raw) - len(raw) % 20, 20)]
        kept = [(t, s) for t, s in entries if s < n]
        if len(kept) != len(raw) / 20:
            with idx_path.open("wb") as fh:
                fh.write(b"".join(_ENTRY.pack(t, s) for t, s in kept))
                os.fsync(fh.fileno())
        for t, s in kept:
            index.setdefault(t, []).append(s)
        od = _OpenDay(day, path, self.keys(day))
        od.hashes = [hashes_raw[i * 32 : (i + 1) * 32] for i in range(n)]
        pos = 0
        for f in frames[:n]:
            od.offsets.append(pos)
            pos += 4 + len(f)
        od.end = pos
        od.index = index
        if n:
            od.last_event_id = fmt.parse_leaf(frames[n - 1]).event_id
        return od

    def _open_day(self, day: str) -> _OpenDay:
        if self._open is not None and self._open.day == day:
            return self._open
        if self._open is not None:
            self.seal(self._open.day)
        path = self.directory / day
        if self._final_head(day) is not None:
            raise StoreError(f"day {day} is sealed; records cannot be added to it")
        if not (path / "keys").is_dir():
            path.mkdir(parents=True, exist_ok=True)
            self._new_keys(path, day)
        self._open = self._recover(day)
        self._files = {
            name: (path / name).open("ab") for name in ("records.log", "leaves.bin", "index.log")
        }
        return self._open

    def last_event_id(self) -> int:
        """The outbox event id of the last record written (0 when empty)."""
        for day in reversed(self.days()):
            if self._open is not None and self._open.day == day:
                return self._open.last_event_id
            # The records every file of the day agrees on (a torn batch does not count).
            od = self._recover(day)
            if od.hashes:
                return od.last_event_id
        return 0

    def append(self, items: Sequence[tuple[int, LegalRecord]], now: float) -> int:
        """Write records durably into the day of ``now``; return how many.

        Items are ``(outbox event id, record)``. Earlier open days are sealed first.

        Raises:
            StoreError: the files cannot be written (the caller retries; nothing counts
                as written until this returns).
        """
        if self.signing_key is None:
            raise StoreError("the store is open read-only (no signing key)")
        if not items:
            return 0
        # A clock stepping back over midnight must not aim at a sealed day: stay on the
        # latest one (its records are then kept a few hours longer, never shorter).
        days = self.days()
        day = max(day_of(now), days[-1]) if days else day_of(now)
        try:
            self.seal_before(day)
            od = self._open_day(day)
            frames: list[bytes] = []
            entries: list[bytes] = []
            offsets: list[int] = []
            new_hashes: list[bytes] = []
            end = od.end
            seq = len(od.hashes)
            index, keys = od.index, od.keys
            build, leaf_hash, pack, u32 = fmt.build_leaf, merkle.leaf_hash, _ENTRY.pack, _U32.pack
            for event_id, rec in items:
                leaf, tags = build(day, seq, event_id, rec, keys)
                new_hashes.append(leaf_hash(leaf))
                frames.append(u32(len(leaf)))
                frames.append(leaf)
                offsets.append(end)
                end += 4 + len(leaf)
                for t in tags:
                    if t != _NO_TAG:
                        entries.append(pack(t, seq))
                        if (seqs := index.get(t)) is None:
                            index[t] = [seq]
                        else:
                            seqs.append(seq)
                seq += 1
            for name, chunks in (
                ("records.log", frames),
                ("leaves.bin", new_hashes),
                ("index.log", entries),
            ):
                fh = self._files[name]
                fh.write(b"".join(chunks))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.close()
            raise StoreError(f"cannot write the legal log: {exc}") from exc
        od.hashes.extend(new_hashes)
        od.offsets.extend(offsets)
        od.end = end
        od.last_event_id = items[-1][0]
        if now - od.last_head_at >= self.checkpoint_s:
            try:
                self._write_head(od.day, od.hashes, final=False, now=now)
            except OSError as exc:
                # The records are durable; the checkpoint comes with a later batch.
                raise StoreError(f"records written, checkpoint head not: {exc}") from exc
            od.last_head_at = now
        return len(items)

    def _write_head(self, day: str, hashes: list[bytes], *, final: bool, now: float) -> None:
        assert self.signing_key is not None
        head: dict[str, Any] = {
            "day": day,
            "size": len(hashes),
            "root": merkle.root(hashes).hex(),
            "final": final,
            "at": round(now, 3),
        }
        if final:
            prev = [d for d in self.days() if d < day]
            ph = self._final_head(prev[-1]) if prev else None
            head["prev_day"] = prev[-1] if prev else None
            head["prev_root"] = ph["root"] if ph else None
        _append_line(
            self.directory / day / "heads.jsonl", sign_json(self.signing_key, head, "head")
        )

    def seal(self, day: str, now: float | None = None) -> None:
        """Sign the final head of ``day`` and write its sorted index (idempotent).

        Raises:
            StoreError: there is no such day.
        """
        if not (self.directory / day / "keys").is_dir():
            raise StoreError(f"no day {day} in the legal log")
        if self._final_head(day) is not None:
            # Sealed by an older version: add the fence, drop the unsorted index.
            if not (self.directory / day / "index.fence").exists():
                _write_fence(self.directory / day)
            _drop_unsorted_index(self.directory / day)
            return
        if self._open is not None and self._open.day == day:
            od = self._open
            self._close_files()
            self._open = None
        else:
            od = self._recover(day)
        now = now if now is not None else dt.datetime.now(dt.UTC).timestamp()
        entries = sorted((t, s) for t, seqs in od.index.items() for s in seqs)
        path = self.directory / day / "index.sorted"
        with path.open("wb") as fh:
            fh.write(b"".join(_ENTRY.pack(t, s) for t, s in entries))
            os.fsync(fh.fileno())
        _write_fence(self.directory / day)
        # Where each record starts: a search reads its few records, not the whole day.
        with (self.directory / day / "offsets.bin").open("wb") as fh:
            fh.write(struct.pack(f">{len(od.offsets)}Q", *od.offsets))
            os.fsync(fh.fileno())
        self._write_head(day, od.hashes, final=True, now=now)
        _drop_unsorted_index(self.directory / day)

    def seal_before(self, day: str, now: float | None = None) -> list[str]:
        """Seal every unsealed day before ``day``; return them."""
        done = []
        for d in self.days():
            if d >= day or d in self._sealed:
                continue
            if self._final_head(d) is None:
                self.seal(d, now)
                done.append(d)
            self._sealed.add(d)
        return done

    # ------------------------------------------------------------------ reading

    def _read_frames(self, day: str, seqs: list[int]) -> list[bytes]:
        """The frames of the named records, read at their offsets when they are known."""
        path = self.directory / day
        if self._open is not None and self._open.day == day:
            known = self._open.offsets
            offsets = [known[i] for i in seqs if i < len(known)]
        elif (path / "offsets.bin").exists():
            # Read the few offsets needed (8 bytes each), not the day's whole table.
            with (path / "offsets.bin").open("rb") as fh:
                raw = [os.pread(fh.fileno(), 8, i * 8) for i in seqs]
            offsets = [struct.unpack(">Q", b)[0] for b in raw if len(b) == 8]
        else:
            frames = self._frames(day)
            return [frames[i] for i in seqs if i < len(frames)]
        out = []
        with (path / "records.log").open("rb") as fh:
            for pos in offsets:
                (n,) = struct.unpack(">I", os.pread(fh.fileno(), 4, pos))
                out.append(os.pread(fh.fileno(), min(n, fmt.MAX_FRAME), pos + 4))
        return out

    def _frames(self, day: str) -> list[bytes]:
        return fmt.iter_frames((self.directory / day / "records.log").read_bytes())[0]

    def read(self, day: str, seqs: Iterable[int], keys: fmt.DayKeys | None = None) -> list[Found]:
        """Decrypt the named records of one day (only those).

        Raises:
            KeyError_: the day's identity key was destroyed (past retention).
        """
        keys = keys or self.keys(day)
        if keys.identity is None:
            raise KeyError_(f"the records of {day} were shredded (past retention)")
        out = []
        for raw in self._read_frames(day, sorted(set(seqs))):
            leaf = fmt.parse_leaf(raw)
            ident = fmt.decrypt_part(keys.identity, day, leaf.seq, "identity", leaf.identity)
            traffic = None
            if keys.traffic is not None:
                traffic = fmt.decrypt_part(keys.traffic, day, leaf.seq, "traffic", leaf.traffic)
            out.append(Found(day, leaf.seq, LegalRecord.from_parts(ident, traffic)))
        return out

    def lookup(self, day: str, kind: str, value: str) -> tuple[list[int], fmt.DayKeys | None]:
        """Record numbers of ``day`` whose blind tag matches; nothing is decrypted.

        Only the index key is unwrapped to compute the tag; the day's other keys are
        unwrapped (and returned) only when something matches. A day this store is not
        writing is only read, never repaired: another process may be appending to it.
        """
        if self._open is not None and self._open.day == day:
            keys = self._open.keys
            if keys.index is None:
                return [], None
            return sorted(self._open.index.get(fmt.tag(keys.index, kind, value), [])), keys
        index_key = self._index_key(day)
        if index_key is None:
            return [], None
        t = fmt.tag(index_key, kind, value)
        seqs = _sorted_lookup(f"{os.fspath(self.directory)}/{day}", t)
        if seqs is None:
            seqs = _unsealed_lookup(self.directory / day, t)
        if not seqs:
            return [], fmt.DayKeys(None, None, index_key)
        return seqs, self.keys(day)

    def lookup_days(
        self, days: Sequence[str], kind: str, value: str
    ) -> list[tuple[str, list[int], fmt.DayKeys | None]]:
        """:meth:`lookup` over many days, in their order.

        A day's lookup is two or three small reads that depend on each other; the days
        do not depend on one another, so they run in a few threads: when the indexes are
        not in the page cache (a year of them is gigabytes), the disk serves the days'
        reads together instead of one after the other.
        """
        if len(days) <= 2:
            return [(d, *self.lookup(d, kind, value)) for d in days]
        with concurrent.futures.ThreadPoolExecutor(_LOOKUP_THREADS) as pool:
            found = list(pool.map(lambda d: self.lookup(d, kind, value), days))
        return [(d, seqs, keys) for d, (seqs, keys) in zip(days, found, strict=True)]

    def proof(self, day: str, seq: int) -> dict[str, Any]:
        """Inclusion proof of one record in the day's latest signed head."""
        heads = _read_lines(self.directory / day / "heads.jsonl")
        hashes = self._stored_hashes(day)
        head = next((h for h in reversed(heads) if h["size"] > seq), None)
        if head is None:
            raise StoreError(f"no signed head of {day} covers record {seq} yet")
        size = int(head["size"])
        return {
            "day": day,
            "seq": seq,
            "leaf_hash": hashes[seq].hex(),
            "tree_size": size,
            "path": [p.hex() for p in merkle.inclusion_proof(seq, hashes[:size])],
            "head": head,
        }

    def _stored_hashes(self, day: str) -> list[bytes]:
        raw = (self.directory / day / "leaves.bin").read_bytes()
        return [raw[i : i + 32] for i in range(0, len(raw) - len(raw) % 32, 32)]

    # ------------------------------------------------------------------ verify

    def verify(
        self, public_key: Ed25519PublicKey, days: Iterable[str] | None = None
    ) -> list[Problem]:
        """Check every day's records against its signed heads; name what changed."""
        problems: list[Problem] = []
        all_days = self.days()
        for day in days if days is not None else all_days:
            problems.extend(self._verify_day(public_key, day, all_days))
        return problems

    def _verify_day(self, pub: Ed25519PublicKey, day: str, all_days: list[str]) -> list[Problem]:
        out: list[Problem] = []
        path = self.directory / day
        data = (path / "records.log").read_bytes() if (path / "records.log").exists() else b""
        frames, covered = fmt.iter_frames(data)
        if covered != len(data):
            out.append(Problem(day, len(frames), "damaged framing: the records file is cut"))
        got = [merkle.leaf_hash(f) for f in frames]
        for i, f in enumerate(frames):
            try:
                if fmt.parse_leaf(f).seq != i:
                    out.append(Problem(day, i, "holds a record numbered for another position"))
                    break  # the first one says where; the following ones only repeat it
            except (ValueError, struct.error):
                out.append(Problem(day, i, "is not a readable record"))
        stored = self._stored_hashes(day)
        heads = _read_lines(path / "heads.jsonl")
        if not heads:
            out.append(Problem(day, None, "no signed head"))
        sizes = [int(h.get("size", -1)) for h in heads]
        stored_roots = merkle.prefix_roots(stored, sizes)
        got_roots = merkle.prefix_roots(got, sizes)
        valid: list[dict[str, Any]] = []
        for head in heads:
            if not verify_json(pub, head, "head") or head.get("day") != day:
                out.append(
                    Problem(day, None, f"head of size {head.get('size')} has a bad signature")
                )
                continue
            size, r = int(head["size"]), bytes.fromhex(head["root"])
            if stored_roots.get(size) != r:
                out.append(Problem(day, None, "the leaf hash file does not match the signed head"))
            if got_roots.get(size) != r:
                out.extend(
                    self._name_changes(day, got, stored[:size] if len(stored) >= size else stored)
                )
                if not any(p.record is not None for p in out):
                    out.append(Problem(day, None, "the records do not match the signed head"))
            valid.append(head)
            if head.get("final"):
                earlier = [d for d in all_days if d < day]
                want = self._final_head(earlier[-1]) if earlier else None
                if (want["root"] if want else None) != head.get("prev_root"):
                    out.append(Problem(day, None, "the chain to the previous day is broken"))
        # Heads that match prefixes of the same leaves extend one another; the RFC 9162
        # consistency proof from the first signed head to the last shows it to a third
        # party holding only the two heads.
        if len(valid) > 1 and len(stored) >= int(valid[-1]["size"]):
            first, last = valid[0], valid[-1]
            m, n = int(first["size"]), int(last["size"])
            proof = merkle.consistency_proof(m, stored[:n])
            if not merkle.verify_consistency(
                m, n, bytes.fromhex(first["root"]), bytes.fromhex(last["root"]), proof
            ):
                out.append(Problem(day, None, "a later head does not extend an earlier one"))
        return _dedupe(out)

    @staticmethod
    def _name_changes(day: str, got: list[bytes], want: list[bytes]) -> list[Problem]:
        out = []
        got_set = set(got)
        for i, h in enumerate(want):
            if h not in got_set:
                if len(got) < len(want):
                    out.append(Problem(day, i, "removed"))
                else:
                    out.append(Problem(day, i, "changed"))
            elif i >= len(got) or got[i] != h:
                out.append(Problem(day, i, f"moved (now at position {got.index(h)})"))
        return out

    # ------------------------------------------------------------------ purge

    def shred(self, day: str, purposes: Sequence[str], now: float) -> dict[str, Any] | None:
        """Destroy the day's named keys; append and return a signed statement."""
        assert self.signing_key is not None
        kdir = self.directory / day / "keys"
        destroyed = {}
        for purpose in purposes:
            f = kdir / f"{purpose}.key"
            if not f.exists():
                continue
            blob = f.read_bytes()
            with f.open("r+b") as fh:
                fh.write(bytes(len(blob)))  # overwrite before unlinking (HDDs, not SSDs)
                fh.flush()
                os.fsync(fh.fileno())
            f.unlink()
            destroyed[purpose] = _sha256_hex(blob)
        if not destroyed:
            return None
        _fsync_dir(kdir)
        head = self._final_head(day)
        statement = {
            "day": day,
            "destroyed": destroyed,
            "at": round(now, 3),
            "root": head["root"] if head else None,
            "size": head["size"] if head else None,
        }
        signed = sign_json(self.signing_key, statement, "shredding")
        _append_line(self.directory / day / "shredding.jsonl", signed)
        return signed

    def shredding_statements(self, day: str) -> list[dict[str, Any]]:
        """The signed shredding statements of a day."""
        return _read_lines(self.directory / day / "shredding.jsonl")


def _sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, int | None, str]] = set()
    out = []
    for p in problems:
        k = (p.day, p.record, p.message)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _write_fence(path: Path) -> None:
    """Write ``index.fence`` from a sealed day's ``index.sorted``."""
    sorted_path = path / "index.sorted"
    if not sorted_path.exists():
        return
    data = sorted_path.read_bytes()
    step = _FENCE_EVERY * _ENTRY.size
    fence = b"".join(data[i : i + 16] for i in range(0, len(data) - _ENTRY.size + 1, step))
    tmp = path / "index.fence.tmp"
    with tmp.open("wb") as fh:
        fh.write(fence)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.rename(path / "index.fence")


def _drop_unsorted_index(path: Path) -> None:
    """Remove a sealed day's ``index.log``: ``index.sorted`` holds the same entries (a
    fifth of the day's bytes). Only once the final head is written: until then a crash
    recovers the day from ``index.log``."""
    if (path / "index.sorted").exists():
        (path / "index.log").unlink(missing_ok=True)


def _sorted_lookup(base: str, t: bytes) -> list[int] | None:
    """Record numbers under tag ``t`` in the sorted index of the day folder ``base``;
    None when the day has no sorted index (not sealed yet)."""
    try:
        fd = os.open(f"{base}/index.sorted", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        n = os.fstat(fd).st_size // _ENTRY.size
        if n == 0:
            return []
        try:
            with open(f"{base}/index.fence", "rb") as fh:
                fence = fh.read()
        except FileNotFoundError:
            fence = b""
        if len(fence) == 16 * ((n + _FENCE_EVERY - 1) // _FENCE_EVERY):
            # The first entry >= t lies after fence j-1's entry, at or before fence j's.
            j = bisect.bisect_left(_TagView(fence, len(fence) // 16, 16), t)
            i = max(0, (j - 1) * _FENCE_EVERY)
        else:
            # No fence (sealed by an older version): binary search in place.
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
                i = bisect.bisect_left(_TagView(data, n, _ENTRY.size), t)
        out: list[int] = []
        while i < n:
            count = min(n - i, 2 * _FENCE_EVERY)
            block = os.pread(fd, count * _ENTRY.size, i * _ENTRY.size)
            m = len(block) // _ENTRY.size
            k = bisect.bisect_left(_TagView(block, m, _ENTRY.size), t)
            while k < m and block[k * _ENTRY.size : k * _ENTRY.size + 16] == t:
                out.append(_ENTRY.unpack_from(block, k * _ENTRY.size)[1])
                k += 1
            if k < m or m < count:
                return out
            i += count  # the run of equal tags goes on in the next block
        return out
    finally:
        os.close(fd)


def _unsealed_lookup(path: Path, t: bytes) -> list[int]:
    """Record numbers under tag ``t`` in a day still being written, without touching it.

    Only records whose leaf hash is written count (each batch writes the records, then
    their hashes, then their index entries, all fsynced before it counts).
    """
    try:
        n = (path / "leaves.bin").stat().st_size // 32
        raw = (path / "index.log").read_bytes()
    except FileNotFoundError:
        return []
    out = []
    pos = raw.find(t)
    while pos >= 0:
        if pos % _ENTRY.size == 0 and pos + _ENTRY.size <= len(raw):
            seq = _ENTRY.unpack_from(raw, pos)[1]
            if seq < n:
                out.append(seq)
        pos = raw.find(t, pos + 1)
    return sorted(out)


class _TagView(Sequence[bytes]):
    """The tags of a sorted index file as a sequence, for ``bisect``."""

    def __init__(self, data: bytes | mmap.mmap, n: int, width: int) -> None:
        self._data, self._n, self._width = data, n, width

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            raise TypeError("no slices")
        return self._data[i * self._width : i * self._width + 16]
