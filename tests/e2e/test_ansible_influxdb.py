"""The borne_influxdb role provisions a real InfluxDB 1.6, and the controller role points at it.

The role is applied with ansible-playbook (``local`` connection) with
``borne_influxdb_install`` and ``_manage_service`` off: nothing is installed and no
service is touched on the machine. A first apply writes the configuration only
(``borne_influxdb_provision: false``); the test starts ``influxd`` (Debian package
``influxdb``) with that very file, as systemd would; the next apply provisions it over
the HTTP API: administrator, database, retention policy, borne's user and grant. Then a
second apply and ``--check`` change nothing; a new password in the inventory is set on
the server (one change); authentication is enforced; borne's user writes and reads its
database but is no administrator; the controller role's ``borne.toml`` has the matching
``[stats]`` store and passes ``borne config check``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._ansible import BIN, changed, local_controller_vars, playbook
from tests.testbed import _stop_process, free_port, require, wait_for

pytestmark = [pytest.mark.ansible, pytest.mark.slow, pytest.mark.timeout(900)]

ADMIN_PASSWORD = "influx-admin-password-0123"
BORNE_PASSWORD = "influx-borne-password-0123"


def query(url: str, q: str, user: str | None = None, password: str | None = None) -> Any:
    """POST /query (basic authentication); the decoded JSON, or the HTTP status if refused."""
    req = urllib.request.Request(
        f"{url}/query",
        data=urllib.parse.urlencode({"q": q}).encode(),
        headers=_auth(user, password),
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code


def _auth(user: str | None, password: str | None) -> dict[str, str]:
    if user is None:
        return {}
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_influxdb_role_provisions_a_real_influxdb_and_the_controller_uses_it(
    tmp_path: Path,
) -> None:
    """Config, then provisioning over HTTP; changed=0 after; password change applied;
    auth enforced; borne writes and reads, is no admin; controller's [stats] matches."""
    binary = shutil.which("influxd") or require("influxd (Debian package influxdb)")
    http, rpc = free_port(), free_port()
    url = f"http://127.0.0.1:{http}"
    conf = tmp_path / "etc" / "influxdb.conf"
    conf.parent.mkdir()
    ctl_vars, ctl_dirs = local_controller_vars(tmp_path, prefix="ctl-")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    influx_host = {
        **local,
        "borne_influxdb_install": False,
        "borne_influxdb_manage_service": False,
        "borne_influxdb_config_file": str(conf),
        "borne_influxdb_data_dir": str(tmp_path / "influx-data"),
        "borne_influxdb_port": http,
        "borne_influxdb_rpc_address": f"127.0.0.1:{rpc}",
    }
    ctl_host = {
        **ctl_vars,
        "borne_controller_settings": {
            "command_master_key": "influx-role-test-master-key-0123456789",
            "portal": {"fas_key": "fas-key-influx-role-0123"},
        },
    }
    group_vars = {
        "borne_influxdb_enabled": True,
        "borne_influxdb_url": url,
        # Test secrets in the test's own tmp dir; real ones come from the vault.
        "borne_influxdb_admin_password": ADMIN_PASSWORD,
        "borne_influxdb_borne_password": BORNE_PASSWORD,
        "borne_influxdb_retention_policy": "borne_1y",
        "borne_influxdb_retention_duration": "52w",
        "borne_mqtt_tls": False,
    }
    inventory = tmp_path / "inventory.yml"

    def write_inventory(**overrides: Any) -> None:
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "vars": {**group_vars, **overrides},
                        "children": {
                            "influxdb": {"hosts": {"influx": influx_host}},
                            "controllers": {"hosts": {"ctl": ctl_host}},
                        },
                    }
                }
            )
        )

    write_inventory()
    only_config = playbook(inventory, "influxdb.yml", "-e", '{"borne_influxdb_provision": false}')
    assert only_config.returncode == 0, only_config.stdout[-5000:] + only_config.stderr[-2000:]
    text = conf.read_text()
    assert "auth-enabled = true" in text and f'bind-address = "127.0.0.1:{http}"' in text
    assert "query-log-enabled = false" in text

    log = tmp_path / "influxd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-config", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: proc.poll() is not None or _pings(url), timeout=60, message="influxd up")
        assert proc.poll() is None, log.read_text()[-3000:]

        first = playbook(inventory, "influxdb.yml")
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
        assert changed(first.stdout, "influx") >= 5  # admin, database, policy, user, grant
        second = playbook(inventory, "influxdb.yml")
        assert second.returncode == 0, second.stdout[-6000:]
        assert changed(second.stdout, "influx") == 0, second.stdout[-6000:]
        dry = playbook(inventory, "influxdb.yml", "--check")
        assert dry.returncode == 0, dry.stdout[-6000:]
        assert changed(dry.stdout, "influx") == 0, dry.stdout[-6000:]
        for run in (first, second, dry):
            assert ADMIN_PASSWORD not in run.stdout and BORNE_PASSWORD not in run.stdout

        assert query(url, "SHOW DATABASES") == 401  # authentication is on
        policies = query(url, 'SHOW RETENTION POLICIES ON "borne"', "admin", ADMIN_PASSWORD)
        rows = policies["results"][0]["series"][0]["values"]
        assert any(r[0] == "borne_1y" and r[1] == "8736h0m0s" and r[4] is True for r in rows), rows
        assert query(url, 'CREATE DATABASE "other"', "borne", BORNE_PASSWORD) == 403
        write = urllib.request.Request(
            f"{url}/write?db=borne",
            data=b"presence,insee=46201 visitors=12i 1790000000000000000",
            headers=_auth("borne", BORNE_PASSWORD),
        )
        with urllib.request.urlopen(write, timeout=10) as resp:
            assert resp.status == 204
        got = query(
            url, 'SELECT visitors FROM "borne"."borne_1y".presence', "borne", BORNE_PASSWORD
        )
        assert got["results"][0]["series"][0]["values"][0][1] == 12

        # a new password in the vault is set on the server, and only that changes
        new_password = "influx-borne-password-4567"
        write_inventory(borne_influxdb_borne_password=new_password)
        rotated = playbook(inventory, "influxdb.yml")
        assert rotated.returncode == 0, rotated.stdout[-6000:]
        assert changed(rotated.stdout, "influx") == 1, rotated.stdout[-6000:]
        assert query(url, "SHOW DATABASES", "borne", BORNE_PASSWORD) == 401
        assert isinstance(query(url, "SHOW DATABASES", "borne", new_password), dict)

        controllers = playbook(inventory, "controllers.yml")
        assert controllers.returncode == 0, controllers.stdout[-6000:]
        borne_toml = ctl_dirs["etc"] / "borne.toml"
        stats = tomllib.loads(borne_toml.read_text())["stats"]
        assert stats == {
            "store": "influxdb1",
            "url": url,
            "database": "borne",
            "username": "borne",
            "password": new_password,
        }
        check = subprocess.run(
            [str(BIN / "borne"), "config", "check", str(borne_toml)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        _stop_process(proc)


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=1) as resp:
            return bool(resp.status == 204)
    except OSError:
        return False
