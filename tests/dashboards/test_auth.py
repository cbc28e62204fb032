"""Rights, passwords, TOTP, CSRF and login limits (``dashboards._auth``), all pure."""

from __future__ import annotations

import pyotp
import pytest

from dashboards._auth import (
    Account,
    LoginLimiter,
    Role,
    csrf_token,
    csrf_valid,
    dummy_verify,
    hash_password,
    new_login_token,
    new_totp_secret,
    password_problem,
    token_hash,
    totp_uri,
    totp_valid,
    verify_password,
)

ROCAMADOUR, CAHORS, FIGEAC = "46240", "46042", "46102"
NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    ("role", "communes", "sees"),
    [
        (Role.COMMUNE_VIEWER, {ROCAMADOUR}, {ROCAMADOUR}),
        (Role.COMMUNE_MANAGER, {ROCAMADOUR, CAHORS}, {ROCAMADOUR, CAHORS}),
        (Role.ADMIN, set(), {ROCAMADOUR, CAHORS, FIGEAC}),
        (Role.TECHNICIAN, set(), {ROCAMADOUR, CAHORS, FIGEAC}),
        (Role.LEGAL_OFFICER, set(), set()),
    ],
)
def test_each_role_sees_exactly_its_communes(
    role: Role, communes: set[str], sees: set[str]
) -> None:
    """A commune account sees its own communes only; admin and technician all; legal none."""
    account = Account("u", "U", role, frozenset(communes))
    assert account.visible({ROCAMADOUR, CAHORS, FIGEAC}) == sees


def test_only_admin_manages_and_admin_and_legal_need_totp() -> None:
    """Account management is the admin's alone; TOTP is asked of admin and legal officer."""
    manages = {r for r in Role if Account("u", "U", r).manages_accounts}
    totp = {r for r in Role if Account("u", "U", r).needs_second_factor}
    assert manages == {Role.ADMIN}
    assert totp == {Role.ADMIN, Role.LEGAL_OFFICER}


def test_password_hash_is_argon2id_and_verifies_only_the_password() -> None:
    """The stored hash is argon2id (memory-hard), salted, and accepts only the password."""
    first = hash_password("correct horse battery")
    second = hash_password("correct horse battery")
    assert first.startswith("$argon2id$") and "m=65536" in first
    assert first != second  # a salt each time
    assert verify_password(first, "correct horse battery")
    assert not verify_password(first, "correct horse batterY")
    assert not verify_password("not a hash", "correct horse battery")
    assert not dummy_verify("correct horse battery")


def test_password_length_rules() -> None:
    """Under 12 characters or over 256 is refused, with a French message first."""
    assert password_problem("short") is not None and "caractères" in str(password_problem("x"))
    assert password_problem("douze carac.") is None
    assert password_problem("x" * 257) is not None


def test_totp_accepts_the_current_code_and_one_step_around_only() -> None:
    """The code of now, of 30 s before and after passes; two steps away or garbage does not."""
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    assert totp_valid(secret, totp.at(NOW), NOW)
    assert totp_valid(secret, totp.at(NOW - 30), NOW)
    assert totp_valid(secret, " " + totp.at(NOW + 30)[:3] + " " + totp.at(NOW + 30)[3:], NOW)
    assert not totp_valid(secret, totp.at(NOW - 90), NOW)
    assert not totp_valid(secret, "12345", NOW)
    assert not totp_valid(secret, "abcdef", NOW)
    uri = totp_uri(secret, "alice", "Wi-Fi du Lot")
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri


def test_csrf_token_is_bound_to_the_login_and_the_key() -> None:
    """A CSRF token is valid for its own login token and key only."""
    key, other_key = b"k" * 32, b"j" * 32
    login, other_login = new_login_token(), new_login_token()
    token = csrf_token(key, login)
    assert csrf_valid(key, login, token)
    assert not csrf_valid(key, other_login, token)
    assert not csrf_valid(other_key, login, token)
    assert not csrf_valid(key, login, "")


def test_token_hash_hides_the_token() -> None:
    """The database keeps a SHA-256 of the token, never the token."""
    token = new_login_token()
    assert len(token) >= 43
    assert token not in token_hash(token) and len(token_hash(token)) == 64


def test_limiter_blocks_after_max_failures_then_frees_after_the_window() -> None:
    """Five failures in the window block the key until the oldest leaves the window."""
    limiter = LoginLimiter(max_failures=5, window_s=900)
    keys = ["user:alice", "addr:127.0.0.1"]
    for i in range(4):
        limiter.failed(keys, NOW + i)
        assert limiter.retry_after(keys, NOW + i) == 0
    limiter.failed(keys, NOW + 4)
    assert limiter.retry_after(keys, NOW + 5) == pytest.approx(895)
    assert limiter.retry_after(["user:bob"], NOW + 5) == 0
    assert limiter.retry_after(["addr:127.0.0.1"], NOW + 5) > 0  # spraying from one address
    assert limiter.retry_after(keys, NOW + 900) == 0


def test_limiter_success_forgets_the_name_not_the_address() -> None:
    """A good login clears its name's failures but not those of the address."""
    limiter = LoginLimiter(max_failures=2, window_s=60)
    limiter.failed(["user:a", "addr:x"], NOW)
    limiter.failed(["user:a", "addr:x"], NOW)
    limiter.succeeded("user:a")
    assert limiter.retry_after(["user:a"], NOW) == 0
    assert limiter.retry_after(["addr:x"], NOW) > 0


def test_limiter_memory_is_bounded() -> None:
    """The limiter forgets the oldest keys beyond its bound."""
    limiter = LoginLimiter(max_failures=1, window_s=60, max_keys=100)
    for i in range(1000):
        limiter.failed([f"user:{i}"], NOW)
    assert len(limiter._failures) == 100
    assert limiter.retry_after(["user:999"], NOW) > 0
    assert limiter.retry_after(["user:0"], NOW) == 0


def test_a_commune_manager_manages_only_viewers_within_its_communes() -> None:
    """A manager may manage a viewer of its communes, never a manager, a wider account or
    a viewer of another commune; a viewer manages nobody; the admin manages everyone."""
    manager = Account("m", "", Role.COMMUNE_MANAGER, frozenset({ROCAMADOUR, CAHORS}))
    viewer = Account("v", "", Role.COMMUNE_VIEWER, frozenset({ROCAMADOUR}))
    wide = Account("w", "", Role.COMMUNE_VIEWER, frozenset({ROCAMADOUR, FIGEAC}))
    other = Account("o", "", Role.COMMUNE_VIEWER, frozenset({FIGEAC}))
    peer = Account("p", "", Role.COMMUNE_MANAGER, frozenset({ROCAMADOUR}))
    admin = Account("a", "", Role.ADMIN)
    assert manager.manages_commune and not viewer.manages_commune
    assert manager.may_manage(viewer)
    assert not any(manager.may_manage(x) for x in (wide, other, peer, admin))
    assert not viewer.may_manage(viewer)
    assert all(admin.may_manage(x) for x in (manager, viewer, wide, peer))
