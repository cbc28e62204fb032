"""End to end on a real hotspot: openNDS, dnsmasq, udhcpc, mosquitto, agent and controller.

Everything is a real process: the controller (``borne controller``) in the root
namespace, the agent (``python -m agents``) in the access point's namespace beside
openNDS, the visitor's HTTP client (curl) in the client's namespace.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._stack import (
    add_ap,
    borne,
    consent_form,
    hotspot_for_portal,
    portal_on_hotspot,
    query,
    start_agent,
    start_controller,
    stop_controller,
    wait_online,
    write_agent_config,
    write_controller_config,
)
from tests.testbed import ROOT_IP, UPSTREAM_BODY, Hotspot, MosquittoBroker, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.broker, pytest.mark.slow]

AP = "ap-46201-01"
FAS_KEY = "e2e-fas-key-7c1d2e"
UPSTREAM = "http://10.46.0.2/"


def write_configs(
    tmp: Path,
    broker: MosquittoBroker,
    portal_port: int,
    *,
    fas_key: str = FAS_KEY,
    session_minutes: int = 30,
    **sections: Any,
) -> tuple[Path, Path]:
    """The controller of these tests: its portal serves the hotspot's openNDS."""
    return write_controller_config(
        tmp,
        broker,
        master_key="e2e-master-key-0123456789abcdef",
        portal=portal_on_hotspot(portal_port, fas_key),
        sessions={"acct_interval_s": 10, "session_minutes": session_minutes},
        **sections,
    )


def agent_config(tmp: Path, key: str, broker: MosquittoBroker, **settings: Any) -> Path:
    return write_agent_config(tmp, AP, key, broker, **settings)


def login_through_portal(hs: Hotspot) -> str:
    """What a phone's browser does: follow openNDS's redirect, tick the box, submit."""
    redirect = hs.curl_from_client(UPSTREAM)
    assert redirect.status == 307, redirect
    location = redirect.location
    assert location is not None and location.startswith(f"http://{ROOT_IP}:{hs.fas_port}/fas/?")
    page = hs.curl_from_client(location)
    assert page.status == 200, page
    assert 'type="checkbox"' in page.body and "checked" not in page.body
    done = hs.curl_from_client(*consent_form(page.body, hs.fas_port), max_time=30)
    return done.body if done.status == 200 else f"HTTP {done.status}: {done.body[:300]}"


def test_a_visitor_logs_in_browses_and_is_cut_off(
    make_hotspot: Callable[..., Hotspot], tmp_path: Path
) -> None:
    """Redirect, terms, online, one session with growing counters; Will and reboot; deauth."""
    hs, portal_port = hotspot_for_portal(make_hotspot, tmp_path, AP, FAS_KEY)
    broker = hs.start_broker()
    conf, db = write_configs(tmp_path, broker, portal_port)
    key = add_ap(conf, AP, "46201")
    controller = start_controller(hs, conf, portal_port)
    agent_conf = agent_config(tmp_path, key, broker)
    agent = start_agent(hs, agent_conf)
    wait_online(db, AP)
    online = "SELECT state, boot FROM access_points WHERE ap_id = ?"

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
    (hs.files / "www" / "big.bin").write_bytes(os.urandom(3_000_000))
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
    start_agent(hs, agent_conf)
    wait_for(
        lambda: query(db, online, AP)[0]["boot"] != first_boot,
        timeout=30,
        message="agent back with a new boot",
    )
    rebooted = "SELECT * FROM sessions WHERE terminate_cause = 'ap-reboot'"
    wait_for(lambda: query(db, rebooted), timeout=10, message="stale session closed")
    wait_for(lambda: len(query(db, open_q)) == 1, timeout=10, message="session reopened")

    # An admin cuts the client off: the agent runs ndsctl deauth, the session closes.
    borne(conf, "client", "disconnect", "--ap", AP, "--mac", hs.mac, timeout=60)
    assert hs.curl_from_client(UPSTREAM).status == 307
    wait_for(lambda: query(db, open_q) == [], timeout=15, message="session closed")

    # SIGTERM stops the controller cleanly.
    stop_controller(controller)


# --------------------------------------------------------------------------- apply_config

