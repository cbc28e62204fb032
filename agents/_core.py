"""The agent's sans-IO core: command checks, message numbering, client tracking.

Nothing here touches sockets, subprocesses, files or clocks: the IO layer passes bytes,
gateway snapshots and ``now`` in, and gets contract messages and decisions out.
Standard library only (the agent runs on OpenWrt's Python).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any, Final, Literal

from agents.contract import (
    COMMAND_ARGS,
    MAC_RE,
    MAX_BATCH,
    MAX_COMMAND_TTL_S,
    MAX_PAYLOAD_BYTES,
    VERSION,
    AcctEntry,
    AcctMsg,
    AckMsg,
    ClientEvent,
    ClientsMsg,
    Command,
    HealthMsg,
    StatusMsg,
    encode,
    signature_ok,
)

__all__ = [
    "CLOCK_TOLERANCE_S",
    "ENVELOPE_RESERVE",
    "ClientTracker",
    "CommandGuard",
    "CommandRefused",
    "Envelope",
    "GatewayClient",
    "batches",
]

# A command whose issue time lies further ahead than this is refused: the controller's
# and the AP's clocks may drift (NTP is not always up on a weak uplink), not by minutes.
CLOCK_TOLERANCE_S: Final = 300.0
# A list argument (a walled garden) longer than this is refused.
MAX_LIST_ARG: Final = 256


class CommandRefused(Exception):
    """A command was refused; ``reason`` is a short counter name, ``cmd_id`` when known.

    ``signed`` is True when the command carried a valid signature with this AP's key:
    only then may the agent answer it (an ack with ``ok=false``); an unsigned or
    wrongly signed command is never answered, so a forger learns nothing.
    """

    def __init__(self, reason: str, detail: str = "", cmd_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.cmd_id = cmd_id
        self.signed = False


class CommandGuard:
    """Refuses tampered, foreign, stale, early or replayed commands.

    The ids of accepted commands are remembered until their expiry (at most
    ``MAX_COMMAND_TTL_S``), which bounds the memory; the IO layer persists
    :meth:`remembered` so that a restart does not reopen the replay window.
    """

    def __init__(self, ap_id: str, key: bytes, remembered: dict[str, float] | None = None):
        self._ap = ap_id
        self._key = key
        self._seen: dict[str, float] = dict(remembered or {})
        # After a credential rotation: the previous key, still accepted until this time
        # (commands the controller signed before it learnt of the switch).
        self._previous: tuple[bytes, float] | None = None
        # The key that signed the last command :meth:`check` accepted.
        self.signed_with = key

    def rekey(self, key: bytes, previous_until: float) -> None:
        """Check signatures with ``key``; accept the current one until ``previous_until``."""
        if key != self._key:
            self._previous = (self._key, previous_until)
            self._key = key

    def _signed(self, fields: dict[str, Any], now: float) -> bytes | None:
        """The key that signed ``fields`` (current, or previous within its time), or None."""
        if signature_ok(fields, self._key):
            return self._key
        prev = self._previous
        if prev is not None and now <= prev[1] and signature_ok(fields, prev[0]):
            return prev[0]
        return None

    def remembered(self, now: float) -> dict[str, float]:
        """Ids still inside their validity window, with their expiry."""
        self._seen = {i: exp for i, exp in self._seen.items() if exp >= now}
        return dict(self._seen)

    def check(self, payload: bytes, now: float) -> tuple[Command, Any]:
        """Return the command and its typed arguments, or raise :class:`CommandRefused`."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandRefused("too_large", f"{len(payload)} bytes")
        try:
            fields = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandRefused("bad_json", str(exc)[:80]) from exc
        if not isinstance(fields, dict):
            raise CommandRefused("bad_shape", "not a JSON object")
        raw_id = fields.get("id")
        cmd_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
        # The signature comes first: nothing else of an unsigned payload is trusted.
        key = self._signed(fields, now)
        if key is None:
            raise CommandRefused("bad_signature", cmd_id=cmd_id)
        self.signed_with = key
        try:
            return self._check_signed(fields, cmd_id, now)
        except CommandRefused as exc:
            exc.signed = True
            raise

    def _check_signed(
        self, fields: dict[str, Any], cmd_id: str | None, now: float
    ) -> tuple[Command, Any]:
        try:
            cmd = Command(**fields)
        except TypeError as exc:
            raise CommandRefused("bad_shape", str(exc)[:80], cmd_id) from exc
        if not (
            cmd.v == VERSION
            and isinstance(cmd.id, str)
            and 0 < len(cmd.id) <= 64
            and isinstance(cmd.args, dict)
            and isinstance(cmd.iat, int | float)
            and isinstance(cmd.exp, int | float)
        ):
            raise CommandRefused("bad_shape", "wrong field types", cmd_id)
        if cmd.ap != self._ap:
            raise CommandRefused("wrong_ap", cmd.ap[:64], cmd_id)
        if cmd.exp < now:
            raise CommandRefused("expired", f"{now - cmd.exp:.0f} s ago", cmd_id)
        if cmd.iat > now + CLOCK_TOLERANCE_S:
            raise CommandRefused("not_yet_valid", f"issued {cmd.iat - now:.0f} s ahead", cmd_id)
        if cmd.exp - cmd.iat > MAX_COMMAND_TTL_S:
            raise CommandRefused("ttl_too_long", f"{cmd.exp - cmd.iat:.0f} s", cmd_id)
        if cmd.id in self._seen:
            raise CommandRefused("replayed", cmd.id, cmd_id)
        args = _parse_args(cmd)
        self._seen[cmd.id] = cmd.exp
        return cmd, args


