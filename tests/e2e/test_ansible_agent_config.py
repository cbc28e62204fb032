"""The borne_agent role's agent.toml, rendered by ansible itself, is what the agent accepts.

Real ``ansible`` (the template module on localhost, the role's defaults as variables):
the rendered file is parsed by the agent's own configuration checker, with and without
the optional parts (NAT port blocks, gateway files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agents.config import parse_agent_config

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "deploy" / "ansible" / "roles" / "borne_agent"
ANSIBLE = Path(sys.executable).with_name("ansible")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def render(tmp_path: Path, extra: dict[str, Any]) -> dict[str, Any]:
    dest = tmp_path / "agent.toml"
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(
        json.dumps(
            {
                "ansible_python_interpreter": sys.executable,
                "ap_id": "ap-46201-01",
                "borne_agent_command_key": "k" * 32,
                **extra,
            }
        )
    )
    out = subprocess.run(
        [
            str(ANSIBLE), "localhost", "-c", "local", "-i", "localhost,",
            "-m", "ansible.builtin.template",
            "-a", f"src={ROLE / 'templates' / 'agent.toml.j2'} dest={dest}",
            "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
            "-e", f"@{extra_file}",
        ],
        capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "deploy" / "ansible" / "ansible.cfg")},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return tomllib.loads(dest.read_text())


def test_defaults_render_an_agent_config_without_nat(tmp_path: Path) -> None:
    data = render(tmp_path, {})
    cfg = parse_agent_config(data)
    assert cfg.ap_id == "ap-46201-01"
    assert cfg.nat_interface == "" and "nat_subnet" not in data["agent"]
    assert "opennds_config" not in data["agent"]


def test_nat_and_gateway_files_reach_the_agent(tmp_path: Path) -> None:
    data = render(
        tmp_path,
        {
            "borne_agent_nat_interface": "wan",
            "borne_agent_nat_subnet": "10.46.1.0/24",
            "borne_agent_nat_public_ip": "203.0.113.7",
            "borne_agent_opennds_config": "/etc/opennds/opennds.conf",
            "borne_agent_dnsmasq_conf": "/etc/dnsmasq.d/borne.conf",
            "borne_agent_dnsmasq_restart_cmd": "systemctl restart dnsmasq",
        },
    )
    cfg = parse_agent_config(data)
    assert (cfg.nat_interface, cfg.nat_subnet, cfg.nat_public_ip) == (
        "wan",
        "10.46.1.0/24",
        "203.0.113.7",
    )
    assert (cfg.nat_port_first, cfg.nat_port_last, cfg.nat_block_size) == (1024, 65535, 0)
    assert cfg.opennds_config == "/etc/opennds/opennds.conf"
    assert cfg.dnsmasq_conf == "/etc/dnsmasq.d/borne.conf"
    assert cfg.dnsmasq_restart_cmd == "systemctl restart dnsmasq"
    assert cfg.opennds_restart_cmd == ""
