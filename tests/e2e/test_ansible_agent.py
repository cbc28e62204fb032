"""A real apply: ansible-playbook deploys an AP (openNDS config, agent) into a Debian root.

The target is a real Debian 12 root file system (debootstrap, minbase, with python3,
python3-apt and logrotate), reached through the project's ``borne_chroot`` connection
(ansible-core only). No init system runs in a chroot, so the role is applied with
``borne_agent_start_service: false`` and the test then starts the agent exactly as the
installed systemd unit says (its ``Environment=`` and ``ExecStart=``), inside the root,
with the unit's log file. The chroot shares the machine's network, so the agent reaches,
on 127.0.0.1 and with its own login, a mosquitto running the password and ACL files that
``borne ap enroll`` wrote, and the controller (a real ``borne controller`` process) sees
it online. A second apply must change nothing; ``verify.yml`` passes,
then fails naming the AP and the check once the agent is stopped.

The Debian root is cached as a tar file (``$BORNE_TEST_CACHE`` or
``/var/cache/borne-tests``): the first run needs Debian's mirror (the one apt uses here).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._ansible import BIN, ROOT
from tests.e2e._ansible import playbook as _playbook
from tests.testbed import free_port, require, wait_for

pytestmark = [pytest.mark.ansible, pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(1500)]

AP = "ap-46201-01"
INSEE = "46201"
SUITE = "bookworm"
INCLUDE = ("python3", "python3-apt", "logrotate")
CONTROLLER_MQTT_PASSWORD = "controller-mqtt-password-0123"
TECH = "technicien"
TECH_PASSWORD = "mot-de-passe-du-technicien-0123"
FAS_KEY = "fas-key-shared-with-the-portal-0123"
RADIUS_SECRET = "verify-radius-secret-0123"
CACHE = Path(os.environ.get("BORNE_TEST_CACHE", "/var/cache/borne-tests"))


# --------------------------------------------------------------------------- Debian root


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            texts.append(path.read_text())
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if m and m.group(2) == SUITE:
                return m.group(1)
    return "http://deb.debian.org/debian"


def cached_debian_root() -> Path:
    """The tar of a debootstrapped Debian root, built once and kept in the cache dir."""
    tarball = CACHE / f"debian-{SUITE}-minbase-{'-'.join(INCLUDE)}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        require("debootstrap (Debian package debootstrap; tests/run.sh installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        build = CACHE / f"build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        try:
            proc = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(INCLUDE)}",
                    SUITE,
                    str(build),
                    debian_mirror(),
                ],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if proc.returncode != 0:
                pytest.fail(f"debootstrap failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(build), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return tarball


@pytest.fixture
def debian_root(tmp_path: Path) -> Path:
    """A fresh Debian root for this test, extracted from the cache."""
    if os.geteuid() != 0:
        require("root (chroot into a Debian root)")
    tarball = cached_debian_root()
    root = tmp_path / "ap-root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
    return root


# --------------------------------------------------------------------------- controller


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real ``borne controller`` and a real mosquitto with one login and ACL per AP.

    ``borne ap enroll`` registers ``ap-46201-01`` (command key, MQTT login) and writes the
    broker's password and ACL files, which this mosquitto uses: the deployed agent
    reaches the controller with its own login, through the ACL, as in production.
    """
    mosquitto_bin = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto_bin).exists():
        require("mosquitto (Debian package mosquitto)")
    conf = tmp_path / "borne.toml"
    dashboard_port, portal_port, mqtt_port = free_port(), free_port(), free_port()
    radius_port = udp_port()
    conf.write_text(
        f"""
command_master_key = "ansible-test-master-key-0123456789"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
username = "borne-controller"
password = "{CONTROLLER_MQTT_PASSWORD}"
client_id = "ctl-ansible-{time.time_ns()}"
[database]
url = "sqlite+aiosqlite:///{tmp_path / "state.db"}"
[portal]
listen_port = {portal_port}
[dashboard]
listen_port = {dashboard_port}
[radius]
enabled = true
auth_port = {radius_port}
acct_port = {udp_port()}
"""
    )
    broker_dir = tmp_path / "mosquitto"
    enrolled = subprocess.run(
        [str(BIN / "borne"), "ap", "enroll", AP, "--insee", INSEE, "-c", str(conf),
         "--passwd-file", str(broker_dir / "borne.passwd"),
         "--acl-file", str(broker_dir / "borne.acl")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    secrets = dict(re.findall(r'^(command_key|mqtt_password) = "(.+)"$', enrolled.stdout, re.M))
    # Once an account exists the dashboards need a login: verify.yml logs in as a technician.
    account = subprocess.run(
        [str(BIN / "borne"), "account", "add", TECH, "--role", "technician",
         "--password-stdin", "-c", str(conf)],
        input=TECH_PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert account.returncode == 0, account.stderr
    # verify.yml's RADIUS Status-Server check comes from this machine: a NAS of its own.
    nas = subprocess.run(
        [str(BIN / "borne"), "radius", "nas-add", "verify-host", "--insee", INSEE,
         "--address", "127.0.0.1", "--secret", RADIUS_SECRET, "-c", str(conf)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert nas.returncode == 0, nas.stdout + nas.stderr
    (broker_dir / "mosquitto.conf").write_text(
        # "user root": the files live in the test's 0700 tmp dir.
        f"user root\nlog_dest stdout\nper_listener_settings false\nallow_anonymous false\n"
        f"password_file {broker_dir / 'borne.passwd'}\nacl_file {broker_dir / 'borne.acl'}\n"
        f"listener {mqtt_port} 127.0.0.1\n"
    )
    with (broker_dir / "mosquitto.log").open("ab") as out:
        broker = subprocess.Popen(
            [mosquitto_bin, "-c", str(broker_dir / "mosquitto.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    log = tmp_path / "controller.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "borne"), "controller", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        wait_for(lambda: fleet_state(dashboard) is not None, timeout=60, message="controller up")
        yield {
            "key": secrets["command_key"],
            "mqtt_password": secrets["mqtt_password"],
            "mqtt_port": mqtt_port,
            "dashboard_url": dashboard,
            "portal_url": f"http://127.0.0.1:{portal_port}",
            "radius_port": radius_port,
            "log": log,
            "conf": conf,
            "state_db": tmp_path / "state.db",
            "broker_pid": broker.pid,
            "passwd_file": broker_dir / "borne.passwd",
            "acl_file": broker_dir / "borne.acl",
        }
    finally:
        for p in (proc, broker):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def udp_port() -> int:
    """A free UDP port on 127.0.0.1 (RADIUS)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fleet_state(dashboard: str) -> str | None:
    """The AP's state at the controller (``online``...), or None when it does not answer.

    Logs in as the technician first, as verify.yml does.
    """
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": TECH, "password": TECH_PASSWORD}).encode()
    try:
        with opener.open(f"{dashboard}/login", data=form, timeout=5):
            pass
        with opener.open(f"{dashboard}/api/fleet", timeout=5) as resp:
            fleet = json.load(resp)
    except OSError:
        return None
    states = [h["state"] for h in fleet["hotspots"] if h["ap_id"] == AP]
    return states[0] if states else "not registered"


# --------------------------------------------------------------------------- ansible


def write_inventory(path: Path, root: Path, ctl: dict[str, Any]) -> None:
    """An inventory with the AP as a chroot host, in its commune and EPCI groups.

    The agent's sources are a snapshot taken now, as a release would be: every apply of
    the test deploys the same code.
    """
    source = path.parent / "agent-release"
    source.mkdir()
    for py in (ROOT / "agents").glob("*.py"):
        shutil.copy2(py, source / py.name)
    inventory = {
        "all": {
            "vars": {
                "borne_mqtt_host": "127.0.0.1",
                "borne_mqtt_port": ctl["mqtt_port"],
                "borne_mqtt_tls": False,
                "borne_dashboard_url": ctl["dashboard_url"],
                "borne_portal_url": ctl["portal_url"],
                "borne_portal_fas_key": FAS_KEY,
                "borne_verify_dashboard_username": TECH,
                "borne_verify_dashboard_password": TECH_PASSWORD,
                "borne_radius_host": "127.0.0.1",
                "borne_radius_auth_port": ctl["radius_port"],
                "borne_verify_radius_secret": RADIUS_SECRET,
            },
            "children": {
                "access_points": {
                    "children": {
                        "epci_200066710": {
                            "children": {
                                f"commune_{INSEE}": {
                                    "hosts": {
                                        AP: {
                                            "ap_id": AP,
                                            "insee": INSEE,
                                            "ansible_connection": "borne_chroot",
                                            "ansible_host": str(root),
                                            "ansible_python_interpreter": "/usr/bin/python3",
                                            # A test secret in the test's own tmp dir;
                                            # real inventories take it from the vault.
                                            "borne_agent_command_key": ctl["key"],
                                            "borne_agent_mqtt_password": ctl["mqtt_password"],
                                            "borne_agent_start_service": False,
                                            "borne_agent_apt_update_cache": False,
                                            "borne_agent_source_dir": str(source),
                                            # No openNDS in this root: no watchdog restart.
                                            "borne_agent_gateway_restart_cmd": "",
                                            "borne_opennds_install": False,
                                            "borne_opennds_manage_service": False,
                                            "borne_opennds_fas_remote_ip": "127.0.0.1",
                                            "borne_opennds_fas_port": int(
                                                ctl["portal_url"].rsplit(":", 1)[1]
                                            ),
                                            "borne_opennds_captive_portal_api_url": (
                                                "https://portail.example.org/api/captive"
                                            ),
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        }
    }
    # JSON is YAML: no YAML library needed to write it.
    path.write_text(json.dumps(inventory, indent=2))


def playbook(inventory: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run one of deploy/ansible's playbooks against the test inventory."""
    return _playbook(inventory, name, *extra, timeout=900)


def task_status(out: str, task: str) -> str | None:
    """``ok``, ``failed``, ``skipping``... of a task for the AP, as ansible-playbook printed it."""
    m = re.search(rf"TASK \[{re.escape(task)}\] \**\n(\w+): \[{re.escape(AP)}\]", out)
    return m.group(1) if m else None


def recap(out: str) -> dict[str, int]:
    """The PLAY RECAP counters of the AP."""
    m = re.search(rf"^{re.escape(AP)}\s*:\s*(.*)$", out, re.M)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


# --------------------------------------------------------------------------- agent


def unit_command(root: Path) -> tuple[dict[str, str], list[str], Path]:
    """Environment, command and log file of the installed systemd unit."""
    unit = (root / "etc/systemd/system/borne-agent.service").read_text()
    env = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.splitlines()
        if line.startswith("Environment=")
    )
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    log = re.search(r"^StandardOutput=append:(.+)$", unit, re.M)
    assert exec_start and log, unit
    return env, shlex.split(exec_start.group(1)), Path(log.group(1))


@contextlib.contextmanager
def agent_in(root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start the deployed agent inside the root as its unit says; stop it by PID."""
    env, argv, log = unit_command(root)
    # A private mount namespace gets its own /proc for the agent's health readings; it
    # disappears with the process, so nothing stays mounted on the host.
    script = 'mount -t proc proc "$1/proc" && exec chroot "$@"'
    host_log = root / str(log).lstrip("/")
    with host_log.open("ab") as out:
        proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                str(root),
                "env",
                *[f"{k}={v}" for k, v in env.items()],
                *argv,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- the test


def test_agent_role_deploys_a_working_agent_idempotently_and_verify_names_failures(
    debian_root: Path, controller: dict[str, Any], tmp_path: Path
) -> None:
    """agents.yml: --check writes nothing; apply, agent online; rerun changed=0; verify names AP."""
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, debian_root, controller)

    dry = playbook(inventory, "agents.yml", "--check")
    assert dry.returncode == 0, dry.stdout[-6000:] + dry.stderr[-3000:]
    assert recap(dry.stdout)["changed"] > 0
    assert not (debian_root / "etc/borne/agent.toml").exists(), "--check wrote a file"

    first = playbook(inventory, "agents.yml")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    assert recap(first.stdout)["changed"] > 0

    opennds = (debian_root / "etc/opennds/opennds.conf").read_text()
    assert f"GatewayName {AP}\n" in opennds and f"faskey {FAS_KEY}\n" in opennds
    assert "FirewallRule allow tcp port" in opennds
    option_114 = (debian_root / "etc/dnsmasq.d/borne-captive-portal.conf").read_text()
    assert 'dhcp-option-force=114,"https://portail.example.org/api/captive"' in option_114
    config = (debian_root / "etc/borne/agent.toml").read_text()
    assert f'ap_id = "{AP}"' in config
    assert f'mqtt_username = "{AP}"' in config and "spool_max_bytes = 8388608" in config
    assert oct((debian_root / "etc/borne/agent.toml").stat().st_mode & 0o777) == "0o600"
    rotate = subprocess.run(
        ["chroot", str(debian_root), "logrotate", "-d", "/etc/logrotate.d/borne-agent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rotate.returncode == 0, rotate.stderr

    second = playbook(inventory, "agents.yml")
    assert second.returncode == 0, second.stdout[-6000:]
    counts = recap(second.stdout)
    assert counts["changed"] == 0, second.stdout[-6000:]
    assert counts["failed"] == 0
    dry_again = playbook(inventory, "agents.yml", "--check")
    assert dry_again.returncode == 0, dry_again.stdout[-6000:]
    assert recap(dry_again.stdout)["changed"] == 0

    assert fleet_state(controller["dashboard_url"]) != "online"
    with agent_in(debian_root) as agent:
        wait_for(
            lambda: fleet_state(controller["dashboard_url"]) == "online",
            timeout=60,
            message="the deployed agent online at the controller",
        )
        assert agent.poll() is None
        ok = playbook(inventory, "verify.yml")
        assert ok.returncode == 0, ok.stdout[-6000:]
        assert f"{AP}: every check OK" in ok.stdout
        acl_check = re.search(
            r"TASK \[Check: broker ACL refuses a foreign topic\] \**\n(\w+): \[", ok.stdout
        )
        assert acl_check and acl_check.group(1) == "ok", ok.stdout[-6000:]
        assert task_status(ok.stdout, "Check: RADIUS Status-Server answers") == "ok"
        # RADIUS not answering (nothing listens on that port): the check fails, named.
        silent = playbook(inventory, "verify.yml", "-e", f"borne_radius_auth_port={udp_port()}")
        assert silent.returncode != 0
        assert f'{AP}: check "RADIUS Status-Server answers" FAILED' in silent.stdout, silent.stdout[
            -6000:
        ]
        assert RADIUS_SECRET not in silent.stdout + silent.stderr

    wait_for(
        lambda: fleet_state(controller["dashboard_url"]) == "offline",
        timeout=60,
        message="the stopped agent offline at the controller",
    )
    failed = playbook(inventory, "verify.yml")
    assert failed.returncode != 0
    assert f'{AP}: check "agent online at the controller" FAILED' in failed.stdout, failed.stdout
    assert recap(failed.stdout)["failed"] == 1
    log = debian_root / "var/log/borne-agent/agent.log"
    assert log.stat().st_size > 0


def test_rotate_playbook_rotates_the_deployed_agent_without_an_outage(
    debian_root: Path, controller: dict[str, Any], tmp_path: Path
) -> None:
    """rotate.yml against the debootstrapped AP: new credentials issued at the controller,
    taken by the running agent, written to the AP's vault (encrypted) and to its
    configuration; confirmed; verify.yml passes with the new login; the AP never leaves
    ``online``; a later agents.yml with the updated vault changes nothing."""
    inventory = tmp_path / "inventory.yml"
    write_inventory(inventory, debian_root, controller)
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("rotation-vault-password-0123\n")
    vault_pass.chmod(0o600)
    rotate_vars = {
        "borne_rotate_command": str(BIN / "borne"),
        "borne_rotate_config": str(controller["conf"]),
        "borne_rotate_passwd_file": str(controller["passwd_file"]),
        "borne_rotate_acl_file": str(controller["acl_file"]),
        "borne_rotate_broker_reload": f"kill -HUP {controller['broker_pid']}",
        "borne_rotate_vault_password_file": str(vault_pass),
    }
    extra = tmp_path / "rotate-vars.json"
    extra.write_text(json.dumps(rotate_vars))
    deployed = playbook(inventory, "agents.yml")
    assert deployed.returncode == 0, deployed.stdout[-6000:]
    config_path = debian_root / "etc/borne/agent.toml"
    old = tomllib.loads(config_path.read_text())["agent"]

    dry = playbook(inventory, "rotate.yml", "--check", "-e", f"@{extra}")
    assert dry.returncode == 0, dry.stdout[-6000:]
    assert tomllib.loads(config_path.read_text())["agent"] == old, "--check rotated"
    assert not (tmp_path / "host_vars").exists()

    with agent_in(debian_root) as agent:
        wait_for(
            lambda: fleet_state(controller["dashboard_url"]) == "online",
            timeout=60,
            message="the deployed agent online at the controller",
        )
        states: list[str | None] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.3):
                states.append(fleet_state(controller["dashboard_url"]))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            rotated = playbook(inventory, "rotate.yml", "--limit", AP, "-e", f"@{extra}")
        finally:
            stop.set()
            sampler.join(10)
        assert rotated.returncode == 0, rotated.stdout[-8000:] + rotated.stderr[-3000:]
        assert task_status(rotated.stdout, "Check: new credentials confirmed") == "ok"
        assert f"{AP}: every check OK" in rotated.stdout
        assert agent.poll() is None
        assert states and set(states) == {"online"}, states

    new = tomllib.loads(config_path.read_text())["agent"]
    assert new["command_key"] != old["command_key"]
    assert new["mqtt_username"] == f"{AP}.1" and new["mqtt_password"] != old["mqtt_password"]
    for secret in (new["command_key"], new["mqtt_password"], old["command_key"]):
        assert secret not in rotated.stdout + rotated.stderr
    vault_file = tmp_path / "host_vars" / AP / "vault.yml"
    assert vault_file.read_text().startswith("$ANSIBLE_VAULT")
    assert oct(vault_file.stat().st_mode & 0o777) == "0o600"
    shown = subprocess.run(
        [str(BIN / "ansible-vault"), "view", "--vault-password-file", str(vault_pass),
         str(vault_file)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert f"borne_agent_command_key: {new['command_key']}" in shown.stdout
    assert f"borne_agent_mqtt_password: {new['mqtt_password']}" in shown.stdout
    state = json.loads(
        subprocess.run(
            [str(BIN / "borne"), "ap", "rotation", AP, "--json", "-c", str(controller["conf"])],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    assert state["state"] == "confirmed" and state["generation"] == 1
    # The vault now holds what the AP runs with: redeploying changes nothing.
    again = playbook(inventory, "agents.yml", "--vault-password-file", str(vault_pass))
    assert again.returncode == 0, again.stdout[-6000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-6000:]
