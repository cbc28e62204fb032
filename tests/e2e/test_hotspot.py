"""End to end on a real hotspot: openNDS, dnsmasq, udhcpc, mosquitto, agent and controller.

Everything is a real process: the controller (``borne controller``) in the root
namespace, the agent (``python -m agents``) in the access point's namespace beside
openNDS, the visitor's HTTP client (curl) in the client's namespace.
"""

from __future__ import annotations

import html
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import ROOT_IP, UPSTREAM_BODY, Hotspot, free_port, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.broker, pytest.mark.slow]

AP = "ap-46201-01"
FAS_KEY = "e2e-fas-key-7c1d2e"
UPSTREAM = "http://10.46.0.2/"
BORNE = [sys.executable, "-m", "controller.cli"]


def query(db: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    """Read the controller's SQLite database (read-only, beside the running controller)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def write_configs(tmp: Path, broker: Any, portal_port: int) -> tuple[Path, Path]:
    db = tmp / "state.db"
    conf = tmp / "borne.toml"
    conf.write_text(f"""
command_master_key = "e2e-master-key-0123456789abcdef"
[mqtt]
host = "{broker.host}"
port = {broker.port}
keepalive_s = 10
[database]
url = "sqlite+aiosqlite:///{db}"
[portal]
listen_host = "{ROOT_IP}"
listen_port = {portal_port}
public_url = "http://{ROOT_IP}:{portal_port}/fas/"
fas_key = "{FAS_KEY}"
[sessions]
acct_interval_s = 10
session_minutes = 30
[dashboard]
listen_port = {free_port()}
""")
    return conf, db


def agent_config(tmp: Path, key: str, broker: Any) -> Path:
    path = tmp / "agent.toml"
    path.write_text(f"""
[agent]
ap_id = "{AP}"
command_key = "{key}"
mqtt_host = "{broker.host}"
mqtt_port = {broker.port}
keepalive_s = 5
poll_interval_s = 0.5
acct_interval_s = 1
health_interval_s = 5
gateway = "opennds"
state_dir = "{tmp / "agent-state"}"
""")
    return path


def login_through_portal(hs: Hotspot) -> str:
    """What a phone's browser does: follow openNDS's redirect, tick the box, submit."""
    redirect = hs.curl_from_client(UPSTREAM)
    assert redirect.status == 307, redirect
    location = redirect.location
    assert location is not None and location.startswith(f"http://{ROOT_IP}:{hs.fas_port}/fas/?")
    page = hs.curl_from_client(location)
    assert page.status == 200, page
    assert 'type="checkbox"' in page.body and "checked" not in page.body
    state = html.unescape(re.search(r'name="state" value="([^"]+)"', page.body).group(1))  # type: ignore[union-attr]
    action = html.unescape(re.search(r'action="([^"]+)"', page.body).group(1))  # type: ignore[union-attr]
    url = action if action.startswith("http") else f"http://{ROOT_IP}:{hs.fas_port}{action}"
    done = hs.curl_from_client(
        url,
        "--data-urlencode",
        f"state={state}",
        "--data",
        "lang=fr",
        "--data",
        "consent=yes",
        max_time=30,
    )
    return done.body if done.status == 200 else f"HTTP {done.status}: {done.body[:300]}"


def test_a_visitor_logs_in_browses_and_is_cut_off(
    make_hotspot: Callable[..., Hotspot], tmp_path: Path
) -> None:
    """Redirect, terms, online, one session with growing counters; Will and reboot; deauth."""
    portal_port = free_port()
    hs = make_hotspot(
        fas_port=portal_port,
        gateway_name=AP,
        faspath="/fas/",
        faskey=FAS_KEY,
        workdir=tmp_path / "hotspot",
    )
    broker = hs.start_broker()
    conf, db = write_configs(tmp_path, broker, portal_port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    added = subprocess.run(
        [*BORNE, "ap", "add", AP, "--insee", "46201", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    key = added.stdout.strip()
    controller = hs.start_in(
        None, *BORNE, "controller", "-c", str(conf), name="controller", env=env
    )
    wait_for(
        lambda: _http_ok(f"http://{ROOT_IP}:{portal_port}/healthz"), timeout=30, message="portal up"
    )
    agent_conf = agent_config(tmp_path, key, broker)
    agent = hs.start_in(
        "ap", sys.executable, "-m", "agents", "-c", str(agent_conf), name="agent", env=env
    )
    online = "SELECT state, boot FROM access_points WHERE ap_id = ?"
    wait_for(
        lambda: query(db, online, AP)[0]["state"] == "online",
        timeout=30,
        message="AP online at the controller",
    )

    # Before login: openNDS sends the visitor to borne's portal.
    page = login_through_portal(hs)
    assert "connecté" in page, page

    # After login: the same request reaches the upstream host.
    after = hs.curl_from_client(UPSTREAM)
    assert (after.status, after.body) == (200, UPSTREAM_BODY)
    open_q = "SELECT * FROM sessions WHERE stopped_at IS NULL"
    (s,) = wait_for(lambda: query(db, open_q), timeout=20, message="open session")
    assert (s["mac"], s["ip"], s["ap_id"], s["insee"], s["auth_method"]) == (
        hs.client_mac,
        hs.client_ip,
        AP,
        "46201",
        "click-through",
    )

    # Traffic makes the counters grow (openNDS counts in kB).
    (Path(hs.workdir) / "www" / "big.bin").write_bytes(os.urandom(3_000_000))
    first = query(db, open_q)[0]["down_bytes"]
    assert hs.curl_from_client(UPSTREAM + "big.bin", max_time=30).status == 200
    wait_for(
        lambda: query(db, open_q)[0]["down_bytes"] >= first + 2_900_000,
        timeout=30,
        message="download counted",
    )

    # Killing the agent: its Will marks the AP offline; a restart (new boot) closes the
    # previous run's session and opens the client's session anew from openNDS's list.
    first_boot = query(db, online, AP)[0]["boot"]
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait(10)
    wait_for(
        lambda: query(db, online, AP)[0]["state"] == "offline",
        timeout=5 * 1.5 + 5,
        message="AP offline by its Will",
    )
    hs.start_in("ap", sys.executable, "-m", "agents", "-c", str(agent_conf), name="agent", env=env)
    wait_for(
        lambda: query(db, online, AP)[0]["boot"] != first_boot,
        timeout=30,
        message="agent back with a new boot",
    )
    rebooted = "SELECT * FROM sessions WHERE terminate_cause = 'ap-reboot'"
    wait_for(lambda: query(db, rebooted), timeout=10, message="stale session closed")
    wait_for(lambda: len(query(db, open_q)) == 1, timeout=10, message="session reopened")

    # An admin cuts the client off: the agent runs ndsctl deauth, the session closes.
    out = subprocess.run(
        [*BORNE, "client", "disconnect", "--ap", AP, "--mac", hs.client_mac or "", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert hs.curl_from_client(UPSTREAM).status == 307
    wait_for(lambda: query(db, open_q) == [], timeout=15, message="session closed")
    assert controller.poll() is None, "the controller must still be running"

    # SIGTERM stops the controller cleanly.
    os.killpg(controller.pid, signal.SIGTERM)
    assert controller.wait(20) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False
