"""The agent's configuration file: TOML parsed with the standard library.

The agent runs on an access point's Python, so this is not pydantic: a small checker
that reports every problem with its field path, in the same shape as the controller's
``borne config check``. It reads no environment variable and does no IO but reading
the file it is given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from agents._nat import plan_problems
from agents.contract import AP_ID_RE

__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "load_agent_config",
    "parse_agent_config",
    "write_credentials",
]


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
    # apply_config (agents/_gwconf.py): openNDS's configuration file, whose managed block
    # the agent rewrites (empty: the AP refuses apply_config), and the command that
    # restarts openNDS after a change (empty: gateway_restart_cmd); dnsmasq's fragment
    # (DHCP option 114, walled-garden ipset) and its restart command.
    opennds_config: str = ""
    opennds_restart_cmd: str = ""
    dnsmasq_conf: str = ""
    dnsmasq_restart_cmd: str = ""
    # How apply_config writes: "uci" (OpenWrt's /etc/config/opennds and /etc/config/dhcp,
    # agents/_uci.py), "files" (the two files above), "off", or "auto": uci when /sbin/uci
    # exists. uci_command: the uci program; uci_dhcp_section: the DHCP section that gets
    # option 114 (empty: the one serving openNDS's gatewayinterface).
    gateway_config: str = "auto"
    uci_command: str = "uci"
    uci_dhcp_section: str = ""
    # DHCP view without a lease file: listen to DHCP on this LAN interface (needs scapy,
    # agents/_dhcp_sniff.py); empty: no sniffer.
    dhcp_sniff_interface: str = ""
    # NAT port blocks (agents/_nat.py): off unless nat_interface and nat_subnet are set.
    nat_interface: str = ""
    nat_subnet: str = ""
    nat_address: str = ""
    nat_public_ip: str = ""
    nat_port_first: int = 1024
    nat_port_last: int = 65535
    nat_block_size: int = 0
    nat_iptables: str = "iptables"


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
    "opennds_config": (str,),
    "opennds_restart_cmd": (str,),
    "dnsmasq_conf": (str,),
    "dnsmasq_restart_cmd": (str,),
    "gateway_config": (str,),
    "uci_command": (str,),
    "uci_dhcp_section": (str,),
    "dhcp_sniff_interface": (str,),
    "nat_interface": (str,),
    "nat_subnet": (str,),
    "nat_address": (str,),
    "nat_public_ip": (str,),
    "nat_port_first": (int,),
    "nat_port_last": (int,),
    "nat_block_size": (int,),
    "nat_iptables": (str,),
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
    "nat_port_first": (1, 65535),
    "nat_port_last": (1, 65535),
    "nat_block_size": (0, 65535),
}
_GATEWAYS = ("opennds", "simulated")
_GATEWAY_CONFIGS = ("auto", "uci", "files", "off")
_UCI_NAME_RE = re.compile(r"\A(@[a-z_]+\[\d+\]|[A-Za-z0-9_]+)\Z")


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
    if values.get("gateway_config", "auto") not in _GATEWAY_CONFIGS:
        problems.append(("agent.gateway_config", f"must be one of {', '.join(_GATEWAY_CONFIGS)}"))
    if values.get("uci_dhcp_section") and not _UCI_NAME_RE.match(values["uci_dhcp_section"]):
        problems.append(("agent.uci_dhcp_section", "a UCI section name (lan, @dhcp[0])"))
    if "mqtt_password" in values and "mqtt_username" not in values:
        problems.append(("agent.mqtt_password", "a password is set without mqtt_username"))
    problems += plan_problems(values)
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


_CREDENTIALS = ("command_key", "mqtt_username", "mqtt_password")
_TABLE_RE = re.compile(r"^\s*\[([^\]]*)\]\s*(#.*)?$")


def _with_credentials(text: str, values: dict[str, str]) -> str:
    """``text`` with the ``[agent]`` credential lines replaced (or added after the header)."""
    lines = text.splitlines()
    table = None
    header = None
    missing = dict(values)
    for i, line in enumerate(lines):
        m = _TABLE_RE.match(line)
        if m:
            table = m.group(1).strip()
            header = i if table == "agent" else header
            continue
        if table != "agent":
            continue
        name = line.split("=", 1)[0].strip()
        if "=" in line and name in missing:
            lines[i] = f"{name} = {json.dumps(missing.pop(name))}"
    if header is None:
        raise AgentConfigError([("agent", "the [agent] table is missing")])
    extra = [f"{name} = {json.dumps(value)}" for name, value in missing.items()]
    lines[header + 1 : header + 1] = extra
    return "\n".join(lines) + "\n"


def write_credentials(
    path: Path, command_key: str, mqtt_username: str, mqtt_password: str
) -> AgentConfig:
    """Replace the credentials in the configuration file, atomically and durably.

    Every other line (comments included) is kept. The new text is checked before it
    replaces the file (temporary file in the same directory, ``fsync``, ``rename``,
    ``fsync`` of the directory), with the file's own permissions: a power cut leaves
    either the old file or the new one.

    Returns:
        The new configuration.

    Raises:
        AgentConfigError: the file cannot be read or written, or the result is invalid.
    """
    values = {"command_key": command_key, "mqtt_username": mqtt_username}
    values["mqtt_password"] = mqtt_password
    try:
        text = path.read_text("utf-8")
        mode = path.stat().st_mode & 0o7777
    except OSError as exc:
        raise AgentConfigError([("(file)", f"cannot read {path}: {exc.strerror}")]) from exc
    new_text = _with_credentials(text, values)
    try:
        config = parse_agent_config(tomllib.loads(new_text))
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError([("(file)", f"rewritten file is not TOML: {exc}")]) from exc
    if any(getattr(config, k) != v for k, v in values.items()):
        raise AgentConfigError([("(file)", "credentials not taken by the rewritten file")])
    tmp = path.with_name(f".{path.name}.new")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise AgentConfigError([("(file)", f"cannot write {path}: {exc.strerror}")]) from exc
    return config
