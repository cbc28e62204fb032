"""The portal's state in the controller's database: vouchers, legal texts, proofs of
acceptance.

Used by the controller's portal backend and by ``borne voucher ...``; the portal's HTTP
app never touches the database itself. Codes and devices are stored only as keyed hashes
(``captive_portal._vouchers``). Redeeming a voucher is one transaction whose device count
only moves with a conditional ``UPDATE``, so two devices racing for the last place of a
voucher cannot both get it, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

import sqlalchemy as sa

from captive_portal._vouchers import (
    Redemption,
    VoucherPolicy,
    VoucherState,
    decide,
    device_hash,
    keyed_hash,
    new_code,
    normalize_code,
)
from controller.storage import Database
from controller.storage.schema import (
    portal_consents,
    portal_legal_texts,
    voucher_batches,
    voucher_uses,
    vouchers,
)

__all__ = ["DEFAULT_INSEE", "Batch", "Consent", "LegalText", "PortalStore", "VoucherGrant"]

# The legal texts of communes without their own.
DEFAULT_INSEE = "*"
MAX_BATCH = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """A batch of vouchers as issued (the codes are shown once, at issue)."""

    id: str
    policy: VoucherPolicy
    count: int
    created_at: float
    note: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class VoucherGrant:
    """What a redeemed voucher gives the device now."""

    batch_id: str
    minutes: int
    quota_mb: int
    up_kbps: int
    down_kbps: int


@dataclasses.dataclass(frozen=True, slots=True)
class LegalText:
    """A commune's published legal texts (terms and GDPR art. 13 notice), one version."""

    insee: str
    version: str
    published_at: float
    content: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Consent:
    """A proof of acceptance."""

    version: str
    accepted_at: float
    method: str


def _policy(row: Any) -> VoucherPolicy:
    return VoucherPolicy(
        minutes=row.minutes,
        quota_mb=row.quota_mb,
        up_kbps=row.up_kbps,
        down_kbps=row.down_kbps,
        expires_at=row.expires_at,
        max_devices=row.max_devices,
        insee=row.insee,
    )


