"""Voucher codes and the rules of their use (pure)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from captive_portal._vouchers import (
    ALPHABET,
    CODE_LENGTH,
    Redemption,
    VoucherPolicy,
    VoucherState,
    decide,
    device_hash,
    format_code,
    keyed_hash,
    new_code,
    normalize_code,
)

NOW = 1_800_000_000.0
POLICY = VoucherPolicy(
    minutes=120,
    quota_mb=0,
    up_kbps=0,
    down_kbps=0,
    expires_at=NOW + 86400,
    max_devices=2,
    insee=None,
)
FRESH = VoucherState(first_used_at=None, devices=0, revoked=False, used_by_this_device=False)


def test_codes_avoid_look_alike_symbols_and_round_trip() -> None:
    """Codes use no 0/O/1/I/L; the printed form, lower case and spaces normalise back."""
    assert not set("0O1IL") & set(ALPHABET)
    code = new_code(random.Random(4).choice)
    assert len(code) == CODE_LENGTH
    printed = format_code(code)
    assert printed[5] == "-"
    assert normalize_code(printed) == code
    assert normalize_code(f"  {printed.lower()} ") == code
    assert normalize_code(printed.replace("-", " ")) == code


@pytest.mark.parametrize(
    "typed", ["", "ABCDE", "ABCDE-FGHJK-M", "ABCDE-FGHJ0", "x" * 500, "ÀBCDE-FGHJK"]
)
def test_what_cannot_be_a_code_is_refused_before_any_lookup(typed: str) -> None:
    """Wrong length, a symbol outside the alphabet or a huge input is not a code."""
    assert normalize_code(typed) is None


def test_hashes_are_keyed() -> None:
    """Another key gives another hash: a stolen table is not a list of codes or MACs."""
    assert keyed_hash("k1", "ABCDEFGHJK") != keyed_hash("k2", "ABCDEFGHJK")
    assert device_hash("k1", "AA:BB:CC:DD:EE:01") == device_hash("k1", "aa:bb:cc:dd:ee:01")
    assert device_hash("k1", "aa:bb:cc:dd:ee:01") != device_hash("k2", "aa:bb:cc:dd:ee:01")


DECIDE_CASES = [
    # (policy changes, state, now offset, insee, expected)
    ({}, FRESH, 0, "46201", (Redemption.NEW_DEVICE, 120)),
    ({}, VoucherState(NOW - 1800, 1, False, False), 0, "46201", (Redemption.NEW_DEVICE, 90)),
    ({}, VoucherState(NOW - 1800, 2, False, True), 0, "46201", (Redemption.SAME_DEVICE, 90)),
    ({}, VoucherState(NOW - 1800, 2, False, False), 0, "46201", (Redemption.REFUSED, 0)),
    ({}, VoucherState(NOW - 7200, 1, False, True), 0, "46201", (Redemption.REFUSED, 0)),
    ({}, VoucherState(None, 0, True, False), 0, "46201", (Redemption.REFUSED, 0)),
    ({}, FRESH, 86401, "46201", (Redemption.REFUSED, 0)),
    ({"insee": "46042"}, FRESH, 0, "46201", (Redemption.REFUSED, 0)),
    ({"insee": "46201"}, FRESH, 0, "46201", (Redemption.NEW_DEVICE, 120)),
]
IDS = [
    "fresh",
    "second-device",
    "same-device-again",
    "full",
    "time-used-up",
    "revoked",
    "expired",
    "other-commune",
    "own-commune",
]


@pytest.mark.parametrize(("changes", "state", "offset", "insee", "expected"), DECIDE_CASES, ids=IDS)
def test_voucher_rules(
    changes: dict[str, object],
    state: VoucherState,
    offset: float,
    insee: str,
    expected: tuple[Redemption, int],
) -> None:
    """Time runs from the first use and is shared; devices, expiry, revocation and commune hold."""
    policy = dataclasses.replace(POLICY, **changes)  # type: ignore[arg-type]
    assert decide(policy, state, insee=insee, now=NOW + offset) == expected
