"""Tests of captive_portal.identities on real databases (SQLite, PostgreSQL; migrated)."""

from __future__ import annotations

import sqlalchemy as sa

from captive_portal.identities import DAY_S, IdentityStore
from controller.storage import Database
from controller.storage.schema import portal_identities


async def test_identity_logins_are_kept_as_keyed_hashes_and_purged_after_retention(
    db: Database,
) -> None:
    """A requisition naming an address finds its logins; nothing in the table holds the
    address or the MAC in clear; records go at the end of their retention."""
    store = IdentityStore(db, "secret", retention_days=1827)
    await store.record(
        method="email",
        identity="marie@example.org",
        mac="aa:bb:cc:dd:ee:01",
        insee="46042",
        ap_id="lot-cahors-01",
        now=1000.0,
    )
    await store.record(
        method="sms",
        identity="+33612345678",
        mac="aa:bb:cc:dd:ee:02",
        insee="46102",
        ap_id="lot-figeac-01",
        now=2000.0,
    )
    (found,) = await store.logins_of("email", "Marie@example.org")
    assert (found.insee, found.ap_id, found.logged_in_at) == ("46042", "lot-cahors-01", 1000.0)
    assert await store.logins_of("email", "other@example.org") == []
    assert await store.logins_of("sms", "marie@example.org") == []
    async with db.connect() as conn:
        rows = (await conn.execute(sa.select(portal_identities))).all()
    dump = repr([tuple(r) for r in rows])
    for clear in ("marie", "612345678", "aa:bb:cc", "AA:BB:CC"):
        assert clear not in dump
    assert {r.keep_until for r in rows} == {1000.0 + 1827 * DAY_S, 2000.0 + 1827 * DAY_S}
    assert await store.purge(1000.0 + 1827 * DAY_S - 1) == 0
    assert await store.purge(1000.0 + 1827 * DAY_S) == 1
    assert await store.logins_of("email", "marie@example.org") == []
    assert len(await store.logins_of("sms", "+33612345678")) == 1
