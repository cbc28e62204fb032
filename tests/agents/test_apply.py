"""apply_config end to end on the agent: real files, real restart commands, real broker.

The gateway's configuration files are real files and the restart commands real
programs (shell scripts that count their runs); openNDS itself is exercised by
``tests/e2e/test_hotspot.py``. Here: one restart for one change, acks ``applied`` then
``unchanged``, stale versions refused, a failed restart retried, the version reported in
the agent's ``status``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agents._apply import ConfigApplier, settings_digest
from agents._gwconf import BEGIN_MARK
from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import ApplyConfigArgs, Command, canonical_bytes, encode, sign_command
from agents.gateway import ConfigTargets, GatewayError, NdsctlGateway, SimulatedGateway
from tests.agents.test_agent import Listener, start_agent
from tests.testbed import MosquittoBroker, wait_for

AP = "ap-46201-03"
KEY = "apply-test-key-0123456789abcdef"
URL = "https://portail.example/capport/api/ap-46201-03"
SETTINGS = ApplyConfigArgs(
    version=1,
    session_minutes=45,
    walled_garden=["10.46.0.2"],
    walled_garden_ports=[443],
    capport_url=URL,
)


def restart_script(path: Path, counter: Path, exit_code: int = 0) -> str:
    path.write_text(f'#!/bin/sh\necho restarted >> "{counter}"\nexit {exit_code}\n')
    path.chmod(0o755)
    return str(path)


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    conf = tmp_path / "opennds.conf"
    conf.write_text("GatewayInterface lan0\nsessiontimeout 1440\n")
    return {
        "conf": conf,
        "dnsmasq": tmp_path / "borne-dnsmasq.conf",
        "nds_runs": tmp_path / "nds-restarts",
        "dns_runs": tmp_path / "dnsmasq-restarts",
    }


def gateway(tmp_path: Path, files: dict[str, Path], nds_exit: int = 0) -> NdsctlGateway:
    return NdsctlGateway(
        "ndsctl",
        targets=ConfigTargets(
            opennds_config=str(files["conf"]),
            opennds_restart_cmd=restart_script(tmp_path / "nds.sh", files["nds_runs"], nds_exit),
            dnsmasq_conf=str(files["dnsmasq"]),
            dnsmasq_restart_cmd=restart_script(tmp_path / "dns.sh", files["dns_runs"]),
        ),
    )


def test_one_change_one_restart_then_unchanged(tmp_path: Path, files: dict[str, Path]) -> None:
    applier = ConfigApplier(gateway(tmp_path, files), tmp_path / "state.json")
    assert applier.apply(SETTINGS) == "applied"
    assert (runs(files["nds_runs"]), runs(files["dns_runs"])) == (1, 1)
    text = files["conf"].read_text()
    assert text.startswith("GatewayInterface lan0\nsessiontimeout 1440\n")
    assert "sessiontimeout 45" in text and BEGIN_MARK in text
    assert f'dhcp-option-force=114,"{URL}"' in files["dnsmasq"].read_text()
    # The same version again, then a new version of the same settings: no restart.
    assert applier.apply(SETTINGS) == "unchanged"
    assert applier.apply(dataclasses.replace(SETTINGS, version=2)) == "unchanged"
    assert (runs(files["nds_runs"]), runs(files["dns_runs"])) == (1, 1)
    # Only openNDS's settings change: only openNDS restarts.
    assert applier.apply(dataclasses.replace(SETTINGS, version=3, session_minutes=60)) == "applied"
    assert (runs(files["nds_runs"]), runs(files["dns_runs"])) == (2, 1)
    # The applied version survives a restart of the agent; an older one is refused.
    again = ConfigApplier(gateway(tmp_path, files), tmp_path / "state.json")
    assert again.version == 3
    with pytest.raises(GatewayError, match="stale version 2"):
        again.apply(dataclasses.replace(SETTINGS, version=2))


def test_the_idle_timeout_restarts_opennds_only_when_it_changes(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    applier = ConfigApplier(gateway(tmp_path, files), tmp_path / "state.json")
    assert applier.apply(SETTINGS) == "applied"
    assert "idletimeout" not in files["conf"].read_text()
    idle = dataclasses.replace(SETTINGS, version=2, idle_timeout_minutes=15)
    assert applier.apply(idle) == "applied"
    assert "authidletimeout 15" in files["conf"].read_text()
    assert (runs(files["nds_runs"]), runs(files["dns_runs"])) == (2, 1)
    assert applier.apply(dataclasses.replace(idle, version=3)) == "unchanged"
    assert runs(files["nds_runs"]) == 2


def test_a_failed_restart_is_retried_by_the_next_push(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    failing = ConfigApplier(gateway(tmp_path, files, nds_exit=1), tmp_path / "state.json")
    with pytest.raises(GatewayError, match="openNDS restart exited 1"):
        failing.apply(SETTINGS)
    assert failing.version is None
    # The files already hold the settings; the next push restarts all the same.
    fixed = ConfigApplier(gateway(tmp_path, files), tmp_path / "state.json")
    assert fixed.apply(SETTINGS) == "applied"
    assert runs(files["nds_runs"]) == 2


def test_a_file_edited_by_hand_is_put_back(tmp_path: Path, files: dict[str, Path]) -> None:
    applier = ConfigApplier(gateway(tmp_path, files), tmp_path / "state.json")
    applier.apply(SETTINGS)
    files["conf"].write_text(
        files["conf"].read_text().replace("sessiontimeout 45", "sessiontimeout 9")
    )
    assert applier.apply(SETTINGS) == "applied"
    assert "sessiontimeout 45" in files["conf"].read_text()


def test_bad_settings_or_no_managed_file_are_errors(tmp_path: Path, files: dict[str, Path]) -> None:
    applier = ConfigApplier(gateway(tmp_path, files), None)
    with pytest.raises(GatewayError, match="bad settings"):
        applier.apply(dataclasses.replace(SETTINGS, walled_garden=["a b"]))
    unmanaged = ConfigApplier(NdsctlGateway("ndsctl"), None)
    with pytest.raises(GatewayError, match="configuration management is off"):
        unmanaged.apply(SETTINGS)
    assert runs(files["nds_runs"]) == 0


def test_the_digest_ignores_the_version() -> None:
    assert settings_digest(SETTINGS) == settings_digest(dataclasses.replace(SETTINGS, version=9))
    assert settings_digest(SETTINGS) != settings_digest(
        dataclasses.replace(SETTINGS, session_minutes=1)
    )


def test_settings_without_an_idle_timeout_keep_the_digest_they_had() -> None:
    """Without the field added later, the digest is the one computed before it existed:
    an upgrade alone raises no version and restarts nothing."""
    before = dataclasses.asdict(SETTINGS)
    del before["version"], before["idle_timeout_minutes"]
    assert settings_digest(SETTINGS) == hashlib.sha256(canonical_bytes(before)).hexdigest()
    assert settings_digest(SETTINGS) != settings_digest(
        dataclasses.replace(SETTINGS, idle_timeout_minutes=15)
    )


# --------------------------------------------------------------------------- real agent


class ApplyListener(Listener):
    """The controller's side of the AP under test: apply_config commands, then its answers."""

    def __init__(self, broker: MosquittoBroker) -> None:
        super().__init__(broker, AP, client_id="apply-listener")

    def send(self, cmd_id: str, args: ApplyConfigArgs) -> None:
        now = time.time()
        cmd = Command(
            v=1,
            ap=AP,
            id=cmd_id,
            cmd="apply_config",
            args=dataclasses.asdict(args),
            iat=now,
            exp=now + 60,
        )
        self.send_command(encode(sign_command(cmd, KEY.encode())))

    def close(self) -> None:
        self.clear_status()
        super().close()


