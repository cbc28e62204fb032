"""RADIUS packet codec and packet cryptography (RFC 2865, 2866, 2869, 3579, 5176).

Pure functions over bytes: decode (bounded), encode, authenticators, the
Message-Authenticator, PAP hiding. No sockets, clocks or asyncio here; no policy either
(what to accept is decided by the server core and its caller).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from radius.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_LEN",
    "MAX_PACKET",
    "Attr",
    "Code",
    "Packet",
    "accounting_authenticator",
    "decode",
    "encode",
    "encode_int",
    "encode_vsa",
    "ip_text",
    "message_authenticator",
    "normalize_mac",
    "pap_decrypt",
    "pap_encrypt",
    "sign_reply",
    "sign_request",
    "verify_message_authenticator",
    "verify_reply",
    "verify_request_authenticator",
]

# RFC 2865 §3: "The minimum length is 20 and maximum length is 4096." Anything else is
# dropped before any attribute is parsed: the decoder never allocates more than that.
HEADER_LEN = 20
MAX_PACKET = 4096
# RFC 2865 §5.2: User-Password is at most 128 octets once hidden.
MAX_PASSWORD = 128
_ZERO16 = bytes(16)
_HEADER = struct.Struct("!BBH")


class Code(IntEnum):
    """RADIUS packet codes (RFC 2865 §3, 2866 §3, 5997 §3, 5176 §2.3)."""

    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43
    COA_ACK = 44
    COA_NAK = 45


class Attr(IntEnum):
    """Attribute types borne reads or writes (see ``radius/dictionary``)."""

    USER_NAME = 1
    USER_PASSWORD = 2
    NAS_IP_ADDRESS = 4
    NAS_PORT = 5
    SERVICE_TYPE = 6
    FRAMED_IP_ADDRESS = 8
    REPLY_MESSAGE = 18
    STATE = 24
    CLASS = 25
    VENDOR_SPECIFIC = 26
    SESSION_TIMEOUT = 27
    IDLE_TIMEOUT = 28
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    PROXY_STATE = 33
    ACCT_STATUS_TYPE = 40
    ACCT_DELAY_TIME = 41
    ACCT_INPUT_OCTETS = 42
    ACCT_OUTPUT_OCTETS = 43
    ACCT_SESSION_ID = 44
    ACCT_SESSION_TIME = 46
    ACCT_TERMINATE_CAUSE = 49
    ACCT_INPUT_GIGAWORDS = 52
    ACCT_OUTPUT_GIGAWORDS = 53
    EVENT_TIMESTAMP = 55
    MESSAGE_AUTHENTICATOR = 80
    ACCT_INTERIM_INTERVAL = 85
    ERROR_CAUSE = 101


@dataclass(frozen=True)
class Packet:
    """A decoded packet: header fields and attributes in wire order."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, bytes], ...]

    def get(self, attr: int) -> bytes | None:
        """The first value of ``attr``, or None."""
        for t, v in self.attributes:
            if t == attr:
                return v
        return None

    def all(self, attr: int) -> list[bytes]:
        """Every value of ``attr``, in order (Proxy-State, Class...)."""
        return [v for t, v in self.attributes if t == attr]

    def get_int(self, attr: int) -> int | None:
        """The first value of ``attr`` as a 32-bit integer, or None if absent or malformed."""
        v = self.get(attr)
        if v is None or len(v) != 4:
            return None
        return int.from_bytes(v, "big")

    def get_str(self, attr: int) -> str | None:
        """The first value of ``attr`` as text (invalid UTF-8 replaced), or None."""
        v = self.get(attr)
        return None if v is None else v.decode("utf-8", "replace")


def decode(data: bytes) -> Packet:
    """Parse one datagram; the length field must match and every attribute must fit.

    Octets after the declared length are padding (RFC 2865 §3) and ignored.

    Raises:
        RemoteProtocolError: malformed packet (``reason`` names the defect).
    """
    if len(data) < HEADER_LEN:
        raise RemoteProtocolError("too_short", f"{len(data)} octets")
    if len(data) > MAX_PACKET:
        raise RemoteProtocolError("too_long", f"{len(data)} octets")
    code, ident, length = struct.unpack_from("!BBH", data)
    if length < HEADER_LEN or length > len(data):
        raise RemoteProtocolError("bad_length", f"header says {length}, got {len(data)}")
    attrs: list[tuple[int, bytes]] = []
    pos = HEADER_LEN
    while pos < length:
        if pos + 2 > length:
            raise RemoteProtocolError("bad_attribute", "truncated attribute header")
        t, alen = data[pos], data[pos + 1]
        if alen < 2 or pos + alen > length:
            raise RemoteProtocolError("bad_attribute", f"attribute {t} length {alen}")
        attrs.append((t, data[pos + 2 : pos + alen]))
        pos += alen
    return Packet(code, ident, data[4:20], tuple(attrs))


