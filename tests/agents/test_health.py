"""Health readings: interface counters and temperature, None where a board has none."""

from __future__ import annotations

from pathlib import Path

from agents._health import MAX_INTERFACES, parse_net_dev, read_interfaces, read_temperature

NET_DEV = """Inter-|   Receive    |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs ...
    lo: 73315674  444658    0    0    0     0   0   0 73315674  444658    0    0    0     0  0  0
  eth0: 18446744073709551615 10 0 0 0 0 0 0 4096 7 0 0 0 0 0 0
br-lan:1200 3 0 0 0 0 0 0 800 2 0 0 0 0 0 0
 broken: x y
"""


def test_net_dev_gives_rx_tx_bytes_without_loopback() -> None:
    """Each interface but lo gives [rx bytes, tx bytes], 64-bit values kept whole."""
    assert parse_net_dev(NET_DEV) == {"eth0": [2**64 - 1, 4096], "br-lan": [1200, 800]}


def test_net_dev_is_bounded() -> None:
    """A box with hundreds of interfaces reports at most MAX_INTERFACES of them."""
    head = "a|b\nc|d\n"
    many = "".join(f"v{i}: 1 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0\n" for i in range(100))
    assert len(parse_net_dev(head + many)) == MAX_INTERFACES


def test_this_machines_interfaces_are_read() -> None:
    """On Linux /proc/net/dev is there; a missing file gives None, not an error."""
    assert isinstance(read_interfaces(), dict)
    assert read_interfaces("/nonexistent/net/dev") is None


def test_temperature_is_the_hottest_zone_in_celsius(tmp_path: Path) -> None:
    """Millidegrees become degrees; absurd or unreadable values are ignored; none → None."""
    for name, text in [("a", "41500\n"), ("b", "57250\n"), ("c", "999999\n"), ("d", "n/a")]:
        zone = tmp_path / f"thermal_zone{name}"
        zone.mkdir()
        (zone / "temp").write_text(text)
    assert read_temperature(str(tmp_path / "thermal_zone*" / "temp")) == 57.25
    assert read_temperature(str(tmp_path / "none*" / "temp")) is None
