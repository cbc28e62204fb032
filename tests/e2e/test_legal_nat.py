"""A judicial requisition by public IP + source port + time, through a real NAT.

Every part is real: openNDS, dnsmasq and the agent in the access point's namespace (the
agent installs its SNAT port blocks with iptables on the uplink ``apwan``), mosquitto and
the controller (with the legal log) in the root namespace, two phones (busybox udhcpc,
curl through the captive portal) and a TCP server "on the internet" that records the
source address and port it sees. The requisition goes through ``borne legal``:
register, two approvals by two different logins, search.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agents._nat import CHAIN, PortBlocks
from tests.e2e._stack import (
    add_ap,
    consent_form,
    first_group,
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
from tests.e2e._stack import borne as run_borne
from tests.testbed import (
    AP_WAN_IP,
    CLIENT_NET,
    ROOT_IP,
    UPSTREAM_IP,
    Hotspot,
    MosquittoBroker,
    wait_for,
)

# Nine `borne` commands, each a Python start-up: minutes on a loaded two-core machine.
pytestmark = [pytest.mark.netns, pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(600)]

AP = "ap-46201-01"
FAS_KEY = "e2e-nat-fas-key-5b2a9e"
UPSTREAM = f"http://{UPSTREAM_IP}/"
RECORDER_PORT = 8081

_RECORDER = """
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(16)
with open(sys.argv[3], "a") as out:
    while True:
        conn, (ip, port) = srv.accept()
        out.write(f"{ip} {port} {time.time():.3f}\\n")
        out.flush()
        conn.close()
"""
_CONNECT = (
    "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()"
)


def controller_config(tmp: Path, broker: MosquittoBroker, portal_port: int) -> tuple[Path, Path]:
    """A controller serving the hotspot's portal, with the legal log."""
    return write_controller_config(
        tmp,
        broker,
        master_key="e2e-nat-master-key-0123456789abcd",
        portal=portal_on_hotspot(portal_port, FAS_KEY),
        sessions={"acct_interval_s": 10, "session_minutes": 30},
        legal={
            "enabled": True,
            "directory": tmp / "legal",
            "master_key_file": tmp / "legal-master.key",
            "signing_key_file": tmp / "legal-signing.pem",
            "poll_s": 0.2,
        },
    )


def agent_config(tmp: Path, key: str, broker: MosquittoBroker) -> Path:
    """The agent puts its SNAT port blocks on the uplink ``apwan``."""
    return write_agent_config(
        tmp, AP, key, broker, acct_interval_s=2, nat_interface="apwan", nat_subnet=CLIENT_NET
    )


def curl(hs: Hotspot, ns: str, url: str, *args: str) -> tuple[int, str, str]:
    """``curl`` in a namespace: (status, redirect URL, body)."""
    res = hs.run_in(
        ns,
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code} %{redirect_url}",
        *args,
        url,
        timeout=40,
    )
    body, _, trailer = res.stdout.rpartition("\n")
    code, _, location = trailer.partition(" ")
    return (int(code) if code.isdigit() else 0), location.strip(), body


def login(hs: Hotspot, ns: str, portal_port: int) -> str:
    """What a phone's browser does: follow openNDS's redirect, tick the box, submit."""
    status, location, _ = curl(hs, ns, UPSTREAM)
    assert status == 307 and location.startswith(f"http://{ROOT_IP}:{portal_port}/fas/?"), (
        status,
        location,
    )
    status, _, page = curl(hs, ns, location)
    assert status == 200, page[:300]
    status, _, done = curl(hs, ns, *consent_form(page, portal_port))
    return done if status == 200 else f"HTTP {status}: {done[:300]}"


