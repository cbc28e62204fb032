"""``apply_config``: the gateway's configuration files, rendered from the command (sans-IO).

The controller sends one versioned :class:`~agents.contract.ApplyConfigArgs`; this module
checks it and turns it into text:

* a **managed block** at the end of openNDS's configuration file (the legacy
  ``opennds.conf`` of non-OpenWrt systems): openNDS 9.10 reads its file once at start
  and ``ndsctl`` has no run-time command for the walled garden, the FAS, the default
  session length or the idle timeout, so the file is rewritten and the daemon
  restarted. openNDS keeps the last value of an option, so the block, appended after
  the operator's own lines, wins; the operator's lines outside the markers are never
  touched;
* a **dnsmasq fragment** with ``dhcp-option-force=114,"<url>"`` (RFC 8910: the RFC 8908
  captive-portal API URL), read by dnsmasq at start (``conf-file=`` or ``conf-dir=``).

The settings-to-options mapping (:func:`opennds_options`, :func:`preauth_rules`,
:func:`walled_hosts`, :func:`capport_option`) is shared with the UCI writer of OpenWrt
(:mod:`agents._uci`), and so is the validation (:func:`config_problems`).

The version number is not written into either file: applying a new version whose
settings are the same changes no byte, so the daemons are not restarted. Nothing here
does IO; :mod:`agents.gateway` writes the files and restarts the daemons.
Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from agents.contract import ApplyConfigArgs

__all__ = [
    "BEGIN_MARK",
    "END_MARK",
    "FAS_SECURE_LEVEL",
    "capport_option",
    "config_problems",
    "dnsmasq_fragment",
    "merge_block",
    "opennds_block",
    "opennds_options",
    "preauth_rules",
    "walled_hosts",
    "walled_ipset",
    "walled_ports",
]

BEGIN_MARK: Final = "# >>> borne apply_config: managed by the borne agent, edits are overwritten"
END_MARK: Final = "# <<< borne apply_config"

# Defaults for the walled garden's ports when the command lists none.
DEFAULT_WALLED_PORTS: Final = (80, 443)
# RFC 8908 §2: the API URI must fit in the DHCP option (255 bytes).
MAX_CAPPORT_URL: Final = 255
MAX_MINUTES: Final = 366 * 24 * 60
# openNDS 9.10 exits at start unless its checkinterval is less than half the idle
# timeout ("Setting checkinterval (60s) must be smaller than half of auth_idle_timeout
# (120s)"). Its default checkinterval is 15 s, but its sample configuration and older
# versions speak of 60 s: at least 3 minutes keeps it starting with anything under 90 s.
MIN_IDLE_MINUTES: Final = 3
MAX_RATE_KBPS: Final = 10_000_000
MAX_QUOTA_KB: Final = 2**40

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE: Final = re.compile(rf"\A{_LABEL}(\.{_LABEL})*\Z")
_PATH_RE: Final = re.compile(r"\A/[A-Za-z0-9/._~-]{0,200}\Z")
# No quote, backslash, blank or control character: the URL goes between double quotes in
# dnsmasq's file, and nothing of it may end a line or a token there.
_URL_RE: Final = re.compile(r"\Ahttps?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9/._~%!$&'()*+,;=:@-]*)?\Z")


def _is_host(value: str) -> bool:
    return len(value) <= 253 and bool(_HOST_RE.match(value)) and not value.isdigit()


def _walled_entry(value: str) -> ipaddress.IPv4Network | str | None:
    """An IPv4 network (an address is a /32), a host name, or None when neither."""
    try:
        return ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        pass
    return value.lower() if _is_host(value.lower()) else None


def config_problems(args: ApplyConfigArgs) -> list[str]:
    """What is wrong with a command's settings (empty: it can be applied)."""
    out: list[str] = []
    if args.version < 1:
        out.append("version must be at least 1")
    if args.session_minutes > MAX_MINUTES:
        out.append("session_minutes out of range")
    idle = args.idle_timeout_minutes
    if idle and not MIN_IDLE_MINUTES <= idle <= MAX_MINUTES:
        out.append(f"idle_timeout_minutes out of range (0, or {MIN_IDLE_MINUTES} and more)")
    for name in ("up_kbps", "down_kbps"):
        if getattr(args, name) > MAX_RATE_KBPS:
            out.append(f"{name} out of range")
    for name in ("up_quota_kb", "down_quota_kb"):
        if getattr(args, name) > MAX_QUOTA_KB:
            out.append(f"{name} out of range")
    for entry in args.walled_garden:
        if _walled_entry(entry) is None:
            out.append(f"walled_garden: {entry[:60]!r} is neither an IPv4 address nor a host")
    if any(not 1 <= p <= 65535 for p in args.walled_garden_ports):
        out.append("walled_garden_ports: ports are 1 to 65535")
    if args.fas_remote_ip:
        try:
            ipaddress.IPv4Address(args.fas_remote_ip)
        except ValueError:
            out.append("fas_remote_ip is not an IPv4 address")
    if args.fas_remote_fqdn and not _is_host(args.fas_remote_fqdn.lower()):
        out.append("fas_remote_fqdn is not a host name")
    if args.fas_port > 65535:
        out.append("fas_port out of range")
    if args.fas_path and not _PATH_RE.match(args.fas_path):
        out.append("fas_path must start with / and hold only URL path characters")
    url = args.capport_url
    if url and (len(url.encode()) > MAX_CAPPORT_URL or not _URL_RE.match(url)):
        out.append("capport_url must be an http(s) URL of at most 255 bytes, without quotes")
    return out


# openNDS's FAS level that borne's portal speaks (docs/PORTAL.md): the ``hid`` hashed with
# the pre-shared ``faskey``, sent in a base64 ``fas`` query.
FAS_SECURE_LEVEL: Final = 1


