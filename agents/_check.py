"""``borne agent --check``: diagnose an access point's agent and say what is wrong.

Checks, in order, each with a verdict and a hint in French then English: the
configuration file, the state folder (the spool lives there), the broker's TCP port,
TLS (handshake and certificate, when enabled), the MQTT login (CONNACK), and the
gateway daemon (``ndsctl status``), and when configured the files ``apply_config`` manages
and the DHCP sniffer's scapy and interface. Nothing is published and no state is changed,
except a probe file created and removed in the state folder.
Standard library + paho-mqtt only.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agents._uci import Uci, UciError, detect_writer, find_dhcp_section
from agents.config import AgentConfig, AgentConfigError, load_agent_config
from agents.gateway import Gateway, NdsctlGateway, SimulatedGateway

__all__ = ["Finding", "format_findings", "run_checks"]


@dataclass(frozen=True)
class Finding:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str


def _tcp(cfg: AgentConfig, timeout: float) -> Finding:
    t0 = time.monotonic()
    try:
        with socket.create_connection((cfg.mqtt_host, cfg.mqtt_port), timeout=timeout):
            pass
    except OSError as exc:
        return Finding(
            "broker",
            False,
            f"{cfg.mqtt_host}:{cfg.mqtt_port} injoignable / unreachable: {exc}",
        )
    ms = (time.monotonic() - t0) * 1000
    return Finding(
        "broker", True, f"{cfg.mqtt_host}:{cfg.mqtt_port} joignable / reachable ({ms:.0f} ms)"
    )


def _tls(cfg: AgentConfig, timeout: float) -> Finding:
    if not cfg.mqtt_tls:
        return Finding(
            "tls",
            cfg.mqtt_host in ("127.0.0.1", "localhost", "::1"),
            "TLS désactivé / TLS disabled"
            + ("" if cfg.mqtt_host in ("127.0.0.1", "localhost", "::1") else
               " : mot de passe en clair sur le réseau / password sent in clear"),
        )  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=cfg.mqtt_ca_file)
    except (OSError, ssl.SSLError) as exc:
        return Finding("tls", False, f"CA illisible / CA file unreadable: {exc}")
    try:
        with (
            socket.create_connection((cfg.mqtt_host, cfg.mqtt_port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=cfg.mqtt_host) as tls,
        ):
            cert = tls.getpeercert() or {}
            not_after = cert.get("notAfter")
    except ssl.SSLCertVerificationError as exc:
        return Finding(
            "tls", False, f"certificat refusé / certificate rejected: {exc.verify_message}"
        )
    except (OSError, ssl.SSLError) as exc:
        return Finding("tls", False, f"poignée de main échouée / handshake failed: {exc}")
    return Finding("tls", True, f"certificat valide / certificate valid (until {not_after})")


def _mqtt_login(cfg: AgentConfig, timeout: float) -> Finding:
    result: queue.Queue[Any] = queue.Queue()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"borne-check-{cfg.ap_id}",
        clean_session=True,
    )
    if cfg.mqtt_username:
        client.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
    if cfg.mqtt_tls:
        client.tls_set_context(ssl.create_default_context(cafile=cfg.mqtt_ca_file))
    client.on_connect = lambda c, u, f, rc, p: result.put(rc)
    try:
        client.connect(cfg.mqtt_host, cfg.mqtt_port, keepalive=10)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Finding("mqtt", False, f"connexion impossible / cannot connect: {exc}")
    deadline = time.monotonic() + timeout
    rc: Any = None
    while rc is None and time.monotonic() < deadline:
        alive = client.loop(timeout=0.1) == mqtt.MQTT_ERR_SUCCESS
        try:
            rc = result.get_nowait()
        except queue.Empty:
            if not alive:
                break
    client.disconnect()
    if rc is None:
        return Finding("mqtt", False, "pas de réponse CONNACK / no CONNACK from the broker")
    if rc.is_failure:
        return Finding("mqtt", False, f"identifiants refusés / login refused: {rc}")
    who = cfg.mqtt_username or "anonyme / anonymous"
    return Finding("mqtt", True, f"connecté en tant que / logged in as {who}")


def _state_dir(cfg: AgentConfig) -> Finding:
    path = Path(cfg.state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".borne-check"
        with probe.open("w") as fh:
            fh.write("ok")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        return Finding("state_dir", False, f"{path} non inscriptible / not writable: {exc}")
    free = os.statvfs(path)
    mib = free.f_bavail * free.f_frsize // (1024 * 1024)
    ok = free.f_bavail * free.f_frsize >= cfg.spool_max_bytes
    return Finding(
        "state_dir",
        ok,
        f"{path} inscriptible / writable, {mib} MiB libres / free"
        + ("" if ok else " : moins que spool_max_bytes / less than spool_max_bytes"),
    )


def _gateway(cfg: AgentConfig, gateway: Gateway | None) -> Finding:
    gw = gateway or (
        SimulatedGateway() if cfg.gateway == "simulated" else NdsctlGateway(cfg.ndsctl)
    )
    if gw.is_up():
        return Finding("gateway", True, f"{gw.name} répond / answers")
    return Finding(
        "gateway",
        False,
        f"{gw.name} ne répond pas / does not answer ({cfg.ndsctl} status): "
        "openNDS est-il démarré ? / is openNDS running?",
    )


def _managed_uci(cfg: AgentConfig) -> Finding:
    """apply_config under UCI: uci answers, openNDS's section and the DHCP section exist."""
    uci = Uci(cfg.uci_command, timeout_s=10)
    try:
        opennds, dhcp = uci.show("opennds"), uci.show("dhcp")
        if not any(s.type == "opennds" for s in opennds):
            raise UciError("no 'opennds' section in /etc/config/opennds")
        lan = cfg.uci_dhcp_section or find_dhcp_section(opennds, uci.show("network"), dhcp)
        if lan not in {s.name for s in dhcp}:
            raise UciError(f"no section {lan!r} in /etc/config/dhcp")
    except UciError as exc:
        return Finding("apply_config", False, f"UCI : {exc}")
    return Finding("apply_config", True, f"UCI : opennds, option 114 → dhcp.{lan}")


