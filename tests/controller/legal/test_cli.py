"""``borne legal``: init, verify (naming the altered record), purge, requisitions end to end."""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import load_settings
from controller.legal._format import iter_frames
from controller.legal.consumer import open_store
from controller.legal.store import day_of
from tests.controller.legal.conftest import T0, record


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


@pytest.fixture
def conf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A controller configuration with the legal log under tmp_path, keys created by init."""
    path = tmp_path / "borne.toml"
    path.write_text(f"""
[legal]
enabled = true
directory = "{tmp_path / "legal"}"
master_key_file = "{tmp_path / "master.key"}"
signing_key_file = "{tmp_path / "signing.pem"}"
""")
    assert main(["legal", "init", "-c", str(path)]) == 0
    assert "public key" in capsys.readouterr().out
    store = open_store(load_settings(path).legal)
    store.append([(i + 1, record(i)) for i in range(6)], T0)
    store.append([(10, record(9))], T0 + 86400)
    store.close()
    return path


def test_verify_passes_then_names_the_flipped_record(
    conf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`borne legal verify` exits 0 on an intact log and 1 naming day and record after a
    flipped byte."""
    assert main(["legal", "verify", "-c", str(conf)]) == 0
    assert "intact" in capsys.readouterr().out
    path = tmp_path / "legal" / day_of(T0) / "records.log"
    data = bytearray(path.read_bytes())
    frames, _ = iter_frames(bytes(data))
    data[sum(4 + len(f) for f in frames[:2]) + 60] ^= 0x80
    path.write_bytes(bytes(data))
    assert main(["legal", "verify", "-c", str(conf)]) == 1
    out = capsys.readouterr().out
    assert f"TAMPERED {day_of(T0)} record 2: changed" in out


def test_verify_detects_records_swapped_on_disk(
    conf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reordered records make `verify` fail and name them."""
    path = tmp_path / "legal" / day_of(T0) / "records.log"
    frames, _ = iter_frames(path.read_bytes())
    frames[0], frames[1] = frames[1], frames[0]
    path.write_bytes(b"".join(struct.pack(">I", len(f)) + f for f in frames))
    assert main(["legal", "verify", "-c", str(conf)]) == 1
    out = capsys.readouterr().out
    assert f"{day_of(T0)} record 0: moved" in out and f"{day_of(T0)} record 1: moved" in out


def test_requisition_needs_two_logins_then_finds_and_exports(
    conf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same login cannot approve twice; after two logins approve, a search by public
    IP + port + time prints the session and an export writes signed files."""
    c = ["-c", str(conf)]
    monkeypatch.setenv("LOGNAME", "alice")
    window = ["--from", iso(T0 - 3600), "--to", iso(T0 + 86400)]
    assert (
        main(
            [
                "legal",
                "requisition",
                "add",
                "PV-7",
                "--authority",
                "OPJ Figeac",
                "--basis",
                "CPP 60-1",
                "--scope",
                "IP",
                "--received",
                "2026-09-22",
                *window,
                *c,
            ]
        )
        == 0
    )
    assert main(["legal", "requisition", "approve", "PV-7", *c]) == 0
    assert main(["legal", "requisition", "approve", "PV-7", *c]) == 2
    query = ["--public", "192.0.2.1", "--port", str(1024 + 3 * 512 + 7), "--at", iso(T0 + 60)]
    assert main(["legal", "requisition", "search", "PV-7", *query, *c]) == 2
    assert "two distinct approvals" in capsys.readouterr().err
    monkeypatch.setenv("LOGNAME", "bob")
    assert main(["legal", "requisition", "approve", "PV-7", *c]) == 0
    assert main(["legal", "requisition", "search", "PV-7", *query, *c]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].split("\t")[:2] == ["3", record(3).client_mac]
    out = tmp_path / "export"
    assert main(["legal", "requisition", "export", "PV-7", *query, "--out", str(out), *c]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "PV-7.csv",
        "PV-7.csv.sig",
        "PV-7.json",
        "PV-7.json.sig",
        "PV-7.pdf",
        "PV-7.pdf.sig",
    ]
    assert main(["legal", "verify", *c]) == 0


def test_purge_shreds_past_retention(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`borne legal purge` shreds the days older than a year, not the younger ones."""
    c = ["-c", str(conf)]
    assert main(["legal", "purge", "--now", iso(T0 + 366 * 86400), *c]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [f"effacé / shredded {day_of(T0)}: identity, index, traffic"]
    assert main(["legal", "verify", *c]) == 0
