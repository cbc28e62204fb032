"""Vouchers: codes a commune hands out (tourist office, campsite, event), and the rules
of their use.

A code is 10 symbols of an alphabet without the look-alikes (no 0/O, 1/I/L), printed
``ABCDE-FGHJK``: about 49 bits, too many to guess behind the portal's limit on wrong
codes. Only a keyed hash of each code is stored, so a copy of the database does not
give usable codes. A voucher's time runs from its first use and is shared by the devices
it lets in (up to the batch's ``max_devices``); a device that used it can log in again
while time is left.

Pure: no IO, no clock, no randomness of its own (``secrets`` is passed in as ``choice``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Final

__all__ = [
    "ALPHABET",
    "CODE_LENGTH",
    "Redemption",
    "VoucherPolicy",
    "VoucherState",
    "decide",
    "device_hash",
    "format_code",
    "keyed_hash",
    "new_code",
    "normalize_code",
]

ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH: Final = 10
_CODE_LABEL: Final = b"borne/captive_portal/voucher/v1"
_DEVICE_LABEL: Final = b"borne/captive_portal/device/v1"


def new_code(choice: Callable[[str], str] = secrets.choice) -> str:
    """A new random code, unformatted (``ABCDEFGHJK``)."""
    return "".join(choice(ALPHABET) for _ in range(CODE_LENGTH))


def format_code(code: str) -> str:
    """``ABCDEFGHJK`` → ``ABCDE-FGHJK``, as printed."""
    half = CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_code(text: str) -> str | None:
    """The code a visitor typed, in canonical form, or None if it cannot be one.

    Case, spaces and dashes are ignored (people type what they read).
    """
    if len(text) > 4 * CODE_LENGTH:
        return None
    code = "".join(ch for ch in text.upper() if ch not in " -\t")
    if len(code) != CODE_LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    return code


def _subkey(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), label, hashlib.sha256).digest()


def keyed_hash(secret: str, code: str) -> str:
    """The stored form of a code: HMAC-SHA256 under a key derived from ``secret``."""
    return hmac.new(_subkey(secret, _CODE_LABEL), code.encode(), hashlib.sha256).hexdigest()


def device_hash(secret: str, mac: str) -> str:
    """A device's stored identity (voucher uses, proofs of acceptance): a keyed hash of
    its MAC, which cannot be reversed without the key (a plain hash could: the MAC
    space is small)."""
    digest = hmac.new(_subkey(secret, _DEVICE_LABEL), mac.lower().encode(), hashlib.sha256)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class VoucherPolicy:
    """What a batch's vouchers grant.

    Attributes:
        minutes: the time a voucher gives, from its first use.
        quota_mb: data per device session (MB, 10^6 bytes; 0: unlimited).
        up_kbps: upload rate limit (0: none).
        down_kbps: download rate limit (0: none).
        expires_at: after this Unix time the voucher is refused, used or not.
        max_devices: how many devices one voucher can let in.
        insee: the commune where it is valid (None: the whole territory).
    """

    minutes: int
    quota_mb: int
    up_kbps: int
    down_kbps: int
    expires_at: float
    max_devices: int
    insee: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class VoucherState:
    """A voucher's use so far.

    Attributes:
        first_used_at: when it was first used, None if never.
        devices: how many devices it let in.
        revoked: an administrator withdrew it.
        used_by_this_device: the device asking now is one of those.
    """

    first_used_at: float | None
    devices: int
    revoked: bool
    used_by_this_device: bool


class Redemption(enum.Enum):
    """The decision on a voucher."""

    NEW_DEVICE = "new-device"
    SAME_DEVICE = "same-device"
    REFUSED = "refused"


def decide(
    policy: VoucherPolicy, state: VoucherState, *, insee: str, now: float
) -> tuple[Redemption, int]:
    """Whether a device may log in with a voucher, and for how many minutes.

    Args:
        policy: the voucher's batch.
        state: the voucher's use so far.
        insee: the commune of the access point asked.
        now: the current Unix time.

    Returns:
        ``(decision, minutes)``; minutes is 0 when refused. The reason of a refusal is
        not returned on purpose: the visitor is told only that the code cannot be used.
    """
    refused = (Redemption.REFUSED, 0)
    if state.revoked or now > policy.expires_at:
        return refused
    if policy.insee is not None and policy.insee != insee:
        return refused
    start = state.first_used_at if state.first_used_at is not None else now
    minutes = int((start + policy.minutes * 60 - now) // 60)
    if minutes <= 0:
        return refused
    if state.used_by_this_device:
        return Redemption.SAME_DEVICE, minutes
    if state.devices >= policy.max_devices:
        return refused
    return Redemption.NEW_DEVICE, minutes
