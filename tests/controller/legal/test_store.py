"""The legal store: durable encrypted records, signed heads, verify names what changed."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.legal import merkle
from controller.legal._format import iter_frames
from controller.legal.errors import KeyError_, StoreError
from controller.legal.keys import MasterKey
from controller.legal.store import LegalStore, day_of, verify_json
from tests.controller.legal.conftest import T0, record

DAY = day_of(T0)
IMPORTS_LEGAL = re.compile(r"^\s*(from|import)\s+controller\.legal\b", re.MULTILINE)


def fill(store: LegalStore, n: int = 10, now: float = T0, first_event: int = 1) -> None:
    store.append([(first_event + i, record(i)) for i in range(n)], now)


def test_records_read_back_and_are_not_in_clear(store: LegalStore) -> None:
    """What is appended decrypts to the same record; the files hold no MAC or IP in clear."""
    fill(store, 5)
    found = store.read(DAY, [3])
    assert [f.record for f in found] == [record(3)]
    for f in (store.directory / DAY).rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"02:00:00:00" not in data and b"10.46.1." not in data, f


def test_verify_is_clean_then_names_a_flipped_byte(
    store: LegalStore, signing: Ed25519PrivateKey
) -> None:
    """A flipped byte anywhere in a record is reported with its day and record number."""
    fill(store, 10)
    pub = signing.public_key()
    assert store.verify(pub) == []
    store.close()
    path = store.directory / DAY / "records.log"
    data = bytearray(path.read_bytes())
    frames, _ = iter_frames(bytes(data))
    offset = sum(4 + len(f) for f in frames[:6]) + 4 + 100  # inside record 6's ciphertext
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    problems = store.verify(pub)
    assert [(p.day, p.record, p.message) for p in problems] == [(DAY, 6, "changed")]


def _rewrite(store: LegalStore, order: list[int]) -> None:
    store.close()
    path = store.directory / DAY / "records.log"
    frames, _ = iter_frames(path.read_bytes())
    path.write_bytes(b"".join(struct.pack(">I", len(frames[i])) + frames[i] for i in order))


def test_verify_names_a_removed_record(store: LegalStore, signing: Ed25519PrivateKey) -> None:
    """A record removed from the middle of a day is named."""
    fill(store, 8)
    _rewrite(store, [0, 1, 2, 4, 5, 6, 7])
    problems = store.verify(signing.public_key())
    assert any(p.record == 3 and p.message == "removed" for p in problems), problems


def test_verify_names_reordered_records(store: LegalStore, signing: Ed25519PrivateKey) -> None:
    """Two swapped records are each named as moved."""
    fill(store, 8)
    _rewrite(store, [0, 1, 5, 3, 4, 2, 6, 7])
    problems = store.verify(signing.public_key())
    named = {p.record for p in problems if p.message.startswith("moved")}
    assert named == {2, 5}, problems


def test_a_forged_head_or_a_removed_day_is_detected(
    store: LegalStore, signing: Ed25519PrivateKey
) -> None:
    """Heads signed by another key fail; deleting a whole day breaks the chain of days."""
    fill(store, 3, T0)
    fill(store, 3, T0 + 86400, first_event=10)
    fill(store, 3, T0 + 2 * 86400, first_event=20)
    store.seal(day_of(T0 + 2 * 86400))
    pub = signing.public_key()
    assert store.verify(pub) == []
    other = Ed25519PrivateKey.generate().public_key()
    assert {p.message for p in store.verify(other)} >= {"head of size 3 has a bad signature"}
    store.close()
    middle = store.directory / day_of(T0 + 86400)
    for f in sorted(middle.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    middle.rmdir()
    problems = store.verify(pub)
    assert [(p.day, p.message) for p in problems] == [
        (day_of(T0 + 2 * 86400), "the chain to the previous day is broken")
    ]


def test_a_new_day_seals_the_previous_one(store: LegalStore, signing: Ed25519PrivateKey) -> None:
    """Writing into day D+1 signs D's final head; a clock stepping back to D afterwards
    writes into D+1, never into the sealed D."""
    fill(store, 4, T0)
    fill(store, 2, T0 + 86400, first_event=50)
    heads = (store.directory / DAY / "heads.jsonl").read_text().splitlines()
    assert '"final":true' in heads[-1]
    again = LegalStore(store.directory, store.provider, signing, checkpoint_s=0)
    again.append([(99, record(1))], T0)
    assert [f.seq for f in again.read(day_of(T0 + 86400), range(5))] == [0, 1, 2]
    assert again.verify(signing.public_key()) == []
    with pytest.raises(StoreError):
        again.seal("2020-01-01")


def test_a_torn_tail_is_dropped_and_last_event_is_kept(
    tmp_path: Path, master: MasterKey, signing: Ed25519PrivateKey
) -> None:
    """A crash mid-write leaves a torn frame: reopening drops it and resumes after the last
    complete record (its outbox id is remembered)."""
    store = LegalStore(tmp_path, master, signing, checkpoint_s=0)
    fill(store, 5)
    store.close()
    with (tmp_path / DAY / "records.log").open("ab") as fh:
        fh.write(b"\x00\x00\x01\x00partial")
    again = LegalStore(tmp_path, master, signing, checkpoint_s=0)
    assert again.last_event_id() == 5
    again.append([(6, record(5))], T0 + 1)
    assert again.verify(signing.public_key()) == []
    assert [f.record for f in again.read(DAY, [5])] == [record(5)]


def test_a_torn_head_line_is_dropped(
    tmp_path: Path, master: MasterKey, signing: Ed25519PrivateKey
) -> None:
    """A crash mid-way through a signed head leaves half a line: the store opens, appends,
    seals the day and verifies; the torn half is gone from the file."""
    store = LegalStore(tmp_path, master, signing, checkpoint_s=0)
    fill(store, 5)
    store.close()
    heads = tmp_path / DAY / "heads.jsonl"
    whole = heads.read_bytes()
    heads.write_bytes(whole + whole.splitlines()[-1][:40])
    again = LegalStore(tmp_path, master, signing, checkpoint_s=0)
    assert again.last_event_id() == 5
    again.append([(6, record(5))], T0 + 1)
    again.seal(DAY)
    assert again.verify(signing.public_key()) == []
    lines = heads.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(ln.startswith(b"{") and ln.endswith(b"}") for ln in lines[:-1])
    assert len(lines) - 1 == len(whole.splitlines()) + 2  # one checkpoint, one final head


def test_blind_index_finds_records_in_open_and_sealed_days(store: LegalStore) -> None:
    """A lookup by MAC finds only the matching record numbers, before and after sealing."""
    fill(store, 20)
    seqs, _ = store.lookup(DAY, "mac", record(7).client_mac)
    assert seqs == [7]
    store.seal(DAY)
    reopened = LegalStore(store.directory, store.provider)
    seqs, _ = reopened.lookup(DAY, "mac", record(7).client_mac.upper())
    assert seqs == [7]
    assert reopened.lookup(DAY, "mac", "02:ff:ff:ff:ff:ff")[0] == []


def test_shredding_makes_a_day_unreadable_but_verifiable(
    store: LegalStore, signing: Ed25519PrivateKey
) -> None:
    """After its keys are destroyed a day cannot be decrypted, still verifies, and a signed
    statement names the destroyed keys."""
    fill(store, 5)
    store.seal(DAY)
    statement = store.shred(DAY, ["identity", "traffic", "index"], T0 + 400 * 86400)
    assert statement is not None
    assert verify_json(signing.public_key(), statement, "shredding")
    assert set(statement["destroyed"]) == {"identity", "traffic", "index"}
    with pytest.raises(KeyError_):
        store.read(DAY, [0])
    assert not list((store.directory / DAY / "keys").iterdir())
    assert store.verify(signing.public_key()) == []


def test_traffic_part_can_be_shredded_alone(store: LegalStore) -> None:
    """Destroying the traffic key keeps the identity part and empties volumes and location."""
    store.append([(1, record(1, up_bytes=5, down_bytes=7))], T0)
    store.shred(DAY, ["traffic"], T0)
    (found,) = store.read(DAY, [0])
    assert found.record.client_mac == record(1).client_mac
    assert (found.record.up_bytes, found.record.gateway) == (0, "")


def test_inclusion_proof_of_a_record_verifies(store: LegalStore) -> None:
    """The proof of a record verifies against the signed head's root."""
    fill(store, 9)
    p = store.proof(DAY, 4)
    assert merkle.verify_inclusion(
        4,
        p["tree_size"],
        bytes.fromhex(p["leaf_hash"]),
        [bytes.fromhex(x) for x in p["path"]],
        bytes.fromhex(p["head"]["root"]),
    )