def run_agent(
    broker: MosquittoBroker, tmp_path: Path, gw: Any
) -> tuple[Agent, threading.Event, threading.Thread]:
    cfg = AgentConfig(
        ap_id=AP,
        command_key=KEY,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        poll_interval_s=0.5,
        health_interval_s=60,
        state_dir=str(tmp_path / "state"),
    )
    return start_agent(cfg, gw)


@pytest.mark.broker
def test_the_same_version_twice_is_acked_applied_then_unchanged(
    mosquitto: MosquittoBroker, tmp_path: Path, files: dict[str, Path]
) -> None:
    """Two acks, one restart; the restarted agent reports the version in its status."""
    listener = ApplyListener(mosquitto)
    gw = gateway(tmp_path, files)
    _, stop, thread = run_agent(mosquitto, tmp_path, gw)
    try:
        assert listener.next("status")["config_version"] is None
        listener.send("cfg-1", SETTINGS)
        first = listener.next("ack")
        listener.send("cfg-2", SETTINGS)
        second = listener.next("ack")
        assert (first["id"], first["ok"], first["result"]) == ("cfg-1", True, "applied")
        assert (second["id"], second["ok"], second["result"]) == ("cfg-2", True, "unchanged")
        assert runs(files["nds_runs"]) == 1
        listener.send("cfg-3", dataclasses.replace(SETTINGS, walled_garden=["bad host"]))
        bad = listener.next("ack")
        assert (bad["ok"], bad["result"]) == (False, None)
        assert bad["error"].startswith("bad settings: walled_garden")
    finally:
        stop.set()
        thread.join(15)
    _, stop, thread = run_agent(mosquitto, tmp_path, gw)
    try:
        wait_for(
            lambda: listener.next("status", 1)["config_version"] == 1,
            timeout=10,
            message="status with config_version 1",
        )
    finally:
        stop.set()
        thread.join(15)
        listener.close()


@pytest.mark.broker
def test_the_simulated_gateway_applies_settings_too(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    listener = ApplyListener(mosquitto)
    gw = SimulatedGateway()
    agent, stop, thread = run_agent(mosquitto, tmp_path, gw)
    try:
        listener.send("sim-1", SETTINGS)
        assert listener.next("ack")["result"] == "applied"
        listener.send("sim-2", dataclasses.replace(SETTINGS, version=2))
        assert listener.next("ack")["result"] == "unchanged"
        assert gw.restarts == 1 and gw.config is not None and gw.config.version == 2
        assert agent.applier.version == 2
    finally:
        stop.set()
        thread.join(15)
        listener.close()
