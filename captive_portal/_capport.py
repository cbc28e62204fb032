"""RFC 8908 Captive Portal API: the JSON a client's OS reads to know if it is captive.

The API URI is given to clients by DHCP option 114 (RFC 8910; the agent pushes it to
the access point's DHCP server) and answers ``application/captive+json`` (§5): ``captive``
(required), ``user-portal-url``, ``venue-info-url``, ``can-extend-session``,
``seconds-remaining`` and ``bytes-remaining`` (the last two only when not captive and
limited).

Pure: no IO, no clock.
"""

from __future__ import annotations

import json
from typing import Final

from captive_portal.models import ClientStatus

__all__ = ["CAPTIVE_JSON", "capport_body"]

CAPTIVE_JSON: Final = "application/captive+json"


def capport_body(
    status: ClientStatus | None,
    *,
    user_portal_url: str,
    venue_info_url: str | None,
    can_extend_session: bool,
) -> str:
    """The API's JSON for a client.

    Args:
        status: the client's open session, None if it is captive.
        user_portal_url: the login page (captive) or the status page (logged in).
        venue_info_url: information about the place, if any.
        can_extend_session: the portal can extend a logged-in session.
    """
    body: dict[str, object] = {"captive": status is None, "user-portal-url": user_portal_url}
    if venue_info_url:
        body["venue-info-url"] = venue_info_url
    if status is not None:
        body["can-extend-session"] = can_extend_session
        # §5: present when not captive and limited; an integer number of seconds/bytes.
        if status.seconds_remaining is not None:
            body["seconds-remaining"] = max(0, int(status.seconds_remaining))
        if status.bytes_remaining is not None:
            body["bytes-remaining"] = max(0, int(status.bytes_remaining))
    return json.dumps(body, separators=(",", ":"))
