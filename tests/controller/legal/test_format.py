"""The record frame format: parsing arbitrary bytes never crashes and never over-reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from controller.legal import _format as fmt
from controller.legal.records import IDENTITY_FIELDS, TRAFFIC_FIELDS
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


@given(st.binary(min_size=16, max_size=64), st.lists(st.text(max_size=40), max_size=20))
def test_the_append_tagger_gives_the_tags_search_computes(key: bytes, values: list[str]) -> None:
    """Tags computed at append time (copied key state, remembered values, a memory that
    empties when full) are the ones a search computes from the key."""

    class Small(fmt.Tagger):
        MEMO = 3  # the memory empties during the run

    tagger = Small(key)
    for value in values + values:
        assert tagger("user", value) == fmt.tag(key, "user", value)
    assert len(tagger._memo) <= 3


@given(
    st.text(max_size=30),
    st.one_of(st.none(), st.text(max_size=30)),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_record_parts_are_the_compact_json_documented(
    session_id: str, auth_ref: str | None, volume: int
) -> None:
    """Each part is the compact UTF-8 JSON array LEGAL.md documents (what the standard
    library writes with these settings), whatever the text holds."""

    rec = record(1, session_id=session_id, auth_ref=auth_ref, down_bytes=volume)
    for part, fields in (
        (rec.identity_bytes(), IDENTITY_FIELDS),
        (rec.traffic_bytes(), TRAFFIC_FIELDS),
    ):
        values = [getattr(rec, f) for f in fields]
        assert part == json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
        assert json.loads(part) == values
