"""deploy/ansible's playbooks run for real against a test inventory (``local`` connection).

What the role tests share: ``ansible-playbook`` with the project's ``ansible.cfg`` and
its state kept beside the inventory, the ``changed=`` count of a host in the recap, and
the variables that apply the controller role into directories of the test (nothing
installed, no user created, no service touched on the machine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
BIN = Path(sys.executable).parent


def playbook(
    inventory: Path, name: str, *extra: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run one of deploy/ansible's playbooks against ``inventory``; never raises on failure."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOME": str(inventory.parent / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(inventory.parent / "ansible-tmp"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), name, *extra],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def changed(out: str, host: str) -> int:
    """The ``changed=`` count of ``host`` in the play recap of ``out``."""
    m = re.search(rf"^{host}\s*:.*\bchanged=(\d+)", out, re.M)
    assert m, out[-3000:]
    return int(m.group(1))


def _id(flag: str) -> str:
    return subprocess.run(["id", flag], capture_output=True, text=True, check=True).stdout.strip()


def local_controller_vars(tmp: Path, prefix: str = "") -> tuple[dict[str, Any], dict[str, Path]]:
    """Host variables applying the controller role into new directories ``tmp/<prefix>etc``,
    ``data``, ``backups`` and ``units``, as the current user, with this virtualenv.

    Returns (variables, directories by name).
    """
    dirs = {name: tmp / f"{prefix}{name}" for name in ("etc", "data", "backups", "units")}
    for d in dirs.values():
        d.mkdir()
    variables = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "borne_controller_install": False,
        "borne_controller_create_user": False,
        "borne_controller_manage_service": False,
        "borne_controller_user": _id("-un"),
        "borne_controller_group": _id("-gn"),
        "borne_controller_venv": sys.prefix,
        "borne_controller_config_dir": str(dirs["etc"]),
        "borne_controller_data_dir": str(dirs["data"]),
        "borne_controller_backup_dir": str(dirs["backups"]),
        "borne_controller_unit_dir": str(dirs["units"]),
        "borne_controller_backup_script": str(tmp / "borne-backup"),
    }
    return variables, dirs