def _managed_files(cfg: AgentConfig) -> Finding | None:
    """apply_config's files: openNDS's file exists and can be replaced, so can dnsmasq's."""
    writer = detect_writer(cfg.gateway_config)
    if writer == "uci":
        return _managed_uci(cfg)
    if writer == "off" or (not cfg.opennds_config and not cfg.dnsmasq_conf):
        return None
    problems: list[str] = []
    for path in (cfg.opennds_config, cfg.dnsmasq_conf):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if path == cfg.opennds_config and not os.path.isfile(path):
            problems.append(f"{path} absent / missing")
        elif not os.access(folder, os.W_OK):
            problems.append(f"{folder} non inscriptible / not writable")
    if cfg.dnsmasq_conf and not cfg.dnsmasq_restart_cmd:
        problems.append("dnsmasq_restart_cmd vide / empty: option 114 not reloaded")
    if cfg.opennds_config and not (cfg.opennds_restart_cmd or cfg.gateway_restart_cmd):
        problems.append("opennds_restart_cmd vide / empty: openNDS not restarted")
    if problems:
        return Finding("apply_config", False, "; ".join(problems))
    return Finding("apply_config", True, "fichiers gérés accessibles / managed files writable")


def _sniffer(cfg: AgentConfig) -> Finding | None:
    if not cfg.dhcp_sniff_interface:
        return None
    try:
        import scapy  # noqa: F401
    except ImportError:
        return Finding(
            "dhcp_sniffer",
            False,
            "scapy absent / missing: pip install 'borne[sniffer]' (ou / or python3-scapy)",
        )
    if not os.path.exists(f"/sys/class/net/{cfg.dhcp_sniff_interface}"):
        return Finding(
            "dhcp_sniffer", False, f"{cfg.dhcp_sniff_interface}: interface absente / missing"
        )
    return Finding("dhcp_sniffer", True, f"scapy présent / present, {cfg.dhcp_sniff_interface}")


def run_checks(
    path: Path, *, timeout: float = 5.0, gateway: Gateway | None = None
) -> list[Finding]:
    """Every check for the agent configured by ``path`` (stops after a bad configuration)."""
    try:
        cfg = load_agent_config(path)
    except AgentConfigError as exc:
        return [Finding("config", False, f"{p}: {m}") for p, m in exc.problems]
    found = [Finding("config", True, f"{path}: OK (ap_id {cfg.ap_id})"), _state_dir(cfg)]
    tcp = _tcp(cfg, timeout)
    found.append(tcp)
    if tcp.ok:
        found.append(_tls(cfg, timeout))
        found.append(_mqtt_login(cfg, timeout))
    found.append(_gateway(cfg, gateway))
    found += [f for f in (_managed_files(cfg), _sniffer(cfg)) if f is not None]
    return found


def format_findings(found: list[Finding]) -> str:
    """Human-readable report, one line per check."""
    lines = [f"[{'OK' if f.ok else 'ÉCHEC/FAIL'}] {f.name}: {f.detail}" for f in found]
    bad = sum(1 for f in found if not f.ok)
    lines.append("Tout va bien / all good" if not bad else f"{bad} problème(s) / problem(s) found")
    return "\n".join(lines)
