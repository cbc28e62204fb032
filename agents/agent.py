"""The borne agent: reports an access point's gateway to the controller over MQTT.

It reads the gateway (``ndsctl json``), publishes ``status`` (retained, with a Last
Will), ``health``, ``clients`` and ``acct``, and executes signed ``authorize`` /
``deauthorize`` / ``sync`` commands, acknowledging each command id once.

Every message (but the Last Will and the goodbye ``offline`` status) goes through the
offline spool (:mod:`agents._spool`): sealed with its original ``boot``, ``seq`` and
``ts``, written durably, handed to MQTT in order, and removed only after the broker's
PUBACK. ``health`` is a live reading: it is taken only while connected.

Threads: paho's network thread (owned by :class:`MqttLink`) only enqueues incoming
commands and PUBACKs; everything else runs in the thread that calls :meth:`Agent.run`.
Standard library + paho-mqtt only.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from agents._apply import ConfigApplier
from agents._core import ClientTracker, CommandGuard, CommandRefused, Envelope, batches
from agents._dhcp import Lease, read_leases
from agents._health import read_interfaces, read_temperature
from agents._mqtt_io import LinkOptions, MqttLink
from agents._nat import IptablesNat, NatError, PortBlocks, from_config, with_blocks
from agents._spool import Position, Spool
from agents.config import AgentConfig, AgentConfigError, write_credentials
from agents.contract import (
    MAX_COMMAND_TTL_S,
    ApplyConfigArgs,
    AuthorizeArgs,
    ClientEvent,
    Command,
    DeauthorizeArgs,
    RotateCredentialsArgs,
    SyncArgs,
    agent_subscription,
    open_credentials,
    seal,
    topic,
)
from agents.gateway import Gateway, GatewayError, run_restart

if TYPE_CHECKING:  # scapy is optional: imported only when the sniffer is configured
    from agents._dhcp_sniff import DhcpSniffer

__all__ = ["AGENT_VERSION", "Agent"]

AGENT_VERSION = "0.1.0"
logger = logging.getLogger(__name__)

# Commands waiting for the agent's thread; more than this in flight means a flood.
COMMAND_QUEUE = 256
# Spooled messages handed to paho and not yet acknowledged by the broker: below paho's
# own in-flight limit (100), so that paho never holds back a message we counted as sent.
SEND_WINDOW = 64
# Refused command ids already answered (bounded: only correctly signed ones count).
REFUSED_REMEMBERED = 1024


class Agent:
    """One agent for one access point."""

    def __init__(
        self,
        config: AgentConfig,
        gateway: Gateway,
        *,
        clock: Callable[[], float] = time.time,
        backoff_cap_s: float = 30.0,
        persist_state: bool = True,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        # Where rotate_credentials writes the new credentials (None: it is refused).
        self._config_path = config_path
        self._relogin = False
        self.gateway = gateway
        self.clock = clock
        self.counters: collections.Counter[str] = collections.Counter()
        self._cmd_topic = agent_subscription(config.ap_id)
        self.envelope = Envelope(config.ap_id)
        self._state_file = Path(config.state_dir) / "commands.json" if persist_state else None
        self._key = config.command_key.encode()
        self.guard = CommandGuard(config.ap_id, self._key, self._load_remembered())
        self.tracker = ClientTracker()
        self._commands: queue.Queue[bytes | None] = queue.Queue(maxsize=COMMAND_QUEUE)
        self._resync = threading.Event()
        self._connected_again = threading.Event()
        self._pubacks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._waking = threading.Event()
        # [mid, end position in the spool, acknowledged, sent at (monotonic)], in order
        self._inflight: collections.deque[list[Any]] = collections.deque()
        self._refused_acked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._started = clock()
        self._spool: Spool | None = None
        self._spool_dir = Path(config.state_dir)
        self.broker_rtt_ms: float | None = None
        self.clock_offset_s: float | None = None
        self._gw_failures = 0
        self._last_restart = float("-inf")
        self.nat: IptablesNat | None = None
        # apply_config: versioned gateway settings (agents/_apply.py); what the last
        # accepted command did ("applied", "unchanged"), for its ack.
        self.applier = ConfigApplier(
            gateway,
            Path(config.state_dir) / f"config-{config.ap_id}.json" if persist_state else None,
        )
        self._result: str | None = None
        # DHCP view without a lease file (agents/_dhcp_sniff.py, optional scapy).
        self.sniffer: DhcpSniffer | None = None
        will = self.envelope.status(
            clock(),
            "offline",
            agent_version=AGENT_VERSION,
            gateway=gateway.name,
            keepalive_s=config.keepalive_s,
            reason="lost",
            last_will=True,
        )
        self.link = MqttLink(
            LinkOptions(
                client_id=f"borne-agent-{config.ap_id}",
                host=config.mqtt_host,
                port=config.mqtt_port,
                keepalive_s=config.keepalive_s,
                username=config.mqtt_username,
                password=config.mqtt_password,
                tls=config.mqtt_tls,
                ca_file=config.mqtt_ca_file,
                clean_session=True,
                backoff_cap_s=backoff_cap_s,
            ),
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_publish=self._on_publish,
            will=(topic(config.ap_id, "status"), seal(will, self._key), 1, True),
        )

    @property
    def spool(self) -> Spool:
        """The offline spool, opened on first use (in the agent's thread, not the caller's)."""
        if self._spool is None:
            if self._state_file is None:
                # persist_state=False (demo, tests): durable within this run only, never
                # replayed by another run that happens to reuse the AP id.
                self._spool_dir = Path(tempfile.mkdtemp(prefix=f"borne-spool-{self.config.ap_id}-"))
            else:
                # One directory per AP id: several agents may share one state_dir.
                self._spool_dir = Path(self.config.state_dir) / f"spool-{self.config.ap_id}"
            self._spool = Spool(
                self._spool_dir,
                max_bytes=self.config.spool_max_bytes,
                max_age_s=self.config.spool_max_age_s,
            )
            if self._spool.pending:
                logger.info("spool: %d record(s) of a previous run to replay", self._spool.pending)
        return self._spool

    # persistence of executed command ids (replay protection across restarts) ---------
    def _load_remembered(self) -> dict[str, float]:
        if self._state_file is None:
            return {}
        try:
            data = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("command state unreadable, starting empty: %s", exc)
            self.counters["state_unreadable"] += 1
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}

    def _save_remembered(self) -> None:
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(self.guard.remembered(self.clock()), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_file)

    # MQTT callbacks (network thread) -------------------------------------------------
    def _on_connect(self, link: MqttLink) -> None:
        link.subscribe(self._cmd_topic, qos=1)
        self._connected_again.set()
        self._resync.set()
        self._wake()

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self._cmd_topic:
            # A broker may deliver what was never asked for (retained messages of other
            # topics after a reconnection): only this AP's command topic is read.
            self.counters["foreign_topic_ignored"] += 1
            logger.debug("message on a foreign topic ignored: %s", msg.topic)
            return
        try:
            self._commands.put_nowait(bytes(msg.payload))
        except queue.Full:
            self.counters["command_dropped_queue_full"] += 1
            logger.warning("command queue full, command dropped")

    def _on_publish(self, mid: int) -> None:
        self._pubacks.put(mid)
        self._wake()

    def _wake(self) -> None:
        """Interrupt the agent thread's wait (at most one wake-up token queued)."""
        if not self._waking.is_set():
            self._waking.set()
            try:
                self._commands.put_nowait(None)
            except queue.Full:
                self._waking.clear()

    # publishing ----------------------------------------------------------------------
    def _publish(self, kind: str, msg: Any, retain: bool = False) -> None:
        """Spool a message durably; :meth:`pump` sends it in order."""
        payload = seal(msg, self._key)
        self.spool.append([(topic(self.config.ap_id, kind), payload, retain)], self.clock())
        self.counters[f"published_{kind}"] += 1

    def _publish_status_online(self) -> None:
        self._publish(
            "status",
            self.envelope.status(
                self.clock(),
                "online",
                agent_version=AGENT_VERSION,
                gateway=self.gateway.name,
                keepalive_s=self.config.keepalive_s,
                config_version=self.applier.version,
            ),
            retain=True,
        )

    def pump(self) -> None:
        """Trim what the broker acknowledged, then hand the next spooled records to MQTT."""
        if self._connected_again.is_set():
            self._connected_again.clear()
            # After the backlog: the controller sees this boot's status once the
            # records of a previous boot (still in the spool) have been replayed.
            self._publish_status_online()
        acked: set[int] = set()
        while True:
            try:
                acked.add(self._pubacks.get_nowait())
            except queue.Empty:
                break
        if acked:
            for entry in self._inflight:
                if not entry[2] and entry[0] in acked:
                    entry[2] = True
                    acked.discard(entry[0])
                    # PUBLISH → PUBACK: the uplink's round trip to the broker
                    self.broker_rtt_ms = (time.monotonic() - entry[3]) * 1000.0
            # Every record handed out is registered before PUBACKs are read, so a mid
            # left over belongs to a message outside the spool (the offline status).
            end: Position | None = None
            while self._inflight and self._inflight[0][2]:
                end = self._inflight.popleft()[1]
            if end is not None:
                self.spool.acknowledge(end, self.clock())
        if not self.link.connected.is_set():
            return
        for rec in self.spool.next_batch(SEND_WINDOW - len(self._inflight)):
            info = self.link.publish(rec.topic, rec.payload, qos=1, retain=rec.retain)
            self._inflight.append([info.mid, rec.end, False, time.monotonic()])
            self.counters["sent_from_spool"] += 1
        self._relogin_when_idle()

    # the work ------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the gateway and publish what changed."""
        now = self.clock()
        try:
            snapshot = self.gateway.clients()
        except GatewayError as exc:
            self.counters["gateway_errors"] += 1
            logger.warning("gateway unreadable: %s", exc)
            self._gw_failures += 1
            self._watchdog()
            return
        self._gw_failures = 0
        events = self.tracker.update(snapshot, now)
        full = self._resync.is_set()
        if full:
            self._resync.clear()
            events = self.tracker.full_list(now)
        if (self.config.dhcp_leases or self.sniffer is not None) and events:
            events = self._with_categories(events)
        blocks = self._nat_blocks()
        if blocks is not None:
            events = with_blocks(events, blocks)
        if events or full:
            for batch in batches(events):
                self._publish("clients", self.envelope.clients(now, batch, full=full))

    def _with_categories(self, events: list[ClientEvent]) -> list[ClientEvent]:
        """Add the coarse device category of ``seen`` clients from the DHCP leases."""
        if self.sniffer is not None:
            leases: dict[str, Lease] | None = self.sniffer.leases()
        else:
            leases = read_leases(self.config.dhcp_leases)
        if leases is None:
            self.counters["dhcp_leases_unreadable"] += 1
            return events
        return [
            dataclasses.replace(ev, category=leases[ev.mac].category)
            if ev.event == "seen" and ev.mac in leases
            else ev
            for ev in events
        ]

    def _watchdog(self) -> None:
        """Restart a gateway daemon that stopped answering, and say so (log, counter)."""
        cmd = self.config.gateway_restart_cmd
        if not cmd or self._gw_failures < self.config.watchdog_failures:
            return
        if time.monotonic() - self._last_restart < self.config.watchdog_cooldown_s:
            return
        self._last_restart = time.monotonic()
        self.counters["gateway_restarts"] += 1
        logger.warning("gateway daemon stuck (%d failed reads): running %r", self._gw_failures, cmd)
        try:
            run_restart("gateway", cmd)
        except GatewayError as exc:
            self.counters["gateway_restart_failed"] += 1
            logger.error("%s", exc)

    def publish_acct(self) -> None:
        """Publish every authorised client's counters."""
        now = self.clock()
        entries = self.tracker.accounting(now)
        if not entries:
            return
        blocks = self._nat_blocks()
        if blocks is not None:
            entries = with_blocks(entries, blocks)
        for batch in batches(entries):
            self._publish("acct", self.envelope.acct(now, self.config.acct_interval_s, batch))

    def publish_health(self) -> None:
        """Publish the AP's health if connected: a reading taken offline is not back-filled.

        It still goes through the spool, so that every message of a boot is numbered,
        kept and delivered in one order (the controller can see a hole in ``seq``).
        """
        now = self.clock()
        self.spool.enforce_age(now)
        self._start_nat()
        if not self.link.connected.is_set():
            self.counters["health_skipped_offline"] += 1
            return
        self._publish(
            "health",
            self.envelope.health(
                now,
                **_host_health(
                    self.config.state_dir,
                    now - self._started,
                    self.tracker.count,
                    self.gateway.is_up(),
                ),
                broker_rtt_ms=self.broker_rtt_ms,
                clock_offset_s=self.clock_offset_s,
                temperature_c=read_temperature(),
                interfaces=read_interfaces(),
                spool_pending=self.spool.pending,
                spool_dropped=self.spool.counters["spool_dropped_size"]
                + self.spool.counters["spool_dropped_age"],
                gateway_restarts=self.counters["gateway_restarts"],
                nat_ok=None if not self.config.nat_interface else self._nat_blocks() is not None,
            ),
        )

    def _start_nat(self) -> None:
        """Install the NAT port blocks once (when configured); a failure is logged,
        counted, and retried at each health report. Until they are in place, no block
        is reported: a session never claims ports it does not have."""
        if not self.config.nat_interface or (self.nat is not None and self.nat.installed):
            return
        try:
            if self.nat is None:
                self.nat = from_config(self.config)
            if self.nat is not None:
                self.nat.install()
        except NatError as exc:
            self.counters["nat_install_failed"] += 1
            logger.error("NAT port blocks not installed: %s", exc)

    def _nat_blocks(self) -> PortBlocks | None:
        return self.nat.blocks if self.nat is not None and self.nat.installed else None

    def handle_command(self, payload: bytes) -> None:
        """Check, execute and acknowledge one command."""
        now = self.clock()
        try:
            cmd, args = self.guard.check(payload, now)
        except CommandRefused as exc:
            self.counters[f"command_refused_{exc.reason}"] += 1
            logger.warning("command refused: %s", exc)
            self._ack_refused(exc, now)
            return
        # The controller's clock, as the command's issue time says (plus transit time).
        self.clock_offset_s = now - cmd.iat
        self._save_remembered()
        self._result = None
        error = self._execute(cmd, args)
        self.counters["commands_ok" if error is None else "commands_failed"] += 1
        result = self._result if error is None else None
        self._publish("ack", self.envelope.ack(self.clock(), cmd.id, error is None, error, result))
        self.poll()

    def _ack_refused(self, exc: CommandRefused, now: float) -> None:
        """Answer a refused command with ``ok=false``, only when it was signed by our key.

        An unsigned or wrongly signed command is never answered; a command for another AP
        is not answered under this AP's name; each id is answered once.
        """
        if not exc.signed or exc.cmd_id is None or exc.reason == "wrong_ap":
            return
        if exc.cmd_id in self._refused_acked:
            return
        self._refused_acked[exc.cmd_id] = None
        while len(self._refused_acked) > REFUSED_REMEMBERED:
            self._refused_acked.popitem(last=False)
        self.counters["commands_refused_acked"] += 1
        self._publish("ack", self.envelope.ack(now, exc.cmd_id, False, f"refused: {exc.reason}"))

    def _execute(self, cmd: Command, args: Any) -> str | None:
        try:
            match args:
                case AuthorizeArgs():
                    self.gateway.authorize(
                        args.mac,
                        args.minutes,
                        args.up_kbps,
                        args.down_kbps,
                        args.up_quota_kb,
                        args.down_quota_kb,
                    )
                case DeauthorizeArgs():
                    self.gateway.deauthorize(args.mac)
                case SyncArgs():
                    self._resync.set()
                case RotateCredentialsArgs():
                    return self._rotate(args)
                case ApplyConfigArgs():
                    self._result = self.applier.apply(args)
                    self.counters[f"config_{self._result}"] += 1
                case _:
                    return f"unsupported command {cmd.cmd}"
        except GatewayError as exc:
            logger.warning("command %s failed: %s", cmd.cmd, exc)
            return str(exc)[:200]
        return None

    def _rotate(self, args: RotateCredentialsArgs) -> str | None:
        """Write the new credentials to the configuration file, then switch to them.

        Idempotent: credentials already in use are acknowledged without a write. The
        previous key still authenticates commands for ``MAX_COMMAND_TTL_S`` (those the
        controller signed before it saw the switch; no longer than the controller's grace
        period); the new MQTT login is used at once
        (a clean reconnection once the acknowledgement is out: no Last Will).
        """
        try:
            new = open_credentials(self.guard.signed_with, args.nonce, args.sealed)
            key, user, password = new["command_key"], new["mqtt_username"], new["mqtt_password"]
            # The old key signs no command after the controller's grace period.
            keep_old_s = min(float(new.get("grace_s", MAX_COMMAND_TTL_S)), MAX_COMMAND_TTL_S)
        except (ValueError, KeyError):
            return "rotate_credentials: unreadable credentials"
        current = (self.config.command_key, self.config.mqtt_username, self.config.mqtt_password)
        if (key, user, password) == current:
            return None
        if self._config_path is None:
            return "rotate_credentials: no configuration file to write"
        try:
            self.config = write_credentials(self._config_path, key, user, password)
        except AgentConfigError as exc:
            return f"rotate_credentials: {exc}"[:200]
        self._key = key.encode()
        self.guard.rekey(self._key, self.clock() + keep_old_s)
        self.link.options.username, self.link.options.password = user, password
        self.link.client.username_pw_set(user, password)
        will = self.envelope.status(
            self.clock(),
            "offline",
            agent_version=AGENT_VERSION,
            gateway=self.gateway.name,
            keepalive_s=self.config.keepalive_s,
            reason="lost",
            last_will=True,
        )
        self.link.client.will_set(
            topic(self.config.ap_id, "status"), seal(will, self._key), qos=1, retain=True
        )
        self._relogin = True
        self.counters["credentials_rotated"] += 1
        logger.info("credentials rotated: new command key and MQTT login %s", user)
        return None

    def _relogin_when_idle(self) -> None:
        """After a rotation, reconnect with the new login once everything sent is acked."""
        if self._relogin and not self._inflight and not self.spool.pending:
            self._relogin = False
            logger.info("reconnecting with the new MQTT login")
            self.link.client.disconnect()

    def _start_sniffer(self) -> None:
        """The optional DHCP sniffer (scapy): a missing scapy is logged, not fatal."""
        if not self.config.dhcp_sniff_interface:
            return
        from agents._dhcp_sniff import DhcpSniffer, SnifferUnavailable

        try:
            sniffer = DhcpSniffer(self.config.dhcp_sniff_interface, clock=self.clock)
            sniffer.start()
        except SnifferUnavailable as exc:
            self.counters["dhcp_sniffer_unavailable"] += 1
            logger.error("no DHCP view: %s", exc)
            return
        self.sniffer = sniffer

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then say goodbye (retained offline status)."""
        self._start_nat()
        self._start_sniffer()
        self._publish_status_online()
        self.link.start()
        next_poll = next_acct = next_health = time.monotonic()
        try:
            while not stop.is_set():
                self.pump()
                now = time.monotonic()
                if now >= next_poll:
                    self.poll()
                    next_poll = now + self.config.poll_interval_s
                if now >= next_acct:
                    self.publish_acct()
                    next_acct = now + self.config.acct_interval_s
                if now >= next_health:
                    self.publish_health()
                    next_health = now + self.config.health_interval_s
                wait = max(0.0, min(next_poll, next_acct, next_health) - time.monotonic())
                try:
                    payload = self._commands.get(timeout=min(wait, 0.5))
                except queue.Empty:
                    continue
                if payload is None:
                    self._waking.clear()
                    continue
                self.handle_command(payload)
        finally:
            if self.sniffer is not None:
                self.sniffer.stop()
            self.shutdown()

    def shutdown(self) -> None:
        """Drain the spool (a few seconds at most), say offline, disconnect, persist the head."""
        deadline = time.monotonic() + 5.0
        self.pump()
        while (
            self.link.connected.is_set()
            and (self.spool.pending or self._inflight)
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
            self.pump()
        if self.link.connected.is_set():
            info = self.link.publish(
                topic(self.config.ap_id, "status"),
                seal(
                    self.envelope.status(
                        self.clock(),
                        "offline",
                        agent_version=AGENT_VERSION,
                        gateway=self.gateway.name,
                        keepalive_s=self.config.keepalive_s,
                        reason="shutdown",
                    ),
                    self._key,
                ),
                qos=1,
                retain=True,
            )
            try:
                info.wait_for_publish(timeout=3.0)
            except (RuntimeError, ValueError) as exc:
                logger.info("offline status not confirmed: %s", exc)
        self.pump()
        self.link.stop()
        if self.nat is not None and self.nat.installed:
            try:
                self.nat.remove()
            except NatError as exc:
                self.counters["nat_remove_failed"] += 1
                logger.error("NAT port blocks not removed: %s", exc)
        if self._spool is not None:
            self._spool.close()
            if self._state_file is None:
                shutil.rmtree(self._spool_dir, ignore_errors=True)


def _read_first(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read(4096)
    except OSError:
        return ""


def _host_health(state_dir: str, agent_uptime: float, clients: int, gw_up: bool) -> dict[str, Any]:
    uptime = _read_first("/proc/uptime").split()
    load = _read_first("/proc/loadavg").split()
    mem: dict[str, int] = {}
    for line in _read_first("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().split():
            mem[name] = int(rest.strip().split()[0])
    probe = state_dir if os.path.isdir(state_dir) else "/"
    disk_free = shutil.disk_usage(probe).free // 1024
    return {
        "uptime_s": float(uptime[0]) if uptime else agent_uptime,
        "load1": float(load[0]) if load else 0.0,
        "mem_total_kb": mem.get("MemTotal", 0),
        "mem_available_kb": mem.get("MemAvailable", 0),
        "disk_free_kb": int(disk_free),
        "clients": clients,
        "gateway_up": gw_up,
        "agent_version": AGENT_VERSION,
    }