def opennds_options(args: ApplyConfigArgs) -> list[tuple[str, str]]:
    """openNDS's single-valued options for ``args``, in order: ``(name, value)``.

    The names are the same in the legacy file and in UCI (``/etc/config/opennds``).
    The idle timeout of logged-in clients, ``authidletimeout`` (minutes; openNDS's
    default: 120), is set only when the command gives one. openNDS's own DHCP option
    114 (``http://status.client``, not RFC 8908) is turned off: the AP's dnsmasq sends
    the portal's API URL instead. FAS settings left empty are not set (the AP's own
    stay); when the command gives the FAS's address or port, the FAS level is the
    portal's.
    """
    out = [
        ("sessiontimeout", str(args.session_minutes)),
        ("uploadrate", str(args.up_kbps)),
        ("downloadrate", str(args.down_kbps)),
        ("uploadquota", str(args.up_quota_kb)),
        ("downloadquota", str(args.down_quota_kb)),
        ("dhcp_default_url_enable", "0"),
    ]
    if args.idle_timeout_minutes:
        out.append(("authidletimeout", str(args.idle_timeout_minutes)))
    if args.fas_remote_ip:
        out.append(("fasremoteip", args.fas_remote_ip))
    if args.fas_remote_fqdn:
        out.append(("fasremotefqdn", args.fas_remote_fqdn.lower()))
    if args.fas_port:
        out.append(("fasport", str(args.fas_port)))
    if args.fas_path:
        out.append(("faspath", args.fas_path))
    if args.fas_remote_ip or args.fas_remote_fqdn or args.fas_port:
        out.append(("fas_secure_enabled", str(FAS_SECURE_LEVEL)))
    return out


def walled_hosts(args: ApplyConfigArgs) -> list[str]:
    """The walled garden's host names, lower-case, sorted, once each."""
    return sorted({h for h in (_walled_entry(e) for e in args.walled_garden) if isinstance(h, str)})


def walled_ports(args: ApplyConfigArgs) -> list[int]:
    """The walled garden's ports (default: 80 and 443)."""
    return sorted(set(args.walled_garden_ports)) or list(DEFAULT_WALLED_PORTS)


def preauth_rules(args: ApplyConfigArgs) -> list[str]:
    """openNDS rules opening the walled garden's addresses and networks before login.

    ``allow tcp port P to X``, one per port: the text of a ``FirewallRule`` of the
    ``preauthenticated-users`` rule set in the legacy file, and of a
    ``preauthenticated_users`` list entry in UCI.
    """
    nets: set[ipaddress.IPv4Network] = set()
    for entry in args.walled_garden:
        parsed = _walled_entry(entry)
        if isinstance(parsed, ipaddress.IPv4Network):
            nets.add(parsed)
    out: list[str] = []
    for net in sorted(nets):
        target = str(net.network_address) if net.prefixlen == 32 else str(net)
        out += [f"allow tcp port {p} to {target}" for p in walled_ports(args)]
    return out


def capport_option(args: ApplyConfigArgs) -> str:
    """dnsmasq's value for DHCP option 114 (quoted: the URL's ``:`` would read as hex)."""
    return f'114,"{args.capport_url}"'


def walled_ipset(hosts: list[str]) -> str:
    """dnsmasq's ``ipset`` value filling openNDS's ``walledgarden`` set with ``hosts``."""
    return "/" + "/".join(hosts) + "/walledgarden"


def opennds_block(args: ApplyConfigArgs) -> str:
    """openNDS configuration lines for ``args``, between the managed-block markers.

    The options of :func:`opennds_options`; host names of the walled garden go to
    ``walledgarden_fqdn_list`` (openNDS fills its ``walledgarden`` ipset from dnsmasq's
    answers, see :func:`dnsmasq_fragment`); addresses and networks become
    ``FirewallRule`` lines of the ``preauthenticated-users`` rule set, one per port.
    """
    lines = [BEGIN_MARK, *(f"{name} {value}" for name, value in opennds_options(args))]
    hosts = walled_hosts(args)
    if hosts:
        lines.append("walledgarden_fqdn_list " + " ".join(hosts))
        lines.append("walledgarden_port_list " + " ".join(str(p) for p in walled_ports(args)))
    rules = preauth_rules(args)
    if rules:
        lines.append("FirewallRuleSet preauthenticated-users {")
        lines += [f"    FirewallRule {rule}" for rule in rules]
        lines.append("}")
    lines.append(END_MARK)
    return "\n".join(lines) + "\n"


def merge_block(text: str, block: str) -> str:
    """``text`` (an openNDS configuration file) with its managed block replaced by ``block``.

    Everything outside the markers is kept as it is; the block goes at the end, where
    openNDS's last-value-wins reading makes it override the operator's defaults. A
    begin marker without its end (a file cut short) drops what follows it.
    """
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(BEGIN_MARK):
            inside = True
        elif inside and line.startswith(END_MARK):
            inside = False
        elif not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    head = "\n".join(kept)
    return f"{head}\n\n{block}" if head else block


def dnsmasq_fragment(args: ApplyConfigArgs) -> str:
    """dnsmasq lines: DHCP option 114 and the ipset feeding openNDS's walled garden."""
    lines = ["# borne apply_config: managed by the borne agent, edits are overwritten"]
    if args.capport_url:
        # "force": sent even to clients that do not ask for it (RFC 8910 clients do).
        lines.append(f"dhcp-option-force={capport_option(args)}")
    hosts = walled_hosts(args)
    if hosts:
        lines.append(f"ipset={walled_ipset(hosts)}")
    return "\n".join(lines) + "\n"
