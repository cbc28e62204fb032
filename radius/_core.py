"""The RADIUS server's protocol core, sans-IO: datagrams in, typed events out.

``ServerCore.receive(data, addr, port, now)`` checks a datagram (known source, bounded
decoding, authenticators, Message-Authenticator rules, RFC 5080 duplicate cache) and
returns one event: a reply ready to send (Status-Server, a cached duplicate), a request
to decide (``AccessRequestReceived``, ``AccountingRequestReceived``), or a drop. The
caller decides and then asks the core for the signed reply (``accept``, ``reject``,
``acknowledge``), which is cached for retransmissions. It never touches sockets,
clocks or the database; time comes in as ``now``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, NamedTuple

from radius._codec import (
    Attr,
    Code,
    Packet,
    decode,
    encode_int,
    encode_vsa,
    ip_text,
    normalize_mac,
    pap_decrypt,
    sign_reply,
    verify_message_authenticator,
    verify_request_authenticator,
)
from radius.errors import RemoteProtocolError

__all__ = [
    "TERMINATE_CAUSES",
    "AccessLimits",
    "AccessRequestReceived",
    "AccountingRequestReceived",
    "AcctRecord",
    "AcctStatus",
    "NasClient",
    "PacketDropped",
    "ReplyReady",
    "ServerCore",
    "over_quota",
]

Port = Literal["auth", "acct"]
Address = tuple[str, int]

# RFC 5080 §2.2.2: keep replies "no less than 5 seconds, and no more than 30 seconds".
DEDUP_TTL_S = 30.0
# Bound on cached requests: a flood of distinct packets cannot grow memory past this.
DEDUP_MAX_ENTRIES = 65_536
# Event-Timestamp outside this window around ``now`` is not believed (an unset clock).
_PLAUSIBLE_PAST_S = 7 * 86400.0
_PLAUSIBLE_FUTURE_S = 300.0
# RFC 2866 §5.2 leaves Acct-Delay-Time unbounded; a day is already an outage.
_MAX_DELAY_S = 86400

WISPR = 14122
CHILLISPOT = 14559

TERMINATE_CAUSES = {
    1: "user-request",
    2: "lost-carrier",
    3: "lost-service",
    4: "idle-timeout",
    5: "session-timeout",
    6: "admin-reset",
    7: "admin-reboot",
    8: "port-error",
    9: "nas-error",
    10: "nas-request",
    11: "nas-reboot",
    12: "port-unneeded",
    13: "port-preempted",
    14: "port-suspended",
    15: "service-unavailable",
    16: "callback",
    17: "user-error",
    18: "host-request",
}


class AcctStatus(IntEnum):
    """Acct-Status-Type values borne acts on (RFC 2866 §5.1)."""

    START = 1
    STOP = 2
    INTERIM = 3
    ACCOUNTING_ON = 7
    ACCOUNTING_OFF = 8


_STATUSES = {int(s): s for s in AcctStatus}


def _int(first: dict[int, bytes], attr: int) -> int | None:
    """An ``integer`` attribute of a request's first values, None if absent or not 4
    octets."""
    v = first.get(attr)
    return int.from_bytes(v, "big") if v is not None and len(v) == 4 else None


@dataclass(frozen=True)
class NasClient:
    """A registered NAS: its identity (the sessions' ``ap_id``), secret and source address."""

    nas_id: str
    secret: bytes
    address: str
    insee: str = ""
    coa_port: int = 3799


class AcctRecord(NamedTuple):
    """One Accounting-Request, decoded and normalised (64-bit counters, event time).

    A named tuple, not a frozen dataclass: one is built for every request, and a frozen
    dataclass sets each field through ``object.__setattr__``."""

    status: AcctStatus
    session_id: str
    mac: str | None
    ip: str | None
    user_name: str | None
    event_time: float
    session_time: int | None
    input_octets: int
    output_octets: int
    terminate_cause: str | None


def over_quota(record: AcctRecord, quota_octets: int) -> bool:
    """Whether an Interim-Update shows a session past its volume quota (0: no quota)."""
    return (
        quota_octets > 0
        and record.status == AcctStatus.INTERIM
        and record.input_octets + record.output_octets >= quota_octets
    )


@dataclass(frozen=True)
class AccessLimits:
    """Reply attributes of an Access-Accept (0 or None: not sent)."""

    session_timeout_s: int = 0
    idle_timeout_s: int = 0
    interim_interval_s: int = 0
    bandwidth_up_bps: int = 0
    bandwidth_down_bps: int = 0
    max_total_octets: int = 0

    def attributes(self) -> list[tuple[int, bytes]]:
        """The RADIUS attributes (RFC 2865/2869, WISPr and ChilliSpot VSAs)."""
        out: list[tuple[int, bytes]] = []
        if self.session_timeout_s:
            out.append((Attr.SESSION_TIMEOUT, encode_int(self.session_timeout_s)))
        if self.idle_timeout_s:
            out.append((Attr.IDLE_TIMEOUT, encode_int(self.idle_timeout_s)))
        if self.interim_interval_s:
            # RFC 2869 §5.16: "MUST NOT be smaller than 60".
            out.append((Attr.ACCT_INTERIM_INTERVAL, encode_int(max(60, self.interim_interval_s))))
        if self.bandwidth_up_bps:
            out.append(encode_vsa(WISPR, 7, encode_int(min(self.bandwidth_up_bps, 0xFFFFFFFF))))
        if self.bandwidth_down_bps:
            out.append(encode_vsa(WISPR, 8, encode_int(min(self.bandwidth_down_bps, 0xFFFFFFFF))))
        if self.max_total_octets:
            low, high = self.max_total_octets & 0xFFFFFFFF, self.max_total_octets >> 32
            out.append(encode_vsa(CHILLISPOT, 3, encode_int(low)))
            if high:
                out.append(encode_vsa(CHILLISPOT, 23, encode_int(min(high, 0xFFFFFFFF))))
        return out


@dataclass(frozen=True)
class ReplyReady:
    """Send ``data`` to ``addr`` now (Status-Server answer, cached duplicate reply)."""

    addr: Address
    data: bytes


@dataclass(frozen=True)
class PacketDropped:
    """The datagram was dropped silently; ``reason`` is the counter's name."""

    reason: str


class _Key(NamedTuple):
    """What identifies a request for the duplicate cache (RFC 5080 §2.2.2); hashed in C."""

    addr: Address
    port: Port
    code: int
    identifier: int


@dataclass(frozen=True)
class AccessRequestReceived:
    """An Access-Request with a valid Message-Authenticator, to accept or reject."""

    key: _Key
    request: Packet
    nas: NasClient
    user_name: str | None
    password: bytes | None
    mac: str | None
    mac_auth: bool


@dataclass(frozen=True)
class AccountingRequestReceived:
    """An authentic Accounting-Request: store ``record``, then ``acknowledge``."""

    key: _Key
    request: Packet
    nas: NasClient
    record: AcctRecord


Event = ReplyReady | PacketDropped | AccessRequestReceived | AccountingRequestReceived


@dataclass
class _Entry:
    authenticator: bytes
    expires: float
    reply: bytes | None = None


@dataclass
class ServerCore:
    """Checks datagrams and signs replies for the registered NAS clients.

    Args:
        clients: NAS clients by source IP address (several NAS may share one address
            behind a NAT; their NAS-Identifier tells them apart).
    """

    clients: Mapping[str, Sequence[NasClient]]
    dedup_ttl_s: float = DEDUP_TTL_S
    dedup_max_entries: int = DEDUP_MAX_ENTRIES
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    _cache: collections.OrderedDict[_Key, _Entry] = field(default_factory=collections.OrderedDict)

    # receiving ------------------------------------------------------------------
    def receive(self, data: bytes, addr: Address, port: Port, now: float) -> Event:
        """Check one datagram received on the ``auth`` or ``acct`` port."""
        candidates = self.clients.get(addr[0])
        if not candidates:
            return self._drop("unknown_client")
        try:
            pkt = decode(data)
        except RemoteProtocolError as exc:
            return self._drop(f"malformed_{exc.reason}")
        nas = self._pick(pkt, candidates)
        expected = {
            "auth": (Code.ACCESS_REQUEST, Code.STATUS_SERVER),
            "acct": (Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER),
        }[port]
        if pkt.code not in expected:
            return self._drop("unexpected_code")
        if pkt.code == Code.ACCOUNTING_REQUEST:
            if not verify_request_authenticator(data, nas.secret):
                return self._drop("bad_authenticator")
            if verify_message_authenticator(data, pkt, nas.secret, bytes(16)) is False:
                return self._drop("bad_message_authenticator")
        else:
            # BlastRADIUS: every Access-Request and Status-Server must carry a valid
            # Message-Authenticator (RFC 5997 §3 requires it for Status-Server).
            ok = verify_message_authenticator(data, pkt, nas.secret)
            if ok is None:
                return self._drop("missing_message_authenticator")
            if not ok:
                return self._drop("bad_message_authenticator")
        key = _Key(addr, port, pkt.code, pkt.identifier)
        self._expire(now)
        entry = self._cache.get(key)
        if entry is not None and entry.authenticator == pkt.authenticator:
            # RFC 5080 §2.2.2: a retransmission gets the cached reply, or nothing while
            # the first copy is still being processed; it is never processed twice.
            if entry.reply is None:
                return self._drop("duplicate_in_progress")
            self.counters["duplicate_replayed"] += 1
            return ReplyReady(addr, entry.reply)
        if pkt.code == Code.STATUS_SERVER:
            self.counters["status_server"] += 1
            code = Code.ACCESS_ACCEPT if port == "auth" else Code.ACCOUNTING_RESPONSE
            return ReplyReady(addr, sign_reply(code, pkt, [], nas.secret))
        self._remember(key, _Entry(pkt.authenticator, now + self.dedup_ttl_s))
        if pkt.code == Code.ACCOUNTING_REQUEST:
            try:
                record = self._record(pkt, now)
            except RemoteProtocolError as exc:
                self._cache.pop(key, None)
                return self._drop(f"malformed_{exc.reason}")
            self.counters["accounting_requests"] += 1
            return AccountingRequestReceived(key, pkt, nas, record)
        return self._access(key, pkt, nas)

    def _drop(self, reason: str) -> PacketDropped:
        self.counters["dropped"] += 1
        self.counters[f"dropped_{reason}"] += 1
        return PacketDropped(reason)

    @staticmethod
    def _pick(pkt: Packet, candidates: Sequence[NasClient]) -> NasClient:
        if len(candidates) > 1:
            ident = pkt.get_str(Attr.NAS_IDENTIFIER)
            for c in candidates:
                if c.nas_id == ident:
                    return c
        return candidates[0]

    def _access(self, key: _Key, pkt: Packet, nas: NasClient) -> Event:
        hidden = pkt.get(Attr.USER_PASSWORD)
        password: bytes | None = None
        if hidden is not None:
            try:
                password = pap_decrypt(hidden, nas.secret, pkt.authenticator)
            except RemoteProtocolError as exc:
                self._cache.pop(key, None)
                return self._drop(f"malformed_{exc.reason}")
        user = pkt.get_str(Attr.USER_NAME)
        mac = normalize_mac(pkt.get_str(Attr.CALLING_STATION_ID))
        # MAC authentication: the NAS sends the device's MAC as the User-Name (CoovaChilli
        # macauth, MikroTik, UniFi), or Service-Type Call-Check (10, RFC 2865 §5.6).
        mac_auth = mac is not None and (
            normalize_mac(user) == mac or pkt.get_int(Attr.SERVICE_TYPE) == 10
        )
        self.counters["access_requests"] += 1
        return AccessRequestReceived(key, pkt, nas, user, password, mac, mac_auth)

    def _record(self, pkt: Packet, now: float) -> AcctRecord:
        # The first value of each attribute, as Packet.get gives it, in one pass (a dozen
        # attributes are read: one scan each would cost more than the rest of the record).
        first = dict(reversed(pkt.attributes))
        raw_status = _int(first, Attr.ACCT_STATUS_TYPE)
        status = _STATUSES.get(raw_status)  # type: ignore[arg-type]
        if status is None:
            raise RemoteProtocolError("unsupported_status", str(raw_status))
        sid = first.get(Attr.ACCT_SESSION_ID)
        session_id = sid.decode("utf-8", "replace") if sid else ""
        if status <= AcctStatus.INTERIM:  # Start, Stop, Interim-Update
            if not session_id:
                raise RemoteProtocolError("missing_session_id")
            if len(session_id) > 64:
                raise RemoteProtocolError("bad_session_id", "longer than 64")
        stamp = _int(first, Attr.EVENT_TIMESTAMP)
        if stamp is not None and now - _PLAUSIBLE_PAST_S <= stamp <= now + _PLAUSIBLE_FUTURE_S:
            # RFC 2869 §5.3: when the event happened on the NAS; Acct-Delay-Time does
            # not apply on top of it.
            event_time = float(stamp)
        else:
            # RFC 2866 §5.2: the event happened Acct-Delay-Time seconds before sending.
            event_time = now - min(_int(first, Attr.ACCT_DELAY_TIME) or 0, _MAX_DELAY_S)
        cause = _int(first, Attr.ACCT_TERMINATE_CAUSE)
        user = first.get(Attr.USER_NAME)
        mac = first.get(Attr.CALLING_STATION_ID)
        return AcctRecord(
            status=status,
            session_id=session_id,
            mac=normalize_mac(mac.decode("utf-8", "replace")) if mac is not None else None,
            ip=ip_text(first.get(Attr.FRAMED_IP_ADDRESS)),
            user_name=user.decode("utf-8", "replace")[:64] if user else None,
            event_time=event_time,
            session_time=_int(first, Attr.ACCT_SESSION_TIME),
            # RFC 2869 §5.1/5.2: Gigawords count the 2^32 wraps of the 32-bit counter.
            input_octets=(_int(first, Attr.ACCT_INPUT_GIGAWORDS) or 0) << 32
            | (_int(first, Attr.ACCT_INPUT_OCTETS) or 0),
            output_octets=(_int(first, Attr.ACCT_OUTPUT_GIGAWORDS) or 0) << 32
            | (_int(first, Attr.ACCT_OUTPUT_OCTETS) or 0),
            terminate_cause=TERMINATE_CAUSES.get(cause, f"cause-{cause}") if cause else None,
        )

    # duplicate cache ----------------------------------------------------------------
    def _remember(self, key: _Key, entry: _Entry) -> None:
        self._cache.pop(key, None)  # a new authenticator purges the old entry
        self._cache[key] = entry
        while len(self._cache) > self.dedup_max_entries:
            self._cache.popitem(last=False)
            self.counters["dedup_evicted"] += 1

    def _expire(self, now: float) -> None:
        # Entries are appended with increasing expiry: the oldest are at the front.
        while self._cache:
            first = next(iter(self._cache.values()))
            if first.expires > now:
                break
            self._cache.popitem(last=False)

    def _complete(self, key: _Key, authenticator: bytes, reply: bytes) -> bytes:
        entry = self._cache.get(key)
        if entry is not None and entry.authenticator == authenticator:
            entry.reply = reply
        return reply

    def abandon(self, event: AccessRequestReceived | AccountingRequestReceived) -> None:
        """Forget a request that could not be handled (storage down): a retransmission
        is then processed again instead of being dropped as in progress."""
        entry = self._cache.get(event.key)
        if entry is not None and entry.authenticator == event.request.authenticator:
            del self._cache[event.key]

    @property
    def cached(self) -> int:
        """How many requests the duplicate cache holds."""
        return len(self._cache)

    # replies --------------------------------------------------------------------
    def accept(
        self,
        event: AccessRequestReceived,
        limits: AccessLimits,
        extra: Iterable[tuple[int, bytes]] = (),
    ) -> bytes:
        """The signed Access-Accept (Message-Authenticator first), cached for duplicates."""
        self.counters["access_accept"] += 1
        attrs = [*limits.attributes(), *extra]
        reply = sign_reply(Code.ACCESS_ACCEPT, event.request, attrs, event.nas.secret)
        return self._complete(event.key, event.request.authenticator, reply)

    def reject(self, event: AccessRequestReceived, message: str | None = None) -> bytes:
        """The signed Access-Reject (Message-Authenticator first), cached for duplicates."""
        self.counters["access_reject"] += 1
        attrs = [(int(Attr.REPLY_MESSAGE), message.encode()[:200])] if message else []
        reply = sign_reply(Code.ACCESS_REJECT, event.request, attrs, event.nas.secret)
        return self._complete(event.key, event.request.authenticator, reply)

    def acknowledge(self, event: AccountingRequestReceived) -> bytes:
        """The Accounting-Response; call it only once the record is durably stored
        (RFC 2866 §4.1)."""
        self.counters["accounting_responses"] += 1
        reply = sign_reply(
            Code.ACCOUNTING_RESPONSE,
            event.request,
            [],
            event.nas.secret,
            with_message_authenticator=False,
        )
        return self._complete(event.key, event.request.authenticator, reply)
