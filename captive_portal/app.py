"""The captive portal's aiohttp application (click-through login for openNDS FAS).

openNDS sends a new client to ``GET {faspath}?fas=<base64>``; the portal shows the
network's terms and a consent box; ``POST {faspath}accept`` hands a ``LoginRequest`` to
the ``PortalBackend`` (which has the access point's agent run ``ndsctl auth``) and shows
the outcome. The FAS fields travel from the page to the POST in a signed state, so the
form cannot be altered.

The pages are built for captive-network mini-browsers: no script, no cookie, no
external resource, one short page sequence in a single window, ``Cache-Control:
no-store`` and ``Connection: close`` on every response (so that the OS's next probe
opens a new connection and sees the real Internet, protocols.md §2.2).

It also answers the OS connectivity probes that reach it (a request for another host,
``captive_portal._probes``), the RFC 8908 API (``/capport/api``, ``captive_portal._capport``)
and a logged-in visitor's status page (time and data left, log out). These identify the
visitor by the source address of the request: the portal must see the clients' own
addresses (a routed or VPN link to the access points, as in the testbed), otherwise they
only ever say "log in" (docs/PORTAL.md).

This module only adapts HTTP: decoding and signing live in ``captive_portal._fas``,
languages in ``captive_portal._i18n``, probe answers in ``captive_portal._probes``, the
login page and its refusals in ``captive_portal._login``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from captive_portal._codepages import CodePages
from captive_portal._continuity import redirect
from captive_portal._fas import (
    decode_fas,
    mac_tag,
    sign_state,
)
from captive_portal._legal import localize
from captive_portal._pages import (
    CONTENT_SECURITY_POLICY,
    PortalRoutes,
    field,
    login_request,
    portal_routes,
)
from captive_portal._uam import UAM_PATH, UamPages
from captive_portal.errors import FasError, StateExpired, StateInvalid
from captive_portal.models import (
    LoginMethod,
    LoginResult,
    PortalBackend,
    PortalCounters,
)
from controller.config import Settings

__all__ = ["COUNTERS", "PortalRoutes", "create_app", "portal_routes"]

logger = logging.getLogger(__name__)

# The only form is a few hidden fields and a checkbox (< 10 KiB); refuse big bodies early.
MAX_BODY_BYTES: Final = 64 * 1024
# Hosts that OS connectivity checks use (protocols.md §2.1): the page a phone "asked
# for" is often one of them, and sending the visitor back there shows a blank page.
_PROBE_HOSTS: Final = frozenset(
    {
        "captive.apple.com",
        "www.apple.com",
        "connectivitycheck.gstatic.com",
        "www.gstatic.com",
        "clients3.google.com",
        "www.google.com",
        "play.googleapis.com",
        "www.msftconnecttest.com",
        "ipv6.msftconnecttest.com",
        "www.msftncsi.com",
        "detectportal.firefox.com",
        "nmcheck.gnome.org",
        "network-test.debian.org",
        "connectivity-check.ubuntu.com",
        "cp.cloudflare.com",
        "connect.rom.miui.com",
    }
)

COUNTERS: Final = web.AppKey("captive_portal.counters", PortalCounters)


def create_app(
    settings: Settings,
    backend: PortalBackend,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the captive portal application.

    Reads the templates and the ``.po`` catalogs once, here, so that no request handler
    touches the disk.

    Args:
        settings: the controller's settings (``portal`` section and ``name``).
        backend: what authorises clients (the controller's MQTT bridge).
        clock: returns the current Unix time; tests pass a fake one.

    Returns:
        The application; its counters are at ``app[COUNTERS]``.
    """
    portal = _Portal(settings, backend, clock)
    app = web.Application(
        middlewares=[_guard(portal), _probes(portal)], client_max_size=MAX_BODY_BYTES
    )
    app[COUNTERS] = portal.counters
    app.on_response_prepare.append(_portal_headers)
    routes = portal.routes
    app.router.add_get(routes.fas, portal.login_page)
    app.router.add_post(routes.accept, portal.accept)
    app.router.add_post(routes.voucher, portal.voucher)
    base = routes.fas.rstrip("/")
    app.router.add_post(f"{base}/email", portal.send_email)
    app.router.add_post(f"{base}/sms", portal.send_sms)
    app.router.add_post(f"{base}/code", portal.code)
    app.router.add_post(routes.status.rstrip("/") + "/extend", portal.extend)
    app.on_cleanup.append(portal.close)
    app.router.add_get(routes.terms, portal.terms_page)
    app.router.add_get(routes.privacy, portal.privacy_page)
    app.router.add_get(routes.health, _healthz)
    if routes.home != routes.fas:
        app.router.add_get(routes.home, portal.home_page)
    app.router.add_get(routes.status, portal.status_page)
    app.router.add_post(routes.logout, portal.logout)
    app.router.add_get(routes.capport, portal.capport)
    app.router.add_get(routes.capport + "/{ap_id}", portal.capport)
    app.router.add_get(UAM_PATH, portal.uam_entry)
    return app


