"""``borne agent --check``: each broken piece is named, a sound setup passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents._check import format_findings, run_checks
from controller.enroll import mosquitto_hash
from tests.testbed import MosquittoBroker, free_port

ROOT = Path(__file__).resolve().parents[2]


def conf(tmp: Path, port: int, **extra: object) -> Path:
    values: dict[str, object] = {
        "ap_id": "ap-46201-03",
        "command_key": "check-key-0123456789abcdef",
        "mqtt_host": "127.0.0.1",
        "mqtt_port": port,
        "gateway": "simulated",
        "state_dir": str(tmp / "state"),
        **extra,
    }
    lines = ["[agent]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def verdicts(path: Path) -> dict[str, bool]:
    return {f.name: f.ok for f in run_checks(path, timeout=3)}


def test_a_bad_configuration_is_reported_by_field(tmp_path: Path) -> None:
    """A configuration with problems yields one failed finding per problem, nothing else."""
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nap_id = "Bad Id"\nmqtt_port = 0\n')
    found = run_checks(path)
    assert {f.name for f in found} == {"config"}
    assert not any(f.ok for f in found)
    text = format_findings(found)
    assert "agent.mqtt_port" in text and "agent.command_key" in text


@pytest.mark.broker
def test_a_sound_setup_passes(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """Broker reachable, anonymous login accepted on loopback, state writable: all OK."""
    path = conf(tmp_path, mosquitto.port)
    assert verdicts(path) == dict.fromkeys(
        ["config", "state_dir", "broker", "tls", "mqtt", "gateway"], True
    )
    out = subprocess.run(
        [sys.executable, "-m", "agents", "-c", str(path), "--check"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Tout va bien" in out.stdout


def test_an_unreachable_broker_and_a_dead_gateway_are_named(tmp_path: Path) -> None:
    """A closed port fails 'broker' (TLS and login are then skipped); a missing ndsctl fails."""
    path = conf(tmp_path, free_port(), gateway="opennds", ndsctl=str(tmp_path / "no-ndsctl"))
    assert verdicts(path) == {"config": True, "state_dir": True, "broker": False, "gateway": False}
    out = subprocess.run(
        [sys.executable, "-m", "agents", "-c", str(path), "--check"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 1


@pytest.mark.broker
def test_tls_against_a_plain_broker_fails_the_handshake(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """mqtt_tls = true towards a plain-text listener fails the 'tls' check."""
    found = {
        f.name: f for f in run_checks(conf(tmp_path, mosquitto.port, mqtt_tls=True), timeout=3)
    }
    assert not found["tls"].ok
    assert not found["mqtt"].ok


@pytest.mark.broker
def test_a_wrong_password_fails_the_login(tmp_path: Path) -> None:
    """A broker that refuses the login fails 'mqtt' and says so."""
    (tmp_path / "pw").write_text(f"ap-46201-03:{mosquitto_hash('right-password')}\n")
    broker = MosquittoBroker(
        tmp_path / "mq",
        extra_conf=["allow_anonymous false", f"password_file {tmp_path / 'pw'}", "user root"],
    )
    broker.start()
    try:
        bad = conf(tmp_path, broker.port, mqtt_username="ap-46201-03", mqtt_password="wrong")
        found = {f.name: f for f in run_checks(bad, timeout=3)}
        assert found["broker"].ok and not found["mqtt"].ok
        assert "refus" in found["mqtt"].detail
        good = conf(
            tmp_path, broker.port, mqtt_username="ap-46201-03", mqtt_password="right-password"
        )
        assert verdicts(good)["mqtt"]
    finally:
        broker.stop()


def test_apply_config_files_and_the_sniffer_are_checked_when_configured(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    nds = tmp_path / "opennds.conf"
    good = conf(
        tmp_path,
        mosquitto.port,
        opennds_config=str(nds),
        opennds_restart_cmd="/bin/true",
        dnsmasq_conf=str(tmp_path / "borne-dnsmasq.conf"),
        dnsmasq_restart_cmd="/bin/true",
        dhcp_sniff_interface="lo",
    )
    assert verdicts(good)["apply_config"] is False  # openNDS's file is missing
    nds.write_text("GatewayInterface lan0\n")
    found = verdicts(good)
    assert found["apply_config"] is True and found["dhcp_sniffer"] is True
    bad = conf(
        tmp_path,
        mosquitto.port,
        opennds_config=str(nds),
        dnsmasq_conf="/nonexistent-dir/borne.conf",
        dhcp_sniff_interface="no-such-if0",
    )
    details = {f.name: f for f in run_checks(bad, timeout=3)}
    assert not details["apply_config"].ok and not details["dhcp_sniffer"].ok
    assert "/nonexistent-dir" in details["apply_config"].detail
    assert "dnsmasq_restart_cmd" in details["apply_config"].detail
    assert "no-such-if0" in details["dhcp_sniffer"].detail
    # Neither is reported when not configured.
    assert {"apply_config", "dhcp_sniffer"}.isdisjoint(verdicts(conf(tmp_path, mosquitto.port)))


def test_the_uci_writer_is_checked(tmp_path: Path) -> None:
    """OpenWrt: uci answers and the sections apply_config writes exist (fake uci, see
    tests/agents/test_uci.py: OpenWrt's uci cannot run here)."""
    from tests.agents.test_uci import make_device

    device = make_device(tmp_path)
    sound = conf(tmp_path, free_port(), gateway_config="uci", uci_command=device.uci)
    found = {f.name: f for f in run_checks(sound, timeout=1)}
    assert found["apply_config"].ok and "dhcp.lan" in found["apply_config"].detail
    wrong = conf(
        tmp_path, free_port(), gateway_config="uci", uci_command=device.uci,
        uci_dhcp_section="guest",
    )  # fmt: skip
    found = {f.name: f for f in run_checks(wrong, timeout=1)}
    assert not found["apply_config"].ok and "'guest'" in found["apply_config"].detail
    missing = conf(tmp_path, free_port(), gateway_config="uci", uci_command="/nonexistent/uci")
    found = {f.name: f for f in run_checks(missing, timeout=1)}
    assert not found["apply_config"].ok
