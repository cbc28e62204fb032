"""RADIUS server core, sans-IO: checks, duplicate cache, replies, fuzzing."""

from __future__ import annotations

import os
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radius._codec import (
    Attr,
    Code,
    decode,
    encode,
    encode_int,
    message_authenticator,
    pap_encrypt,
    sign_request,
    verify_message_authenticator,
    verify_reply,
)
from radius._core import (
    DEDUP_MAX_ENTRIES,
    AccessLimits,
    AccessRequestReceived,
    AccountingRequestReceived,
    AcctStatus,
    NasClient,
    PacketDropped,
    Port,
    ReplyReady,
    ServerCore,
)

SECRET = b"radius-test-secret-0123"
NAS = NasClient("nas-1", SECRET, "127.0.0.1", "46201")
ADDR = ("127.0.0.1", 40000)
NOW = 1_790_000_000.0


def core(dedup_max_entries: int = DEDUP_MAX_ENTRIES) -> ServerCore:
    return ServerCore({"127.0.0.1": [NAS]}, dedup_max_entries=dedup_max_entries)


def access(
    attrs: list[tuple[int, bytes]], ident: int = 1, *, ma: bool = True, code: int = 1
) -> bytes:
    auth = os.urandom(16)
    full = [(Attr.MESSAGE_AUTHENTICATOR, bytes(16)), *attrs] if ma else attrs
    raw = bytearray(encode(code, ident, auth, full))
    if ma:
        raw[22:38] = message_authenticator(bytes(raw), SECRET)
    return bytes(raw)


def acct(attrs: list[tuple[int, bytes]], ident: int = 1) -> bytes:
    return sign_request(
        Code.ACCOUNTING_REQUEST, ident, attrs, SECRET, with_message_authenticator=False
    )


