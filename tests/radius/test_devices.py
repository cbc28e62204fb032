"""Territorial continuity store: keyed hashes only, the period, the texts in force."""

from __future__ import annotations

import sqlalchemy as sa

from controller.config import PortalSettings
from controller.storage import Database
from controller.storage.schema import portal_legal_texts, radius_known_devices
from radius._devices import (
    BUILTIN_SCOPE,
    DEFAULT_SCOPE,
    KnownDevice,
    KnownDevices,
    Terms,
    continuity_on,
    holds,
)

NOW = 1_800_000_000.0
MAC = "02:00:00:00:00:aa"


def test_holds() -> None:
    """Continuity holds only for a known, unexpired device that accepted these texts."""
    terms = Terms("*", "2026-12-01")
    ok = KnownDevice(terms, NOW - 10, NOW + 10)
    assert holds(ok, terms, NOW)
    assert not holds(None, terms, NOW)
    assert not holds(ok, Terms("*", "2027-01-01"), NOW)
    assert not holds(ok, Terms("46201", "2026-12-01"), NOW)
    assert not holds(KnownDevice(terms, NOW - 10, NOW), terms, NOW)
    assert not holds(KnownDevice(None, None, NOW + 10), terms, NOW)


def test_continuity_on_per_commune() -> None:
    """On when continuity_hours > 0, unless the commune turned it off."""
    off_here = {"46042": {"continuity": False}, "46201": {"continuity": True}}
    portal = PortalSettings.model_validate({"continuity_hours": 24, "communes": off_here})
    assert continuity_on(portal, "46201") and continuity_on(portal, "46102")
    assert not continuity_on(portal, "46042")
    none = PortalSettings.model_validate({"continuity_hours": 0, "communes": off_here})
    assert not continuity_on(none, "46201")


async def _publish(db: Database, insee: str, version: str, at: float) -> None:
    async with db.begin() as conn:
        await conn.execute(
            portal_legal_texts.insert().values(
                insee=insee, version=version, published_at=at, content="{}"
            )
        )


async def test_terms_in_force(db: Database) -> None:
    """A commune's own texts first, then the default's, then the built-in summary."""
    devices = KnownDevices(db, "k" * 32, "2026-11-01")
    assert await devices.terms_in_force("46201") == Terms(BUILTIN_SCOPE, "2026-11-01")
    await _publish(db, DEFAULT_SCOPE, "d1", NOW)
    assert await devices.terms_in_force("46201") == Terms(DEFAULT_SCOPE, "d1")
    await _publish(db, "46201", "c1", NOW + 1)
    await _publish(db, DEFAULT_SCOPE, "d2", NOW + 2)
    assert await devices.terms_in_force("46201") == Terms("46201", "c1")
    assert await devices.terms_in_force("46042") == Terms(DEFAULT_SCOPE, "d2")


async def test_remember_find_returning_forget_prune(db: Database) -> None:
    """A remembered device is recognised in every commune with the same texts, for the
    period only; the table holds a keyed hash, never the MAC; another key, another hash."""
    devices = KnownDevices(db, "k" * 32, "2026-11-01")
    terms = await devices.terms_in_force("46201")
    await devices.remember(MAC.upper(), terms, now=NOW, hours=24)
    found = await devices.find(MAC)
    assert found == KnownDevice(terms, NOW, NOW + 86400)
    assert await devices.returning(MAC, "46201", NOW + 3600)
    assert await devices.returning(MAC, "46042", NOW + 3600)  # same built-in texts
    assert not await devices.returning(MAC, "46201", NOW + 86400)
    assert not await devices.returning("02:00:00:00:00:bb", "46201", NOW)
    # A commune publishes its own texts: ask again there, not elsewhere.
    await _publish(db, "46042", "c1", NOW + 10)
    assert not await devices.returning(MAC, "46042", NOW + 3600)
    assert await devices.returning(MAC, "46201", NOW + 3600)
    async with db.connect() as conn:
        rows = (await conn.execute(sa.select(radius_known_devices))).all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0]).lower()
    assert MAC not in stored and MAC.replace(":", "") not in stored
    assert rows[0].mac_hash == devices.device_hash(MAC)
    assert KnownDevices(db, "other-key" * 4, "x").device_hash(MAC) != rows[0].mac_hash
    # Accepting again moves the period; remembering with 0 hours does nothing.
    await devices.remember(MAC, terms, now=NOW + 7200, hours=24)
    assert (await devices.find(MAC)) == KnownDevice(terms, NOW + 7200, NOW + 7200 + 86400)
    await devices.remember("02:00:00:00:00:cc", terms, now=NOW, hours=0)
    assert await devices.find("02:00:00:00:00:cc") is None
    await devices.remember("02:00:00:00:00:dd", terms, now=NOW - 90000, hours=24)
    assert await devices.prune(NOW) == 1
    assert await devices.find("02:00:00:00:00:dd") is None
    assert await devices.forget(MAC) and not await devices.forget(MAC)
