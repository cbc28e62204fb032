"""The on-disk format of one record of the legal log (pure: bytes in, bytes out).

A record is stored as a frame ``u32 length || leaf``. The leaf is what the day's
Merkle tree hashes, so the tree covers everything stored about the record:

    b"L1" | u32 seq | u64 event_id | 4 x 16-byte blind tags (mac, user, private, public)
    | 12-byte nonce | u32 n | identity ciphertext (n bytes) | 12-byte nonce | traffic ciphertext

Each ciphertext is AES-256-GCM under the day's key of its part, with the day, the
record's sequence number and the part as associated data: a record copied to another
day or another position does not decrypt. The tags are keyed BLAKE2b (RFC 7693) under the
day's index key, 16 bytes (128 bits leave no practical collision at a few million
entries a day): without the key they say nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.legal.records import LegalRecord

__all__ = [
    "TAG_KINDS",
    "DayKeys",
    "Leaf",
    "Tagger",
    "build_leaf",
    "decrypt_part",
    "iter_frames",
    "parse_leaf",
    "tag",
]

MAGIC = b"L1"
TAG_KINDS = ("mac", "user", "private", "public")
TAG_LEN = 16
PORT_BUCKET_BITS = 8
# A port block wider than 64 buckets (16,384 ports) is indexed by its first 64 only.
MAX_BUCKETS = 64
_HEAD = struct.Struct(">2sIQ")
_U32 = struct.Struct(">I")
_NO_TAG = bytes(TAG_LEN)
# A bound on one frame: a record is a few hundred bytes; anything bigger is damage.
MAX_FRAME = 64 * 1024


@dataclass(frozen=True)
class DayKeys:
    """The unwrapped keys of one day; a shredded key is None."""

    identity: AESGCM | None
    traffic: AESGCM | None
    index: bytes | None
    tagger: Tagger | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.index is not None:
            object.__setattr__(self, "tagger", Tagger(self.index))


@dataclass(frozen=True)
class Leaf:
    """A parsed leaf (nothing decrypted)."""

    seq: int
    event_id: int
    tags: tuple[bytes, ...]
    identity: bytes
    traffic: bytes


def tag(index_key: bytes, kind: str, value: str) -> bytes:
    """The blind index tag of one searchable value: keyed BLAKE2b (RFC 7693 §2.9, a MAC
    in one pass, faster here than HMAC-SHA256's two)."""
    return hashlib.blake2b(_tagged(kind, value), key=index_key, digest_size=TAG_LEN).digest()


def _tagged(kind: str, value: str) -> bytes:
    """What a tag hashes: the kind, a zero byte and the value in lower case."""
    return f"{kind}\x00{value.lower()}".encode()


class Tagger:
    """``tag`` under one day's index key, for the appends of that day.

    It copies the BLAKE2b state left after the key's block instead of hashing the key
    again, and remembers the latest tags: the start, updates and stop of one session
    share their MAC, user, private and public tags. The memory is dropped whole when it
    reaches ``MEMO`` entries (it only saves work; a miss costs one hash).
    """

    MEMO = 65_536
    __slots__ = ("_base", "_memo")

    def __init__(self, index_key: bytes) -> None:
        self._base = hashlib.blake2b(key=index_key, digest_size=TAG_LEN)
        self._memo: dict[bytes, bytes] = {}

    def __call__(self, kind: str, value: str) -> bytes:
        msg = _tagged(kind, value)
        t = self._memo.get(msg)
        if t is None:
            h = self._base.copy()
            h.update(msg)
            t = h.digest()
            if len(self._memo) >= self.MEMO:
                self._memo.clear()
            self._memo[msg] = t
        return t


def public_value(ip: str, port: int | None) -> str:
    """The searchable value of a public IP and a port: the IP and the port's bucket.

    Every session behind one NAT address shares the IP, so the IP alone would select a
    whole gateway's day; the bucket (256 ports) narrows it to the few sessions whose
    port block covers it.
    """
    return f"{ip}|-" if port is None else f"{ip}|{port >> PORT_BUCKET_BITS}"


def public_tags(tag_of: Tagger, rec: LegalRecord) -> list[bytes]:
    """The tags of every port bucket a record's public port block covers."""
    if not rec.public_ip:
        return []
    if rec.port_start is None or rec.port_end is None or rec.port_end < rec.port_start:
        return [tag_of("public", public_value(rec.public_ip, None))]
    first, last = rec.port_start >> PORT_BUCKET_BITS, rec.port_end >> PORT_BUCKET_BITS
    last = min(last, first + MAX_BUCKETS - 1)
    return [tag_of("public", f"{rec.public_ip}|{b}") for b in range(first, last + 1)]


def record_tags(tag_of: Tagger, rec: LegalRecord) -> tuple[bytes, ...]:
    """The tags of a record: mac, user, private, then each public port bucket (the leaf
    keeps the first four, zeros where a value is unknown; the index gets them all)."""
    return (
        tag_of("mac", rec.client_mac),
        tag_of("user", rec.auth_ref) if rec.auth_ref else _NO_TAG,
        tag_of("private", f"{rec.private_ip}|{rec.gateway}"),
        *(public_tags(tag_of, rec) or [_NO_TAG]),
    )


def _aad(day: str, seq: int, part: str) -> bytes:
    return f"borne-legal|{day}|{seq}|{part}".encode()


def build_leaf(
    day: str, seq: int, event_id: int, rec: LegalRecord, keys: DayKeys
) -> tuple[bytes, tuple[bytes, ...]]:
    """Encrypt and tag one record; return its leaf bytes and its tags."""
    assert keys.identity is not None and keys.traffic is not None and keys.tagger is not None
    nonces = os.urandom(24)
    n1, n2 = nonces[:12], nonces[12:]
    tags = record_tags(keys.tagger, rec)
    c1 = keys.identity.encrypt(n1, rec.identity_bytes(), _aad(day, seq, "identity"))
    c2 = keys.traffic.encrypt(n2, rec.traffic_bytes(), _aad(day, seq, "traffic"))
    leaf = b"".join(
        (
            _HEAD.pack(MAGIC, seq, event_id),
            *tags[:4],
            n1,
            _U32.pack(len(c1)),
            c1,
            n2,
            c2,
        )
    )
    return leaf, tags


def parse_leaf(leaf: bytes) -> Leaf:
    """Split a leaf into its parts.

    Raises:
        ValueError: the bytes are not a leaf.
    """
    magic, seq, event_id = _HEAD.unpack_from(leaf)
    if magic != MAGIC:
        raise ValueError("bad magic")
    pos = _HEAD.size
    tags = tuple(leaf[pos + i * TAG_LEN : pos + (i + 1) * TAG_LEN] for i in range(4))
    pos += 4 * TAG_LEN
    (n,) = struct.unpack_from(">I", leaf, pos + 12)
    identity = leaf[pos : pos + 12] + leaf[pos + 16 : pos + 16 + n]
    traffic = leaf[pos + 16 + n :]
    if len(identity) != 12 + n or len(traffic) < 12 + 16:
        raise ValueError("truncated leaf")
    return Leaf(seq, event_id, tags, identity, traffic)


def decrypt_part(key: AESGCM, day: str, seq: int, part: str, blob: bytes) -> list[Any]:
    """Decrypt one part (raises ``cryptography.exceptions.InvalidTag`` if altered)."""
    plain = key.decrypt(blob[:12], blob[12:], _aad(day, seq, part))
    value = json.loads(plain)
    if not isinstance(value, list):
        raise ValueError("not a record part")
    return value


def iter_frames(data: bytes) -> tuple[list[bytes], int]:
    """The complete frames of a records file and the length they cover (a torn last
    frame, left by a crash mid-write, is not counted)."""
    out: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if n > MAX_FRAME or pos + 4 + n > len(data):
            break
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out, pos


def frame(leaf: bytes) -> bytes:
    """The framed bytes of a leaf."""
    return _U32.pack(len(leaf)) + leaf
