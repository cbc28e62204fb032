"""The controller and an agent as real processes, for the end-to-end tests.

What every such test does the same way: write ``borne.toml`` and ``agent.toml``, run the
``borne`` command line (``borne ap add``...), start ``borne controller`` and the agent
(in the hotspot's namespaces, or as plain processes), stop them, and read the
controller's SQLite database beside the running controller. The controller's own
process tests (tests/controller: kill -9, restart) use the same helpers.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agents._core import Envelope
from agents.contract import ClientEvent, seal, topic
from tests.testbed import ROOT_IP, Hotspot, MosquittoBroker, free_port, wait_for

BORNE = [sys.executable, "-m", "controller.cli"]
AGENT = [sys.executable, "-m", "agents"]
ROOT = Path(__file__).resolve().parents[2]


def process_env(login: str | None = None) -> dict[str, str]:
    """The environment of the processes: unbuffered output (logs read while they run),
    and, given a Unix login, that login (``getpass.getuser()`` reads LOGNAME first)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if login is not None:
        env |= {"LOGNAME": login, "USER": login}
    return env


def query(db: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    """Read the controller's SQLite database (read-only, beside the running controller)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def count(db: Path, sql: str, *args: Any) -> int:
    """The number ``sql`` selects (``count(*)``, ``max(id)``...), NULL as 0; 0 too while the
    controller has not created the database or the table yet."""
    if not db.exists():
        return 0
    try:
        rows = query(db, sql, *args)
    except sqlite3.OperationalError:
        return 0
    return int(rows[0][0] or 0)


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (False while nothing listens)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def first_group(pattern: str, text: str) -> str:
    """The first group of ``pattern``'s first match in ``text``, which must have one."""
    match = re.search(pattern, text)
    assert match is not None, f"no {pattern!r} in {text[:400]!r}"
    return match.group(1)


def consent_form(page: str, portal_port: int) -> list[str]:
    """What submits the click-through form of the portal's login ``page`` (in French,
    terms accepted), as curl arguments: the form's URL, then its fields."""
    state = html.unescape(first_group(r'name="state" value="([^"]+)"', page))
    action = html.unescape(first_group(r'action="([^"]+)"', page))
    url = action if action.startswith("http") else f"http://{ROOT_IP}:{portal_port}{action}"
    return [url, "--data-urlencode", f"state={state}", "--data", "lang=fr", "--data", "consent=yes"]


# --------------------------------------------------------------------------- configuration


def _toml_value(value: Any) -> str:
    # JSON's strings, numbers, booleans and arrays of them are TOML's too.
    return json.dumps(str(value) if isinstance(value, Path) else value)


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a TOML file of flat sections; the section named ``""`` holds top-level keys."""
    lines: list[str] = []
    for name, keys in sorted(sections.items(), key=lambda item: item[0] != ""):
        if name:
            lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def portal_on_hotspot(portal_port: int, fas_key: str) -> dict[str, Any]:
    """The ``[portal]`` of a controller serving openNDS's FAS on the testbed's root address."""
    return {
        "listen_host": ROOT_IP,
        "listen_port": portal_port,
        "public_url": f"http://{ROOT_IP}:{portal_port}/fas/",
        "fas_key": fas_key,
    }


def write_controller_config(
    tmp: Path,
    broker: MosquittoBroker,
    *,
    master_key: str | None = None,
    client_id: str | None = None,
    keepalive_s: int = 10,
    portal: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``tmp/borne.toml`` for a controller on ``broker`` and SQLite ``tmp/state.db``.

    ``master_key`` is the command master key (none by default); ``client_id`` the MQTT
    client id (the controller's default otherwise: give one of its own to a controller
    on the shared broker whose session must not meet another test's). ``portal`` is the
    ``[portal]`` section (default: a free port on localhost); the dashboard gets a free
    port; ``sections`` adds or replaces sections. Returns (configuration file, database
    file).
    """
    db = tmp / "state.db"
    mqtt: dict[str, Any] = {"host": broker.host, "port": broker.port, "keepalive_s": keepalive_s}
    if client_id is not None:
        mqtt["client_id"] = client_id
    conf = write_toml(
        tmp / "borne.toml",
        {
            "": {"command_master_key": master_key} if master_key is not None else {},
            "mqtt": mqtt,
            "database": {"url": f"sqlite+aiosqlite:///{db}"},
            "portal": portal if portal is not None else {"listen_port": free_port()},
            "dashboard": {"listen_port": free_port()},
            **sections,
        },
    )
    return conf, db


def write_agent_config(
    tmp: Path, ap_id: str, command_key: str, broker: MosquittoBroker, **settings: Any
) -> Path:
    """Write ``tmp/agent.toml``: an agent on ``broker`` with short intervals, the openNDS
    gateway and its state in ``tmp/agent-state``; ``settings`` adds or replaces keys."""
    agent = {
        "ap_id": ap_id,
        "command_key": command_key,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "keepalive_s": 5,
        "poll_interval_s": 0.5,
        "acct_interval_s": 1,
        "health_interval_s": 5,
        "gateway": "opennds",
        "state_dir": tmp / "agent-state",
        **settings,
    }
    return write_toml(tmp / "agent.toml", {"agent": agent})


# --------------------------------------------------------------------------- processes


def borne(conf: Path, *args: str, login: str | None = None, timeout: float = 120) -> str:
    """Run ``borne <args> -c conf``; it must succeed. Returns its standard output."""
    res = subprocess.run(
        [*BORNE, *args, "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=process_env(login),
    )
    assert res.returncode == 0, f"borne {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout


def add_ap(conf: Path, ap_id: str, insee: str, *, login: str | None = None) -> str:
    """``borne ap add``: register an access point; returns its command key."""
    return borne(conf, "ap", "add", ap_id, "--insee", insee, login=login).strip()


def start_controller(
    hs: Hotspot, conf: Path, portal_port: int, *, login: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``borne controller`` in the root namespace; return once its portal answers."""
    proc = hs.start_in(
        None, *BORNE, "controller", "-c", str(conf), name="controller", env=process_env(login)
    )
    wait_for(
        lambda: http_ok(f"http://{ROOT_IP}:{portal_port}/healthz"), timeout=30, message="portal up"
    )
    return proc


def start_agent(
    hs: Hotspot, agent_conf: Path, *, login: str | None = None
) -> subprocess.Popen[bytes]:
    """Start the agent in the access point's namespace, beside openNDS."""
    return hs.start_in("ap", *AGENT, "-c", str(agent_conf), name="agent", env=process_env(login))


def wait_online(db: Path, ap_id: str, timeout: float = 30) -> None:
    """Wait until the controller has the access point online."""
    online = "SELECT state FROM access_points WHERE ap_id = ?"
    wait_for(
        lambda: query(db, online, ap_id)[0]["state"] == "online",
        timeout=timeout,
        message="AP online at the controller",
    )


def stop_controller(proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """The controller must still be running; SIGTERM stops it cleanly (exit status 0).

    ``log``, the controller's output, ends the failure message.
    """
    assert proc.poll() is None, "the controller must still be running"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-2000:] if log is not None else ""


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a process outside any namespace, in a session of its own, logging to ``log``."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=process_env(),
            start_new_session=True,
        )


class ControllerProcess:
    """``borne controller -c conf`` as a plain process (see ``spawn``), which a test kills
    and starts again; each run appends its output to ``log``.

    As a context manager: started on entry, SIGKILLed on exit if it still runs.
    """

    def __init__(self, conf: Path, log: Path) -> None:
        self.conf = conf
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_log_from = 0  # where the current run's output starts in ``log``

    def __enter__(self) -> ControllerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "the controller was never started"
        return self._proc

    def start(self) -> None:
        """Start a run (the previous one must have ended)."""
        assert self._proc is None or self._proc.poll() is not None, "already running"
        self._run_log_from = self.log.stat().st_size if self.log.exists() else 0
        self._proc = spawn([*BORNE, "controller", "-c", str(self.conf)], self.log)

    def wait_connected(self, timeout: float = 30) -> None:
        """Wait until the current run has logged that the broker granted its subscription
        to the agents' topics (before, what an agent publishes reaches no one)."""

        def run_log() -> bytes:
            with self.log.open("rb") as fh:
                fh.seek(self._run_log_from)
                return fh.read()

        wait_for(
            lambda: b"subscribed to the agents' topics" in run_log(),
            timeout=timeout,
            message="controller subscribed to the agents' topics",
        )

    def wait_for(
        self,
        condition: Callable[[], Any],
        *,
        timeout: float,
        message: str,
        state: Callable[[], str] | None = None,
    ) -> None:
        """``testbed.wait_for``; when time runs out, the failure gives ``state()`` (what
        was awaited, as it stands), whether the run still lives, and its last log lines
        (what it was doing, or why it stopped)."""
        try:
            wait_for(condition, timeout=timeout, message=message)
        except TimeoutError as exc:
            code = self.proc.poll()
            status = "still running" if code is None else f"exited with {code}"
            with self.log.open("rb") as fh:
                fh.seek(self._run_log_from)
                tail = fh.read().decode(errors="replace").splitlines()[-40:]
            now = f" ({state()})" if state is not None else ""
            raise AssertionError(
                f"{exc}{now}; the controller is {status}; its log ends with:\n" + "\n".join(tail)
            ) from exc

    def kill(self) -> None:
        """SIGKILL the run, with its process group, if it still runs."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)

    def stop(self) -> None:
        """``stop_controller``: SIGTERM must stop the running controller cleanly."""
        stop_controller(self.proc, self.log)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process started with ``spawn``; SIGKILL it after 15 s."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class AgentPublisher:
    """Publishes as the agent of an access point would: sealed with its key, at QoS 1."""

    client: mqtt.Client
    envelope: Envelope
    key: bytes

    def send(self, kind: str, msg: Any) -> mqtt.MQTTMessageInfo:
        """Publish ``msg`` on the access point's ``kind`` topic."""
        return self.client.publish(topic(self.envelope.ap, kind), seal(msg, self.key), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def online_agent(broker: MosquittoBroker, ap_id: str, key: str) -> AgentPublisher:
    """An MQTT client (an id of its own) for the agent of ``ap_id`` with command key ``key``:
    connected, its network loop running, its "online" status acknowledged by the broker."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"agent-{ap_id}-{time.time_ns()}",
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    agent = AgentPublisher(client, Envelope(ap_id), key.encode())
    status = agent.envelope.status(
        time.time(), "online", agent_version="t", gateway="t", keepalive_s=30
    )
    agent.send("status", status).wait_for_publish(5)
    return agent


def authorize_then_kill(
    agent: AgentPublisher,
    controller: ControllerProcess,
    clients: Sequence[tuple[str, str]],
    *,
    busy: Callable[[], bool],
    what: str,
) -> None:
    """Publish an "authorized" event for each (MAC, IP) of ``clients``, one message each;
    a third of the way through, once ``busy()`` holds (``what``: the controller at work),
    SIGKILL the controller. Returns once the broker has acknowledged every message."""
    infos = []
    for i, (mac, ip) in enumerate(clients):
        now = time.time()
        event = ClientEvent("authorized", mac, ip, now)
        infos.append(agent.send("clients", agent.envelope.clients(now, [event])))
        if i == len(clients) // 3:
            wait_for(busy, timeout=30, message=what)
            controller.kill()
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published(), f"the broker did not acknowledge message {info.mid}"


def hotspot_for_portal(
    make_hotspot: Callable[..., Hotspot], tmp: Path, ap_id: str, fas_key: str
) -> tuple[Hotspot, int]:
    """A hotspot whose openNDS sends visitors to a portal on a free port of the root
    namespace (``/fas/``), named ``ap_id``; returns (hotspot, portal port)."""
    portal_port = free_port()
    hs = make_hotspot(
        fas_port=portal_port,
        gateway_name=ap_id,
        faspath="/fas/",
        faskey=fas_key,
        workdir=tmp / "hotspot",
    )
    return hs, portal_port
