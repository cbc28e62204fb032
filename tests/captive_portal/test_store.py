"""The portal's store on a real database (SQLite, and PostgreSQL when available)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from captive_portal._vouchers import VoucherPolicy, format_code
from captive_portal.store import DEFAULT_INSEE, PortalStore
from controller.storage import Database
from controller.storage.schema import portal_consents, voucher_uses, vouchers

NOW = 1_800_000_000.0
SECRET = "portal-store-test-secret"
MAC1, MAC2, MAC3 = "aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:03"


def policy(**changes: object) -> VoucherPolicy:
    values: dict[str, object] = {
        "minutes": 60,
        "quota_mb": 500,
        "up_kbps": 1000,
        "down_kbps": 5000,
        "expires_at": NOW + 86400,
        "max_devices": 1,
        "insee": None,
    }
    values.update(changes)
    return VoucherPolicy(**values)  # type: ignore[arg-type]


async def test_issue_stores_hashes_only_and_codes_redeem_once(db: Database) -> None:
    """Codes are shown once and stored only hashed; a single-use voucher lets in one device."""
    store = PortalStore(db, SECRET)
    batch, codes = await store.issue_batch(policy(), 3, now=NOW, note="office de tourisme")
    assert len(set(codes)) == 3
    async with db.connect() as conn:
        stored = {r.code_hash for r in (await conn.execute(sa.select(vouchers))).all()}
    assert len(stored) == 3 and not stored & set(codes)
    grant = await store.redeem(
        format_code(codes[0]).lower(), ap_id="ap-1", insee="46201", mac=MAC1, now=NOW
    )
    assert grant is not None
    assert (grant.batch_id, grant.minutes, grant.quota_mb, grant.up_kbps, grant.down_kbps) == (
        batch.id,
        60,
        500,
        1000,
        5000,
    )
    assert await store.redeem(codes[0], ap_id="ap-1", insee="46201", mac=MAC2, now=NOW) is None
    again = await store.redeem(codes[0], ap_id="ap-2", insee="46042", mac=MAC1, now=NOW + 600)
    assert again is not None and again.minutes == 50
    assert await store.redeem("ABCDE-FGHJK", ap_id="ap-1", insee="46201", mac=MAC2, now=NOW) is None
    ((b, used, revoked),) = await store.batches()
    assert (b.id, b.count, b.note, used, revoked) == (batch.id, 3, "office de tourisme", 1, 0)


async def test_a_multi_device_voucher_never_lets_in_more_devices_than_allowed(db: Database) -> None:
    """Concurrent redemptions by many devices of a 2-device voucher: exactly 2 get in."""
    store = PortalStore(db, SECRET)
    _, (code,) = await store.issue_batch(policy(max_devices=2), 1, now=NOW)
    macs = [f"aa:bb:cc:dd:ee:{i:02x}" for i in range(8)]
    results = await asyncio.gather(
        *(store.redeem(code, ap_id="ap-1", insee="46201", mac=m, now=NOW) for m in macs),
        return_exceptions=True,
    )
    granted = [r for r in results if r is not None and not isinstance(r, BaseException)]
    assert len(granted) == 2, results
    async with db.connect() as conn:
        uses = (await conn.execute(sa.select(sa.func.count()).select_from(voucher_uses))).scalar()
        devices = (await conn.execute(sa.select(vouchers.c.devices))).scalar()
    assert (uses, devices) == (2, 2)


async def test_revoked_and_commune_bound_vouchers_are_refused(db: Database) -> None:
    """A revoked batch lets nobody in; a commune's voucher works only there."""
    store = PortalStore(db, SECRET)
    batch, (code,) = await store.issue_batch(policy(), 1, now=NOW)
    assert await store.revoke_batch(batch.id, now=NOW) == 1
    assert await store.redeem(code, ap_id="ap-1", insee="46201", mac=MAC1, now=NOW) is None
    _, (local,) = await store.issue_batch(policy(insee="46201"), 1, now=NOW)
    assert await store.redeem(local, ap_id="ap-9", insee="46042", mac=MAC1, now=NOW) is None
    assert await store.redeem(local, ap_id="ap-1", insee="46201", mac=MAC1, now=NOW) is not None


@pytest.mark.parametrize(
    "bad", [{"minutes": 0}, {"max_devices": 0}, {"expires_at": NOW - 1}], ids=str
)
async def test_a_batch_out_of_range_is_refused(db: Database, bad: dict[str, object]) -> None:
    """Zero minutes, zero devices or an expiry in the past: no batch is created."""
    store = PortalStore(db, SECRET)
    with pytest.raises(ValueError):
        await store.issue_batch(policy(**bad), 5, now=NOW)
    assert await store.batches() == []


async def test_legal_texts_are_versioned_per_commune_with_a_default(db: Database) -> None:
    """A commune's latest version wins, else the default's; a version is never rewritten."""
    store = PortalStore(db, SECRET)
    assert await store.current_legal("46201") is None
    await store.publish_legal(DEFAULT_INSEE, "2026-01", {"controller": "Syndicat"}, now=NOW)
    default = await store.current_legal("46201")
    assert default is not None and (default.insee, default.version) == (DEFAULT_INSEE, "2026-01")
    await store.publish_legal("46201", "r1", {"controller": "Mairie de Rocamadour"}, now=NOW + 1)
    await store.publish_legal("46201", "r2", {"controller": "Mairie de Rocamadour"}, now=NOW + 2)
    await store.publish_legal(DEFAULT_INSEE, "2026-02", {"controller": "Syndicat"}, now=NOW + 3)
    own = await store.current_legal("46201")
    assert own is not None and (own.version, own.content["controller"]) == (
        "r2",
        "Mairie de Rocamadour",
    )
    other = await store.current_legal("46042")
    assert other is not None and other.version == "2026-02"
    with pytest.raises(sa.exc.IntegrityError):
        await store.publish_legal("46201", "r2", {"controller": "changed"}, now=NOW + 4)


async def test_a_proof_of_acceptance_keeps_version_time_and_a_keyed_device_hash(
    db: Database,
) -> None:
    """The proof names the version and time; the device is only a keyed hash of its MAC."""
    store = PortalStore(db, SECRET)
    await store.record_consent(
        mac=MAC1, insee="46201", version="r1", ap_id="ap-1", method="click-through",
        language="de", now=NOW,
    )  # fmt: skip
    await store.record_consent(
        mac=MAC1, insee="46201", version="r2", ap_id="ap-1", method="voucher",
        language="de", now=NOW + 60,
    )  # fmt: skip
    last = await store.last_consent(mac=MAC1, insee="46201")
    assert last is not None and (last.version, last.accepted_at, last.method) == (
        "r2",
        NOW + 60,
        "voucher",
    )
    assert await store.last_consent(mac=MAC2, insee="46201") is None
    assert await store.last_consent(mac=MAC1, insee="46042") is None
    async with db.connect() as conn:
        rows = (await conn.execute(sa.select(portal_consents))).all()
    assert all(
        MAC1 not in str(tuple(r)) and MAC1.replace(":", "") not in str(tuple(r)) for r in rows
    )
    assert len({r.device_hash for r in rows}) == 1
