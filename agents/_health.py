"""Readings for the agent's ``health`` report: interface counters, temperature.

Parsers take the text of ``/proc`` and ``/sys`` files and return plain values; the
readers around them return None (never raise) when a board lacks the file, since the
agent runs on very different hardware. Standard library only.
"""

from __future__ import annotations

import glob
from typing import Final

__all__ = ["MAX_INTERFACES", "parse_net_dev", "read_interfaces", "read_temperature"]

# A router has a handful of interfaces; bounding the list bounds the message.
MAX_INTERFACES: Final = 16


def parse_net_dev(text: str) -> dict[str, list[int]]:
    """``/proc/net/dev`` → ``{interface: [rx_bytes, tx_bytes]}`` (loopback left out)."""
    out: dict[str, list[int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 9:
            continue
        name = name.strip()
        if name == "lo" or not name:
            continue
        try:
            out[name[:32]] = [int(fields[0]), int(fields[8])]
        except ValueError:
            continue
        if len(out) >= MAX_INTERFACES:
            break
    return out


def read_interfaces(path: str = "/proc/net/dev") -> dict[str, list[int]] | None:
    """Byte counters of the interfaces, or None when unreadable."""
    try:
        with open(path) as fh:
            return parse_net_dev(fh.read(65536))
    except OSError:
        return None


def read_temperature(pattern: str = "/sys/class/thermal/thermal_zone*/temp") -> float | None:
    """The hottest thermal zone in °C (millidegrees in sysfs), or None without sensor."""
    hottest: float | None = None
    for path in glob.glob(pattern)[:32]:
        try:
            with open(path) as fh:
                value = int(fh.read(32).strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if -40.0 <= value <= 150.0:
            hottest = value if hottest is None else max(hottest, value)
    return hottest