async def _portal_headers(request: web.Request, response: web.StreamResponse) -> None:
    # no-store: captive-network probes and pages must never come from a cache
    # (protocols.md §2.2). Connection: close, as openNDS does, so that the OS's next
    # probe after login opens a new connection instead of reusing this one.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Connection"] = "close"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    # Old browsers ignore frame-ancestors; no page needs a camera, a location or a window
    # opener of another origin.
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault(
        "Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    )
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    response.force_close()


def _guard(portal: _Portal) -> Middleware:
    """Turn HTTP errors into pages in the visitor's language; survive handler bugs."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = portal.error_page(request, exc.status)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            # One crash guard per handler (STYLE.md): log it and keep serving.
            logger.error("crashed serving %s %s", request.method, request.path, exc_info=True)
            return portal.error_page(request, 500)

    return guard


def _probes(portal: _Portal) -> Middleware:
    """Answer requests for other hosts: OS connectivity probes, intercepted pages."""

    @web.middleware
    async def probes(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = (request.url.host or "").lower()
        if not portal.is_foreign(host):
            return await handler(request)
        return await portal.foreign(request, host)

    return probes


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


class _Portal(UamPages, CodePages):
    """The login flow's handlers (the login page and the forms' common checks come
    from LoginPages, the visitor's other pages from VisitorPages, the e-mail and SMS
    code forms from CodePages)."""

    async def close(self, app: web.Application) -> None:
        """Close the SMS provider's connections at shutdown."""
        close = getattr(self.sms_provider, "close", None)
        if close is not None:
            await close()

    def error_page(self, request: web.Request, status: int) -> web.Response:
        lang = self.language(request)
        _ = self.translations[lang].gettext
        if status == 404:
            title, text = _("Page not found"), _("This page does not exist.")
        elif status >= 500:
            title = _("Service unavailable")
            text = _("Something went wrong on our side. Please try again in a moment.")
        else:
            title, text = _("Invalid request"), _("The request could not be handled.")
        return self.message(lang, title=title, text=text, status=status)

    async def login_page(self, request: web.Request) -> web.Response:
        """``GET {faspath}``: the click-through page."""
        query = request.query
        lang = self.language(request)
        _ = self.translations[lang].gettext
        if "fas" in query:
            try:
                fas = decode_fas(query["fas"])
            except FasError as exc:
                self.counters.bad_fas += 1
                logger.warning("refused a FAS query: %s", exc)
                return self.invalid_link(lang, request)
            policy = await self.commune_policy(fas.gateway_name, fas.client_mac)
            version = self.terms_version(policy)
            extended = await self.resume_extension(fas, lang, version)
            if extended is not None:
                return extended
            if await self.returning_login(fas, policy, lang) is not None:
                # Territorial continuity: no page at all, straight to the page asked for.
                if fas.origin_url is not None:
                    return redirect(fas.origin_url)
                return self.message(
                    lang,
                    title=_("You are connected"),
                    text=_("This device is connected."),
                    status=200,
                    alert=False,
                )
            state = sign_state(fas, self.key, now=self.clock(), terms_version=version)
            logger.info(
                "login page for ap=%s client=%s",
                fas.gateway_name,
                mac_tag(fas.client_mac, self.key),
                extra={"ap": fas.gateway_name},
            )
            return self.login_form(lang, state, fas, policy=policy, terms_version=version)
        if "state" in query:
            # The language switch and the "back" links come here with the signed state.
            token = query["state"]
            try:
                login = self.check_state(token)
            except (StateInvalid, StateExpired) as exc:
                return self.bad_state(lang, exc, switch_to=request.rel_url)
            policy = await self.commune_policy(login.fas.gateway_name, login.fas.client_mac)
            return self.login_form(
                lang, token, login.fas, policy=policy, terms_version=login.terms_version
            )
        if query.get("status") == "authenticated":
            # openNDS sends an already authenticated client back here with this query.
            ap = query.get("gatewayname")
            status = await self.lookup(request, ap if ap else None)
            if status is not None:
                return self.render_status(
                    request, lang, status, can_extend=await self.can_extend(status)
                )
            return self.already_connected(lang, request.rel_url)
        self.counters.bad_fas += 1
        logger.warning("refused a portal request without a FAS query")
        return self.invalid_link(lang, request)

    async def accept(self, request: web.Request) -> web.Response:
        """``POST {faspath}accept``: check the consent and let the client in."""
        return await self.login(request, "click-through")

    async def voucher(self, request: web.Request) -> web.Response:
        """``POST {faspath}voucher``: check the consent and the code, let the client in."""
        return await self.login(request, "voucher")

    async def code(self, request: web.Request) -> web.Response:
        """``POST {faspath}code``: the code sent by e-mail or SMS."""
        form = await request.post()
        channel = await self.code_channel(form)
        if channel is None:
            asked = field(form, "channel")
            channel = "sms" if asked == "sms" else "email"
        return await self.login(request, channel)

    async def login(self, request: web.Request, method: LoginMethod) -> web.Response:
        """Both login forms: state, terms version, consent, code limits, then authorise."""
        post = await self.login_post(request)
        if isinstance(post, web.Response):
            return post
        lang, token, fas = post.lang, post.token, post.fas
        _ = self.translations[lang].gettext
        client = mac_tag(fas.client_mac, self.key)
        if post.terms_changed:
            # The commune published new texts while the page was open: ask again.
            return self.new_terms(post)
        if not post.consented:
            self.counters.missing_consent += 1
            logger.info("consent missing for ap=%s client=%s", fas.gateway_name, client)
            return self.form_again(post, error=_("Please tick the box to accept the terms of use."))
        code = None
        identity = None
        self.require_method(post.policy, method)
        if method == "voucher":
            keys = self.code_keys(request, fas)
            now = self.clock()
            if self.code_blocked(keys, now):
                return self.form_again(
                    post, code_error=self.code_refused(lang, keys, now, limited=True)
                )
            code = field(post.form, "code") or ""
        elif method in ("email", "sms"):
            checked = await self.check_code(request, post)
            if isinstance(checked, web.Response):
                return checked
            identity = checked.identity
        let_in = login_request(
            fas,
            method,
            post.login.terms_version,
            lang,
            code=code,
            identity=identity,
            stats_optout=field(post.form, "stats_optout") == "yes",
        )
        result: LoginResult | None
        logon: str | None = None
        try:
            if fas.uam_challenge is not None:
                # A UAM gateway: a one-time credential for its /logon instead of a command.
                result, logon = await self.uam_authorize(let_in, fas)
            else:
                result = await self.backend.authorize(let_in)
        except Exception:
            # The backend reports failures in its result; this is a bug, not a refusal.
            self.counters.authorize_crashed += 1
            logger.error(
                "backend crashed authorising ap=%s client=%s",
                fas.gateway_name,
                client,
                exc_info=True,
            )
            result = None
        if result is not None and result.bad_code:
            refusal = self.code_refused(
                lang, self.code_keys(request, fas), self.clock(), limited=False
            )
            logger.info("wrong voucher code on ap=%s client=%s", fas.gateway_name, client)
            return self.form_again(post, code_error=refusal)
        if result is None or not result.ok:
            if result is not None:
                self.counters.authorize_refused += 1
                logger.warning(
                    "authorisation refused for ap=%s client=%s: %s",
                    fas.gateway_name,
                    client,
                    result.error,
                )
            return self.unavailable(
                lang,
                title=_("Connection failed"),
                text=_("The hotspot could not connect your device."),
                retry_state=token if method == "click-through" else None,
                back_url=str(self.form_url(token)) if method != "click-through" else None,
                switch_to=self.form_url(token),
            )
        self.counters.logins += 1
        logger.info(
            "client let in on ap=%s client=%s for %d min",
            fas.gateway_name,
            client,
            result.session_minutes,
            extra={"ap": fas.gateway_name},
        )
        if logon is not None:
            return redirect(logon)
        return self.success_page(
            lang,
            title=_("You are connected"),
            minutes=result.session_minutes,
            ap_id=fas.gateway_name,
            continue_url=_continue_url(fas.origin_url),
        )

    async def terms_page(self, request: web.Request) -> web.Response:
        """``GET /terms``: the terms of use (summary)."""
        lang = self.language(request)
        _ = self.translations[lang].gettext
        return await self.legal_page(request, lang, "terms.html", _("Terms of use"))

    async def privacy_page(self, request: web.Request) -> web.Response:
        """``GET /privacy``: the privacy notice (summary)."""
        lang = self.language(request)
        _ = self.translations[lang].gettext
        return await self.legal_page(request, lang, "privacy.html", _("Privacy notice"))

    async def legal_page(
        self, request: web.Request, lang: str, template: str, title: str
    ) -> web.Response:
        back_url = None
        policy = None
        token = request.query.get("state")
        if token is not None:
            try:
                login = self.check_state(token)
            except (StateInvalid, StateExpired):
                pass  # no way back to a form that would be refused anyway
            else:
                back_url = str(self.form_url(token).update_query(lang=lang))
                policy = await self.commune_policy(login.fas.gateway_name, None)
        legal = localize(policy.legal, lang) if policy is not None and policy.legal else None
        return self.render(
            template,
            lang,
            title=title,
            switch_to=request.rel_url,
            terms_version=self.terms_version(policy),
            commune=policy.commune if policy is not None else None,
            legal=legal,
            back_url=back_url,
            identity=self.options(policy).collects_identity,
            continuity_hours=self.settings.portal.continuity_at(
                policy.insee if policy is not None else None
            ),
        )


def _continue_url(origin_url: str | None) -> str | None:
    if origin_url is None:
        return None
    try:
        host = urlsplit(origin_url).hostname
    except ValueError:
        return None
    return None if host is None or host in _PROBE_HOSTS else origin_url