def start(sid: bytes = b"s1", **ints: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = [
        (Attr.ACCT_STATUS_TYPE, encode_int(1)),
        (Attr.ACCT_SESSION_ID, sid),
    ]
    out += [(Attr[k.upper()], encode_int(v)) for k, v in ints.items()]
    return out


def test_unknown_source_and_garbage_are_dropped_and_counted() -> None:
    """A datagram from an unregistered address or a malformed one is dropped, by reason."""
    c = core()
    assert c.receive(acct(start()), ("10.9.9.9", 1), "acct", NOW) == PacketDropped("unknown_client")
    assert c.receive(b"\x04\x01", ADDR, "acct", NOW) == PacketDropped("malformed_too_short")
    assert c.counters["dropped_unknown_client"] == 1
    assert c.counters["dropped_malformed_too_short"] == 1


def test_wrong_port_codes_and_bad_authenticators_are_dropped() -> None:
    """Accounting on the auth port, a bad Request Authenticator, a bad MA: dropped."""
    c = core()
    assert c.receive(acct(start()), ADDR, "auth", NOW) == PacketDropped("unexpected_code")
    raw = bytearray(acct(start()))
    raw[5] ^= 1
    assert c.receive(bytes(raw), ADDR, "acct", NOW) == PacketDropped("bad_authenticator")
    bad_ma = bytearray(access([(Attr.USER_NAME, b"u")]))
    bad_ma[25] ^= 1
    assert c.receive(bytes(bad_ma), ADDR, "auth", NOW) == PacketDropped("bad_message_authenticator")
    no_ma = access([(Attr.USER_NAME, b"u")], ma=False)
    assert c.receive(no_ma, ADDR, "auth", NOW) == PacketDropped("missing_message_authenticator")
    assert c.cached == 0  # invalid packets never touch the duplicate cache


def test_accounting_record_has_64_bit_counters_and_event_time() -> None:
    """Gigawords make 64-bit counters; Event-Timestamp wins over Acct-Delay-Time."""
    c = core()
    attrs: list[tuple[int, bytes]] = [
        (Attr.ACCT_STATUS_TYPE, encode_int(3)),
        (Attr.ACCT_SESSION_ID, b"abc"),
        (Attr.CALLING_STATION_ID, b"02-00-00-00-00-01"),
        (Attr.FRAMED_IP_ADDRESS, bytes([10, 0, 0, 7])),
        (Attr.ACCT_INPUT_OCTETS, encode_int(10)),
        (Attr.ACCT_INPUT_GIGAWORDS, encode_int(2)),
        (Attr.ACCT_OUTPUT_OCTETS, encode_int(0xFFFFFFFF)),
        (Attr.ACCT_OUTPUT_GIGAWORDS, encode_int(0xFFFFFFFF)),
        (Attr.ACCT_DELAY_TIME, encode_int(30)),
        (Attr.ACCT_TERMINATE_CAUSE, encode_int(11)),
    ]
    ev = c.receive(acct(attrs), ADDR, "acct", NOW)
    assert isinstance(ev, AccountingRequestReceived)
    r = ev.record
    assert r.status == AcctStatus.INTERIM and r.session_id == "abc"
    assert (r.mac, r.ip) == ("02:00:00:00:00:01", "10.0.0.7")
    assert r.input_octets == (2 << 32) + 10 and r.output_octets == (1 << 64) - 1
    assert r.event_time == NOW - 30 and r.terminate_cause == "nas-reboot"
    stamped = acct([*attrs, (Attr.EVENT_TIMESTAMP, encode_int(int(NOW) - 500))], ident=2)
    ev2 = c.receive(stamped, ADDR, "acct", NOW)
    assert isinstance(ev2, AccountingRequestReceived) and ev2.record.event_time == NOW - 500
    # An unset NAS clock (1970) is not believed: the delay rule applies instead.
    unset = acct([*attrs, (Attr.EVENT_TIMESTAMP, encode_int(5))], ident=3)
    ev3 = c.receive(unset, ADDR, "acct", NOW)
    assert isinstance(ev3, AccountingRequestReceived) and ev3.record.event_time == NOW - 30


def test_accounting_record_reads_the_first_value_of_repeated_attributes() -> None:
    """A repeated attribute counts by its first value; a malformed integer counts as absent
    (as Packet.get/get_int read them)."""
    attrs: list[tuple[int, bytes]] = [
        (Attr.ACCT_STATUS_TYPE, encode_int(3)),
        (Attr.ACCT_SESSION_ID, b"first"),
        (Attr.ACCT_INPUT_OCTETS, encode_int(7)),
        (Attr.ACCT_SESSION_ID, b"second"),
        (Attr.ACCT_INPUT_OCTETS, encode_int(9)),
        (Attr.ACCT_OUTPUT_OCTETS, b"\x00\x01"),
        (Attr.USER_NAME, b"caf\xc3\xa9 \xff"),
    ]
    ev = core().receive(acct(attrs), ADDR, "acct", NOW)
    assert isinstance(ev, AccountingRequestReceived)
    r = ev.record
    assert (r.session_id, r.input_octets, r.output_octets) == ("first", 7, 0)
    assert r.user_name == "café \ufffd" and r.mac is None and r.ip is None


def test_accounting_without_session_id_or_known_status_is_dropped() -> None:
    """Start without Acct-Session-Id, or an unknown Acct-Status-Type, is dropped."""
    c = core()
    no_sid = acct([(Attr.ACCT_STATUS_TYPE, encode_int(1))])
    assert c.receive(no_sid, ADDR, "acct", NOW) == PacketDropped("malformed_missing_session_id")
    odd = acct([(Attr.ACCT_STATUS_TYPE, encode_int(9)), (Attr.ACCT_SESSION_ID, b"x")], ident=2)
    assert c.receive(odd, ADDR, "acct", NOW) == PacketDropped("malformed_unsupported_status")
    on = acct([(Attr.ACCT_STATUS_TYPE, encode_int(7))], ident=3)
    ev = c.receive(on, ADDR, "acct", NOW)
    assert isinstance(ev, AccountingRequestReceived)
    assert ev.record.status == AcctStatus.ACCOUNTING_ON


def test_retransmission_gets_the_cached_reply_and_is_processed_once() -> None:
    """RFC 5080: in progress → dropped; answered → same bytes again; new authenticator →
    processed as new; after the TTL → processed again."""
    c = core()
    raw = acct(start())
    ev = c.receive(raw, ADDR, "acct", NOW)
    assert isinstance(ev, AccountingRequestReceived)
    assert c.receive(raw, ADDR, "acct", NOW + 1) == PacketDropped("duplicate_in_progress")
    reply = c.acknowledge(ev)
    assert verify_reply(reply, raw[4:20], SECRET) and reply[0] == Code.ACCOUNTING_RESPONSE
    assert c.receive(raw, ADDR, "acct", NOW + 2) == ReplyReady(ADDR, reply)
    other = acct(start(b"s2"))  # same Identifier, other authenticator
    assert isinstance(c.receive(other, ADDR, "acct", NOW + 3), AccountingRequestReceived)
    assert isinstance(c.receive(raw, ADDR, "acct", NOW + 100), AccountingRequestReceived)


def test_abandoned_request_is_processed_again() -> None:
    """After a storage failure (abandon), the retransmission is a new request."""
    c = core()
    raw = acct(start())
    ev = c.receive(raw, ADDR, "acct", NOW)
    assert isinstance(ev, AccountingRequestReceived)
    c.abandon(ev)
    assert isinstance(c.receive(raw, ADDR, "acct", NOW + 1), AccountingRequestReceived)


def test_duplicate_cache_is_bounded() -> None:
    """The cache never holds more than its maximum, whatever arrives."""
    c = core(dedup_max_entries=50)
    for i in range(300):
        c.receive(acct(start(), ident=i % 256), ("127.0.0.1", 1000 + i), "acct", NOW)
    assert c.cached == 50 and c.counters["dedup_evicted"] == 250


def test_access_accept_carries_limits_and_proxy_state() -> None:
    """Access-Accept: MA first, the limits as RFC/WISPr/ChilliSpot attributes, Proxy-State
    copied in order; the PAP password and MAC auth are decoded."""
    c = core()
    auth_attrs = [
        (Attr.USER_NAME, b"02-00-00-00-00-0A"),
        (Attr.CALLING_STATION_ID, b"02-00-00-00-00-0A"),
        (Attr.PROXY_STATE, b"p1"),
        (Attr.PROXY_STATE, b"p2"),
    ]
    req_auth = os.urandom(16)
    raw2 = bytearray(
        encode(
            1,
            9,
            req_auth,
            [(80, bytes(16)), *auth_attrs, (2, pap_encrypt(b"pw", SECRET, req_auth))],
        )
    )
    raw2[22:38] = message_authenticator(bytes(raw2), SECRET)
    ev = c.receive(bytes(raw2), ADDR, "auth", NOW)
    assert isinstance(ev, AccessRequestReceived)
    assert ev.password == b"pw" and ev.mac == "02:00:00:00:00:0a" and ev.mac_auth
    limits = AccessLimits(3600, 600, 30, 1_000_000, 2_000_000, 5 * 2**32 + 7)
    reply = c.accept(ev, limits)
    pkt = decode(reply)
    assert reply[20] == Attr.MESSAGE_AUTHENTICATOR
    assert verify_reply(reply, req_auth, SECRET)
    assert verify_message_authenticator(reply, pkt, SECRET, req_auth) is True
    assert pkt.get_int(Attr.SESSION_TIMEOUT) == 3600 and pkt.get_int(Attr.IDLE_TIMEOUT) == 600
    assert pkt.get_int(Attr.ACCT_INTERIM_INTERVAL) == 60  # RFC 2869 floor
    vsas = pkt.all(Attr.VENDOR_SPECIFIC)
    assert vsas == [
        bytes.fromhex("0000372a") + b"\x07\x06" + encode_int(1_000_000),
        bytes.fromhex("0000372a") + b"\x08\x06" + encode_int(2_000_000),
        bytes.fromhex("000038df") + b"\x03\x06" + encode_int(7),
        bytes.fromhex("000038df") + b"\x17\x06" + encode_int(5),
    ]
    assert pkt.all(Attr.PROXY_STATE) == [b"p1", b"p2"]
    assert c.receive(bytes(raw2), ADDR, "auth", NOW + 1) == ReplyReady(ADDR, reply)


def test_status_server_answers_with_message_authenticator_first() -> None:
    """Status-Server with MA: Access-Accept (auth) or Accounting-Response (acct), MA first."""
    c = core()
    answers: list[tuple[Port, Code]] = [
        ("auth", Code.ACCESS_ACCEPT),
        ("acct", Code.ACCOUNTING_RESPONSE),
    ]
    for port, code in answers:
        raw = access([], code=Code.STATUS_SERVER)
        ev = c.receive(raw, ADDR, port, NOW)
        assert isinstance(ev, ReplyReady) and ev.data[0] == code and ev.data[20] == 80
        assert verify_reply(ev.data, raw[4:20], SECRET)
    no_ma = access([], code=Code.STATUS_SERVER, ma=False)
    assert c.receive(no_ma, ADDR, "auth", NOW) == PacketDropped("missing_message_authenticator")


def _valid_packets() -> list[bytes]:
    return [
        acct(start(b"fuzz", acct_input_octets=5, acct_input_gigawords=1)),
        acct([(Attr.ACCT_STATUS_TYPE, encode_int(7))]),
        access([(Attr.USER_NAME, b"u"), (Attr.USER_PASSWORD, bytes(16))]),
        access([], code=Code.STATUS_SERVER),
    ]


def _drive(c: ServerCore, data: bytes, now: float) -> None:
    ports: tuple[Port, ...] = ("auth", "acct")
    for port in ports:
        ev = c.receive(data, ADDR, port, now)
        if isinstance(ev, AccessRequestReceived):
            c.reject(ev)
        elif isinstance(ev, AccountingRequestReceived):
            c.acknowledge(ev)


@settings(max_examples=300)
@given(st.data())
def test_mutated_packets_never_crash_the_core(data: st.DataObject) -> None:
    """Valid packets with random byte flips, cuts and insertions are dropped or handled."""
    c = core()
    raw = bytearray(data.draw(st.sampled_from(_valid_packets())))
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(max_size=40))
    _drive(c, bytes(raw), NOW)


