"""Deterministic SNAT port blocks on the access point (RFC 7422 style).

Every address of the client subnet gets its own block of source ports on the gateway's
uplink address, computed from its position in the subnet alone::

    index      = host offset in the subnet - 1   (10.46.1.1 in 10.46.1.0/24 -> 0)
    port_start = port_first + index * block_size
    port_end   = port_start + block_size - 1

so that "public IP X, source port P" names one private address, and with the DHCP lease
and the session, one device at one time. The whole subnet is installed once, when the
agent starts, as one ``iptables-restore`` of a chain of our own (``BORNE_NAT``, in the
``nat`` table, jumped to from ``POSTROUTING`` for the uplink only), and removed at a clean
shutdown; nothing changes when a client comes or goes, so nothing can lag behind a
session. Each session the agent reports carries its block (``public_ip``,
``port_start``, ``port_end``) and the legal log keeps it.

:class:`PortBlocks` is the arithmetic (pure); :class:`IptablesNat` installs and removes
the rules (subprocess). Standard library only: it runs on the AP's Python.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import logging
import shlex
import socket
import struct
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from agents.config import AgentConfig

__all__ = [
    "CHAIN",
    "MIN_BLOCK",
    "IptablesNat",
    "NatError",
    "PortBlock",
    "PortBlocks",
    "from_config",
    "interface_address",
    "plan_problems",
    "with_blocks",
]

logger = logging.getLogger(__name__)

CHAIN: Final = "BORNE_NAT"
# Below this a phone runs out of ports (a page opens tens of connections at once).
MIN_BLOCK: Final = 64
# SIOCGIFADDR (linux/sockios.h): the IPv4 address of an interface.
_SIOCGIFADDR: Final = 0x8915
_PROTOCOLS_WITH_PORTS: Final = ("tcp", "udp")

T = TypeVar("T")


class NatError(Exception):
    """The NAT rules could not be installed or removed, or the plan is impossible."""


@dataclasses.dataclass(frozen=True)
class PortBlock:
    """The public address and source-port block one private address is translated to."""

    public_ip: str
    port_start: int
    port_end: int


class PortBlocks:
    """The deterministic mapping of a client subnet to port blocks of one SNAT address.

    Args:
        subnet: the client subnet (``10.46.1.0/24``); its network and broadcast
            addresses get no block.
        snat_address: the uplink address the rules translate to.
        public_ip: the address the internet sees (recorded in the legal log); the SNAT
            address by default. Set it when equipment upstream translates the AP's
            address one to one, keeping ports.
        port_first, port_last: the source ports to share (default 1024-65535: the
            well-known ports are left alone).
        block_size: ports per client; 0: the largest that fits the subnet.

    Raises:
        NatError: the subnet does not fit (too many clients for the ports), or a value
            is malformed.
    """

    def __init__(
        self,
        subnet: str,
        snat_address: str,
        public_ip: str = "",
        port_first: int = 1024,
        port_last: int = 65535,
        block_size: int = 0,
    ) -> None:
        try:
            self.subnet = ipaddress.IPv4Network(subnet, strict=True)
            self.snat_address = str(ipaddress.IPv4Address(snat_address))
            public = ipaddress.ip_address(public_ip) if public_ip else None
        except ValueError as exc:
            raise NatError(str(exc)) from exc
        self.public_ip = str(public) if public is not None else self.snat_address
        if not 1 <= port_first <= port_last <= 65535:
            raise NatError(f"port range {port_first}-{port_last} is not within 1-65535")
        self.port_first = port_first
        self.port_last = port_last
        # /31 and /32 have no network nor broadcast address (RFC 3021).
        self._skip = 1 if self.subnet.prefixlen < 31 else 0
        self.clients = self.subnet.num_addresses - 2 * self._skip
        ports = port_last - port_first + 1
        size = block_size or ports // self.clients
        if size < MIN_BLOCK:
            raise NatError(
                f"{self.clients} clients of {self.subnet} would get {size} ports each "
                f"(at least {MIN_BLOCK}): use a smaller subnet or a wider port range"
            )
        if size * self.clients > ports:
            raise NatError(
                f"{self.clients} blocks of {size} ports need {size * self.clients} ports, "
                f"{port_first}-{port_last} has {ports}: use a smaller block or subnet"
            )
        self.block_size = size

    @property
    def capacity(self) -> int:
        """How many blocks of ``block_size`` the port range holds on one public address."""
        return (self.port_last - self.port_first + 1) // self.block_size

    def _index(self, ip: str) -> int | None:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return None
        if addr not in self.subnet:
            return None
        index = int(addr) - int(self.subnet.network_address) - self._skip
        return index if 0 <= index < self.clients else None

    def block_for(self, ip: str) -> PortBlock | None:
        """The block of a private address; None outside the subnet (or its network and
        broadcast addresses)."""
        index = self._index(ip)
        if index is None:
            return None
        start = self.port_first + index * self.block_size
        return PortBlock(self.public_ip, start, start + self.block_size - 1)

    def blocks(self) -> list[tuple[str, PortBlock]]:
        """Every client address of the subnet with its block, in address order."""
        first = int(self.subnet.network_address) + self._skip
        out = []
        for index in range(self.clients):
            ip = str(ipaddress.IPv4Address(first + index))
            block = self.block_for(ip)
            assert block is not None
            out.append((ip, block))
        return out

    def restore_script(self) -> str:
        """The ``iptables-restore --noflush`` input that (re)fills our chain.

        TCP and UDP get the client's port block; other protocols (ICMP...) are only
        translated to the address, as ports do not exist for them.
        """
        lines = ["*nat", f":{CHAIN} - [0:0]"]
        for ip, b in self.blocks():
            for proto in _PROTOCOLS_WITH_PORTS:
                lines.append(
                    f"-A {CHAIN} -s {ip}/32 -p {proto} -j SNAT "
                    f"--to-source {self.snat_address}:{b.port_start}-{b.port_end}"
                )
            lines.append(f"-A {CHAIN} -s {ip}/32 -j SNAT --to-source {self.snat_address}")
        lines += ["COMMIT", ""]
        return "\n".join(lines)


def plan_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Configuration problems of the ``nat_*`` settings (field path, message), without
    touching the system (the interface address is read only when the agent starts)."""
    iface = values.get("nat_interface", "")
    subnet = values.get("nat_subnet", "")
    if not iface and not subnet:
        return []
    if not iface or not subnet:
        missing = "nat_subnet" if iface else "nat_interface"
        return [(f"agent.{missing}", "NAT needs both nat_interface and nat_subnet")]
    if len(iface) > 15 or not iface.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return [("agent.nat_interface", "not an interface name")]
    if "nat_iptables" in values and not values["nat_iptables"].strip():
        return [("agent.nat_iptables", "empty: the iptables command is needed")]
    try:
        PortBlocks(
            subnet,
            values.get("nat_address") or "192.0.2.1",
            values.get("nat_public_ip", ""),
            values.get("nat_port_first", 1024),
            values.get("nat_port_last", 65535),
            values.get("nat_block_size", 0),
        )
    except NatError as exc:
        return [("agent.nat_subnet", str(exc))]
    return []


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface (Linux ``SIOCGIFADDR``).

    Raises:
        NatError: no such interface, or it has no IPv4 address.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            raw = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError as exc:
            raise NatError(f"no IPv4 address on {name}: {exc.strerror}") from exc
    return socket.inet_ntoa(raw[20:24])


