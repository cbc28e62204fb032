"""Returning devices: territorial continuity at the portal's door, with no page at all.

A device that accepted the terms in force at one hotspot is remembered by the
controller for ``[portal] continuity_hours`` (``radius._devices``). When openNDS sends it
to the portal again, at any hotspot of the territory whose texts are the ones it
accepted, the portal has the access point let it in at once and answers with a redirect
to the page it asked for: the visitor sees no portal page (and an OS login window closes
by itself, its probe now reaching the Internet). A new version of the texts, or a
commune with texts of its own, ends it: the page is shown and asks again.

Most returning devices never reach this page: the controller lets them in as soon as
their access point reports them (``controller.returning``), before their OS probes the
network. This shortcut is for those it missed (a late or lost command).

The decision is the controller's (``ContinuityBackend.returning``, then ``authorize``
with method ``returning``, which checks again); this module only adapts HTTP.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from aiohttp import web

from captive_portal._fas import FasRequest, mac_tag
from captive_portal._login import LoginPages
from captive_portal._pages import login_request
from captive_portal.models import CommunePolicy, LoginResult

__all__ = ["ContinuityBackend", "ReturningPages", "redirect"]

logger = logging.getLogger(__name__)


@runtime_checkable
class ContinuityBackend(Protocol):
    """A backend that remembers devices across the territory (the controller's)."""

    async def returning(self, ap_id: str, client_mac: str) -> bool:
        """Whether continuity lets this device in at ``ap_id`` now, without a page."""
        ...


def redirect(location: str) -> web.Response:
    """A 302 with a tiny HTML body (some captive browsers show the body of a redirect)."""
    body = f'<!doctype html><title>OK</title><a href="{_attr(location)}">OK</a>'
    return web.Response(
        status=302, headers={"Location": location}, text=body, content_type="text/html"
    )


def _attr(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


class ReturningPages(LoginPages):
    """The returning-device shortcut of the login page (FAS and UAM entries)."""

    async def returning_login(
        self, fas: FasRequest, policy: CommunePolicy | None, lang: str
    ) -> LoginResult | None:
        """Let a recognised device in without a page; None to show the page.

        Asks the backend only when continuity is on and the backend keeps it; an
        access point that does not confirm also gives None (the page is then shown,
        as for any visitor).
        """
        backend = self.backend
        if self.settings.portal.continuity_hours <= 0 or not isinstance(backend, ContinuityBackend):
            return None
        client = mac_tag(fas.client_mac, self.key)
        try:
            if not await backend.returning(fas.gateway_name, fas.client_mac):
                return None
            result = await self.backend.authorize(
                login_request(fas, "returning", self.terms_version(policy), lang)
            )
        except Exception:
            self.counters.authorize_crashed += 1
            logger.error("backend crashed on a returning device", exc_info=True)
            return None
        if not result.ok:
            logger.info(
                "returning device not let in on ap=%s client=%s: %s",
                fas.gateway_name,
                client,
                result.error,
            )
            return None
        self.counters.returning += 1
        logger.info(
            "returning device let in on ap=%s client=%s",
            fas.gateway_name,
            client,
            extra={"ap": fas.gateway_name},
        )
        return result
