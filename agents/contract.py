"""MQTT contract v1 between the borne agent and the controller: the one source of truth.

Topic names, message shapes and command signing live here and nowhere else. The agent
builds these dataclasses and serialises them with :func:`encode`; the controller
validates incoming payloads against the very same dataclasses with pydantic (see
``controller.contract``), so that a change here changes both sides at once.

This module uses the standard library only: it must import on an access point's
Python (OpenWrt) where neither pydantic nor any compiled package is available. It does
no IO and reads no clock: callers pass ``now``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from typing import Any, Final, Literal

__all__ = [
    "AP_ID_RE",
    "COMMAND_ARGS",
    "MAC_RE",
    "MAX_COMMAND_TTL_S",
    "MAX_PAYLOAD_BYTES",
    "TOPIC_PREFIX",
    "VERSION",
    "AcctEntry",
    "AcctMsg",
    "AckMsg",
    "ApplyConfigArgs",
    "AuthorizeArgs",
    "ClientEvent",
    "ClientsMsg",
    "Command",
    "DeauthorizeArgs",
    "HealthMsg",
    "RotateCredentialsArgs",
    "StatusMsg",
    "SyncArgs",
    "agent_subscription",
    "canonical_bytes",
    "command_args",
    "controller_subscription",
    "encode",
    "open_credentials",
    "parse_topic",
    "seal",
    "seal_credentials",
    "sign_command",
    "signature_ok",
    "topic",
]

VERSION: Final = 1
TOPIC_PREFIX: Final = "borne/v1/ap"

# A payload larger than this is refused before any parsing. The largest legitimate
# message is an `acct` batch: 512 clients x ~120 bytes of JSON stays under 64 KiB.
MAX_PAYLOAD_BYTES: Final = 64 * 1024
# A command valid for longer than this is refused: it bounds the replay window and the
# memory an agent needs to remember the command ids it has already executed.
MAX_COMMAND_TTL_S: Final = 3600
MAX_BATCH: Final = 512
# Metadata of a command argument added after agents were deployed (see ``command_args``).
OPTIONAL: Final = {"optional": True}

AP_ID_RE: Final = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
MAC_RE: Final = re.compile(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")

# kinds published by the agent / by the controller
AgentKind = Literal["status", "health", "clients", "acct", "ack"]
AGENT_KINDS: Final[tuple[str, ...]] = ("status", "health", "clients", "acct", "ack")
CONTROLLER_KINDS: Final[tuple[str, ...]] = ("cmd",)

# pydantic reads this attribute on plain dataclasses: unknown fields are errors and no
# value is coerced ("5" is not an int). The agent ignores it.
_STRICT: Final = {"extra": "forbid", "strict": True}


def topic(ap_id: str, kind: str) -> str:
    """Return the topic of ``kind`` for access point ``ap_id``.

    Raises:
        ValueError: the AP id or the kind is not part of the contract.
    """
    if not AP_ID_RE.match(ap_id):
        raise ValueError(f"invalid ap_id {ap_id!r}")
    if kind not in AGENT_KINDS and kind not in CONTROLLER_KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    return f"{TOPIC_PREFIX}/{ap_id}/{kind}"


def parse_topic(name: str) -> tuple[str, str]:
    """Split ``borne/v1/ap/{ap_id}/{kind}`` into ``(ap_id, kind)``.

    Raises:
        ValueError: the topic is not one of the contract's.
    """
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != TOPIC_PREFIX:
        raise ValueError(f"topic outside the contract: {name[:120]!r}")
    ap_id, kind = parts[3], parts[4]
    if not AP_ID_RE.match(ap_id):
        raise ValueError(f"invalid ap_id in topic: {ap_id[:70]!r}")
    if kind not in AGENT_KINDS and kind not in CONTROLLER_KINDS:
        raise ValueError(f"unknown message kind in topic: {kind[:20]!r}")
    return ap_id, kind


def controller_subscription(kind: str, share_group: str | None = None) -> str:
    """Topic filter the controller subscribes to for ``kind`` (optionally MQTT 5 shared)."""
    base = f"{TOPIC_PREFIX}/+/{kind}"
    return f"$share/{share_group}/{base}" if share_group else base


def agent_subscription(ap_id: str) -> str:
    """Topic filter an agent subscribes to: its own command topic only."""
    return topic(ap_id, "cmd")


# --------------------------------------------------------------------------- messages
# Every agent message starts with the envelope: v, ap, boot, seq, ts.
#   boot: random hex chosen at each agent start; seq: 1, 2, 3... within that boot
#   (0 is reserved for the Last Will); ts: the device's clock, seconds since the epoch.
# and ends with sig: HMAC-SHA256 with the AP's key over the canonical JSON of the other
# fields (see `seal`). The broker's ACL already keeps an AP under its own topic; the
# signature also proves the origin end to end, whatever broker relays the message.


@dataclasses.dataclass(frozen=True)
class StatusMsg:
    """Retained presence of an AP; the Last Will publishes ``state="offline"`` with seq 0."""

    __pydantic_config__ = _STRICT
    v: Literal[1]
    ap: str
    boot: str
    seq: int
    ts: float
    state: Literal["online", "offline"]
    agent_version: str
    gateway: str
    keepalive_s: int
    reason: str | None = None
    # Added in agent 0.3: the version of the last apply_config applied (None: never).
    config_version: int | None = None
    sig: str = ""


@dataclasses.dataclass(frozen=True)
class HealthMsg:
    """Periodic health of the AP and its gateway daemon."""

    __pydantic_config__ = _STRICT
    v: Literal[1]
    ap: str
    boot: str
    seq: int
    ts: float
    uptime_s: float
    load1: float
    mem_total_kb: int
    mem_available_kb: int
    disk_free_kb: int
    clients: int
    gateway_up: bool
    agent_version: str
    # Added in agent 0.2 (optional: older agents omit them; None when unknown).
    broker_rtt_ms: float | None = None
    clock_offset_s: float | None = None
    temperature_c: float | None = None
    interfaces: dict[str, list[int]] | None = None
    spool_pending: int | None = None
    spool_dropped: int | None = None
    gateway_restarts: int | None = None
    # Added in agent 0.3: whether the NAT port blocks are in place (None: NAT not used).
    nat_ok: bool | None = None
    sig: str = ""


@dataclasses.dataclass(frozen=True)
class ClientEvent:
    """One client change seen at the gateway."""

    __pydantic_config__ = _STRICT
    event: Literal["seen", "authorized", "left"]
    mac: str
    ip: str
    at: float
    # Added in agent 0.2: coarse device kind from the DHCP host name (never the name).
    category: Literal["phone", "tablet", "computer", "other"] | None = None
    # Added in agent 0.3 (NAT port blocks, agents/_nat.py): the public address and source
    # ports this client's connections are translated to; all three or none.
    public_ip: str | None = None
    port_start: int | None = None
    port_end: int | None = None


@dataclasses.dataclass(frozen=True)
class ClientsMsg:
    """A batch of client events (``full=True``: the list is the whole current population)."""

    __pydantic_config__ = _STRICT
    v: Literal[1]
    ap: str
    boot: str
    seq: int
    ts: float
    events: list[ClientEvent]
    full: bool = False
    sig: str = ""


@dataclasses.dataclass(frozen=True)
class AcctEntry:
    """Counters of one authorised client since its session started (64-bit, bytes)."""

    __pydantic_config__ = _STRICT
    mac: str
    ip: str
    session_start: float
    up_bytes: int
    down_bytes: int
    # Added in agent 0.3 (NAT port blocks, agents/_nat.py): the public address and source
    # ports this client's connections are translated to; all three or none.
    public_ip: str | None = None
    port_start: int | None = None
    port_end: int | None = None


@dataclasses.dataclass(frozen=True)
class AcctMsg:
    """Per-client counters, batched, published every accounting interval."""

    __pydantic_config__ = _STRICT
    v: Literal[1]
    ap: str
    boot: str
    seq: int
    ts: float
    interval_s: int
    entries: list[AcctEntry]
    sig: str = ""


@dataclasses.dataclass(frozen=True)
class AckMsg:
    """The agent's single answer to one command id."""

    __pydantic_config__ = _STRICT
    v: Literal[1]
    ap: str
    boot: str
    seq: int
    ts: float
    id: str
    ok: bool
    error: str | None = None
    # Added in agent 0.3: what an accepted command did ("applied", "unchanged").
    result: str | None = None
    sig: str = ""


