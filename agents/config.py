"""The agent's configuration file: TOML parsed with the standard library.

The agent runs on an access point's Python, so this is not pydantic: a small checker
that reports every problem with its field path, in the same shape as the controller's
``borne config check``. It reads no environment variable and does no IO but reading
the file it is given.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from agents.contract import AP_ID_RE

__all__ = ["AgentConfig", "AgentConfigError", "load_agent_config", "parse_agent_config"]


class AgentConfigError(Exception):
    """The agent configuration cannot be used; ``problems`` lists (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything one agent needs to know."""

    ap_id: str
    command_key: str = dataclasses.field(repr=False)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = dataclasses.field(default=None, repr=False)
    mqtt_tls: bool = False
    mqtt_ca_file: str | None = None
    keepalive_s: int = 30
    poll_interval_s: float = 5.0
    acct_interval_s: int = 60
    health_interval_s: int = 60
    gateway: str = "opennds"
    ndsctl: str = "ndsctl"
    state_dir: str = "/var/lib/borne-agent"
    spool_max_bytes: int = 8 * 1024 * 1024
    spool_max_age_s: int = 7 * 86400
    simulated_clients: int = 0
    # Watchdog: after this many failed reads in a row, run gateway_restart_cmd (if set),
    # at most once per watchdog_cooldown_s. OpenWrt: "/etc/init.d/opennds restart".
    gateway_restart_cmd: str = ""
    watchdog_failures: int = 3
    watchdog_cooldown_s: int = 300
    # dnsmasq lease file ("/tmp/dhcp.leases" with openNDS); empty: no DHCP view.
    dhcp_leases: str = ""


_TYPES: dict[str, tuple[type, ...]] = {
    "ap_id": (str,),
    "command_key": (str,),
    "mqtt_host": (str,),
    "mqtt_port": (int,),
    "mqtt_username": (str,),
    "mqtt_password": (str,),
    "mqtt_tls": (bool,),
    "mqtt_ca_file": (str,),
    "keepalive_s": (int,),
    "poll_interval_s": (int, float),
    "acct_interval_s": (int,),
    "health_interval_s": (int,),
    "gateway": (str,),
    "ndsctl": (str,),
    "state_dir": (str,),
    "spool_max_bytes": (int,),
    "spool_max_age_s": (int,),
    "simulated_clients": (int,),
    "gateway_restart_cmd": (str,),
    "watchdog_failures": (int,),
    "watchdog_cooldown_s": (int,),
    "dhcp_leases": (str,),
}
_RANGES: dict[str, tuple[float, float]] = {
    "mqtt_port": (1, 65535),
    "keepalive_s": (5, 3600),
    "poll_interval_s": (0.2, 600),
    "acct_interval_s": (1, 3600),
    "health_interval_s": (1, 3600),
    # 64 KiB: one full acct batch; 1 GiB: beyond any AP's flash.
    "spool_max_bytes": (64 * 1024, 1024**3),
    "spool_max_age_s": (60, 90 * 86400),
    "simulated_clients": (0, 5000),
    "watchdog_failures": (1, 1000),
    "watchdog_cooldown_s": (0, 86400),
}
_GATEWAYS = ("opennds", "simulated")


def parse_agent_config(data: dict[str, Any]) -> AgentConfig:
    """Check the ``[agent]`` table of a parsed TOML document.

    Raises:
        AgentConfigError: with every problem found.
    """
    problems: list[tuple[str, str]] = []
    table = data.get("agent")
    if not isinstance(table, dict):
        raise AgentConfigError([("agent", "the [agent] table is missing")])
    for key in data:
        if key != "agent":
            problems.append((key, "unknown section (an agent file holds only [agent])"))
    values: dict[str, Any] = {}
    for key, value in table.items():
        path = f"agent.{key}"
        if key not in _TYPES:
            problems.append((path, "unknown setting (check its spelling)"))
            continue
        types = _TYPES[key]
        if isinstance(value, bool) and bool not in types:
            problems.append((path, f"expected {types[0].__name__}, got a boolean"))
            continue
        if not isinstance(value, types):
            problems.append((path, f"expected {types[0].__name__}, got {type(value).__name__}"))
            continue
        if key in _RANGES and isinstance(value, int | float):
            lo, hi = _RANGES[key]
            if not lo <= value <= hi:
                problems.append((path, f"must be between {lo:g} and {hi:g}"))
                continue
        values[key] = value
    for required in ("ap_id", "command_key"):
        if required not in table:
            problems.append((f"agent.{required}", "required setting is missing"))
    if "ap_id" in values and not AP_ID_RE.match(values["ap_id"]):
        problems.append(
            ("agent.ap_id", "lower-case letters, digits, '-' or '_', at most 63 characters")
        )
    if "command_key" in values and len(values["command_key"]) < 16:
        problems.append(("agent.command_key", "too short: at least 16 characters"))
    if "gateway" in values and values["gateway"] not in _GATEWAYS:
        problems.append(("agent.gateway", f"must be one of {', '.join(_GATEWAYS)}"))
    if "mqtt_password" in values and "mqtt_username" not in values:
        problems.append(("agent.mqtt_password", "a password is set without mqtt_username"))
    if problems:
        raise AgentConfigError(problems)
    return AgentConfig(**values)


def load_agent_config(path: Path) -> AgentConfig:
    """Read and check an agent configuration file.

    Raises:
        AgentConfigError: the file is missing, not TOML, or has problems.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise AgentConfigError([("(file)", f"cannot read {path}: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError([("(file)", f"not valid TOML: {exc}")]) from exc
    return parse_agent_config(data)
