"""NAT port blocks: the arithmetic, the contract fields, real iptables rules in a network
namespace, and a real TCP connection translated into its client's block."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents._core import Envelope, batches
from agents._nat import (
    CHAIN,
    MIN_BLOCK,
    IptablesNat,
    NatError,
    PortBlock,
    PortBlocks,
    interface_address,
    with_blocks,
)
from agents.agent import Agent
from agents.config import AgentConfig, AgentConfigError, parse_agent_config
from agents.contract import MAX_PAYLOAD_BYTES, AcctEntry, ClientEvent, encode, seal, topic
from agents.gateway import SimulatedGateway
from controller.contract import Rejected, decode
from tests.agents.test_contract import KEY, RecordingLink, keys
from tests.testbed import require

AP = "ap-46201-01"
NOW = 1_790_000_000.0


# ------------------------------------------------------------------------ arithmetic


def test_a_slash_24_shares_the_unprivileged_ports_in_253_port_blocks() -> None:
    """10.46.1.1 gets the first block, 10.46.1.254 the last; the network and broadcast
    addresses and addresses elsewhere get none."""
    pb = PortBlocks("10.46.1.0/24", "203.0.113.7")
    assert (pb.clients, pb.block_size) == (254, 64512 // 254)
    assert pb.block_for("10.46.1.1") == PortBlock("203.0.113.7", 1024, 1024 + 253 - 1)
    assert pb.block_for("10.46.1.2") == PortBlock("203.0.113.7", 1277, 1529)
    last = pb.block_for("10.46.1.254")
    assert last is not None and last.port_start == 1024 + 253 * 253 and last.port_end <= 65535
    for ip in ("10.46.1.0", "10.46.1.255", "10.46.2.1", "not an ip", "::1"):
        assert pb.block_for(ip) is None


def test_the_recorded_public_ip_may_differ_from_the_snat_address() -> None:
    """Behind a one-to-one NAT that keeps ports, the log records what the internet sees."""
    pb = PortBlocks("192.168.10.0/24", "192.168.0.2", public_ip="198.51.100.20")
    block = pb.block_for("192.168.10.9")
    assert block is not None and block.public_ip == "198.51.100.20"
    assert "--to-source 192.168.0.2:" in pb.restore_script()


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.integers(min_value=22, max_value=32),
    first=st.integers(min_value=1, max_value=40000),
    size=st.integers(min_value=0, max_value=2000),
)
def test_blocks_are_disjoint_and_inside_the_range(prefix: int, first: int, size: int) -> None:
    """A plan is refused exactly when it cannot fit; otherwise every client has a block
    of block_size ports and no two overlap."""
    clients = 2 ** (32 - prefix) - (2 if prefix < 31 else 0)
    ports = 65535 - first + 1
    effective = size or ports // clients
    fits = effective >= MIN_BLOCK and effective * clients <= ports
    try:
        pb = PortBlocks(f"10.46.0.0/{prefix}", "192.0.2.1", port_first=first, block_size=size)
    except NatError:
        assert not fits
        return
    assert fits
    spans = sorted((b.port_start, b.port_end) for _ip, b in pb.blocks())
    assert len(spans) == pb.clients
    assert spans[0][0] == first and spans[-1][1] <= 65535
    for (s1, e1), (s2, _e2) in itertools.pairwise(spans):
        assert e1 - s1 + 1 == pb.block_size and e1 < s2
    assert pb.capacity >= pb.clients


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"subnet": "10.46.0.0/16"}, "65534 clients"),
        ({"subnet": "10.46.1.0/24", "block_size": 512}, "need 130048 ports"),
        ({"subnet": "10.46.1.0/24", "block_size": 32}, "at least 64"),
        ({"subnet": "10.46.1.1/24"}, "host bits set"),
        ({"subnet": "10.46.1.0/24", "snat_address": "2001:db8::1"}, "4 octets"),
        ({"subnet": "10.46.1.0/24", "port_first": 70000}, "within 1-65535"),
    ],
)
def test_impossible_plans_are_refused_with_the_reason(kwargs: dict[str, Any], words: str) -> None:
    args = {"snat_address": "192.0.2.1", **kwargs}
    with pytest.raises(NatError, match=words):
        PortBlocks(**args)


def test_the_agent_configuration_checks_the_plan() -> None:
    """A NAT setting alone, or a subnet too big for the ports, is a configuration error."""
    base: dict[str, Any] = {"ap_id": AP, "command_key": KEY}
    ok = parse_agent_config(
        {"agent": {**base, "nat_interface": "wan", "nat_subnet": "10.46.1.0/24"}}
    )
    assert (ok.nat_interface, ok.nat_port_first, ok.nat_block_size) == ("wan", 1024, 0)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"nat_interface": "wan"}, "agent.nat_subnet"),
        ({"nat_subnet": "10.46.1.0/24"}, "agent.nat_interface"),
        ({"nat_interface": "wan", "nat_subnet": "10.46.0.0/20"}, "agent.nat_subnet"),
        ({"nat_interface": "wan; reboot", "nat_subnet": "10.46.1.0/24"}, "agent.nat_interface"),
        (
            {"nat_interface": "wan", "nat_subnet": "10.46.1.0/24", "nat_public_ip": "x"},
            "agent.nat_subnet",
        ),
        ({"nat_block_size": 70000}, "agent.nat_block_size"),
        (
            {"nat_interface": "wan", "nat_subnet": "10.46.1.0/24", "nat_iptables": " "},
            "agent.nat_iptables",
        ),
    ]
    for extra, path in cases:
        with pytest.raises(AgentConfigError) as err:
            parse_agent_config({"agent": {**base, **extra}})
        assert path in [p for p, _m in err.value.problems], (extra, err.value.problems)


def test_restore_script_has_three_rules_per_client() -> None:
    """TCP and UDP get the block, other protocols the address only; one chain, one commit."""
    pb = PortBlocks("10.46.1.0/29", "192.0.2.1")
    lines = pb.restore_script().splitlines()
    assert lines[:2] == ["*nat", f":{CHAIN} - [0:0]"] and lines[-1] == "COMMIT"
    rules = lines[2:-1]
    assert len(rules) == 3 * 6
    b = pb.block_for("10.46.1.3")
    assert b is not None
    assert (
        f"-A {CHAIN} -s 10.46.1.3/32 -p tcp -j SNAT --to-source 192.0.2.1:"
        f"{b.port_start}-{b.port_end}"
    ) in rules
    assert f"-A {CHAIN} -s 10.46.1.3/32 -j SNAT --to-source 192.0.2.1" in rules


# ------------------------------------------------------------------------ contract


def test_authorized_events_and_acct_entries_carry_the_block() -> None:
    pb = PortBlocks("10.46.1.0/24", "192.0.2.1")
    events = [
        ClientEvent("seen", "02:00:00:00:00:01", "10.46.1.100", NOW),
        ClientEvent("authorized", "02:00:00:00:00:01", "10.46.1.100", NOW),
        ClientEvent("authorized", "02:00:00:00:00:02", "172.16.0.9", NOW),
        ClientEvent("left", "02:00:00:00:00:03", "10.46.1.101", NOW),
    ]
    seen, auth, outside, left = with_blocks(events, pb)
    assert seen == events[0] and outside == events[2] and left == events[3]
    want = pb.block_for("10.46.1.100")
    assert want is not None
    assert (auth.public_ip, auth.port_start, auth.port_end) == (
        want.public_ip,
        want.port_start,
        want.port_end,
    )
    (entry,) = with_blocks([AcctEntry("02:00:00:00:00:01", "10.46.1.100", NOW, 1, 2)], pb)
    assert entry.port_start == want.port_start


def test_without_nat_the_fields_are_absent_from_the_json() -> None:
    """An AP without NAT sends what it sent before (no nulls on every entry)."""
    raw = encode(ClientEvent("authorized", "02:00:00:00:00:01", "10.46.1.100", NOW))
    assert b"public_ip" not in raw and b"port_" not in raw
    with_nat = encode(
        ClientEvent(
            "authorized", "02:00:00:00:00:01", "10.46.1.100", NOW, None, "192.0.2.1", 1024, 1276
        )
    )
    assert b'"public_ip":"192.0.2.1","port_start":1024,"port_end":1276' in with_nat


def test_a_full_nat_batch_of_worst_case_entries_fits_and_validates() -> None:
    """A batch of entries with the longest values stays under 64 KiB and passes the controller."""
    entry = AcctEntry(
        "02:5b:00:00:01:f4", "10.46.250.250", 1790000000.1234567, 2**64 - 1, 2**64 - 1,
        "203.000.113.250".replace(".000.", ".0."), 65000, 65535,
    )  # fmt: skip
    (batch, *_) = batches([entry] * 600)
    msg = Envelope(AP).acct(1790000000.1234567, 3600, batch)
    payload = seal(msg, KEY.encode())
    assert len(payload) < MAX_PAYLOAD_BYTES
    _kind, got = decode(topic(AP, "acct"), payload, keys)
    assert got.entries[0].port_end == 65535  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("nat", "why"),
    [
        ({"public_ip": "192.0.2.1"}, "go together"),
        ({"public_ip": "192.0.2.1", "port_start": 2000, "port_end": 1999}, "reversed"),
        ({"public_ip": "192.0.2.1", "port_start": 0, "port_end": 10}, "outside"),
        ({"public_ip": "192.0.2.1", "port_start": 1, "port_end": 65536}, "outside"),
        ({"public_ip": "example.org", "port_start": 1, "port_end": 2}, "not an IP"),
    ],
)
def test_the_controller_refuses_a_broken_block(nat: dict[str, Any], why: str) -> None:
    ev = ClientEvent("authorized", "02:00:00:00:00:01", "10.46.1.100", NOW, **nat)
    payload = seal(Envelope(AP).clients(NOW, [ev]), KEY.encode())
    with pytest.raises(Rejected, match=why) as err:
        decode(topic(AP, "clients"), payload, keys)
    assert err.value.reason == "bad_value"


# ------------------------------------------------------------------------ real iptables


def _root_with(*programs: str) -> None:
    if os.geteuid() != 0:
        require("root (network namespaces, iptables)")
    for prog in programs:
        if shutil.which(prog) is None:
            require(f"{prog} (Debian package iptables / iproute2)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def gw_ns() -> Iterator[str]:
    """A network namespace with an uplink ``up0`` (192.0.2.1/24), one end of a veth pair
    whose other end stays in the namespace too."""
    _root_with("ip", "iptables", "iptables-restore", "iptables-save")
    ns = f"borne-nat-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "up0peer")
        _ip("-n", ns, "addr", "add", "192.0.2.1/24", "dev", "up0")
        _ip("-n", ns, "link", "set", "up0", "up")
        yield ns
    finally:
        _ip("netns", "delete", ns)


def _nat_table(ns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "iptables-save", "-t", "nat"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip


def test_install_is_idempotent_and_remove_leaves_nothing(gw_ns: str) -> None:
    """The chain holds three rules per client, POSTROUTING jumps to it once for the uplink
    (also after a second install, as after a crash), and remove takes everything away."""
    pb = PortBlocks("10.46.1.0/24", "192.0.2.1")
    nat = IptablesNat(pb, "up0", ["ip", "netns", "exec", gw_ns, "iptables"])
    nat.install()
    nat.install()
    table = _nat_table(gw_ns)
    assert table.count(f"-A POSTROUTING -o up0 -j {CHAIN}") == 1
    rules = [line for line in table.splitlines() if line.startswith(f"-A {CHAIN} ")]
    assert len(rules) == 3 * 254
    assert f"-A {CHAIN} -s 10.46.1.2/32 -p udp -j SNAT --to-source 192.0.2.1:1277-1529" in rules
    nat.remove()
    assert CHAIN not in _nat_table(gw_ns)
    nat.remove()  # nothing left to remove: no error
    assert not nat.installed


def test_a_refused_install_says_why(gw_ns: str) -> None:
    """An iptables that cannot run (wrong command) is a NatError, not a crash."""
    pb = PortBlocks("10.46.1.0/24", "192.0.2.1")
    with pytest.raises(NatError, match=r"iptables-restore|No such file"):
        IptablesNat(pb, "up0", ["ip", "netns", "exec", gw_ns, "/nonexistent/iptables"]).install()
    assert CHAIN not in _nat_table(gw_ns)


def test_an_empty_iptables_command_is_refused() -> None:
    with pytest.raises(NatError, match="no iptables command"):
        IptablesNat(PortBlocks("10.46.1.0/24", "192.0.2.1"), "up0", "")


def test_interface_address_reads_the_uplink() -> None:
    assert interface_address("lo") == "127.0.0.1"
    with pytest.raises(NatError, match="no IPv4 address on nosuchif0"):
        interface_address("nosuchif0")


def nat_agent(
    tmp_path: Path, iptables: str, **nat: Any
) -> tuple[Agent, SimulatedGateway, RecordingLink]:
    """An agent (simulated gateway, recording link) with port blocks of 10.46.1.0/24 behind
    192.0.2.1 on ``up0``, its rules run by ``iptables``; the rules installed."""
    cfg = AgentConfig(
        ap_id=AP,
        command_key=KEY,
        state_dir=str(tmp_path),
        nat_interface="up0",
        nat_subnet="10.46.1.0/24",
        nat_address="192.0.2.1",
        nat_iptables=iptables,
        **nat,
    )
    gw = SimulatedGateway()
    agent = Agent(cfg, gw, clock=lambda: NOW, persist_state=False)
    link = RecordingLink()
    agent.link = link  # type: ignore[assignment]
    agent._start_nat()
    return agent, gw, link


def test_the_agent_installs_reports_and_removes_the_blocks(gw_ns: str, tmp_path: Path) -> None:
    """A real agent (simulated gateway, real iptables in a namespace): the rules are in
    place once it starts, its authorised clients and acct entries carry their block, its
    health says NAT is up, and a clean shutdown removes the rules."""
    agent, gw, link = nat_agent(tmp_path, f"ip netns exec {gw_ns} iptables", nat_block_size=64)
    assert f"-A POSTROUTING -o up0 -j {CHAIN}" in _nat_table(gw_ns)
    gw.arrive("02:00:00:00:00:01", "10.46.1.100")
    gw.authorize("02:00:00:00:00:01", 60, 0, 0, 0, 0)
    agent.poll()
    agent.publish_acct()
    agent.publish_health()
    agent.pump()
    got = [decode(n, p, keys)[1] for n, p, _r in link.published]
    want = PortBlocks("10.46.1.0/24", "192.0.2.1", block_size=64).block_for("10.46.1.100")
    assert want is not None
    (auth,) = [e for m in got for e in getattr(m, "events", []) if e.event == "authorized"]
    (entry,) = [e for m in got for e in getattr(m, "entries", [])]
    for item in (auth, entry):
        assert (item.public_ip, item.port_start, item.port_end) == (
            "192.0.2.1",
            want.port_start,
            want.port_end,
        )
    (health,) = [m for m in got if hasattr(m, "nat_ok")]
    assert health.nat_ok is True
    link.connected.clear()  # no goodbye status to wait for
    agent.shutdown()
    assert CHAIN not in _nat_table(gw_ns)
    assert agent.counters["nat_install_failed"] == 0


def test_an_agent_whose_rules_fail_reports_no_block(gw_ns: str, tmp_path: Path) -> None:
    """No rules, no claim: sessions go without a block, the failure is counted and logged,
    and health says NAT is down."""
    agent, gw, link = nat_agent(tmp_path, f"ip netns exec {gw_ns} /nonexistent/iptables")
    gw.arrive("02:00:00:00:00:01", "10.46.1.100")
    gw.authorize("02:00:00:00:00:01", 60, 0, 0, 0, 0)
    agent.poll()
    agent.publish_health()
    agent.pump()
    got = [decode(n, p, keys)[1] for n, p, _r in link.published]
    events = [e for m in got for e in getattr(m, "events", [])]
    assert events and all(e.public_ip is None for e in events)
    (health,) = [m for m in got if hasattr(m, "nat_ok")]
    assert health.nat_ok is False
    assert agent.counters["nat_install_failed"] == 2  # at start, then at the health report
    link.connected.clear()  # no goodbye status to wait for
    agent.shutdown()


# ------------------------------------------------------------------------ real traffic

_SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("198.51.100.2", 8080))
srv.listen(8)
print("ready", flush=True)
for _ in range(int(sys.argv[1])):
    conn, peer = srv.accept()
    print(peer[0], peer[1], flush=True)
    conn.close()
"""


