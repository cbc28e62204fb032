"""deploy/ansible is clean for ansible-lint (production profile) and every playbook parses.

ansible-lint runs offline (``--offline``): it must not reach Ansible Galaxy, and the roles
use ansible-core modules only. The OpenWrt parts, which nothing here can run, are
covered by this lint and by the syntax check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ansible]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
BIN = Path(sys.executable).parent


def run(*argv: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(home / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(home / "ansible-tmp"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ansible_lint_production_profile_is_clean(tmp_path: Path) -> None:
    """ansible-lint --profile production finds no violation in deploy/ansible."""
    out = run("ansible-lint", "--offline", "--profile", "production", "--nocolor", home=tmp_path)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]
    assert "Profile 'production' was required, and it passed" in out.stdout + out.stderr


@pytest.mark.parametrize(
    "playbook", sorted(p.name for p in ANSIBLE_DIR.glob("*.yml")), ids=lambda name: name
)
def test_playbook_syntax_is_valid(playbook: str, tmp_path: Path) -> None:
    """ansible-playbook --syntax-check accepts each playbook with the example inventory."""
    out = run("ansible-playbook", "--syntax-check", playbook, home=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
