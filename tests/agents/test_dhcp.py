"""DHCP view: dnsmasq leases become coarse categories; host names never leave the AP."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents._dhcp import CATEGORIES, category, parse_leases, read_leases
from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import parse_topic
from agents.gateway import SimulatedGateway
from controller.contract import decode
from tests.agents.test_contract import KEY, RecordingLink, keys

LEASES = """1790003600 02:00:00:00:00:01 10.46.1.100 iPhone-de-Marie 01:02:00:00:00:00:01
1790003600 02:00:00:00:00:02 10.46.1.101 * *
1790003600 02:00:00:00:00:03 10.46.1.102 DESKTOP-7QK2L3 *
garbage line
1790003600 not-a-mac 10.46.1.103 x *
"""


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("iPhone-de-Marie", "phone"),
        ("Galaxy-S23", "phone"),
        ("SM-A536B", "phone"),
        ("iPad-de-Jean", "tablet"),
        ("Galaxy-Tab-S8", "tablet"),
        ("MacBook-Pro", "computer"),
        ("DESKTOP-7QK2L3", "computer"),
        ("LAPTOP-ABC", "computer"),
        ("espressif", "other"),
        ("*", None),
        ("", None),
    ],
)
def test_host_names_map_to_coarse_categories(hostname: str, expected: str | None) -> None:
    """Known device names fall in phone/tablet/computer; unknown ones in other; none → None."""
    assert category(hostname) == expected
    assert expected is None or expected in CATEGORIES


def test_the_lease_file_is_parsed_and_host_names_dropped(tmp_path: Path) -> None:
    """Well-formed lines give leases by MAC with a category; bad lines are ignored."""
    leases = parse_leases(LEASES)
    assert sorted(leases) == ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"]
    first = leases["02:00:00:00:00:01"]
    assert (first.ip, first.expires, first.category) == ("10.46.1.100", 1790003600.0, "phone")
    assert "Marie" not in repr(leases)
    path = tmp_path / "dhcp.leases"
    path.write_text(LEASES)
    assert read_leases(str(path)) == leases
    assert read_leases(str(tmp_path / "missing")) is None


def test_seen_events_carry_the_category_and_validate(tmp_path: Path) -> None:
    """A client seen with a lease is published with its category, never its host name."""
    leases = tmp_path / "dhcp.leases"
    leases.write_text(LEASES)
    gw = SimulatedGateway()
    gw.arrive("02:00:00:00:00:01", "10.46.1.100")
    gw.arrive("02:00:00:00:00:02", "10.46.1.101")
    cfg = AgentConfig(
        ap_id="ap-46201-01", command_key=KEY, state_dir=str(tmp_path), dhcp_leases=str(leases)
    )
    agent = Agent(cfg, gw)
    link = RecordingLink()
    agent.link = link  # type: ignore[assignment]
    agent.poll()
    agent.pump()
    clients = [(n, p) for n, p, _ in link.published if parse_topic(n)[1] == "clients"]
    assert clients and all(b"Marie" not in p for _, p in clients)
    _kind, msg = decode(clients[0][0], clients[0][1], keys)
    cats = {e.mac: e.category for e in msg.events}  # type: ignore[union-attr]
    assert cats == {"02:00:00:00:00:01": "phone", "02:00:00:00:00:02": None}