@pytest.fixture
def three_ns() -> Iterator[dict[str, str]]:
    """client (10.46.1.2, 10.46.1.3) -- gw (uplink 198.51.100.1) -- server (198.51.100.2)."""
    _root_with("ip", "iptables", "iptables-restore")
    tag = uuid.uuid4().hex[:6]
    names = {k: f"borne-nat-{tag}-{k}" for k in ("cl", "gw", "srv")}
    for ns in names.values():
        _ip("netns", "add", ns)
    try:
        cl, gw, srv = names["cl"], names["gw"], names["srv"]
        _ip(
            "link",
            "add",
            f"nc{tag}",
            "netns",
            cl,
            "type",
            "veth",
            "peer",
            "name",
            f"ng{tag}",
            "netns",
            gw,
        )
        _ip(
            "link",
            "add",
            f"nu{tag}",
            "netns",
            gw,
            "type",
            "veth",
            "peer",
            "name",
            f"ns{tag}",
            "netns",
            srv,
        )
        _ip("-n", cl, "addr", "add", "10.46.1.2/24", "dev", f"nc{tag}")
        _ip("-n", cl, "addr", "add", "10.46.1.3/24", "dev", f"nc{tag}")
        _ip("-n", gw, "addr", "add", "10.46.1.1/24", "dev", f"ng{tag}")
        _ip("-n", gw, "addr", "add", "198.51.100.1/24", "dev", f"nu{tag}")
        _ip("-n", srv, "addr", "add", "198.51.100.2/24", "dev", f"ns{tag}")
        for ns, dev in ((cl, f"nc{tag}"), (gw, f"ng{tag}"), (gw, f"nu{tag}"), (srv, f"ns{tag}")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", cl, "route", "add", "default", "via", "10.46.1.1")
        subprocess.run(
            ["ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True, timeout=30,
        )  # fmt: skip
        # No route back to the client subnet: only translated packets can be answered.
        names["uplink"] = f"nu{tag}"
        yield names
    finally:
        for ns in names.values():
            if ns.startswith("borne-nat-"):
                subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def test_connections_leave_with_their_clients_block(three_ns: dict[str, str]) -> None:
    """Two private addresses of one client subnet each open TCP connections to a server
    beyond the gateway: the server sees the gateway's address and a source port inside
    the block of the address that connected, never the other's."""
    sources = ("10.46.1.2", "10.46.1.3", "10.46.1.2", "10.46.1.3")
    pb = PortBlocks("10.46.1.0/24", "198.51.100.1")
    nat = IptablesNat(pb, three_ns["uplink"], ["ip", "netns", "exec", three_ns["gw"], "iptables"])
    nat.install()
    server = subprocess.Popen(
        ["ip", "netns", "exec", three_ns["srv"], sys.executable, "-c", _SERVER, "4"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        for src in sources:
            client = (
                "import socket; s = socket.create_connection(('198.51.100.2', 8080), 5, "
                f"source_address=('{src}', 0)); s.close()"
            )
            subprocess.run(
                ["ip", "netns", "exec", three_ns["cl"], sys.executable, "-c", client],
                check=True, timeout=30,
            )  # fmt: skip
        seen = [server.stdout.readline().split() for _ in range(4)]
    finally:
        server.kill()
        server.wait(10)
        nat.remove()
    for (ip, port), src in zip(seen, sources, strict=True):
        block = pb.block_for(src)
        assert block is not None
        assert ip == "198.51.100.1"
        assert block.port_start <= int(port) <= block.port_end, (src, port, block)