def test_a_wrong_master_key_cannot_open_a_day(
    store: LegalStore, signing: Ed25519PrivateKey
) -> None:
    """Another master key cannot unwrap the day keys."""
    fill(store, 1)
    other = LegalStore(store.directory, MasterKey.from_text(MasterKey.new_text()), signing)
    with pytest.raises(KeyError_):
        other.read(DAY, [0])


def test_nothing_else_in_borne_reads_the_legal_log() -> None:
    """Only the controller's startup (main.py), the CLI registry and the legal officer's
    pages (dashboards/_legal.py, which refuse every other role) name the legal package: no
    other dashboard, statistics or portal code can import it (purpose limitation, L34-1)."""
    root = Path(__file__).resolve().parents[3]
    allowed = {
        root / "controller" / "main.py",
        root / "controller" / "cli.py",
        root / "dashboards" / "_legal.py",
    }
    offenders = []
    for pkg in ("agents", "controller", "captive_portal", "radius", "dashboards"):
        for path in (root / pkg).rglob("*.py"):
            if (root / "controller" / "legal") in path.parents or path in allowed:
                continue
            if IMPORTS_LEGAL.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_fenced_lookup_agrees_with_a_full_scan_and_with_the_old_layout(
    store: LegalStore,
) -> None:
    """Over a sealed day of several fence blocks, lookups through ``index.fence`` give the
    record numbers a scan of every record gives, for values with one, many or no record;
    a day sealed before fences existed is searched too, and sealing it again adds one."""
    n = 3000  # 12,000+ index entries: about 50 fence blocks
    # 40 records share a private address and gateway: a run of entries crossing blocks.
    recs = [
        record(i, private_ip="10.47.9.9" if i % 75 == 0 else f"10.46.{i // 200}.{i % 200}")
        for i in range(n)
    ]
    store.append([(i + 1, r) for i, r in enumerate(recs)], T0)
    store.seal(DAY)
    path = store.directory / DAY
    assert not (path / "index.log").exists()  # index.sorted holds the same entries
    assert (path / "index.fence").stat().st_size == 16 * -(
        -(path / "index.sorted").stat().st_size // 20 // 256
    )
    wanted = {
        ("mac", record(2999).client_mac): [2999],
        ("mac", record(0).client_mac): [0],
        ("private", "10.47.9.9|ap-46201-01"): [i for i in range(n) if i % 75 == 0],
        ("user", "cmd-1234"): [1234],
        ("mac", "02:ff:ff:ff:ff:ff"): [],
    }
    reader = LegalStore(store.directory, store.provider)
    for (kind, value), seqs in wanted.items():
        assert reader.lookup(DAY, kind, value)[0] == seqs, (kind, value)
    (path / "index.fence").unlink()
    for (kind, value), seqs in wanted.items():
        assert reader.lookup(DAY, kind, value)[0] == seqs, (kind, value)
    store.seal(DAY)  # already sealed: only the missing fence is written
    assert (path / "index.fence").exists()
    found = reader.read(DAY, [0, 75, 2999])
    assert [f.record for f in found] == [recs[0], recs[75], recs[2999]]


def test_a_reader_never_repairs_a_day_another_store_is_writing(
    tmp_path: Path, master: MasterKey, signing: Ed25519PrivateKey
) -> None:
    """A search from another process (the dashboards, the CLI) on the day the consumer is
    writing reads what is durable and leaves a batch in flight alone (no truncation)."""
    writer = LegalStore(tmp_path, master, signing, checkpoint_s=0)
    fill(writer, 5)
    with (tmp_path / DAY / "records.log").open("ab") as fh:
        fh.write(b"\x00\x00\x01\x00in flight")  # the next batch, before its hashes
    size = (tmp_path / DAY / "records.log").stat().st_size
    reader = LegalStore(tmp_path, master)
    seqs, keys = reader.lookup(DAY, "mac", record(3).client_mac)
    assert seqs == [3] and keys is not None
    assert [f.record for f in reader.read(DAY, seqs, keys)] == [record(3)]
    assert (tmp_path / DAY / "records.log").stat().st_size == size
