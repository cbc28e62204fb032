"""Gateway backends: the captive gateway daemon the agent drives.

``Gateway`` is the small interface; ``NdsctlGateway`` drives openNDS through
``ndsctl``; ``SimulatedGateway`` keeps clients in memory for ``borne demo`` and the
simulator. Another daemon plugs in by implementing the same five methods.

``apply_config`` writes the gateway's configuration (openNDS's file, a dnsmasq fragment,
rendered by :mod:`agents._gwconf`) and restarts a daemon only when its file changed:
openNDS 9.10 has no run-time command for the walled garden, the FAS or the defaults, and
dnsmasq rereads its configuration files only at start (SIGHUP rereads hosts and leases,
not ``dhcp-option``). On OpenWrt the same settings go through UCI instead
(:mod:`agents._uci`, ``ConfigTargets.writer == "uci"``). Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from agents._core import GatewayClient
from agents._gwconf import dnsmasq_fragment, merge_block, opennds_block
from agents._uci import Uci, UciError, UciWriter, detect_writer
from agents.config import AgentConfig
from agents.contract import MAC_RE, ApplyConfigArgs

__all__ = [
    "ConfigTargets",
    "Gateway",
    "GatewayError",
    "NdsctlGateway",
    "SimulatedGateway",
    "config_targets",
    "parse_ndsctl_json",
    "replace_file",
    "restore_plan",
]

logger = logging.getLogger(__name__)

# ndsctl json of a busy gateway with a few hundred clients stays well under this.
MAX_NDSCTL_OUTPUT = 4 * 1024 * 1024


class GatewayError(Exception):
    """The gateway daemon did not do what was asked."""


class Gateway(Protocol):
    """What the agent needs from a captive gateway."""

    name: str

    def clients(self) -> list[GatewayClient]:
        """Every client the gateway knows, with counters in bytes."""
        ...

    def authorize(
        self, mac: str, minutes: int, up_kbps: int, down_kbps: int, up_kb: int, down_kb: int
    ) -> None:
        """Let ``mac`` through for ``minutes`` with limits (0: unlimited)."""
        ...

    def deauthorize(self, mac: str) -> None:
        """Cut ``mac`` off."""
        ...

    def is_up(self) -> bool:
        """Whether the daemon answers."""
        ...

    def apply_config(self, args: ApplyConfigArgs, force: bool = False) -> bool:
        """Apply the gateway settings; True when something changed (and was restarted).

        ``force``: restart even when the files are already as wanted (a previous attempt
        wrote them but its restart failed).
        """
        ...


def _int(value: Any) -> int:
    try:
        return int(str(value).split(".")[0])
    except ValueError:
        return 0


def parse_ndsctl_json(text: str) -> list[GatewayClient]:
    """Parse ``ndsctl json``: values are strings, counters are KiB (1024 bytes).

    openNDS 9.10 measured on the testbed: 304,500 bytes downloaded showed as "297".
    With the legacy iptables backend, upload counters stay at "0" (a known limit).

    Raises:
        GatewayError: the output is not the JSON openNDS prints.
    """
    if len(text) > MAX_NDSCTL_OUTPUT:
        raise GatewayError("ndsctl json output too large")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GatewayError(f"ndsctl json is not JSON: {exc}") from exc
    clients = doc.get("clients") if isinstance(doc, dict) else None
    if not isinstance(clients, dict):
        raise GatewayError("ndsctl json has no 'clients' object")
    out: list[GatewayClient] = []
    for key, c in clients.items():
        if not isinstance(c, dict):
            continue
        mac = str(c.get("mac", key)).lower()
        if not MAC_RE.match(mac):
            continue
        start = _int(c.get("session_start", 0))
        out.append(
            GatewayClient(
                mac=mac,
                ip=str(c.get("ip", "")),
                authenticated=str(c.get("state", "")).lower() == "authenticated",
                session_start=float(start) if start > 0 else None,
                up_bytes=_int(c.get("upload_this_session", 0)) * 1024,
                down_bytes=_int(c.get("download_this_session", 0)) * 1024,
            )
        )
    return out


@dataclasses.dataclass(frozen=True)
class ConfigTargets:
    """Where ``apply_config`` writes, and how the daemons are restarted (empty: not managed)."""

    opennds_config: str = ""
    opennds_restart_cmd: str = ""
    dnsmasq_conf: str = ""
    dnsmasq_restart_cmd: str = ""
    # "files" (the paths above), "uci" (OpenWrt: agents/_uci.py) or "off".
    writer: str = "files"
    uci: str = "uci"
    # The DHCP section for option 114 under UCI; empty: the one of gatewayinterface.
    uci_dhcp_section: str = ""


def config_targets(cfg: AgentConfig) -> ConfigTargets:
    """Where ``apply_config`` writes on this AP, from its configuration.

    Under UCI the restart commands default to OpenWrt's init scripts.
    """
    writer = detect_writer(cfg.gateway_config)
    nds_restart = cfg.opennds_restart_cmd or cfg.gateway_restart_cmd
    dns_restart = cfg.dnsmasq_restart_cmd
    if writer == "uci":
        nds_restart = nds_restart or "/etc/init.d/opennds restart"
        dns_restart = dns_restart or "/etc/init.d/dnsmasq restart"
    return ConfigTargets(
        opennds_config=cfg.opennds_config,
        opennds_restart_cmd=nds_restart,
        dnsmasq_conf=cfg.dnsmasq_conf,
        dnsmasq_restart_cmd=dns_restart,
        writer=writer,
        uci=cfg.uci_command,
        uci_dhcp_section=cfg.uci_dhcp_section,
    )


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayError(f"cannot read {path}: {exc}") from exc


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, ``fsync``, ``rename``).

    The file keeps its permissions (0644 for a new one); a power cut leaves the old
    file or the new one, never a mix.

    Raises:
        GatewayError: the directory is not writable or the disk is full.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    except OSError as exc:
        raise GatewayError(f"cannot stat {path}: {exc}") from exc
    try:
        fd, tmp = tempfile.mkstemp(prefix=".borne-", dir=directory)
    except OSError as exc:
        raise GatewayError(f"cannot write in {directory}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise GatewayError(f"cannot write {path}: {exc}") from exc


def run_restart(what: str, cmd: str, timeout_s: float = 120.0) -> None:
    """Run a daemon's restart command (split like a shell would, not run by one).

    Raises:
        GatewayError: it could not run, timed out or exited non-zero.
    """
    try:
        proc = subprocess.run(
            shlex.split(cmd), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise GatewayError(f"{what} restart failed: {exc}") from exc
    if proc.returncode != 0:
        raise GatewayError(f"{what} restart exited {proc.returncode}: {proc.stderr.strip()[:200]}")


# After a restart of openNDS, its logged-in clients are let back in for this long (they
# reappear at their next packet); later ones pass the portal again.
RESTORE_WINDOW_S = 600.0


def _number(value: Any) -> int | None:
    text = str(value).split(".")[0]
    return int(text) if text.isdigit() else None


def restore_plan(text: str, now: float) -> dict[str, list[str]]:
    """``ndsctl auth`` arguments giving each logged-in client what it had left.

    From ``ndsctl json``: minutes to its ``session_end``, its rate limits, the rest of its
    quotas (kB). openNDS shows an unlimited value (given as 0) as ``null``: it is given
    back as ``0``. (``""``, openNDS's "global default", made openNDS 9.10 stop after the
    ``auth`` on the testbed.) Clients whose session is over are left out.

    Raises:
        GatewayError: the output is not the JSON openNDS prints.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GatewayError(f"ndsctl json is not JSON: {exc}") from exc
    clients = doc.get("clients") if isinstance(doc, dict) else None
    plan: dict[str, list[str]] = {}
    if not isinstance(clients, dict):
        return plan
    for key, c in clients.items():
        if not isinstance(c, dict) or str(c.get("state", "")).lower() != "authenticated":
            continue
        mac = str(c.get("mac", key)).lower()
        if not MAC_RE.match(mac):
            continue
        end = _number(c.get("session_end"))
        if end is not None and end <= now:
            continue
        minutes = "0" if end is None else str(max(1, -int((now - end) // 60)))
        args = [minutes]
        for rate in ("upload_rate_limit_threshold", "download_rate_limit_threshold"):
            value = _number(c.get(rate))
            args.append("0" if value is None else str(value))
        for quota, used in (
            ("upload_quota", "upload_this_session"),
            ("download_quota", "download_this_session"),
        ):
            value = _number(c.get(quota))
            spent = _number(c.get(used)) or 0
            args.append("0" if value is None else str(max(1, value - spent)))
        plan[mac] = args
    return plan


class NdsctlGateway:
    """openNDS through its ``ndsctl`` command (which talks to ``/tmp/ndsctl.sock``)."""

    name = "opennds"

    def __init__(
        self,
        ndsctl: str = "ndsctl",
        timeout_s: float = 10.0,
        targets: ConfigTargets | None = None,
    ) -> None:
        self._argv0 = ndsctl
        self._timeout = timeout_s
        self.targets = targets or ConfigTargets()
        # Clients logged in before a restart of openNDS, to let back in (restore_plan).
        self._restore: dict[str, list[str]] = {}
        self._restore_until = 0.0
        self.restored = 0

    def _run(self, *args: str) -> str:
        try:
            proc = subprocess.run(
                [self._argv0, *args],
                capture_output=True,
                text=True,
                timeout=self._timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GatewayError(f"ndsctl {args[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise GatewayError(
                f"ndsctl {args[0]} exited {proc.returncode}: {proc.stderr.strip()[:200]}"
            )
        return proc.stdout

    def clients(self) -> list[GatewayClient]:
        """Every client openNDS lists (letting back in those a restart logged out)."""
        found = parse_ndsctl_json(self._run("json"))
        if self._restore:
            self._let_back_in(found)
        return found

    def _let_back_in(self, found: list[GatewayClient]) -> None:
        if time.monotonic() > self._restore_until:
            logger.info("%d client(s) did not come back after the restart", len(self._restore))
            self._restore.clear()
            return
        for c in found:
            args = None if c.authenticated else self._restore.pop(c.mac, None)
            if args is None:
                continue
            try:
                self._run("auth", c.mac, *args)
            except GatewayError as exc:
                logger.warning("client not let back in after the restart: %s", exc)
                continue
            self.restored += 1

    def authorize(
        self, mac: str, minutes: int, up_kbps: int, down_kbps: int, up_kb: int, down_kb: int
    ) -> None:
        """``ndsctl auth``; refuses a client openNDS does not know (forged FAS query)."""
        if not any(c.mac == mac for c in self.clients()):
            raise GatewayError("client not present at this gateway")
        out = self._run(
            "auth", mac, str(minutes), str(up_kbps), str(down_kbps), str(up_kb), str(down_kb)
        )
        if "fail" in out.lower() or "not found" in out.lower():
            raise GatewayError(f"ndsctl auth: {out.strip()[:200]}")

    def deauthorize(self, mac: str) -> None:
        """``ndsctl deauth``."""
        out = self._run("deauth", mac)
        if "fail" in out.lower():
            raise GatewayError(f"ndsctl deauth: {out.strip()[:200]}")

    def is_up(self) -> bool:
        """``ndsctl status`` answers."""
        try:
            self._run("status")
        except GatewayError:
            return False
        return True

    def apply_config(self, args: ApplyConfigArgs, force: bool = False) -> bool:
        """Rewrite openNDS's managed block and the dnsmasq fragment; restart what changed.

        dnsmasq goes first: once openNDS restarts with its own DHCP option 114 off, the
        portal's URL is already what clients get.

        Raises:
            GatewayError: configuration management is off, a file cannot be written or
                a restart failed (the files then hold the new settings: the next
                ``apply_config`` of the same settings is forced by the agent).
        """
        t = self.targets
        if t.writer == "uci":
            return self._apply_uci(args, force)
        if t.writer == "off" or not t.opennds_config:
            raise GatewayError("configuration management is off (agent.opennds_config unset)")
        if args.capport_url and not t.dnsmasq_conf:
            raise GatewayError("capport_url needs agent.dnsmasq_conf (the DHCP server's file)")
        changed = False
        if t.dnsmasq_conf:
            want = dnsmasq_fragment(args)
            if _read_text(t.dnsmasq_conf) != want or force:
                replace_file(t.dnsmasq_conf, want)
                if t.dnsmasq_restart_cmd:
                    run_restart("dnsmasq", t.dnsmasq_restart_cmd)
                changed = True
        current = _read_text(t.opennds_config)
        if current is None:
            raise GatewayError(f"{t.opennds_config} does not exist")
        want = merge_block(current, opennds_block(args))
        if current != want or force:
            replace_file(t.opennds_config, want)
            self._restart_opennds()
            changed = True
        return changed

    def _apply_uci(self, args: ApplyConfigArgs, force: bool) -> bool:
        """OpenWrt: ``uci batch`` + ``uci commit`` of ``dhcp``, then ``opennds``; restarts.

        A daemon restarts only when its package changed (or ``force``).

        Raises:
            GatewayError: uci failed or a restart failed (the agent forces the next push).
        """
        t = self.targets
        writer = UciWriter(Uci(t.uci), t.uci_dhcp_section)
        changed = False
        try:
            if writer.apply_dhcp(args, force):
                if t.dnsmasq_restart_cmd:
                    run_restart("dnsmasq", t.dnsmasq_restart_cmd)
                changed = True
            if writer.apply_opennds(args, force):
                self._restart_opennds()
                changed = True
        except UciError as exc:
            raise GatewayError(str(exc)) from exc
        return changed

    def _restart_opennds(self) -> None:
        """Run openNDS's restart command, letting its logged-in clients back in afterwards.

        Raises:
            GatewayError: the restart failed.
        """
        cmd = self.targets.opennds_restart_cmd
        if not cmd:
            return
        # openNDS forgets its clients when it stops: note what each logged-in one had
        # left, and let it back in when it shows up again.
        try:
            plan = restore_plan(self._run("json"), time.time())
        except GatewayError as exc:
            logger.warning("clients before the restart unknown: %s", exc)
            plan = {}
        run_restart("openNDS", cmd)
        self._restore = plan
        self._restore_until = time.monotonic() + RESTORE_WINDOW_S


class SimulatedGateway:
    """An in-memory gateway for the demo and the simulator (thread-safe).

    Visitors ``arrive`` (preauthenticated), get authorised by the agent's commands,
    ``browse`` (counters grow) and ``leave``.
    """

    name = "simulated"

    def __init__(self, traffic_per_read: int = 0, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, GatewayClient] = {}
        # apply_config: the settings kept, and how many times they "restarted" the daemon
        self.config: ApplyConfigArgs | None = None
        self.restarts = 0
        # bytes each authorised client downloads between two reads (a tenth uploaded)
        self._traffic = traffic_per_read
        # session start times follow this clock (the simulator's accelerated one)
        self._clock = clock

    def populate(self, count: int, now: float) -> None:
        """Add ``count`` clients already authorised at ``now`` (tests and benchmarks)."""
        with self._lock:
            for i in range(count):
                mac = "02:5b:" + ":".join(f"{i >> sh & 255:02x}" for sh in (24, 16, 8, 0))
                ip = f"10.{46 + i // 62500}.{i // 250 % 250}.{i % 250 + 2}"
                self._clients[mac] = GatewayClient(mac, ip, True, now, 0, 0)

    def arrive(self, mac: str, ip: str) -> None:
        """A device joins the Wi-Fi and gets a DHCP lease."""
        with self._lock:
            self._clients.setdefault(mac, GatewayClient(mac=mac, ip=ip, authenticated=False))

    def browse(self, mac: str, up: int, down: int) -> None:
        """An authorised device moves data."""
        with self._lock:
            c = self._clients.get(mac)
            if c is not None and c.authenticated:
                self._clients[mac] = GatewayClient(
                    c.mac, c.ip, True, c.session_start, c.up_bytes + up, c.down_bytes + down
                )

    def leave(self, mac: str) -> None:
        """The device goes away."""
        with self._lock:
            self._clients.pop(mac, None)

    def clients(self) -> list[GatewayClient]:
        """Every simulated client (authorised ones first move ``traffic_per_read`` bytes)."""
        with self._lock:
            if self._traffic:
                for mac, c in self._clients.items():
                    if c.authenticated:
                        self._clients[mac] = dataclasses.replace(
                            c,
                            up_bytes=c.up_bytes + self._traffic // 10,
                            down_bytes=c.down_bytes + self._traffic,
                        )
            return list(self._clients.values())

    def authorize(
        self, mac: str, minutes: int, up_kbps: int, down_kbps: int, up_kb: int, down_kb: int
    ) -> None:
        """Mark a present client authorised."""
        with self._lock:
            c = self._clients.get(mac)
            if c is None:
                raise GatewayError("client not present at this gateway")
            if not c.authenticated:
                self._clients[mac] = GatewayClient(c.mac, c.ip, True, self._clock(), 0, 0)

    def deauthorize(self, mac: str) -> None:
        """Forget a client, as openNDS 9.1+ does."""
        with self._lock:
            self._clients.pop(mac, None)

    def is_up(self) -> bool:
        """Always up."""
        return True

    def apply_config(self, args: ApplyConfigArgs, force: bool = False) -> bool:
        """Keep the settings; a change (or ``force``) counts as one restart."""
        with self._lock:
            same = (
                self.config is not None
                and dataclasses.replace(self.config, version=args.version) == args
            )
            self.config = args
            if same and not force:
                return False
            self.restarts += 1
            return True
