"""Limits on repeated failures (wrong voucher codes), per client and per source address.

A fixed window per key: at most ``limit`` failures in ``window_s`` seconds; beyond, the
key is refused until the window ends. The table is bounded: when full, the oldest
windows are dropped first (an attacker cycling through keys only frees its own slots).

Pure: ``now`` is passed in.
"""

from __future__ import annotations

import collections
from typing import Final

__all__ = ["FailureLimiter"]

# Enough for every device of a busy event on one controller; about 100 bytes each.
MAX_KEYS: Final = 100_000


class FailureLimiter:
    """Counts failures per key in fixed windows."""

    def __init__(self, limit: int, window_s: float, max_keys: int = MAX_KEYS) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._windows: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    def blocked(self, key: str, now: float) -> bool:
        """True if ``key`` has used up its failures in the current window."""
        entry = self._windows.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            return False
        return entry[1] >= self.limit

    def fail(self, key: str, now: float) -> None:
        """Count one failure of ``key``."""
        start, count = self._windows.pop(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
