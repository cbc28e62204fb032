"""The borne_controller role writes a configuration the controller runs with, and backups work.

The role is applied with ansible-playbook (``local`` connection) into directories of the
test (``borne_controller_install``, ``_create_user`` and ``_manage_service`` off: nothing
is installed, no user created, no service started on the machine). Its configuration
passes ``borne config check`` (the role's own validation), a real ``borne controller``
starts with it and answers, the backup script makes a readable SQLite copy, and a second
apply changes nothing.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._ansible import BIN, changed, local_controller_vars, playbook
from tests.testbed import free_port, wait_for

pytestmark = [pytest.mark.ansible, pytest.mark.broker, pytest.mark.slow]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_controller_role_config_runs_the_controller_and_backups_restore(
    mosquitto: Any, tmp_path: Path
) -> None:
    """The role's borne.toml starts a real controller; its backup is a readable database."""
    ctl_vars, dirs = local_controller_vars(tmp_path)
    dashboard_port, portal_port = free_port(), free_port()
    host = {
        **ctl_vars,
        "borne_mqtt_host": mosquitto.host,
        "borne_mqtt_port": mosquitto.port,
        "borne_mqtt_tls": False,
        "borne_controller_settings": {
            "name": "Wi-Fi public du Lot (test)",
            # Test secrets in the test's own tmp dir; real ones come from the vault.
            "command_master_key": "controller-role-test-master-key-0123456789",
            "mqtt": {"username": None, "client_id": f"ctl-role-{time.time_ns()}"},
            "portal": {"fas_key": "fas-key-controller-role-0123", "listen_port": portal_port},
            "dashboard": {"listen_port": dashboard_port},
        },
    }
    inventory = tmp_path / "inventory.yml"
    controllers = {"controllers": {"hosts": {"ctl": host}}}
    inventory.write_text(json.dumps({"all": {"children": controllers}}))

    first = playbook(inventory, "controllers.yml")
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert changed(first.stdout, "ctl") > 0
    second = playbook(inventory, "controllers.yml")
    assert second.returncode == 0, second.stdout[-5000:]
    assert changed(second.stdout, "ctl") == 0, second.stdout[-5000:]

    conf = dirs["etc"] / "borne.toml"
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    unit = (dirs["units"] / "borne.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/borne controller -c {conf}" in unit

    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "borne"), "controller", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    health = f"http://127.0.0.1:{dashboard_port}/healthz"
    try:
        wait_for(lambda: healthy(health) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, (tmp_path / "controller.log").read_text()[-3000:]
        # The charting library the role installed from npm is served by the dashboards.
        assert healthy(f"http://127.0.0.1:{dashboard_port}/assets/echarts.min.js")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()

    backup = subprocess.run(
        [str(tmp_path / "borne-backup")], capture_output=True, text=True, timeout=60, check=False
    )
    assert backup.returncode == 0, backup.stderr
    copy = Path(backup.stdout.strip())
    assert copy.parent == dirs["backups"]
    assert sorted(p.name for p in dirs["backups"].iterdir()) == [copy.name]
    db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"access_points", "communes", "sessions"} <= tables
        assert db.execute("SELECT count(*) FROM communes").fetchone()[0] == 320
    finally:
        db.close()
