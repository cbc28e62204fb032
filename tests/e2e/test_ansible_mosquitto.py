"""The borne_mosquitto role: a real mosquitto enforces one login and one ACL per access point.

The role is applied with ansible-playbook (``local`` connection) into a directory of the
test instead of ``/etc/mosquitto`` (``borne_mosquitto_install`` and
``borne_mosquitto_manage_service`` off: nothing on the machine is installed or
restarted); then a real mosquitto runs with what the role wrote, and real MQTT clients
prove that an AP publishes under its own id only and that a wrong password is refused.
Both sources of logins are covered: the inventory (vaulted passwords) and the registry
(``borne ap enroll`` writes the files, the role leaves them as they are).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.e2e._ansible import BIN, changed, playbook
from tests.testbed import free_port, require, wait_for

pytestmark = [pytest.mark.ansible, pytest.mark.broker, pytest.mark.slow]

CONTROLLER_PW = "controller-secret-0123"
APS = {"ap-46201-01": "pw-rocamadour-0123", "ap-46042-01": "pw-cahors-0123"}


def enroll(tmp_path: Path, conf_dir: Path) -> dict[str, str]:
    """``borne ap enroll`` each AP (controller login included); their new passwords."""
    conf = tmp_path / "borne.toml"
    conf.write_text(
        'command_master_key = "mosquitto-role-test-master-key-0123"\n'
        f'[mqtt]\nusername = "borne-controller"\npassword = "{CONTROLLER_PW}"\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "state.db"}"\n'
    )
    passwords = {}
    for ap in APS:
        out = subprocess.run(
            [str(BIN / "borne"), "ap", "enroll", ap, "--insee", ap[3:8], "-c", str(conf),
             "--passwd-file", str(conf_dir / "borne.passwd"),
             "--acl-file", str(conf_dir / "borne.acl")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        m = re.search(r'^mqtt_password = "(.+)"$', out.stdout, re.M)
        assert m, out.stdout
        passwords[ap] = m.group(1)
    return passwords


@pytest.fixture(params=["inventory", "registry"])
def broker_dir(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Path, int, dict[str, str]]]:
    """Apply the role into tmp_path/etc-mosquitto twice; yield (dir, port, AP passwords).

    ``inventory``: the role writes logins and ACL from the inventory's vaulted passwords;
    ``registry``: ``borne ap enroll`` wrote them and the role must leave them alone.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        require("mosquitto (Debian package mosquitto)")
    port = free_port()
    conf_dir = tmp_path / "etc-mosquitto"
    source = str(request.param)
    if source == "registry":
        passwords = enroll(tmp_path, conf_dir)
        enrolled = {p: (conf_dir / p).read_text() for p in ("borne.passwd", "borne.acl")}
        hosts: dict[str, Any] = {ap: {"ap_id": ap} for ap in APS}
    else:
        passwords = dict(APS)
        hosts = {ap: {"ap_id": ap, "borne_agent_mqtt_password": pw} for ap, pw in APS.items()}
    hosts["ap-46102-01"] = {"ap_id": "ap-46102-01"}  # not enrolled: no broker password
    inventory = {
        "all": {
            "children": {
                "access_points": {"hosts": hosts},
                "brokers": {
                    "hosts": {
                        "broker": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "borne_mosquitto_dir": str(conf_dir),
                            "borne_mosquitto_install": False,
                            "borne_mosquitto_manage_service": False,
                            "borne_mosquitto_group": "root",
                            "borne_mosquitto_tls": False,
                            "borne_mosquitto_port": port,
                            "borne_mosquitto_listen_address": "127.0.0.1",
                            "borne_mosquitto_controller_password": CONTROLLER_PW,
                            "borne_mosquitto_logins_source": source,
                            # Seconds: the crash test waits for one write.
                            "borne_mosquitto_autosave_interval": 1,
                        }
                    }
                },
            }
        }
    }
    inv = tmp_path / "inventory.yml"
    inv.write_text(json.dumps(inventory))
    first = playbook(inv, "brokers.yml")
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert changed(first.stdout, "broker") > 0
    second = playbook(inv, "brokers.yml")
    assert second.returncode == 0, second.stdout[-5000:]
    assert changed(second.stdout, "broker") == 0, second.stdout[-5000:]
    if source == "registry":
        for name, text in enrolled.items():
            assert (conf_dir / name).read_text() == text, f"the role rewrote {name}"
    yield conf_dir, port, passwords


