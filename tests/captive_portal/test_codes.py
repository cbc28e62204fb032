"""Tests of captive_portal._codes: addresses, numbers, codes, challenges, send limits."""

from __future__ import annotations

import pytest

from captive_portal._codes import (
    DAY_S,
    Challenge,
    CodeBook,
    CodeVerdict,
    SendLimiter,
    identity_hash,
    judge_code,
    mask_email,
    mask_phone,
    new_code,
    normalize_email,
    normalize_phone,
    phone_allowed,
)
from controller.config import EU_CALLING_CODES

MAC = "aa:bb:cc:dd:ee:01"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("  Marie.Dupont@Example.ORG ", "Marie.Dupont@example.org"),
        ("a+tag@mail.lot.fr", "a+tag@mail.lot.fr"),
        ("no-at-sign.example.org", None),
        ("two@@example.org", None),
        ("dot.@example.org", None),
        ("a..b@example.org", None),
        ("a@localhost", None),
        ("a@-bad.example.org", None),
        ("a b@example.org", None),
        ("<script>@example.org", None),
        ("x" * 65 + "@example.org", None),
        ("a@" + "b" * 250 + ".fr", None),
    ],
)
def test_email_addresses_are_normalised_or_refused(typed: str, expected: str | None) -> None:
    assert normalize_email(typed) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("06 12 34 56 78", "+33612345678"),
        ("06.12.34.56.78", "+33612345678"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("+33 (0)6 12 34 56 78", "+33612345678"),
        ("+49 (151) 2345-6789", "+4915123456789"),
        ("+1 202 555 0100", "+12025550100"),
        ("612345678", None),
        ("+33 6 12 ab 56 78", None),
        ("+0612345678", None),
        ("+1234567", None),
        ("+1234567890123456", None),
        ("", None),
    ],
)
def test_phone_numbers_are_normalised_to_e164_or_refused(typed: str, expected: str | None) -> None:
    assert normalize_phone(typed) == expected


def test_only_allowed_country_codes_pass() -> None:
    """France and the EU by default; a US or a premium-rate foreign number does not."""
    assert phone_allowed("+33612345678", EU_CALLING_CODES)
    assert phone_allowed("+4915123456789", EU_CALLING_CODES)
    assert not phone_allowed("+12025550100", EU_CALLING_CODES)
    assert not phone_allowed("+88213000000", EU_CALLING_CODES)
    assert not phone_allowed("+33612345678", ("+32",))


def test_masks_show_enough_to_recognise_and_no_more() -> None:
    assert mask_email("marie@example.org") == "m•••@example.org"
    assert mask_phone("+33612345678") == "+33 ••••••78"


def test_identity_hash_is_keyed_and_case_insensitive() -> None:
    one = identity_hash("k1", "email", "Marie@example.org")
    assert one == identity_hash("k1", "email", "marie@example.org")
    assert one != identity_hash("k2", "email", "marie@example.org")
    assert one != identity_hash("k1", "sms", "marie@example.org")
    assert "marie" not in one and len(one) == 64


def test_codes_are_six_digits_and_vary() -> None:
    codes = {new_code() for _ in range(300)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 290


def _stored(code: str) -> bytes:
    return f"stored:{code}".encode()


@pytest.mark.parametrize(
    ("code", "device", "now", "attempts_left", "verdict"),
    [
        ("123456", MAC, 0, 3, "right"),
        (" 123 456\n", MAC, 599.9, 1, "right"),  # spaces ignored; the last attempt
        ("123456", MAC, 600, 3, "forget"),  # expired, even the right code
        ("654321", MAC, 600, 3, "forget"),
        ("654321", MAC, 1, 2, "wrong"),
        ("123456", "aa:bb:cc:dd:ee:02", 1, 2, "wrong"),  # another device
        ("654321", MAC, 1, 1, "forget"),  # the last attempt wrong
        ("123456", "aa:bb:cc:dd:ee:02", 1, 1, "forget"),
        ("", MAC, 1, 3, "wrong"),
    ],
)
def test_judge_code_decides_what_a_typed_code_does(
    code: str, device: str, now: float, attempts_left: int, verdict: CodeVerdict
) -> None:
    challenge = Challenge(
        channel="email",
        identity="m@example.org",
        device=MAC,
        expires_at=600,
        attempts_left=attempts_left,
        code_hash=_stored("123456"),
    )
    assert judge_code(challenge, code, device, now, hash_code=_stored) == verdict
    assert challenge.attempts_left == attempts_left  # the store applies the verdict


async def test_a_right_code_is_accepted_once_on_its_device() -> None:
    book = CodeBook()
    cid = await book.issue(
        "email", "m@example.org", MAC, code="123456", now=0, ttl_s=600, attempts=3
    )
    assert await book.check(cid, "123456", "aa:bb:cc:dd:ee:02", 1) is None  # another device
    used = await book.check(cid, " 123 456 ", MAC, 2)
    assert used is not None and used.identity == "m@example.org" and used.channel == "email"
    assert await book.check(cid, "123456", MAC, 3) is None  # used up
    assert len(book) == 0


async def test_wrong_codes_use_up_the_attempts_then_the_challenge_is_gone() -> None:
    book = CodeBook()
    cid = await book.issue("sms", "+33612345678", MAC, code="123456", now=0, ttl_s=600, attempts=3)
    assert await book.check(cid, "000000", MAC, 1) is None
    assert await book.check(cid, "000001", MAC, 2) is None
    assert await book.peek(cid) is not None
    assert await book.check(cid, "000002", MAC, 3) is None
    assert await book.peek(cid) is None
    assert await book.check(cid, "123456", MAC, 4) is None  # too late, even the right one


async def test_an_expired_code_is_refused_and_swept() -> None:
    book = CodeBook()
    cid = await book.issue(
        "email", "m@example.org", MAC, code="123456", now=0, ttl_s=600, attempts=3
    )
    other = await book.issue(
        "email", "n@example.org", MAC, code="654321", now=500, ttl_s=600, attempts=3
    )
    assert await book.sweep(601) == 1
    assert await book.check(cid, "123456", MAC, 601) is None
    assert await book.check(other, "654321", MAC, 1099) is not None
    assert await book.check("not-a-challenge", "123456", MAC, 0) is None


async def test_the_code_book_is_bounded() -> None:
    book = CodeBook(max_entries=3)
    ids = [
        await book.issue("email", f"{i}@example.org", MAC, code="1", now=0, ttl_s=60, attempts=1)
        for i in range(5)
    ]
    assert len(book) == 3
    assert await book.peek(ids[0]) is None and await book.peek(ids[-1]) is not None


def test_send_limiter_enforces_cooldown_and_daily_cap_then_a_new_day() -> None:
    limiter = SendLimiter()
    key = "sms:+33612345678"
    assert limiter.verdict(key, 0, cap=3, cooldown_s=60) == "ok"
    limiter.sent(key, 0)
    assert limiter.verdict(key, 30, cap=3, cooldown_s=60) == "cooldown"
    assert limiter.verdict(key, 60, cap=3, cooldown_s=60) == "ok"
    limiter.sent(key, 60)
    limiter.sent(key, 200)
    assert limiter.verdict(key, 5000, cap=3, cooldown_s=60) == "capped"
    assert limiter.verdict(key, DAY_S + 1, cap=3, cooldown_s=60) == "ok"
    limiter.sent(key, DAY_S + 1)
    assert limiter.verdict(key, DAY_S + 2, cap=3, cooldown_s=60) == "cooldown"
    assert limiter.verdict("sms:+33700000000", 5000, cap=3, cooldown_s=60) == "ok"
