"""``apply_config`` on OpenWrt: openNDS's and dnsmasq's settings written through UCI.

On OpenWrt openNDS reads ``/etc/config/opennds`` and dnsmasq ``/etc/config/dhcp``
(OpenWrt's init scripts turn UCI into their command lines), not the legacy files of
:mod:`agents._gwconf`. This writer turns the same settings, with the same validation and
the same settings-to-options mapping, into a ``uci batch`` script:

* ``opennds.@opennds[0]``: the options of :func:`~agents._gwconf.opennds_options`
  (session length, rates, quotas, FAS, ``dhcp_default_url_enable '0'``, and the idle
  timeout ``authidletimeout`` when the command gives one: without it, the value in
  place stays, the operator's or an earlier push's, like FAS settings); the walled
  garden's host names in ``walledgarden_fqdn_list`` and its ports in
  ``walledgarden_port_list`` (one space-separated entry each, as openNDS's documentation
  writes them; both removed when the walled garden has no host name); its addresses and
  networks as ``preauthenticated_users`` entries ``allow tcp port P to X``. Entries of
  that exact shape belong to the controller (stale ones are removed); the operator's
  other entries stay;
* ``dhcp.<lan>.dhcp_option_force``: ``114,"<url>"`` (RFC 8910), replacing any other
  option 114 entry of that section; ``<lan>`` is the DHCP section of openNDS's
  ``gatewayinterface``, found as openNDS finds it (or ``uci_dhcp_section``);
* ``dhcp.@dnsmasq[0].ipset``: ``/<hosts>/walledgarden``, the entry openNDS itself adds
  (uncommitted) at its start. It is written here because ``uci commit dhcp`` also
  commits what openNDS left uncommitted: writing the wanted entry and removing stale
  ``…/walledgarden`` ones keeps a host taken out of the walled garden from staying in
  its ipset.

The batch holds only what differs from ``uci show`` (an empty batch: nothing to do, no
restart), then ``uci commit <package>`` makes it survive a reboot, and ``uci show`` is
read again to check that every value took. :mod:`agents.gateway` restarts the daemons.
The faskey is never written: it is a secret shared with the portal, set once at
installation.

Rendering (``parse_show``, ``opennds_batch``, ``dhcp_batch``, ``find_dhcp_section``) is
sans-IO; :class:`Uci` runs the command. Standard library only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable
from typing import Final

from agents._gwconf import (
    capport_option,
    opennds_options,
    preauth_rules,
    walled_hosts,
    walled_ipset,
    walled_ports,
)
from agents.contract import ApplyConfigArgs

__all__ = [
    "UCI_PATH",
    "WRITERS",
    "Section",
    "Uci",
    "UciError",
    "UciWriter",
    "detect_writer",
    "dhcp_batch",
    "find_dhcp_section",
    "opennds_batch",
    "parse_show",
    "quote",
]

logger = logging.getLogger(__name__)

# Where OpenWrt keeps the uci command: its presence selects the UCI writer ("auto").
UCI_PATH: Final = "/sbin/uci"
WRITERS: Final = ("auto", "uci", "files", "off")
OPENNDS: Final = "opennds.@opennds[0]"
DNSMASQ: Final = "dhcp.@dnsmasq[0]"
DEFAULT_GATEWAY_INTERFACE: Final = "br-lan"

# The shape of the walled garden's preauthenticated_users entries (preauth_rules).
_WALLED_RULE_RE: Final = re.compile(
    r"\Aallow tcp port \d{1,5} to \d{1,3}(\.\d{1,3}){3}(/\d{1,2})?\Z"
)
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


class UciError(Exception):
    """uci could not be run, refused the batch, or the values did not take."""


def detect_writer(setting: str, uci_path: str = UCI_PATH) -> str:
    """The writer to use: ``uci``, ``files`` or ``off``; ``auto`` is ``uci`` on OpenWrt."""
    if setting != "auto":
        return setting
    return "uci" if os.path.exists(uci_path) else "files"


@dataclasses.dataclass
class Section:
    """One UCI section as ``uci show`` prints it (values of a list, or a single value)."""

    name: str
    type: str
    options: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def parse_show(text: str) -> list[Section]:
    """Sections of one package from ``uci show <package>``, in order.

    ``pkg.sec=type`` opens a section (``sec`` is ``@type[n]`` for an unnamed one);
    ``pkg.sec.opt='v'`` or ``'v1' 'v2'`` (a list) sets an option; ``'\\''`` is a quote.

    Raises:
        UciError: a line is not what uci prints.
    """
    sections: dict[str, Section] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        parts = key.split(".")
        if not sep or len(parts) not in (2, 3):
            raise UciError(f"unexpected uci show line: {line[:120]!r}")
        if len(parts) == 2:
            sections[parts[1]] = Section(parts[1], raw)
            continue
        try:
            values = shlex.split(raw)
        except ValueError as exc:
            raise UciError(f"unexpected uci show value: {line[:120]!r}") from exc
        section = sections.setdefault(parts[1], Section(parts[1], ""))
        section.options[parts[2]] = values
    return list(sections.values())


def first_of_type(sections: Iterable[Section], kind: str) -> Section | None:
    """The first section of type ``kind`` (``@kind[0]``), or None."""
    return next((s for s in sections if s.type == kind), None)


def quote(value: str) -> str:
    """``value`` single-quoted for a ``uci batch`` line (a quote becomes ``'\\''``).

    Raises:
        ValueError: ``value`` holds a control character (a newline would end the line
            and start another command); :func:`~agents._gwconf.config_problems` refuses
            such settings before they get here.
    """
    if _CONTROL_RE.search(value):
        raise ValueError("control character in a UCI value")
    return "'" + value.replace("'", "'\\''") + "'"


def _sync_list(
    key: str, current: list[str], wanted: list[str], owned: Callable[[str], bool]
) -> list[str]:
    """Batch lines making the ``owned`` entries of list ``key`` exactly ``wanted``."""
    stale = [v for v in dict.fromkeys(current) if owned(v) and v not in wanted]
    missing = [v for v in dict.fromkeys(wanted) if v not in current]
    return [f"del_list {key}={quote(v)}" for v in stale] + [
        f"add_list {key}={quote(v)}" for v in missing
    ]


def opennds_batch(args: ApplyConfigArgs, sections: list[Section]) -> list[str]:
    """``uci batch`` lines bringing ``opennds.@opennds[0]`` to ``args`` (empty: nothing to do).

    Raises:
        UciError: ``/etc/config/opennds`` has no ``opennds`` section.
    """
    section = first_of_type(sections, "opennds")
    if section is None:
        raise UciError("no 'opennds' section in /etc/config/opennds")
    current = section.options
    out = [
        f"set {OPENNDS}.{name}={quote(value)}"
        for name, value in opennds_options(args)
        if current.get(name) != [value]
    ]
    hosts = walled_hosts(args)
    lists = {
        "walledgarden_fqdn_list": [" ".join(hosts)] if hosts else [],
        "walledgarden_port_list": [" ".join(map(str, walled_ports(args)))] if hosts else [],
    }
    for name, wanted in lists.items():
        if current.get(name, []) != wanted:
            if name in current:
                out.append(f"delete {OPENNDS}.{name}")
            out += [f"add_list {OPENNDS}.{name}={quote(v)}" for v in wanted]
    out += _sync_list(
        f"{OPENNDS}.preauthenticated_users",
        current.get("preauthenticated_users", []),
        preauth_rules(args),
        lambda v: bool(_WALLED_RULE_RE.match(v)),
    )
    return out


def dhcp_batch(args: ApplyConfigArgs, sections: list[Section], lan: str) -> list[str]:
    """``uci batch`` lines for DHCP option 114 on section ``lan`` and the walled-garden ipset.

    Raises:
        UciError: ``/etc/config/dhcp`` has no section ``lan``, or no ``dnsmasq`` section
            while the walled garden has host names.
    """
    by_name = {s.name: s for s in sections}
    if lan not in by_name:
        raise UciError(f"no section {lan!r} in /etc/config/dhcp")
    wanted_114 = [capport_option(args)] if args.capport_url else []
    out = _sync_list(
        f"dhcp.{lan}.dhcp_option_force",
        by_name[lan].options.get("dhcp_option_force", []),
        wanted_114,
        lambda v: v.startswith("114,"),
    )
    hosts = walled_hosts(args)
    dnsmasq = first_of_type(sections, "dnsmasq")
    if dnsmasq is None:
        if hosts:
            raise UciError("no 'dnsmasq' section in /etc/config/dhcp for the walled garden")
        return out
    out += _sync_list(
        f"{DNSMASQ}.ipset",
        dnsmasq.options.get("ipset", []),
        [walled_ipset(hosts)] if hosts else [],
        lambda v: v.endswith("/walledgarden"),
    )
    return out


def find_dhcp_section(opennds: list[Section], network: list[Section], dhcp: list[Section]) -> str:
    """The DHCP section serving openNDS's ``gatewayinterface``, found as openNDS does.

    ``gatewayinterface`` (default ``br-lan``) names a network interface section or a
    device; the interface whose ``device`` (or ``ifname``, or bridge ``br-<name>``) it is
    gives the ``dhcp`` section whose ``interface`` is that interface.

    Raises:
        UciError: no DHCP section serves that interface.
    """
    gw = first_of_type(opennds, "opennds")
    value = (gw.options.get("gatewayinterface") if gw else None) or [DEFAULT_GATEWAY_INTERFACE]
    device = (value[0].split() or [DEFAULT_GATEWAY_INTERFACE])[0]
    interface = None
    for s in network:
        if s.type != "interface":
            continue
        bridge = s.options.get("type") == ["bridge"] and device == f"br-{s.name}"
        if (
            s.name == device
            or bridge
            or device in (s.options.get("device", []) + s.options.get("ifname", []))
        ):
            interface = s.name
            break
    for s in dhcp:
        if interface and s.type == "dhcp" and s.options.get("interface") == [interface]:
            return s.name
    raise UciError(f"no DHCP section in /etc/config/dhcp for {device} (set agent.uci_dhcp_section)")


class Uci:
    """The ``uci`` command (``-q``: quiet; errors come back as exit codes)."""

    def __init__(self, argv0: str = "uci", timeout_s: float = 30.0) -> None:
        self._argv0 = argv0
        self._timeout = timeout_s

    def _run(self, *args: str, stdin: str | None = None) -> str:
        try:
            proc = subprocess.run(
                [self._argv0, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self._timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UciError(f"uci {args[0]}: {exc}") from exc
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[:200]
            raise UciError(f"uci {' '.join(args)[:60]} exited {proc.returncode}: {detail}")
        return proc.stdout

    def show(self, package: str) -> list[Section]:
        """The sections of ``package`` (committed values and pending changes)."""
        return parse_show(self._run("show", package))

    def batch(self, lines: list[str]) -> None:
        """Run ``lines`` through ``uci batch`` (changes pending until committed)."""
        self._run("batch", stdin="\n".join(lines) + "\n")

    def commit(self, package: str) -> None:
        """``uci commit <package>``: the pending changes written to ``/etc/config``."""
        self._run("commit", package)


class UciWriter:
    """Applies settings to ``opennds`` and ``dhcp``; each call says if its package changed."""

    def __init__(self, uci: Uci, dhcp_section: str = "") -> None:
        self._uci = uci
        self._dhcp_section = dhcp_section

    def apply_dhcp(self, args: ApplyConfigArgs, force: bool = False) -> bool:
        """Option 114 and the walled-garden ipset in ``dhcp``; True: dnsmasq must restart.

        Raises:
            UciError: as :meth:`_apply`, or the DHCP section cannot be found.
        """
        dhcp = self._uci.show("dhcp")
        lan = self._dhcp_section or find_dhcp_section(
            self._uci.show("opennds"), self._uci.show("network"), dhcp
        )
        return self._apply("dhcp", lambda s: dhcp_batch(args, s, lan), dhcp, force)

    def apply_opennds(self, args: ApplyConfigArgs, force: bool = False) -> bool:
        """openNDS's options; True: openNDS must restart.

        Raises:
            UciError: as :meth:`_apply`.
        """
        return self._apply(
            "opennds", lambda s: opennds_batch(args, s), self._uci.show("opennds"), force
        )

    def _apply(
        self,
        package: str,
        render: Callable[[list[Section]], list[str]],
        sections: list[Section],
        force: bool,
    ) -> bool:
        """Batch what differs, commit, check; ``force`` commits (and restarts) anyway.

        Raises:
            UciError: uci failed, or a value did not take (read back after the commit).
        """
        lines = render(sections)
        if not lines and not force:
            return False
        if lines:
            logger.info("uci %s: %d change(s)", package, len(lines))
            self._uci.batch(lines)
        self._uci.commit(package)
        left = render(self._uci.show(package))
        if left:
            raise UciError(f"uci {package}: not applied after commit: {left[0][:120]}")
        return True