def run_broker(conf_dir: Path, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """A real mosquitto running the role's configuration, with persistence on (as
    Debian's ``mosquitto.conf`` sets it) in ``tmp_path/persistence``."""
    store = tmp_path / "persistence"
    store.mkdir(exist_ok=True)
    main = tmp_path / "mosquitto.conf"
    # "user root": the test's files live in a 0700 tmp dir the mosquitto user cannot read.
    main.write_text(
        f"user root\nlog_dest stdout\npersistence true\npersistence_location {store}/\n"
        f"include_dir {conf_dir / 'conf.d'}\n"
    )
    with (tmp_path / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(main)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=10)
    assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
    return proc


@pytest.fixture
def broker(
    broker_dir: tuple[Path, int, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[int, dict[str, str]]]:
    """A real mosquitto running the role's configuration; yields its port and AP passwords."""
    conf_dir, port, passwords = broker_dir
    proc = run_broker(conf_dir, tmp_path, port)
    try:
        yield port, passwords
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Client:
    """A paho MQTT v5 client with its connect result and received messages."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.reason: ReasonCode | None = None
        self.connected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.puback: dict[int, int] = {}
        self.subacks: set[int] = set()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        c.on_publish = self._on_publish
        c.on_subscribe = lambda _c, _u, mid, _r, _p: self.subacks.add(mid)
        self.c = c
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.connected.wait(10)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.reason = reason
        self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self.puback[mid] = reason.value

    def subscribe(self, topic: str) -> None:
        """Subscribe and wait for the broker's SUBACK."""
        _rc, mid = self.c.subscribe(topic, qos=1)
        wait_for(lambda: mid in self.subacks, timeout=10, message=f"SUBACK {topic}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_each_ap_publishes_only_under_its_own_id_and_bad_logins_fail(
    broker: tuple[int, dict[str, str]],
) -> None:
    """Own topics pass; a foreign AP topic is refused (PUBACK 135); a wrong password is refused."""
    port, passwords = broker
    ctl = Client(port, "borne-controller", CONTROLLER_PW)
    ap = Client(port, "ap-46201-01", passwords["ap-46201-01"])
    intruder = Client(port, "ap-46201-01", "not-the-password")
    unenrolled = Client(port, "ap-46102-01", "anything-at-all")
    try:
        assert ctl.reason is not None and not ctl.reason.is_failure
        assert ap.reason is not None and not ap.reason.is_failure
        assert intruder.reason is not None and intruder.reason.is_failure
        assert unenrolled.reason is not None and unenrolled.reason.is_failure
        ctl.subscribe("borne/v1/#")
        foreign = ap.c.publish("borne/v1/ap/ap-46042-01/status", b"forged", qos=1)
        own = ap.c.publish("borne/v1/ap/ap-46201-01/status", b"mine", qos=1)
        wait_for(lambda: ("borne/v1/ap/ap-46201-01/status", b"mine") in ctl.messages, timeout=10)
        wait_for(lambda: foreign.mid in ap.puback and own.mid in ap.puback, timeout=10)
        assert ap.puback[foreign.mid] == 135  # MQTT 5 §3.4.2.1: Not authorized
        assert ap.puback[own.mid] == 0
        assert all(payload != b"forged" for _t, payload in ctl.messages)
        # Commands: the AP reads its own, not another AP's.
        ap.subscribe("borne/v1/ap/ap-46201-01/cmd")
        ap.subscribe("borne/v1/ap/ap-46042-01/cmd")
        ctl.c.publish("borne/v1/ap/ap-46042-01/cmd", b"other", qos=1).wait_for_publish(5)
        ctl.c.publish("borne/v1/ap/ap-46201-01/cmd", b"yours", qos=1).wait_for_publish(5)
        wait_for(lambda: ("borne/v1/ap/ap-46201-01/cmd", b"yours") in ap.messages, timeout=10)
        assert all(payload != b"other" for _t, payload in ap.messages)
    finally:
        for client in (ctl, ap, intruder, unenrolled):
            client.close()


def test_the_broker_keeps_more_than_mosquitto_s_default_for_an_absent_controller_and_a_crash(
    broker_dir: tuple[Path, int, dict[str, str]], tmp_path: Path
) -> None:
    """The controller's persistent session is away while an AP publishes 1,500 messages
    (mosquitto's default queue holds 1,000 and drops the rest, already acknowledged to
    the AP); the broker is then killed with SIGKILL after one of its writes to disk and
    started again: the controller, back, gets every one of the 1,500."""
    conf_dir, port, passwords = broker_dir
    n = 1500
    topic = "borne/v1/ap/ap-46201-01/acct"
    received: list[bytes] = []
    subscribed = threading.Event()

    def controller() -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="borne-controller-queue", clean_session=False
        )
        c.username_pw_set("borne-controller", CONTROLLER_PW)
        c.on_message = lambda _c, _u, m: received.append(bytes(m.payload))
        c.on_subscribe = lambda _c, _u, _mid, _r, _p: subscribed.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        return c

    proc = run_broker(conf_dir, tmp_path, port)
    try:
        ctl = controller()
        ctl.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        ctl.disconnect()
        ctl.loop_stop()
        ap = Client(port, "ap-46201-01", passwords["ap-46201-01"])
        try:
            infos = [ap.c.publish(topic, str(i).encode(), qos=1) for i in range(n)]
            for info in infos:
                info.wait_for_publish(10)
            assert all(info.is_published() for info in infos)
        finally:
            ap.close()
        saved = tmp_path / "persistence" / "mosquitto.db"
        written = time.time()
        # autosave_interval is 1 s in this inventory: wait for a write after the last PUBACK.
        wait_for(
            lambda: saved.exists() and saved.stat().st_mtime > written + 1,
            timeout=10,
            message="the broker's write to disk",
        )
        proc.kill()
        proc.wait(timeout=10)
        proc = run_broker(conf_dir, tmp_path, port)
        ctl = controller()
        try:
            wait_for(lambda: len(received) >= n, timeout=30, message=f"{n} queued messages")
        finally:
            ctl.disconnect()
            ctl.loop_stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert sorted(int(p) for p in received) == list(range(n))
