"""Pseudonymisation: daily random keys, destroyed; opt-out before hashing; random MACs."""

from __future__ import annotations

import logging

import pytest

from controller.stats._pseudo import DailyKeys, OptOut, is_randomised, normalise_mac

MAC = "3c:22:fb:12:34:56"


def test_same_day_same_pseudonym_other_day_unrelated() -> None:
    """Within a day a device keeps one pseudonym; the next day's has nothing in common."""
    keys = DailyKeys()
    a = keys.pseudonym("2026-08-01", MAC)
    assert keys.pseudonym("2026-08-01", MAC) == a
    assert keys.pseudonym("2026-08-02", MAC) != a
    assert MAC.encode() not in a and len(a) == 32


def test_keys_are_random_not_derived() -> None:
    """Two key holders (a restart) give the same MAC different pseudonyms the same day."""
    assert DailyKeys().pseudonym("2026-08-01", MAC) != DailyKeys().pseudonym("2026-08-01", MAC)


def test_destroyed_key_cannot_be_recreated(caplog: pytest.LogCaptureFixture) -> None:
    """After destroy(), the day's pseudonyms can no longer be recomputed, and it is logged."""
    keys = DailyKeys()
    caplog.set_level(logging.INFO)
    before = keys.pseudonym("2026-08-01", MAC)
    keys.destroy("2026-08-01")
    assert not keys.has("2026-08-01")
    assert keys.pseudonym("2026-08-01", MAC) != before
    assert keys.created == 2 and keys.destroyed == 1
    assert "destroyed" in caplog.text and MAC not in caplog.text


def test_destroy_zeroises_the_key_bytes() -> None:
    """The key's memory is overwritten with zeros, not just dereferenced."""
    keys = DailyKeys()
    keys.pseudonym("d", MAC)
    raw = keys._keys["d"]
    keys.destroy("d")
    assert raw == bytearray(32)


def test_optout_is_keyed_and_spelling_independent() -> None:
    """The opt-out list holds keyed hashes; any spelling matches; another key does not."""
    out = OptOut(b"k1")
    h = out.add("3C-22-FB-12-34-56")
    assert MAC in out and "3c22fb123456" in out
    assert MAC.replace(":", "") not in h
    assert MAC not in OptOut(b"k2", [h])
    assert "02:00:00:00:00:01" not in out


@pytest.mark.parametrize(
    ("mac", "random"),
    [("3c:22:fb:12:34:56", False), ("da:a1:19:00:00:01", True), ("02:00:00:00:00:01", True)],
)
def test_locally_administered_macs_are_randomised(mac: str, random: bool) -> None:
    """Bit 1 of the first octet marks a randomised (locally administered) MAC."""
    assert is_randomised(mac) is random


@pytest.mark.parametrize("bad", ["", "zz:zz:zz:zz:zz:zz", "3c:22:fb:12:34", "3c:22-fb:12:34:56"])
def test_bad_macs_are_refused(bad: str) -> None:
    """Anything but a 48-bit MAC is refused."""
    with pytest.raises(ValueError):
        normalise_mac(bad)
