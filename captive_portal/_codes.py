"""One-time login codes sent by e-mail or SMS: addresses, codes, challenges, send limits.

A visitor gives an e-mail address or a mobile number; the portal sends a 6-digit code
and keeps a *challenge* (a random id in the next form) with a hash of the code, the
device it was sent for, an expiry and an attempt count. A wrong, expired or used code,
or a challenge of another device, all get the same answer. Sending is limited per
address or number (a cooldown and a daily cap) and per source address (a daily cap), so
that the portal cannot be used to flood someone's mailbox or phone, or to run up the
SMS bill.

What a typed code does to its challenge is decided here, once (``judge_code``), for the
two stores: ``CodeBook`` keeps challenges in memory (a portal without a database); the
controller keeps them in its database (``captive_portal._codestore``), so that a restart
loses no visitor's code.

Pure: ``now`` is passed in; randomness comes from ``secrets``. ``CodeBook``'s methods are
``async`` only to share the stores' interface (``captive_portal._codestore.PendingCodes``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Final, Literal

__all__ = [
    "CODE_DIGITS",
    "Challenge",
    "Channel",
    "CodeBook",
    "CodeVerdict",
    "SendLimiter",
    "SendVerdict",
    "identity_hash",
    "judge_code",
    "mask_email",
    "mask_phone",
    "new_code",
    "normalize_email",
    "normalize_phone",
    "phone_allowed",
]

Channel = Literal["email", "sms"]
SendVerdict = Literal["ok", "cooldown", "capped"]
# What a typed code does to its challenge (see judge_code).
CodeVerdict = Literal["right", "wrong", "forget"]

CODE_DIGITS: Final = 6
# Pending challenges and limiter keys kept at most (oldest dropped first).
MAX_ENTRIES: Final = 100_000
DAY_S: Final = 86_400.0
MAX_EMAIL_CHARS: Final = 254
# A practical address check (RFC 5321 lengths, one "@", a dotted domain); the real
# check is that the code arrives.
_EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
# What people type around the digits of a phone number.
_PHONE_NOISE = re.compile(r"[\s().\-/]")


def normalize_email(text: str) -> str | None:
    """The address in canonical form (trimmed, domain lower-cased), or None if invalid."""
    value = text.strip()
    if len(value) > MAX_EMAIL_CHARS or not _EMAIL.match(value):
        return None
    local, domain = value.rsplit("@", 1)
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return None
    labels = domain.split(".")
    if any(not label or label[0] == "-" or label[-1] == "-" for label in labels):
        return None
    return f"{local}@{domain.lower()}"


def normalize_phone(text: str, default_prefix: str = "+33") -> str | None:
    """The number in E.164 form (``+33612345678``), or None if it is not one.

    A national number starting with a single 0 (``06 12 34 56 78``) takes
    ``default_prefix``; ``00`` stands for ``+``.
    """
    value = _PHONE_NOISE.sub("", text.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    elif value.startswith("0") and len(value) == 10:
        value = default_prefix + value[1:]
    if value.startswith(default_prefix + "0"):
        # "+33 (0)6 12 34 56 78": the national trunk 0 is not dialled after the code.
        value = default_prefix + value[len(default_prefix) + 1 :]
    if not value.startswith("+") or not value[1:].isdigit():
        return None
    if not 8 <= len(value) - 1 <= 15 or value[1] == "0":
        return None
    return value


def phone_allowed(number: str, prefixes: tuple[str, ...]) -> bool:
    """True if the E.164 ``number`` starts with one of the allowed country codes."""
    return any(number.startswith(p) for p in prefixes)


def mask_email(address: str) -> str:
    """``j•••@example.org``: enough for the visitor to recognise it on screen."""
    local, domain = address.rsplit("@", 1)
    return f"{local[0]}•••@{domain}"


def mask_phone(number: str) -> str:
    """``+33 ••••••78``."""
    return f"{number[:3]} ••••••{number[-2:]}"


def identity_hash(key: str, channel: Channel, value: str) -> str:
    """Keyed hash (HMAC-SHA256) of a normalised address or number, for the legal store.

    With the key, an address or number named in a requisition can be checked; without
    it, the stored hashes say nothing.
    """
    message = f"{channel}:{value.lower()}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def new_code() -> str:
    """A uniformly random 6-digit code."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _code_hash(challenge_id: str, code: str) -> bytes:
    return hashlib.sha256(f"{challenge_id}:{code}".encode()).digest()


