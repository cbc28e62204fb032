"""The RADIUS package's exceptions: one small tree, as in h11.

``RemoteProtocolError`` is bad input from a peer (dropped and counted, never fatal);
``LocalProtocolError`` is a caller's mistake (a bug to fix).
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RadiusError", "RemoteProtocolError"]


class RadiusError(Exception):
    """Base class of every RADIUS error."""


class RemoteProtocolError(RadiusError):
    """A peer sent something that is not a valid RADIUS packet for us.

    ``reason`` is a short counter name (``too_short``, ``bad_length``...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LocalProtocolError(RadiusError):
    """We were asked to build something RADIUS cannot carry."""
