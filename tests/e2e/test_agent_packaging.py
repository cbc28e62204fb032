"""Packaging of the agent: the systemd unit and the OpenWrt procd script are sound."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "deploy" / "packaging"


class _CaseSensitiveParser(configparser.ConfigParser):
    """Keeps the keys' case (systemd's ``ExecStart``, ``KillSignal``...)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def test_systemd_unit_runs_the_agent_and_restarts_it() -> None:
    """The unit starts ``python3 -m agents -c /etc/borne/agent.toml``, restarts, stops by TERM."""
    unit = _CaseSensitiveParser(strict=False, interpolation=None)
    unit.read(PKG / "borne-agent.service")
    svc = unit["Service"]
    assert svc["ExecStart"] == "/usr/bin/python3 -m agents -c /etc/borne/agent.toml"
    assert svc["Restart"] == "always" and svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) > 5  # the agent drains its spool for up to 5 s
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    tool = shutil.which("systemd-analyze")
    if tool is not None:  # Debian 12 containers may lack systemd; the checks above remain
        out = subprocess.run(
            [tool, "verify", str(PKG / "borne-agent.service")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "borne-agent.service" not in out.stderr, out.stderr
        assert out.returncode == 0, out.stderr


def test_procd_script_is_valid_shell_and_respawns_the_agent() -> None:
    """The init script parses with sh -n and asks procd to run and respawn the agent."""
    script = PKG / "borne-agent.init"
    assert subprocess.run(["sh", "-n", str(script)], timeout=30).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/bin/sh /etc/rc.common\n")
    assert "USE_PROCD=1" in text
    assert 'procd_set_param command "$PROG" -m agents -c "$CONF"' in text
    assert "procd_set_param respawn" in text
    assert script.stat().st_mode & 0o111


def test_the_packaged_command_line_is_the_agents_own() -> None:
    """What both files run (``-m agents -c FILE``) is accepted by the agent's parser."""
    out = subprocess.run(
        [sys.executable, "-m", "agents", "-c", "/nonexistent/agent.toml"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2  # parsed; the file is missing, said plainly
    assert "cannot read /nonexistent/agent.toml" in out.stderr