def _attrs_bytes(attributes: Iterable[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for t, v in attributes:
        if not 0 < t < 256:
            raise LocalProtocolError(f"attribute type {t} out of range")
        if len(v) > 253:
            raise LocalProtocolError(f"attribute {t} value longer than 253 octets")
        out += bytes((t, len(v) + 2)) + v
    return bytes(out)


def encode(
    code: int, identifier: int, authenticator: bytes, attributes: Iterable[tuple[int, bytes]]
) -> bytes:
    """Serialise a packet as given (no signing).

    Raises:
        LocalProtocolError: a value does not fit, or the packet exceeds 4096 octets.
    """
    body = _attrs_bytes(attributes)
    length = HEADER_LEN + len(body)
    if length > MAX_PACKET:
        raise LocalProtocolError(f"packet of {length} octets exceeds {MAX_PACKET}")
    if len(authenticator) != 16:
        raise LocalProtocolError("the authenticator must be 16 octets")
    return struct.pack("!BBH", code, identifier & 0xFF, length) + authenticator + body


def encode_int(value: int) -> bytes:
    """A RADIUS ``integer`` (32-bit unsigned, big-endian)."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"integer {value} out of 32-bit range")
    return value.to_bytes(4, "big")


def encode_vsa(vendor: int, vtype: int, value: bytes) -> tuple[int, bytes]:
    """A Vendor-Specific attribute in the RFC 2865 §5.26 recommended format."""
    return (Attr.VENDOR_SPECIFIC, struct.pack("!IBB", vendor, vtype, len(value) + 2) + value)


def _md5(*parts: bytes) -> bytes:
    h = hashlib.md5(usedforsecurity=False)
    for p in parts:
        h.update(p)
    return h.digest()


def _zero_ma(data: bytes) -> bytes:
    """``data`` with the Message-Authenticator value replaced by zeros (RFC 3579 §3.2)."""
    out = bytearray(data)
    length = int.from_bytes(data[2:4], "big")
    pos = HEADER_LEN
    while pos + 2 <= length:
        t, alen = out[pos], out[pos + 1]
        if alen < 2:
            break
        if t == Attr.MESSAGE_AUTHENTICATOR and alen == 18:
            out[pos + 2 : pos + 18] = _ZERO16
        pos += alen
    return bytes(out[:length])


def message_authenticator(data: bytes, secret: bytes, authenticator: bytes | None = None) -> bytes:
    """HMAC-MD5 of the packet with the Message-Authenticator zeroed (RFC 3579 §3.2).

    ``authenticator`` replaces the header's one: the request's for a reply, zeros for an
    Accounting-Request or a CoA/Disconnect-Request (RFC 5176 §3.4).
    """
    body = _zero_ma(data)
    if authenticator is not None:
        body = body[:4] + authenticator + body[20:]
    return hmac.new(secret, body, "md5").digest()


def verify_message_authenticator(
    data: bytes, packet: Packet, secret: bytes, authenticator: bytes | None = None
) -> bool | None:
    """True/False for a present Message-Authenticator, None when there is none."""
    values = packet.all(Attr.MESSAGE_AUTHENTICATOR)
    if not values:
        return None
    if len(values) != 1 or len(values[0]) != 16:
        return False
    return hmac.compare_digest(values[0], message_authenticator(data, secret, authenticator))


def accounting_authenticator(data: bytes, secret: bytes) -> bytes:
    """The Request Authenticator of an Accounting/CoA/Disconnect-Request (RFC 2866 §3)."""
    length = int.from_bytes(data[2:4], "big")
    return _md5(data[:4], _ZERO16, data[20:length], secret)


def verify_request_authenticator(data: bytes, secret: bytes) -> bool:
    """Whether an Accounting-, CoA- or Disconnect-Request was signed with ``secret``."""
    return hmac.compare_digest(data[4:20], accounting_authenticator(data, secret))


def _with_ma(
    code: int,
    identifier: int,
    authenticator: bytes,
    attributes: Sequence[tuple[int, bytes]],
    secret: bytes,
    ma_authenticator: bytes,
) -> bytearray:
    # Message-Authenticator first (BlastRADIUS, CVE-2024-3596): the attacker's chosen
    # prefix can no longer precede the bytes the MD5 collision needs.
    raw = bytearray(
        encode(
            code, identifier, authenticator, [(Attr.MESSAGE_AUTHENTICATOR, _ZERO16), *attributes]
        )
    )
    raw[22:38] = message_authenticator(bytes(raw), secret, ma_authenticator)
    return raw


def sign_reply(
    code: int,
    request: Packet,
    attributes: Sequence[tuple[int, bytes]],
    secret: bytes,
    *,
    with_message_authenticator: bool = True,
) -> bytes:
    """A reply to ``request``: Message-Authenticator first, Proxy-State copied last.

    RFC 2865 §5.33: Proxy-State attributes are copied unmodified and in order. The
    Response Authenticator is MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
    """
    attrs = [*attributes, *((Attr.PROXY_STATE, v) for v in request.all(Attr.PROXY_STATE))]
    if not attrs and not with_message_authenticator:
        # A bare reply (an Accounting-Response): header, then its authenticator.
        head = _HEADER.pack(code, request.identifier, HEADER_LEN)
        return head + _md5(head, request.authenticator, secret)
    if with_message_authenticator:
        raw = _with_ma(
            code, request.identifier, request.authenticator, attrs, secret, request.authenticator
        )
    else:
        raw = bytearray(encode(code, request.identifier, request.authenticator, attrs))
    raw[4:20] = _md5(bytes(raw[:4]), request.authenticator, bytes(raw[20:]), secret)
    return bytes(raw)


def sign_request(
    code: int,
    identifier: int,
    attributes: Sequence[tuple[int, bytes]],
    secret: bytes,
    *,
    with_message_authenticator: bool = True,
) -> bytes:
    """A CoA-, Disconnect- or Accounting-Request signed as RFC 5176 §3.4 / RFC 2866 §3 say."""
    if with_message_authenticator:
        raw = _with_ma(code, identifier, _ZERO16, attributes, secret, _ZERO16)
    else:
        raw = bytearray(encode(code, identifier, _ZERO16, attributes))
    raw[4:20] = accounting_authenticator(bytes(raw), secret)
    return bytes(raw)


def verify_reply(data: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    """Whether a reply was signed with ``secret`` for the request of that authenticator."""
    length = int.from_bytes(data[2:4], "big")
    expected = _md5(data[:4], request_authenticator, data[20:length], secret)
    return hmac.compare_digest(data[4:20], expected)


def pap_decrypt(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """Reveal a User-Password (RFC 2865 §5.2); trailing NULs removed.

    Raises:
        RemoteProtocolError: the length is not a non-zero multiple of 16 up to 128.
    """
    if not hidden or len(hidden) % 16 or len(hidden) > MAX_PASSWORD:
        raise RemoteProtocolError("bad_password", f"{len(hidden)} octets")
    out = bytearray()
    last = authenticator
    for i in range(0, len(hidden), 16):
        block = hidden[i : i + 16]
        key = _md5(secret, last)
        out += bytes(a ^ b for a, b in zip(block, key, strict=True))
        last = block
    return bytes(out).rstrip(b"\x00")


def pap_encrypt(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """Hide a User-Password (RFC 2865 §5.2), as a NAS does (used by tests and tools)."""
    if len(password) > MAX_PASSWORD:
        raise LocalProtocolError("password longer than 128 octets")
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    last = authenticator
    for i in range(0, len(padded), 16):
        key = _md5(secret, last)
        block = bytes(a ^ b for a, b in zip(padded[i : i + 16], key, strict=True))
        out += block
        last = block
    return bytes(out)


_MAC_HEX = re.compile(r"[0-9a-fA-F]{12}")


def normalize_mac(text: str | None) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` from the usual NAS spellings (RFC 3580 §3.21 ``AA-BB-...``,
    colons, dots, bare hex, with a ``:SSID`` suffix for Called-Station-Id); else None."""
    if not text:
        return None
    head = text.strip()
    # Called-Station-Id is "MAC:SSID" (RFC 3580 §3.20): keep the MAC part.
    if len(head) > 17 and head[17:18] == ":":
        head = head[:17]
    bare = head.replace(":", "").replace("-", "").replace(".", "")
    if not _MAC_HEX.fullmatch(bare):
        return None
    return bytes.fromhex(bare).hex(":")


def ip_text(value: bytes | None) -> str | None:
    """An ``ipaddr`` attribute as text, or None when absent or not 4 octets."""
    if value is None or len(value) != 4:
        return None
    return socket.inet_ntoa(value)
