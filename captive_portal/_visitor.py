"""The pages of a visitor who is online or asks whether it is: OS probes, the RFC 8908
API, the status page and its log-out form, and the landing page.

They find the visitor by the request's source address (``PortalBase.lookup``). HTTP
adaptation only: the probe answers are in ``captive_portal._probes``, the API body in
``captive_portal._capport``, the anti-forgery tokens in ``captive_portal._csrf``.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from captive_portal._capport import CAPTIVE_JSON, capport_body
from captive_portal._codestore import ExtensionKeeper
from captive_portal._csrf import check_token, make_token
from captive_portal._fas import (
    FasRequest,
    mac_tag,
)
from captive_portal._i18n import (
    format_bytes,
    format_duration,
)
from captive_portal._methods import options_for
from captive_portal._pages import PortalBase, field, login_request
from captive_portal._probes import (
    answer_foreign,
    answer_probe,
    find_probe,
    wants_html,
)
from captive_portal.errors import StateExpired, StateInvalid
from captive_portal.models import (
    ClientStatus,
)

__all__ = ["VisitorPages"]

logger = logging.getLogger(__name__)

# How long the portal waits for a device cut off to be re-authorised (session extend).
EXTEND_WAIT_S: Final = 600.0


class VisitorPages(PortalBase):
    """Handlers of the probes, the API, the status page, log-out and the landing page."""

    async def foreign(self, request: web.Request, host: str) -> web.Response:
        """A request for another host: an OS probe, or a page the gateway intercepted."""
        status = await self.lookup(request, None)
        captive = status is None
        login_url = self.absolute(self.routes.home)
        probe = find_probe(host, request.path)
        if probe is not None:
            answer = answer_probe(probe, captive=captive, login_url=login_url)
        else:
            answer = answer_foreign(
                captive=captive,
                wants_html=wants_html(request.headers.get("Accept")),
                login_url=login_url,
                status_url=self.absolute(self.routes.status),
            )
        if captive:
            self.counters.probes_captive += 1
        else:
            self.counters.probes_online += 1
        response = web.Response(
            status=answer.status,
            body=answer.body.encode("utf-8") if answer.body else None,
            content_type=answer.content_type,
            charset="utf-8" if answer.body else None,
        )
        if answer.location is not None:
            response.headers["Location"] = answer.location
        return response

    def status_subject(self, status: ClientStatus) -> tuple[str, str, str]:
        return (status.ap_id, status.client_mac, status.client_ip)

    async def can_extend(self, status: ClientStatus) -> bool:
        """The commune allows extending and this session has not been extended yet."""
        if status.method == "extend" or status.seconds_remaining is None:
            return False
        try:
            policy = await self.backend.policy(status.ap_id, None)
        except Exception:
            logger.error("backend crashed reading the policy of %s", status.ap_id, exc_info=True)
            return False
        insee = policy.insee if policy is not None else None
        return options_for(self.settings.portal, insee).can_extend_session

    def render_status(
        self,
        request: web.Request,
        lang: str,
        status: ClientStatus | None,
        *,
        can_extend: bool = False,
        notice: str | None = None,
    ) -> web.Response:
        _ = self.translations[lang].gettext
        catalog = self.translations[lang]
        if status is None:
            return self.message(
                lang,
                title=_("You are not connected"),
                text=_("This device has no open session on this network."),
                hint=_("Open any web page: the login page will appear."),
                status=200,
                alert=False,
                switch_to=request.rel_url,
            )
        time_left = (
            None
            if status.seconds_remaining is None
            else format_duration(max(0, status.seconds_remaining) // 60, catalog)
        )
        data_left = (
            None
            if status.bytes_remaining is None
            else format_bytes(max(0, status.bytes_remaining), catalog)
        )
        token = make_token(self.key, "logout", self.status_subject(status), now=self.clock())
        return self.render(
            "status.html",
            lang,
            title=_("Your connection"),
            switch_to=request.rel_url,
            time_left=time_left,
            data_left=data_left,
            data_used=format_bytes(status.bytes_used, catalog),
            ap_id=status.ap_id,
            logout_url=self.routes.logout,
            csrf=token,
            extend_url=self.routes.status.rstrip("/") + "/extend" if can_extend else None,
            extend_csrf=make_token(
                self.key, "extend", self.status_subject(status), now=self.clock()
            )
            if can_extend
            else None,
            notice=notice,
        )

    # -- handlers -------------------------------------------------------------------------

    async def home_page(self, request: web.Request) -> web.Response:
        """``GET /``: a visitor who reached the portal directly (or after a probe)."""
        lang = self.language(request)
        status = await self.lookup(request, None)
        if status is not None:
            raise web.HTTPFound(self.routes.status)
        _ = self.translations[lang].gettext
        return self.message(
            lang,
            title=_("Log in to the Wi-Fi"),
            text=_("This network asks you to accept its terms before you use it."),
            hint=_("Open any web page starting with http:// and the login page will appear."),
            status=200,
            alert=False,
            switch_to=request.rel_url,
        )

    async def status_page(self, request: web.Request) -> web.Response:
        """``GET /status``: time and data left, and a log-out button."""
        lang = self.language(request)
        ap_id = request.query.get("ap")
        status = await self.lookup(request, ap_id if ap_id else None)
        can_extend = status is not None and await self.can_extend(status)
        return self.render_status(request, lang, status, can_extend=can_extend)

    async def status_form(
        self, request: web.Request, action: str
    ) -> tuple[str, ClientStatus] | web.Response:
        """The prologue of a form of the status page (``action``: "logout", "extend"): the
        language and the requester's session, once its anti-forgery token is checked; or
        the page to answer instead (no session, or a bad or expired token)."""
        form = await request.post()
        lang = self.language(request, field(form, "lang"))
        status = await self.lookup(request, field(form, "ap") or None)
        if status is None:
            return self.render_status(request, lang, None)
        try:
            check_token(
                field(form, "csrf"), self.key, action, self.status_subject(status), now=self.clock()
            )
        except (StateInvalid, StateExpired) as exc:
            self.counters.bad_csrf += 1
            logger.warning("refused the %s form: %s", action, exc)
            _ = self.translations[lang].gettext
            return self.message(
                lang,
                title=_("Please start again"),
                text=_("This page has expired."),
                status=403,
                back_url=self.routes.status,
            )
        return lang, status

    async def extend(self, request: web.Request) -> web.Response:
        """``POST /status/extend``: extend the requester's session once (anti-forgery
        token required; the commune must allow it)."""
        checked = await self.status_form(request, "extend")
        if isinstance(checked, web.Response):
            return checked
        lang, status = checked
        _ = self.translations[lang].gettext
        if not await self.can_extend(status):
            self.counters.extend_refused += 1
            return self.render_status(
                request, lang, status, notice=_("This session cannot be extended.")
            )
        try:
            result = await self.backend.extend(status.ap_id, status.client_mac)
        except Exception:
            logger.error("backend crashed extending a session", exc_info=True)
            result = None
        if result is None or not result.ok:
            self.counters.extend_refused += 1
            logger.warning(
                "extension refused on ap=%s: %s", status.ap_id, result.error if result else "crash"
            )
            return self.unavailable(
                lang,
                title=_("Extension failed"),
                text=_("The session could not be extended."),
                back_url=self.routes.status,
            )
        self.counters.extends += 1
        if result.reconnect:
            # The gateway forgot the device; its next request comes back to the login
            # page, which completes the extension (resume_extension).
            self.extending[(status.ap_id, status.client_mac)] = self.clock() + EXTEND_WAIT_S
        logger.info(
            "session extended on ap=%s client=%s by %d min",
            status.ap_id,
            mac_tag(status.client_mac, self.key),
            result.session_minutes,
        )
        return self.message(
            lang,
            title=_("Session extended"),
            text=_("Your session has been extended by %(duration)s.")
            % {"duration": format_duration(result.session_minutes, self.translations[lang])},
            hint=_("Your device reconnects: if the login page opens, it lets you straight back in.")
            if result.reconnect
            else None,
            status=200,
            alert=False,
        )

    async def resume_extension(
        self, fas: FasRequest, lang: str, terms_version: str
    ) -> web.Response | None:
        """The device of an extension waiting for it is back: re-authorise it and show
        the success page; None if no extension waits for it."""
        key = (fas.gateway_name, fas.client_mac)
        now = self.clock()
        for stale in [k for k, deadline in self.extending.items() if deadline <= now]:
            del self.extending[stale]
        if self.extending.pop(key, None) is None and not (
            isinstance(self.backend, ExtensionKeeper)
            and await self.backend.extension_waiting(fas.gateway_name, fas.client_mac)
        ):
            return None
        try:
            result = await self.backend.authorize(login_request(fas, "extend", terms_version, lang))
        except Exception:
            self.counters.authorize_crashed += 1
            logger.error("backend crashed completing an extension", exc_info=True)
            return None
        if not result.ok:
            self.counters.extend_refused += 1
            logger.warning("extension not completed on ap=%s: %s", fas.gateway_name, result.error)
            return None
        _ = self.translations[lang].gettext
        return self.success_page(
            lang,
            title=_("Session extended"),
            minutes=result.session_minutes,
            ap_id=fas.gateway_name,
            continue_url=None,
        )

    async def logout(self, request: web.Request) -> web.Response:
        """``POST /logout``: cut the requester off (anti-forgery token required)."""
        checked = await self.status_form(request, "logout")
        if isinstance(checked, web.Response):
            return checked
        lang, status = checked
        _ = self.translations[lang].gettext
        try:
            result = await self.backend.deauthorize(status.ap_id, status.client_mac)
        except Exception:
            logger.error("backend crashed logging a client out", exc_info=True)
            result = None
        if result is None or not result.ok:
            self.counters.logout_refused += 1
            return self.unavailable(
                lang,
                title=_("Log-out failed"),
                text=_("The hotspot could not log your device out."),
                back_url=self.routes.status,
            )
        self.counters.logouts += 1
        logger.info(
            "client logged out on ap=%s client=%s",
            status.ap_id,
            mac_tag(status.client_mac, self.key),
        )
        return self.message(
            lang,
            title=_("You are logged out"),
            text=_("This device no longer has Internet access through this network."),
            hint=_("Open any web page to log in again."),
            status=200,
            alert=False,
        )

    async def capport(self, request: web.Request) -> web.Response:
        """``GET /capport/api[/{ap_id}]``: RFC 8908 state of the requester."""
        self.counters.capport_queries += 1
        ap_id = request.match_info.get("ap_id")
        status = await self.lookup(request, ap_id)
        portal = self.settings.portal
        body = capport_body(
            status,
            user_portal_url=self.absolute(
                self.routes.home if status is None else self.routes.status
            ),
            venue_info_url=portal.venue_info_url,
            can_extend_session=status is not None and await self.can_extend(status),
        )
        # §5: the media type is exactly application/captive+json (JSON is UTF-8 by
        # definition, RFC 8259 §8.1: no charset parameter); no-store is set for all.
        return web.Response(body=body.encode("utf-8"), headers={"Content-Type": CAPTIVE_JSON})
