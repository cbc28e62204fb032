"""apply_config rendering: openNDS's managed block, the dnsmasq fragment, checks."""

from __future__ import annotations

import dataclasses

import pytest

from agents._gwconf import (
    BEGIN_MARK,
    END_MARK,
    MIN_IDLE_MINUTES,
    config_problems,
    dnsmasq_fragment,
    merge_block,
    opennds_block,
)
from agents.contract import ApplyConfigArgs

ARGS = ApplyConfigArgs(
    version=3,
    session_minutes=90,
    up_kbps=2000,
    down_kbps=8000,
    up_quota_kb=100_000,
    down_quota_kb=500_000,
    walled_garden=["10.46.0.2", "Tourisme-Lot.example", "192.0.2.0/24"],
    walled_garden_ports=[443],
    fas_remote_ip="10.46.2.1",
    fas_port=8080,
    fas_path="/fas/",
    capport_url="https://portail.example/capport/api/ap-46201-01",
    idle_timeout_minutes=15,
)


def test_the_block_sets_defaults_fas_walled_garden_and_turns_openndss_option_114_off() -> None:
    block = opennds_block(ARGS).splitlines()
    assert block[0] == BEGIN_MARK and block[-1] == END_MARK
    for line in (
        "sessiontimeout 90",
        "authidletimeout 15",
        "uploadrate 2000",
        "downloadrate 8000",
        "uploadquota 100000",
        "downloadquota 500000",
        "dhcp_default_url_enable 0",
        "fasremoteip 10.46.2.1",
        "fasport 8080",
        "faspath /fas/",
        "fas_secure_enabled 1",
        "walledgarden_fqdn_list tourisme-lot.example",
        "walledgarden_port_list 443",
        "    FirewallRule allow tcp port 443 to 10.46.0.2",
        "    FirewallRule allow tcp port 443 to 192.0.2.0/24",
    ):
        assert line in block, line
    assert "fasremotefqdn" not in "\n".join(block)
    # Without FAS settings the AP's own FAS lines, level included, stay in force.
    assert "fas_secure_enabled" not in opennds_block(ApplyConfigArgs(version=1))
    # No version number in the file: a new version with the same settings changes nothing.
    assert opennds_block(dataclasses.replace(ARGS, version=4)) == opennds_block(ARGS)


def test_without_an_idle_timeout_openndss_own_stays() -> None:
    """0, or a command from a controller that does not send it: no authidletimeout line,
    so the operator's own (or openNDS's 120 minutes) stays in force."""
    block = opennds_block(dataclasses.replace(ARGS, idle_timeout_minutes=0))
    assert "idletimeout" not in block
    merged = merge_block("GatewayInterface br-lan\nauthidletimeout 45\n", block)
    assert merged.count("authidletimeout") == 1 and "authidletimeout 45" in merged


def test_without_ports_the_walled_garden_opens_http_and_https() -> None:
    block = opennds_block(dataclasses.replace(ARGS, walled_garden_ports=[]))
    assert "FirewallRule allow tcp port 80 to 10.46.0.2" in block
    assert "FirewallRule allow tcp port 443 to 10.46.0.2" in block
    assert "walledgarden_port_list 80 443" in block


def test_merging_keeps_the_operators_lines_and_replaces_only_the_block() -> None:
    original = "GatewayInterface br-lan\nsessiontimeout 1440\n"
    once = merge_block(original, opennds_block(ARGS))
    assert once.startswith(original)
    assert once.endswith(opennds_block(ARGS))
    newer = dataclasses.replace(ARGS, session_minutes=30)
    twice = merge_block(once, opennds_block(newer))
    assert twice.count(BEGIN_MARK) == 1 and twice.count(END_MARK) == 1
    assert "sessiontimeout 30" in twice and "sessiontimeout 90" not in twice
    assert twice.startswith(original)
    # Idempotent: merging the same block again gives the same bytes.
    assert merge_block(twice, opennds_block(newer)) == twice


def test_a_cut_block_is_dropped_and_written_anew() -> None:
    cut = f"GatewayInterface lan0\n{BEGIN_MARK}\nsessiontimeout 5\n"
    merged = merge_block(cut, opennds_block(ARGS))
    assert "sessiontimeout 5" not in merged and merged.startswith("GatewayInterface lan0\n")


def test_the_dnsmasq_fragment_sends_option_114_and_fills_the_walled_garden_ipset() -> None:
    lines = dnsmasq_fragment(ARGS).splitlines()
    assert 'dhcp-option-force=114,"https://portail.example/capport/api/ap-46201-01"' in lines
    assert "ipset=/tourisme-lot.example/walledgarden" in lines
    empty = dnsmasq_fragment(ApplyConfigArgs(version=1))
    assert "114" not in empty and "ipset" not in empty


def test_valid_settings_have_no_problem() -> None:
    assert config_problems(ARGS) == []
    assert config_problems(ApplyConfigArgs(version=1)) == []
    assert config_problems(dataclasses.replace(ARGS, idle_timeout_minutes=MIN_IDLE_MINUTES)) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": 0}, "version"),
        ({"walled_garden": ["evil\nFirewallRule allow all"]}, "walled_garden"),
        ({"walled_garden": ["host with space"]}, "walled_garden"),
        ({"walled_garden_ports": [0]}, "walled_garden_ports"),
        ({"fas_remote_ip": "portal.example"}, "fas_remote_ip"),
        ({"fas_remote_fqdn": "bad_host!"}, "fas_remote_fqdn"),
        ({"fas_path": "fas/\nfaskey x"}, "fas_path"),
        ({"capport_url": 'https://x.example/"\ndhcp-range=1'}, "capport_url"),
        ({"capport_url": "https://x.example/" + "a" * 260}, "capport_url"),
        ({"capport_url": "ftp://x.example/"}, "capport_url"),
        ({"session_minutes": 10**9}, "session_minutes"),
        # openNDS would not start: its checkinterval must be under half the idle timeout.
        ({"idle_timeout_minutes": 2}, "idle_timeout_minutes"),
        ({"idle_timeout_minutes": 10**9}, "idle_timeout_minutes"),
        ({"fas_port": 70000}, "fas_port"),
    ],
)
def test_settings_that_could_break_or_inject_into_the_files_are_refused(
    change: dict[str, object], problem: str
) -> None:
    found = config_problems(dataclasses.replace(ARGS, **change))  # type: ignore[arg-type]
    assert any(p.startswith(problem) for p in found), found
