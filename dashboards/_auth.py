"""Who may see what on the dashboards: roles, scopes, passwords, TOTP, login limits, CSRF.

Pure and synchronous: no IO, no clock (callers pass ``now``), no aiohttp. Password
hashing is CPU- and memory-heavy on purpose (argon2id): callers run :func:`hash_password`
and :func:`verify_password` in a worker thread, never in the event loop.

What must not happen here: a password or a TOTP secret logged or returned, a commune
account given a commune outside its scope, a role given a right it does not list.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Final

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "ROLE_LABELS",
    "SECOND_FACTOR_ROLES",
    "Account",
    "LoginLimiter",
    "Role",
    "csrf_token",
    "csrf_valid",
    "dummy_verify",
    "hash_password",
    "new_login_token",
    "new_totp_secret",
    "password_problem",
    "token_hash",
    "totp_uri",
    "totp_valid",
    "verify_password",
]


class Role(enum.StrEnum):
    """The five kinds of dashboard account."""

    COMMUNE_VIEWER = "commune_viewer"
    COMMUNE_MANAGER = "commune_manager"
    ADMIN = "admin"
    TECHNICIAN = "technician"
    LEGAL_OFFICER = "legal_officer"


ROLE_LABELS: Final = {
    Role.COMMUNE_VIEWER: "Commune (consultation)",
    Role.COMMUNE_MANAGER: "Commune (gestion)",
    Role.ADMIN: "Syndicat (administration)",
    Role.TECHNICIAN: "Technicien",
    Role.LEGAL_OFFICER: "Officier des réquisitions",
}
# Accounts that can manage others or reach legal data need something more than a password.
SECOND_FACTOR_ROLES: Final = frozenset({Role.ADMIN, Role.LEGAL_OFFICER})
# Roles limited to the communes listed for them (a commune, or the members of an EPCI).
_SCOPED: Final = frozenset({Role.COMMUNE_VIEWER, Role.COMMUNE_MANAGER})
# The legal officer answers requisitions (controller.legal, its own CLI); the dashboards
# show it no fleet nor statistics: it sees its account page only.
_NO_TERRITORY: Final = frozenset({Role.LEGAL_OFFICER})


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """A dashboard account as the app sees it (never its password hash or TOTP secret).

    Attributes:
        username: the login name.
        display_name: the name shown on pages.
        role: what the account is.
        communes: the INSEE codes it may see (commune and EPCI accounts only).
    """

    username: str
    display_name: str
    role: Role
    communes: frozenset[str] = frozenset()

    @property
    def sees_territory(self) -> bool:
        """True when the account sees every commune (syndicate admin, technician)."""
        return self.role in (Role.ADMIN, Role.TECHNICIAN)

    @property
    def sees_fleet(self) -> bool:
        """True when the account sees hotspots at all."""
        return self.role not in _NO_TERRITORY

    @property
    def manages_accounts(self) -> bool:
        """True for the syndicate admin only."""
        return self.role is Role.ADMIN

    @property
    def manages_commune(self) -> bool:
        """True for a commune manager: its communes' viewer accounts and contact details."""
        return self.role is Role.COMMUNE_MANAGER

    def may_manage(self, other: Account) -> bool:
        """Whether this account may create, disable or enable ``other``.

        The syndicate admin manages every account; a commune manager only the viewer
        accounts limited to its own communes (never a manager, nor an account that also
        sees a commune outside its scope).
        """
        if self.manages_accounts:
            return True
        return (
            self.manages_commune
            and other.role is Role.COMMUNE_VIEWER
            and bool(other.communes)
            and other.communes <= self.communes
        )

    @property
    def needs_second_factor(self) -> bool:
        """True when a TOTP code is asked after the password."""
        return self.role in SECOND_FACTOR_ROLES

    def may_see_commune(self, insee: str) -> bool:
        """Whether this account may see the hotspots and statistics of commune ``insee``."""
        if self.sees_territory:
            return True
        return self.role in _SCOPED and insee in self.communes

    def visible(self, insees: Iterable[str]) -> set[str]:
        """The subset of ``insees`` this account may see."""
        return {i for i in insees if self.may_see_commune(i)}


# -- passwords ------------------------------------------------------------------------------

# argon2id with argon2-cffi's defaults (RFC 9106's second recommended option: 64 MiB,
# 3 passes, 4 lanes): about 50 ms here, which bounds online guessing without making
# a login feel slow.
_HASHER: Final = PasswordHasher()
# Hashed once at import: a login for an unknown name verifies against it, so that the
# answer takes as long as for a known name and does not reveal which names exist.
_DUMMY_HASH: Final = _HASHER.hash(secrets.token_urlsafe(16))
# ANSSI's guide on passwords asks for at least 12 characters without composition rules
# when the number of attempts is limited (it is, by LoginLimiter).
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 256


def password_problem(password: str) -> str | None:
    """Why ``password`` is refused (French / English), or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"au moins {MIN_PASSWORD_LENGTH} caractères / at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"au plus {MAX_PASSWORD_LENGTH} caractères / at most {MAX_PASSWORD_LENGTH}"
    return None


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (slow on purpose: call it in a thread)."""
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored hash (slow: call it in a thread)."""
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_verify(password: str) -> bool:
    """Spend the time of a real verification, for unknown user names. Always False."""
    verify_password(_DUMMY_HASH, password)
    return False


# -- TOTP (RFC 6238) -------------------------------------------------------------------------


def new_totp_secret() -> str:
    """A fresh random TOTP secret (base32, 160 bits as RFC 4226 §4 recommends)."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, username: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (as a QR code or typed)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def totp_valid(secret: str, code: str, now: float) -> bool:
    """Whether ``code`` is the TOTP of ``secret`` at ``now``, one 30 s step either side.

    The window of ±1 step is RFC 6238 §5.2's allowance for clock drift and typing time.
    """
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return False
    return bool(pyotp.TOTP(secret).verify(code, for_time=int(now), valid_window=1))


# -- login tokens and CSRF -----------------------------------------------------------------


def new_login_token() -> str:
    """A fresh random login token (256 bits) for the session cookie."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token: its SHA-256, so a stolen table opens nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(key: bytes, login_token: str) -> str:
    """The CSRF token of one login session (synchroniser token, bound to the session)."""
    return hmac.new(key, b"csrf\x00" + login_token.encode(), hashlib.sha256).hexdigest()


def csrf_valid(key: bytes, login_token: str, given: str) -> bool:
    """Whether ``given`` is this login session's CSRF token (constant-time compare)."""
    return hmac.compare_digest(csrf_token(key, login_token), given)


# -- login rate limits ---------------------------------------------------------------------


class LoginLimiter:
    """Counts failed logins per user name and per client address in a sliding window.

    A name or an address with ``max_failures`` failures in the last ``window_s`` seconds
    is refused until the oldest of them leaves the window, whatever the password: that
    bounds online guessing of one account (per name) and spraying many (per address).
    The tables are bounded: the oldest keys are forgotten first.

    Args:
        max_failures: failures allowed in the window.
        window_s: the window's length in seconds.
        max_keys: at most this many names and addresses are remembered.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 900.0, max_keys: int = 10_000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, keys: Iterable[str], now: float) -> float:
        """Seconds until a login for these keys is tried again; 0 when it may be now."""
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                wait = max(wait, times[-self.max_failures] + self.window_s - now)
        return wait

    def failed(self, keys: Iterable[str], now: float) -> None:
        """Record one failed login for each key."""
        for key in keys:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, username_key: str) -> None:
        """Forget the failures of a name after a successful login (not of the address)."""
        self._failures.pop(username_key, None)
