"""Where the portal keeps the e-mail/SMS codes waiting to be typed.

``captive_portal._codes.CodeBook`` keeps them in the process: a portal without a
database, in tests. ``DatabaseCodes`` keeps them in the state database
(``portal_pending_codes``), so that a visitor's code still works after a controller
restart, and with several controllers behind one address: the challenge id, the code
and the device are stored as keyed hashes (HMAC-SHA256 under ``[portal] secret_key``;
without the key a stored 6-digit code cannot be tried offline); the address or number
stays until the code is used, wrongly typed too often, or expires (minutes), for the
login's identity record. What a typed code does is decided by
``captive_portal._codes.judge_code``, as for the memory store; here, a right code is used
exactly once (a conditional ``DELETE``) and wrong attempts are counted in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol, runtime_checkable

import sqlalchemy as sa

from captive_portal._codes import Challenge, Channel, judge_code
from controller.storage import Database
from controller.storage.schema import portal_pending_codes, portal_pending_extensions

__all__ = [
    "CodeKeeper",
    "DatabaseCodes",
    "ExtensionKeeper",
    "PendingCodes",
    "prune_pending",
]


class PendingCodes(Protocol):
    """Codes sent and not yet used (see ``captive_portal._codes.CodeBook``)."""

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
        ...

    async def peek(self, challenge_id: str) -> Challenge | None:
        """The challenge, without using it (None if unknown)."""
        ...

    async def check(
        self, challenge_id: str, code: str, device: str, now: float
    ) -> Challenge | None:
        """The challenge if ``code`` is right for it on ``device`` (used up), else None
        (a wrong code uses an attempt)."""
        ...

    async def sweep(self, now: float) -> int:
        """Forget expired challenges; return how many."""
        ...


@runtime_checkable
class CodeKeeper(Protocol):
    """A portal backend that keeps the pending codes itself (the controller's)."""

    pending_codes: PendingCodes


@runtime_checkable
class ExtensionKeeper(Protocol):
    """A portal backend that keeps session extensions waiting for their device in a
    store of its own (the controller's database): after a restart, the portal asks it."""

    async def extension_waiting(self, ap_id: str, client_mac: str) -> bool:
        """Whether an extension of ``client_mac`` at ``ap_id`` waits for the device."""
        ...


class DatabaseCodes:
    """Pending codes in the state database (see the module's docstring)."""

    def __init__(self, db: Database, key: str) -> None:
        self.db = db
        self._key = key.encode()

    def _hash(self, *parts: str) -> str:
        return hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def _id(self, challenge_id: str) -> str:
        return self._hash("challenge", challenge_id)

    def device_hash(self, mac: str) -> str:
        """The keyed hash a challenge's device is stored as."""
        return self._hash("device", mac.lower())

    def _code(self, challenge_id: str, code: str) -> str:
        return self._hash("code", challenge_id, code)

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
        challenge_id = secrets.token_urlsafe(18)
        async with self.db.begin() as conn:
            await conn.execute(
                portal_pending_codes.insert().values(
                    id_hash=self._id(challenge_id),
                    channel=channel,
                    identity=identity,
                    device_hash=self.device_hash(device),
                    code_hash=self._code(challenge_id, code),
                    expires_at=now + ttl_s,
                    attempts_left=attempts,
                )
            )
        return challenge_id

    async def peek(self, challenge_id: str) -> Challenge | None:
        if not challenge_id:
            return None
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(portal_pending_codes).where(
                        portal_pending_codes.c.id_hash == self._id(challenge_id)
                    )
                )
            ).first()
        return None if row is None else _challenge(row)

    async def check(
        self, challenge_id: str, code: str, device: str, now: float
    ) -> Challenge | None:
        if not challenge_id:
            return None
        key = portal_pending_codes.c.id_hash == self._id(challenge_id)
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(portal_pending_codes).where(key))).first()
            if row is None:
                return None
            challenge = _challenge(row)
            verdict = judge_code(
                challenge,
                code,
                self.device_hash(device),
                now,
                hash_code=lambda digits: bytes.fromhex(self._code(challenge_id, digits)),
            )
            if verdict == "wrong":
                await conn.execute(
                    portal_pending_codes.update()
                    .where(key)
                    .values(attempts_left=portal_pending_codes.c.attempts_left - 1)
                )
                # Wrong codes typed at the same time may together use the last attempt.
                await conn.execute(
                    portal_pending_codes.delete().where(
                        key, portal_pending_codes.c.attempts_left <= 0
                    )
                )
                return None
            # Used or forgotten; a right code exactly once, even for two requests at the
            # same time.
            used = await conn.execute(portal_pending_codes.delete().where(key))
        return challenge if verdict == "right" and used.rowcount == 1 else None

    async def sweep(self, now: float) -> int:
        async with self.db.begin() as conn:
            result = await conn.execute(
                portal_pending_codes.delete().where(portal_pending_codes.c.expires_at <= now)
            )
        return int(result.rowcount or 0)


async def prune_pending(db: Database, now: float) -> int:
    """Delete the codes and the session extensions whose time is over (the controller's
    sweep); return how many."""
    async with db.begin() as conn:
        codes = await conn.execute(
            portal_pending_codes.delete().where(portal_pending_codes.c.expires_at <= now)
        )
        extensions = await conn.execute(
            portal_pending_extensions.delete().where(portal_pending_extensions.c.deadline <= now)
        )
    return int(codes.rowcount or 0) + int(extensions.rowcount or 0)


def _challenge(row: sa.Row[object]) -> Challenge:
    channel: Channel = "sms" if row.channel == "sms" else "email"
    return Challenge(
        channel=channel,
        identity=str(row.identity),
        device=str(row.device_hash),
        expires_at=float(row.expires_at),
        attempts_left=int(row.attempts_left),
        code_hash=bytes.fromhex(str(row.code_hash)),
    )
