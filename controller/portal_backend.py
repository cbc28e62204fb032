"""The controller's side of the captive portal: turn a login into an ``authorize`` command.

The portal hands over a ``LoginRequest``; this sends the signed command to the access
point's agent over MQTT and waits for the agent's ack, so that the page says
"connected" only once the gateway has really let the client in.
"""

from __future__ import annotations

import logging

from agents.contract import AuthorizeArgs
from captive_portal.models import LoginRequest, LoginResult
from controller.service import Controller, mac_tag

__all__ = ["ControllerPortalBackend"]

logger = logging.getLogger(__name__)

# How long the visitor's page waits for the access point; a phone's captive-portal
# window gives up after about 30 s, and a healthy AP answers in well under a second.
ACK_WAIT_S = 10.0


class ControllerPortalBackend:
    """Authorises portal logins through the agents."""

    def __init__(self, controller: Controller, ack_wait_s: float = ACK_WAIT_S) -> None:
        self._c = controller
        self._wait = ack_wait_s

    async def authorize(self, request: LoginRequest) -> LoginResult:
        """Send ``authorize`` to the AP and wait for its ack; failures come back as ``ok=False``."""
        s = self._c.settings.sessions
        minutes = s.session_minutes
        if self._c.registry.key_for(request.ap_id) is None:
            self._c.counters["portal_unknown_ap"] += 1
            return LoginResult(ok=False, session_minutes=0, error="unknown access point")
        args = AuthorizeArgs(
            mac=request.client_mac, minutes=minutes, up_kbps=s.up_kbps, down_kbps=s.down_kbps
        )
        cmd_id = await self._c.send_command(request.ap_id, args, purpose=request.method)
        ack = await self._c.wait_ack(cmd_id, self._wait)
        if ack is None:
            self._c.forget_ack(cmd_id)
            logger.warning("no ack from %s for %s", request.ap_id, mac_tag(request.client_mac))
            return LoginResult(ok=False, session_minutes=0, error="access point did not answer")
        if not ack.ok:
            return LoginResult(ok=False, session_minutes=0, error=ack.error or "refused")
        self._c.counters["portal_logins"] += 1
        return LoginResult(ok=True, session_minutes=minutes)