@given(st.binary(max_size=4200))
def test_random_bytes_never_crash_the_core(data: bytes) -> None:
    """Random datagrams from a registered address are dropped without an exception."""
    _drive(core(), data, NOW)


@pytest.mark.slow
def test_hundred_thousand_random_and_mutated_packets() -> None:
    """100,000 random and mutated datagrams: no exception, bounded cache and memory."""
    rng = random.Random(3596)
    c = core(dedup_max_entries=1000)
    seeds = _valid_packets()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for i in range(100_000):
            if i % 4 == 0:
                data = rng.randbytes(rng.randrange(0, 300))
            else:
                raw = bytearray(rng.choice(seeds))
                raw[1] = rng.randrange(256)
                for _ in range(rng.randrange(1, 6)):
                    pos = rng.randrange(len(raw)) if raw else 0
                    match rng.randrange(3):
                        case 0 if raw:
                            raw[pos] ^= rng.randrange(1, 256)
                        case 1:
                            del raw[pos:]
                        case _:
                            raw[pos:pos] = rng.randbytes(rng.randrange(1, 30))
                data = bytes(raw)
            addr = ("127.0.0.1", 1024 + i % 50_000)
            ev = c.receive(data, addr, "acct" if i % 2 else "auth", NOW + i * 0.001)
            if isinstance(ev, AccountingRequestReceived):
                c.acknowledge(ev)
            elif isinstance(ev, AccessRequestReceived):
                c.reject(ev)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.cached <= 1000
    assert peak - base < 20 * 2**20, f"peak {peak - base} bytes"
    assert c.counters["dropped"] > 50_000