@dataclasses.dataclass(slots=True)
class Challenge:
    """A code sent and not yet used.

    Attributes:
        channel: ``email`` or ``sms``.
        identity: the normalised address or number.
        device: the MAC address of the device it was sent for.
        expires_at: when the code stops being accepted (Unix time).
        attempts_left: wrong codes still allowed.
        code_hash: SHA-256 of the challenge id and the code.
    """

    channel: Channel
    identity: str
    device: str
    expires_at: float
    attempts_left: int
    code_hash: bytes


def judge_code(
    challenge: Challenge,
    code: str,
    device: str,
    now: float,
    *,
    hash_code: Callable[[str], bytes],
) -> CodeVerdict:
    """What the ``code`` typed on ``device`` at ``now`` does to ``challenge``.

    ``right``: the code is right, for its device, in time: the store forgets the
    challenge and returns it (once only). ``wrong``: a wrong code or another device,
    attempts left: the store takes one attempt off. ``forget``: the code has expired, or
    the last attempt was wrong: the store forgets the challenge. Spaces in the code do
    not count.

    ``device`` and ``hash_code`` (from the code's digits) are in the form the store keeps
    ``challenge.device`` and ``challenge.code_hash`` in.
    """
    if now >= challenge.expires_at:
        return "forget"
    digits = code.strip().replace(" ", "")
    right = hmac.compare_digest(challenge.code_hash, hash_code(digits))
    if right and hmac.compare_digest(challenge.device, device):
        return "right"
    return "wrong" if challenge.attempts_left > 1 else "forget"


class CodeBook:
    """Pending challenges in memory, bounded; each is used at most once."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._pending: collections.OrderedDict[str, Challenge] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    async def issue(
        self,
        channel: Channel,
        identity: str,
        device: str,
        *,
        code: str,
        now: float,
        ttl_s: float,
        attempts: int,
    ) -> str:
        """Remember ``code`` for ``identity`` on ``device``; return the challenge id."""
        challenge_id = secrets.token_urlsafe(18)
        self._pending[challenge_id] = Challenge(
            channel=channel,
            identity=identity,
            device=device,
            expires_at=now + ttl_s,
            attempts_left=attempts,
            code_hash=_code_hash(challenge_id, code),
        )
        while len(self._pending) > self.max_entries:
            self._pending.popitem(last=False)
        return challenge_id

    async def peek(self, challenge_id: str) -> Challenge | None:
        """The challenge, without using it (None if unknown)."""
        return self._pending.get(challenge_id)

    async def check(
        self, challenge_id: str, code: str, device: str, now: float
    ) -> Challenge | None:
        """The challenge if ``code`` is right for it on ``device`` (used up), else None
        (see ``judge_code``)."""
        challenge = self._pending.get(challenge_id)
        if challenge is None:
            return None
        hash_code = functools.partial(_code_hash, challenge_id)
        verdict = judge_code(challenge, code, device, now, hash_code=hash_code)
        if verdict == "wrong":
            challenge.attempts_left -= 1
            return None
        del self._pending[challenge_id]
        return challenge if verdict == "right" else None

    async def sweep(self, now: float) -> int:
        """Forget expired challenges; return how many."""
        expired = [k for k, c in self._pending.items() if now >= c.expires_at]
        for key in expired:
            del self._pending[key]
        return len(expired)


class SendLimiter:
    """How often a code may be sent to one address (cooldown, daily cap) or from one
    source (daily cap): fixed 24-hour windows per key, bounded table."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        # key -> (window start, sends in the window, last send)
        self._sends: collections.OrderedDict[str, tuple[float, int, float]] = (
            collections.OrderedDict()
        )

    def verdict(self, key: str, now: float, *, cap: int, cooldown_s: float = 0.0) -> SendVerdict:
        """May one more code be sent for ``key``?"""
        entry = self._sends.get(key)
        if entry is None:
            return "ok"
        start, count, last = entry
        if now - start >= DAY_S:
            return "ok" if now - last >= cooldown_s else "cooldown"
        if count >= cap:
            return "capped"
        if now - last < cooldown_s:
            return "cooldown"
        return "ok"

    def sent(self, key: str, now: float) -> None:
        """Count one code sent for ``key``."""
        start, count, _ = self._sends.pop(key, (now, 0, now))
        if now - start >= DAY_S:
            start, count = now, 0
        self._sends[key] = (start, count + 1, now)
        while len(self._sends) > self.max_entries:
            self._sends.popitem(last=False)
