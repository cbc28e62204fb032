"""The purge destroys keys on time and proves it; holds keep the named records."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.config import LegalSettings
from controller.legal.errors import KeyError_, LegalError
from controller.legal.retention import due, list_holds, place_hold, purge, read_hold, release_hold
from controller.legal.store import LegalStore, day_of, verify_json
from tests.controller.legal.conftest import T0, record

DAY_S = 86400.0


def test_due_follows_the_law_and_the_decree_setting() -> None:
    """Nothing before 365 full days; everything after; traffic alone after 92 days without
    the national-security decree."""
    on = LegalSettings()
    off = LegalSettings(national_security_decree=False)
    day = day_of(T0)
    assert due(day, T0 + 365 * DAY_S, on) == []
    assert due(day, T0 + 366 * DAY_S, on) == ["identity", "traffic", "index"]
    assert due(day, T0 + 93 * DAY_S, on) == []
    assert due(day, T0 + 93 * DAY_S, off) == ["traffic"]
    assert due(day, T0 + 92 * DAY_S, off) == []


def test_purge_shreds_old_days_and_the_young_ones_still_verify(
    store: LegalStore, signing: Ed25519PrivateKey
) -> None:
    """After the purge the day past retention cannot be decrypted by anyone, a signed
    statement proves it, and the days inside retention still verify and decrypt."""
    old, young = T0, T0 + 300 * DAY_S
    store.append([(1, record(1))], old)
    store.append([(2, record(2))], young)
    now = T0 + 370 * DAY_S
    statements = purge(store, LegalSettings(), now)
    assert [s["day"] for s in statements] == [day_of(old)]
    assert verify_json(signing.public_key(), statements[0], "shredding")
    with pytest.raises(KeyError_):
        store.read(day_of(old), [0])
    fresh = LegalStore(store.directory, store.provider)  # anyone, with the master key
    with pytest.raises(KeyError_):
        fresh.read(day_of(old), [0])
    assert [f.record for f in fresh.read(day_of(young), [0])] == [record(2)]
    assert store.verify(signing.public_key()) == []
    assert purge(store, LegalSettings(), now) == []  # idempotent


def test_a_hold_keeps_named_records_past_the_purge(store: LegalStore) -> None:
    """Held records survive their day's shredding until the hold is released."""
    store.append([(i, record(i)) for i in range(4)], T0)
    assert place_hold(store, "PV-2026-0042", day_of(T0), [1, 3]) == 2
    purge(store, LegalSettings(), T0 + 400 * DAY_S)
    held = read_hold(store, "PV-2026-0042")
    assert [(f.seq, f.record) for f in held.records] == [(1, record(1)), (3, record(3))]
    assert list_holds(store) == ["PV-2026-0042"]
    release_hold(store, "PV-2026-0042")
    with pytest.raises(LegalError):
        read_hold(store, "PV-2026-0042")
    with pytest.raises(LegalError):
        place_hold(store, "../etc", day_of(T0), [0])
