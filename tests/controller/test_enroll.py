"""Enrolment: a real mosquitto with the generated files keeps each AP under its own topic."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.enroll import acl_file, mosquitto_hash, password_file, write_broker_files
from tests.testbed import MosquittoBroker, free_port, require, wait_for

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


def test_rewritten_broker_files_keep_their_owner_group_and_mode(tmp_path: Path) -> None:
    """mosquitto reads its files through their group (root:mosquitto 0640 as deployed): a
    rewrite by root (``borne ap rotate`` from Ansible, the broker-files timer) keeps the
    replaced files' owner, group and mode; a new file is 0640."""
    if os.geteuid() != 0:
        require("root (to give the files another owner, as a deployment does)")
    passwd, acl = tmp_path / "borne.passwd", tmp_path / "borne.acl"
    for path in (passwd, acl):
        path.write_text("old\n")
        os.chown(path, 0, 65534)
        path.chmod(0o640)
    fresh = tmp_path / "new" / "borne.acl"
    write_broker_files([("ap-46201-01", mosquitto_hash("pw"))], None, passwd, acl)
    write_broker_files([], None, tmp_path / "new" / "borne.passwd", fresh)
    for path in (passwd, acl):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 65534, 0o640)
    assert "ap-46201-01" in passwd.read_text() and "ap-46201-01" in acl.read_text()
    assert fresh.stat().st_mode & 0o777 == 0o640


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


# --------------------------------------------------------------------------- rotation


def _status(ap_id: str, key: str, now: float) -> tuple[str, bytes]:
    from agents._core import Envelope
    from agents.contract import seal, topic

    msg = Envelope(ap_id).status(
        now, "online", agent_version="test", gateway="simulated", keepalive_s=30
    )
    return topic(ap_id, "status"), seal(msg, key.encode())


async def test_rotation_accepts_both_keys_confirms_on_the_new_one_and_forgets_the_old(
    settings: Any, db: Any, registry: Any
) -> None:
    """Pending: old and new keys accepted, commands signed with the old; the first message
    with the new key confirms; the old one is accepted until the grace ends, then refused;
    the old MQTT login leaves the broker's logins with it."""
    from agents.contract import SyncArgs, signature_ok
    from controller.enroll import (
        broker_logins,
        enroll,
        rotation_state,
        start_rotation,
    )
    from controller.service import Controller

    ap = "ap-46201-01"
    t0 = time.time()
    clock = [t0]
    ctl = Controller(settings, db, registry, clock=lambda: clock[0])
    await enroll(db, ap, t0)
    old_key = registry.command_key(ap)
    new, generation, logins = await start_rotation(db, ap, old_key, t0, 100.0)
    await registry.reload(ap)
    assert generation == 1 and new.mqtt_username == f"{ap}.1" and new.command_key != old_key
    assert sorted(u for u, _ in logins) == [ap, f"{ap}.1"]
    assert (await rotation_state(db, ap)).state == "pending"

    assert await ctl.handle(*_status(ap, old_key, t0 + 1), now=t0 + 1) == "applied"
    assert await ctl.handle(*_status(ap, "x" * 64, t0 + 1), now=t0 + 1) == (
        "rejected:bad_signature"
    )
    cmd = await ctl.prepare_command(ap, SyncArgs())
    assert signature_ok(dataclasses.asdict(cmd), old_key.encode())  # not confirmed yet

    assert await ctl.handle(*_status(ap, new.command_key, t0 + 2), now=t0 + 2) == "applied"
    state = await rotation_state(db, ap)
    assert state.state == "confirmed" and state.confirmed_at == t0 + 2
    assert registry.command_key(ap) == new.command_key
    cmd = await ctl.prepare_command(ap, SyncArgs())
    assert signature_ok(dataclasses.asdict(cmd), new.command_key.encode())
    # a spooled message sealed before the switch still counts during the grace period
    assert await ctl.handle(*_status(ap, old_key, t0 + 50), now=t0 + 50) == "applied"

    clock[0] = t0 + 101
    await ctl.sweep()
    assert (await rotation_state(db, ap)).state == "finished"
    assert await ctl.handle(*_status(ap, old_key, t0 + 102), now=t0 + 102) == (
        "rejected:bad_signature"
    )
    assert await ctl.handle(*_status(ap, new.command_key, t0 + 103), now=t0 + 103) == "applied"
    async with db.connect() as conn:
        assert [u for u, _ in await broker_logins(conn, t0 + 103)] == [f"{ap}.1"]


