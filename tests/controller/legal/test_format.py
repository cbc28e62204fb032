"""The record frame format: parsing arbitrary bytes never crashes and never over-reads."""

from __future__ import annotations

import contextlib
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