# --------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class AuthorizeArgs:
    """Let a client through the gateway (``ndsctl auth``); 0 means unlimited."""

    __pydantic_config__ = _STRICT
    mac: str
    minutes: int
    up_kbps: int = 0
    down_kbps: int = 0
    up_quota_kb: int = 0
    down_quota_kb: int = 0


@dataclasses.dataclass(frozen=True)
class DeauthorizeArgs:
    """Cut a client off (``ndsctl deauth``)."""

    __pydantic_config__ = _STRICT
    mac: str


@dataclasses.dataclass(frozen=True)
class SyncArgs:
    """Ask for a full client list (answered by a ``clients`` message with ``full=True``)."""

    __pydantic_config__ = _STRICT


@dataclasses.dataclass(frozen=True)
class RotateCredentialsArgs:
    """New command key and MQTT login, encrypted with the key that signs the command.

    ``sealed`` is :func:`seal_credentials`'s hex output for ``nonce`` (32 hex digits):
    the broker and its logs never see the new secrets in clear.
    """

    __pydantic_config__ = _STRICT
    nonce: str
    sealed: str


@dataclasses.dataclass(frozen=True)
class ApplyConfigArgs:
    """The AP's gateway settings, versioned; applying the same version twice changes nothing.

    ``session_minutes``, rates (kbit/s) and quotas (kB) are openNDS's defaults for a login
    that does not set its own (0: unlimited). ``walled_garden``: host names, IPv4
    addresses or IPv4 networks reachable before login, on ``walled_garden_ports`` (empty:
    every port for addresses, 80 and 443 for host names). ``fas_*``: openNDS's FAS
    settings ("" or 0: keep the AP's own). ``capport_url``: the RFC 8908 API URL sent as
    DHCP option 114 (RFC 8910; "": none). ``idle_timeout_minutes``: openNDS's
    ``authidletimeout``, the minutes after which a logged-in client that sent nothing is
    logged out (0, or absent from an older controller: the AP's own setting stays).
    """

    __pydantic_config__ = _STRICT
    version: int
    session_minutes: int = 0
    up_kbps: int = 0
    down_kbps: int = 0
    up_quota_kb: int = 0
    down_quota_kb: int = 0
    walled_garden: list[str] = dataclasses.field(default_factory=list)
    walled_garden_ports: list[int] = dataclasses.field(default_factory=list)
    fas_remote_ip: str = ""
    fas_remote_fqdn: str = ""
    fas_port: int = 0
    fas_path: str = ""
    capport_url: str = ""
    # Added with the communes' idle timeout (optional: 0 leaves openNDS's own). Fields
    # marked OPTIONAL are left out of a command when at their default, so that an agent
    # older than the field, which refuses unknown keys, still takes the command.
    idle_timeout_minutes: int = dataclasses.field(default=0, metadata=OPTIONAL)