_NDS_RESTART = """#!/bin/sh
# openNDS's restart on this testbed (the init system's job on an AP): SIGTERM, remove
# the firewall chains openNDS 9.10 leaves behind (its next start fails on them: "Chain
# already exists"), then start it the way tests/testbed.py does, from the same files.
echo restart >> "{wd}/nds-restarts"
running=""
for p in $(ip netns pids {ns}); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = opennds ] && running="$running $p"
done
[ -n "$running" ] && kill -TERM $running
# Wait until the old daemon has removed its firewall rules and exited (or is a zombie).
for p in $running; do
    i=0
    while [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 200 ] && exit 1; sleep 0.1
    done
done
export PATH="{wd}/bin:/usr/sbin:/usr/bin:/sbin:/bin"
started=$(grep -c 'openNDS is now running' "{wd}/opennds-restarted.log" 2>/dev/null || true)
started=${{started:-0}}
for t in filter nat mangle; do
    iptables -t $t -S | grep -- ' -j nds' | sed 's/^-A /-D /' | while read -r rule; do
        iptables -t $t $rule
    done
    for c in $(iptables -t $t -S | awk '/^-N nds/ {{print $2}}'); do iptables -t $t -F $c; done
    for c in $(iptables -t $t -S | awk '/^-N nds/ {{print $2}}'); do iptables -t $t -X $c; done
done
setsid unshare --mount --propagation private -- sh -c \\
    'mount --bind "$1" /usr/lib/opennds/dnsconfig.sh; mount --bind "$2" "$3"; shift 3; exec "$@"' \\
    sh "{wd}/dnsconfig-stub.sh" "{wd}/opennds.conf" /etc/opennds/opennds.conf \\
    opennds -f -d 2 -c /etc/opennds/opennds.conf -w {sock} \\
    >> "{wd}/opennds-restarted.log" 2>&1 < /dev/null &
# Started once its firewall is in place (ndsctl answers earlier than that).
i=0
until [ "$(grep -c 'openNDS is now running' "{wd}/opennds-restarted.log")" -gt "$started" ] \\
        && ndsctl status >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 150 ] && exit 1; sleep 0.2
done
"""

_DNSMASQ_RESTART = """#!/bin/sh
# dnsmasq's restart (it rereads its files only at start), now reading the agent's fragment.
echo restart >> "{wd}/dns-restarts"
for p in $(ip netns pids {ns}); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = dnsmasq ] || continue
    kill -TERM "$p"
    i=0
    while [ -d /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 50 ] && exit 1; sleep 0.1
    done
done
exec dnsmasq --conf-file="{fragment}" --no-hosts --no-resolv --port=0 --interface=lan0 \\
    --bind-interfaces --except-interface=lo \\
    --dhcp-range=10.46.1.100,10.46.1.200,255.255.255.0,12h \\
    --dhcp-option=option:router,10.46.1.1 --dhcp-leasefile=/tmp/dhcp.leases \\
    --dhcp-authoritative --no-ping --log-dhcp --log-facility="{wd}/dnsmasq-restarted.log" \\
    --pid-file="{wd}/dnsmasq.pid"
"""


# busybox udhcpc 1.35 requests option 114 (-O 114) but does not pass it to its script:
# the client's namespace records the DHCP answers off the wire (AF_PACKET) instead.
_DHCP_CAPTURE = """
import socket, struct, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
sock.bind(("cl0", 0))
sock.settimeout(0.5)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    try:
        frame = sock.recv(4096)
    except TimeoutError:
        continue
    ip = frame[14:]
    if ip[9] != 17:
        continue
    udp = ip[(ip[0] & 15) * 4:]
    if struct.unpack("!H", udp[2:4])[0] != 68:
        continue
    bootp = udp[8:]
    opts, i, found = bootp[240:], 0, {}
    while i < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        found[opts[i]] = opts[i + 2 : i + 2 + opts[i + 1]]
        i += 2 + opts[i + 1]
    if found.get(53) == bytes([5]):
        print("ACK", found.get(114, b"").decode(errors="replace"), flush=True)
"""


def _dhcp_ack_option_114(hs: Hotspot, workdir: Path) -> str | None:
    """Run udhcpc asking for option 114; return the option of the DHCP ACK it got."""
    out = workdir / "dhcp-capture.log"
    script = workdir / "dhcp_capture.py"
    script.write_text(_DHCP_CAPTURE)
    proc = hs.start_in("cl", sys.executable, str(script), "20", name="dhcp-capture")
    wait_for(lambda: "ready" in (workdir / "dhcp-capture.log").read_text(), message="capture")
    dhcp = hs.run_in(
        "cl", "busybox", "udhcpc", "-i", "cl0", "-f", "-n", "-q", "-t", "10", "-T", "1",
        "-A", "1", "-O", "114", "-s", str(workdir / "udhcpc.sh"), timeout=30,
    )  # fmt: skip
    assert dhcp.returncode == 0, dhcp.stdout + dhcp.stderr
    acks = wait_for(
        lambda: [ln for ln in out.read_text().splitlines() if ln.startswith("ACK")],
        message="DHCP ACK captured",
    )
    hs.stop(proc)
    return acks[-1].partition(" ")[2] or None