async def test_an_unconfirmed_rotation_is_forced_at_the_end_of_the_grace_period(
    settings: Any, db: Any, registry: Any
) -> None:
    """An AP that never confirmed loses its old key anyway: that is what rotating is for."""
    from controller.enroll import rotation_state, start_rotation
    from controller.service import Controller

    ap = "ap-46042-01"
    t0 = time.time()
    clock = [t0]
    ctl = Controller(settings, db, registry, clock=lambda: clock[0])
    old_key = registry.command_key(ap)
    new, _gen, _logins = await start_rotation(db, ap, old_key, t0, 10.0)
    await registry.reload(ap)
    assert registry.accepted_keys(ap, t0 + 5) == (old_key.encode(), new.command_key.encode())
    clock[0] = t0 + 11
    await ctl.sweep()
    assert (await rotation_state(db, ap)).state == "forced"
    assert registry.accepted_keys(ap, t0 + 12) == (new.command_key.encode(),)
    # a second rotation is generation 2, with its own login name
    again, gen, _ = await start_rotation(db, ap, new.command_key, t0 + 20, 10.0)
    assert gen == 2 and again.mqtt_username == f"{ap}.2"


async def test_rotation_is_refused_for_unknown_and_too_long_ids(db: Any, registry: Any) -> None:
    """Clear errors: an unregistered AP, an id that leaves no room for a generation."""
    from controller.enroll import rotated_username, start_rotation

    with pytest.raises(ValueError, match="unknown access point"):
        await start_rotation(db, "ap-nope", "k" * 32, time.time(), 10.0)
    with pytest.raises(ValueError, match="too long"):
        rotated_username("a" * 62, 12)
    assert rotated_username("ap-1", 0) == "ap-1"


def test_agent_writes_its_new_credentials_atomically_keeping_the_rest(tmp_path: Path) -> None:
    """write_credentials replaces three lines, keeps comments and mode; a bad key is refused
    before anything is written."""
    from agents.config import AgentConfigError, load_agent_config, write_credentials

    path = tmp_path / "agent.toml"
    path.write_text(
        '# managed\n[agent]\nap_id = "ap-1"\ncommand_key = "old-key-0123456789"\n'
        '# the broker\nmqtt_host = "127.0.0.1"\nmqtt_username = "ap-1"\nmqtt_password = "pw"\n'
    )
    path.chmod(0o600)
    config = write_credentials(path, "new-key-0123456789abcdef", "ap-1.1", 'p"w\\2')
    assert config.command_key == "new-key-0123456789abcdef" and config.mqtt_password == 'p"w\\2'
    text = path.read_text()
    assert "# managed\n" in text and "# the broker\n" in text and "old-key" not in text
    assert load_agent_config(path).mqtt_username == "ap-1.1"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    before = path.read_text()
    with pytest.raises(AgentConfigError, match="too short"):
        write_credentials(path, "short", "ap-1.2", "pw")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"]


# ----------------------------------------------------- rotation, end to end, real processes

CTL_CONF = """
command_master_key = "rotation-master-key-0123456789abcdef"
[mqtt]
host = "127.0.0.1"
port = {port}
username = "{user}"
password = "{password}"
client_id = "ctl-rotation-{nonce}"
[database]
url = "sqlite+aiosqlite:///{db}"
[portal]
listen_port = {portal}
[dashboard]
listen_port = {dashboard}
"""


def _signed_command(ap_id: str, key: str, cmd_id: str) -> bytes:
    """A ``sync`` command for ``ap_id`` signed with ``key`` (as the controller would)."""
    from agents.contract import Command, encode, sign_command

    now = time.time()
    cmd = Command(v=1, ap=ap_id, id=cmd_id, cmd="sync", args={}, iat=now, exp=now + 60)
    return encode(sign_command(cmd, key.encode()))


def _sealed_ack(ap_id: str, key: str, boot: str) -> bytes:
    """An agent ``ack`` (of no command) sealed with ``key``, as a spooled message would be."""
    from agents.contract import AckMsg, seal

    return seal(
        AckMsg(v=1, ap=ap_id, boot=boot, seq=1, ts=time.time(), id="probe", ok=True), key.encode()
    )