COMMAND_ARGS: Final[dict[str, type]] = {
    "authorize": AuthorizeArgs,
    "deauthorize": DeauthorizeArgs,
    "sync": SyncArgs,
    "apply_config": ApplyConfigArgs,
    "rotate_credentials": RotateCredentialsArgs,
}


@dataclasses.dataclass(frozen=True)
class Command:
    """A controller command, signed with the AP's own key (HMAC-SHA256 over the canonical JSON)."""

    __pydantic_config__ = _STRICT
    v: Literal[1]
    ap: str
    id: str
    cmd: Literal["authorize", "deauthorize", "sync", "rotate_credentials", "apply_config"]
    args: dict[str, Any]
    iat: float
    exp: float
    sig: str = ""


# Optional fields left out of the JSON when unset: they would add ~50 bytes of nulls to
# every client event and acct entry of an AP that does no NAT.
_OMITTED_WHEN_NONE: Final = frozenset({"public_ip", "port_start", "port_end"})


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _plain(value)
            for f in dataclasses.fields(obj)
            if (value := getattr(obj, f.name)) is not None or f.name not in _OMITTED_WHEN_NONE
        }
    if isinstance(obj, list | tuple):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _plain(x) for k, x in obj.items()}
    return obj


def encode(msg: Any) -> bytes:
    """Serialise a contract dataclass to compact UTF-8 JSON."""
    return json.dumps(_plain(msg), separators=(",", ":"), ensure_ascii=False).encode()


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """The bytes a command signature covers: sorted-key compact JSON without ``sig``."""
    body = {k: v for k, v in fields.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(msg: Any, key: bytes) -> bytes:
    """Serialise an agent message with its ``sig`` computed for ``key``."""
    fields = _plain(msg)
    fields.pop("sig", None)
    fields["sig"] = hmac.new(key, canonical_bytes(fields), hashlib.sha256).hexdigest()
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def command_args(args: Any) -> dict[str, Any]:
    """A command's arguments as sent: every field, except the ``OPTIONAL`` ones at their
    default (an agent older than such a field refuses unknown keys, and its default
    means "as before" for a newer one)."""
    out = {}
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if f.metadata.get("optional") and value == f.default:
            continue
        out[f.name] = list(value) if isinstance(value, list) else value
    return out


def sign_command(cmd: Command, key: bytes) -> Command:
    """Return ``cmd`` with its ``sig`` set for ``key``."""
    mac = hmac.new(key, canonical_bytes(_plain(cmd)), hashlib.sha256).hexdigest()
    return dataclasses.replace(cmd, sig=mac)


def signature_ok(fields: dict[str, Any], key: bytes) -> bool:
    """Check the ``sig`` of a decoded command or agent message in constant time."""
    sig = fields.get("sig")
    if not isinstance(sig, str) or not sig:
        return False
    want = hmac.new(key, canonical_bytes(fields), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    """HMAC-SHA256 in counter mode: a pseudo-random stream for ``key`` and ``nonce``."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        block = nonce + b"borne/rotate/" + counter.to_bytes(4, "big")
        out += hmac.new(key, block, hashlib.sha256).digest()
        counter += 1
    return bytes(out[:length])


def seal_credentials(key: bytes, nonce: str, credentials: dict[str, str]) -> str:
    """Encrypt ``credentials`` (JSON) for a ``rotate_credentials`` command; hex output.

    The command's HMAC authenticates the result; ``nonce`` must never repeat for a key.
    """
    plain = json.dumps(credentials, sort_keys=True, separators=(",", ":")).encode()
    stream = _keystream(key, bytes.fromhex(nonce), len(plain))
    return bytes(a ^ b for a, b in zip(plain, stream, strict=True)).hex()


def open_credentials(key: bytes, nonce: str, sealed: str) -> dict[str, str]:
    """Decrypt :func:`seal_credentials`'s output.

    Raises:
        ValueError: not hex, not JSON, or not a mapping of strings.
    """
    raw = bytes.fromhex(sealed)
    stream = _keystream(key, bytes.fromhex(nonce), len(raw))
    data = json.loads(bytes(a ^ b for a, b in zip(raw, stream, strict=True)))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError("credentials are not a mapping of strings")
    return data
