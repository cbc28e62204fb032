"""Requisitions: two people approve, searches find the right session, exports are signed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.legal import merkle
from controller.legal.errors import ApprovalError, LegalError
from controller.legal.requisitions import Journal, Query, Requisitions, search
from controller.legal.store import LegalStore
from tests.controller.legal.conftest import T0, record
from tests.testbed import require

DAY_S = 86400.0


def populate(store: LegalStore) -> None:
    """300 sessions over two days; session i uses port block i % 100 of 192.0.2.1."""
    store.append([(i + 1, record(i, start_ms=int((T0 + i * 60) * 1000))) for i in range(150)], T0)
    store.append(
        [(i + 1, record(i, start_ms=int((T0 + i * 60) * 1000))) for i in range(150, 300)],
        T0 + DAY_S,
    )
    # Session 7 stops after 10 minutes: its stop record supersedes its start record.
    stop = record(
        7,
        event="stop",
        start_ms=int((T0 + 420) * 1000),
        stop_ms=int((T0 + 1020) * 1000),
        up_bytes=1,
        down_bytes=2,
    )
    store.append([(1000, stop)], T0 + DAY_S + 1)


def test_search_by_public_ip_port_and_time_finds_the_one_session(store: LegalStore) -> None:
    """Public IP + port + time selects the session whose port block and period match."""
    populate(store)
    # Port block of session 7 is 1024 + 7 * 512 .. +511; sessions 107 and 207 share it
    # but start later (107 min, 207 min after T0).
    q = Query("public", "192.0.2.1", T0 + 600, T0 + 600, port=1024 + 7 * 512 + 100)
    found = search(store, q)
    assert [f.record.session_id for f in found] == ["7"]
    assert found[0].record.event == "stop" and found[0].record.down_bytes == 2
    late = Query("public", "192.0.2.1", T0 + 1100, T0 + 1100, port=1024 + 7 * 512 + 100)
    assert [f.record.session_id for f in search(store, late)] == []


def test_search_by_private_ip_gateway_mac_and_user(store: LegalStore) -> None:
    """Each identifier kind finds its sessions and only them."""
    populate(store)
    whole = (T0 - DAY_S, T0 + 3 * DAY_S)
    mac = search(store, Query("mac", record(260).client_mac.upper(), *whole))
    assert [f.record.session_id for f in mac] == ["260"]
    user = search(store, Query("user", "cmd-42", *whole))
    assert [f.record.session_id for f in user] == ["42"]
    priv = search(store, Query("private", "10.46.1.13", *whole, gateway="ap-46201-01"))
    assert [f.record.session_id for f in priv] == ["3", "203"]
    other_gw = Query("private", "10.46.1.13", *whole, gateway="ap-46042-01")
    assert search(store, other_gw) == []


def test_two_people_must_approve_within_the_window(store: LegalStore, tmp_path: Path) -> None:
    """Without two distinct approvals, or outside the requisition's window, nothing is read."""
    populate(store)
    reqs = Requisitions(store)
    reqs.register(
        "PV-1",
        "OPJ Cahors",
        "CPP 60-1, 60-1-2",
        "IP 192.0.2.1",
        T0,
        T0 + DAY_S,
        "2026-09-25",
        "alice",
        T0,
    )
    q = Query("mac", record(7).client_mac, T0, T0 + DAY_S)
    with pytest.raises(ApprovalError):
        reqs.search("PV-1", "alice", q, T0)
    reqs.approve("PV-1", "alice", T0)
    with pytest.raises(ApprovalError):
        reqs.approve("PV-1", "alice", T0)
    with pytest.raises(ApprovalError):
        reqs.export("PV-1", "alice", q, tmp_path, T0)
    reqs.approve("PV-1", "bob", T0)
    assert [f.record.session_id for f in reqs.search("PV-1", "alice", q, T0)] == ["7"]
    with pytest.raises(ApprovalError):
        reqs.search("PV-1", "alice", Query("mac", "x", T0, T0 + 2 * DAY_S), T0)
    with pytest.raises(ApprovalError):
        reqs.search("PV-2", "alice", q, T0)
    with pytest.raises(LegalError):
        reqs.register("PV-1", "x", "y", "z", T0, T0, "d", "carol", T0)


def test_export_is_signed_proven_and_journaled(
    store: LegalStore, signing: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """CSV and JSON carry detached signatures; each record has an inclusion proof; the
    journal records register, approvals, export with the files' hashes, and its chain
    detects a changed or removed entry."""
    populate(store)
    reqs = Requisitions(store)
    reqs.register(
        "PV-9",
        "Parquet de Cahors",
        "CPP 77-1-1",
        "MAC",
        T0 - DAY_S,
        T0 + 2 * DAY_S,
        "2026-09-25",
        "alice",
        T0,
    )
    reqs.approve("PV-9", "alice", T0)
    reqs.approve("PV-9", "bob", T0)
    q = Query("mac", record(7).client_mac, T0 - DAY_S, T0 + 2 * DAY_S)
    paths = reqs.export("PV-9", "carol", q, tmp_path / "out", T0)
    pub = signing.public_key()
    for p in paths:
        pub.verify(bytes.fromhex(p.with_name(p.name + ".sig").read_text()), p.read_bytes())
    doc = json.loads(paths[0].read_text())
    assert [r["session_id"] for r in doc["records"]] == ["7"]
    assert doc["records"][0]["stop_utc"].endswith(".000+00:00")
    proof = doc["proofs"][0]
    assert merkle.verify_inclusion(
        proof["seq"],
        proof["tree_size"],
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(x) for x in proof["path"]],
        bytes.fromhex(proof["head"]["root"]),
    )
    assert "7," in paths[1].read_text()
    if shutil.which("pdftotext") is None:
        require("pdftotext (Debian package poppler-utils; tests/run.sh installs it)")
    text = subprocess.run(
        ["pdftotext", "-layout", str(paths[2]), "-"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "Réponse à réquisition / Answer to requisition PV-9" in text
    assert record(7).client_mac in text and "Parquet de Cahors" in text
    journal = Journal(store.directory / "journal.jsonl")
    assert [e["action"] for e in journal.entries()] == ["register", "approve", "approve", "export"]
    assert set(journal.entries()[-1]["details"]["files"]) == {"PV-9.json", "PV-9.csv", "PV-9.pdf"}
    assert journal.verify() == []
    lines = journal.path.read_text().splitlines()
    journal.path.write_text("\n".join([lines[0], lines[2], lines[3]]) + "\n")
    assert journal.verify()[0].startswith("entry 2:")
    changed = lines[3].replace("carol", "mallory")
    journal.path.write_text("\n".join([*lines[:3], changed]) + "\n")
    assert journal.verify() == ["entry 4: changed after it was written"]


def _append_many(path: str, actor: str, n: int) -> None:
    journal = Journal(Path(path))
    for i in range(n):
        journal.append(actor, "search", "PV-1", {"i": i}, T0 + i)


def test_concurrent_appenders_keep_the_journal_chained(tmp_path: Path) -> None:
    """Four processes (the CLI and the dashboards' legal page, say) appending at once
    leave one intact chain with every entry."""
    import multiprocessing

    path = tmp_path / "journal.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_append_many, args=(str(path), f"officer-{k}", 50)) for k in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    journal = Journal(path)
    assert journal.verify() == []
    assert len(journal.entries()) == 200
