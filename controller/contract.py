"""Validation of agent messages on the controller side of the MQTT contract.

The shapes come from ``agents.contract`` (the single source of truth); this module adds
pydantic's strict validation and the bounds that the agent's stdlib dataclasses cannot
express. ``decode`` either returns a typed message or raises ``Rejected`` with a short
reason that the caller counts. It does no IO.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pydantic import TypeAdapter, ValidationError

from agents.contract import (
    AP_ID_RE,
    MAC_RE,
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    AcctEntry,
    AcctMsg,
    AckMsg,
    ClientEvent,
    ClientsMsg,
    HealthMsg,
    StatusMsg,
    parse_topic,
    signature_ok,
)

__all__ = ["ADAPTERS", "AgentMessage", "Rejected", "decode"]

AgentMessage = StatusMsg | HealthMsg | ClientsMsg | AcctMsg | AckMsg

ADAPTERS: Final[dict[str, TypeAdapter[AgentMessage]]] = {
    "status": TypeAdapter(StatusMsg),
    "health": TypeAdapter(HealthMsg),
    "clients": TypeAdapter(ClientsMsg),
    "acct": TypeAdapter(AcctMsg),
    "ack": TypeAdapter(AckMsg),
}

_BOOT_MAX = 32
_TS_MIN = 1_500_000_000.0  # 2017: a device clock before this is unset, not skewed
_COUNTER_MAX = 2**64 - 1


@dataclass(frozen=True)
class Rejected(Exception):
    """An incoming message was refused; ``reason`` is a counter name."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _check_ip(ip: str) -> None:
    try:
        ipaddress.ip_address(ip)
    except ValueError as exc:
        raise Rejected("bad_value", "ip is not an IP address") from exc


def _check_nat(item: ClientEvent | AcctEntry) -> None:
    """A NAT port block comes whole (public IP, first and last port) and makes sense."""
    parts = (item.public_ip, item.port_start, item.port_end)
    if all(p is None for p in parts):
        return
    if item.public_ip is None or item.port_start is None or item.port_end is None:
        raise Rejected("bad_value", "public_ip, port_start and port_end go together")
    _check_ip(item.public_ip)
    if not 1 <= item.port_start <= item.port_end <= 65535:
        raise Rejected("bad_value", "port block outside 1-65535 or reversed")


def _bounds(msg: AgentMessage) -> None:
    if not (0 < len(msg.boot) <= _BOOT_MAX) or not msg.boot.isalnum():
        raise Rejected("bad_value", "boot must be 1-32 letters or digits")
    if msg.seq < 0 or msg.seq >= 2**63:
        raise Rejected("bad_value", "seq out of range")
    if isinstance(msg, StatusMsg) and msg.seq == 0 and msg.state != "offline":
        raise Rejected("bad_value", "seq 0 is reserved for the Last Will")
    if not msg.ts >= _TS_MIN:
        raise Rejected("bad_value", "ts before 2017: the device clock is unset")
    if isinstance(msg, ClientsMsg):
        if len(msg.events) > MAX_BATCH:
            raise Rejected("bad_value", "too many events in one message")
        for ev in msg.events:
            if not MAC_RE.match(ev.mac):
                raise Rejected("bad_value", "mac is not aa:bb:cc:dd:ee:ff")
            _check_ip(ev.ip)
            _check_nat(ev)
    if isinstance(msg, AcctMsg):
        if len(msg.entries) > MAX_BATCH:
            raise Rejected("bad_value", "too many entries in one message")
        for e in msg.entries:
            if not MAC_RE.match(e.mac):
                raise Rejected("bad_value", "mac is not aa:bb:cc:dd:ee:ff")
            _check_ip(e.ip)
            _check_nat(e)
            if not (0 <= e.up_bytes <= _COUNTER_MAX and 0 <= e.down_bytes <= _COUNTER_MAX):
                raise Rejected("bad_value", "byte counter outside 64 bits")
    if isinstance(msg, AckMsg) and not 0 < len(msg.id) <= 64:
        raise Rejected("bad_value", "command id length")


def decode(
    topic_name: str,
    payload: bytes,
    key_for: Callable[[str], bytes | tuple[bytes, ...] | None],
) -> tuple[str, AgentMessage]:
    """Validate one agent message; return ``(kind, message)``.

    ``key_for(ap_id)`` gives the AP's key (or the keys accepted during a credential
    rotation), or ``None`` for an AP the registry does not know. Checks run cheapest
    first: size, topic, registry, JSON, signature, shape.

    Raises:
        Rejected: the topic, size, JSON, signature, shape or values are wrong, the AP is
            unknown, or the envelope's ``ap`` differs from the topic's.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("too_large", f"{len(payload)} bytes")
    try:
        ap_id, kind = parse_topic(topic_name)
    except ValueError as exc:
        raise Rejected("bad_topic", str(exc)) from exc
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        raise Rejected("bad_topic", f"{kind} is not an agent message")
    key = key_for(ap_id)
    if key is None:
        raise Rejected("unknown_ap", ap_id)
    try:
        fields = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Rejected("bad_json", str(exc)[:120]) from exc
    if not isinstance(fields, dict):
        raise Rejected("bad_shape", "not a JSON object")
    keys = (key,) if isinstance(key, bytes) else key
    if not any(signature_ok(fields, k) for k in keys):
        raise Rejected("bad_signature", ap_id)
    try:
        # Strict JSON-mode validation of the same bytes (strict python mode would want
        # dataclass instances; JSON mode forbids coercions like "5" -> 5 all the same).
        msg = adapter.validate_json(payload)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise Rejected("bad_shape", f"{where}: {err['msg']}"[:200]) from exc
    if msg.ap != ap_id or not AP_ID_RE.match(msg.ap):
        raise Rejected("ap_mismatch", "envelope ap differs from the topic")
    _bounds(msg)
    return kind, msg
