"""The captive portal's exception tree.

``FasError`` covers everything a visitor's browser can send wrong: a bad openNDS FAS
query, or a login state that was altered or has expired. Messages are plain sentences
meant for logs; they never quote more than a short prefix of the offending input.
"""

from __future__ import annotations

__all__ = ["FasError", "PortalError", "StateError", "StateExpired", "StateInvalid"]


class PortalError(Exception):
    """Base class of every error raised by the captive portal."""


class FasError(PortalError):
    """The FAS query or the signed login state cannot be trusted or used."""


class StateError(FasError):
    """The signed login state carried by the form cannot be used."""


class StateInvalid(StateError):
    """The login state is malformed or its signature does not match (tampered)."""


class StateExpired(StateError):
    """The login state is authentic but older than its validity."""
