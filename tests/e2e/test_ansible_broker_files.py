"""The borne_controller role's timer forgets old MQTT logins when the registry writes them.

With ``borne_mosquitto_logins_source: registry`` (the broker on the controller's host, as
``borne ap enroll`` and ``rotate.yml`` require), the role installs
``borne-broker-files.service`` and an hourly ``borne-broker-files.timer``; the service's
command, run for real against the role's own ``borne.toml``, ends a rotation past its
grace period and drops the old login from mosquitto's files. With logins from the
inventory, no timer is installed, and one installed earlier is removed.

The role is applied with ansible-playbook (``local`` connection) into directories of the
test, nothing installed and no service touched (``tests/e2e/_ansible.py``); the host is in
both ``controllers`` and ``brokers``, the broker's variables set on the ``brokers`` group.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._ansible import BIN, changed, local_controller_vars, playbook

pytestmark = [pytest.mark.ansible, pytest.mark.slow, pytest.mark.timeout(600)]

UNITS = ("borne-broker-files.service", "borne-broker-files.timer")
AP = "ap-46201-01"
CONTROLLER_PW = "broker-files-controller-0123"


def write_inventory(tmp_path: Path, host: dict[str, Any], broker: dict[str, Any]) -> Path:
    """One host, ``ctl``, in ``controllers`` and in ``brokers`` (``broker``: group vars)."""
    inventory = tmp_path / "inventory.yml"
    groups = {
        "controllers": {"hosts": {"ctl": host}},
        "brokers": {"hosts": {"ctl": None}, "vars": broker},
    }
    inventory.write_text(json.dumps({"all": {"children": groups}}))
    return inventory


def controller_host(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """The controller role's variables into tmp_path (no charting library: no network)."""
    ctl_vars, dirs = local_controller_vars(tmp_path)
    host = {
        **ctl_vars,
        "borne_mqtt_tls": False,
        "borne_controller_dashboard_assets": False,
        "borne_controller_settings": {
            # Test secrets in the test's own tmp dir; real ones come from the vault.
            "command_master_key": "broker-files-role-test-master-key-0123",
            "mqtt": {"password": CONTROLLER_PW},
            "portal": {"fas_key": "fas-key-broker-files-0123"},
        },
    }
    return host, dirs


def apply(inventory: Path) -> int:
    """Apply controllers.yml; the number of changes it reports."""
    out = playbook(inventory, "controllers.yml")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    return changed(out.stdout, "ctl")


def borne(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "borne"), *argv], capture_output=True, text=True, timeout=60, check=False
    )


def test_registry_logins_get_an_hourly_timer_whose_command_forgets_old_logins(
    tmp_path: Path,
) -> None:
    """Units rendered with the role's paths; their command drops an expired rotated login."""
    host, dirs = controller_host(tmp_path)
    mosquitto_dir = tmp_path / "etc-mosquitto"
    broker = {
        "borne_mosquitto_logins_source": "registry",
        "borne_mosquitto_dir": str(mosquitto_dir),
    }
    inventory = write_inventory(tmp_path, host, broker)

    assert apply(inventory) > 0
    assert apply(inventory) == 0

    conf = dirs["etc"] / "borne.toml"
    passwd, acl = mosquitto_dir / "borne.passwd", mosquitto_dir / "borne.acl"
    service = (dirs["units"] / UNITS[0]).read_text()
    timer = (dirs["units"] / UNITS[1]).read_text()
    exec_start = re.findall(r"^ExecStart=(.*)$", service, re.M)
    assert exec_start == [
        f"{sys.prefix}/bin/borne ap broker-files --config {conf} --passwd-file {passwd} "
        f'--acl-file {acl} --broker-reload "systemctl reload mosquitto"'
    ]
    assert re.search(r"^Type=oneshot$", service, re.M)
    # root with mosquitto's group: the rewritten files stay readable by mosquitto.
    assert re.search(r"^Group=mosquitto$", service, re.M)
    assert not re.search(r"^User=", service, re.M)
    assert re.search(rf"^ReadWritePaths={dirs['data']} {mosquitto_dir}$", service, re.M)
    assert re.search(r"^OnCalendar=hourly$", timer, re.M)
    assert re.search(r"^Persistent=true$", timer, re.M)
    assert re.search(r"^RandomizedDelaySec=[1-9]\d*$", timer, re.M)
    assert re.search(r"^WantedBy=timers\.target$", timer, re.M)
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the units parse as systemd reads them
        check = subprocess.run(
            [analyze, "verify", "--man=no", *(str(dirs["units"] / u) for u in UNITS)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert not re.search(r"Unknown (key|section)|Failed to parse", check.stderr), check.stderr

    # The service's command for real: an AP enrolled, then rotated with no grace period.
    broker_args = ["-c", str(conf), "--passwd-file", str(passwd), "--acl-file", str(acl)]
    enrolled = borne("ap", "enroll", AP, "--insee", "46201", *broker_args)
    assert enrolled.returncode == 0, enrolled.stderr
    rotated = borne("ap", "rotate", AP, "--grace", "0", "--no-send", "--json", *broker_args)
    assert rotated.returncode == 0, rotated.stderr
    new_login = json.loads(rotated.stdout)["mqtt_username"]
    assert new_login == f"{AP}.1"
    logins = {line.split(":")[0] for line in passwd.read_text().splitlines() if line}
    assert logins == {"borne-controller", AP, new_login}

    argv = shlex.split(exec_start[0])
    # The unit reloads mosquitto with systemctl; here a marker file stands for it.
    marker = tmp_path / "reloaded"
    argv[argv.index("--broker-reload") + 1] = f"touch {marker}"
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert f"rotations ended: {AP}" in ran.stdout
    assert marker.exists()
    logins = {line.split(":")[0] for line in passwd.read_text().splitlines() if line}
    assert logins == {"borne-controller", new_login}
    assert f"user {AP}\n" not in acl.read_text()
    assert f"user {new_login}\n" in acl.read_text()
    assert oct(passwd.stat().st_mode & 0o777) == "0o640"

    # Logins from the inventory again: the timer goes.
    broker["borne_mosquitto_logins_source"] = "inventory"
    write_inventory(tmp_path, host, broker)
    assert apply(inventory) > 0
    assert not [u for u in UNITS if (dirs["units"] / u).exists()]
    assert apply(inventory) == 0


def test_inventory_logins_install_no_timer(tmp_path: Path) -> None:
    """Without borne_mosquitto_logins_source (inventory by default) no timer is written."""
    host, dirs = controller_host(tmp_path)
    inventory = write_inventory(tmp_path, host, {})
    assert apply(inventory) > 0
    units = sorted(p.name for p in dirs["units"].iterdir())
    assert units == ["borne-backup.service", "borne-backup.timer", "borne.service"]
