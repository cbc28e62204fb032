"""RADIUS codec: bounded decoding, signing, PAP hiding, MAC spellings; interop with pyrad."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrad.dictionary import Dictionary
from pyrad.packet import AcctPacket, AuthPacket

from radius._codec import (
    Attr,
    Code,
    decode,
    encode,
    message_authenticator,
    normalize_mac,
    pap_decrypt,
    pap_encrypt,
    sign_reply,
    sign_request,
    verify_message_authenticator,
    verify_reply,
    verify_request_authenticator,
)
from radius.errors import LocalProtocolError, RemoteProtocolError

SECRET = b"radius-test-secret-0123"
DICTIONARY = Dictionary(str(Path(__file__).resolve().parents[2] / "radius" / "dictionary"))

MALFORMED = [
    (b"", "too_short"),
    (b"\x01\x00\x00\x14" + bytes(15), "too_short"),
    (b"\x01\x00\x00\x13" + bytes(16), "bad_length"),
    (b"\x01\x00\x00\x20" + bytes(16), "bad_length"),
    (b"\x01\x00\x00\x15" + bytes(16) + b"\x01", "bad_attribute"),
    (b"\x01\x00\x00\x16" + bytes(16) + b"\x01\x01", "bad_attribute"),
    (b"\x01\x00\x00\x17" + bytes(16) + b"\x01\x05\x00", "bad_attribute"),
    (b"\x01\x00\x10\x01" + bytes(4097), "too_long"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_packets_are_refused_by_reason(data: bytes, reason: str) -> None:
    """Each malformed packet raises RemoteProtocolError with its reason."""
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.reason == reason


def test_padding_after_the_declared_length_is_ignored() -> None:
    """Octets beyond the Length field are padding (RFC 2865 §3)."""
    raw = encode(4, 7, bytes(16), [(Attr.USER_NAME, b"bob")]) + b"junk"
    pkt = decode(raw)
    assert pkt.attributes == ((Attr.USER_NAME, b"bob"),) and pkt.identifier == 7


def test_encode_refuses_what_radius_cannot_carry() -> None:
    """Values over 253 octets and packets over 4096 octets are local errors."""
    with pytest.raises(LocalProtocolError):
        encode(1, 1, bytes(16), [(1, bytes(254))])
    with pytest.raises(LocalProtocolError):
        encode(1, 1, bytes(16), [(1, bytes(200))] * 21)


@given(st.binary(max_size=5000))
def test_decoder_raises_only_protocol_errors(data: bytes) -> None:
    """Any byte string decodes or raises RemoteProtocolError, nothing else."""
    try:
        pkt = decode(data)
    except RemoteProtocolError:
        return
    assert sum(len(v) + 2 for _, v in pkt.attributes) + 20 <= len(data)


@given(st.binary(max_size=128), st.binary(min_size=16, max_size=16))
def test_pap_hiding_round_trips(password: bytes, authenticator: bytes) -> None:
    """pap_decrypt reveals what pap_encrypt hid (trailing NULs aside)."""
    hidden = pap_encrypt(password, SECRET, authenticator)
    assert len(hidden) % 16 == 0
    assert pap_decrypt(hidden, SECRET, authenticator) == password.rstrip(b"\x00")


def test_pyrad_hides_passwords_as_we_reveal_them() -> None:
    """A User-Password hidden by pyrad is revealed by pap_decrypt."""
    req = AuthPacket(secret=SECRET, dict=DICTIONARY, User_Name="bob")
    req["User-Password"] = req.PwCrypt("correct horse battery staple")
    pkt = decode(req.RequestPacket())
    hidden = pkt.get(Attr.USER_PASSWORD)
    assert hidden is not None
    assert pap_decrypt(hidden, SECRET, pkt.authenticator) == b"correct horse battery staple"


def test_reply_puts_message_authenticator_first_and_copies_proxy_state() -> None:
    """A reply starts with Message-Authenticator, ends with the request's Proxy-States in
    order, and pyrad verifies both its authenticators."""
    req = AuthPacket(secret=SECRET, dict=DICTIONARY, User_Name="bob")
    req.add_message_authenticator()
    req.AddAttribute("Proxy-State", b"first")
    req.AddAttribute("Proxy-State", b"second")
    raw_req = req.RequestPacket()
    pkt = decode(raw_req)
    raw = sign_reply(Code.ACCESS_ACCEPT, pkt, [(Attr.SESSION_TIMEOUT, b"\x00\x00\x00\x3c")], SECRET)
    reply = decode(raw)
    assert raw[20] == Attr.MESSAGE_AUTHENTICATOR and raw[21] == 18
    assert [t for t, _ in reply.attributes] == [80, 27, 33, 33]
    assert reply.all(Attr.PROXY_STATE) == [b"first", b"second"]
    assert verify_reply(raw, pkt.authenticator, SECRET)
    assert verify_message_authenticator(raw, reply, SECRET, pkt.authenticator) is True
    theirs = req.CreateReply(packet=raw)
    assert req.VerifyReply(theirs, raw, enforce_ma=True)


def test_pyrad_accounting_requests_verify() -> None:
    """An Accounting-Request signed by pyrad verifies; one byte changed does not."""
    req = AcctPacket(secret=SECRET, dict=DICTIONARY, User_Name="bob")
    req["Acct-Status-Type"] = "Start"
    req["Acct-Session-Id"] = "abc"
    raw = req.RequestPacket()
    assert verify_request_authenticator(raw, SECRET)
    assert not verify_request_authenticator(raw[:-1] + bytes([raw[-1] ^ 1]), SECRET)
    assert not verify_request_authenticator(raw, b"another-secret-xxxx")


def test_signed_requests_verify_with_pyrad() -> None:
    """A Disconnect-Request we sign is verified by pyrad's CoA code path."""
    from pyrad.packet import CoAPacket

    raw = sign_request(Code.DISCONNECT_REQUEST, 9, [(Attr.ACCT_SESSION_ID, b"s1")], SECRET)
    theirs = CoAPacket(packet=raw, secret=SECRET, dict=DICTIONARY)
    assert theirs.VerifyCoARequest()
    pkt = decode(raw)
    assert raw[20] == Attr.MESSAGE_AUTHENTICATOR
    assert verify_message_authenticator(raw, pkt, SECRET, bytes(16)) is True