class IptablesNat:
    """Installs the port blocks as iptables SNAT rules, and removes them.

    Args:
        blocks: the mapping.
        interface: the uplink; only packets leaving through it are translated.
        iptables: the ``iptables`` command (a string split like a shell, or a list);
            ``iptables-restore`` is found beside it (same name + ``-restore``).
        timeout_s: per command.
    """

    def __init__(
        self,
        blocks: PortBlocks,
        interface: str,
        iptables: str | Sequence[str] = "iptables",
        timeout_s: float = 30.0,
    ) -> None:
        self.blocks = blocks
        self.interface = interface
        argv = shlex.split(iptables) if isinstance(iptables, str) else list(iptables)
        if not argv:
            raise NatError("no iptables command")
        self._iptables = argv
        self._restore = [*argv[:-1], argv[-1] + "-restore"]
        self._timeout = timeout_s
        self.installed = False

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self._timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NatError(f"{shlex.join(argv)[:200]}: {exc}") from exc

    def _jump(self, op: str) -> list[str]:
        return (
            [*self._iptables, "-w", "-t", "nat", op, "POSTROUTING"]
            + (["1"] if op == "-I" else [])
            + ["-o", self.interface, "-j", CHAIN]
        )

    def install(self) -> None:
        """Fill our chain with every block (atomically) and jump to it from POSTROUTING,
        first, once. Idempotent: a restart after a crash replaces the rules.

        Raises:
            NatError: iptables refused (no root, no nat table, legacy/nft mismatch...).
        """
        res = self._run([*self._restore, "-w", "--noflush"], stdin=self.blocks.restore_script())
        if res.returncode != 0:
            raise NatError(f"iptables-restore exited {res.returncode}: {res.stderr.strip()[:300]}")
        if self._run(self._jump("-C")).returncode != 0:
            res = self._run(self._jump("-I"))
            if res.returncode != 0:
                raise NatError(f"iptables -I POSTROUTING: {res.stderr.strip()[:300]}")
        self.installed = True
        logger.info(
            "NAT: %d port blocks of %d ports on %s (%s) for %s",
            self.blocks.clients,
            self.blocks.block_size,
            self.blocks.snat_address,
            self.interface,
            self.blocks.subnet,
        )

    def remove(self) -> None:
        """Remove the jump and our chain (what exists of them).

        Connections already translated keep their mapping in conntrack until they end.

        Raises:
            NatError: a rule that exists could not be removed.
        """
        while self._run(self._jump("-C")).returncode == 0:
            res = self._run(self._jump("-D"))
            if res.returncode != 0:
                raise NatError(f"iptables -D POSTROUTING: {res.stderr.strip()[:300]}")
        base = [*self._iptables, "-w", "-t", "nat"]
        if self._run([*base, "-L", CHAIN, "-n"]).returncode == 0:
            for op in ("-F", "-X"):
                res = self._run([*base, op, CHAIN])
                if res.returncode != 0:
                    raise NatError(f"iptables {op} {CHAIN}: {res.stderr.strip()[:300]}")
        self.installed = False


def from_config(config: AgentConfig) -> IptablesNat | None:
    """The NAT the configuration asks for (None: NAT off); reads the uplink's address
    when ``nat_address`` is empty.

    Raises:
        NatError: the interface has no address, or the plan does not fit.
    """
    if not config.nat_interface:
        return None
    address = config.nat_address or interface_address(config.nat_interface)
    blocks = PortBlocks(
        config.nat_subnet,
        address,
        config.nat_public_ip,
        config.nat_port_first,
        config.nat_port_last,
        config.nat_block_size,
    )
    return IptablesNat(blocks, config.nat_interface, config.nat_iptables)


def with_blocks(items: list[T], blocks: PortBlocks) -> list[T]:
    """Client events (``authorized`` ones) and acct entries with their client's port
    block; other events, and clients outside the subnet, are left as they are."""
    out: list[T] = []
    for item in items:
        block = None
        if getattr(item, "event", "authorized") == "authorized":
            block = blocks.block_for(getattr(item, "ip", ""))
        if block is None:
            out.append(item)
        else:
            out.append(
                dataclasses.replace(
                    item,  # type: ignore[type-var]
                    public_ip=block.public_ip,
                    port_start=block.port_start,
                    port_end=block.port_end,
                )
            )
    return out
