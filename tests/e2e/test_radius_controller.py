"""A real ``borne controller`` with [radius] enabled, driven by radclient as a NAS would:
every acknowledged accounting record survives a kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import free_port, require, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

NAS = "nas-46102-01"
SECRET = "e2e-radius-secret-0123"


def _udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def radclient(port: int, kind: str, text: str) -> str:
    binary = shutil.which("radclient")
    if binary is None:
        require("radclient (Debian package freeradius-utils)")
        raise AssertionError("unreachable")
    out = subprocess.run(
        [binary, "-x", "-r", "2", "-t", "2", f"127.0.0.1:{port}", kind, SECRET],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout + out.stderr


def start(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "controller", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def test_acknowledged_accounting_survives_kill_9(mosquitto: Any, tmp_path: Path) -> None:
    """Each Accounting-Response means a stored session: kill -9 then restart loses none,
    and the restarted controller closes them on Accounting-On."""
    db = tmp_path / "state.db"
    auth, acct = _udp_port(), _udp_port()
    conf = tmp_path / "borne.toml"
    conf.write_text(f"""
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "ctl-radius-{time.time_ns()}"
[database]
url = "sqlite+aiosqlite:///{db}"
[portal]
listen_port = {free_port()}
[dashboard]
listen_port = {free_port()}
[radius]
enabled = true
auth_port = {auth}
acct_port = {acct}
""")
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "radius",
            "nas-add",
            NAS,
            "--insee",
            "46102",
            "--address",
            "127.0.0.1",
            "--secret",
            SECRET,
            "-c",
            str(conf),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    log = tmp_path / "controller.log"
    proc = start(conf, log)
    try:
        wait_for(
            lambda: (
                "Received Access-Accept"
                in radclient(auth, "status", "Message-Authenticator = 0x00\n")
            ),
            timeout=30,
            message="RADIUS up",
        )
        for i in range(20):
            out = radclient(
                acct,
                "acct",
                f'Acct-Status-Type = Start\nAcct-Session-Id = "k{i}"\n'
                f'Calling-Station-Id = "02-00-00-00-01-{i:02X}"\n',
            )
            assert "Received Accounting-Response" in out, out + log.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        conn = sqlite3.connect(db)
        try:
            stored = conn.execute(
                "SELECT count(*) FROM sessions WHERE ap_id = ? AND stopped_at IS NULL", (NAS,)
            ).fetchone()[0]
        finally:
            conn.close()
        assert stored == 20
        proc = start(conf, log)
        wait_for(
            lambda: (
                "Received Access-Accept"
                in radclient(auth, "status", "Message-Authenticator = 0x00\n")
            ),
            timeout=30,
            message="RADIUS up again",
        )
        out = radclient(acct, "acct", "Acct-Status-Type = Accounting-On\n")
        assert "Received Accounting-Response" in out, out
        conn = sqlite3.connect(db)
        try:
            closed = conn.execute(
                "SELECT count(*) FROM sessions WHERE terminate_cause = 'nas-reboot'"
            ).fetchone()[0]
        finally:
            conn.close()
        assert closed == 20
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
