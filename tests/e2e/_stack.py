"""The controller and an agent as real processes, for the end-to-end tests.

What every such test does the same way: write ``borne.toml`` and ``agent.toml``, run the
``borne`` command line (``borne ap add``...), start ``borne controller`` and the agent
(in the hotspot's namespaces, or as plain processes), stop them, and read the
controller's SQLite database beside the running controller.
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
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (False while nothing listens)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def consent_form(page: str, portal_port: int) -> list[str]:
    """What submits the click-through form of the portal's login ``page`` (in French,
    terms accepted), as curl arguments: the form's URL, then its fields."""
    state = html.unescape(re.search(r'name="state" value="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
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
    master_key: str,
    keepalive_s: int = 10,
    portal: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``tmp/borne.toml`` for a controller on ``broker`` and SQLite ``tmp/state.db``.

    ``portal`` is the ``[portal]`` section (default: a free port on localhost); the
    dashboard gets a free port; ``sections`` adds or replaces sections. Returns
    (configuration file, database file).
    """
    db = tmp / "state.db"
    conf = write_toml(
        tmp / "borne.toml",
        {
            "": {"command_master_key": master_key},
            "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": keepalive_s},
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


def stop_controller(proc: subprocess.Popen[bytes]) -> None:
    """The controller must still be running; SIGTERM stops it cleanly (exit status 0)."""
    assert proc.poll() is None, "the controller must still be running"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0


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


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process started with ``spawn``; SIGKILL it after 15 s."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


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