@contextmanager
def second_phone(hs: Hotspot) -> Iterator[tuple[str, str, str]]:
    """Another device on the same Wi-Fi: a macvlan of the client link, in a namespace of
    its own, with its own MAC and its own DHCP lease. Yields (namespace, MAC, IP)."""
    ns = f"{hs.ns.cl}2"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        macvlan = "ip link add link cl0 name cl1 type macvlan mode bridge"
        hs.run_in("cl", *macvlan.split(), check=True)
        hs.run_in("cl", "ip", "link", "set", "cl1", "netns", ns, check=True)
        hs.run_in(ns, "ip", "link", "set", "lo", "up", check=True)
        hs.run_in(ns, "ip", "link", "set", "cl1", "up", check=True)
        udhcpc = "busybox udhcpc -i cl1 -f -n -q -t 10 -T 1 -A 1 -s"
        script = str(hs.files / "udhcpc.sh")
        res = hs.run_in(ns, *udhcpc.split(), script, timeout=40)
        assert res.returncode == 0, res.stdout + res.stderr
        addr = hs.run_in(ns, "ip", "-4", "-o", "addr", "show", "dev", "cl1", check=True).stdout
        ip = first_group(r"inet (\S+)/", addr)
        link = hs.run_in(ns, "ip", "-o", "link", "show", "dev", "cl1", check=True).stdout
        mac = first_group(r"link/ether (\S+)", link).lower()
        yield ns, mac, ip
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def borne(conf: Path, who: str, *args: str) -> str:
    """``borne`` run by the Unix login ``who``."""
    return run_borne(conf, *args, login=who)


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def test_a_requisition_by_public_ip_and_port_names_the_device_behind_the_nat(
    make_hotspot: Callable[..., Hotspot], tmp_path: Path
) -> None:
    """Two phones log in and each opens a TCP connection to a server upstream. The server
    sees the AP's uplink address and a source port inside each phone's block; a
    requisition for (that address, the port it saw, the time) returns exactly that
    phone's session (MAC, private IP), never the other's."""
    hs, portal_port = hotspot_for_portal(make_hotspot, tmp_path, AP, FAS_KEY)
    broker = hs.start_broker()
    conf, db = controller_config(tmp_path, broker, portal_port)
    borne(conf, "root", "legal", "init")
    key = add_ap(conf, AP, "46201", login="root")
    controller = start_controller(hs, conf, portal_port, login="borne")
    agent = start_agent(hs, agent_config(tmp_path, key, broker), login="root")
    wait_online(db, AP)
    # The agent put the port blocks on the uplink, in the AP's namespace only.
    jump = f"-A POSTROUTING -o apwan -j {CHAIN}"

    def nat_table() -> str:
        out = hs.run_in("ap", "iptables-save", "-t", "nat").stdout
        return out if jump in out else ""

    nat = wait_for(nat_table, timeout=15, message="the agent's NAT rules")
    assert nat.count(f"-A {CHAIN} ") == 3 * 254
    assert (
        CHAIN
        not in subprocess.run(
            ["iptables-save", "-t", "nat"], capture_output=True, text=True, timeout=30
        ).stdout
    )
    blocks = PortBlocks(CLIENT_NET, AP_WAN_IP)

    seen = tmp_path / "seen.txt"
    seen.touch()
    hs.start_in(
        "inet",
        sys.executable,
        "-c",
        _RECORDER,
        UPSTREAM_IP,
        str(RECORDER_PORT),
        str(seen),
        name="recorder",
    )
    wait_for(
        lambda: hs.run_in("inet", "ss", "-ltn").stdout.count(f":{RECORDER_PORT} "),
        timeout=10,
        message="recorder listening",
    )

    def connect(ns: str) -> tuple[str, int, float]:
        before = len(seen.read_text().splitlines())
        hs.run_in(ns, sys.executable, "-c", _CONNECT, UPSTREAM_IP, str(RECORDER_PORT), check=True)
        lines = wait_for(
            lambda: seen.read_text().splitlines()[before:],
            timeout=10,
            message="connection recorded",
        )
        ip, port, at = lines[0].split()
        return ip, int(port), float(at)

    def session_of(mac: str) -> sqlite3.Row:
        sql = "SELECT * FROM sessions WHERE mac = ? AND stopped_at IS NULL"
        rows = wait_for(lambda: query(db, sql, mac), timeout=20, message=f"session of {mac}")
        return rows[0]

    with second_phone(hs) as (ns2, mac2, ip2):
        assert "connecté" in login(hs, "cl", portal_port)
        assert "connecté" in login(hs, ns2, portal_port)
        phones = {hs.client_mac: hs.client_ip, mac2: ip2}
        assert len(set(phones.values())) == 2
        conns = {hs.client_mac: connect("cl"), mac2: connect(ns2)}

    # What the internet saw: the AP's uplink address, a port of each phone's own block.
    for mac, (ip, port, _at) in conns.items():
        block = blocks.block_for(phones[mac] or "")
        assert block is not None
        assert ip == AP_WAN_IP and block.port_start <= port <= block.port_end, (mac, ip, port)
        row = session_of(mac or "")
        assert (row["ip"], row["public_ip"], row["port_start"], row["port_end"]) == (
            phones[mac],
            AP_WAN_IP,
            block.port_start,
            block.port_end,
        )
    # Every session start is in the legal log (the consumer's offset passed it).
    last_start = query(db, "SELECT max(id) AS m FROM session_events WHERE kind = 'start'")[0]["m"]
    offset = "SELECT last_id FROM consumer_offsets WHERE name = 'legal'"
    wait_for(
        lambda: any(r["last_id"] >= last_start for r in query(db, offset)),
        timeout=30,
        message="legal records written",
    )

    # The requisition: registered, approved by two people, then searched.
    times = [at for _ip, _port, at in conns.values()]
    window = ("--from", iso(min(times) - 3600), "--to", iso(max(times) + 3600))
    borne(
        conf,
        "greffe",
        "legal",
        "requisition",
        "add",
        "PV-2026-NAT",
        "--authority",
        "OPJ Cahors",
        "--basis",
        "CPP 60-1",
        "--scope",
        f"IP {AP_WAN_IP}",
        *window,
        "--received",
        iso(min(times))[:10],
    )
    borne(conf, "officier-a", "legal", "requisition", "approve", "PV-2026-NAT")
    borne(conf, "officier-b", "legal", "requisition", "approve", "PV-2026-NAT")

    def search(ip: str, port: int, at: float) -> str:
        """``borne legal requisition search`` by public address, source port and time."""
        where = ("--public", ip, "--port", str(port), "--at", iso(at))
        return borne(conf, "officier-a", "legal", "requisition", "search", "PV-2026-NAT", *where)

    for mac, (ip, port, at) in conns.items():
        out = search(ip, port, at)
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        assert [(r[1], r[2], r[3]) for r in rows] == [(mac, phones[mac], AP_WAN_IP)], out
    # A port of no block in use at that time finds nobody.
    unused = blocks.block_for("10.46.1.50")
    assert unused is not None
    assert search(AP_WAN_IP, unused.port_start, times[0]).strip() == ""
    journal = (tmp_path / "legal" / "journal.jsonl").read_text()
    assert journal.count('"action": "search"') + journal.count('"action":"search"') == 3
    borne(conf, "root", "legal", "verify")

    # A clean stop of the agent takes its rules away.
    hs.stop(agent, timeout=20)
    assert CHAIN not in hs.run_in("ap", "iptables-save", "-t", "nat").stdout

    stop_controller(controller)