def _db_rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


class _StateSampler(threading.Thread):
    """Reads the AP's state at the controller every 0.2 s, to prove it never left online."""

    def __init__(self, db: Path, ap_id: str) -> None:
        super().__init__(daemon=True)
        self.db, self.ap_id = db, ap_id
        self.states: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            rows = _db_rows(self.db, "SELECT state FROM access_points WHERE ap_id = ?", self.ap_id)
            if rows:
                self.states.append(rows[0][0])


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rotation_end_to_end_agent_stays_online_and_old_credentials_expire(
    tmp_path: Path,
) -> None:
    """Real mosquitto, real ``borne controller``, real agent process (``python -m agents``).

    ``borne ap rotate`` issues new credentials and reloads the broker; the agent takes them
    over MQTT, rewrites its file, reconnects with its new login and the controller sees the
    new key: confirmed. The AP stays online throughout. During the grace period commands
    and messages signed with the old key still work; after it they are refused, and
    ``borne ap broker-files`` removes the old MQTT login from the broker.
    """
    ap = "ap-46201-01"
    grace = 45.0  # long enough for the checks below on a loaded machine
    port = free_port()
    state_db = tmp_path / "state.db"
    conf = tmp_path / "borne.toml"
    conf.write_text(
        CTL_CONF.format(
            port=port, user=CONTROLLER_USER, password=CONTROLLER_PASSWORD, nonce=time.time_ns(),
            db=state_db, portal=free_port(), dashboard=free_port(),
        )
    )  # fmt: skip
    first = enroll(conf, tmp_path, ap)
    broker = MosquittoBroker(
        tmp_path / "mq",
        port=port,
        extra_conf=[
            "allow_anonymous false",
            f"password_file {tmp_path / 'borne.passwd'}",
            f"acl_file {tmp_path / 'borne.acl'}",
            "user root",
        ],
    )
    broker.start()
    procs: list[subprocess.Popen[bytes]] = []
    sampler = _StateSampler(state_db, ap)
    ctl_log, agent_log = tmp_path / "controller.log", tmp_path / "agent.log"
    agent_conf = tmp_path / "agent.toml"
    agent_conf.write_text(
        f'[agent]\nap_id = "{ap}"\ncommand_key = "{first["command_key"]}"\n'
        f'mqtt_host = "127.0.0.1"\nmqtt_port = {port}\n'
        f'mqtt_username = "{ap}"\nmqtt_password = "{first["mqtt_password"]}"\n'
        f'gateway = "simulated"\nsimulated_clients = 2\nstate_dir = "{tmp_path / "agent-state"}"\n'
        "poll_interval_s = 0.5\nacct_interval_s = 5\nhealth_interval_s = 5\n"
    )
    agent_conf.chmod(0o600)
    observer: Client | None = None
    try:
        with ctl_log.open("ab") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "controller", "-c", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            ))  # fmt: skip
        with agent_log.open("ab") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "agents", "-c", str(agent_conf)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            ))  # fmt: skip

        def state() -> str | None:
            rows = _db_rows(state_db, "SELECT state FROM access_points WHERE ap_id = ?", ap)
            return rows[0][0] if rows else None

        wait_for(lambda: state() == "online", timeout=60, message="agent online")
        sampler.start()
        observer = Client(broker, CONTROLLER_USER, CONTROLLER_PASSWORD, "observer")
        observer.c.subscribe(f"borne/v1/ap/{ap}/ack", qos=1)
        time.sleep(0.3)

        rotation_started = time.time()
        rotated = subprocess.run(
            [sys.executable, "-m", "controller.cli", "ap", "rotate", ap, "--grace", str(grace),
             "--wait", "30", "--json", "--passwd-file", str(tmp_path / "borne.passwd"),
             "--acl-file", str(tmp_path / "borne.acl"),
             "--broker-reload", f"kill -HUP {broker.pid}", "-c", str(conf)],
            capture_output=True, text=True, timeout=90, check=False, cwd=ROOT,
        )  # fmt: skip
        rotated_at = time.time()
        assert rotated.returncode == 0, rotated.stderr + _tail(ctl_log) + _tail(agent_log)
        new = json.loads(rotated.stdout)
        assert new["state"] == "confirmed", rotated.stderr + _tail(agent_log)
        assert new["mqtt_username"] == f"{ap}.1" and new["problem"] is None
        written = tomllib.loads(agent_conf.read_text())["agent"]
        assert written["command_key"] == new["command_key"]
        assert written["mqtt_password"] == new["mqtt_password"]
        assert oct(agent_conf.stat().st_mode & 0o777) == "0o600"
        wait_for(
            lambda: f"u'{ap}.1'" in broker.log_path.read_text(),
            timeout=30,
            message="the agent reconnected with its new login",
        )

        # during the grace period the old key still works, both ways
        observer.publish(
            f"borne/v1/ap/{ap}/cmd", _signed_command(ap, first["command_key"], "old-1")
        )
        observer.publish(f"borne/v1/ap/{ap}/ack", _sealed_ack(ap, first["command_key"], "oldkey1"))
        acks = [json.loads(p)["id"] for _t, p in observer.messages(3.0)]
        assert "old-1" in acks
        wait_for(
            lambda: _db_rows(state_db, "SELECT 1 FROM processed_messages WHERE boot = 'oldkey1'"),
            timeout=10,
            message="a message sealed with the old key accepted during the grace period",
        )
        assert time.time() < rotation_started + grace, "the grace period ended too early"

        show = subprocess.run(
            [sys.executable, "-m", "controller.cli", "ap", "rotation", ap, "--json",
             "-c", str(conf)],
            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        )  # fmt: skip
        assert json.loads(show.stdout)["state"] == "confirmed"

        # the new key works: a command from the CLI is signed with it and acknowledged
        disconnect = subprocess.run(
            [sys.executable, "-m", "controller.cli", "client", "disconnect", "--ap", ap,
             "--mac", "02:00:00:00:00:99", "--wait", "20", "-c", str(conf)],
            capture_output=True, text=True, timeout=90, check=False, cwd=ROOT,
        )  # fmt: skip
        assert "no acknowledgement" not in disconnect.stderr, disconnect.stderr
        assert re.search(r"^[0-9a-f]+: (ok|refused)", disconnect.stdout, re.M), disconnect

        # after the grace period: refused
        time.sleep(max(0.0, rotated_at + grace + 1 - time.time()))
        observer.publish(
            f"borne/v1/ap/{ap}/cmd", _signed_command(ap, first["command_key"], "old-2")
        )
        observer.publish(f"borne/v1/ap/{ap}/ack", _sealed_ack(ap, first["command_key"], "oldkey2"))
        observer.publish(f"borne/v1/ap/{ap}/cmd", _signed_command(ap, new["command_key"], "new-1"))
        acks = [json.loads(p)["id"] for _t, p in observer.messages(4.0)]
        assert "new-1" in acks and "old-2" not in acks
        wait_for(
            lambda: "rejected (bad_signature)" in ctl_log.read_text(),
            timeout=10,
            message="the controller refuses a message sealed with the old key",
        )
        assert not _db_rows(state_db, "SELECT 1 FROM processed_messages WHERE boot = 'oldkey2'")

        # the old MQTT login leaves the broker; the new one stays
        files = subprocess.run(
            [sys.executable, "-m", "controller.cli", "ap", "broker-files",
             "--passwd-file", str(tmp_path / "borne.passwd"),
             "--acl-file", str(tmp_path / "borne.acl"),
             "--broker-reload", f"kill -HUP {broker.pid}", "-c", str(conf)],
            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
        assert files.returncode == 0, files.stderr
        assert f"{ap}:" not in (tmp_path / "borne.passwd").read_text()
        time.sleep(0.5)
        old_login = Client(broker, ap, first["mqtt_password"], "old-login")
        assert old_login.rc.is_failure
        old_login.close()
        new_login = Client(broker, new["mqtt_username"], new["mqtt_password"], "new-login")
        assert not new_login.rc.is_failure
        new_login.close()

        assert procs[1].poll() is None, _tail(agent_log)
        assert state() == "online"
        sampler.stop.set()
        sampler.join(5)
        assert sampler.states and set(sampler.states) == {"online"}, sampler.states
    finally:
        sampler.stop.set()
        if observer is not None:
            observer.close()
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        broker.stop()


def _tail(path: Path, n: int = 4000) -> str:
    return "\n--- " + path.name + "\n" + path.read_text(errors="replace")[-n:]


def test_agent_takes_rotate_credentials_once_idempotently_and_keeps_the_old_key_briefly(
    tmp_path: Path,
) -> None:
    """The agent decrypts the new credentials, writes them, signs its ack with the new key;
    the same credentials again are acknowledged without a write; a replayed id is refused;
    a command signed with the old key is taken only within the grace the controller gave."""
    from agents.agent import Agent
    from agents.config import load_agent_config
    from agents.contract import (
        Command,
        RotateCredentialsArgs,
        encode,
        seal_credentials,
        sign_command,
        signature_ok,
    )
    from agents.gateway import SimulatedGateway

    ap, old, new = "ap-46201-01", "old-key-0123456789abcdef", "new-key-0123456789abcdef"
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[agent]\nap_id = "{ap}"\ncommand_key = "{old}"\nmqtt_username = "{ap}"\n'
        f'mqtt_password = "old-password"\nstate_dir = "{tmp_path}"\n'
    )
    clock = [time.time()]
    agent = Agent(
        load_agent_config(path),
        SimulatedGateway(),
        clock=lambda: clock[0],
        persist_state=False,
        config_path=path,
    )
    creds = {"command_key": new, "mqtt_username": f"{ap}.1", "mqtt_password": "new-password"}
    creds["grace_s"] = "60"

    def command(cmd_id: str, key: str, name: str = "rotate_credentials") -> bytes:
        nonce = secrets.token_hex(16)
        args: dict[str, Any] = (
            dataclasses.asdict(
                RotateCredentialsArgs(nonce, seal_credentials(key.encode(), nonce, creds))
            )
            if name == "rotate_credentials"
            else {}
        )
        now = clock[0]
        cmd = Command(v=1, ap=ap, id=cmd_id, cmd=name, args=args, iat=now, exp=now + 120)  # type: ignore[arg-type]
        return encode(sign_command(cmd, key.encode()))

    def acks() -> list[dict[str, Any]]:
        agent.spool.rewind()  # read the spool from its head (nothing is sent in this test)
        records = agent.spool.next_batch(1000)
        return [json.loads(r.payload) for r in records if r.topic.endswith("/ack")]

    try:
        agent.handle_command(command("rot-1", old))
        written = load_agent_config(path)
        assert (written.command_key, written.mqtt_username) == (new, f"{ap}.1")
        assert written.mqtt_password == "new-password"
        first = acks()[-1]
        assert first["id"] == "rot-1" and first["ok"] is True
        assert signature_ok(first, new.encode()) and not signature_ok(first, old.encode())
        assert agent.link.options.username == f"{ap}.1"

        mtime = path.stat().st_mtime_ns
        agent.handle_command(command("rot-2", old))  # same credentials, old key still valid
        assert acks()[-1]["id"] == "rot-2" and acks()[-1]["ok"] is True
        assert path.stat().st_mtime_ns == mtime  # nothing rewritten
        agent.handle_command(command("rot-1", old))  # the first id again
        assert acks()[-1] == {
            **acks()[-1],
            "id": "rot-1",
            "ok": False,
            "error": "refused: replayed",
        }
        assert agent.counters["credentials_rotated"] == 1

        clock[0] += 61  # past the grace the controller announced
        before = len(acks())
        agent.handle_command(command("sync-old", old, "sync"))
        assert len(acks()) == before  # a wrong signature is never answered
        assert agent.counters["command_refused_bad_signature"] == 1
        agent.handle_command(command("sync-new", new, "sync"))
        assert acks()[-1]["id"] == "sync-new" and acks()[-1]["ok"] is True
    finally:
        agent.shutdown()


async def test_a_new_enrolment_ends_a_rotation_in_progress(db: Any, registry: Any) -> None:
    """`borne ap enroll` again replaces everything: no pending key, no retired login left."""
    from controller.enroll import broker_logins, enroll, rotation_state, start_rotation

    ap, t0 = "ap-46201-02", time.time()
    await enroll(db, ap, t0)
    await start_rotation(db, ap, registry.command_key(ap), t0, 3600.0)
    _password, logins = await enroll(db, ap, t0 + 1)
    assert sorted(u for u, _ in logins) == [ap]
    assert (await rotation_state(db, ap)).state == "none"
    await registry.reload(ap)
    assert registry.pending_key(ap) is None
    async with db.connect() as conn:
        assert [u for u, _ in await broker_logins(conn, t0 + 2)] == [ap]