def _parse_args(cmd: Command) -> Any:
    args_type = COMMAND_ARGS.get(cmd.cmd)
    if args_type is None:
        raise CommandRefused("unknown_command", str(cmd.cmd)[:32], cmd.id)
    try:
        args = args_type(**cmd.args)
    except TypeError as exc:
        raise CommandRefused("bad_args", str(exc)[:80], cmd.id) from exc
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if f.type in ("int", int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise CommandRefused("bad_args", f"{f.name} must be an integer", cmd.id)
            if not 0 <= value < 2**40:
                raise CommandRefused("bad_args", f"{f.name} out of range", cmd.id)
        elif f.type in ("list[str]", "list[int]"):
            item = str if f.type == "list[str]" else int
            if not isinstance(value, list) or len(value) > MAX_LIST_ARG:
                raise CommandRefused("bad_args", f"{f.name} must be a short list", cmd.id)
            if not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                raise CommandRefused("bad_args", f"{f.name} items of the wrong type", cmd.id)
        elif not isinstance(value, str):
            raise CommandRefused("bad_args", f"{f.name} must be a string", cmd.id)
    mac = getattr(args, "mac", None)
    if mac is not None and not MAC_RE.match(mac):
        raise CommandRefused("bad_args", "mac is not aa:bb:cc:dd:ee:ff", cmd.id)
    return args


class Envelope:
    """Numbers the messages of one agent run: a random ``boot`` and a growing ``seq``."""

    def __init__(self, ap_id: str, boot: str | None = None) -> None:
        self.ap = ap_id
        self.boot = boot or secrets.token_hex(8)
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def status(
        self,
        now: float,
        state: Literal["online", "offline"],
        *,
        agent_version: str,
        gateway: str,
        keepalive_s: int,
        reason: str | None = None,
        last_will: bool = False,
        config_version: int | None = None,
    ) -> StatusMsg:
        """A presence message; the Last Will uses the reserved sequence number 0."""
        return StatusMsg(
            v=VERSION,
            ap=self.ap,
            boot=self.boot,
            seq=0 if last_will else self._next(),
            ts=now,
            state=state,
            agent_version=agent_version,
            gateway=gateway,
            keepalive_s=keepalive_s,
            reason=reason,
            config_version=config_version,
        )

    def health(self, now: float, **fields: Any) -> HealthMsg:
        """A health report (fields as in :class:`HealthMsg`)."""
        return HealthMsg(v=VERSION, ap=self.ap, boot=self.boot, seq=self._next(), ts=now, **fields)

    def clients(self, now: float, events: list[ClientEvent], full: bool = False) -> ClientsMsg:
        """A batch of client events."""
        return ClientsMsg(
            v=VERSION,
            ap=self.ap,
            boot=self.boot,
            seq=self._next(),
            ts=now,
            events=events,
            full=full,
        )

    def acct(self, now: float, interval_s: int, entries: list[AcctEntry]) -> AcctMsg:
        """A batch of per-client counters."""
        return AcctMsg(
            v=VERSION,
            ap=self.ap,
            boot=self.boot,
            seq=self._next(),
            ts=now,
            interval_s=interval_s,
            entries=entries,
        )

    def ack(
        self,
        now: float,
        cmd_id: str,
        ok: bool,
        error: str | None = None,
        result: str | None = None,
    ) -> AckMsg:
        """The single answer to a command (``result``: what an accepted one did)."""
        return AckMsg(
            v=VERSION,
            ap=self.ap,
            boot=self.boot,
            seq=self._next(),
            ts=now,
            id=cmd_id,
            ok=ok,
            error=error,
            result=result,
        )


@dataclasses.dataclass(frozen=True)
class GatewayClient:
    """One client as the gateway daemon lists it (counters in bytes since session start)."""

    mac: str
    ip: str
    authenticated: bool
    session_start: float | None = None
    up_bytes: int = 0
    down_bytes: int = 0


# Room kept in a message for the envelope around its items (v, ap, boot, seq, ts, type,
# interval or full flag, sig: about 250 bytes).
ENVELOPE_RESERVE: Final = 2048


def batches(items: list[Any], limit: int = MAX_PAYLOAD_BYTES) -> list[list[Any]]:
    """Split items into messages the controller accepts (at least one, possibly empty).

    A batch holds at most ``MAX_BATCH`` items, and its items' JSON at most ``limit`` minus
    ``ENVELOPE_RESERVE`` bytes: with long values (64-bit counters, categories, port blocks)
    512 items would pass the 64 KiB a message may weigh, and the controller would refuse
    a message the broker had already acknowledged.
    """
    budget = limit - ENVELOPE_RESERVE
    out: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for item in items:
        item_size = len(encode(item)) + 1  # the comma
        if current and (len(current) == MAX_BATCH or size + item_size > budget):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    out.append(current)
    return out


class ClientTracker:
    """Turns successive gateway snapshots into ``seen``/``authorized``/``left`` events."""

    def __init__(self) -> None:
        self._known: dict[str, GatewayClient] = {}

    @property
    def count(self) -> int:
        """Clients currently listed by the gateway."""
        return len(self._known)

    def update(self, snapshot: list[GatewayClient], now: float) -> list[ClientEvent]:
        """Diff ``snapshot`` against the previous one."""
        events: list[ClientEvent] = []
        current = {c.mac: c for c in snapshot}
        for mac, c in current.items():
            before = self._known.get(mac)
            if c.authenticated and (before is None or not before.authenticated):
                if before is None:
                    events.append(ClientEvent(event="seen", mac=mac, ip=c.ip, at=now))
                events.append(ClientEvent(event="authorized", mac=mac, ip=c.ip, at=now))
            elif before is None:
                events.append(ClientEvent(event="seen", mac=mac, ip=c.ip, at=now))
        for mac, before in self._known.items():
            if mac not in current:
                events.append(ClientEvent(event="left", mac=mac, ip=before.ip, at=now))
        self._known = current
        return events

    def full_list(self, now: float) -> list[ClientEvent]:
        """The whole current population, as ``seen``/``authorized`` events."""
        return [
            ClientEvent(
                event="authorized" if c.authenticated else "seen", mac=c.mac, ip=c.ip, at=now
            )
            for c in self._known.values()
        ]

    def accounting(self, now: float) -> list[AcctEntry]:
        """Counters of every authenticated client."""
        return [
            AcctEntry(
                mac=c.mac,
                ip=c.ip,
                session_start=c.session_start or now,
                up_bytes=c.up_bytes,
                down_bytes=c.down_bytes,
            )
            for c in self._known.values()
            if c.authenticated
        ]
