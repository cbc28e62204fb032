"""A real ``borne controller`` with [radius] enabled, driven by radclient as a NAS would:
every acknowledged accounting record survives a kill -9."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e._stack import (
    ControllerProcess,
    borne,
    count,
    write_controller_config,
)
from tests.testbed import MosquittoBroker, require

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


def test_acknowledged_accounting_survives_kill_9(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Each Accounting-Response means a stored session: kill -9 then restart loses none,
    and the restarted controller closes them on Accounting-On."""
    auth, acct = _udp_port(), _udp_port()
    conf, db = write_controller_config(
        tmp_path,
        mosquitto,
        client_id=f"ctl-radius-{time.time_ns()}",
        radius={"enabled": True, "auth_port": auth, "acct_port": acct},
    )
    borne(conf, "radius", "nas-add", NAS, "--insee", "46102", "--address", "127.0.0.1",
          "--secret", SECRET)  # fmt: skip

    def radius_answers() -> bool:
        status = radclient(auth, "status", "Message-Authenticator = 0x00\n")
        return "Received Access-Accept" in status

    with ControllerProcess(conf, tmp_path / "controller.log") as controller:
        controller.wait_for(radius_answers, timeout=30, message="RADIUS up")
        for i in range(20):
            out = radclient(
                acct,
                "acct",
                f'Acct-Status-Type = Start\nAcct-Session-Id = "k{i}"\n'
                f'Calling-Station-Id = "02-00-00-00-01-{i:02X}"\n',
            )
            assert "Received Accounting-Response" in out, out + controller.log.read_text()
        controller.kill()
        open_q = "SELECT count(*) FROM sessions WHERE ap_id = ? AND stopped_at IS NULL"
        assert count(db, open_q, NAS) == 20
        controller.start()
        controller.wait_for(radius_answers, timeout=30, message="RADIUS up again")
        out = radclient(acct, "acct", "Acct-Status-Type = Accounting-On\n")
        assert "Received Accounting-Response" in out, out
        assert count(db, "SELECT count(*) FROM sessions WHERE terminate_cause = 'nas-reboot'") == 20
        controller.stop()
