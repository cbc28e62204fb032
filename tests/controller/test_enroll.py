"""Enrolment: a real mosquitto with the generated files keeps each AP under its own topic."""

from __future__ import annotations

import base64
import queue
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.enroll import acl_file, mosquitto_hash, password_file
from tests.testbed import MosquittoBroker, free_port, require

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER_USER = "borne-controller"
CONTROLLER_PASSWORD = "controller-secret-0123456789"


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our $7$ hash equals mosquitto_passwd's for the same password and salt."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        require("mosquitto_passwd (Debian package mosquitto)")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "u1", "s3cret é"], check=True, timeout=30)
    theirs = path.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_hash("s3cret é", salt=salt) == theirs
    assert mosquitto_hash("s3cret é") != mosquitto_hash("s3cret é")  # random salt


def test_acl_lists_each_kind_and_never_lets_an_ap_write_commands() -> None:
    """Each AP writes its five kinds and reads only its cmd; the controller reads all."""
    text = acl_file(["ap-b", "ap-a"], "ctl")
    assert "topic write borne/v1/ap/ap-a/acct" in text
    assert "topic read borne/v1/ap/ap-a/cmd" in text
    assert "topic write borne/v1/ap/ap-a/cmd" not in text
    assert text.index("user ap-a") < text.index("user ap-b")
    assert "user ctl\ntopic readwrite borne/v1/ap/#" in text
    assert password_file([("b", "h2"), ("a", "h1")]) == "a:h1\nb:h2\n"


def enroll(conf: Path, tmp: Path, ap_id: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "ap", "enroll", ap_id, "--insee", "46201",
         "--passwd-file", str(tmp / "borne.passwd"), "--acl-file", str(tmp / "borne.acl"),
         "-c", str(conf)],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    assert "mosquitto" in out.stderr
    agent: dict[str, Any] = tomllib.loads(out.stdout)["agent"]
    return agent


class Client:
    """A real MQTT client logged in as one user."""

    def __init__(self, broker: MosquittoBroker, user: str, password: str, name: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.refused: Any = None
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name)
        self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload)))
        self.connected = queue.Queue[Any]()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.put(rc)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        self.rc = self.connected.get(timeout=10)

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def messages(self, seconds: float) -> list[tuple[str, bytes]]:
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                out.append(self.got.get(timeout=0.05))
            except queue.Empty:
                continue
        return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.broker
def test_an_ap_cannot_publish_under_another_aps_topic(tmp_path: Path) -> None:
    """With the generated files, mosquitto delivers an AP's own topics and drops the others."""
    conf = tmp_path / "borne.toml"
    conf.write_text(f"""
command_master_key = "enroll-master-key-0123456789abcdef"
[mqtt]
username = "{CONTROLLER_USER}"
password = "{CONTROLLER_PASSWORD}"
[database]
url = "sqlite+aiosqlite:///{tmp_path / "state.db"}"
[portal]
listen_port = {free_port()}
""")
    a = enroll(conf, tmp_path, "ap-46201-01")
    b = enroll(conf, tmp_path, "ap-46201-02")
    again = enroll(conf, tmp_path, "ap-46201-01")  # a new password replaces the old one
    assert again["mqtt_password"] != a["mqtt_password"]
    assert again["command_key"] != b["command_key"] and len(again["command_key"]) == 64
    assert (tmp_path / "borne.passwd").read_text().count("ap-46201-01:$7$101$") == 1
    broker = MosquittoBroker(
        tmp_path / "mq",
        extra_conf=[
            "allow_anonymous false",
            f"password_file {tmp_path / 'borne.passwd'}",
            f"acl_file {tmp_path / 'borne.acl'}",
            "user root",  # the files are in the test's private tmp dir
        ],
    )
    broker.start()
    clients: list[Client] = []
    try:
        ctl = Client(broker, CONTROLLER_USER, CONTROLLER_PASSWORD, "ctl")
        clients.append(ctl)
        assert not ctl.rc.is_failure
        ctl.c.subscribe("borne/v1/ap/#", qos=1)
        old = Client(broker, "ap-46201-01", a["mqtt_password"], "old")
        clients.append(old)
        assert old.rc.is_failure  # the replaced password no longer opens
        ap_a = Client(broker, "ap-46201-01", again["mqtt_password"], "ap-a")
        clients.append(ap_a)
        assert not ap_a.rc.is_failure
        ap_a.c.subscribe("borne/v1/ap/+/cmd", qos=1)  # only its own cmd is readable
        time.sleep(0.3)
        ap_a.publish("borne/v1/ap/ap-46201-01/acct", b"mine")
        ap_a.publish("borne/v1/ap/ap-46201-02/acct", b"forged")
        ap_a.publish("borne/v1/ap/ap-46201-01/cmd", b"self-command")
        ctl.publish("borne/v1/ap/ap-46201-02/cmd", b"for-b")
        ctl.publish("borne/v1/ap/ap-46201-01/cmd", b"for-a")
        seen = ctl.messages(1.5)
        assert ("borne/v1/ap/ap-46201-01/acct", b"mine") in seen
        assert all(p not in (b"forged", b"self-command") for _t, p in seen)
        assert ap_a.messages(0.5) == [("borne/v1/ap/ap-46201-01/cmd", b"for-a")]
    finally:
        for c in clients:
            c.close()
        broker.stop()
