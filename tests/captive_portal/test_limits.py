"""The failure limiter (pure)."""

from __future__ import annotations

from captive_portal._limits import FailureLimiter


def test_a_key_is_blocked_after_its_failures_until_the_window_ends() -> None:
    """Limit failures in a window block the key; the next window starts afresh."""
    limiter = FailureLimiter(limit=3, window_s=60)
    for t in (0.0, 1.0, 2.0):
        assert not limiter.blocked("a", t)
        limiter.fail("a", t)
    assert limiter.blocked("a", 3.0)
    assert not limiter.blocked("b", 3.0)
    assert not limiter.blocked("a", 60.0)
    limiter.fail("a", 61.0)
    assert not limiter.blocked("a", 61.5)


def test_the_table_stays_bounded() -> None:
    """With more keys than room, the oldest windows go first and memory stays bounded."""
    limiter = FailureLimiter(limit=1, window_s=60, max_keys=100)
    for i in range(1000):
        limiter.fail(f"k{i}", 0.0)
    assert len(limiter._windows) == 100
    assert limiter.blocked("k999", 1.0)
    assert not limiter.blocked("k0", 1.0)
