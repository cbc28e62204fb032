"""Voucher codes and the rules of their use (pure)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

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
from captive_portal.app import COUNTERS
from tests.captive_portal.portal_fixtures import portal_client
from tests.captive_portal.test_app import FakeBackend, FakeClock, state_of, text_of

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


# -- the voucher form over HTTP (the store's redemption is in test_store.py) --------------------


async def voucher_page(client: Any, make_fas: Callable[..., str]) -> tuple[str, str]:
    response = await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})
    body = await response.text()
    return body, state_of(body)


async def test_a_good_code_logs_in_with_the_voucher_time(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """The code and the consent reach the backend; the page says the voucher's duration."""
    backend = FakeBackend()
    backend.codes["ABCDE-FGHJK"] = 90
    client = await portal_client(aiohttp_client, backend)
    body, state = await voucher_page(client, make_fas)
    assert 'action="/fas/voucher"' in body
    assert 'autocomplete="off"' in body
    response = await client.post(
        "/fas/voucher",
        data={"state": state, "code": "ABCDE-FGHJK", "consent": "yes", "lang": "en"},
    )
    assert response.status == 200
    assert "Your session lasts 1 hour 30 minutes" in text_of(await response.text())
    (call,) = backend.calls
    assert (call.method, call.code) == ("voucher", "ABCDE-FGHJK")


async def test_a_voucher_still_needs_the_terms_accepted(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """Without the box ticked, the code is not even tried."""
    backend = FakeBackend()
    backend.codes["ABCDE-FGHJK"] = 90
    client = await portal_client(aiohttp_client, backend)
    _, state = await voucher_page(client, make_fas)
    response = await client.post("/fas/voucher", data={"state": state, "code": "ABCDE-FGHJK"})
    assert response.status == 400
    assert backend.calls == []


async def test_wrong_codes_get_one_clear_answer_then_a_pause(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """A wrong code says only "not valid or no longer usable"; after 5, even a good one waits."""
    backend = FakeBackend()
    backend.codes["ABCDE-FGHJK"] = 90
    clock = FakeClock()
    client = await portal_client(aiohttp_client, backend, clock)
    _, state = await voucher_page(client, make_fas)
    for _ in range(5):
        response = await client.post(
            "/fas/voucher",
            data={"state": state, "code": "ZZZZZ-ZZZZZ", "consent": "yes", "lang": "en"},
        )
        assert response.status == 400
        assert "This code is not valid or can no longer be used." in text_of(await response.text())
    blocked = await client.post(
        "/fas/voucher",
        data={"state": state, "code": "ABCDE-FGHJK", "consent": "yes", "lang": "en"},
    )
    assert "Too many wrong codes" in text_of(await blocked.text())
    assert len(backend.calls) == 5
    counters = client.app[COUNTERS]
    assert (counters.bad_code, counters.code_rate_limited) == (5, 1)
    clock.now += 601
    fine = await client.post(
        "/fas/voucher",
        data={"state": state, "code": "ABCDE-FGHJK", "consent": "yes", "lang": "en"},
    )
    assert fine.status == 200


async def test_voucher_form_is_absent_when_the_method_is_off(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """With only click-through enabled, no voucher form is shown and its URL answers 404."""
    client = await portal_client(aiohttp_client, FakeBackend(), methods=("click-through",))
    body, state = await voucher_page(client, make_fas)
    assert "/fas/voucher" not in body
    response = await client.post("/fas/voucher", data={"state": state, "consent": "yes"})
    assert response.status == 404
