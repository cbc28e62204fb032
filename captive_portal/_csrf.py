"""Anti-forgery tokens for the portal's forms that act on a logged-in client.

A token binds an action (``logout``...) to one client (access point, MAC, IP) and an
expiry, under a key derived from the portal's secret for this purpose only. The portal
keeps no server-side session and sets no cookie: the token travels in the form, and a
page of another site cannot produce it (it does not know the key), which is what a CSRF
token must prevent.

Pure: no IO, no clock (``now`` is passed in).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

from captive_portal.errors import StateExpired, StateInvalid

__all__ = ["CSRF_TTL_S", "check_token", "make_token"]

# A visitor reads the status page and presses a button: minutes. An hour also covers a
# page left open on a phone while its owner walks around the square.
CSRF_TTL_S: Final = 3600
_LABEL: Final = b"borne/captive_portal/csrf/v1"
_MAX_TOKEN_CHARS: Final = 128


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _LABEL, hashlib.sha256).digest()


def _mac(secret: str, action: str, subject: tuple[str, ...], expires: int) -> str:
    message = "\x1f".join((action, *subject, str(expires))).encode("utf-8")
    digest = hmac.new(_key(secret), message, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def make_token(
    secret: str, action: str, subject: tuple[str, ...], *, now: float, ttl_s: int = CSRF_TTL_S
) -> str:
    """Return ``<expiry>.<mac>`` for ``action`` on ``subject``.

    Args:
        secret: the portal's secret (``settings.portal.fas_key``).
        action: what the form does, e.g. ``logout``.
        subject: who it acts on, e.g. ``(ap_id, mac, ip)``.
        now: the current Unix time.
        ttl_s: validity in seconds.
    """
    expires = int(now) + ttl_s
    return f"{expires}.{_mac(secret, action, subject, expires)}"


def check_token(
    token: str | None, secret: str, action: str, subject: tuple[str, ...], *, now: float
) -> None:
    """Accept a token made by :func:`make_token` for the same action and subject.

    Raises:
        StateInvalid: the token is missing, malformed or made for something else.
        StateExpired: the token is authentic but expired.
    """
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise StateInvalid("the form token is missing")
    expires_text, sep, given = token.partition(".")
    if not sep or not expires_text.isdigit():
        raise StateInvalid("the form token is malformed")
    expires = int(expires_text)
    expected = _mac(secret, action, subject, expires)
    if not hmac.compare_digest(given.encode("ascii", "replace"), expected.encode("ascii")):
        raise StateInvalid("the form token does not match")
    if now > expires:
        raise StateExpired("the form token has expired")
