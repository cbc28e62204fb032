"""Identity data given at login (e-mail address, phone number), kept for the law only.

A commune that turns on e-mail or SMS codes collects identity data, which French law
then asks to keep 5 years (CPCE L34-1 II bis 1°, R10-13 I). This store keeps, for each
such login, the method, a keyed hash (HMAC-SHA256 under ``[portal] secret_key``) of the
address or number, the same keyed hash of the device as the proof of acceptance, the
commune, the access point and the time; and the date after which it is deleted
(``purge_expired``, run by the controller's sweep every hour, logins or not). Nothing
else reads it: no statistics, no marketing.

An address or number named in a requisition can be checked (``logins_of``); the clear
value is never stored.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from captive_portal._codes import Channel, identity_hash
from captive_portal._vouchers import device_hash
from controller.storage import Database
from controller.storage.schema import portal_identities

__all__ = ["IdentityLogin", "IdentityStore", "purge_expired"]

DAY_S = 86_400.0


@dataclasses.dataclass(frozen=True, slots=True)
class IdentityLogin:
    """One login by an identity (what a requisition gets back)."""

    method: str
    device_hash: str
    insee: str
    ap_id: str
    logged_in_at: float


class IdentityStore:
    """The identity records in the state database."""

    def __init__(self, db: Database, secret: str, retention_days: int) -> None:
        self.db = db
        self.secret = secret
        self.retention_s = retention_days * DAY_S

    async def record(
        self, *, method: Channel, identity: str, mac: str, insee: str, ap_id: str, now: float
    ) -> None:
        """Store one login by ``identity`` (normalised address or number)."""
        async with self.db.begin() as conn:
            await conn.execute(
                portal_identities.insert().values(
                    method=method,
                    identity_hash=identity_hash(self.secret, method, identity),
                    device_hash=device_hash(self.secret, mac),
                    insee=insee,
                    ap_id=ap_id,
                    logged_in_at=now,
                    keep_until=now + self.retention_s,
                )
            )

    async def logins_of(self, method: Channel, identity: str) -> list[IdentityLogin]:
        """Every stored login of ``identity`` (for a requisition), oldest first."""
        query = (
            sa.select(portal_identities)
            .where(
                portal_identities.c.identity_hash == identity_hash(self.secret, method, identity)
            )
            .order_by(portal_identities.c.logged_in_at)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            IdentityLogin(
                method=r.method,
                device_hash=r.device_hash,
                insee=r.insee,
                ap_id=r.ap_id,
                logged_in_at=r.logged_in_at,
            )
            for r in rows
        ]

    async def purge(self, now: float) -> int:
        """Delete the records past their retention; return how many."""
        return await purge_expired(self.db, now)


async def purge_expired(db: Database, now: float) -> int:
    """Delete the identity records past their retention; return how many (the
    controller's sweep runs it, logins or not)."""
    async with db.begin() as conn:
        result = await conn.execute(
            portal_identities.delete().where(portal_identities.c.keep_until <= now)
        )
    return int(result.rowcount or 0)