def test_apply_config_reaches_opennds_and_dnsmasq(
    make_hotspot: Callable[..., Hotspot], tmp_path: Path
) -> None:
    """The controller pushes the AP's settings when it comes online: DHCP option 114 carries
    the portal's RFC 8908 API URL, the walled-garden host answers before login, the session
    length applies to the next login; a second push of the same version restarts nothing.
    """
    hs, portal_port = hotspot_for_portal(make_hotspot, tmp_path, AP, FAS_KEY)
    wd = hs.files
    # A walled-garden site (HTTP on port 443, standing for an HTTPS one), and a port of
    # the same host outside the walled garden.
    for port in ("443", "8443"):
        hs.start_in(
            "inet", sys.executable, "-m", "http.server", port, "--bind", "10.46.0.2",
            "--directory", str(wd / "www"), name=f"site-{port}",
        )  # fmt: skip
    broker = hs.start_broker()
    walled_garden = {"walled_garden": ["10.46.0.2"], "walled_garden_ports": [443]}
    conf, db = write_configs(
        tmp_path,
        broker,
        portal_port,
        session_minutes=17,
        ap_config={"auto_push": True, **walled_garden},
    )
    key = add_ap(conf, AP, "46201")
    controller = start_controller(hs, conf, portal_port)
    fragment = wd / "borne-dnsmasq.conf"
    scripts = {
        "nds-restart.sh": _NDS_RESTART.format(wd=wd, sock=hs.ndsctl_socket, ns=hs.ap_namespace),
        "dns-restart.sh": _DNSMASQ_RESTART.format(wd=wd, fragment=fragment, ns=hs.ap_namespace),
    }
    for name, text in scripts.items():
        (wd / name).write_text(text)
        (wd / name).chmod(0o755)
    agent_conf = agent_config(
        tmp_path,
        key,
        broker,
        opennds_config=wd / "opennds.conf",
        opennds_restart_cmd=wd / "nds-restart.sh",
        dnsmasq_conf=fragment,
        dnsmasq_restart_cmd=wd / "dns-restart.sh",
    )
    # Before: captive, and the walled-garden site is out of reach.
    assert hs.curl_from_client("http://10.46.0.2:443/", max_time=3).status == 0
    start_agent(hs, agent_conf)

    applied = "SELECT * FROM ap_configs WHERE ap_id = ?"
    (row,) = wait_for(
        lambda: [r for r in query(db, applied, AP) if r["acked_at"] is not None],
        timeout=60,
        message="apply_config acknowledged",
    )
    assert (row["version"], row["applied_version"], row["result"]) == (1, 1, "applied")
    restarts = (wd / "nds-restarts", wd / "dns-restarts")
    assert [len(p.read_text().splitlines()) for p in restarts] == [1, 1]
    block = (wd / "opennds.conf").read_text()
    assert "sessiontimeout 17" in block and "dhcp_default_url_enable 0" in block

    # The walled garden: its port answers before login, another port of the host does not,
    # and everything else still goes to the portal.
    site = hs.curl_from_client("http://10.46.0.2:443/", max_time=5)
    assert (site.status, site.body) == (200, UPSTREAM_BODY)
    assert hs.curl_from_client("http://10.46.0.2:8443/", max_time=3).status == 0
    assert hs.curl_from_client(UPSTREAM).status == 307

    # DHCP option 114: the client asks for it (-O 114) and gets the portal's API URL,
    # which it can read before login (RFC 8908).
    api = f"http://{ROOT_IP}:{portal_port}/capport/api/{AP}"
    assert _dhcp_ack_option_114(hs, wd) == api
    capport = hs.curl_from_client(api, max_time=5)
    assert capport.status == 200 and '"captive":true' in capport.body, capport

    # The default session length applies to a login that sets none.
    # (ndsctl answers one caller at a time: the agent polls it too, so retry.)
    wait_for(lambda: hs.ndsctl("auth", hs.mac, check=False).returncode == 0)
    entry = wait_for(hs.client_entry, message="client listed by openNDS")
    assert entry["state"] == "Authenticated"
    assert int(entry["session_end"]) - int(entry["session_start"]) == 17 * 60

    # The same settings pushed again: the same version, acknowledged "unchanged", and
    # nothing restarted (the client stays logged in).
    out = borne(conf, "ap", "config", "push", AP, "--wait", "30", timeout=90)
    assert out.strip() == f"{AP}: version 1: unchanged"
    assert [len(p.read_text().splitlines()) for p in restarts] == [1, 1]
    assert hs.curl_from_client(UPSTREAM).status == 200

    # A real change (the operator edits the configuration and restarts the controller):
    # version 2, openNDS alone restarts (dnsmasq's fragment is unchanged), and the client
    # it forgot is let back in with the time it had left.
    before = int(entry["session_end"])
    stop_controller(controller)
    conf.write_text(conf.read_text().replace("session_minutes = 17", "session_minutes = 18"))
    start_controller(hs, conf, portal_port)
    out = borne(conf, "ap", "config", "push", AP, "--wait", "60", timeout=120)
    assert out.strip() == f"{AP}: version 2: applied"
    assert [len(p.read_text().splitlines()) for p in restarts] == [2, 1]
    assert "sessiontimeout 18" in (wd / "opennds.conf").read_text()
    # The phone's next packets make it known to openNDS again; the agent lets it in.
    wait_for(
        lambda: hs.curl_from_client(UPSTREAM, max_time=3).status == 200,
        timeout=30,
        interval=1.0,
        message="client let back in after the restart",
    )
    entry = wait_for(hs.client_entry, message="client listed by openNDS")
    assert entry["state"] == "Authenticated"
    assert abs(int(entry["session_end"]) - before) <= 60
