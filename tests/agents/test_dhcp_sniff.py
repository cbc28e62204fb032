"""The optional DHCP sniffer: leases from real DHCP traffic, coarse categories only."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agents._dhcp_sniff import (
    ACK,
    DISCOVER,
    RELEASE,
    REQUEST,
    DhcpLeaseTracker,
    DhcpSniffer,
    SnifferUnavailable,
    vendor_category,
)
from tests.testbed import Hotspot, wait_for

MAC = "02:00:00:00:00:01"
T0 = 1_790_000_000.0


def test_an_ack_makes_a_lease_with_the_category_the_client_announced() -> None:
    t = DhcpLeaseTracker()
    t.message(mtype=DISCOVER, mac=MAC, ip="0.0.0.0", now=T0, hostname="iPhone-de-Marie")
    t.message(mtype=REQUEST, mac=MAC, ip="0.0.0.0", now=T0, hostname="iPhone-de-Marie")
    t.message(mtype=ACK, mac=MAC.upper(), ip="10.46.1.100", now=T0 + 1, lease_s=600)
    (lease,) = t.leases(T0 + 2).values()
    assert (lease.mac, lease.ip, lease.expires, lease.category) == (
        MAC,
        "10.46.1.100",
        T0 + 601,
        "phone",
    )
    # The host name itself is nowhere in the tracker.
    assert "Marie" not in repr(vars(t))
    # Expired, the lease goes; a release takes it at once.
    assert t.leases(T0 + 602) == {}
    t.message(mtype=ACK, mac=MAC, ip="10.46.1.100", now=T0 + 700, lease_s=600)
    t.message(mtype=RELEASE, mac=MAC, ip="10.46.1.100", now=T0 + 701)
    assert t.leases(T0 + 702) == {}


def test_the_vendor_class_is_used_when_there_is_no_host_name() -> None:
    assert vendor_category("android-dhcp-13") == "phone"
    assert vendor_category("MSFT 5.0") == "computer"
    assert vendor_category("udhcp 1.35.0") == "other"
    assert vendor_category("") is None
    t = DhcpLeaseTracker()
    t.message(mtype=REQUEST, mac=MAC, ip="0.0.0.0", now=T0, vendor_class="MSFT 5.0")
    t.message(mtype=ACK, mac=MAC, ip="10.46.1.101", now=T0)
    assert t.leases(T0)[MAC].category == "computer"


def test_garbage_is_counted_and_memory_is_bounded() -> None:
    t = DhcpLeaseTracker()
    t.message(mtype=ACK, mac="not-a-mac", ip="10.46.1.1", now=T0)
    t.message(mtype=ACK, mac=MAC, ip="0.0.0.0", now=T0)
    t.message(mtype=99, mac=MAC, ip="10.46.1.1", now=T0)
    assert t.counters["ignored"] == 3 and t.leases(T0) == {}
    for i in range(5000):
        mac = "02:5b:" + ":".join(f"{i >> sh & 255:02x}" for sh in (24, 16, 8, 0))
        t.message(mtype=REQUEST, mac=mac, ip="0.0.0.0", now=T0, hostname="pc")
        t.message(mtype=ACK, mac=mac, ip="10.46.1.2", now=T0)
    assert len(t.leases(T0)) == 4096


def test_captured_packets_are_dissected_by_scapy() -> None:
    """Packets built and parsed back by scapy go through the sniffer's own handler."""
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    sniffer = DhcpSniffer("lo", clock=lambda: T0)
    chaddr = bytes.fromhex(MAC.replace(":", "")) + bytes(10)

    def packet(mtype: str, yiaddr: str, *opts: tuple[str, object]) -> object:
        raw = (
            Ether()
            / IP()
            / UDP(sport=68, dport=67)
            / BOOTP(chaddr=chaddr, yiaddr=yiaddr)
            / DHCP(options=[("message-type", mtype), *opts, "end"])
        )
        return Ether(bytes(raw))

    sniffer._packet(packet("request", "0.0.0.0", ("vendor_class_id", b"android-dhcp-13")))
    sniffer._packet(packet("ack", "10.46.1.150", ("lease_time", 120)))
    assert {m: (x.ip, x.expires, x.category) for m, x in sniffer.leases().items()} == {
        MAC: ("10.46.1.150", T0 + 120, "phone")
    }
    sniffer._packet(Ether() / IP() / UDP())  # not DHCP: counted, harmless
    assert sniffer.tracker.counters["ignored"] == 1


def test_without_scapy_the_sniffer_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scapy.layers.dhcp", None)
    with pytest.raises(SnifferUnavailable, match=r"scapy is not installed.*borne\[sniffer\]"):
        DhcpSniffer("lan0")


_SNIFF = """
import json, sys, time
from agents._dhcp_sniff import DhcpSniffer
s = DhcpSniffer("lan0")
s.start()
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    leases = {m: [x.ip, x.category] for m, x in s.leases().items()}
    print(json.dumps(leases), flush=True)
    time.sleep(0.2)
s.stop()
"""


def test_leases_from_real_dhcp_traffic(
    make_hotspot: Callable[..., Hotspot], tmp_path: Path
) -> None:
    """dnsmasq and busybox udhcpc in the testbed's namespaces: the sniffer in the AP's
    namespace sees the lease (phone, from the host name) and its release."""
    hs = make_hotspot(connect_client=False, workdir=tmp_path / "hotspot")
    wd = Path(hs.workdir or "")
    script = wd / "sniff.py"
    script.write_text(_SNIFF)
    root = str(Path(__file__).resolve().parents[2])
    hs.start_in("ap", sys.executable, str(script), "60", name="sniffer", cwd=root,
                env={"PYTHONPATH": root, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
    log = wd / "sniffer.log"
    wait_for(lambda: "ready" in log.read_text(), timeout=20, message="sniffer ready")

    def last() -> dict[str, list[str]]:
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
        return dict(json.loads(lines[-1])) if lines else {}

    # A phone joins (busybox udhcpc, staying in the foreground) then leaves (SIGUSR2:
    # it releases its lease).
    client = hs.start_in(
        "cl", "busybox", "udhcpc", "-i", "cl0", "-f", "-t", "10", "-T", "1", "-A", "1",
        "-x", "hostname:iPhone-de-Marie", "-s", str(wd / "udhcpc.sh"), name="udhcpc",
    )  # fmt: skip
    ip = wait_for(lambda: hs._ipv4_of("cl", "cl0"), timeout=20, message="client address")
    mac = hs.client_mac or ""
    wait_for(lambda: last().get(mac) == [ip, "phone"], timeout=10, message="lease seen")
    os.kill(client.pid, signal.SIGUSR2)
    wait_for(lambda: mac not in last(), timeout=10, message="lease released")
    hs.stop(client)
    assert "Marie" not in log.read_text()


def test_an_agent_configured_for_the_sniffer_runs_on_without_scapy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agents.agent import Agent
    from agents.config import AgentConfig
    from agents.gateway import SimulatedGateway

    monkeypatch.setitem(sys.modules, "scapy.sendrecv", None)
    cfg = AgentConfig(
        ap_id="ap-46201-09",
        command_key="sniff-test-key-0123456789",
        dhcp_sniff_interface="lan0",
        state_dir=str(tmp_path),
    )
    agent = Agent(cfg, SimulatedGateway(), persist_state=False)
    agent._start_sniffer()
    assert agent.sniffer is None and agent.counters["dhcp_sniffer_unavailable"] == 1