def test_message_authenticator_detects_tampering() -> None:
    """A changed attribute or a wrong secret fails the Message-Authenticator check."""
    auth = os.urandom(16)
    raw = bytearray(encode(1, 3, auth, [(80, bytes(16)), (1, b"bob")]))
    raw[22:38] = message_authenticator(bytes(raw), SECRET)
    good = bytes(raw)
    assert verify_message_authenticator(good, decode(good), SECRET) is True
    bad = good[:-1] + b"c"
    assert verify_message_authenticator(bad, decode(bad), SECRET) is False
    assert verify_message_authenticator(good, decode(good), b"x" * 20) is False
    plain = encode(1, 3, auth, [(1, b"bob")])
    assert verify_message_authenticator(plain, decode(plain), SECRET) is None


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("00-10-A4-23-19-C0", "00:10:a4:23:19:c0"),
        ("00:10:a4:23:19:c0", "00:10:a4:23:19:c0"),
        ("0010A42319C0", "00:10:a4:23:19:c0"),
        ("0010.a423.19c0", "00:10:a4:23:19:c0"),
        ("00-10-A4-23-19-C0:Wi-Fi public", "00:10:a4:23:19:c0"),
        ("00-10-A4-23-19", None),
        ("not a mac", None),
        ("", None),
        (None, None),
    ],
)
def test_mac_spellings_normalise(text: str | None, mac: str | None) -> None:
    """NAS spellings of a MAC (RFC 3580 and vendors) normalise to aa:bb:...; junk to None."""
    assert normalize_mac(text) == mac