class PortalStore:
    """Vouchers, legal texts and consents in the state database."""

    def __init__(self, db: Database, secret: str) -> None:
        self.db = db
        self.secret = secret

    # -- vouchers ---------------------------------------------------------------------

    async def issue_batch(
        self, policy: VoucherPolicy, count: int, *, now: float, note: str | None = None
    ) -> tuple[Batch, list[str]]:
        """Create ``count`` vouchers; return the batch and the codes (never stored).

        Raises:
            ValueError: the count or the policy is out of range.
        """
        if not 1 <= count <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} vouchers")
        if policy.minutes <= 0 or policy.max_devices <= 0 or policy.expires_at <= now:
            raise ValueError("minutes and devices must be positive, the expiry in the future")
        codes: set[str] = set()
        while len(codes) < count:
            codes.add(new_code())
        batch = Batch(secrets.token_hex(4), policy, count, now, note)
        async with self.db.begin() as conn:
            await conn.execute(
                voucher_batches.insert().values(
                    id=batch.id,
                    created_at=now,
                    insee=policy.insee,
                    note=note,
                    count=count,
                    minutes=policy.minutes,
                    quota_mb=policy.quota_mb,
                    up_kbps=policy.up_kbps,
                    down_kbps=policy.down_kbps,
                    expires_at=policy.expires_at,
                    max_devices=policy.max_devices,
                )
            )
            await conn.execute(
                vouchers.insert(),
                [{"code_hash": keyed_hash(self.secret, c), "batch_id": batch.id} for c in codes],
            )
        return batch, sorted(codes)

    async def batches(self) -> list[tuple[Batch, int, int]]:
        """Every batch with how many of its vouchers were used and revoked."""
        used = sa.func.sum(sa.case((vouchers.c.first_used_at.is_not(None), 1), else_=0))
        revoked = sa.func.sum(sa.case((vouchers.c.revoked_at.is_not(None), 1), else_=0))
        q = (
            sa.select(voucher_batches, used.label("used"), revoked.label("revoked"))
            .select_from(
                voucher_batches.join(vouchers, vouchers.c.batch_id == voucher_batches.c.id)
            )
            .group_by(*voucher_batches.c)
            .order_by(voucher_batches.c.created_at)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [
            (
                Batch(r.id, _policy(r), int(r._mapping["count"]), r.created_at, r.note),
                int(r.used),
                int(r.revoked),
            )
            for r in rows
        ]

    async def revoke_batch(self, batch_id: str, *, now: float) -> int:
        """Withdraw every voucher of a batch; return how many."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                vouchers.update()
                .where(vouchers.c.batch_id == batch_id, vouchers.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return int(result.rowcount)

    async def redeem(
        self, typed: str, *, ap_id: str, insee: str, mac: str, now: float
    ) -> VoucherGrant | None:
        """Use a voucher for a device; None when the code cannot be used (for any reason)."""
        code = normalize_code(typed)
        if code is None:
            return None
        code_hash = keyed_hash(self.secret, code)
        device = device_hash(self.secret, mac)
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(vouchers, voucher_batches)
                    .join(voucher_batches, voucher_batches.c.id == vouchers.c.batch_id)
                    .where(vouchers.c.code_hash == code_hash)
                )
            ).first()
            if row is None:
                return None
            used = (
                await conn.execute(
                    sa.select(voucher_uses.c.used_at).where(
                        voucher_uses.c.code_hash == code_hash,
                        voucher_uses.c.device_hash == device,
                    )
                )
            ).first()
            state = VoucherState(
                first_used_at=row.first_used_at,
                devices=row.devices,
                revoked=row.revoked_at is not None,
                used_by_this_device=used is not None,
            )
            policy = _policy(row)
            decision, minutes = decide(policy, state, insee=insee, now=now)
            if decision is Redemption.REFUSED:
                return None
            if decision is Redemption.NEW_DEVICE:
                taken = await conn.execute(
                    vouchers.update()
                    .where(
                        vouchers.c.code_hash == code_hash,
                        vouchers.c.devices < policy.max_devices,
                    )
                    .values(
                        devices=vouchers.c.devices + 1,
                        first_used_at=sa.func.coalesce(vouchers.c.first_used_at, now),
                    )
                )
                if taken.rowcount != 1:
                    return None  # another device took the last place meanwhile
                await conn.execute(
                    voucher_uses.insert().values(
                        code_hash=code_hash, device_hash=device, ap_id=ap_id, used_at=now
                    )
                )
        return VoucherGrant(
            row.batch_id, minutes, policy.quota_mb, policy.up_kbps, policy.down_kbps
        )

    # -- legal texts and consents -----------------------------------------------------

    async def publish_legal(
        self, insee: str, version: str, content: dict[str, Any], *, now: float
    ) -> None:
        """Publish a version of a commune's legal texts (``*``: the default).

        Raises:
            sqlalchemy.exc.IntegrityError: that version exists already (versions are
                never rewritten: a proof of acceptance names one).
        """
        async with self.db.begin() as conn:
            await conn.execute(
                portal_legal_texts.insert().values(
                    insee=insee,
                    version=version,
                    published_at=now,
                    content=json.dumps(content, ensure_ascii=False, sort_keys=True),
                )
            )

    async def current_legal(self, insee: str) -> LegalText | None:
        """The commune's latest published texts, else the default's, else None."""
        q = (
            sa.select(portal_legal_texts)
            .where(portal_legal_texts.c.insee.in_([insee, DEFAULT_INSEE]))
            .order_by(
                (portal_legal_texts.c.insee == DEFAULT_INSEE).asc(),
                portal_legal_texts.c.published_at.desc(),
            )
            .limit(1)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        return LegalText(row.insee, row.version, row.published_at, json.loads(row.content))

    async def record_consent(
        self,
        *,
        mac: str,
        insee: str,
        version: str,
        ap_id: str,
        method: str,
        language: str,
        now: float,
    ) -> None:
        """Store a proof of acceptance: version, time, keyed hash of the device."""
        async with self.db.begin() as conn:
            await conn.execute(
                portal_consents.insert().values(
                    device_hash=device_hash(self.secret, mac),
                    insee=insee,
                    version=version,
                    accepted_at=now,
                    ap_id=ap_id,
                    method=method,
                    language=language,
                )
            )

    async def last_consent(self, *, mac: str, insee: str) -> Consent | None:
        """The device's latest acceptance of the commune's texts, any version."""
        q = (
            sa.select(portal_consents)
            .where(
                portal_consents.c.device_hash == device_hash(self.secret, mac),
                portal_consents.c.insee == insee,
            )
            .order_by(portal_consents.c.accepted_at.desc())
            .limit(1)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else Consent(row.version, row.accepted_at, row.method)
