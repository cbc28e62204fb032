"""The record frame format: parsing arbitrary bytes never crashes and never over-reads."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from controller.legal import _format as fmt
from tests.controller.legal.conftest import record

KEYS = fmt.DayKeys(AESGCM(b"a" * 32), AESGCM(b"b" * 32), b"c" * 32)


def test_leaf_round_trip() -> None:
    """A built leaf parses back and decrypts only with its day and sequence number."""
    leaf, tags = fmt.build_leaf("2026-09-21", 4, 77, record(4), KEYS)
    parsed = fmt.parse_leaf(leaf)
    assert parsed.tags == tags[:4] and len(tags) == 5  # a 512-port block: two buckets
    assert (parsed.seq, parsed.event_id) == (4, 77)
    assert parsed.tags[0] == fmt.tag(b"c" * 32, "mac", record(4).client_mac)
    assert KEYS.identity is not None
    ident = fmt.decrypt_part(KEYS.identity, "2026-09-21", 4, "identity", parsed.identity)
    assert ident[4] == record(4).client_mac
    with pytest.raises(InvalidTag):  # the associated data binds the position
        fmt.decrypt_part(KEYS.identity, "2026-09-21", 5, "identity", parsed.identity)


@given(st.binary(max_size=400))
def test_frames_of_random_bytes_stay_within_the_data(data: bytes) -> None:
    """iter_frames returns only complete frames within the data."""
    frames, covered = fmt.iter_frames(data)
    assert covered <= len(data)
    assert sum(4 + len(f) for f in frames) == covered


@given(st.binary(max_size=300))
def test_parse_leaf_rejects_garbage_cleanly(data: bytes) -> None:
    """Random bytes are a ValueError or struct.error, never another crash."""
    with contextlib.suppress(ValueError, struct.error):
        leaf = fmt.parse_leaf(data)
        assert len(leaf.identity) + len(leaf.traffic) < len(data)


@given(st.binary(min_size=16, max_size=64), st.text(max_size=80))
def test_tags_are_keyed_blake2b_of_kind_and_lowered_value(key: bytes, value: str) -> None:
    """A tag is BLAKE2b keyed with the day's index key over kind and lowered value (the
    format documented in LEGAL.md: a change would make earlier days unsearchable)."""
    want = hashlib.blake2b(f"mac\x00{value.lower()}".encode(), key=key, digest_size=16)
    assert fmt.tag(key, "mac", value) == want.digest()
    other = bytes(b ^ 1 for b in key)
    assert fmt.tag(other, "mac", value) != want.digest()
